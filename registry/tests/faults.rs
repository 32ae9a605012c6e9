//! Hostile and failing providers, on real iroh endpoints on 127.0.0.1, each behind a
//! misbehaving [`common::proxy`].

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use archy_catalog::{oci::hash_file, ContentHash};
use archy_registry::{FetchOptions, FetchReport, PeerAddr, SwarmError, SwarmNode};

use common::{node, provider, proxy, random_file, Mischief};

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

fn bytes_from(report: &FetchReport, provider: &PeerAddr) -> u64 {
    report
        .bytes_by_provider
        .get(&provider.to_string())
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_sending_bad_bytes_is_dropped_and_the_blob_still_verifies() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
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
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
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
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
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
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
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
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
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
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
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

/// Web seeds are as hostile as peers: one that sends other bytes, one whose hash tree
/// lies, one with no hash tree and one that ignores `Range` are each dropped with the
/// reason, an honest seed serves the blob, and a fetch from a liar alone fails with
/// nothing of its bytes stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_web_seeds_are_dropped_and_nothing_they_send_is_kept() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let (file, want, size) = random_file(tmp.path(), 4 * MIB);
    let blob = std::fs::read(&file).unwrap();
    let (_, tree) = archy_catalog::hash_tree::hash_tree(&blob[..], size).unwrap();
    let flip_every = |bytes: &[u8], step: usize| -> Vec<u8> {
        let mut b = bytes.to_vec();
        for i in (step / 2..b.len()).step_by(step) {
            b[i] ^= 0x55;
        }
        b
    };
    let host = archy_harness::web::StaticHost::start();
    for (path, body, tree) in [
        ("/honest", blob.clone(), Some(tree.clone())),
        ("/corrupt", flip_every(&blob, 16 << 10), Some(tree.clone())),
        ("/bad-tree", blob.clone(), Some(flip_every(&tree, 64))),
        ("/no-tree", blob.clone(), None),
        (
            "/short-tree",
            blob.clone(),
            Some(tree[..tree.len() - 64].to_vec()),
        ),
    ] {
        host.put(path, body);
        if let Some(tree) = tree {
            host.put(&format!("{path}.obao"), tree);
        }
    }
    let ranges_off = archy_harness::web::StaticHost::start();
    ranges_off.ignore_ranges(true);
    ranges_off.put("/blob", blob.clone());
    ranges_off.put("/blob.obao", tree.clone());
    let seeds = [
        host.url("/honest"),
        host.url("/corrupt"),
        host.url("/bad-tree"),
        host.url("/no-tree"),
        ranges_off.url("/blob"),
        host.url("/short-tree"),
    ];
    let options = FetchOptions {
        piece_bytes: 64 << 10,
        stall_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        ..FetchOptions::default()
    };
    let fetcher = node(tmp.path(), "f").await;
    let report = fetcher
        .fetch(want)
        .size(size)
        .web_seeds(seeds.clone())
        .options(options.clone())
        .run()
        .await
        .unwrap();
    let failed = |url: &str| {
        report
            .failed_providers
            .get(url)
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        report.bytes_by_provider.contains_key(&seeds[0]),
        "{report:?}"
    );
    assert!(
        !report.failed_providers.contains_key(&seeds[0]),
        "{report:?}"
    );
    for liar in &seeds[1..3] {
        assert!(
            failed(liar).contains("do not match the signed hash"),
            "{liar}: {report:?}"
        );
    }
    assert!(
        failed(&seeds[3]).contains("serves no hash tree"),
        "{report:?}"
    );
    assert!(
        failed(&seeds[4]).contains("does not serve byte ranges"),
        "{report:?}"
    );
    assert!(
        failed(&seeds[5]).contains("sent a hash tree of"),
        "{report:?}"
    );
    let out = tmp.path().join("out.bin");
    fetcher.export(&want, &out).await.unwrap();
    assert_eq!(hash_file(&out).unwrap(), (want, size));

    // A liar alone: the fetch fails, and nothing it sent was stored.
    let alone = node(tmp.path(), "alone").await;
    let e = alone
        .fetch(want)
        .size(size)
        .web_seeds([seeds[1].clone()])
        .options(options)
        .run()
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("do not match the signed hash"),
        "{e}"
    );
    let (held, _) = alone.held_ranges(&want).await.unwrap();
    assert!(held.is_empty(), "nothing unverified was stored: {held:?}");
}
