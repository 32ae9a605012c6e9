//! A home relay run next to the origin: two nodes that cannot dial each other's address
//! still move a blob, through the relay (and a direct path if one turns up), and a node
//! only uses relays its operator named.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use archy_registry::{relay::HomeRelay, FetchOptions, PeerAddr, SwarmNode};
use common::{local, random_file};

/// An address nothing answers on: a peer's private address seen from another LAN.
fn unreachable(peer: &SwarmNode) -> PeerAddr {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let socket = closed.local_addr().unwrap();
    drop(closed);
    PeerAddr {
        id: peer.addr().id,
        socket,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_address_does_not_answer_is_reached_through_the_relay() {
    let _watchdog = archy_harness::watchdog(Duration::from_secs(120));
    let tmp = tempfile::tempdir().unwrap();
    let relay = HomeRelay::spawn(&tmp.path().join("origin"), local(), None)
        .await
        .unwrap();
    let spec = relay.spec();
    assert!(spec.url.starts_with("https://127.0.0.1:"), "{spec:?}");
    assert!(spec.quic_port.is_some() && spec.cert.is_some(), "{spec:?}");

    let with_relay = |name: &'static str| {
        let (dir, spec) = (tmp.path().join(name), spec.clone());
        async move {
            SwarmNode::builder(&dir, local())
                .relays([spec])
                .spawn()
                .await
                .unwrap()
        }
    };
    let holder = with_relay("holder").await;
    let fetcher = with_relay("fetcher").await;
    for n in [&holder, &fetcher] {
        assert!(
            n.wait_for_relay(Duration::from_secs(20)).await,
            "home relay reached"
        );
        assert_eq!(
            n.home_relay().unwrap().to_string(),
            n.relays()[0].to_string()
        );
    }
    let (file, want, size) = random_file(tmp.path(), 1 << 20);
    holder.import(&file).await.unwrap();
    let options = FetchOptions {
        idle_timeout: Duration::from_secs(10),
        ..FetchOptions::default()
    };

    // Without the holder's relay, its address alone leads nowhere.
    let report = fetcher
        .fetch(want)
        .size(size)
        .peers([unreachable(&holder)])
        .options(options.clone())
        .run()
        .await;
    assert!(report.is_err(), "{report:?}");

    // A relay the fetcher does not use is not taken from a peer.
    assert!(!fetcher.learn_peer_relay(&holder.addr().id, "https://relay.example:443"));
    // With the holder's home relay (as its signed DHT record says), it is.
    let home = holder.home_relay().unwrap().to_string();
    assert!(fetcher.learn_peer_relay(&holder.addr().id, &home));
    let report = fetcher
        .fetch(want)
        .size(size)
        .peers([unreachable(&holder)])
        .options(options)
        .run()
        .await
        .unwrap();
    assert_eq!(
        report.bytes_by_provider.values().sum::<u64>(),
        size,
        "{report:?}"
    );
    assert!(fetcher.has(&want).await.unwrap());
    // The fetcher can say how it reaches the holder: through the relay, or directly
    // once iroh punched a hole (on loopback it may).
    let paths = fetcher.peer_paths();
    let to_holder = paths
        .iter()
        .find(|p| p.id == hex::encode(holder.addr().id))
        .unwrap_or_else(|| panic!("a path to the holder: {paths:?}"));
    assert!(
        (to_holder.kind == "relayed" && to_holder.via == home)
            || (to_holder.kind == "direct" && to_holder.via.starts_with("127.0.0.1:")),
        "{to_holder:?}"
    );

    // The certificate is kept: a restarted relay is the one tickets already name.
    relay.shutdown().await;
    let again = HomeRelay::spawn(&tmp.path().join("origin"), local(), None)
        .await
        .unwrap();
    assert_eq!(again.spec().cert, spec.cert);
}
