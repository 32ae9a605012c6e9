//! `timestamp`: writing the head, which pins one catalog file's version, hash and size.

use std::{fs, path::PathBuf};

use anyhow::Context;
use archy_catalog::Timestamp;
use clap::Args;
use serde_json::json;

use crate::{docfile, report::Report};

#[derive(Debug, Args)]
pub struct TimestampArgs {
    /// The catalog file (signed or not; its exact bytes are pinned, so sign it first).
    #[arg(long)]
    catalog: PathBuf,
    /// Timestamp version; must grow with every new timestamp.
    #[arg(long)]
    version: u64,
    /// Validity, e.g. 1d, 12h or "1h 30m".
    #[arg(long, default_value = "1d")]
    expires: String,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: TimestampArgs) -> anyhow::Result<Report> {
    let catalog = &args.catalog;
    let bytes = fs::read(catalog).with_context(|| format!("cannot read {}", catalog.display()))?;
    let expires = docfile::expiry(&args.expires)?;
    let ts = Timestamp::for_catalog(&bytes, args.version, expires)
        .with_context(|| catalog.display().to_string())?;
    docfile::write_unsigned(&ts, &args.out)?;
    Ok(Report::done(
        json!({
            "out": args.out,
            "role": "timestamp",
            "version": ts.version,
            "expires": ts.expires,
            "signed": false,
            "catalog": ts.catalog,
        }),
        format!(
            "wrote {} (timestamp v{} pinning catalog v{} {} {} bytes, unsigned)",
            args.out.display(),
            ts.version,
            ts.catalog.version,
            ts.catalog.hash,
            ts.catalog.size
        ),
    ))
}
