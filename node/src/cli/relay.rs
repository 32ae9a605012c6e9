//! `archy relay run`: an embedded Nostr relay for local use and tests.
//!
//! nostr-relay-builder's `LocalRelay`, bound to the given address. With `--data` the
//! events live in an LMDB database in that directory and survive restarts; without it
//! they are kept in memory and lost on exit (the command says which).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::Subcommand;
use nostr_relay_builder::prelude::*;

/// Events one connection may publish per minute: generous, for local bulk publishing.
const NOTES_PER_MINUTE: u32 = 100_000;
/// Largest `limit` a query may ask for; clients page past it with `until`.
const MAX_FILTER_LIMIT: usize = 5_000;

#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Run a Nostr relay until interrupted (Ctrl-C or SIGTERM).
    ///
    /// Prints `relay listening on ws://ADDR (storage: ...)` once it accepts connections.
    Run {
        /// Address to listen on, e.g. 127.0.0.1:7447 (port 0 picks a free one).
        #[arg(long)]
        listen: SocketAddr,
        /// Directory for a persistent LMDB event store (created if missing).
        /// Without it, events are kept in memory only.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

pub fn run(cmd: RelayCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RelayCommand::Run { listen, data } => super::block_on(serve(listen, data)),
    }
}

async fn serve(listen: SocketAddr, data: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut builder = RelayBuilder::default()
        .addr(listen.ip())
        .rate_limit(RateLimit {
            max_reqs: 500,
            notes_per_minute: NOTES_PER_MINUTE,
        })
        .max_filter_limit(MAX_FILTER_LIMIT)
        .default_filter_limit(MAX_FILTER_LIMIT);
    if listen.port() != 0 {
        builder = builder.port(listen.port());
    }
    let storage = match &data {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create data directory {}", dir.display()))?;
            let db = nostr_lmdb::NostrLMDB::open(dir)
                .with_context(|| format!("cannot open event store in {}", dir.display()))?;
            builder = builder.database(db);
            format!("lmdb {}", dir.display())
        }
        None => "in-memory, lost on exit".to_string(),
    };
    let relay = LocalRelay::new(builder);
    if let Err(e) = relay.run().await {
        bail!("cannot listen on {listen}: {e}");
    }
    let url = relay.url().await;
    println!("relay listening on {url} (storage: {storage})");
    tracing::info!(%url, %storage, "relay running");
    archy_registry::shutdown_signal().await;
    relay.shutdown();
    eprintln!("relay stopped");
    Ok(ExitCode::SUCCESS)
}
