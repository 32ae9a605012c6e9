//! Helpers the swarm tests share: nodes on 127.0.0.1 and random blobs to move.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part; tests fail loudly

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use archy_catalog::{oci::hash_file, ContentHash};
use archy_registry::{PeerAddr, SwarmNode};
use iroh::{
    endpoint::{presets, Connection, RelayMode},
    protocol::{AcceptError, ProtocolHandler, Router},
    Endpoint, EndpointAddr, EndpointId,
};

/// Any free port on loopback.
pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `<dir>/blob.bin` with `size` random bytes; its path, BLAKE3 hash and size.
pub fn random_file(dir: &Path, size: u64) -> (PathBuf, ContentHash, u64) {
    let mut bytes = vec![0u8; size as usize];
    getrandom::fill(&mut bytes).unwrap();
    let p = dir.join("blob.bin");
    std::fs::write(&p, bytes).unwrap();
    let (h, s) = hash_file(&p).unwrap();
    (p, h, s)
}

/// A swarm node with its data in `<dir>/<name>`.
pub async fn node(dir: &Path, name: &str) -> SwarmNode {
    SwarmNode::spawn(&dir.join(name), local()).await.unwrap()
}

/// A node that holds `file` (and so serves it).
pub async fn provider(dir: &Path, name: &str, file: &Path) -> SwarmNode {
    let n = node(dir, name).await;
    n.import(file).await.unwrap();
    n
}

/// How a [`proxy`] misbehaves. A proxy is a real iroh endpoint that speaks for a real
/// provider: it forwards every stream of the iroh-blobs protocol, and on the way back
/// flips a byte (bad data), dies after a byte budget (killed mid-transfer), trickles
/// (slow), or hangs with its connection open.
#[derive(Debug, Clone, Copy)]
pub enum Mischief {
    /// Flip one byte at this offset of every response stream.
    Corrupt { at: u64 },
    /// Close everything once this many response bytes went out, and refuse from then on.
    DieAfter { bytes: u64 },
    /// Send at most this many bytes per second.
    Throttle { bytes_per_sec: u64 },
    /// Once this many response bytes went out, send nothing more but keep every stream
    /// and the connection open (a peer that hangs).
    HangAfter { bytes: u64 },
}

#[derive(Debug, Clone)]
pub struct Proxy {
    endpoint: Endpoint,
    upstream: EndpointAddr,
    mischief: Mischief,
    sent: Arc<AtomicU64>,
    dead: Arc<AtomicBool>,
}

/// Starts a proxy in front of `upstream`; returns its address and the router to keep it alive.
pub async fn proxy(upstream: &SwarmNode, mischief: Mischief) -> (PeerAddr, Router) {
    let endpoint = Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(iroh::endpoint::PortmapperConfig::Disabled)
        .bind_addr(local())
        .unwrap()
        .bind()
        .await
        .unwrap();
    let up = upstream.addr();
    let p = Proxy {
        endpoint: endpoint.clone(),
        upstream: EndpointAddr::new(EndpointId::from_bytes(&up.id).unwrap())
            .with_ip_addr(up.socket),
        mischief,
        sent: Arc::new(AtomicU64::new(0)),
        dead: Arc::new(AtomicBool::new(false)),
    };
    let router = Router::builder(endpoint.clone())
        .accept(iroh_blobs::ALPN, p)
        .spawn();
    let addr = PeerAddr {
        id: *endpoint.id().as_bytes(),
        socket: endpoint.bound_sockets()[0],
    };
    (addr, router)
}

impl ProtocolHandler for Proxy {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        if self.dead.load(Ordering::SeqCst) {
            conn.close(1u32.into(), b"dead");
            return Ok(());
        }
        let up = self
            .endpoint
            .connect(self.upstream.clone(), iroh_blobs::ALPN)
            .await
            .map_err(AcceptError::from_err)?;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let (mut usend, mut urecv) = up.open_bi().await.map_err(AcceptError::from_err)?;
            let this = self.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                let request = async {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(Some(n)) = recv.read(&mut buf).await {
                        if usend.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = usend.finish();
                };
                let response = async {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut offset = 0u64;
                    while let Ok(Some(n)) = urecv.read(&mut buf).await {
                        let chunk = &mut buf[..n];
                        match this.mischief {
                            Mischief::Corrupt { at } => {
                                if (offset..offset + n as u64).contains(&at) {
                                    chunk[(at - offset) as usize] ^= 0xff;
                                }
                            }
                            Mischief::DieAfter { bytes } => {
                                let before = this.sent.fetch_add(n as u64, Ordering::SeqCst);
                                if before + n as u64 > bytes {
                                    this.dead.store(true, Ordering::SeqCst);
                                    conn.close(1u32.into(), b"killed");
                                    return;
                                }
                            }
                            Mischief::HangAfter { bytes } => {
                                if this.sent.load(Ordering::SeqCst) >= bytes {
                                    std::future::pending::<()>().await;
                                }
                            }
                            Mischief::Throttle { bytes_per_sec } => {
                                tokio::time::sleep(Duration::from_secs_f64(
                                    n as f64 / bytes_per_sec as f64,
                                ))
                                .await;
                            }
                        }
                        this.sent.fetch_add(
                            if matches!(this.mischief, Mischief::DieAfter { .. }) {
                                0
                            } else {
                                n as u64
                            },
                            Ordering::SeqCst,
                        );
                        offset += n as u64;
                        if send.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                };
                tokio::join!(request, response);
            });
        }
        Ok(())
    }
}
