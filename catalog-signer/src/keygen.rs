//! `keygen`: a new ed25519 key pair, NAME.key (mode 0600) and NAME.pub.

use std::{fs, path::PathBuf};

use anyhow::Context;
use archy_catalog::keys::SecretKey;
use clap::Args;
use serde_json::json;

use crate::report::Report;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix of the key files, e.g. `keys/root1` writes keys/root1.key and keys/root1.pub.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: KeygenArgs) -> anyhow::Result<Report> {
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = SecretKey::generate()?;
    let (key_path, pub_path) = key.write_pair(&args.out)?;
    let keyid = key.key_id().to_string();
    let note = format!(
        "wrote {} (secret, mode 0600) and {}",
        key_path.display(),
        pub_path.display()
    );
    Ok(Report::done(
        json!({"keyid": keyid, "key": key_path, "pub": pub_path}),
        keyid,
    )
    .with_note(note))
}
