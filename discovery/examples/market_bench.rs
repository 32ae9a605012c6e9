//! Marketplace benchmark: ingest, verify and score N announcements from a relay.
//!
//! Two steps, so the measured process holds only what a node would:
//!
//! ```text
//! market_bench seed --relay ws://127.0.0.1:7447 --announcements 10000
//! market_bench sync --relay ws://127.0.0.1:7447 --me <operator hex>
//! ```
//!
//! `seed` signs N announcements (N/2 apps x app + release events, 10 apps per
//! developer, one app every 10 minutes of the past), contact lists (the operator follows 50 developers and 20 other keys
//! that follow more developers) and some endorsements and reports, and publishes them
//! all. It prints the operator key. `sync` runs `sync_market` (connect, fetch, verify,
//! merge, score) once and prints the wall time, the app count and the peak RSS of the
//! process (VmHWM). `scripts/bench-market.sh` runs both against `archy relay run`.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration, time::Instant};

use archy_catalog::{
    manifest::{parse_and_validate, ManifestFormat},
    oci::ArchiveFormat,
    ContentHash, ImageRef,
};
use archy_discovery::{
    announcement::{announcement_builders, endorsement_builder, AnnouncementContent},
    client::{sync_market, RelaySet, SyncOptions},
};
use nostr_sdk::prelude::*;

const APPS_PER_DEVELOPER: usize = 10;
const CONCURRENT_SENDS: usize = 64;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn content(dev: usize, app: usize) -> AnnouncementContent {
    let id = format!("org.dev{dev}.app{app}");
    let hash = ContentHash::of(id.as_bytes());
    let text = format!(
        "app:\n  id: {id}\n  name: App {dev}-{app}\n  version: 1.{app}.0\n  category: tools\n  \
         description: {{ short: \"Benchmark app {app} of developer {dev}\" }}\n  \
         container:\n    image: \"{hash}\"\n    ports: [{{ host: {port}, container: 8080 }}]\n",
        port = 20000 + app
    );
    AnnouncementContent {
        manifest: parse_and_validate(&text, ManifestFormat::Yaml).unwrap(),
        image: ImageRef {
            hash,
            size: 10_000_000,
            config_digest: format!("sha256:{}", "ab".repeat(32)),
            format: ArchiveFormat::OciArchive,
            web_seeds: Vec::new(),
        },
        providers: vec!["cd".repeat(32)],
    }
}

async fn seed(relay: String, announcements: usize) {
    let apps = announcements / 2;
    let developers: Vec<Keys> = (0..apps.div_ceil(APPS_PER_DEVELOPER))
        .map(|_| Keys::generate())
        .collect();
    let operator = Keys::generate();
    let friends: Vec<Keys> = (0..20).map(|_| Keys::generate()).collect();
    let mut events = Vec::with_capacity(announcements + 200);
    // Spread over time the way real publishing is: one app every 10 minutes.
    let now = Timestamp::now().as_secs();
    for i in 0..apps {
        let dev = i / APPS_PER_DEVELOPER;
        let at = Timestamp::from(now - 600 * (apps - i) as u64);
        for b in announcement_builders(&content(dev, i % APPS_PER_DEVELOPER), None).unwrap() {
            events.push(
                b.custom_created_at(at)
                    .sign_with_keys(&developers[dev])
                    .unwrap(),
            );
        }
    }
    let mut follows: Vec<PublicKey> = developers.iter().take(50).map(|k| k.public_key()).collect();
    follows.extend(friends.iter().map(|k| k.public_key()));
    events.push(
        EventBuilder::contact_list(follows.into_iter().map(Contact::new))
            .sign_with_keys(&operator)
            .unwrap(),
    );
    for (n, f) in friends.iter().enumerate() {
        let theirs = developers
            .iter()
            .skip(50 + n * 5)
            .take(20)
            .map(|k| Contact::new(k.public_key()));
        events.push(
            EventBuilder::contact_list(theirs)
                .sign_with_keys(f)
                .unwrap(),
        );
        let target = &developers[(n * 7) % developers.len()];
        events.push(
            endorsement_builder(
                &target.public_key(),
                &format!("org.dev{}.app0", (n * 7) % developers.len()),
            )
            .sign_with_keys(f)
            .unwrap(),
        );
    }
    events.push(
        EventBuilder::report(
            [Tag::public_key_report(
                developers[1].public_key(),
                Report::Malware,
            )],
            "",
        )
        .sign_with_keys(&friends[0])
        .unwrap(),
    );

    let relays = Arc::new(
        RelaySet::connect(&[relay], Duration::from_secs(10))
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT_SENDS {
        let (relays, rx) = (relays.clone(), rx.clone());
        workers.spawn(async move {
            let mut refused = 0usize;
            loop {
                let next = rx.lock().await.recv().await;
                let Some(e) = next else { break };
                refused += relays
                    .publish(&e)
                    .await
                    .iter()
                    .filter(|r| !r.accepted())
                    .count();
            }
            refused
        });
    }
    let total = events.len();
    for e in events {
        tx.send(e).await.unwrap();
    }
    drop(tx);
    let mut refused = 0;
    while let Some(r) = workers.join_next().await {
        refused += r.unwrap();
    }
    // Every worker has finished, so this is the last handle: close the connection.
    if let Ok(relays) = Arc::try_unwrap(relays) {
        relays.shutdown().await;
    }
    eprintln!(
        "seeded {total} events ({announcements} announcements, {} developers) in {:.1?}, {refused} refused",
        developers.len(),
        started.elapsed()
    );
    println!("{}", operator.public_key().to_hex());
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn sync(relay: String, me: Option<PublicKey>) {
    let started = Instant::now();
    let result = sync_market(&SyncOptions {
        relays: vec![relay],
        operator: me,
        timeout: Duration::from_secs(30),
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let apps = result.view.apps();
    let tiers = |t: &str| {
        apps.iter()
            .filter(|a| a.trust.tier.to_string() == t)
            .count()
    };
    println!(
        "{{\"seconds\": {:.3}, \"apps\": {}, \"events\": {}, \"verified\": {}, \"community\": {}, \"unverified\": {}, \"rejected\": {}, \"peak_rss_mib\": {:.1}}}",
        elapsed.as_secs_f64(),
        apps.len(),
        result.relays.iter().map(|r| r.events).sum::<usize>(),
        tiers("verified"),
        tiers("community"),
        tiers("unverified"),
        result.view.rejections().len(),
        peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let relay = arg(&args, "--relay").expect("--relay URL");
    match args.get(1).map(String::as_str) {
        Some("seed") => {
            let n = arg(&args, "--announcements").map_or(10_000, |s| s.parse().unwrap());
            seed(relay, n).await;
        }
        Some("sync") => {
            let me = arg(&args, "--me").map(|s| PublicKey::parse(&s).unwrap());
            sync(relay, me).await;
        }
        _ => {
            eprintln!("usage: market_bench seed|sync --relay URL [--announcements N] [--me KEY]");
            std::process::exit(2);
        }
    }
}
