//! One swarm participant: identity, endpoint, blob store, and the parallel fetch.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use archy_catalog::ContentHash;
use bao_tree::{ChunkNum, ChunkRanges};
use iroh::{
    endpoint::{presets, RelayMode},
    protocol::Router,
    Endpoint, EndpointAddr, EndpointId, SecretKey,
};
use iroh_blobs::{protocol::GetRequest, store::fs::FsStore, BlobsProtocol, Hash};

/// BLAKE3 chunk size: ranges are split on multiples of it.
const CHUNK: u64 = 1024;
/// How long one provider may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a swarm operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("endpoint: {0}")]
    Endpoint(String),
    #[error("store: {0}")]
    Store(String),
    #[error("bad peer address {0:?}: expected <endpoint id>@<ip:port>")]
    Addr(String),
    #[error("could not fetch {hash}: {reasons}")]
    Fetch { hash: ContentHash, reasons: String },
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

impl PeerAddr {
    fn endpoint_addr(&self) -> Result<EndpointAddr, SwarmError> {
        let id =
            EndpointId::from_bytes(&self.id).map_err(|_| SwarmError::Addr(self.to_string()))?;
        Ok(EndpointAddr::new(id).with_ip_addr(self.socket))
    }
}

/// What a fetch did: bytes from each provider, and which ones failed and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    pub bytes_by_provider: BTreeMap<String, u64>,
    pub failed_providers: BTreeMap<String, String>,
    /// Bytes already held before the fetch started (resume).
    pub already_held: u64,
}

/// A running swarm participant.
#[derive(Debug)]
pub struct SwarmNode {
    endpoint: Endpoint,
    router: Router,
    store: FsStore,
    data: PathBuf,
}

fn to_hash(h: &ContentHash) -> Hash {
    Hash::from_bytes(*h.as_bytes())
}

/// Loads the node key from `<data>/node.key` (32 bytes, hex, mode 0600) or creates it.
pub fn node_key(data: &Path) -> Result<[u8; 32], SwarmError> {
    let path = data.join("node.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut k = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut k)
            .map_err(|_| SwarmError::Endpoint(format!("{}: not a node key", path.display())))?;
        return Ok(k);
    }
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| SwarmError::Endpoint(e.to_string()))?;
    std::fs::create_dir_all(data)?;
    archy_catalog::fsutil::write_atomic_mode(&path, hex::encode(k).as_bytes(), Some(0o600))?;
    Ok(k)
}

impl SwarmNode {
    /// Starts a node with its store under `data` and its endpoint bound to `bind`.
    pub async fn spawn(data: &Path, bind: SocketAddr) -> Result<Self, SwarmError> {
        let secret = SecretKey::from_bytes(&node_key(data)?);
        let endpoint = Endpoint::builder(presets::Minimal)
            .secret_key(secret)
            .relay_mode(RelayMode::Disabled)
            .clear_address_lookup()
            .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
            .bind_addr(bind)
            .map_err(|e| SwarmError::Endpoint(e.to_string()))?
            .bind()
            .await
            .map_err(|e| SwarmError::Endpoint(e.to_string()))?;
        let store = FsStore::load(data.join("blob-store"))
            .await
            .map_err(|e| SwarmError::Store(e.to_string()))?;
        let blobs = BlobsProtocol::new(&store, None);
        let router = Router::builder(endpoint.clone())
            .accept(iroh_blobs::ALPN, blobs)
            .spawn();
        Ok(Self {
            endpoint,
            router,
            store,
            data: data.to_path_buf(),
        })
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
            .map_err(|e| SwarmError::Store(e.to_string()))?;
        Ok(ContentHash(*tag.hash.as_bytes()))
    }

    /// Whether the whole blob is held and verified.
    pub async fn has(&self, hash: &ContentHash) -> Result<bool, SwarmError> {
        self.store
            .blobs()
            .has(to_hash(hash))
            .await
            .map_err(|e| SwarmError::Store(e.to_string()))
    }

