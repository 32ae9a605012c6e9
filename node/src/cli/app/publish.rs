//! `archy app publish` and `archy app retract`: a developer's announcements on the
//! Nostr marketplace, plus [`send`], which every signing command uses to deliver
//! events to each relay and report what each said.
//!
//! Publishing runs the catalog's own build step on the manifest (validation, image
//! archive hashing and inspection), turns the result into the app and release
//! announcements, signs them with the developer's key and sends both to every relay.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use archy_discovery::{
    announcement::{
        announcement_builders, app_identifier, check_author, is_endpoint_id, retraction_builder,
        AnnouncementContent, MARKER_TAG, MARKET_KIND, RELEASE_PREFIX,
    },
    client::{PublishReport, RelaySet},
};
use clap::Args;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

/// Where to send and how to print: shared by every command that signs events.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The secret key file to sign with (nsec, mode 0600; see `archy key new`).
    #[arg(long)]
    pub key: PathBuf,
    /// Relay to publish to (repeat for several).
    #[arg(
        long = "relay",
        required = true,
        env = "ARCHY_RELAYS",
        value_delimiter = ','
    )]
    pub relays: Vec<String>,
    /// Seconds each relay may take to connect and answer.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The manifest file (YAML or JSON); `container.image` is the path of the OCI
    /// archive, relative to the manifest.
    pub file: PathBuf,
    /// The data dir of an Archy node you run (`archy node run --data DIR`, running now):
    /// the image archive is imported into its store, and that node serves it and is
    /// announced as a provider. Without it (or --provider) nothing would serve the image,
    /// and publish refuses.
    #[arg(long, env = "ARCHY_DATA")]
    pub data: Option<PathBuf>,
    /// An HTTP(S) URL that serves the image archive's bytes (a static host, a CDN, a
    /// Blossom-style blob server; repeatable, at most 8). Each is downloaded and hashed
    /// now, and refused unless it serves exactly this archive. If it also serves the
    /// archive's hash tree at URL.obao (publish writes ARCHIVE.obao to upload), nodes
    /// fetch byte ranges from it next to peers; otherwise they download the whole
    /// archive from it when the swarm has no copy. Every byte is checked against the
    /// signed hash.
    #[arg(long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// iroh endpoint id (64 hex digits) of another node that serves the image
    /// (repeatable; for advanced use: make sure it holds the archive).
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, Args)]
pub struct RetractArgs {
    /// The app id whose app and release announcements to withdraw.
    pub app_id: String,
    #[command(flatten)]
    pub send: SendArgs,
}

/// What every relay said about every event.
#[derive(Debug)]
pub struct Sent {
    /// (event label, relay report) in send order.
    pub reports: Vec<(String, PublishReport)>,
    /// Relays that accepted every event.
    pub accepted_by: Vec<String>,
    pub relay_count: usize,
}

impl Sent {
    pub fn to_json(&self) -> Value {
        json!({
            "relays": self.reports.iter().map(|(label, r)| json!({"event": label, "url": r.url, "accepted": r.accepted(), "message": r.message()})).collect::<Vec<_>>(),
            "accepted_by": self.accepted_by,
        })
    }

    pub fn print(&self) {
        for (label, r) in &self.reports {
            let mark = if r.accepted() { "ok  " } else { "FAIL" };
            println!("  {mark} {} {label}: {}", r.url, r.message());
        }
        println!(
            "published to {} of {} relay(s)",
            self.accepted_by.len(),
            self.relay_count
        );
    }

