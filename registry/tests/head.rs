//! The catalog head protocol on real endpoints: the origin serves its publish dir and
//! reloads it, a node gets the head from peers when the origin is down, and a stale
//! head offered by a peer is refused.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{collections::BTreeMap, path::Path, time::Duration};

use archy_catalog::{
    documents::SPEC_VERSION,
    head::{root_chain, SignedHead},
    keys::SecretKey,
    publisher::{sign, Publisher, Validity},
    Catalog, ContentHash, Limits, Role, Root, TrustedState,
};
use archy_registry::{
    head::{fetch_head, sync_head, HeadServer, HeadSource, KnownCatalog, HEAD_ALPN},
    Origin, SwarmNode,
};
use chrono::{Duration as Days, Utc};

use common::{local, node};

mod common;

/// The publisher of these tests: fixed keys, and one validity for every document, so
/// root v1 is the same bytes each time it is written.
struct TestPublisher {
    keys: Publisher,
    validity: Validity,
}

impl TestPublisher {
    fn new() -> Self {
        Self {
            keys: Publisher::from_seed(1),
            validity: Validity::default(),
        }
    }

    fn root(&self) -> Vec<u8> {
        self.keys.signed_root(1, self.validity.root)
    }

    /// Writes root, an empty catalog v`version` and its timestamp into `dir`.
    fn publish(&self, dir: &Path, version: u64) {
        let catalog = Catalog {
            role: Role::Catalog,
            spec_version: SPEC_VERSION,
            version,
            expires: Utc::now() + Days::days(30),
            apps: BTreeMap::new(),
        };
        self.keys.write_head(&catalog, dir, &self.validity).unwrap();
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
    }
}

