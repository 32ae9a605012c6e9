//! `archy app publish`: announce an app release on the Nostr marketplace.
//!
//! Runs the catalog's own build step on the manifest (validation, image archive
//! hashing and inspection), turns the result into the app and release announcements,
//! signs them with the developer's key and sends both to every relay, reporting what
//! each relay said.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use archy_discovery::{
    announcement::{announcement_builders, is_endpoint_id, AnnouncementContent},
    client::{PublishReport, RelaySet},
};
use clap::Args;
use nostr_sdk::prelude::*;
use serde_json::json;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The manifest file (YAML or JSON); `container.image` is the path of the OCI
    /// archive, relative to the manifest.
    pub file: PathBuf,
    /// The developer's secret key file (nsec, mode 0600; see `archy key new`).
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
    /// iroh endpoint id (64 hex digits) of a node that serves the image (repeatable).
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// Seconds each relay may take to connect and answer.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    super::market::block_on(publish(args))
}

async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let keys = super::key::load_keys(&args.key)?;
    if let Some(bad) = args.providers.iter().find(|p| !is_endpoint_id(p)) {
        anyhow::bail!("--provider {bad:?}: not an iroh endpoint id (64 lowercase hex digits)");
    }
    let (release, built) = archy_catalog::build::build_release(&args.file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let content = AnnouncementContent {
        manifest: release.manifest,
        image: release.image,
        providers: args.providers.clone(),
    };
    let events: Vec<Event> = announcement_builders(&content, None)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?
        .into_iter()
        .map(|b| b.sign_with_keys(&keys))
        .collect::<Result<_, _>>()
        .context("cannot sign the announcements")?;

    let relays = RelaySet::connect(&args.relays, Duration::from_secs(args.timeout)).await?;
    let mut reports: Vec<(String, PublishReport)> = Vec::new();
    for e in &events {
        let d = e.tags.identifier().unwrap_or_default().to_string();
        for r in relays.publish(e).await {
            reports.push((d.clone(), r));
        }
    }
    relays.shutdown().await;

    // A relay counts when it took both the app and the release announcement.
    let accepted_by: Vec<&str> = args
        .relays
        .iter()
        .map(String::as_str)
        .filter(|url| {
            let mine: Vec<_> = reports
                .iter()
                .filter(|(_, r)| same_relay(&r.url, url))
                .collect();
            !mine.is_empty() && mine.iter().all(|(_, r)| r.accepted)
        })
        .collect();
    let npub = keys.public_key().to_bech32()?;
    if args.json {
        println!(
            "{}",
            json!({
                "handle": format!("{npub}/{}", built.id),
                "developer": npub,
                "app_id": built.id,
                "version": built.version,
                "image": content.image,
                "providers": content.providers,
                "events": events.iter().map(|e| json!({"id": e.id.to_hex(), "d": e.tags.identifier()})).collect::<Vec<_>>(),
                "relays": reports.iter().map(|(d, r)| json!({"d": d, "url": r.url, "accepted": r.accepted, "message": r.message})).collect::<Vec<_>>(),
                "accepted_by": accepted_by,
            })
        );
    } else {
        println!("{} {} ({})", built.id, built.version, content.image.hash);
        println!("  handle {npub}/{}", built.id);
        for (d, r) in &reports {
            let mark = if r.accepted { "ok  " } else { "FAIL" };
            println!("  {mark} {} {d}: {}", r.url, r.message);
        }
        println!(
            "published to {} of {} relay(s)",
            accepted_by.len(),
            args.relays.len()
        );
    }
    Ok(if accepted_by.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether two relay URLs name the same relay (ignoring a trailing slash).
fn same_relay(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}
