//! A hostile peer floods a DHT node with records: forged address records, records under
//! keys that are not Archy's, and more provider records than one peer may have stored.
//! The node stores none of the forged ones, caps the provider records, and counts every
//! refusal (`Dht::stats`). Listed in docs/security.md.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use archy_catalog::ContentHash;
use archy_dht::{Dht, DhtConfig, InboundLimits, KAD_PROTOCOL};
use futures_util::StreamExt;
use libp2p::{
    kad::{Quorum, Record, RecordKey},
    PeerId,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_gets_no_forged_record_stored_and_its_providers_capped() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let mut cfg = DhtConfig::new([9; 32], "127.0.0.1:0".parse().unwrap());
    cfg.inbound = InboundLimits {
        providers_per_peer: 50,
        providers: 10_000,
    };
    let victim = Dht::start(cfg).await.unwrap();
    let before = victim.stats().await.unwrap();

    let mut evil = archy_harness::hostile::kad_peer(KAD_PROTOCOL).unwrap();
    evil.behaviour_mut()
        .kad
        .add_address(&victim.peer_id(), victim.listen_addrs()[0].clone());
    // 200 records: junk under Archy's address key of random peers, and junk keys.
    for i in 0..200u32 {
        let key = match i % 2 {
            0 => {
                let mut k = b"/archy/iroh-addr/".to_vec();
                k.extend(PeerId::random().to_bytes());
                k
            }
            _ => format!("/evil/{i}").into_bytes(),
        };
        evil.behaviour_mut().kad.put_record_to(
            Record::new(RecordKey::new(&key), vec![7u8; 1000]),
            std::iter::once(victim.peer_id()),
            Quorum::One,
        );
    }
    // 120 provider records for Archy blob keys: 70 over the per-peer cap.
    for i in 0..120u32 {
        let mut key = b"/archy/blob/".to_vec();
        key.extend(ContentHash::of(&i.to_le_bytes()).as_bytes());
        evil.behaviour_mut()
            .kad
            .start_providing(RecordKey::new(&key))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = before;
    while Instant::now() < deadline && after.refused < 270 {
        tokio::select! {
            _ = evil.select_next_some() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                after = victim.stats().await.unwrap();
            }
        }
    }
    let after = victim.stats().await.unwrap();
    assert_eq!(
        after.records, before.records,
        "no forged record stored: {after:?}"
    );
    assert!(
        after.refused >= 270,
        "200 forged records and 70 providers over the cap refused: {after:?}"
    );
}