/// Lets the origin watch its publish dir (every 200 ms) for `time`.
async fn watch_for(origin: &mut Origin, time: Duration) {
    let _ = tokio::time::timeout(time, origin.watch(Duration::from_millis(200))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_serves_and_reloads_peers_stand_in_and_stale_heads_are_refused() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let publish = tmp.path().join("publish");
    let p = TestPublisher::new();
    p.publish(&publish, 1);
    let limits = Limits::default();
    let anchor = TrustedState::bootstrap(&p.root(), &limits).unwrap();
    let t = Duration::from_secs(3);

    let mut origin = Origin::start(&publish, &tmp.path().join("o"), local(), None)
        .await
        .unwrap();
    let oaddr = origin.addr();
    let node = node(tmp.path(), "n").await;
    let v1 = sync_head(&node, Some(&oaddr), &[], &anchor, None, &limits, t)
        .await
        .unwrap();
    assert_eq!((v1.catalog.version, v1.source), (1, HeadSource::Origin));
    assert!(std::fs::read_to_string(tmp.path().join("o/origin.json"))
        .unwrap()
        .contains(&oaddr.to_string()));

    // The publisher signs v2; the origin picks it up by itself.
    p.publish(&publish, 2);
    watch_for(&mut origin, Duration::from_millis(1500)).await;
    let v2 = sync_head(
        &node,
        Some(&oaddr),
        &[],
        &v1.trusted,
        Some(&v1.head),
        &limits,
        t,
    )
    .await
    .unwrap();
    assert_eq!(v2.catalog.version, 2);
    let (trusted, head_v1, head_v2) = (v2.trusted, v1.head, v2.head);

    // Polling an unchanged head does not move the catalog again: asked with the hash of
    // the catalog the node holds, the origin answers without it (on the wire: the same
    // answer minus the catalog frame)...
    let answer_len = |catalog_blake3: Option<String>| {
        let (node, oaddr) = (&node, &oaddr);
        async move {
            let conn = node.connect_alpn(oaddr, HEAD_ALPN, t).await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let req = serde_json::json!({"root_version": 1, "catalog_blake3": catalog_blake3});
            send.write_all(req.to_string().as_bytes()).await.unwrap();
            send.finish().unwrap();
            recv.read_to_end(1 << 20).await.unwrap().len()
        }
    };
    let full = answer_len(None).await;
    let held = answer_len(Some(ContentHash::of(&head_v2.catalog).to_hex())).await;
    assert_eq!(
        full - held,
        head_v2.catalog.len() + 5,
        "only the catalog frame is left out"
    );
    // The catalog the origin's answer carries when the node holds `held`.
    let polled = |held: Vec<u8>| {
        let (node, oaddr, limits) = (&node, &oaddr, &limits);
        async move {
            let known = KnownCatalog::new(&held);
            fetch_head(node, oaddr, 1, Some(&known), limits, t)
                .await
                .unwrap()
                .catalog
        }
    };
    assert_eq!(polled(head_v2.catalog.clone()).await, head_v2.catalog);
    // ...while a held catalog with the same version but other bytes (here a trailing
    // space) gets the origin's catalog, as does an older one; and the held catalog
    // verifies against the timestamp as before.
    let mut marked = head_v2.catalog.clone();
    marked.push(b' ');
    assert_eq!(
        polled(marked).await,
        head_v2.catalog,
        "the origin's bytes, not ours"
    );
    assert_eq!(polled(head_v1.catalog.clone()).await, head_v2.catalog);
    let again = sync_head(
        &node,
        Some(&oaddr),
        &[],
        &trusted,
        Some(&head_v2),
        &limits,
        t,
    )
    .await
    .unwrap();
    assert_eq!((again.catalog.version, again.trusted), (2, trusted.clone()));

    // A broken publish dir is refused; the origin keeps serving v2.
    std::fs::write(publish.join("timestamp.json"), b"{not signed").unwrap();
    watch_for(&mut origin, Duration::from_millis(600)).await;
    assert!(
        origin.head().unwrap().timestamp == head_v2.timestamp,
        "still serving v2"
    );

    // Two peers serve heads: one current, one stale (v1). The origin goes down.
    let peer_server = |head| {
        let s = HeadServer::default();
        s.set(head);
        s
    };
    let good = SwarmNode::builder(&tmp.path().join("good"), local())
        .accept(HEAD_ALPN, peer_server(head_v2.clone()))
        .spawn()
        .await
        .unwrap();
    let stale = SwarmNode::builder(&tmp.path().join("stale"), local())
        .accept(HEAD_ALPN, peer_server(head_v1.clone()))
        .spawn()
        .await
        .unwrap();
    origin.swarm.shutdown().await;

    // A fresh node (trusting only the anchor) gets the newest head from the peers.
    let fresh = sync_head(
        &node,
        Some(&oaddr),
        &[stale.addr(), good.addr()],
        &anchor,
        None,
        &limits,
        t,
    )
    .await
    .unwrap();
    assert_eq!(fresh.catalog.version, 2);
    assert_eq!(fresh.source, HeadSource::Peer(good.addr().to_string()));

    // A node that accepted v2 is offered only the stale head: refused as a rollback.
    let e = sync_head(
        &node,
        Some(&oaddr),
        &[stale.addr()],
        &trusted,
        None,
        &limits,
        t,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("rollback") && e.contains(&stale.addr().to_string()),
        "{e}"
    );

    // A peer with no head says so.
    let empty = SwarmNode::builder(&tmp.path().join("empty"), local())
        .accept(HEAD_ALPN, HeadServer::default())
        .spawn()
        .await
        .unwrap();
    let e = fetch_head(&node, &empty.addr(), 1, None, &limits, t)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no head"), "{e}");
}

/// Root `version` with `key` as its root key, signed by `key` and by `previous` (the
/// key of the root before it, as a rotation must be).
fn rotated_root(p: &TestPublisher, version: u64, key: &SecretKey, previous: &SecretKey) -> Vec<u8> {
    let root = Root::for_keys(
        version,
        Utc::now() + Days::days(365),
        (&[key], 1),
        p.keys.catalog_key(),
        p.keys.timestamp_key(),
    );
    sign(&root, &[previous, key])
}

/// A node anchored at root v2 (it never walked v1 -> v2) keeps the chain it is sent, so
/// a node anchored at v1 can sync from it; roots that do not walk to the trusted root
/// are not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_anchored_at_a_later_root_serves_the_chain_to_older_peers() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let publish = tmp.path().join("publish");
    let p = TestPublisher::new();
    p.publish(&publish, 1);
    let (k2, k3) = (
        SecretKey::from_seed(&[12; 32]),
        SecretKey::from_seed(&[13; 32]),
    );
    let (v1, v2) = (p.root(), rotated_root(&p, 2, &k2, &p.keys.root_keys()[0]));
    let v3 = rotated_root(&p, 3, &k3, &k2);
    std::fs::create_dir_all(publish.join("roots")).unwrap();
    std::fs::write(publish.join("roots/1.json"), &v1).unwrap();
    std::fs::write(publish.join("roots/2.json"), &v2).unwrap();
    std::fs::write(publish.join("root.json"), &v3).unwrap();
    let limits = Limits::default();
    let t = Duration::from_secs(3);
    let origin = Origin::start(&publish, &tmp.path().join("o"), local(), None)
        .await
        .unwrap();

    let from_v2 = TrustedState::bootstrap(&v2, &limits).unwrap();
    let later = node(tmp.path(), "n").await;
    let got = sync_head(
        &later,
        Some(&origin.addr()),
        &[],
        &from_v2,
        None,
        &limits,
        t,
    )
    .await
    .unwrap();
    assert_eq!(got.trusted.root_version, 3);
    let kept = root_chain(&got.trusted, got.head.roots.clone(), &limits);
    let versions: Vec<u64> = kept.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        vec![2, 3],
        "the answer carried the roots after v1"
    );

    // The node serves its head with that chain; a v1-anchored node walks it.
    let server = HeadServer::default();
    server.set(SignedHead {
        roots: kept.clone(),
        ..got.head.clone()
    });
    let serving = SwarmNode::builder(&tmp.path().join("s"), local())
        .accept(HEAD_ALPN, server.clone())
        .spawn()
        .await
        .unwrap();
    let from_v1 = TrustedState::bootstrap(&v1, &limits).unwrap();
    let older = node(tmp.path(), "old").await;
    let synced = sync_head(&older, None, &[serving.addr()], &from_v1, None, &limits, t)
        .await
        .unwrap();
    assert_eq!(synced.trusted.root_version, 3);

    // With only the roots a node walked itself (v3), the v1 node is stuck.
    server.set(SignedHead {
        roots: vec![(3, v3.clone())],
        ..got.head.clone()
    });
    let e = sync_head(&older, None, &[serving.addr()], &from_v1, None, &limits, t)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("refused"), "{e}");

    // A forged v2 (its own key, not k2) breaks the walk: only v3 is kept.
    let forged = rotated_root(
        &p,
        2,
        &SecretKey::from_seed(&[66; 32]),
        &p.keys.root_keys()[0],
    );
    let kept = root_chain(&got.trusted, vec![(1, v1), (2, forged)], &limits);
    assert_eq!(kept, vec![(3, v3)]);
}

