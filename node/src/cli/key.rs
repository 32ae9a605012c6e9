//! `archy key new`: a developer's (or operator's) Nostr key.
//!
//! The secret is written as an `nsec1...` line to a file only its owner can read
//! (0600, written atomically, never overwritten); the public key is printed as `npub`
//! so it can be shared. [`load_keys`] is how every other command reads such a file,
//! and it refuses files that others can read.

use std::{path::Path, process::ExitCode};

use anyhow::{bail, Context};
use archy_catalog::fsutil::write_atomic_mode;
use clap::Subcommand;
use nostr_sdk::prelude::*;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a new Nostr key pair.
    ///
    /// With `--out`, the secret key (nsec) goes to that file with mode 0600 and only the
    /// public key (npub) is printed. Without it, both are printed.
    New {
        /// File to write the secret key to (refuses to overwrite an existing file).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hand a developer identity over to a new key: the old key (`--key`) signs a
    /// successor statement naming the new one.
    ///
    /// Nodes then give the new key the standing of the old one, and treat the new
    /// key's announcements of the old key's app ids as the same apps. Naming a second,
    /// different successor later freezes the rotation for everyone (it looks like a
    /// stolen key), so do it once.
    Rotate {
        /// The new key's public key (npub or hex).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        send: super::app::publish::SendArgs,
    },
}

pub fn run(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::New { out, json } => new(out.as_deref(), json),
        KeyCommand::Rotate { to, send } => rotate(&to, send),
    }
}

fn rotate(to: &str, args: super::app::publish::SendArgs) -> anyhow::Result<ExitCode> {
    let new_key = parse_public_key(to, "--to")?;
    let old = load_keys(&args.key)?;
    if new_key == old.public_key() {
        bail!("--to names the key in {} itself", args.key.display());
    }
    let statement = archy_discovery::announcement::successor_builder(&new_key)
        .sign_with_keys(&old)
        .context("cannot sign the successor statement")?;
    super::block_on(async move {
        let label = format!("successor {}", new_key.to_bech32()?);
        let sent = super::app::publish::send(&args, &[(label, statement)]).await?;
        if args.json {
            let mut out = sent.to_json();
            out["old"] = old.public_key().to_bech32()?.into();
            out["new"] = new_key.to_bech32()?.into();
            println!("{out}");
        } else {
            sent.print();
        }
        Ok(sent.exit_code())
    })
}

fn new(out: Option<&Path>, as_json: bool) -> anyhow::Result<ExitCode> {
    let keys = Keys::generate();
    let npub = keys.public_key().to_bech32()?;
    let nsec = keys.secret_key().to_bech32()?;
    match out {
        Some(path) => {
            if path.exists() {
                bail!(
                    "{} already exists; refusing to overwrite a key",
                    path.display()
                );
            }
            write_atomic_mode(path, format!("{nsec}\n").as_bytes(), Some(0o600))
                .with_context(|| format!("cannot write {}", path.display()))?;
            if as_json {
                println!(
                    "{}",
                    json!({"npub": npub, "hex": keys.public_key().to_hex(), "secret_file": path})
                );
            } else {
                println!("{npub}");
                eprintln!("secret key written to {} (mode 0600)", path.display());
            }
        }
        None => {
            if as_json {
                println!(
                    "{}",
                    json!({"npub": npub, "hex": keys.public_key().to_hex(), "nsec": nsec})
                );
            } else {
                println!("npub {npub}\nnsec {nsec}");
                eprintln!("keep the nsec secret; use --out FILE to store it in a 0600 file");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads an `nsec1...` (or hex) secret key file; refuses one that others can read.
pub fn load_keys(path: &Path) -> anyhow::Result<Keys> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read key file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "key file {} is accessible by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    Keys::parse(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "key file {}: not a Nostr secret key (nsec1... or 64 hex digits): {e}",
            path.display()
        )
    })
}

/// Parses a public key given as npub or hex, naming the option it came from.
pub fn parse_public_key(s: &str, option: &str) -> anyhow::Result<PublicKey> {
    PublicKey::parse(s)
        .map_err(|e| anyhow::anyhow!("{option} {s:?}: not a public key (npub1... or hex): {e}"))
}
