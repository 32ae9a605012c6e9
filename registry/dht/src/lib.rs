//! # archy-dht
//!
//! Who has what. A libp2p Kademlia DHT (TCP + noise + yamux) in which every node
//! announces the BLAKE3 hashes it holds, and from which a downloader learns which iroh
//! endpoints to fetch a blob from.
//!
//! Two kinds of records live in the DHT:
//!
//! - **provider records** (Kademlia's own): key `/archy/blob/<32 hash bytes>` -> the libp2p
//!   peer id of each holder. Kademlia republishes them while the node keeps providing,
//!   so a node announces as soon as it holds a first verified range and the record stays
//!   fresh for as long as it holds the content;
//! - **head-server records** (provider records too): key `/archy/heads` -> every node
//!   that serves a verified catalog head over iroh. A node whose origin is unreachable
//!   asks them for the head; it verifies what they offer like any head;
//! - **address records**: key `/archy/iroh-addr/<peer id>` -> the holder's iroh endpoint
//!   id and direct addresses, *signed by the node key*. One ed25519 key is the node's
//!   identity for both iroh and libp2p, so the endpoint id must equal the key inside the
//!   peer id, and a record that anyone else wrote fails verification.
//!
//! On a LAN address (not loopback) a node also finds the DHT nodes on its own link with
//! mDNS (libp2p's), so home nodes find each other, and each other's blobs, with no
//! bootstrap address at all.
//!
//! ```no_run
//! # async fn demo() -> Result<(), archy_dht::DhtError> {
//! use archy_dht::{Dht, DhtConfig};
//! let dht = Dht::start(DhtConfig::new([7u8; 32], "127.0.0.1:0".parse().unwrap())).await?;
//! let hash = archy_catalog::ContentHash::of(b"image");
//! dht.announce(hash).await?;
//! let holders = dht.find_providers(hash).await?;
//! # Ok(()) }
//! ```

mod inbound;
mod record;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::Duration,
};

use archy_catalog::ContentHash;
use futures_util::StreamExt;
pub use inbound::InboundLimits;
pub use libp2p::Multiaddr;
use libp2p::{
    identify, identity,
    kad::{
        self, store::MemoryStore, GetProvidersOk, GetRecordOk, Mode, QueryId, QueryResult, Quorum,
        RecordKey,
    },
    mdns,
    multiaddr::Protocol,
    noise,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux, PeerId, Swarm,
};
pub use record::{AddressRecord, Malformation, RecordError};
use tokio::sync::{mpsc, oneshot};

/// The Kademlia protocol name: Archy's own network, never the public IPFS DHT.
pub const KAD_PROTOCOL: &str = "/archy/kad/1.0.0";

/// Why the DHT could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("invalid node key: {0}")]
    Key(#[source] identity::DecodingError),
    #[error("cannot set up the libp2p transport: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the DHT task has stopped")]
    Stopped,
    #[error("cannot store a record: {0}")]
    Store(#[source] kad::store::Error),
}

/// How to run a DHT node.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// The node's ed25519 secret key (the same one its iroh endpoint uses).
    pub secret: [u8; 32],
    /// TCP address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// Peers to join through: `/ip4/IP/tcp/PORT/p2p/PEER_ID`.
    pub bootstrap: Vec<Multiaddr>,
    /// The iroh direct addresses to publish in this node's address record.
    pub iroh_addrs: Vec<SocketAddr>,
    /// The home relay to publish in it (peers behind NAT are reached through it).
    pub iroh_relay: Option<String>,
    /// Longest a single lookup may take.
    pub query_timeout: Duration,
    /// How often provider and address records are republished.
    pub republish: Duration,
    /// What other peers may make this node store.
    pub inbound: InboundLimits,
    /// Find DHT nodes on the same link with mDNS. On by default unless the node listens
    /// on loopback (no LAN there, and tests stay off the host's network).
    pub lan_discovery: bool,
}

impl DhtConfig {
    pub fn new(secret: [u8; 32], listen: SocketAddr) -> Self {
        Self {
            secret,
            listen,
            bootstrap: Vec::new(),
            iroh_addrs: Vec::new(),
            iroh_relay: None,
            query_timeout: Duration::from_secs(5),
            republish: Duration::from_secs(60),
            inbound: InboundLimits::default(),
            lan_discovery: !listen.ip().is_loopback(),
        }
    }
}

