//! The swarm with its DHT, on 127.0.0.1: holders are found through the DHT, a node
//! announces what it is fetching from its first verified bytes, and a record pointing
//! at a dead holder costs little.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{path::Path, time::Duration};

use archy_catalog::{oci::hash_file, ContentHash};
use archy_registry::{DhtSettings, FetchOptions, FetchPlan, Multiaddr, Swarm, SwarmNode};
use bao_tree::{ChunkNum, ChunkRanges};

use common::{local, provider, proxy, random_file, Mischief};

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

/// Waits (at most 10 s) until `asker`'s DHT lookup for `hash` names `holder`.
async fn assert_named(asker: &Swarm, hash: ContentHash, holder: &Swarm) {
    let want = holder.node.addr();
    let seen = std::sync::Mutex::new(Vec::new());
    let what = format!("the DHT to name {want} as a holder");
    archy_harness::poll_until_async(&what, Duration::from_secs(10), || async {
        let named = asker.providers(hash).await;
        let found = named.contains(&want);
        *seen.lock().unwrap() = named;
        found.then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: it names {:?}", seen.lock().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_are_found_through_the_dht_and_a_dead_one_is_skipped() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
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
    assert_named(&origin, hash, &doomed).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetcher_is_announced_from_its_first_verified_bytes_not_its_first_piece() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let (file, hash, size) = random_file(tmp.path(), 3 << 20);
    // The origin is not in the DHT (nobody finds it there); the fetcher's only way to
    // it hangs after 200 KiB: some bytes verify, but no 1 MiB piece can ever be whole.
    let origin = provider(tmp.path(), "origin", &file).await;
    let (hanging, _proxy) = proxy(&origin, Mischief::HangAfter { bytes: 200 << 10 }).await;
    let boot = member(tmp.path(), "boot", vec![]).await;
    let fetcher = member(tmp.path(), "fetcher", boot.dht_addrs()).await;
    let plan = FetchPlan {
        size: Some(size),
        origin: Some(hanging),
        options: FetchOptions {
            stall_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            ..FetchOptions::default()
        },
        ..FetchPlan::default()
    };
    let fetching = tokio::spawn({
        let fetcher = fetcher.clone();
        async move { fetcher.fetch(hash, plan, None).await }
    });
    assert_named(&boot, hash, &fetcher).await;
    let (held, _) = fetcher.node.held_ranges(&hash).await.unwrap();
    assert!(!held.is_empty(), "it holds verified bytes");
    let first_piece = ChunkRanges::from(..ChunkNum(1024));
    assert!(
        !held.is_superset(&first_piece) && !fetching.is_finished(),
        "the test needs the fetch to be stuck before its first whole piece: {held:?}"
    );
    fetching.abort();
}
