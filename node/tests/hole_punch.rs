//! Across homes (issue 16, item 1): a node fetches a blob that only a node in another
//! home holds, both behind NAT, finding it only through the DHT and dialling it through
//! the origin's relay. Every byte comes from that peer and is verified, whether the
//! fetching home's NAT is endpoint-independent (plain MASQUERADE, most home routers) or
//! symmetric (`--random-fully`: no hole can be punched, the relay carries the bytes).
//!
//! Before the DHT kept provider records of nodes behind NAT (they come with no address:
//! now they get `/p2p/<id>`), the origin's DHT node left them out of every answer (it
//! knew no address for them), and a node in another home never found the holder.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use serde_json::Value;

mod common;

use common::netns::Lab;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `archy fetch --json` of `hash` in `ns` (at `ip`), finding holders only through the
/// DHT at `dht`, with the relay the origin wrote to `relay`: its summary, and what it
/// said on stderr.
fn fetch_across(
    lab: &Lab,
    ns: &str,
    ip: &str,
    data: &Path,
    hash: &str,
    size: u64,
    dht: &str,
    relay: &Path,
) -> (Value, String) {
    let listen = format!("{ip}:0");
    let out = lab
        .archy(
            ns,
            &[
                "fetch",
                hash,
                "--size",
                &size.to_string(),
                "--data",
                s(data),
                "--listen",
                &listen,
                "--dht-listen",
                &listen,
                "--bootstrap",
                dht,
                "--iroh-relay",
                s(relay),
                "--json",
            ],
        )
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no summary from the fetch in {ns} ({e}): {said}"));
    (summary, said)
}

#[test]
fn a_holder_in_another_home_is_found_in_the_dht_and_reached_through_the_relay() {
    if !common::can_run(common::netns::needs_netns()) {
        return;
    }
    let _watchdog = archy_harness::watchdog(Duration::from_secs(240));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // The public network with the origin host; three homes: 1 and 2 behind
    // endpoint-independent NATs, 3 behind a symmetric one.
    let mut lab = Lab::new("hp");
    let public = lab.host("pub");
    lab.bridge(&public, "br0");
    let origin_ns = lab.host("o");
    lab.plug(&origin_ns, "eth0", "198.18.0.1/24", &public, "br0");
    let hosts: Vec<(String, String)> = [(1, false), (2, false), (3, true)]
        .into_iter()
        .flat_map(|(h, symmetric)| lab.home(&public, h, symmetric, 1))
        .collect();

    // The origin: a DHT node and the relay; it does not hold the blob.
    std::fs::write(w.join("other"), b"not the blob").unwrap();
    let origin_data = w.join("origin");
    let origin = lab
        .archy(
            &origin_ns,
            &[
                "seed",
                "--data",
                s(&origin_data),
                "--import",
                s(&w.join("other")),
                "--listen",
                "198.18.0.1:4433",
                "--dht",
                "--dht-listen",
                "198.18.0.1:4500",
                "--relay-listen",
                "198.18.0.1:4434",
                "--json",
            ],
        )
        .background("origin", "{", Duration::from_secs(30))
        .unwrap();
    let ready: Value = serde_json::from_str(&origin.ready).unwrap();
    let dht = ready["dht"][0].as_str().unwrap().to_string();
    let relay = origin_data.join("relay.json");

    // Home 1 holds the blob (16 MiB) and announces it in the DHT.
    let blob = w.join("blob");
    let size: u64 = 16 << 20;
    let bytes: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&blob, bytes).unwrap();
    let (h1, ip1) = &hosts[0];
    let listen1 = format!("{ip1}:0");
    let holder = lab
        .archy(
            h1,
            &[
                "seed",
                "--data",
                s(&w.join("h1")),
                "--import",
                s(&blob),
                "--listen",
                &listen1,
                "--bootstrap",
                &dht,
                "--dht-listen",
                &listen1,
                "--iroh-relay",
                s(&relay),
                "--json",
            ],
        )
        .background("holder", "{", Duration::from_secs(30))
        .unwrap();
    let held: Value = serde_json::from_str(&holder.ready).unwrap();
    let hash = held["blobs"][0].as_str().unwrap().to_string();
    let holder_id = held["addr"]
        .as_str()
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();

    // Home 2, then home 3, fetch it from home 1 (the only holder).
    for k in [1, 2] {
        let (ns, ip) = &hosts[k];
        let (got, said) = fetch_across(
            &lab,
            ns,
            ip,
            &w.join(format!("h{}", k + 1)),
            &hash,
            size,
            &dht,
            &relay,
        );
        assert_eq!(got["verified"], true, "home {}: {got}\n{said}", k + 1);
        let from: u64 = got["bytes_by_provider"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with(&holder_id))
            .map(|(_, b)| b.as_u64().unwrap())
            .sum();
        assert!(
            from >= size,
            "home {} took every byte from the holder in home 1: {got}",
            k + 1
        );
        // Through the relay, or (from home 2) over a hole iroh punched: the two routers'
        // public addresses. Never the homes' private ones.
        let path = got["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"].as_str() == Some(holder_id.as_str()))
            .cloned()
            .unwrap_or_else(|| panic!("home {}: no path to the holder: {got}", k + 1));
        let via = path["via"].as_str().unwrap_or_default();
        match path["kind"].as_str() {
            Some("relayed") => assert_eq!(via, "https://198.18.0.1:4434/", "{path}"),
            Some("direct") if k == 1 => assert!(via.starts_with("198.18.0.11:"), "{path}"),
            _ => panic!(
                "home {} ({} NAT) to home 1: {path}\n{said}",
                k + 1,
                if k == 1 {
                    "endpoint-independent"
                } else {
                    "symmetric"
                }
            ),
        }
    }
    drop(holder);
    drop(origin);
}