/// A holder of a blob, as the DHT says: its iroh endpoint id and direct addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub endpoint_id: [u8; 32],
    pub addrs: Vec<SocketAddr>,
    /// Its home relay, as its signed address record names it.
    pub relay: Option<String>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    mdns: libp2p::swarm::behaviour::toggle::Toggle<mdns::tokio::Behaviour>,
}

/// DHT nodes taken from mDNS at most (anyone on the LAN can answer, with any number of
/// made-up peers; each is only dialled, and its peer id proven by noise, when used).
const MAX_LAN_PEERS: usize = 256;
/// Most iroh addresses one address record names (a record stays far below its 4 KiB
/// limit).
pub const MAX_RECORD_ADDRS: usize = 8;
/// How often mDNS asks the link again (answers to others' questions arrive meanwhile).
const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(60);

enum Command {
    Announce(RecordKey, oneshot::Sender<Result<(), DhtError>>),
    Withdraw(RecordKey),
    Providers(RecordKey, oneshot::Sender<HashSet<PeerId>>),
    Address(PeerId, oneshot::Sender<Option<AddressRecord>>),
    AddPeer(Multiaddr),
    SetAddress(Vec<SocketAddr>, Option<String>),
    RoutingPeers(oneshot::Sender<usize>),
    Stats(oneshot::Sender<DhtStats>),
}

/// What this node holds for others, and what it refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Value records in the store (address records, this node's own included).
    pub records: usize,
    /// Records and provider records refused by the inbound policy.
    pub refused: u64,
}

/// How long a provider lookup gathers answers once some peer named holders: behind
/// NAT some of the closest peers cannot be dialled, and waiting for the whole query
/// took its timeout; the first answer alone may come from a LAN peer that knows only
/// itself.
const PROVIDERS_GATHER: Duration = Duration::from_millis(600);

enum Pending {
    Providers {
        found: HashSet<PeerId>,
        started: tokio::time::Instant,
        reply: oneshot::Sender<HashSet<PeerId>>,
    },
    Address {
        peer: PeerId,
        best: Option<AddressRecord>,
        reply: oneshot::Sender<Option<AddressRecord>>,
    },
}

/// A running DHT node. Dropping it stops the node.
#[derive(Debug)]
pub struct Dht {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dht {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn content_key(hash: &ContentHash) -> RecordKey {
    let mut k = b"/archy/blob/".to_vec();
    k.extend_from_slice(hash.as_bytes());
    RecordKey::new(&k)
}

/// The key under which head servers provide: one per Archy network (heads of another
/// publisher fail verification at the asker, so they cost a lookup, not trust).
fn heads_key() -> RecordKey {
    RecordKey::new(&b"/archy/heads")
}

fn address_key(peer: &PeerId) -> RecordKey {
    let mut k = b"/archy/iroh-addr/".to_vec();
    k.extend_from_slice(&peer.to_bytes());
    RecordKey::new(&k)
}

fn to_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => Protocol::Ip4(v4),
        std::net::IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(addr.port()))
}

/// `/ip4/IP/tcp/PORT/p2p/PEER_ID` (or `/ip6/...`): how to dial the DHT node `peer` at
/// `addr`.
pub fn dial_addr(addr: SocketAddr, peer: PeerId) -> Multiaddr {
    to_multiaddr(addr).with(Protocol::P2p(peer))
}

