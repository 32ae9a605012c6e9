//! The swarm with its DHT, on 127.0.0.1: holders are found through the DHT, a node
//! announces what it fetched, and a record pointing at a dead holder costs little.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{path::Path, time::Duration};

use archy_catalog::oci::hash_file;
use archy_registry::{DhtSettings, FetchPlan, Multiaddr, Swarm, SwarmNode};

use common::local;

mod common;

async fn member(dir: &Path, name: &str, bootstrap: Vec<Multiaddr>) -> Swarm {
    Swarm::start(
        SwarmNode::builder(&dir.join(name), local()),
        Some(DhtSettings {
            listen: local(),
            bootstrap,
        }),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_are_found_through_the_dht_and_a_dead_one_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("blob");
    let mut bytes = vec![0u8; 3 << 20];
    getrandom::fill(&mut bytes).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let (hash, size) = hash_file(&file).unwrap();

    let origin = member(tmp.path(), "origin", vec![]).await;
    origin.import(&file).await.unwrap();
    let boot = origin.dht_addrs();

    // A holder that fetched it (and so announced it), then died.
    let doomed = member(tmp.path(), "doomed", boot.clone()).await;
    let plan = FetchPlan {
        size: Some(size),
        ..FetchPlan::default()
    };
    doomed.fetch(hash, plan.clone(), None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen = origin.providers(hash).await;
        if seen.contains(&doomed.node.addr()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.contains(&doomed.node.addr()),
        "the fetcher announced itself: {seen:?}"
    );
    let doomed_addr = doomed.node.addr();
    doomed.shutdown().await;

    // A newcomer knows nothing but the DHT: it finds the origin and the dead holder,
    // skips the dead one and gets a verified copy.
    let newcomer = member(tmp.path(), "new", boot).await;
    assert!(
        newcomer.providers(hash).await.contains(&doomed_addr),
        "the DHT still names the dead holder, so the fetch has to skip it"
    );
    let t = std::time::Instant::now();
    let report = newcomer.fetch(hash, plan, None).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the dead holder cost {:?}",
        t.elapsed()
    );
    assert!(!report
        .bytes_by_provider
        .contains_key(&doomed_addr.to_string()));
    assert!(newcomer.node.has(&hash).await.unwrap());
    let out = tmp.path().join("out");
    newcomer.node.export(&hash, &out).await.unwrap();
    assert_eq!(hash_file(&out).unwrap(), (hash, size));
}
