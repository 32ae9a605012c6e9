//! LAN discovery with no configuration (issue 16, item 2): two hosts on one link (two
//! network namespaces joined by a veth pair, made by the test), no bootstrap address, no
//! origin, no peer named. `archy seed --dht` holds a blob on one; `archy fetch --dht`
//! on the other finds it through mDNS and the DHT the two form, and fetches it, every
//! byte verified. Needs root and `ip`.
#![allow(clippy::unwrap_used)]

use std::{path::Path, process::Command, time::Duration};

use archy_catalog::oci::hash_file;
use serde_json::Value;

mod common;

/// Two namespaces and the veth pair between them, removed on drop.
struct Link {
    ns: [String; 2],
}

impl Link {
    fn new(tag: &str, ips: [&str; 2]) -> Self {
        let ns = [format!("{tag}a"), format!("{tag}b")];
        let veth = [format!("{tag}va"), format!("{tag}vb")];
        let link = Self { ns: ns.clone() };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for n in &ns {
            ip(&["netns", "add", n]);
        }
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ]);
        for i in 0..2 {
            ip(&["link", "set", &veth[i], "netns", &ns[i]]);
            ip(&[
                "-n",
                &ns[i],
                "addr",
                "add",
                &format!("{}/24", ips[i]),
                "dev",
                &veth[i],
            ]);
            ip(&["-n", &ns[i], "link", "set", &veth[i], "up"]);
            ip(&["-n", &ns[i], "link", "set", "lo", "up"]);
        }
        link
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn in_ns(ns: &str, args: &[&str]) -> archy_harness::Cmd {
    archy_harness::Cmd::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_archy")])
        .args(args)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn nodes_on_one_lan_find_each_other_with_no_configuration() {
    let has_ip = Command::new("ip").arg("-V").output().is_ok();
    if !common::can_run(common::needs_root().or((!has_ip).then(|| "needs `ip` (iproute2)".into())))
    {
        return;
    }
    let tag = format!("al{}", std::process::id() % 100_000);
    let link = Link::new(&tag, ["10.203.7.1", "10.203.7.2"]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("blob.bin");
    std::fs::write(&file, common::noise(2 << 20)).unwrap();
    let (want, size) = hash_file(&file).unwrap();

    let seeder = in_ns(
        &link.ns[0],
        &[
            "seed",
            "--data",
            path(&tmp.path().join("a")),
            "--import",
            path(&file),
            "--listen",
            "10.203.7.1:0",
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
    let fetched = in_ns(
        &link.ns[1],
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
