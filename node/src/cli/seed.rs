//! `archy seed`: serve and announce every blob a data dir's store holds, until Ctrl-C.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use archy_registry::relay::HomeRelay;

use super::fetch::SwarmArgs;

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Import this file into the store first (repeat).
    #[arg(long = "import")]
    pub imports: Vec<PathBuf>,
    /// Print this node's endpoint id (creating its key if needed) and exit.
    #[arg(long)]
    pub print_id: bool,
    /// Also run an iroh relay on this address (TCP for the relay, UDP for QUIC address
    /// discovery), use it as this node's home relay, and write its spec (URL and
    /// self-signed certificate) to <data>/relay.json for other nodes' --iroh-relay.
    #[arg(long, value_name = "ADDR")]
    pub relay_listen: Option<std::net::SocketAddr>,
    /// The host name or IP others reach the relay by (default: --relay-listen's IP).
    #[arg(long, value_name = "HOST", requires = "relay_listen")]
    pub relay_host: Option<String>,
    /// Print the ready line as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn seed(args: SeedArgs) -> anyhow::Result<ExitCode> {
    if args.print_id {
        let key = archy_registry::node_key(&args.swarm.data)?;
        let id = iroh_id(&key);
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    super::block_on(async {
        let relay = match args.relay_listen {
            Some(listen) => Some(
                HomeRelay::spawn(&args.swarm.data, listen, args.relay_host.as_deref())
                    .await
                    .with_context(|| format!("cannot run a relay on {listen}"))?,
            ),
            None => None,
        };
        let spec = relay.as_ref().map(HomeRelay::spec);
        if let Some(spec) = &spec {
            let path = args.swarm.data.join("relay.json");
            archy_catalog::fsutil::write_atomic(&path, &serde_json::to_vec(spec)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let swarm = args
            .swarm
            .start_with_relays(spec.iter().cloned().collect())
            .await?;
        for f in &args.imports {
            swarm
                .import(f)
                .await
                .with_context(|| format!("cannot import {}", f.display()))?;
        }
        let held = swarm.announce_held().await?;
        let addr = swarm.node.addr();
        archy_catalog::fsutil::write_atomic(
            &args.swarm.data.join("swarm.addr"),
            addr.to_string().as_bytes(),
        )?;
        let dht: Vec<String> = swarm.dht_addrs().iter().map(|a| a.to_string()).collect();
        if args.json {
            println!(
                "{}",
                json!({"addr": addr.to_string(), "dht": dht, "relay": spec, "blobs": held.iter().map(|h| h.to_string()).collect::<Vec<_>>()})
            );
        } else {
            println!("seeding {} blob(s) at {addr}", held.len());
            for d in &dht {
                println!("dht {d}");
            }
            if let Some(spec) = &spec {
                println!(
                    "relay {} (spec in {})",
                    spec.url,
                    args.swarm.data.join("relay.json").display()
                );
            }
            for h in &held {
                println!("  {h}");
            }
        }
        std::io::stdout().flush()?;
        archy_registry::shutdown_signal().await;
        swarm.shutdown().await;
        if let Some(relay) = relay {
            relay.shutdown().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The endpoint id (ed25519 public key, hex) of a node key.
fn iroh_id(secret: &[u8; 32]) -> String {
    hex::encode(iroh::SecretKey::from_bytes(secret).public().as_bytes())
}
