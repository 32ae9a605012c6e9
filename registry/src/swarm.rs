//! A [`SwarmNode`] that knows who has what: blobs over iroh, provider records in the
//! libp2p Kademlia DHT, one node key for both.
//!
//! [`Swarm::fetch`] asks the DHT for holders before and while it fetches (a holder that
//! appears mid-fetch joins it), announces the blob as soon as the first bytes are
//! verified (so others can fetch the pieces it already has), and keeps announcing it
//! while it is held. Without a DHT, the same calls work with the origin and the
//! configured peers only.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use archy_catalog::ContentHash;
pub use archy_dht::{socket_of, Multiaddr};
use archy_dht::{Dht, DhtConfig};
use tokio::sync::{mpsc, watch};

use crate::{
    FetchOptions, FetchReport, FetchStatus, PeerAddr, SwarmError, SwarmNode, SwarmNodeBuilder,
};

/// How often a running fetch asks the DHT for new holders, once it has been running
/// a while.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);
/// The first lookups during a fetch come this often, [`FAST_FOLLOWS`] of them, before
/// the gap grows to [`FOLLOW_EVERY`]: nodes that start together announce within their
/// first milliseconds, and the sooner they find each other the fewer pieces they each
/// take from the origin alone.
const FAST_FOLLOW_EVERY: Duration = Duration::from_millis(250);
const FAST_FOLLOWS: u32 = 4;
/// How long a fetch waits for its first DHT lookup before it starts without it.
const FIRST_LOOKUP_WAIT: Duration = Duration::from_millis(1000);

/// Where the DHT node listens and whom it joins through.
#[derive(Debug, Clone)]
pub struct DhtSettings {
    /// TCP address (port 0 picks one).
    pub listen: SocketAddr,
    /// `/ip4/IP/tcp/PORT/p2p/PEER_ID` of nodes already in the DHT (the origin's, say).
    pub bootstrap: Vec<Multiaddr>,
}

/// A swarm participant with optional DHT membership.
#[derive(Debug, Clone)]
pub struct Swarm {
    pub node: Arc<SwarmNode>,
    dht: Option<Arc<Dht>>,
}

/// One fetch through the swarm.
#[derive(Debug, Clone, Default)]
pub struct FetchPlan {
    pub size: Option<u64>,
    pub origin: Option<PeerAddr>,
    pub peers: Vec<PeerAddr>,
    /// HTTP(S) hosts serving the blob and its hash tree ([`crate::web_seed`]).
    pub web_seeds: Vec<String>,
    pub options: FetchOptions,
}

/// Which of the addresses a peer's record names stands for it (all of them are dialled;
/// this one decides whether it is on this node's LAN): one on a subnet of `ours` that is
/// not one of `ours` (a LAN neighbour), then one of `ours` (the same host; or a
/// container bridge every host has, such as podman's 10.88.0.1), then the first.
fn best_addr(addrs: &[SocketAddr], ours: &[std::net::IpAddr]) -> Option<SocketAddr> {
    let rank = |a: &SocketAddr| match (crate::fetch::is_near(ours, a.ip()), ours.contains(&a.ip()))
    {
        (true, false) => 0,
        (_, true) => 1,
        _ => 2,
    };
    addrs.iter().min_by_key(|a| rank(a)).copied()
}

/// What this node's DHT address record says: where to dial it, and its relay (the one
/// it reached, else the first it was given: the origin's).
fn address_record_of(node: &SwarmNode) -> (Vec<SocketAddr>, Option<String>) {
    let addrs = node.direct_addrs();
    let relay = node
        .home_relay()
        .or_else(|| node.relays().first().cloned())
        .map(|r| r.to_string());
    (addrs, relay)
}

/// Keeps the DHT address record true to the endpoint: a node bound to 0.0.0.0 learns
/// its interface and public addresses after it starts, and reaches its home relay
/// later. Ends when the node or the DHT is gone.
async fn follow_address(
    mut watch: impl iroh::Watcher<Value = iroh::EndpointAddr>,
    mut published: (Vec<SocketAddr>, Option<String>),
    node: std::sync::Weak<SwarmNode>,
    dht: std::sync::Weak<Dht>,
) {
    loop {
        let (Some(node), Some(dht)) = (node.upgrade(), dht.upgrade()) else {
            return;
        };
        let now = address_record_of(&node);
        if now != published {
            if dht.set_address(now.0.clone(), now.1.clone()).await.is_err() {
                return;
            }
            published = now;
        }
        drop((node, dht));
        if watch.updated().await.is_err() {
            return;
        }
    }
}