/// The IP and TCP port a multiaddr starts with (`/ip4/IP/tcp/PORT/...`), if any: the
/// inverse of how a listen address is written.
pub fn socket_of(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// The peer id a multiaddr ends with (`/p2p/...`), if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

impl Dht {
    /// Starts a DHT node: listens, joins through the bootstrap peers, publishes its
    /// signed address record and serves lookups until dropped.
    pub async fn start(mut cfg: DhtConfig) -> Result<Self, DhtError> {
        cfg.iroh_addrs.truncate(MAX_RECORD_ADDRS);
        let mut secret = cfg.secret;
        let keypair = identity::Keypair::ed25519_from_bytes(&mut secret).map_err(DhtError::Key)?;
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| DhtError::Transport(Box::new(e)))?
            .with_behaviour(|key| {
                let mut kcfg = kad::Config::new(libp2p::StreamProtocol::new(KAD_PROTOCOL));
                kcfg.set_query_timeout(cfg.query_timeout)
                    .set_provider_publication_interval(Some(cfg.republish))
                    .set_provider_record_ttl(Some(cfg.republish * 3))
                    .set_publication_interval(Some(cfg.republish))
                    .set_record_ttl(Some(cfg.republish * 3))
                    .set_periodic_bootstrap_interval(Some(Duration::from_secs(30)))
                    // Nothing a peer sends is stored before `InboundPolicy` accepts it.
                    .set_record_filtering(kad::StoreInserts::FilterBoth);
                let id = key.public().to_peer_id();
                let store = MemoryStore::with_config(
                    id,
                    kad::store::MemoryStoreConfig {
                        max_records: 10_000,
                        max_value_bytes: record::MAX_RECORD_BYTES,
                        max_providers_per_key: 64,
                        max_provided_keys: 65_536,
                    },
                );
                let mut kad = kad::Behaviour::with_config(id, store, kcfg);
                // Loopback and private-network peers would otherwise stay clients.
                kad.set_mode(Some(Mode::Server));
                let identify = identify::Behaviour::new(identify::Config::new(
                    "/archy/id/1.0.0".into(),
                    key.public(),
                ));
                let mdns = cfg
                    .lan_discovery
                    .then(|| {
                        let mcfg = mdns::Config {
                            query_interval: MDNS_QUERY_INTERVAL,
                            ..mdns::Config::default()
                        };
                        mdns::tokio::Behaviour::new(mcfg, id)
                            .inspect_err(|e| tracing::warn!(error = %e, "no LAN discovery (mDNS)"))
                            .ok()
                    })
                    .flatten();
                Behaviour {
                    kad,
                    identify,
                    mdns: mdns.into(),
                }
            })
            .map_err(|e| DhtError::Transport(e.into()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();

        swarm
            .listen_on(to_multiaddr(cfg.listen))
            .map_err(|e| DhtError::Listen {
                addr: cfg.listen,
                source: std::io::Error::other(e),
            })?;
        let mut listen_addrs = Vec::new();
        let mut deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => {
                    listen_addrs.push(address.with(Protocol::P2p(peer_id)));
                    // Bound to every address, one event comes per interface: take
                    // what arrives within a moment of the first.
                    if !cfg.listen.ip().is_unspecified() {
                        break;
                    }
                    if listen_addrs.len() == 1 {
                        deadline = tokio::time::Instant::now() + Duration::from_millis(200);
                    }
                }
                Ok(SwarmEvent::ListenerError { error, .. })
                | Ok(SwarmEvent::ListenerClosed {
                    reason: Err(error), ..
                }) => {
                    return Err(DhtError::Listen {
                        addr: cfg.listen,
                        source: error,
                    });
                }
                Ok(_) => {}
                Err(_) if !listen_addrs.is_empty() => break,
                Err(_) => {
                    return Err(DhtError::Listen {
                        addr: cfg.listen,
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no listen address within 5 s",
                        ),
                    })
                }
            }
        }
        // Addresses others can use first: loopback last.
        listen_addrs.sort_by_key(|a| socket_of(a).is_some_and(|s| s.ip().is_loopback()));
        for addr in &cfg.bootstrap {
            if let Some(peer) = peer_of(addr) {
                swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
        }
        if !cfg.bootstrap.is_empty() {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
        let own_record = AddressRecord::sign(
            &cfg.secret,
            &cfg.iroh_addrs,
            cfg.iroh_relay.as_deref(),
            now_secs(),
        );
        publish_address(&mut swarm, &peer_id, &own_record);

        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(run(swarm, rx, cfg, peer_id));
        tracing::info!(%peer_id, addrs = ?listen_addrs, "dht node started");
        Ok(Self {
            commands: tx,
            peer_id,
            listen_addrs,
            task,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Where others reach this node: `/ip4/IP/tcp/PORT/p2p/PEER_ID`, usable as a
    /// bootstrap address (bound to every address: one per interface, loopback last).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Adds a peer (e.g. one learned out of band) and bootstraps through it.
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<(), DhtError> {
        self.commands
            .send(Command::AddPeer(addr))
            .await
            .map_err(|_| DhtError::Stopped)
    }

    /// Publishes a new address record at once (and from then on at every republish):
    /// this node's iroh addresses (the first [`MAX_RECORD_ADDRS`]) and home relay, when
    /// they changed since the DHT started.
    pub async fn set_address(
        &self,
        iroh_addrs: Vec<SocketAddr>,
        relay: Option<String>,
    ) -> Result<(), DhtError> {
        self.commands
            .send(Command::SetAddress(iroh_addrs, relay))
            .await
            .map_err(|_| DhtError::Stopped)
    }

    /// Announces that this node holds (at least part of) `hash`; the record is
    /// republished until [`Dht::withdraw`].
    pub async fn announce(&self, hash: ContentHash) -> Result<(), DhtError> {
        self.provide(content_key(&hash)).await
    }

    /// Announces that this node serves a verified catalog head; republished while it runs.
    pub async fn announce_head_server(&self) -> Result<(), DhtError> {
        self.provide(heads_key()).await
    }

    /// Stops announcing `hash` (the record expires at the others within its TTL).
    pub async fn withdraw(&self, hash: ContentHash) -> Result<(), DhtError> {
        self.commands
            .send(Command::Withdraw(content_key(&hash)))
            .await
            .map_err(|_| DhtError::Stopped)
    }

    /// The holders of `hash` with their verified iroh addresses. Holders without a
    /// valid address record are left out (and logged).
    pub async fn find_providers(&self, hash: ContentHash) -> Result<Vec<Provider>, DhtError> {
        self.providers_of(content_key(&hash)).await
    }

    /// The nodes that serve a catalog head, with their verified iroh addresses.
    pub async fn find_head_servers(&self) -> Result<Vec<Provider>, DhtError> {
        self.providers_of(heads_key()).await
    }

    /// How many peers this node's routing table holds.
    /// What this node stores for others, and how many records it refused.
    pub async fn stats(&self) -> Result<DhtStats, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    pub async fn routing_peers(&self) -> Result<usize, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::RoutingPeers(tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    async fn provide(&self, key: RecordKey) -> Result<(), DhtError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Announce(key, tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)?
    }

    async fn providers_of(&self, key: RecordKey) -> Result<Vec<Provider>, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Providers(key, tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        let peers = rx.await.map_err(|_| DhtError::Stopped)?;
        let lookups = peers.into_iter().map(|peer| async move {
            let (tx, rx) = oneshot::channel();
            self.commands.send(Command::Address(peer, tx)).await.ok()?;
            let rec = rx.await.ok().flatten();
            if rec.is_none() {
                tracing::debug!(%peer, "provider has no valid address record; skipped");
            }
            rec
        });
        let mut out: Vec<Provider> = futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .map(|r| Provider {
                endpoint_id: r.endpoint_id,
                addrs: r.addrs,
                relay: r.relay,
            })
            .collect();
        out.sort_by_key(|p| p.endpoint_id);
        Ok(out)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn publish_address(swarm: &mut Swarm<Behaviour>, peer_id: &PeerId, rec: &AddressRecord) {
    let record = kad::Record::new(address_key(peer_id), rec.to_bytes());
    if let Err(e) = swarm.behaviour_mut().kad.put_record(record, Quorum::One) {
        tracing::warn!(error = %e, "cannot store the address record");
    }
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    mut cfg: DhtConfig,
    me: PeerId,
) {
    let mut pending: HashMap<QueryId, Pending> = HashMap::new();
    let mut inbound = inbound::InboundPolicy::new(cfg.inbound);
    // The IPs each connected peer's connections came from (kept while connected).
    let mut seen: HashMap<PeerId, HashSet<std::net::IpAddr>> = HashMap::new();
    let mut lan_peers: HashSet<PeerId> = HashSet::new();
    let mut gather = tokio::time::interval(PROVIDERS_GATHER / 4);
    gather.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut republish = tokio::time::interval(cfg.republish);
    // The issue time of the last record published (the first, by `start`, is older).
    let mut issued = now_secs();
    republish.tick().await;
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                if let Command::Stats(reply) = cmd {
                    let records = kad::store::RecordStore::records(swarm.behaviour_mut().kad.store_mut()).count();
                    let _ = reply.send(DhtStats { records, refused: inbound.refused });
                    continue;
                }
                if let Command::SetAddress(mut addrs, relay) = cmd {
                    tracing::info!(?addrs, ?relay, "address record changed");
                    addrs.truncate(MAX_RECORD_ADDRS);
                    cfg.iroh_addrs = addrs;
                    cfg.iroh_relay = relay;
                    // Newer than any record before it, even within the same second
                    // (readers keep the newest; a tie would keep the old addresses).
                    issued = now_secs().max(issued + 1);
                    publish_address(&mut swarm, &me, &AddressRecord::sign(&cfg.secret, &cfg.iroh_addrs, cfg.iroh_relay.as_deref(), issued));
                    continue;
                }
                handle_command(&mut swarm, &mut pending, cmd);
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                    add_lan_peers(&mut swarm, &mut lan_peers, found);
                }
                event => handle_event(&mut swarm, &mut pending, &mut inbound, &mut seen, event),
            },
            _ = gather.tick() => answer_gathered_lookups(&mut swarm, &mut pending),
            _ = republish.tick() => {
                issued = now_secs().max(issued);
                publish_address(&mut swarm, &me, &AddressRecord::sign(&cfg.secret, &cfg.iroh_addrs, cfg.iroh_relay.as_deref(), issued));
                // Provider records live three republish intervals.
                ticks += 1;
                if ticks % 3 == 0 {
                    inbound.new_lifetime();
                }
            }
        }
    }
}

/// Answers every provider lookup that has named holders and gathered for
/// [`PROVIDERS_GATHER`], and ends its query: lookups repeat, so what a slow or
/// unreachable peer would have added comes with a later one.
fn answer_gathered_lookups(swarm: &mut Swarm<Behaviour>, pending: &mut HashMap<QueryId, Pending>) {
    let ready: Vec<QueryId> = pending
        .iter()
        .filter(|(_, p)| {
            matches!(p, Pending::Providers { found, started, .. }
                if !found.is_empty() && started.elapsed() >= PROVIDERS_GATHER)
        })
        .map(|(id, _)| *id)
        .collect();
    for id in ready {
        if let Some(mut query) = swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
        if let Some(Pending::Providers { found, reply, .. }) = pending.remove(&id) {
            let _ = reply.send(found);
        }
    }
}

fn handle_command(
    swarm: &mut Swarm<Behaviour>,
    pending: &mut HashMap<QueryId, Pending>,
    cmd: Command,
) {
    let kad = &mut swarm.behaviour_mut().kad;
    match cmd {
        Command::Announce(key, reply) => {
            // The record is stored locally at once and spread to the closest peers by the
            // query; republication keeps it alive. Waiting for the query would only delay
            // the caller: a lone node has nobody to spread to.
            let r = kad
                .start_providing(key)
                .map(|_| ())
                .map_err(DhtError::Store);
            let _ = reply.send(r);
        }
        Command::Withdraw(key) => kad.stop_providing(&key),
        Command::Providers(key, reply) => {
            let id = kad.get_providers(key);
            pending.insert(
                id,
                Pending::Providers {
                    found: HashSet::new(),
                    started: tokio::time::Instant::now(),
                    reply,
                },
            );
        }
        Command::Address(peer, reply) => {
            let id = kad.get_record(address_key(&peer));
            pending.insert(
                id,
                Pending::Address {
                    peer,
                    best: None,
                    reply,
                },
            );
        }
        Command::AddPeer(addr) => {
            if let Some(peer) = peer_of(&addr) {
                kad.add_address(&peer, addr);
                let _ = kad.bootstrap();
            }
        }
        Command::RoutingPeers(reply) => {
            let n = kad.kbuckets().map(|b| b.num_entries()).sum();
            let _ = reply.send(n);
        }
        // Answered by the run loop, which holds the policy and the config.
        Command::Stats(_) | Command::SetAddress(..) => {}
    }
}

/// Whether a peer seen connecting from `seen` may be listening on `claimed`: the same
/// IP, or both loopback, or both private (a host with several local addresses connects
/// from one and listens on another); never a public IP it was not seen from.
fn plausible(seen: std::net::IpAddr, claimed: std::net::IpAddr) -> bool {
    seen == claimed
        || (seen.is_loopback() && claimed.is_loopback())
        || (is_lan_ip(seen) && is_lan_ip(claimed))
}

/// Adds DHT nodes mDNS found on the link: only LAN addresses (private, link-local or
/// unique-local IPs over TCP), at most [`MAX_LAN_PEERS`] peers; then joins through them.
fn add_lan_peers(
    swarm: &mut Swarm<Behaviour>,
    known: &mut HashSet<PeerId>,
    found: Vec<(PeerId, Multiaddr)>,
) {
    let mut added = false;
    for (peer, addr) in found {
        let on_lan = socket_of(&addr).is_some_and(|s| is_lan_ip(s.ip()));
        if !on_lan || (!known.contains(&peer) && known.len() >= MAX_LAN_PEERS) {
            continue;
        }
        if known.insert(peer) {
            tracing::info!(%peer, %addr, "found a DHT node on the LAN (mDNS)");
        }
        swarm.behaviour_mut().kad.add_address(&peer, addr);
        added = true;
    }
    if added {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
}

/// A private (RFC 1918), link-local or unique-local address: one a LAN peer has.
pub fn is_lan_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Most addresses taken from what one peer says about itself.
const MAX_SELF_REPORTED_ADDRS: usize = 8;

/// A provider record fit to keep: one that came with no address (a node behind NAT
/// has no external address to send) gets `/p2p/<its id>`, which names it and nothing to
/// dial. Without an address kad leaves the record out of every answer, as it knows
/// none for the provider (such a node is in nobody's routing table outside its LAN):
/// nodes in other homes could not find it. They reach it by its signed address record
/// (iroh id and relay); a kad dial of `/p2p/<id>` fails at once, where the NAT's
/// address would hang, and the NAT's public IP is not handed out.
fn with_peer_address(mut record: kad::ProviderRecord) -> kad::ProviderRecord {
    if record.addresses.is_empty() {
        record
            .addresses
            .push(Multiaddr::empty().with(Protocol::P2p(record.provider)));
    }
    record
}

fn handle_event(
    swarm: &mut Swarm<Behaviour>,
    pending: &mut HashMap<QueryId, Pending>,
    inbound: &mut inbound::InboundPolicy,
    seen: &mut HashMap<PeerId, HashSet<std::net::IpAddr>>,
    event: SwarmEvent<BehaviourEvent>,
) {
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } => {
            if let Some(ip) = socket_of(endpoint.get_remote_address()).map(|a| a.ip()) {
                seen.entry(peer_id).or_default().insert(ip);
            }
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established: 0,
            ..
        } => {
            seen.remove(&peer_id);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            // What a peer says about itself is taken only where it matches how it was
            // seen connecting (see `plausible`), TCP only, and a few at most: it cannot
            // point others at a public address that is not its own.
            let seen = seen.get(&peer_id);
            let own = info
                .listen_addrs
                .into_iter()
                .filter(|a| {
                    socket_of(a).is_some_and(|s| {
                        seen.is_some_and(|ips| ips.iter().any(|ip| plausible(*ip, s.ip())))
                    })
                })
                .take(MAX_SELF_REPORTED_ADDRS);
            for addr in own {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest { request })) => {
            use kad::store::RecordStore;
            match request {
                kad::InboundRequest::PutRecord {
                    source,
                    record: Some(record),
                    ..
                } => {
                    let stored = inbound.record(&record).and_then(|()| {
                        swarm
                            .behaviour_mut()
                            .kad
                            .store_mut()
                            .put(record)
                            .map_err(inbound::Refusal::from)
                    });
                    if let Err(why) = stored {
                        inbound.refuse(source, &why);
                    }
                }
                kad::InboundRequest::AddProvider {
                    record: Some(record),
                } => {
                    let source = record.provider;
                    let record = with_peer_address(record);
                    let stored = inbound.provider(&record).and_then(|()| {
                        swarm
                            .behaviour_mut()
                            .kad
                            .store_mut()
                            .add_provider(record)
                            .map_err(inbound::Refusal::from)
                    });
                    if let Err(why) = stored {
                        inbound.refuse(source, &why);
                    }
                }
                _ => {}
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
            id,
            result,
            step,
            ..
        })) => match result {
            QueryResult::GetProviders(r) => {
                if let Some(Pending::Providers { found, .. }) = pending.get_mut(&id) {
                    if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r {
                        found.extend(providers);
                    }
                }
                if step.last {
                    if let Some(Pending::Providers { found, reply, .. }) = pending.remove(&id) {
                        let _ = reply.send(found);
                    }
                } else {
                    answer_gathered_lookups(swarm, pending);
                }
            }
            QueryResult::GetRecord(r) => {
                let mut answered = false;
                if let Some(Pending::Address { peer, best, .. }) = pending.get_mut(&id) {
                    if let Ok(GetRecordOk::FoundRecord(found)) = r {
                        match AddressRecord::from_bytes(&found.record.value)
                            .and_then(|rec| rec.verify_for(peer).map(|_| rec))
                        {
                            Ok(rec)
                                if best.as_ref().is_none_or(|b| rec.issued_at > b.issued_at) =>
                            {
                                *best = Some(rec)
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(%peer, error = %e, "address record refused"),
                        }
                    }
                    answered = best.is_some();
                }
                // As for providers: the first valid record answers (the peer that had
                // it keeps only the newest it was given); waiting for the whole query
                // can take its timeout behind NAT.
                if answered && !step.last {
                    if let Some(mut query) = swarm.behaviour_mut().kad.query_mut(&id) {
                        query.finish();
                    }
                }
                if step.last || answered {
                    if let Some(Pending::Address { best, reply, .. }) = pending.remove(&id) {
                        let _ = reply.send(best);
                    }
                }
            }
            _ => {}
        },
        _ => {}
    }
}

#[cfg(test)]
mod plausible_tests {
    use super::{
        is_lan_ip, kad, plausible, socket_of, with_peer_address, Multiaddr, PeerId, Protocol,
        RecordKey,
    };

    #[test]
    fn only_lan_addresses_count_as_found_on_the_lan() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        for lan in [
            "10.1.2.3",
            "172.16.0.9",
            "192.168.1.5",
            "169.254.3.4",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_lan_ip(ip(lan)), "{lan}");
        }
        for not in ["8.8.8.8", "203.0.113.9", "127.0.0.1", "::1", "2001:db8::1"] {
            assert!(!is_lan_ip(ip(not)), "{not}");
        }
    }

    #[test]
    fn a_provider_record_without_an_address_names_its_provider() {
        let peer = PeerId::random();
        let key = RecordKey::new(&b"/archy/heads");
        let natted = with_peer_address(kad::ProviderRecord::new(key.clone(), peer, Vec::new()));
        assert_eq!(
            natted.addresses,
            vec![Multiaddr::empty().with(Protocol::P2p(peer))]
        );
        assert!(socket_of(&natted.addresses[0]).is_none(), "nothing to dial");
        let public: Multiaddr = "/ip4/203.0.113.9/tcp/4500".parse().unwrap();
        let told = kad::ProviderRecord::new(key, peer, vec![public.clone()]);
        assert_eq!(with_peer_address(told).addresses, vec![public]);
    }

    #[test]
    fn self_reported_addresses_must_match_how_the_peer_was_seen() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert!(plausible(ip("127.0.0.1"), ip("127.0.0.3")));
        assert!(plausible(ip("192.168.1.5"), ip("10.0.0.7")));
        assert!(plausible(ip("203.0.113.9"), ip("203.0.113.9")));
        assert!(
            !plausible(ip("203.0.113.9"), ip("198.51.100.1")),
            "another public IP"
        );
        assert!(!plausible(ip("127.0.0.1"), ip("198.51.100.1")));
        assert!(!plausible(ip("192.168.1.5"), ip("127.0.0.1")));
        // A node behind NAT, seen from its router's public address, claims its private
        // one: nobody outside its LAN keeps an address for it, so it is never put in
        // their routing tables or dialled (it is a DHT client to the internet).
        assert!(
            !plausible(ip("198.51.100.7"), ip("192.168.1.5")),
            "a private address claimed from a public one"
        );
    }
}
