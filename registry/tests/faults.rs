//! Hostile and failing providers, on real iroh endpoints on 127.0.0.1.
//!
//! A [`Proxy`] is a real iroh endpoint that speaks for a real provider: it forwards
//! every stream of the iroh-blobs protocol, and misbehaves on the way back: it flips a
//! byte (bad data), dies after a byte budget (killed mid-transfer), trickles (slow), or
//! hangs with its connection open.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use archy_catalog::{oci::hash_file, ContentHash};
use archy_registry::{FetchOptions, FetchReport, PeerAddr, SwarmError, SwarmNode};
use iroh::{
    endpoint::{presets, Connection, RelayMode},
    protocol::{AcceptError, ProtocolHandler, Router},
    Endpoint, EndpointAddr, EndpointId,
};

use common::{local, node, provider, random_file};

mod common;

const MIB: u64 = 1 << 20;

/// Fetches `want` into `fetcher` from `origin` and `peers`, in pieces of `kib` KiB.
async fn fetch(
    fetcher: &SwarmNode,
    (want, size): (ContentHash, u64),
    origin: Option<PeerAddr>,
    peers: &[PeerAddr],
    kib: u64,
) -> Result<FetchReport, SwarmError> {
    fetcher
        .fetch(want)
        .size(size)
        .origin(origin)
        .peers(peers.iter().cloned())
        .options(FetchOptions {
            piece_bytes: kib << 10,
            stall_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            ..FetchOptions::default()
        })
        .run()
        .await
}

#[derive(Debug, Clone, Copy)]
enum Mischief {
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
struct Proxy {
    endpoint: Endpoint,
    upstream: EndpointAddr,
    mischief: Mischief,
    sent: Arc<AtomicU64>,
    dead: Arc<AtomicBool>,
}

/// Starts a proxy in front of `upstream`; returns its address and the router to keep it alive.
async fn proxy(upstream: &SwarmNode, mischief: Mischief) -> (PeerAddr, Router) {
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

fn bytes_from(report: &FetchReport, provider: &PeerAddr) -> u64 {
    report
        .bytes_by_provider
        .get(&provider.to_string())
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_sending_bad_bytes_is_dropped_and_the_blob_still_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 4 * MIB);
    let origin = provider(tmp.path(), "origin", &file).await;
    let honest = provider(tmp.path(), "honest", &file).await;
    let (liar, _r) = proxy(&honest, Mischief::Corrupt { at: 20_000 }).await;
    let fetcher = node(tmp.path(), "f").await;
    // The liar is a peer, so it gets pieces before the origin does.
    let blob = (want, size);
    let report = fetch(
        &fetcher,
        blob,
        Some(origin.addr()),
        std::slice::from_ref(&liar),
        256,
    )
    .await
    .unwrap();
    let why = report.failed_providers.get(&liar.to_string());
    assert!(
        why.is_some_and(|w| w.contains("bad data") && w.contains("mismatch")),
        "{report:?}"
    );
    let out = tmp.path().join("out.bin");
    fetcher.export(&want, &out).await.unwrap();
    assert_eq!(hash_file(&out).unwrap(), (want, size));

    // Nobody but liars: the fetch fails, says why, and nothing unverified is held.
    let (liar2, _r2) = proxy(&honest, Mischief::Corrupt { at: 20_000 }).await;
    let victim = node(tmp.path(), "v").await;
    let e = fetch(&victim, blob, None, &[liar.clone(), liar2], 256)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad data"), "{e}");
    assert!(!victim.has(&want).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_transfer_costs_no_verified_range_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 8 * MIB);
    let origin = provider(tmp.path(), "origin", &file).await;
    let peer = provider(tmp.path(), "peer", &file).await;
    // Dies in the middle of its third 1 MiB piece.
    let dies = Mischief::DieAfter {
        bytes: 2 * MIB + MIB / 2,
    };
    let (doomed, _r) = proxy(&peer, dies).await;
    let fetcher = node(tmp.path(), "f").await;
    let report = fetch(
        &fetcher,
        (want, size),
        Some(origin.addr()),
        std::slice::from_ref(&doomed),
        1024,
    )
    .await
    .unwrap();
    assert!(
        report.failed_providers.contains_key(&doomed.to_string()),
        "{report:?}"
    );
    assert!(
        bytes_from(&report, &doomed) >= MIB,
        "it served before dying: {report:?}"
    );
    let total: u64 = report.bytes_by_provider.values().sum();
    assert!(
        total <= size + 64 * 1024,
        "verified ranges were fetched again: {total} bytes for a {size}-byte blob: {report:?}"
    );
    assert!(fetcher.has(&want).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_fetch_resumes_and_a_partial_holder_serves_what_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 6 * MIB);
    let blob = (want, size);
    let origin = provider(tmp.path(), "origin", &file).await;
    let (dying, _r) = proxy(&origin, Mischief::DieAfter { bytes: 3 * MIB }).await;
    let fetcher = node(tmp.path(), "f").await;
    // Only the dying provider: the fetch fails, with what it got kept.
    let e = fetch(&fetcher, blob, Some(dying), &[], 512)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("could not fetch"), "{e}");
    let (held, _) = fetcher.held_ranges(&want).await.unwrap();
    assert!(!held.is_empty(), "the verified part is kept");