impl Swarm {
    /// Starts the iroh node (as `builder` says) and, with `dht`, a DHT node with the
    /// same key that publishes this node's iroh address.
    pub async fn start(
        builder: SwarmNodeBuilder,
        dht: Option<DhtSettings>,
    ) -> Result<Self, SwarmError> {
        let node = Arc::new(builder.spawn().await?);
        // Bound to every address, what it names (its DHT record, an origin's ticket)
        // should be an interface's address, not 0.0.0.0.
        node.wait_for_direct_addrs(Duration::from_secs(2)).await;
        let dht = match dht {
            None => None,
            Some(s) => {
                let mut cfg = DhtConfig::new(crate::node_key(node.data_dir())?, s.listen);
                cfg.bootstrap = s.bootstrap;
                // Watched from here on, so a change while the DHT starts is published.
                let watch = node.watch_addr();
                let published = address_record_of(&node);
                cfg.iroh_addrs = published.0.clone();
                cfg.iroh_relay = published.1.clone();
                let dht = Arc::new(Dht::start(cfg).await?);
                tokio::spawn(follow_address(
                    watch,
                    published,
                    Arc::downgrade(&node),
                    Arc::downgrade(&dht),
                ));
                Some(dht)
            }
        };
        Ok(Self { node, dht })
    }

    /// Where others join the DHT through this node.
    pub fn dht_addrs(&self) -> Vec<Multiaddr> {
        self.dht
            .as_ref()
            .map(|d| d.listen_addrs().to_vec())
            .unwrap_or_default()
    }

    /// Imports a file, serves it and announces it.
    pub async fn import(&self, path: &std::path::Path) -> Result<ContentHash, SwarmError> {
        let hash = self.node.import(path).await?;
        self.announce(hash).await;
        Ok(hash)
    }

    /// Announces every blob the store holds whole; returns them.
    pub async fn announce_held(&self) -> Result<Vec<ContentHash>, SwarmError> {
        let held = self.node.list_complete().await?;
        for h in &held {
            self.announce(*h).await;
        }
        Ok(held)
    }

    /// Tells the DHT this node holds (part of) `hash`. A lone node or a DHT error only
    /// costs others a way to find it, so it is logged, not returned.
    pub async fn announce(&self, hash: ContentHash) {
        if let Some(dht) = &self.dht {
            if let Err(e) = dht.announce(hash).await {
                tracing::warn!(%hash, error = %e, "cannot announce");
            }
        }
    }

    /// Holders of `hash` the DHT knows, other than this node.
    pub async fn providers(&self, hash: ContentHash) -> Vec<PeerAddr> {
        let Some(dht) = &self.dht else {
            return Vec::new();
        };
        self.others(dht.find_providers(hash).await, "provider lookup")
    }

    /// Tells the DHT this node serves a verified catalog head (logged on failure, as
    /// [`Swarm::announce`]).
    pub async fn announce_head_server(&self) {
        if let Some(dht) = &self.dht {
            if let Err(e) = dht.announce_head_server().await {
                tracing::warn!(error = %e, "cannot announce as a head server");
            }
        }
    }

    /// The nodes the DHT names as head servers, other than this node.
    pub async fn head_servers(&self) -> Vec<PeerAddr> {
        let Some(dht) = &self.dht else {
            return Vec::new();
        };
        self.others(dht.find_head_servers().await, "head server lookup")
    }

    /// How many DHT peers this node knows (0 without a DHT).
    pub async fn dht_peers(&self) -> usize {
        match &self.dht {
            Some(dht) => dht.routing_peers().await.unwrap_or(0),
            None => 0,
        }
    }

    /// DHT records and provider records this node refused to store for others (0
    /// without a DHT).
    pub async fn dht_refused(&self) -> u64 {
        match &self.dht {
            Some(dht) => dht.stats().await.map(|s| s.refused).unwrap_or(0),
            None => 0,
        }
    }

