//! `archy fetch`: pull one blob from the origin and peers at once, every byte
//! BLAKE3-verified, with the same node key, store and DHT as the daemon (so a data dir
//! can be inspected or pre-seeded with it).

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context;
use archy_catalog::ContentHash;
use archy_registry::{
    relay::RelaySpec, DhtSettings, FetchOptions, FetchPlan, FetchStatus, Multiaddr, PeerAddr,
    Swarm, SwarmNode,
};
use clap::Args;
use serde_json::json;

use super::progress::{mib, shares, ByteProgress};

/// Where this swarm node keeps its key and store, and how it reaches the others.
#[derive(Debug, Clone, Args)]
pub struct SwarmArgs {
    /// Data dir: node key (`node.key`, 0600) and blob store.
    #[arg(long)]
    pub data: PathBuf,
    /// UDP address of the iroh endpoint (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Join the DHT through this node (`/ip4/IP/tcp/PORT/p2p/PEER_ID`, repeat); the
    /// DHT then names more providers and learns what this node holds.
    #[arg(long = "bootstrap")]
    pub bootstrap: Vec<Multiaddr>,
    /// TCP address of the DHT node (used with --bootstrap or --dht).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dht_listen: SocketAddr,
    /// Run a DHT node even without --bootstrap (others bootstrap through it).
    #[arg(long)]
    pub dht: bool,
    /// An iroh relay to use, so peers behind NAT reach this node and it them (repeat;
    /// the first is the home relay, and the origin's): `https://HOST:PORT` for a relay
    /// with a CA-signed certificate, or a relay spec file (`{"url", "quic_port",
    /// "cert"}`, as `archy seed --relay-listen` writes it to <data>/relay.json).
    #[arg(long = "iroh-relay", value_name = "URL|FILE", value_parser = parse_relay)]
    pub iroh_relays: Vec<RelaySpec>,
}

/// A `--iroh-relay` value: a URL, or the path of a relay spec JSON file.
pub fn parse_relay(text: &str) -> Result<RelaySpec, String> {
    if text.starts_with("https://") || text.starts_with("http://") {
        return RelaySpec::url_only(text).map_err(|e| e.to_string());
    }
    let bytes = std::fs::read(text).map_err(|e| format!("{text}: {e}"))?;
    if bytes.len() > 16 << 10 {
        return Err(format!("{text}: a relay spec is at most 16 KiB"));
    }
    let spec: RelaySpec =
        serde_json::from_slice(&bytes).map_err(|e| format!("{text}: not a relay spec: {e}"))?;
    spec.relay_url().map_err(|e| format!("{text}: {e}"))?;
    Ok(spec)
}

impl SwarmArgs {
    pub async fn start(&self) -> anyhow::Result<Swarm> {
        self.start_with_relays(Vec::new()).await
    }

    /// Starts the node with `first` ahead of the `--iroh-relay` ones (a relay of its
    /// own).
    pub async fn start_with_relays(&self, first: Vec<RelaySpec>) -> anyhow::Result<Swarm> {
        let dht = (self.dht || !self.bootstrap.is_empty()).then(|| DhtSettings {
            listen: self.dht_listen,
            bootstrap: self.bootstrap.clone(),
        });
        let relays = first.into_iter().chain(self.iroh_relays.iter().cloned());
        Swarm::start(
            SwarmNode::builder(&self.data, self.listen).relays(relays),
            dht,
        )
        .await
        .with_context(|| format!("cannot start the swarm node in {}", self.data.display()))
    }
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// BLAKE3 hash of the blob (`blake3:<hex>` or `<hex>`).
    pub hash: ContentHash,
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Its size in bytes, as the catalog gives it (asked from a provider otherwise).
    #[arg(long)]
    pub size: Option<u64>,
    /// The origin, `<endpoint id>@<ip:port>`: it holds everything and takes the pieces
    /// no peer can give.
    #[arg(long)]
    pub origin: Option<PeerAddr>,
    /// Another provider (repeat).
    #[arg(long = "peer")]
    pub peers: Vec<PeerAddr>,
    /// An HTTP(S) URL serving the blob and its hash tree at URL.obao (repeat): asked
    /// for ranges like the origin, every range verified. Needs --size.
    #[arg(long = "web-seed", value_name = "URL", requires = "size")]
    pub web_seeds: Vec<String>,
    /// Also write the verified blob to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Piece size in KiB.
    #[arg(long, default_value_t = 1024)]
    pub piece_kib: u64,
    /// Pieces requested from each provider at once.
    #[arg(long, default_value_t = FetchOptions::default().requests_per_provider)]
    pub in_flight: usize,
    /// After the fetch, keep serving (and announcing) until Ctrl-C or SIGTERM.
    #[arg(long)]
    pub seed: bool,
    /// Print a JSON summary instead of the progress bar.
    #[arg(long)]
    pub json: bool,
}

