//! Real iroh endpoints on 127.0.0.1: one blob fetched from several providers at once,
//! verified, with a dead provider's share moved to the others. Hostile providers are
//! in `faults.rs`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use archy_catalog::oci::hash_file;
use archy_registry::{FetchOptions, PeerAddr, SwarmNode};

use common::{node, provider, random_file};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_blob_from_three_providers_at_once() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 4 << 20);
    let mut providers = Vec::new();
    for i in 0..3 {
        let node = node(tmp.path(), &format!("p{i}")).await;
        assert_eq!(node.import(&file).await.unwrap(), want);
        providers.push(node);
    }
    let addrs: Vec<PeerAddr> = providers.iter().map(|p| p.addr()).collect();
    let fetcher = node(tmp.path(), "f").await;
    let small_pieces = FetchOptions {
        piece_bytes: 256 << 10,
        ..FetchOptions::default()
    };
    let report = fetcher
        .fetch(want)
        .size(size)
        .peers(addrs.clone())
        .options(small_pieces)
        .run()
        .await
        .unwrap();
    assert_eq!(
        report.bytes_by_provider.len(),
        3,
        "every provider served a share (only providers that sent bytes are listed): {report:?}"
    );
    assert!(report.bytes_by_provider.values().sum::<u64>() >= size);
    let out = tmp.path().join("out.bin");
    fetcher.export(&want, &out).await.unwrap();
    assert_eq!(
        hash_file(&out).unwrap(),
        (want, size),
        "the exported copy is the blob"
    );

    // Fetching again costs nothing: the verified blob is held.
    let again = fetcher
        .fetch(want)
        .size(size)
        .peers(addrs)
        .run()
        .await
        .unwrap();
    assert_eq!(again.already_held, size);
    assert!(again.bytes_by_provider.is_empty());

    // The fetcher now serves it too; without a size given, the provider tells it and
    // the bytes prove it.
    let second = node(tmp.path(), "g").await;
    let r = second
        .fetch(want)
        .peers([fetcher.addr()])
        .run()
        .await
        .unwrap();
    assert_eq!(r.size, size);
    assert_eq!(r.bytes_by_provider.len(), 1);
    assert!(second.has(&want).await.unwrap());

    // Every provider counted what it served (the counters follow transfer events, so
    // they may lag the fetch by a moment).
    let served = |nodes: &[&SwarmNode]| nodes.iter().map(|n| n.served().bytes()).sum::<u64>();
    let all: Vec<&SwarmNode> = providers.iter().collect();
    let _ = archy_harness::poll_until_async(
        "the served counters to catch up",
        std::time::Duration::from_secs(10),
        || async { (served(&all) >= size && fetcher.served().bytes() >= size).then_some(()) },
    )
    .await;
    for p in &providers {
        assert!(p.served().bytes() > 0, "{} served its share", p.addr());
    }
    assert!(served(&providers.iter().collect::<Vec<_>>()) >= size);
    let by_fetcher = fetcher.served().bytes();
    assert!(
        (size..=size + (64 << 10)).contains(&by_fetcher),
        "the fetcher served the whole blob to the second node once (and its size probe): {by_fetcher}"
    );
    assert_eq!(second.served().bytes(), 0, "nobody asked the second node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_provider_share_goes_to_the_others() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 2 << 20);
    let good = provider(tmp.path(), "good", &file).await;
    let dead = provider(tmp.path(), "dead", &file).await;
    let dead_addr = dead.addr();
    dead.shutdown().await;
    let fetcher = node(tmp.path(), "f").await;
    // Alone, the dead provider fails the fetch within the connect timeout, named.
    let t = std::time::Instant::now();
    let e = fetcher
        .fetch(want)
        .size(size)
        .peers([dead_addr.clone()])
        .run()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "dead provider given up quickly: {:?}",
        t.elapsed()
    );
    assert!(
        e.contains(&dead_addr.to_string()) && e.contains("connect"),
        "{e}"
    );
    // With a live one beside it, the live one serves everything.
    let report = fetcher
        .fetch(want)
        .size(size)
        .peers([dead_addr.clone(), good.addr()])
        .run()
        .await
        .unwrap();
    assert_eq!(
        report.bytes_by_provider.keys().collect::<Vec<_>>(),
        vec![&good.addr().to_string()],
        "{report:?}"
    );
    assert!(fetcher.has(&want).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_has_it_is_a_clear_error() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let empty = node(tmp.path(), "e").await;
    let fetcher = node(tmp.path(), "f").await;
    let missing = archy_catalog::ContentHash::of(b"nobody has this");
    let quick = FetchOptions {
        idle_timeout: std::time::Duration::from_secs(2),
        ..FetchOptions::default()
    };
    let e = fetcher
        .fetch(missing)
        .size(15)
        .peers([empty.addr()])
        .options(quick.clone())
        .run()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("could not fetch"), "{e}");
    assert!(e.to_string().contains("no provider had"), "{e}");
    let e = fetcher.fetch(missing).run().await.unwrap_err();
    assert!(e.to_string().ends_with(": no providers"), "{e}");
    assert!("nonsense".parse::<PeerAddr>().is_err());
    let a = empty.addr();
    assert_eq!(a.to_string().parse::<PeerAddr>().unwrap(), a);
}