    /// A lookup's answer as iroh addresses, without this node (a failed lookup is
    /// logged and finds nobody).
    fn others(
        &self,
        found: Result<Vec<archy_dht::Provider>, archy_dht::DhtError>,
        what: &str,
    ) -> Vec<PeerAddr> {
        let me = self.node.addr().id;
        let ours = self.node.local_ips();
        match found {
            Ok(found) => found
                .into_iter()
                .filter(|p| p.endpoint_id != me)
                .filter_map(|p| {
                    if let Some(relay) = &p.relay {
                        self.node.learn_peer_relay(&p.endpoint_id, relay);
                    }
                    self.node.learn_peer_addrs(&p.endpoint_id, &p.addrs);
                    best_addr(&p.addrs, &ours).map(|socket| PeerAddr {
                        id: p.endpoint_id,
                        socket,
                    })
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed");
                Vec::new()
            }
        }
    }

    /// Fetches `hash` from the origin, the given peers and every holder the DHT names,
    /// announcing it from the first verified piece on.
    pub async fn fetch(
        &self,
        hash: ContentHash,
        plan: FetchPlan,
        progress: Option<watch::Sender<FetchStatus>>,
    ) -> Result<FetchReport, SwarmError> {
        let (status_tx, status_rx) = watch::channel(FetchStatus::default());
        let (more_tx, more_rx) = mpsc::channel(64);
        let mut fetch = self
            .node
            .fetch(hash)
            .origin(plan.origin)
            .peers(plan.peers)
            .web_seeds(plan.web_seeds)
            .options(plan.options)
            .progress(status_tx);
        if let Some(size) = plan.size {
            fetch = fetch.size(size);
        }
        if self.dht.is_some() {
            // Holders found in the first moment join from the start (so the origin's
            // worker knows them); a slow DHT (unreachable members) never holds the
            // fetch up: what later lookups find joins while it runs.
            let first = tokio::time::timeout(FIRST_LOOKUP_WAIT, self.providers(hash))
                .await
                .unwrap_or_default();
            fetch = fetch.peers(first).more_peers(more_rx);
        }
        let report = tokio::select! {
            r = fetch.run() => r?,
            never = self.follow(hash, status_rx, progress) => match never {},
            never = self.keep_looking(hash, more_tx) => match never {},
        };
        self.announce(hash).await;
        Ok(report)
    }

    /// Forwards a fetch's progress and announces `hash` from the first verified piece.
    /// It never ends by itself: the fetch ending ends it.
    async fn follow(
        &self,
        hash: ContentHash,
        mut status_rx: watch::Receiver<FetchStatus>,
        progress: Option<watch::Sender<FetchStatus>>,
    ) -> Infallible {
        let mut announced = false;
        while status_rx.changed().await.is_ok() {
            let status = status_rx.borrow_and_update().clone();
            // Bytes are counted once verified, before their piece is whole.
            let holds_some = status.verified > 0 || status.received.values().any(|&b| b > 0);
            if !announced && holds_some {
                announced = true;
                self.announce(hash).await;
            }
            if let Some(tx) = &progress {
                tx.send_replace(status);
            }
        }
        // The fetch has ended (its progress sender is gone).
        std::future::pending().await
    }

    /// With a DHT, looks up holders of `hash` again and again ([`FAST_FOLLOWS`] times
    /// every [`FAST_FOLLOW_EVERY`], then every [`FOLLOW_EVERY`]) and feeds them to the
    /// fetch; a slow lookup delays only the next one. Never ends by itself.
    async fn keep_looking(&self, hash: ContentHash, more_tx: mpsc::Sender<PeerAddr>) -> Infallible {
        if self.dht.is_none() {
            return std::future::pending().await;
        }
        let mut lookups = 0u32;
        loop {
            let gap = if lookups < FAST_FOLLOWS {
                FAST_FOLLOW_EVERY
            } else {
                FOLLOW_EVERY
            };
            tokio::time::sleep(gap).await;
            let started = std::time::Instant::now();
            let found = self.providers(hash).await;
            tracing::debug!(found = found.len(), took = ?started.elapsed(), "holder lookup");
            for p in found {
                let _ = more_tx.send(p).await;
            }
            lookups += 1;
        }
    }

    /// Stops serving and leaves the DHT.
    pub async fn shutdown(self) {
        drop(self.dht);
        self.node.shutdown().await;
    }
}

#[cfg(test)]
mod best_addr_tests {
    use super::best_addr;

    #[test]
    fn a_lan_neighbour_address_stands_for_the_peer() {
        let sock = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // A home server with podman's bridge: the peer names its bridge, its LAN
        // address and its public one; the LAN address stands for it.
        let ours = [ip("10.88.0.1"), ip("192.168.1.11")];
        let named = [
            sock("10.88.0.1:4000"),
            sock("192.168.1.12:4000"),
            sock("203.0.113.5:4000"),
        ];
        assert_eq!(best_addr(&named, &ours), Some(named[1]));
        // Another node on this host (same address, another port).
        let same_host = sock("192.168.1.11:4001");
        assert_eq!(best_addr(&[named[2], same_host], &ours), Some(same_host));
        // Far away: the first named.
        assert_eq!(best_addr(&named[2..], &ours), Some(named[2]));
        assert_eq!(best_addr(&[], &ours), None);
    }
}