    // A third node fetches while the fetcher still holds only part: the fetcher serves
    // the pieces it has (it is a peer), the origin the rest.
    let third = node(tmp.path(), "t").await;
    let r3 = fetch(&third, blob, Some(origin.addr()), &[fetcher.addr()], 512)
        .await
        .unwrap();
    assert!(
        bytes_from(&r3, &fetcher.addr()) > 0,
        "the partial holder served its pieces: {r3:?}"
    );
    assert!(third.has(&want).await.unwrap());

    // The fetcher resumes: only the missing part crosses the wire.
    let report = fetch(&fetcher, blob, Some(origin.addr()), &[], 512)
        .await
        .unwrap();
    assert!(report.already_held >= 2 * MIB, "{report:?}");
    let fetched: u64 = report.bytes_by_provider.values().sum();
    assert!(
        fetched <= size - report.already_held + 64 * 1024,
        "resume fetched {fetched} bytes with {} held: {report:?}",
        report.already_held
    );
    assert!(fetcher.has(&want).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_still_downloading_serves_pieces_as_it_gets_them() {
    // The peer starts empty, at the same moment as the fetcher, from a faster origin
    // link than the fetcher's: everything the fetcher gets from it was announced by
    // bitfield updates after the fetcher connected (which add to what it had).
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 4 * MIB);
    let blob = (want, size);
    let origin = provider(tmp.path(), "origin", &file).await;
    let throttle = |kib: u64| Mischief::Throttle {
        bytes_per_sec: kib << 10,
    };
    let (peers_link, _r1) = proxy(&origin, throttle(2048)).await;
    let (fetchers_link, _r2) = proxy(&origin, throttle(256)).await;
    let peer = node(tmp.path(), "p").await;
    let fetcher = node(tmp.path(), "f").await;
    let from_peer = [peer.addr()];
    let (from_origin, report) = tokio::join!(
        fetch(&peer, blob, Some(peers_link), &[], 256),
        fetch(&fetcher, blob, Some(fetchers_link), &from_peer, 256),
    );
    from_origin.unwrap();
    let report = report.unwrap();
    assert!(
        bytes_from(&report, &peer.addr()) >= size / 2,
        "the downloading peer served too little: {report:?}"
    );
    assert!(fetcher.has(&want).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_gets_little_work_and_does_not_hold_the_fetch_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 8 * MIB);
    let origin = provider(tmp.path(), "origin", &file).await;
    let peer = provider(tmp.path(), "peer", &file).await;
    // Alone, one 256 KiB piece from it would take 16 s.
    let trickle = Mischief::Throttle {
        bytes_per_sec: 16 << 10,
    };
    let (slow, _r) = proxy(&peer, trickle).await;
    let fast = provider(tmp.path(), "fast", &file).await;
    let fetcher = node(tmp.path(), "f").await;
    let peers = [slow.clone(), fast.addr()];
    let report = fetch(&fetcher, (want, size), Some(origin.addr()), &peers, 256)
        .await
        .unwrap();
    let from_slow = bytes_from(&report, &slow);
    assert!(
        from_slow < size / 4,
        "the slow peer carried {from_slow} of {size} bytes: {report:?}"
    );
    assert!(
        report.elapsed < Duration::from_secs(8),
        "the slow peer's piece was not taken over (endgame): {report:?}"
    );
    assert!(fetcher.has(&want).await.unwrap());
}

/// A peer that stops sending but keeps its connection open costs a stall per request
/// (the clock runs while other providers complete pieces) and is dropped after three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_hangs_is_dropped_as_stalled() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 8 * MIB);
    let origin = provider(tmp.path(), "origin", &file).await;
    let peer = provider(tmp.path(), "peer", &file).await;
    let (hangs, _r) = proxy(&peer, Mischief::HangAfter { bytes: MIB }).await;
    // The origin completes a piece about every 0.5 s, well inside the 2 s stall
    // timeout, for about 16 s: long enough for the hung peer's three strikes.
    let (slow_origin, _r2) = proxy(
        &origin,
        Mischief::Throttle {
            bytes_per_sec: MIB / 2,
        },
    )
    .await;
    let fetcher = node(tmp.path(), "f").await;
    let report = fetch(
        &fetcher,
        (want, size),
        Some(slow_origin),
        std::slice::from_ref(&hangs),
        256,
    )
    .await
    .unwrap();
    let why = report
        .failed_providers
        .get(&hangs.to_string())
        .unwrap_or_else(|| panic!("the hung peer was never dropped: {report:?}"));
    assert!(why.contains("stalled"), "{why}");
    assert!(fetcher.has(&want).await.unwrap());
}
