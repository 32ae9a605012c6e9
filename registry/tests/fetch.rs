//! Real iroh endpoints on 127.0.0.1: one blob fetched from several providers at once,
//! verified, with a dead provider's share moved to the others.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::SocketAddr;

use archy_catalog::oci::hash_file;
use archy_registry::{PeerAddr, SwarmNode};

fn random_file(dir: &std::path::Path, size: usize) -> std::path::PathBuf {
    let mut bytes = vec![0u8; size];
    getrandom::fill(&mut bytes).unwrap();
    let p = dir.join("blob.bin");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_blob_from_three_providers_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let file = random_file(tmp.path(), 4 << 20);
    let (want, size) = hash_file(&file).unwrap();
    let mut providers = Vec::new();
    for i in 0..3 {
        let node = SwarmNode::spawn(&tmp.path().join(format!("p{i}")), local())
            .await
            .unwrap();
        assert_eq!(node.import(&file).await.unwrap(), want);
        providers.push(node);
    }
    let addrs: Vec<PeerAddr> = providers.iter().map(|p| p.addr()).collect();
    let fetcher = SwarmNode::spawn(&tmp.path().join("f"), local())
        .await
        .unwrap();
    let report = fetcher.fetch(&want, size, &addrs).await.unwrap();
    assert_eq!(
        report.bytes_by_provider.len(),
        3,
        "every provider served a share: {report:?}"
    );
    assert!(report.bytes_by_provider.values().all(|b| *b > 0));
    assert!(report.bytes_by_provider.values().sum::<u64>() >= size);
    let out = tmp.path().join("out.bin");
    fetcher.export(&want, &out).await.unwrap();
    assert_eq!(
        hash_file(&out).unwrap(),
        (want, size),
        "the exported copy is the blob"
    );

    // Fetching again costs nothing: the verified blob is held.
    let again = fetcher.fetch(&want, size, &addrs).await.unwrap();
    assert_eq!(again.already_held, size);
    assert!(again.bytes_by_provider.is_empty());

    // The fetcher now serves it too.
    let second = SwarmNode::spawn(&tmp.path().join("g"), local())
        .await
        .unwrap();
    let r = second.fetch(&want, size, &[fetcher.addr()]).await.unwrap();
    assert_eq!(r.bytes_by_provider.len(), 1);
    assert!(second.has(&want).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_provider_share_goes_to_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let file = random_file(tmp.path(), 2 << 20);
    let (want, size) = hash_file(&file).unwrap();
    let good = SwarmNode::spawn(&tmp.path().join("good"), local())
        .await
        .unwrap();
    good.import(&file).await.unwrap();
    let dead = SwarmNode::spawn(&tmp.path().join("dead"), local())
        .await
        .unwrap();
    dead.import(&file).await.unwrap();
    let dead_addr = dead.addr();
    dead.shutdown().await;
    let fetcher = SwarmNode::spawn(&tmp.path().join("f"), local())
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let report = fetcher
        .fetch(&want, size, &[dead_addr.clone(), good.addr()])
        .await
        .unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "dead provider skipped quickly: {:?}",
        t.elapsed()
    );
    assert!(
        report.failed_providers.contains_key(&dead_addr.to_string()),
        "{report:?}"
    );
    assert_eq!(report.bytes_by_provider.len(), 1);
    assert!(fetcher.has(&want).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_has_it_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = SwarmNode::spawn(&tmp.path().join("e"), local())
        .await
        .unwrap();
    let fetcher = SwarmNode::spawn(&tmp.path().join("f"), local())
        .await
        .unwrap();
    let missing = archy_catalog::ContentHash::of(b"nobody has this");
    let e = fetcher
        .fetch(&missing, 15, &[empty.addr()])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("could not fetch"), "{e}");
    assert!("nonsense".parse::<PeerAddr>().is_err());
    let a = empty.addr();
    assert_eq!(a.to_string().parse::<PeerAddr>().unwrap(), a);
}
