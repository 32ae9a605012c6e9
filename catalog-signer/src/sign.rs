//! `sign`: adding signatures to a document file in place.

use std::path::PathBuf;

use anyhow::Context;
use archy_catalog::keys::SecretKey;
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Deserialize;
use serde_json::json;

use crate::{docfile, report::Report};

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The document to sign.
    file: PathBuf,
    /// A secret key file (repeat to add several signatures).
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
}

/// The one field of a document body the signer looks at besides its header.
#[derive(Debug, Deserialize)]
struct Expiry {
    expires: DateTime<Utc>,
}

pub fn run(args: SignArgs) -> anyhow::Result<Report> {
    let file = &args.file;
    let mut env = docfile::read(file)?;
    let header = env
        .header()
        .with_context(|| format!("{}: no _type/version", file.display()))?;
    let expires = env.body::<Expiry>().ok().map(|e| e.expires);
    let mut signed_by = Vec::new();
    let mut text = String::new();
    for k in &args.keys {
        let key = SecretKey::load(k)?;
        env.sign(&key);
        text += &format!(
            "signed {} v{} with key {}\n",
            header.role,
            header.version,
            key.key_id()
        );
        signed_by.push(key.key_id().to_string());
    }
    docfile::write(file, &env.to_bytes())?;
    if let Some(expires) = expires {
        docfile::warn_if_expiring(file, expires);
    }
    Ok(Report::done(
        json!({
            "file": file,
            "role": header.role,
            "version": header.version,
            "expires": expires,
            "signed_by": signed_by,
            "signatures": env.signatures.len(),
        }),
        text,
    ))
}
