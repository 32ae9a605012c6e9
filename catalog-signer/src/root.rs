//! `root init` and `root rotate`: writing the root of trust, version 1 or the next one.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use archy_catalog::{
    documents::{Role, RoleKeys, Roles, Root, SPEC_VERSION},
    keys::{load_public, KeyMap, PublicKey},
};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::{docfile, report::Report};

#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Write version 1 of a root (unsigned; then sign it with a threshold of its root keys).
    Init {
        #[command(flatten)]
        keys: RoleKeyArgs,
        /// Validity, e.g. 365d.
        #[arg(long, default_value = "365d")]
        expires: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the next root version from an existing one, replacing the keys of any role
    /// given on the command line and keeping the others.
    ///
    /// The new root must then be signed by a threshold of the OLD root keys and a
    /// threshold of the NEW root keys; nodes walk the chain one version at a time.
    Rotate {
        /// The current root.
        #[arg(long)]
        root: PathBuf,
        #[command(flatten)]
        keys: RotateKeyArgs,
        /// Validity of the new root, e.g. 365d.
        #[arg(long, default_value = "365d")]
        expires: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RoleKeyArgs {
    /// A root public key file (repeat).
    #[arg(long = "root-key", required = true)]
    root_keys: Vec<PathBuf>,
    /// How many root keys must sign a root.
    #[arg(long, default_value_t = 1)]
    root_threshold: u32,
    /// A catalog public key file (repeat).
    #[arg(long = "catalog-key", required = true)]
    catalog_keys: Vec<PathBuf>,
    #[arg(long, default_value_t = 1)]
    catalog_threshold: u32,
    /// A timestamp public key file (repeat).
    #[arg(long = "timestamp-key", required = true)]
    timestamp_keys: Vec<PathBuf>,
    #[arg(long, default_value_t = 1)]
    timestamp_threshold: u32,
}

#[derive(Debug, Args)]
pub struct RotateKeyArgs {
    /// New root public key files (replaces the root role's keys).
    #[arg(long = "root-key")]
    root_keys: Vec<PathBuf>,
    #[arg(long)]
    root_threshold: Option<u32>,
    /// New catalog public key files (replaces the catalog role's keys).
    #[arg(long = "catalog-key")]
    catalog_keys: Vec<PathBuf>,
    #[arg(long)]
    catalog_threshold: Option<u32>,
    /// New timestamp public key files (replaces the timestamp role's keys).
    #[arg(long = "timestamp-key")]
    timestamp_keys: Vec<PathBuf>,
    #[arg(long)]
    timestamp_threshold: Option<u32>,
}

pub fn run(cmd: RootCommand) -> anyhow::Result<Report> {
    match cmd {
        RootCommand::Init { keys, expires, out } => init(keys, &expires, &out),
        RootCommand::Rotate {
            root,
            keys,
            expires,
            out,
        } => rotate(&root, keys, &expires, &out),
    }
}

/// Loads public key files into a key map and a role entry.
fn role_keys(
    files: &[PathBuf],
    threshold: u32,
    keys: &mut KeyMap,
    role: Role,
) -> anyhow::Result<RoleKeys> {
    let mut ids = Vec::new();
    for f in files {
        let key: PublicKey = load_public(f)?;
        let id = key
            .key_id()
            .ok_or_else(|| anyhow!("{}: not a valid key", f.display()))?;
        if ids.contains(&id) {
            bail!(
                "{}: the {role} role lists key {} twice",
                f.display(),
                id.short()
            );
        }
        keys.insert(id.clone(), key);
        ids.push(id);
    }
    Ok(RoleKeys {
        keyids: ids,
        threshold,
    })
}

/// Checks and writes an unsigned root.
fn write(root: &Root, out: &Path) -> anyhow::Result<()> {
    root.check().context("invalid root")?;
    docfile::write_unsigned(root, out)?;
    Ok(())
}

/// The JSON form of a root just written.
fn written(root: &Root, out: &Path) -> serde_json::Value {
    json!({
        "out": out,
        "role": "root",
        "version": root.version,
        "expires": root.expires,
        "signed": false,
        "roles": root.roles,
    })
}

fn init(args: RoleKeyArgs, expires: &str, out: &Path) -> anyhow::Result<Report> {
    let mut keys = KeyMap::new();
    let roles = Roles {
        root: role_keys(&args.root_keys, args.root_threshold, &mut keys, Role::Root)?,
        catalog: role_keys(
            &args.catalog_keys,
            args.catalog_threshold,
            &mut keys,
            Role::Catalog,
        )?,
        timestamp: role_keys(
            &args.timestamp_keys,
            args.timestamp_threshold,
            &mut keys,
            Role::Timestamp,
        )?,
    };
    let root = Root {
        role: Role::Root,
        spec_version: SPEC_VERSION,
        version: 1,
        expires: docfile::expiry(expires)?,
        keys,
        roles,
    };
    write(&root, out)?;
    Ok(Report::done(
        written(&root, out),
        format!(
            "wrote {} (root v1, unsigned): sign it with {} of its {} root key(s)",
            out.display(),
            root.roles.root.threshold,
            root.roles.root.keyids.len()
        ),
    ))
}

fn rotate(
    old_path: &Path,
    args: RotateKeyArgs,
    expires: &str,
    out: &Path,
) -> anyhow::Result<Report> {
    let old: Root = docfile::read(old_path)?
        .body()
        .with_context(|| format!("{}: not a root", old_path.display()))?;
    let mut keys = KeyMap::new();
    let mut pick =
        |files: &[PathBuf], threshold: Option<u32>, role: Role| -> anyhow::Result<RoleKeys> {
            let previous = old.roles.get(role);
            if files.is_empty() {
                for id in &previous.keyids {
                    if let Some(k) = old.keys.get(id) {
                        keys.insert(id.clone(), k.clone());
                    }
                }
                Ok(RoleKeys {
                    keyids: previous.keyids.clone(),
                    threshold: threshold.unwrap_or(previous.threshold),
                })
            } else {
                role_keys(
                    files,
                    threshold.unwrap_or(previous.threshold),
                    &mut keys,
                    role,
                )
            }
        };
    let roles = Roles {
        root: pick(&args.root_keys, args.root_threshold, Role::Root)?,
        catalog: pick(&args.catalog_keys, args.catalog_threshold, Role::Catalog)?,
        timestamp: pick(
            &args.timestamp_keys,
            args.timestamp_threshold,
            Role::Timestamp,
        )?,
    };
    let new = Root {
        version: old.version + 1,
        expires: docfile::expiry(expires)?,
        keys,
        roles,
        ..old.clone()
    };
    write(&new, out)?;
    let mut json = written(&new, out);
    json["previous_version"] = old.version.into();
    json["old_root_threshold"] = old.roles.root.threshold.into();
    Ok(Report::done(
        json,
        format!(
            "wrote {} (root v{}, unsigned): sign it with {} of the old root keys and {} of the new ones",
            out.display(),
            new.version,
            old.roles.root.threshold,
            new.roles.root.threshold
        ),
    ))
}
