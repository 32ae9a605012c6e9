//! `archy node run --join TICKET`: what a join ticket sets up before the daemon starts.
//!
//! The ticket is kept in `<data>/join.ticket`, so a later `archy node run` joins the
//! same way without it. It fills in what neither the flags nor config.toml set: the
//! origin, the DHT bootstrap nodes (and a DHT listen address), and, on first start, the
//! trust anchor, fetched from the origin and accepted only if it hashes to the ticket's
//! pin.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context;
use archy_node::config::NodeConfig;
use archy_registry::ticket::JoinTicket;

const TICKET_FILE: &str = "join.ticket";

/// The ticket to use: the one given, or the one a successful join saved before.
pub fn remembered(data: &Path, given: Option<JoinTicket>) -> anyhow::Result<Option<JoinTicket>> {
    let file = data.join(TICKET_FILE);
    match given {
        Some(t) => Ok(Some(t)),
        None if file.exists() => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            Ok(Some(
                text.parse()
                    .with_context(|| format!("{}", file.display()))?,
            ))
        }
        None => Ok(None),
    }
}

/// Fills `cfg` from the ticket where it is unset and, when the node has no trust anchor
/// yet, fetches the pinned root into `<data>/root.json`; then keeps the ticket for later
/// runs (a ticket that failed is not kept).
pub async fn apply(ticket: &JoinTicket, data: &Path, cfg: &mut NodeConfig) -> anyhow::Result<()> {
    let loopback = ticket.origin.socket.ip().is_loopback();
    let any: SocketAddr = match loopback {
        true => ([127, 0, 0, 1], 0).into(),
        false => ([0, 0, 0, 0], 0).into(),
    };
    if cfg.origin.is_none() {
        cfg.origin = Some(ticket.origin.clone());
    }
    if cfg.bootstrap.is_empty() {
        cfg.bootstrap = ticket.dht.clone();
    }
    if cfg.iroh_relays.is_empty() {
        cfg.iroh_relays = ticket.relays.clone();
    }
    // An endpoint bound to loopback cannot reach an origin that is elsewhere: unless
    // a flag or config.toml says where, the swarm listens on every address.
    if !loopback && cfg.swarm_listen.is_none() {
        tracing::info!(
            "the ticket's origin is not on loopback: the swarm listens on every address"
        );
        cfg.swarm_listen = Some(any);
    }
    if cfg.dht_listen.is_none() && !cfg.bootstrap.is_empty() {
        cfg.dht_listen = Some(any);
    }
    let anchor = data.join("root.json");
    if !anchor.exists() && cfg.root.is_none() {
        fetch_anchor(ticket, any, data, &anchor).await?;
    }
    let file = data.join(TICKET_FILE);
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    archy_catalog::fsutil::write_atomic(&file, ticket.to_string().as_bytes())
        .with_context(|| format!("cannot save {}", file.display()))
}

/// Writes the root the ticket pins, fetched from the origin, to `anchor`.
async fn fetch_anchor(
    ticket: &JoinTicket,
    any: SocketAddr,
    data: &Path,
    anchor: &Path,
) -> anyhow::Result<()> {
    // A throwaway endpoint (its own key and store) asks the origin for its roots.
    let scratch = tempfile::tempdir()?;
    let node = archy_registry::SwarmNode::builder(scratch.path(), any)
        .relays(ticket.relays.clone())
        .spawn()
        .await
        .context("cannot start an endpoint to reach the origin")?;
    if let Some(relay) = ticket.relays.first() {
        node.learn_peer_relay(&ticket.origin.id, &relay.url);
    }
    let root = ticket
        .fetch_pinned_root(&node, Duration::from_secs(15))
        .await
        .with_context(|| format!("joining {}", ticket.origin));
    node.shutdown().await;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    archy_catalog::fsutil::write_atomic(anchor, &root?)
        .with_context(|| format!("cannot write {}", anchor.display()))?;
    tracing::info!(root = %ticket.root, origin = %ticket.origin, "trust anchor taken from the join ticket");
    Ok(())
}
