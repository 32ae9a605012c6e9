//! Real DHT nodes on 127.0.0.1: announce on one, find from another, with the holder's
//! signed iroh addresses; a dead holder does not stall lookups.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{net::SocketAddr, time::Duration};

use archy_catalog::ContentHash;
use archy_dht::{Dht, DhtConfig};
use ed25519_dalek::SigningKey;

fn cfg(n: u8, bootstrap: &[&Dht]) -> DhtConfig {
    let mut c = DhtConfig::new([n; 32], "127.0.0.1:0".parse().unwrap());
    c.bootstrap = bootstrap
        .iter()
        .flat_map(|d| d.listen_addrs().to_vec())
        .collect();
    c.iroh_addrs = vec![SocketAddr::from(([127, 0, 0, 1], 40_000 + n as u16))];
    c.query_timeout = Duration::from_secs(3);
    c
}

fn endpoint_id(n: u8) -> [u8; 32] {
    SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes()
}

/// Polls `find_providers` until `want` holders are seen (bounded: 40 tries).
async fn wait_for(dht: &Dht, hash: ContentHash, want: usize) -> Vec<archy_dht::Provider> {
    let what = format!("{want} providers of {hash}");
    archy_harness::poll_until_async(&what, Duration::from_secs(10), || async {
        let found = dht.find_providers(hash).await.unwrap();
        (found.len() >= want).then_some(found)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_on_one_node_is_found_from_another_with_verified_addresses() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let a = Dht::start(cfg(1, &[])).await.unwrap();
    let b = Dht::start(cfg(2, &[&a])).await.unwrap();
    let c = Dht::start(cfg(3, &[&a])).await.unwrap();
    let hash = ContentHash::of(b"an image archive");

    assert!(
        b.find_providers(hash).await.unwrap().is_empty(),
        "nobody holds it yet"
    );
    c.announce(hash).await.unwrap();
    let found = wait_for(&b, hash, 1).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].endpoint_id, endpoint_id(3));
    assert_eq!(
        found[0].addrs,
        vec![SocketAddr::from(([127, 0, 0, 1], 40_003))]
    );

    a.announce(hash).await.unwrap();
    let found = wait_for(&b, hash, 2).await;
    let ids: Vec<_> = found.iter().map(|p| p.endpoint_id).collect();
    assert!(ids.contains(&endpoint_id(1)) && ids.contains(&endpoint_id(3)));

    let other = ContentHash::of(b"something else");
    assert!(
        b.find_providers(other).await.unwrap().is_empty(),
        "records are per hash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_does_not_stall_lookups() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let a = Dht::start(cfg(11, &[])).await.unwrap();
    let b = Dht::start(cfg(12, &[&a])).await.unwrap();
    let c = Dht::start(cfg(13, &[&a])).await.unwrap();
    let hash = ContentHash::of(b"soon orphaned");
    c.announce(hash).await.unwrap();
    wait_for(&b, hash, 1).await;
    drop(c); // the holder dies; its record lives on until its TTL

    let t = std::time::Instant::now();
    let found = b.find_providers(hash).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "lookup took {:?}",
        t.elapsed()
    );
    // The record may still name the dead node: the downloader dials with a short
    // timeout and moves on. What matters here is that the lookup answers promptly.
    assert!(found.len() <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_this_host_does_not_have_is_a_clear_error() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    // Binding fails locally (EADDRNOTAVAIL); nothing is sent anywhere.
    let mut c = cfg(22, &[]);
    c.listen = SocketAddr::from(([203, 0, 113, 1], 4001));
    let e = Dht::start(c).await.unwrap_err();
    assert!(
        e.to_string().contains("cannot listen on 203.0.113.1:4001"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_servers_are_found_apart_from_blob_holders() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let a = Dht::start(cfg(21, &[])).await.unwrap();
    let b = Dht::start(cfg(22, &[&a])).await.unwrap();
    let c = Dht::start(cfg(23, &[&a])).await.unwrap();
    assert!(b.find_head_servers().await.unwrap().is_empty());
    c.announce(ContentHash::of(b"a blob")).await.unwrap();
    a.announce_head_server().await.unwrap();
    let found =
        archy_harness::poll_until_async("a head server", Duration::from_secs(10), || async {
            let found = b.find_head_servers().await.unwrap();
            (!found.is_empty()).then_some(found)
        })
        .await
        .unwrap_or_default();
    let ids: Vec<_> = found.iter().map(|p| p.endpoint_id).collect();
    assert_eq!(ids, vec![endpoint_id(21)], "only a serves heads");
    // b learns c through a lookup that a answers once c joined through it (each try
    // looks up again: the first lookup may have run before a knew c).
    let known =
        archy_harness::poll_until_async("b to know a and c", Duration::from_secs(10), || async {
            let _ = b.find_head_servers().await;
            let known = b.routing_peers().await.unwrap();
            (known == 2).then_some(known)
        })
        .await;
    assert_eq!(known.ok(), Some(2), "b knows a and c");
}
