//! `archy-registry serve`: run an origin from a publish dir.

use std::{net::SocketAddr, path::PathBuf};

use archy_registry::{DhtSettings, Multiaddr};
use clap::{Parser, Subcommand};

/// The Archy origin registry: serves a signed catalog's head and images to the swarm.
#[derive(Debug, Parser)]
#[command(name = "archy-registry", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify the publish dir, import every image the catalog references and serve them
    /// and the signed head (ALPN archy/head/1) until Ctrl-C. Prints the origin's address
    /// (`<endpoint id>@<ip:port>`), which nodes take as `--origin`, and writes it to
    /// `<data>/origin.json`. A newer signed timestamp in the publish dir is picked up
    /// within 2 s; one that does not verify is refused and the old head stays.
    Serve {
        /// Publish dir: root.json (older roots as roots/<version>.json), timestamp.json,
        /// catalog.json and blobs/<blake3 hex>.
        #[arg(long)]
        publish: PathBuf,
        /// The origin's own data dir (node key, blob store, origin.json).
        #[arg(long)]
        data: PathBuf,
        /// UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Run a DHT node on this TCP address (nodes bootstrap through it) and announce
        /// every image.
        #[arg(long)]
        dht_listen: Option<SocketAddr>,
        /// Join an existing DHT through this node (repeat).
        #[arg(long = "bootstrap")]
        bootstrap: Vec<Multiaddr>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Serve {
        publish,
        data,
        listen,
        dht_listen,
        bootstrap,
    } = Cli::parse().command;
    let dht = dht_listen.map(|listen| DhtSettings { listen, bootstrap });
    archy_registry::origin::serve_until_stopped(&publish, &data, listen, dht).await?;
    Ok(())
}