    /// Success when at least one relay took everything.
    pub fn exit_code(&self) -> ExitCode {
        if self.accepted_by.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Sends each (label, event) to every relay in `args`.
pub async fn send(args: &SendArgs, events: &[(String, Event)]) -> anyhow::Result<Sent> {
    let relays = RelaySet::connect(&args.relays, Duration::from_secs(args.timeout)).await?;
    let mut reports = Vec::new();
    for (label, e) in events {
        for r in relays.publish(e).await {
            reports.push((label.clone(), r));
        }
    }
    relays.shutdown().await;
    let mut urls: Vec<String> = reports.iter().map(|(_, r)| r.url.clone()).collect();
    urls.sort();
    urls.dedup();
    let accepted_by = urls
        .iter()
        .filter(|url| {
            reports
                .iter()
                .filter(|(_, r)| &r.url == *url)
                .all(|(_, r)| r.accepted())
        })
        .cloned()
        .collect();
    Ok(Sent {
        reports,
        accepted_by,
        relay_count: urls.len(),
    })
}

pub fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    crate::cli::block_on(publish(args))
}

async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let keys = crate::cli::key::load_keys(&args.send.key)?;
    if let Some(bad) = args.providers.iter().find(|p| !is_endpoint_id(p)) {
        anyhow::bail!("--provider {bad:?}: not an iroh endpoint id (64 lowercase hex digits)");
    }
    let (release, built) = archy_catalog::build::build_release(&args.file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    check_author(&release.manifest, &keys.public_key()).with_context(|| {
        format!(
            "{}: sign with the key the manifest names",
            args.file.display()
        )
    })?;
    let mut providers = args.providers.clone();
    if let Some(data) = &args.data {
        let seeded = seed_with_node(data, &built)?;
        if !providers.contains(&seeded) {
            providers.insert(0, seeded);
        }
    }
    let mut image = release.image;
    let without_tree = check_web_seeds(&args.web_seeds, &image, &built.image_file)?;
    image.web_seeds = args.web_seeds.clone();
    anyhow::ensure!(
        !providers.is_empty() || !image.web_seeds.is_empty(),
        "nothing would serve {}'s image ({}), so no node could install it: pass --data DIR \
         with the data dir of an Archy node you run (it imports the image and seeds it), \
         --web-seed URL of a web server that serves the archive, or --provider ID of a node \
         that holds it",
        built.id,
        built.image.hash
    );
    let content = AnnouncementContent {
        manifest: release.manifest,
        image,
        providers,
    };
    let events: Vec<(String, Event)> = announcement_builders(&content, None)
        .with_context(|| args.file.display().to_string())?
        .into_iter()
        .map(|b| -> anyhow::Result<(String, Event)> {
            let e = b
                .sign_with_keys(&keys)
                .context("cannot sign the announcement")?;
            Ok((e.tags.identifier().unwrap_or_default().to_string(), e))
        })
        .collect::<anyhow::Result<_>>()?;
    let sent = send(&args.send, &events).await?;
    let handle = format!("{}/{}", keys.public_key().to_bech32()?, built.id);
    if args.send.json {
        let mut out = sent.to_json();
        out["handle"] = handle.into();
        out["app_id"] = built.id.into();
        out["version"] = built.version.into();
        out["image"] = serde_json::to_value(&content.image)?;
        out["providers"] = content.providers.into();
        out["web_seeds_without_hash_tree"] = without_tree.into();
        out["events"] = events
            .iter()
            .map(|(d, e)| json!({"d": d, "id": e.id.to_hex()}))
            .collect();
        println!("{out}");
    } else {
        println!("{} {} ({})", built.id, built.version, content.image.hash);
        println!("  handle {handle}");
        sent.print();
    }
    Ok(sent.exit_code())
}

/// Downloads the archive from each web seed and refuses the publish, naming the seed,
/// unless it serves exactly this archive; then checks each seed's hash tree
/// (`<url>.obao`, which lets nodes fetch ranges from it next to peers). Returns the
/// seeds that serve no tree, after writing the tree next to `archive` and saying where
/// to upload it; a seed that serves a wrong tree is refused.
fn check_web_seeds(
    urls: &[String],
    image: &archy_catalog::ImageRef,
    archive: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    use archy_catalog::hash_tree::{hash_tree_of_file, hash_tree_url};
    anyhow::ensure!(
        urls.len() <= archy_catalog::documents::MAX_WEB_SEEDS,
        "at most {} --web-seed",
        archy_catalog::documents::MAX_WEB_SEEDS
    );
    if urls.is_empty() {
        return Ok(Vec::new());
    }
    let scratch = tempfile::tempdir()?;
    for url in urls {
        let got = archy_node::web_seed::download(url, image, scratch.path())
            .with_context(|| format!("--web-seed {url} does not serve this image"))?;
        std::fs::remove_file(got)?;
    }
    let (_, _, tree) =
        hash_tree_of_file(archive).with_context(|| format!("cannot hash {}", archive.display()))?;
    let tree_file = archive.with_file_name(format!(
        "{}{}",
        archive.file_name().unwrap_or_default().to_string_lossy(),
        archy_catalog::hash_tree::SUFFIX
    ));
    let mut without_tree = Vec::new();
    for url in urls {
        let tree_url = hash_tree_url(url);
        let timeout = std::time::Duration::from_secs(30);
        match archy_registry::web_seed::WebSeed::open(url, image.hash, image.size, timeout, timeout)
        {
            Ok(seed) if seed.hash_tree() == tree => {}
            Ok(_) | Err(archy_registry::web_seed::WebSeedFault::HashTreeSize { .. }) => {
                anyhow::bail!(
                    "--web-seed {url}: {tree_url} is not the hash tree of this image; upload {} \
                     there (or remove it)",
                    tree_file.display()
                )
            }
            Err(e) => {
                if !matches!(e, archy_registry::web_seed::WebSeedFault::NoHashTree(_)) {
                    eprintln!("warning: cannot read {tree_url}: {e}");
                }
                without_tree.push(url.clone());
            }
        }
    }
    if !without_tree.is_empty() {
        archy_catalog::fsutil::write_atomic(&tree_file, &tree)
            .with_context(|| format!("cannot write {}", tree_file.display()))?;
        for url in &without_tree {
            eprintln!(
                "note: {url} serves no hash tree, so nodes use it only as a whole-archive \
                 fallback; upload {} to {} and nodes fetch ranges from it next to peers",
                tree_file.display(),
                hash_tree_url(url)
            );
        }
    }
    Ok(without_tree)
}

/// Hands the release's image archive to the node at `data`, which imports it, serves
/// it and announces it; returns that node's endpoint id.
fn seed_with_node(
    data: &std::path::Path,
    built: &archy_catalog::build::BuiltRelease,
) -> anyhow::Result<String> {
    let api = archy_node::client::ApiClient::from_data_dir(data).with_context(|| {
        format!(
            "--data {}: no running node there to seed the image; start it with \
             `archy node run --data {}` (or pass --provider ID)",
            data.display(),
            data.display()
        )
    })?;
    let archive = std::fs::canonicalize(&built.image_file)
        .with_context(|| format!("{}", built.image_file.display()))?;
    let answer = api
        .post(
            "/v1/seeds",
            json!({"path": archive, "hash": built.image.hash}),
        )
        .with_context(|| format!("the node at {} could not seed the image", data.display()))?;
    answer["provider"]
        .as_str()
        .map(str::to_string)
        .context("the node answered without its endpoint id")
}

pub fn retract(args: RetractArgs) -> anyhow::Result<ExitCode> {
    crate::cli::block_on(async move {
        let keys = crate::cli::key::load_keys(&args.send.key)?;
        let me = keys.public_key();
        // Find every announcement of this app the relays hold, to name them all.
        let mut relays =
            RelaySet::connect(&args.send.relays, Duration::from_secs(args.send.timeout)).await?;
        let mine = relays
            .fetch(
                Filter::new()
                    .kind(MARKET_KIND)
                    .author(me)
                    .hashtag(MARKER_TAG),
            )
            .await;
        relays.shutdown().await;
        let app_d = app_identifier(&args.app_id);
        let release_prefix = format!("{RELEASE_PREFIX}{}@", args.app_id);
        let mut identifiers = vec![app_d.clone()];
        let mut ids = Vec::new();
        for (e, _) in &mine {
            let Some(d) = e.tags.identifier() else {
                continue;
            };
            if d == app_d || d.starts_with(&release_prefix) {
                ids.push(e.id);
                if !identifiers.iter().any(|i| i == d) {
                    identifiers.push(d.to_string());
                }
            }
        }
        if ids.is_empty() {
            anyhow::bail!(
                "no announcement of {} by {} found on the given relays",
                args.app_id,
                me.to_bech32()?
            );
        }
        ids.sort();
        ids.dedup();
        let deletion = retraction_builder(&me, &identifiers, &ids).sign_with_keys(&keys)?;
        let sent = send(
            &args.send,
            &[(format!("retract {}", args.app_id), deletion)],
        )
        .await?;
        if args.send.json {
            let mut out = sent.to_json();
            out["retracted"] = identifiers.into();
            println!("{out}");
        } else {
            println!("retracting {} ({} event(s))", args.app_id, ids.len());
            sent.print();
        }
        Ok(sent.exit_code())
    })
}
