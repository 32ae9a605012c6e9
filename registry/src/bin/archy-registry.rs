//! `archy-registry serve`: run an origin from a publish dir (the same command as
//! `archy origin serve`, for hosts that run only the origin).

use archy_registry::origin::OriginArgs;
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
    /// and the signed head (ALPN archy/head/1) until Ctrl-C or SIGTERM. Prints the
    /// origin's address (`origin <endpoint id>@<ip:port> ...`), which nodes take as
    /// `--origin`, and writes it to `<data>/origin.json`. A newer signed timestamp in
    /// the publish dir is picked up within 2 s; one that does not verify is refused and
    /// the old head stays.
    Serve(OriginArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    args.serve_until_stopped().await?;
    Ok(())
}
