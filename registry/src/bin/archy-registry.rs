//! `archy-registry serve`: run an origin from a publish dir.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

/// The Archy origin registry: serves a signed catalog's images to the swarm.
#[derive(Debug, Parser)]
#[command(name = "archy-registry", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify the publish dir, import every image the catalog references and serve them
    /// until Ctrl-C. Prints the origin's address (`<endpoint id>@<ip:port>`), which nodes
    /// take as `--origin`.
    Serve {
        /// Publish dir: root.json, timestamp.json, catalog.json and blobs/<blake3 hex>.
        #[arg(long)]
        publish: PathBuf,
        /// The origin's own data dir (node key, blob store, origin.json).
        #[arg(long)]
        data: PathBuf,
        /// UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Serve {
        publish,
        data,
        listen,
    } = Cli::parse().command;
    let origin = archy_registry::Origin::start(&publish, &data, listen).await?;
    println!(
        "origin {} serving catalog v{} ({} image(s))",
        origin.addr(),
        origin.catalog_version,
        origin.blobs
    );
    tokio::signal::ctrl_c().await?;
    origin.node.shutdown().await;
    Ok(())
}
