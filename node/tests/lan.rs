//! LAN discovery with no configuration (issue 16, item 2): two hosts on one switch
//! (network namespaces and a bridge the test makes), no bootstrap address, no
//! origin, no peer named. `archy seed --dht` holds a blob on one; `archy fetch --dht`
//! on the other finds it through mDNS and the DHT the two form, and fetches it, every
//! byte verified. The seeder listens on every address (0.0.0.0), so the fetcher must
//! have its interface address from the DHT. Needs root, `ip` and `iptables`.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use archy_catalog::oci::hash_file;
use serde_json::Value;

mod common;

use common::netns::Lab;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn nodes_on_one_lan_find_each_other_with_no_configuration() {
    if !common::can_run(common::netns::needs_netns()) {
        return;
    }
    // Two hosts on one switch.
    let mut lab = Lab::new("al");
    let switch = lab.host("sw");
    lab.bridge(&switch, "br0");
    let hosts = ["10.203.7.1", "10.203.7.2"].map(|ip| {
        let ns = lab.host(&format!("h{}", &ip[ip.len() - 1..]));
        lab.plug(&ns, "eth0", &format!("{ip}/24"), &switch, "br0");
        ns
    });
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("blob.bin");
    std::fs::write(&file, common::noise(2 << 20)).unwrap();
    let (want, size) = hash_file(&file).unwrap();

    let seeder = lab
        .archy(
            &hosts[0],
            &[
                "seed",
                "--data",
                path(&tmp.path().join("a")),
                "--import",
                path(&file),
                // Every address, as a home server listens: its address record must
                // name the addresses it is found on, not 0.0.0.0.
                "--listen",
                "0.0.0.0:0",
                "--dht",
                "--dht-listen",
                "10.203.7.1:0",
                "--json",
            ],
        )
        .background("seeder", "{", Duration::from_secs(30))
        .unwrap();
    let seeded: Value = serde_json::from_str(&seeder.ready).unwrap();
    let seeder_id = seeded["addr"]
        .as_str()
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();

    let out = tmp.path().join("out.bin");
    let size_arg = size.to_string();
    let fetched = lab
        .archy(
            &hosts[1],
            &[
                "fetch",
                &want.to_string(),
                "--data",
                path(&tmp.path().join("b")),
                "--listen",
                "10.203.7.2:0",
                "--dht",
                "--dht-listen",
                "10.203.7.2:0",
                "--size",
                &size_arg,
                "--out",
                path(&out),
                "--json",
            ],
        )
        .env("RUST_LOG", "archy_dht=info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&fetched.stdout);
    assert!(
        fetched.status.success(),
        "fetch with no address given: {stdout}\n{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(hash_file(&out).unwrap(), (want, size), "the copy verifies");
    let from_seeder: u64 = v["bytes_by_provider"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with(&seeder_id))
                .filter_map(|(_, b)| b.as_u64())
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(from_seeder, size, "every byte came from the LAN peer: {v}");
    let said = String::from_utf8_lossy(&fetched.stderr);
    assert!(
        said.contains("found a DHT node on the LAN"),
        "found through mDNS: {said}"
    );
    drop(seeder);
}
