//! `archy origin serve`: serve a signed publish dir to the swarm.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum OriginCommand {
    /// Serve a publish dir to the swarm (the same as `archy-registry serve`): verify the
    /// signed documents, import every referenced image, serve until Ctrl-C. Prints
    /// `origin <endpoint id>@<ip:port> ...`; nodes take that address as `--origin`.
    Serve {
        /// Publish dir: root.json, timestamp.json, catalog.json, blobs/<blake3 hex>.
        #[arg(long)]
        publish: PathBuf,
        /// The origin's data dir (node key, blob store, origin.json).
        #[arg(long)]
        data: PathBuf,
        /// UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Also run a DHT node on this TCP address (prints `dht <multiaddr>` for nodes'
        /// --bootstrap) and announce every image there.
        #[arg(long)]
        dht_listen: Option<SocketAddr>,
        /// A DHT node to join through, `/ip4/IP/tcp/PORT/p2p/PEER_ID` (repeat).
        #[arg(long, requires = "dht_listen")]
        bootstrap: Vec<archy_registry::Multiaddr>,
    },
}

pub fn origin(cmd: OriginCommand) -> anyhow::Result<ExitCode> {
    let OriginCommand::Serve {
        publish,
        data,
        listen,
        dht_listen,
        bootstrap,
    } = cmd;
    let dht = dht_listen.map(|listen| archy_registry::DhtSettings { listen, bootstrap });
    super::block_on(async {
        archy_registry::origin::serve_until_stopped(&publish, &data, listen, dht).await?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