/// A web seed (a static HTTP host serving the blob and its hash tree) is a provider of
/// ranges next to the peers: a peer that holds part of the blob serves that part, the
/// seed the pieces no peer has, asked with `Range` requests only, and the result is the
/// blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_seed_gives_the_ranges_no_peer_holds() {
    use common::{proxy, Mischief};
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 4 << 20);
    let blob = std::fs::read(&file).unwrap();
    let (_, tree) = archy_catalog::hash_tree::hash_tree(&blob[..], size).unwrap();
    let host = archy_harness::web::StaticHost::start();
    host.put("/blob", blob);
    host.put("/blob.obao", tree);
    let seed = host.url("/blob");

    // A peer that holds part of the blob: its only source died half-way.
    let origin = provider(tmp.path(), "origin", &file).await;
    let (dying, _router) = proxy(&origin, Mischief::DieAfter { bytes: 3 << 19 }).await;
    let partial = node(tmp.path(), "partial").await;
    let pieces = FetchOptions {
        piece_bytes: 256 << 10,
        idle_timeout: std::time::Duration::from_secs(5),
        ..FetchOptions::default()
    };
    let _ = partial
        .fetch(want)
        .size(size)
        .origin(Some(dying))
        .options(pieces.clone())
        .run()
        .await
        .unwrap_err();
    let (held, _) = partial.held_ranges(&want).await.unwrap();
    assert!(!held.is_empty(), "the peer holds part of the blob");
    drop(origin);

    let fetcher = node(tmp.path(), "f").await;
    let report = fetcher
        .fetch(want)
        .size(size)
        .peers([partial.addr()])
        .web_seeds([seed.clone()])
        .options(pieces)
        .run()
        .await
        .unwrap();
    let from = |p: &str| report.bytes_by_provider.get(p).copied().unwrap_or(0);
    assert!(from(&partial.addr().to_string()) > 0, "{report:?}");
    assert!(from(&seed) > 0, "{report:?}");
    let asked: Vec<_> = host
        .requests()
        .into_iter()
        .filter(|r| r.path == "/blob")
        .collect();
    assert!(
        asked.iter().all(|r| r.range.is_some()),
        "only ranges were asked of the seed: {asked:?}"
    );
    let ranged: u64 = asked
        .iter()
        .filter_map(|r| r.range)
        .map(|(a, b)| b + 1 - a)
        .sum();
    assert!(
        ranged < size,
        "the seed was not asked for what the peer holds: {ranged} of {size} bytes"
    );
    let out = tmp.path().join("out.bin");
    fetcher.export(&want, &out).await.unwrap();
    assert_eq!(hash_file(&out).unwrap(), (want, size));
}
