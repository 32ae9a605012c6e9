//! One swarm participant: identity, endpoint, blob store. It serves everything its
//! store holds, including blobs still downloading (per verified range), and starts
//! fetches (see `fetch.rs`).

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use archy_catalog::ContentHash;
use bao_tree::ChunkRanges;
use iroh::{
    endpoint::{presets, Connection, RelayMode},
    protocol::{ProtocolHandler, Router, RouterBuilder},
    Endpoint, EndpointAddr, EndpointId, RelayUrl, SecretKey,
};
use iroh_blobs::{store::fs::FsStore, BlobsProtocol, Hash};

use crate::{
    fetch::Fetch,
    served::{self, ServedCounters},
};

/// Why a swarm operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot start the swarm endpoint: {0}")]
    Endpoint(#[source] BoxError),
    #[error("dht: {0}")]
    Dht(#[from] archy_dht::DhtError),
    #[error("{}: not a node key (64 hex digits)", .0.display())]
    NodeKey(PathBuf),
    #[error("cannot get randomness for a node key: {0}")]
    Random(#[from] getrandom::Error),
    #[error("blob store: {0}")]
    Store(#[source] BoxError),
    #[error("bad peer address {0:?}: expected <endpoint id>@<ip:port>")]
    Addr(String),
    #[error("could not fetch {hash}: {failure}")]
    Fetch {
        hash: ContentHash,
        #[source]
        failure: crate::fetch::FetchFailure,
    },
    /// The origin's publish dir cannot be served (unreadable, unverifiable, an image
    /// that does not match the catalog).
    #[error("publish dir: {0}")]
    Publish(#[source] Box<crate::origin::PublishError>),
    #[error("relay: {0}")]
    Relay(#[from] crate::relay::RelayError),
}

/// An error of a library below, kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a peer could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("its id is not an ed25519 public key")]
    NotAnEndpoint,
    #[error("connect timed out after {0:?}")]
    TimedOut(Duration),
    #[error("connect: {0}")]
    Failed(#[source] iroh::endpoint::ConnectError),
}

/// How to reach a peer: its endpoint id (its ed25519 public key) and a direct address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr {
    pub id: [u8; 32],
    pub socket: SocketAddr,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", hex::encode(self.id), self.socket)
    }
}

impl FromStr for PeerAddr {
    type Err = SwarmError;
    fn from_str(s: &str) -> Result<Self, SwarmError> {
        let err = || SwarmError::Addr(s.chars().take(120).collect());
        let (id, sock) = s.split_once('@').ok_or_else(err)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(id, &mut bytes).map_err(|_| err())?;
        Ok(Self {
            id: bytes,
            socket: sock.parse().map_err(|_| err())?,
        })
    }
}

/// A running swarm participant.
#[derive(Debug)]
pub struct SwarmNode {
    endpoint: Endpoint,
    router: Router,
    pub(crate) store: FsStore,
    data: PathBuf,
    served: Arc<ServedCounters>,
    /// The relays this node uses (its home relay is the first it reaches).
    relays: Vec<RelayUrl>,
    /// How to reach peers beyond the address a caller dials, learnt from signed DHT
    /// address records and tickets.
    peer_routes: std::sync::Mutex<std::collections::HashMap<EndpointId, PeerRoute>>,
    /// The last connection this node opened to each peer, so `node status` can say how
    /// each is reached (direct or relayed) and how far away it is.
    recent: std::sync::Mutex<std::collections::HashMap<EndpointId, Connection>>,
}

/// How this node reaches a peer it fetched from: the path its connection uses now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerPath {
    /// The peer's endpoint id, hex.
    pub id: String,
    /// `direct` (UDP to its address, holes punched if needed) or `relayed`.
    pub kind: &'static str,
    /// Its IP address and port, or the relay's URL.
    pub via: String,
    pub rtt_ms: f64,
}

/// The most peers whose last connection a node keeps for [`SwarmNode::peer_paths`].
const MAX_RECENT: usize = 256;

/// What a node knows of how to reach one peer.
#[derive(Debug, Clone, Default)]
struct PeerRoute {
    /// Its home relay, so a peer behind NAT is dialled through it when its address
    /// does not answer.
    relay: Option<RelayUrl>,
    /// Every address its record names (a node bound to 0.0.0.0 names each
    /// interface's; iroh tries them all when it dials).
    addrs: Vec<SocketAddr>,
}

/// The most peers whose routes a node remembers.
const MAX_PEER_ROUTES: usize = 10_000;

pub(crate) fn to_hash(h: &ContentHash) -> Hash {
    Hash::from_bytes(*h.as_bytes())
}

/// Loads the node key from `<data>/node.key` (32 bytes, hex, mode 0600) or creates it.
pub fn node_key(data: &Path) -> Result<[u8; 32], SwarmError> {
    let path = data.join("node.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut k = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut k).map_err(|_| SwarmError::NodeKey(path.clone()))?;
        return Ok(k);
    }
    let mut k = [0u8; 32];
    getrandom::fill(&mut k)?;
    std::fs::create_dir_all(data)?;
    archy_catalog::fsutil::write_atomic_mode(&path, hex::encode(k).as_bytes(), Some(0o600))?;
    Ok(k)
}

impl SwarmNode {
    /// Starts a node with its store under `data` and its endpoint bound to `bind`,
    /// serving blobs only.
    pub async fn spawn(data: &Path, bind: SocketAddr) -> Result<Self, SwarmError> {
        Self::builder(data, bind).spawn().await
    }

    /// A node that also serves other protocols (the catalog head, say).
    pub fn builder(data: &Path, bind: SocketAddr) -> SwarmNodeBuilder {
        SwarmNodeBuilder {
            data: data.to_path_buf(),
            bind,
            protocols: Vec::new(),
            relays: Vec::new(),
        }
    }

    /// What this node has served to others since it started.
    pub fn served(&self) -> &ServedCounters {
        &self.served
    }

    /// Where others dial this node.
    pub fn addr(&self) -> PeerAddr {
        let socket = self
            .endpoint
            .bound_sockets()
            .into_iter()
            .next()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        PeerAddr {
            id: *self.endpoint.id().as_bytes(),
            socket,
        }
    }

    /// This node's own IP addresses, to tell LAN peers from far ones: the bound ones,
    /// or bound to every address, the private, link-local and unique-local ones iroh
    /// found on its interfaces (not the public address a relay saw: other homes share
    /// its neighbourhood).
    pub fn local_ips(&self) -> Vec<std::net::IpAddr> {
        let bound: Vec<std::net::IpAddr> = self
            .endpoint
            .bound_sockets()
            .iter()
            .map(|s| s.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        if !bound.is_empty() {
            return bound;
        }
        self.direct_addrs()
            .iter()
            .map(|s| s.ip())
            .filter(|ip| archy_dht::is_lan_ip(*ip))
            .collect()
    }

    /// Where peers can dial this node: the sockets it is bound to or, bound to every
    /// address (0.0.0.0), the addresses iroh found on its interfaces and learnt from
    /// its relay (its public address behind NAT), loopback left out; the bound
    /// socket while iroh has found none yet.
    pub fn direct_addrs(&self) -> Vec<SocketAddr> {
        let bound = self.endpoint.bound_sockets();
        let specified: Vec<SocketAddr> = bound
            .iter()
            .filter(|s| !s.ip().is_unspecified())
            .copied()
            .collect();
        if !specified.is_empty() {
            return specified;
        }
        let found: Vec<SocketAddr> = self
            .endpoint
            .addr()
            .ip_addrs()
            .filter(|s| !s.ip().is_unspecified() && !s.ip().is_loopback())
            .copied()
            .collect();
        match found.is_empty() {
            true => bound,
            false => found,
        }
    }

    /// Waits (at most `limit`) until a node bound to every address has found an address
    /// of its own to name ([`SwarmNode::direct_addrs`]); at once when it is bound to one.
    pub async fn wait_for_direct_addrs(&self, limit: Duration) {
        let named = || self.direct_addrs().iter().any(|s| !s.ip().is_unspecified());
        let _ = tokio::time::timeout(limit, async {
            while !named() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Changes of [`SwarmNode::direct_addrs`] and [`SwarmNode::home_relay`]: updated
    /// whenever iroh's view of this endpoint's address changes.
    pub fn watch_addr(&self) -> impl iroh::Watcher<Value = EndpointAddr> {
        self.endpoint.watch_addr()
    }

    /// The relays this node was given (`--iroh-relay`, or its join ticket's).
    pub fn relays(&self) -> &[RelayUrl] {
        &self.relays
    }

    /// The relay this node is reachable through, once it has connected to one.
    pub fn home_relay(&self) -> Option<RelayUrl> {
        self.endpoint.addr().relay_urls().next().cloned()
    }

    /// Waits (at most `limit`) until this node is connected to a relay; `false` if it
    /// has none or none answered.
    pub async fn wait_for_relay(&self, limit: Duration) -> bool {
        if self.relays.is_empty() {
            return false;
        }
        tokio::time::timeout(limit, async {
            while self.home_relay().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok()
    }

    /// Remembers that `peer` is reachable through `relay` (from a signed address
    /// record or a ticket). Only relays this node itself uses are taken: a peer cannot
    /// make the node contact a relay its operator did not choose.
    pub fn learn_peer_relay(&self, peer: &[u8; 32], relay: &str) -> bool {
        let (Ok(id), Ok(url)) = (EndpointId::from_bytes(peer), relay.parse::<RelayUrl>()) else {
            return false;
        };
        if !self.relays.contains(&url) {
            return false;
        }
        self.update_route(id, |r| r.relay = Some(url))
    }

    /// Remembers the addresses `peer` signed into its DHT address record (at most
    /// [`archy_dht::MAX_RECORD_ADDRS`]), to dial them all besides the one chosen.
    pub fn learn_peer_addrs(&self, peer: &[u8; 32], addrs: &[SocketAddr]) {
        if let Ok(id) = EndpointId::from_bytes(peer) {
            let addrs = addrs.iter().take(archy_dht::MAX_RECORD_ADDRS).copied();
            self.update_route(id, |r| r.addrs = addrs.collect());
        }
    }

    /// Changes what is known of `id`'s route; `false` when [`MAX_PEER_ROUTES`] other
    /// peers are known already.
    fn update_route(&self, id: EndpointId, change: impl FnOnce(&mut PeerRoute)) -> bool {
        let mut known = self.peer_routes.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_PEER_ROUTES && !known.contains_key(&id) {
            return false;
        }
        change(known.entry(id).or_default());
        true
    }

    fn peer_route(&self, id: &EndpointId) -> PeerRoute {
        let known = self.peer_routes.lock().unwrap_or_else(|e| e.into_inner());
        known.get(id).cloned().unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Imports a file into the store (and so serves it); returns its BLAKE3 hash.
    pub async fn import(&self, path: &Path) -> Result<ContentHash, SwarmError> {
        let abs = std::path::absolute(path)?;
        let tag = self
            .store
            .blobs()
            .add_path(abs)
            .await
            .map_err(|e| SwarmError::Store(e.into()))?;
        Ok(ContentHash(*tag.hash.as_bytes()))
    }

    /// Whether the whole blob is held and verified.
    pub async fn has(&self, hash: &ContentHash) -> Result<bool, SwarmError> {
        self.store
            .blobs()
            .has(to_hash(hash))
            .await
            .map_err(|e| SwarmError::Store(e.into()))
    }

    /// Every blob held whole.
    pub async fn list_complete(&self) -> Result<Vec<ContentHash>, SwarmError> {
        let hashes = self
            .store
            .blobs()
            .list()
            .hashes()
            .await
            .map_err(|e| SwarmError::Store(e.into()))?;
        let mut out = Vec::new();
        for h in hashes {
            let h = ContentHash(*h.as_bytes());
            if self.has(&h).await? {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Writes a held blob to `path`.
    pub async fn export(&self, hash: &ContentHash, path: &Path) -> Result<(), SwarmError> {
        let abs = std::path::absolute(path)?;
        self.store
            .blobs()
            .export(to_hash(hash), abs)
            .await
            .map_err(|e| SwarmError::Store(e.into()))?;
        Ok(())
    }

    /// Starts setting up a fetch of `hash` from the origin and peers at once.
    pub fn fetch(&self, hash: ContentHash) -> Fetch<'_> {
        Fetch::new(self, hash)
    }

    /// Verified chunk ranges held of `hash`, and the blob's size once verified.
    pub async fn held_ranges(
        &self,
        hash: &ContentHash,
    ) -> Result<(ChunkRanges, Option<u64>), SwarmError> {
        let b = self
            .store
            .blobs()
            .observe(to_hash(hash))
            .await
            .map_err(|e| SwarmError::Store(e.into()))?;
        Ok((b.ranges.clone(), b.validated_size()))
    }

    /// Opens a connection to `peer` for iroh-blobs.
    pub(crate) async fn connect(
        &self,
        peer: &PeerAddr,
        timeout: Duration,
    ) -> Result<Connection, ConnectError> {
        self.connect_alpn(peer, iroh_blobs::ALPN, timeout).await
    }

    /// Opens a connection to `peer` for protocol `alpn`.
    pub async fn connect_alpn(
        &self,
        peer: &PeerAddr,
        alpn: &[u8],
        timeout: Duration,
    ) -> Result<Connection, ConnectError> {
        let id = EndpointId::from_bytes(&peer.id).map_err(|_| ConnectError::NotAnEndpoint)?;
        let mut addr = EndpointAddr::new(id).with_ip_addr(peer.socket);
        let route = self.peer_route(&id);
        for other in route.addrs {
            addr = addr.with_ip_addr(other);
        }
        if let Some(relay) = route.relay {
            addr = addr.with_relay_url(relay);
        }
        let conn = tokio::time::timeout(timeout, self.endpoint.connect(addr, alpn))
            .await
            .map_err(|_| ConnectError::TimedOut(timeout))?
            .map_err(ConnectError::Failed)?;
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, c| c.close_reason().is_none());
        if recent.len() < MAX_RECENT || recent.contains_key(&id) {
            recent.insert(id, conn.clone());
        }
        Ok(conn)
    }

    /// The path to each peer this node has an open connection to (from its last
    /// fetch), sorted by id.
    pub fn peer_paths(&self) -> Vec<PeerPath> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, c| c.close_reason().is_none());
        let mut out: Vec<PeerPath> = recent
            .iter()
            .filter_map(|(id, conn)| {
                let paths = conn.paths();
                let path = paths.iter().find(|p| p.is_selected())?;
                let (kind, via) = match path.remote_addr() {
                    iroh::TransportAddr::Relay(url) => ("relayed", url.to_string()),
                    iroh::TransportAddr::Ip(ip) => ("direct", ip.to_string()),
                    other => ("other", format!("{other:?}")),
                };
                Some(PeerPath {
                    id: hex::encode(id.as_bytes()),
                    kind,
                    via,
                    rtt_ms: path.rtt().as_secs_f64() * 1000.0,
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Stops serving, closes the endpoint (peers see the connections close instead of
    /// timing out) and flushes the store: the router shuts down its protocols, and the
    /// blobs protocol shuts the store down (a second store shutdown could wait on an
    /// actor that has already stopped). Bounded: a peer that never acknowledges the
    /// close cannot hold the caller.
    pub async fn shutdown(&self) {
        const LIMIT: Duration = Duration::from_secs(10);
        if tokio::time::timeout(LIMIT, self.router.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(limit = ?LIMIT, "the node did not shut down in time; going on");
        }
    }
}

/// Sets up a [`SwarmNode`] with extra protocols.
#[derive(Debug)]
pub struct SwarmNodeBuilder {
    data: PathBuf,
    bind: SocketAddr,
    protocols: Vec<(&'static [u8], Box<dyn DynProtocol>)>,
    relays: Vec<crate::relay::RelaySpec>,
}

/// A protocol handler waiting to be added to the router.
trait DynProtocol: std::fmt::Debug + Send {
    fn add(self: Box<Self>, alpn: &'static [u8], router: RouterBuilder) -> RouterBuilder;
}

impl<P: ProtocolHandler> DynProtocol for P {
    fn add(self: Box<Self>, alpn: &'static [u8], router: RouterBuilder) -> RouterBuilder {
        router.accept(alpn, *self)
    }
}

impl SwarmNodeBuilder {
    /// Serves `handler` on `alpn` next to iroh-blobs.
    pub fn accept(mut self, alpn: &'static [u8], handler: impl ProtocolHandler) -> Self {
        self.protocols.push((alpn, Box::new(handler)));
        self
    }

    /// Uses these relays (none by default: no relay is contacted unless named): the
    /// node keeps a connection to one as its home relay, so peers behind NAT reach it,
    /// and learns its public address from them to punch holes.
    pub fn relays(mut self, relays: impl IntoIterator<Item = crate::relay::RelaySpec>) -> Self {
        self.relays.extend(relays);
        self
    }

    pub async fn spawn(self) -> Result<SwarmNode, SwarmError> {
        let data = self.data;
        let secret = SecretKey::from_bytes(&node_key(&data)?);
        let mut builder = Endpoint::builder(presets::Minimal)
            .secret_key(secret)
            .clear_address_lookup()
            .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled);
        let mut relays = Vec::new();
        if self.relays.is_empty() {
            builder = builder.relay_mode(RelayMode::Disabled);
        } else {
            let mut configs = Vec::new();
            let mut certs = Vec::new();
            for spec in &self.relays {
                let config = spec.relay_config()?;
                relays.push(config.url.clone());
                configs.push(config);
                if let Some(der) = spec.cert_der()? {
                    certs.push(rustls::pki_types::CertificateDer::from(der));
                }
            }
            builder = builder
                .relay_mode(RelayMode::Custom(configs.into_iter().collect()))
                .ca_tls_config(iroh_relay::tls::CaTlsConfig::embedded().with_extra_roots(certs));
        }
        let endpoint = builder
            .bind_addr(self.bind)
            .map_err(|e| SwarmError::Endpoint(e.into()))?
            .bind()
            .await
            .map_err(|e| SwarmError::Endpoint(e.into()))?;
        let store = FsStore::load(data.join("blob-store"))
            .await
            .map_err(|e| SwarmError::Store(e.into()))?;
        let served = Arc::new(ServedCounters::default());
        let blobs = BlobsProtocol::new(&store, Some(served::event_sender(served.clone())));
        let mut router = Router::builder(endpoint.clone()).accept(iroh_blobs::ALPN, blobs);
        for (alpn, handler) in self.protocols {
            router = handler.add(alpn, router);
        }
        Ok(SwarmNode {
            endpoint,
            router: router.spawn(),
            store,
            data,
            served,
            relays,
            peer_routes: Default::default(),
            recent: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::SwarmNode;

    #[tokio::test]
    async fn a_record_naming_many_addresses_gets_only_a_few_dialled() {
        let tmp = tempfile::tempdir().unwrap();
        let node = SwarmNode::builder(tmp.path(), ([127, 0, 0, 1], 0).into())
            .spawn()
            .await
            .unwrap();
        // A hostile record points a node's dials at someone else: 100 addresses.
        let victim: Vec<std::net::SocketAddr> = (0..100u16)
            .map(|p| ([198, 51, 100, 7], 1000 + p).into())
            .collect();
        let id = iroh::SecretKey::from_bytes(&[7; 32]).public();
        node.learn_peer_addrs(id.as_bytes(), &victim);
        let kept = node.peer_route(&id).addrs;
        assert_eq!(kept, victim[..archy_dht::MAX_RECORD_ADDRS].to_vec());
        node.shutdown().await;
    }
}