pub fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    super::block_on(async {
        let swarm = args.swarm.start().await?;
        // The origin's home relay: the first relay named.
        if let (Some(origin), Some(relay)) = (&args.origin, args.swarm.iroh_relays.first()) {
            swarm.node.learn_peer_relay(&origin.id, &relay.url);
        }
        let plan = FetchPlan {
            size: args.size,
            origin: args.origin.clone(),
            peers: args.peers.clone(),
            web_seeds: args.web_seeds.clone(),
            options: FetchOptions {
                piece_bytes: args.piece_kib.max(16) << 10,
                requests_per_provider: args.in_flight.max(1),
                ..FetchOptions::default()
            },
        };
        let (tx, rx) = tokio::sync::watch::channel(FetchStatus::default());
        let bar = (!args.json).then(|| tokio::spawn(progress_bar(rx, args.origin.clone())));
        let started = Instant::now();
        let result = swarm.fetch(args.hash, plan, Some(tx)).await;
        if let Some(bar) = bar {
            let _ = bar.await;
        }
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                swarm.shutdown().await;
                if args.json {
                    println!(
                        "{}",
                        json!({"hash": args.hash.to_string(), "verified": false, "error": e.to_string()})
                    );
                    return Ok(ExitCode::FAILURE);
                }
                let hint = if args.origin.is_none()
                    && args.peers.is_empty()
                    && args.swarm.bootstrap.is_empty()
                {
                    " (name providers with --origin or --peer, or find them in the DHT with --bootstrap)"
                } else {
                    ""
                };
                return Err(e).context(format!("fetch failed{hint}"));
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        if let Some(out) = &args.out {
            swarm
                .node
                .export(&args.hash, out)
                .await
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        let fetched: u64 = report.bytes_by_provider.values().sum();
        if args.json {
            println!(
                "{}",
                json!({
                    "hash": args.hash.to_string(),
                    "size": report.size,
                    "verified": true,
                    "seconds": seconds,
                    "already_held": report.already_held,
                    "bytes_by_provider": report.bytes_by_provider,
                    "failed_providers": report.failed_providers,
                    "addr": swarm.node.addr().to_string(),
                    "paths": swarm.node.peer_paths(),
                })
            );
        } else {
            eprintln!(
                "verified {} ({}) in {seconds:.2} s: {} fetched{}",
                args.hash,
                mib(report.size),
                mib(fetched),
                if report.already_held > 0 {
                    format!(", {} already held", mib(report.already_held))
                } else {
                    String::new()
                }
            );
            for (p, b) in &report.bytes_by_provider {
                let who = label(p, args.origin.as_ref());
                eprintln!("  {who:<28} {:>10}", mib(*b));
            }
            for (p, why) in &report.failed_providers {
                eprintln!("  dropped {}: {why}", label(p, args.origin.as_ref()));
            }
        }
        std::io::stdout().flush()?;
        if args.seed {
            eprintln!("seeding {} until Ctrl-C", swarm.node.addr());
            archy_registry::shutdown_signal().await;
        }
        swarm.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn label(p: &str, origin: Option<&PeerAddr>) -> String {
    if origin.is_some_and(|o| o.to_string() == p) {
        "origin".into()
    } else {
        format!("peer {}", p.get(..10).unwrap_or(p))
    }
}

/// Shows the fetch's progress until it ends, with each provider's share.
async fn progress_bar(mut rx: tokio::sync::watch::Receiver<FetchStatus>, origin: Option<PeerAddr>) {
    let mut display: Option<ByteProgress> = None;
    while rx.changed().await.is_ok() {
        let s = rx.borrow_and_update().clone();
        if s.size == 0 {
            continue;
        }
        let shares = shares(
            s.received
                .iter()
                .map(|(p, b)| (label(p, origin.as_ref()), b)),
        );
        display
            .get_or_insert_with(|| ByteProgress::new("fetch", s.size))
            .update(s.verified, s.size, &shares);
    }
    if let Some(mut d) = display {
        d.finish();
    }
}
