//! bench/nat.sh as a test (issue 16, item 5): two home networks behind NAT routers (one
//! endpoint-independent, one symmetric), two nodes in each, an origin with its relay on
//! the "public" network; a small blob. Every node must verify it, and the nodes must
//! serve each other (on their LAN, or across the NATs through the relay or a punched
//! hole), not all take it from the origin.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

#[test]
fn nodes_behind_both_nat_kinds_verify_and_serve_each_other() {
    if !common::can_run(common::netns::needs_netns_and(&[
        ("tc", "-V"),
        ("jq", "--version"),
    ])) {
        return;
    }
    let _watchdog = archy_harness::watchdog(Duration::from_secs(240));
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/nat.sh"))
        .args([
            "--json",
            "--nodes",
            "2",
            "--size-kib",
            "8192",
            "--uplink-mbit",
            "10",
        ])
        .args(["--timeout", "120"])
        .env("ARCHY", env!("CARGO_BIN_EXE_archy"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench/nat.sh printed no report ({e}):\n{said}"));
    assert!(out.status.success(), "{report}\n{said}");
    assert_eq!(report["all_verified"], true, "{report}");
    let size = report["size"].as_u64().unwrap();
    for node in report["nodes"].as_array().unwrap() {
        let got: u64 = [
            "from_origin",
            "from_lan",
            "from_remote_direct",
            "from_remote_relayed",
        ]
        .iter()
        .map(|k| node[k].as_u64().unwrap())
        .sum();
        assert!(got >= size, "every byte has a source: {node}");
    }
    let from_peers = ["from_lan", "from_remote_direct", "from_remote_relayed"]
        .iter()
        .map(|k| report[k].as_u64().unwrap())
        .sum::<u64>();
    assert!(
        from_peers > 0,
        "nodes behind NAT served each other: {report}"
    );
    let from_origin: u64 = report["from_origin_by_home"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .sum();
    assert!(
        from_origin < 4 * size,
        "the origin sent less than one copy per node: {report}"
    );
}
