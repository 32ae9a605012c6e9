//! `catalog-signer`: the catalog publisher's offline tool.
//!
//! It makes keys, writes and rotates the root of trust, builds a catalog from a
//! directory of manifests, writes the timestamp (head), adds signatures, and verifies
//! everything exactly as a node would. It links no network code (only `archy-catalog`),
//! so it can run on an air-gapped signing machine.
//!
//! Exit codes: 0 success, 1 verification failed (the one-line reason names the attack or
//! defect), 2 bad usage or unreadable input.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{anyhow, bail, Context};
use archy_catalog::{
    build,
    documents::{Envelope, Role, RoleKeys, Roles, Root, Timestamp, SPEC_VERSION},
    duration,
    fsutil::write_atomic,
    keys::{load_public, KeyMap, PublicKey, SecretKey},
    Limits, TrustError, TrustedState,
};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

/// Offline signing tool for Archy catalogs.
///
/// A typical first publication:
///
///   catalog-signer keygen --out keys/root1        (and root2, catalog, timestamp)
///   catalog-signer root init --root-key keys/root1.pub --root-key keys/root2.pub --root-threshold 2 \
///       --catalog-key keys/catalog.pub --catalog-threshold 1 --timestamp-key keys/timestamp.pub \
///       --expires 365d --out root.json
///   catalog-signer sign root.json --key keys/root1.key --key keys/root2.key
///   catalog-signer catalog build --apps apps/ --version 1 --expires 30d --out catalog.json
///   catalog-signer sign catalog.json --key keys/catalog.key
///   catalog-signer timestamp --catalog catalog.json --version 1 --expires 1d --out timestamp.json
///   catalog-signer sign timestamp.json --key keys/timestamp.key
///   catalog-signer verify --root root.json --catalog catalog.json --timestamp timestamp.json
#[derive(Debug, Parser)]
#[command(name = "catalog-signer", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 key pair: NAME.key (mode 0600) and NAME.pub. Prints the key id.
    Keygen {
        /// Path prefix of the key files, e.g. `keys/root1` writes keys/root1.key and keys/root1.pub.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write (`init`) or rotate (`rotate`) the root of trust.
    #[command(subcommand)]
    Root(RootCommand),
    /// Add signatures to a root, catalog or timestamp file, in place.
    ///
    /// The signature covers the exact bytes of the document's `signed` value; signing
    /// again with the same key replaces that key's signature.
    Sign {
        /// The document to sign.
        file: PathBuf,
        /// A secret key file (repeat to add several signatures).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Build catalogs.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Write an unsigned timestamp (the head) that pins a catalog file's hash, size and version.
    Timestamp {
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
    },
    /// Verify documents exactly as a node does.
    ///
    /// Exits 0 when everything verifies; otherwise prints one line naming the attack or
    /// defect (bad signature, below threshold, expired, rollback, hash mismatch, document
    /// too large, unknown key) and exits 1.
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
enum RootCommand {
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
struct RoleKeyArgs {
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
struct RotateKeyArgs {
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

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Build an unsigned catalog from every manifest (*.yaml, *.yml, *.json) under a directory.
    ///
    /// Each manifest is validated; its image (a path relative to the manifest) is hashed
    /// with BLAKE3 and inspected for its OCI config digest. Every problem in every file
    /// is reported.
    Build {
        /// Directory of manifests (searched recursively).
        #[arg(long)]
        apps: PathBuf,
        /// Catalog version; must grow with every new catalog.
        #[arg(long)]
        version: u64,
        /// Validity, e.g. 30d.
        #[arg(long, default_value = "30d")]
        expires: String,
        #[arg(long)]
        out: PathBuf,
        /// Also copy every image archive to DIR/<blake3 hex>, ready for an origin to serve.
        #[arg(long)]
        blobs: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Root file(s). Without --state the first is the trust anchor (it must be signed by
    /// its own root keys); further ones, in version order, are verified as rotations.
    /// With --state, they are applied as updates to the remembered root.
    #[arg(long = "root", required = true)]
    roots: Vec<PathBuf>,
    #[arg(long)]
    catalog: Option<PathBuf>,
    #[arg(long)]
    timestamp: Option<PathBuf>,
    /// Remember the highest versions accepted in DIR/trusted.json and refuse older ones.
    #[arg(long)]
    state: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Keygen { out, json } => keygen(&out, json),
        Command::Root(RootCommand::Init { keys, expires, out }) => root_init(keys, &expires, &out),
        Command::Root(RootCommand::Rotate {
            root,
            keys,
            expires,
            out,
        }) => root_rotate(&root, keys, &expires, &out),
        Command::Sign { file, keys } => sign(&file, &keys),
        Command::Catalog(CatalogCommand::Build {
            apps,
            version,
            expires,
            out,
            blobs,
            json,
        }) => catalog_build(&apps, version, &expires, &out, blobs.as_deref(), json),
        Command::Timestamp {
            catalog,
            version,
            expires,
            out,
        } => timestamp(&catalog, version, &expires, &out),
        Command::Verify(args) => verify(args),
    }
}

fn keygen(out: &Path, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = SecretKey::generate()?;
    let (key_path, pub_path) = key.write_pair(out)?;
    if json {
        println!(
            "{}",
            json!({"keyid": key.key_id().to_string(), "key": key_path, "pub": pub_path})
        );
    } else {
        println!("{}", key.key_id());
        eprintln!(
            "wrote {} (secret, mode 0600) and {}",
            key_path.display(),
            pub_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn expiry(s: &str) -> anyhow::Result<DateTime<Utc>> {
    duration::expiry_after(Utc::now(), s).context("--expires")
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

fn write_unsigned(root: &Root, out: &Path) -> anyhow::Result<()> {
    root.check().context("invalid root")?;
    let env = Envelope::new_unsigned(root)?;
    write_atomic(out, &env.to_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

fn root_init(args: RoleKeyArgs, expires: &str, out: &Path) -> anyhow::Result<ExitCode> {
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
        expires: expiry(expires)?,
        keys,
        roles,
    };
    write_unsigned(&root, out)?;
    println!(
        "wrote {} (root v1, unsigned): sign it with {} of its {} root key(s)",
        out.display(),
        root.roles.root.threshold,
        root.roles.root.keyids.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn read_doc(path: &Path) -> anyhow::Result<Envelope> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Envelope::from_slice(&bytes)
        .with_context(|| format!("{}: not a signed document", path.display()))
}

fn root_rotate(
    old_path: &Path,
    args: RotateKeyArgs,
    expires: &str,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let old: Root = read_doc(old_path)?
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
        expires: expiry(expires)?,
        keys,
        roles,
        ..old.clone()
    };
    write_unsigned(&new, out)?;
    println!(
        "wrote {} (root v{}, unsigned): sign it with {} of the old root keys and {} of the new ones",
        out.display(),
        new.version,
        old.roles.root.threshold,
        new.roles.root.threshold
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(file: &Path, key_files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut env = read_doc(file)?;
    let header = env
        .header()
        .with_context(|| format!("{}: no _type/version", file.display()))?;
    for k in key_files {
        let key = SecretKey::load(k)?;
        env.sign(&key);
        println!(
            "signed {} v{} with key {}",
            header.role,
            header.version,
            key.key_id()
        );
    }
    write_atomic(file, &env.to_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn catalog_build(
    apps: &Path,
    version: u64,
    expires: &str,
    out: &Path,
    blobs: Option<&Path>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let expires = expiry(expires)?;
    let built = match build::build_catalog(apps, version, expires) {
        Ok(b) => b,
        Err(e) => {
            if as_json {
                println!("{}", json!({"ok": false, "problems": e.problems}));
            } else {
                eprintln!("{e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let env = Envelope::new_unsigned(&built.catalog)?;
    let bytes = env.to_bytes();
    write_atomic(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    if let Some(dir) = blobs {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for r in &built.releases {
            let dest = dir.join(r.image.hash.to_hex());
            if !dest.exists() {
                let tmp = dir.join(format!(".{}.tmp", r.image.hash.to_hex()));
                fs::copy(&r.image_file, &tmp)
                    .with_context(|| format!("cannot copy {}", r.image_file.display()))?;
                fs::rename(&tmp, &dest)?;
            }
        }
    }
    if as_json {
        println!(
            "{}",
            json!({"ok": true, "out": out, "version": version, "expires": expires, "size": bytes.len(),
                   "apps": built.catalog.apps.len(), "releases": built.releases})
        );
    } else {
        for r in &built.releases {
            println!(
                "  {}@{}  {}  {} bytes",
                r.id, r.version, r.image.hash, r.image.size
            );
        }
        println!(
            "wrote {} (catalog v{version}, {} app(s), {} release(s), unsigned)",
            out.display(),
            built.catalog.apps.len(),
            built.releases.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn timestamp(catalog: &Path, version: u64, expires: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let bytes = fs::read(catalog).with_context(|| format!("cannot read {}", catalog.display()))?;
    let ts = Timestamp::for_catalog(&bytes, version, expiry(expires)?)
        .map_err(|e| anyhow!("{}: {e}", catalog.display()))?;
    let env = Envelope::new_unsigned(&ts)?;
    write_atomic(out, &env.to_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote {} (timestamp v{version} pinning catalog v{} {} {} bytes, unsigned)",
        out.display(),
        ts.catalog.version,
        ts.catalog.hash,
        ts.catalog.size
    );
    Ok(ExitCode::SUCCESS)
}

const STATE_FILE: &str = "trusted.json";

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits::default();
    let now = Utc::now();
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let state_file = args.state.as_ref().map(|d| d.join(STATE_FILE));
    let remembered: Option<TrustedState> = match &state_file {
        Some(f) if f.exists() => Some(
            serde_json::from_slice(&read(f)?)
                .with_context(|| format!("{}: corrupt trust state", f.display()))?,
        ),
        _ => None,
    };
    let mut report = BTreeMap::new();
    let mut state_slot = remembered;
    let result = (|| -> Result<(), (PathBuf, TrustError)> {
        let mut roots = args.roots.iter();
        let state = match state_slot.as_mut() {
            Some(s) => s,
            None => {
                let first = roots.next().expect("clap requires one root");
                let bytes = read(first).map_err(|e| (first.clone(), malformed(Role::Root, e)))?;
                state_slot.insert(
                    TrustedState::bootstrap(&bytes, &limits).map_err(|e| (first.clone(), e))?,
                )
            }
        };
        for r in roots {
            let bytes = read(r).map_err(|e| (r.clone(), malformed(Role::Root, e)))?;
            state
                .update_root(&bytes, &limits)
                .map_err(|e| (r.clone(), e))?;
        }
        let root_path = args.roots.last().cloned().unwrap_or_default();
        let root = state.fresh_root(now).map_err(|e| (root_path, e))?;
        report.insert(
            "root",
            json!({"version": root.version, "expires": root.expires}),
        );
        let ts = match &args.timestamp {
            Some(p) => {
                let bytes = read(p).map_err(|e| (p.clone(), malformed(Role::Timestamp, e)))?;
                let ts = state
                    .verify_timestamp(&bytes, now, &limits)
                    .map_err(|e| (p.clone(), e))?;
                report.insert(
                    "timestamp",
                    json!({"version": ts.version, "expires": ts.expires, "catalog": ts.catalog}),
                );
                Some(ts)
            }
            None => None,
        };
        if let Some(p) = &args.catalog {
            let bytes = read(p).map_err(|e| (p.clone(), malformed(Role::Catalog, e)))?;
            let cat = state
                .verify_catalog(&bytes, ts.as_ref(), now, &limits)
                .map_err(|e| (p.clone(), e))?;
            // The publisher's check goes deeper than a node's: every release must pass
            // the manifest policy, not just the one being installed.
            if let Some((at, problem)) = cat.check_releases().into_iter().next() {
                let reason = format!("release {at}: {}", problem.to_string().replace('\n', ";"));
                return Err((
                    p.clone(),
                    TrustError::Malformed {
                        role: Role::Catalog,
                        reason,
                    },
                ));
            }
            let releases: usize = cat.apps.values().map(|a| a.releases.len()).sum();
            report.insert(
                "catalog",
                json!({"version": cat.version, "expires": cat.expires, "apps": cat.apps.len(), "releases": releases}),
            );
        }
        Ok(())
    })();
    // Whatever was accepted before a failure is remembered: TrustedState only changes
    // on success of each step, so this never records a refused document.
    if let (Some(f), Some(state)) = (&state_file, &state_slot) {
        if let Some(dir) = f.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut bytes = serde_json::to_vec_pretty(state)?;
        bytes.push(b'\n');
        write_atomic(f, &bytes).with_context(|| format!("cannot write {}", f.display()))?;
    }
    match result {
        Ok(()) => {
            if args.json {
                println!("{}", json!({"ok": true, "verified": report}));
            } else {
                let mut parts = Vec::new();
                for (name, v) in &report {
                    parts.push(format!("{name} v{}", v["version"]));
                }
                println!("ok: {}", parts.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err((file, e)) => {
            if args.json {
                println!(
                    "{}",
                    json!({"ok": false, "file": file, "error": {"kind": e.kind(), "message": e.to_string()}, "verified": report})
                );
            } else {
                eprintln!("FAILED {}: {e}", file.display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn malformed(role: Role, e: anyhow::Error) -> TrustError {
    TrustError::Malformed {
        role,
        reason: format!("{e:#}"),
    }
}
