//! Daemons behind NAT install an app with bytes from their peers (issue 16's "done
//! when"): an origin with its relay on a public network (198.18.0.0/24, the
//! benchmarking range: not a private address, as on the internet), two home networks
//! behind NAT routers (home 1 endpoint-independent, home 2 symmetric), two home servers
//! in each. Every node starts with nothing but `archy node run --join TICKET` (the
//! ticket `archy origin serve` wrote), on the process runtime. The first node of each
//! home installs the app (its image from outside the home); then the second node of
//! each home installs it and must have taken every image byte from peers, over a direct
//! LAN path, with the app healthy on every node.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use archy_node::client::ApiClient;
use serde_json::Value;

mod common;

use common::netns::Lab;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `/v1/status` of the daemon with data dir `data` (over its Unix socket, which works
/// across network namespaces).
fn status(data: &Path) -> Value {
    ApiClient::from_data_dir(data)
        .unwrap()
        .get_json("/v1/status")
        .unwrap()
}

#[test]
fn home_servers_behind_both_nat_kinds_join_with_a_ticket_and_install_from_peers() {
    if !common::can_run(common::netns::needs_netns().or(common::needs_process_apps())) {
        return;
    }
    let _watchdog = archy_harness::watchdog(Duration::from_secs(300));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let apps = common::busybox_apps(w, "behind NAT");
    let port = common::free_port();
    std::fs::write(
        apps.join("hello.yaml"),
        common::HelloApp::new("1.0.0", port).yaml(),
    )
    .unwrap();
    let publish = common::publish_signed(&apps, &w.join("publish"));

    // The networks.
    let mut lab = Lab::new("an");
    let public = lab.host("pub");
    lab.bridge(&public, "br0");
    let origin_ns = lab.host("o");
    lab.plug(&origin_ns, "eth0", "198.18.0.1/24", &public, "br0");
    let homes: Vec<Vec<String>> = [(1, false), (2, true)]
        .into_iter()
        .map(|(h, symmetric)| {
            lab.home(&public, h, symmetric, 2)
                .into_iter()
                .map(|(ns, _)| ns)
                .collect()
        })
        .collect();

    // The origin and its relay, on the public network.
    let origin_data = w.join("origin");
    let _origin = lab
        .archy(
            &origin_ns,
            &[
                "origin",
                "serve",
                "--publish",
                s(&publish),
                "--data",
                s(&origin_data),
                // Every address, as an operator would: the ticket must name the
                // public one, not 0.0.0.0 or loopback.
                "--listen",
                "0.0.0.0:4433",
                "--dht-listen",
                "0.0.0.0:4500",
                "--relay-listen",
                "198.18.0.1:4434",
            ],
        )
        .background("origin", "origin ", Duration::from_secs(30))
        .unwrap();
    let info: Value =
        serde_json::from_slice(&std::fs::read(origin_data.join("origin.json")).unwrap()).unwrap();
    let ticket = info["ticket"].as_str().unwrap().to_string();
    let parsed: archy_registry::ticket::JoinTicket = ticket.parse().unwrap();
    assert_eq!(
        parsed.origin.socket.to_string(),
        "198.18.0.1:4433",
        "{info}"
    );
    assert_eq!(parsed.dht.len(), 1, "{info}");
    assert!(
        parsed.dht[0]
            .to_string()
            .starts_with("/ip4/198.18.0.1/tcp/4500/p2p/"),
        "{info}"
    );

    // Two home servers in each home, each given only the ticket.
    let data_of = |h: usize, i: usize| w.join(format!("node-{h}-{i}"));
    let all: Vec<PathBuf> = (1..=2)
        .flat_map(|h| (1..=2).map(move |i| (h, i)))
        .map(|(h, i)| data_of(h, i))
        .collect();
    let _apps_left = common::ProcessCleanup(all.clone());
    let mut daemons = Vec::new();
    for (h, hosts) in homes.iter().enumerate() {
        for (i, ns) in hosts.iter().enumerate() {
            let data = data_of(h + 1, i + 1);
            let log = data.with_extension("log");
            let name = format!("an{}n{}{}", std::process::id() % 100_000, h + 1, i + 1);
            daemons.push(
                lab.archy(
                    ns,
                    &[
                        "node",
                        "run",
                        "--data",
                        s(&data),
                        "--api",
                        "127.0.0.1:0",
                        "--name",
                        &name,
                        "--runtime",
                        "process",
                        "--join",
                        &ticket,
                    ],
                )
                .stderr_to_file(&log)
                .background("archy", "archy node", Duration::from_secs(30))
                .unwrap_or_else(|e| {
                    let said = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("{e}\n{said}")
                }),
            );
        }
    }
    // Each has the catalog, and the origin's relay as its home relay.
    let relay = info["relay"]["url"].as_str().unwrap().trim_end_matches('/');
    for data in &all {
        archy_harness::poll_until(
            "every node's catalog and home relay",
            Duration::from_secs(60),
            || {
                let v = status(data);
                let home = v["swarm"]["home_relay"].as_str().unwrap_or_default();
                (v["catalog"]["version"] == 1 && home.trim_end_matches('/') == relay).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {}", status(data)));
    }

    let install = |data: &Path| {
        let out = common::archy_data(data, &["app", "install", "org.example.hello", "--json"]);
        let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "install on {}: {}\n{}\n{log}",
            data.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let fetched = status(data)["swarm"]["fetched_bytes"].clone();
        eprintln!("{}: fetched {fetched}", data.display());
        let app = common::archy_data(data, &["app", "status", "org.example.hello", "--json"]);
        let app: Value = serde_json::from_slice(&app.stdout).unwrap();
        assert_eq!(app["phase"], "running", "{app}");
        fetched
    };
    // A path (direct or relayed) from `data`'s node to a peer whose address starts
    // with `via`, once it has one.
    let path_to = |data: &Path, via: &str, kind: &str| {
        archy_harness::poll_until(
            &format!("a {kind} path to {via}"),
            Duration::from_secs(15),
            || {
                let v = status(data);
                v["swarm"]["paths"]
                    .as_array()?
                    .iter()
                    .find(|p| {
                        p["kind"] == kind && p["via"].as_str().is_some_and(|v| v.starts_with(via))
                    })
                    .cloned()
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {}", status(data)["swarm"]))
    };
    // The first server of each home: its image from outside the home, over a direct
    // path to the origin (out through the NAT; nothing opened at home).
    let first: Vec<Value> = [data_of(1, 1), data_of(2, 1)]
        .iter()
        .map(|d| {
            let fetched = install(d);
            path_to(d, "198.18.0.1:", "direct");
            fetched
        })
        .collect();
    // The second: at least part of it from a peer (its LAN neighbour holds it).
    for (h, data) in [(1, data_of(1, 2)), (2, data_of(2, 2))] {
        let fetched = install(&data);
        let from_peers = fetched["peer"].as_u64().unwrap();
        assert!(
            from_peers > 0 && fetched["origin"] == 0,
            "home {h} (the {} NAT): its second server took bytes from the origin, not \
             all from peers: {fetched} (first servers: {first:?}); {}",
            if h == 1 {
                "endpoint-independent"
            } else {
                "symmetric"
            },
            status(&data)["swarm"]
        );
        // From its neighbour, straight over the LAN.
        path_to(&data, &format!("192.168.{h}."), "direct");
        // Bound to every address, it says where peers dial it: its LAN address.
        let swarm = status(&data)["swarm"].clone();
        assert!(
            swarm["addr"]
                .as_str()
                .is_some_and(|a| a.contains("@0.0.0.0:"))
                && swarm["direct_addrs"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|a| a
                        .as_str()
                        .is_some_and(|a| a.starts_with(&format!("192.168.{h}."))))),
            "{swarm}"
        );
    }
    drop(daemons);
}
