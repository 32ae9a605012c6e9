//! `archy seed`: serve and announce every blob a data dir's store holds, until Ctrl-C.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use serde_json::json;

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
        let swarm = args.swarm.start().await?;
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
                json!({"addr": addr.to_string(), "dht": dht, "blobs": held.iter().map(|h| h.to_string()).collect::<Vec<_>>()})
            );
        } else {
            println!("seeding {} blob(s) at {addr}", held.len());
            for d in &dht {
                println!("dht {d}");
            }
            for h in &held {
                println!("  {h}");
            }
        }
        std::io::stdout().flush()?;
        archy_registry::shutdown_signal().await;
        swarm.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The endpoint id (ed25519 public key, hex) of a node key.
fn iroh_id(secret: &[u8; 32]) -> String {
    hex::encode(iroh::SecretKey::from_bytes(secret).public().as_bytes())
}