/// A peer that answers with a real timestamp (pinning a catalog of a few hundred bytes)
/// and then a catalog frame that claims 64 MiB, and streams it, counting what it got out.
#[derive(Debug, Clone)]
struct InflatingHead {
    timestamp: Vec<u8>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl iroh::protocol::ProtocolHandler for InflatingHead {
    async fn accept(
        &self,
        conn: iroh::endpoint::Connection,
    ) -> Result<(), iroh::protocol::AcceptError> {
        let Ok((mut send, mut recv)) = conn.accept_bi().await else {
            return Ok(());
        };
        let _ = recv.read_to_end(1024).await;
        let mut out = vec![b'T'];
        out.extend((self.timestamp.len() as u32).to_be_bytes());
        out.extend(&self.timestamp);
        out.push(b'C');
        out.extend((64u32 << 20).to_be_bytes());
        if send.write_all(&out).await.is_err() {
            return Ok(());
        }
        let chunk = vec![0u8; 64 << 10];
        for _ in 0..1024 {
            if send.write_all(&chunk).await.is_err() {
                break;
            }
            self.sent
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = send.finish();
        conn.closed().await;
        Ok(())
    }
}

/// Before, a node read up to 160 MiB from every peer it asked before it checked any
/// frame. Now the catalog frame is refused from its header: its length is over the size
/// the timestamp (sent first) pins, and none of its bytes are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_frame_longer_than_its_timestamp_pins_is_refused_before_it_is_read() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let publish = tmp.path().join("publish");
    TestPublisher::new().publish(&publish, 1);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hostile = SwarmNode::builder(&tmp.path().join("hostile"), local())
        .accept(
            HEAD_ALPN,
            InflatingHead {
                timestamp: std::fs::read(publish.join("timestamp.json")).unwrap(),
                sent: sent.clone(),
            },
        )
        .spawn()
        .await
        .unwrap();
    let node = node(tmp.path(), "n").await;
    let e = fetch_head(
        &node,
        &hostile.addr(),
        1,
        None,
        &Limits::default(),
        Duration::from_secs(3),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("frame C of 67108864 bytes: over its limit"),
        "{e}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 16 << 20,
        "the peer got {sent} bytes of a refused frame through"
    );
}

/// The origin as the online timestamp role, with timestamps of a 4 s lifetime: the
/// publisher signs only the root and the catalog; the origin signs the first
/// timestamp, keeps the head fresh past two lifetimes with no hand signing, and pins a
/// new catalog the publisher drops in. A node verifies every head it gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_holding_the_timestamp_key_keeps_the_head_fresh() {
    use archy_catalog::documents::{EnvelopeRef, Timestamp};
    use archy_registry::origin::TimestampRole;
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let publish = tmp.path().join("publish");
    let p = TestPublisher::new();
    p.publish(&publish, 1);
    std::fs::remove_file(publish.join("timestamp.json")).unwrap();
    // Publisher::from_seed(1)'s timestamp key (seed * 3 + 2).
    let key = SecretKey::from_seed(&[5; 32]);
    assert_eq!(key.key_id(), p.keys.timestamp_key().key_id());
    let role = TimestampRole::new(key, Days::seconds(4));
    let options = archy_registry::origin::OriginOptions {
        timestamp_role: Some(role),
        ..Default::default()
    };
    let mut origin = Origin::start_with(&publish, &tmp.path().join("o"), local(), options)
        .await
        .unwrap();
    let oaddr = origin.addr();
    // The origin's metrics say when the timestamp it serves expires.
    let listener = tokio::net::TcpListener::bind(local()).await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let metrics_task = tokio::spawn(archy_registry::metrics_http::serve(
        listener,
        origin.metrics_page(),
    ));
    let metric = |name: &'static str| {
        let url = metrics_url.clone();
        async move {
            tokio::task::spawn_blocking(move || -> Option<i64> {
                let body = ureq::get(&url).call().ok()?.into_string().ok()?;
                body.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
            })
            .await
            .unwrap()
        }
    };
    let node = node(tmp.path(), "n").await;
    let limits = Limits::default();
    let anchor = TrustedState::bootstrap(&p.root(), &limits).unwrap();
    let t = Duration::from_secs(3);
    let timestamp = |head: &SignedHead| -> Timestamp {
        EnvelopeRef::parse(&head.timestamp).unwrap().body().unwrap()
    };
    let first = sync_head(&node, Some(&oaddr), &[], &anchor, None, &limits, t)
        .await
        .unwrap();
    assert_eq!(
        timestamp(&first.head).version,
        1,
        "the origin signed the first"
    );

    // Almost two lifetimes: a node that asks now still gets a head that verifies.
    watch_for(&mut origin, Duration::from_secs(7)).await;
    let later = sync_head(
        &node,
        Some(&oaddr),
        &[],
        &first.trusted,
        Some(&first.head),
        &limits,
        t,
    )
    .await
    .unwrap();
    let ts = timestamp(&later.head);
    assert!(ts.version >= 3, "re-signed at half life: v{}", ts.version);
    assert!(ts.expires > Utc::now() + Days::seconds(1), "{}", ts.expires);
    assert_eq!(later.catalog.version, 1);
    assert_eq!(
        metric("archy_origin_timestamp_expires_timestamp_seconds").await,
        Some(ts.expires.timestamp())
    );

    // The publisher drops in catalog v2 (and no timestamp): the origin pins it.
    let catalog = Catalog {
        role: Role::Catalog,
        spec_version: SPEC_VERSION,
        version: 2,
        expires: Utc::now() + Days::days(30),
        apps: BTreeMap::new(),
    };
    archy_catalog::fsutil::write_atomic(
        &publish.join("catalog.json"),
        &p.keys.signed_catalog(&catalog),
    )
    .unwrap();
    watch_for(&mut origin, Duration::from_millis(1500)).await;
    let v2 = sync_head(
        &node,
        Some(&oaddr),
        &[],
        &later.trusted,
        Some(&later.head),
        &limits,
        t,
    )
    .await
    .unwrap();
    assert_eq!(v2.catalog.version, 2);
    assert!(timestamp(&v2.head).version > ts.version);
    assert_eq!(metric("archy_origin_catalog_version").await, Some(2));
    metrics_task.abort();
}