    /// Writes a held blob to `path`.
    pub async fn export(&self, hash: &ContentHash, path: &Path) -> Result<(), SwarmError> {
        let abs = std::path::absolute(path)?;
        self.store
            .blobs()
            .export(to_hash(hash), abs)
            .await
            .map_err(|e| SwarmError::Store(e.to_string()))?;
        Ok(())
    }

    /// Fetches `hash` (`size` bytes) from `providers` in parallel: the chunk ranges are
    /// split into one contiguous share per provider; a share whose provider fails is
    /// handed to the next provider that has not failed. Verified ranges already held are
    /// not fetched again.
    pub async fn fetch(
        &self,
        hash: &ContentHash,
        size: u64,
        providers: &[PeerAddr],
    ) -> Result<FetchReport, SwarmError> {
        let mut report = FetchReport::default();
        if self.has(hash).await? {
            report.already_held = size;
            return Ok(report);
        }
        if providers.is_empty() {
            return Err(SwarmError::Fetch {
                hash: *hash,
                reasons: "no providers".into(),
            });
        }
        let chunks = size.div_ceil(CHUNK).max(1);
        let n = (providers.len() as u64).min(chunks);
        let shares: Vec<ChunkRanges> = (0..n)
            .map(|i| {
                let start = chunks * i / n;
                let end = if i + 1 == n {
                    u64::MAX
                } else {
                    chunks * (i + 1) / n
                };
                if end == u64::MAX {
                    ChunkRanges::from(ChunkNum(start)..)
                } else {
                    ChunkRanges::from(ChunkNum(start)..ChunkNum(end))
                }
            })
            .collect();
        let mut pending: Vec<(usize, ChunkRanges)> = shares.into_iter().enumerate().collect();
        let mut alive: Vec<bool> = vec![true; providers.len()];
        // Rounds: every pending share goes to a live provider; failed shares move on.
        for _round in 0..providers.len() {
            if pending.is_empty() {
                break;
            }
            let live: Vec<usize> = (0..providers.len()).filter(|i| alive[*i]).collect();
            if live.is_empty() {
                break;
            }
            let tasks = pending.iter().enumerate().map(|(k, (_, ranges))| {
                let p = live[k % live.len()];
                let provider = providers[p].clone();
                let request = GetRequest::builder()
                    .root(ranges.clone())
                    .build(to_hash(hash));
                async move {
                    let r = self.get_from(&provider, request).await;
                    (p, r)
                }
            });
            let results = futures_join_all(tasks).await;
            let mut next = Vec::new();
            for ((share, ranges), (p, r)) in pending.into_iter().zip(results) {
                let name = providers[p].to_string();
                match r {
                    Ok(bytes) => *report.bytes_by_provider.entry(name).or_default() += bytes,
                    Err(e) => {
                        tracing::warn!(provider = %name, error = %e, "provider failed; its share moves on");
                        alive[p] = false;
                        report.failed_providers.insert(name, e);
                        next.push((share, ranges));
                    }
                }
            }
            pending = next;
        }
        if !self.has(hash).await? {
            let reasons: Vec<String> = report
                .failed_providers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            return Err(SwarmError::Fetch {
                hash: *hash,
                reasons: reasons.join("; "),
            });
        }
        Ok(report)
    }

    async fn get_from(&self, provider: &PeerAddr, request: GetRequest) -> Result<u64, String> {
        let addr = provider.endpoint_addr().map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.endpoint.connect(addr, iroh_blobs::ALPN),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        let stats = self
            .store
            .remote()
            .execute_get(conn, request)
            .await
            .map_err(|e| format!("get: {e}"))?;
        Ok(stats.payload_bytes_read)
    }

    /// Stops serving and closes the endpoint.
    pub async fn shutdown(self) {
        let _ = self.router.shutdown().await;
        let _ = self.store.shutdown().await;
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    futures_util::future::join_all(futs).await
}
