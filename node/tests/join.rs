//! `archy node run --join TICKET` with real processes: the ticket `archy origin serve`
//! writes is all a new node needs (origin, DHT, trust anchor), and a ticket whose root
//! pin the origin cannot match is refused before anything is trusted.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use archy_node::client::ApiClient;

mod common;

fn s(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn a_node_joins_with_only_the_ticket_and_refuses_a_ticket_it_cannot_match() {
    if !common::can_run(common::needs_podman().or(common::needs_busybox())) {
        return;
    }
    let _watchdog = archy_harness::watchdog(Duration::from_secs(180));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let apps = common::busybox_apps(w, "joined");
    std::fs::write(
        apps.join("hello.yaml"),
        common::HelloApp::new("1.0.0", common::free_port()).yaml(),
    )
    .unwrap();
    let publish = common::publish_signed(&apps, &w.join("publish"));
    let _origin = common::start(
        &[
            "origin",
            "serve",
            "--publish",
            &s(&publish),
            "--data",
            &s(&w.join("origin")),
            "--dht-listen",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
        ]
        .map(String::from),
        "origin ",
    );
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("origin/origin.json")).unwrap()).unwrap();
    let ticket = info["ticket"].as_str().unwrap().to_string();
    assert!(ticket.starts_with("archy-join1:"), "{ticket}");
    let parsed: archy_registry::ticket::JoinTicket = ticket.parse().unwrap();
    assert_eq!(
        parsed.relays.len(),
        1,
        "the origin's relay is in the ticket"
    );
    assert_eq!(
        info["relay"]["url"],
        parsed.relays[0].url.as_str(),
        "{info}"
    );

    // A ticket pinning another root: refused, and nothing is trusted.
    let mut forged: archy_registry::ticket::JoinTicket = ticket.parse().unwrap();
    forged.root = archy_catalog::ContentHash::of(b"another root");
    let bad = w.join("bad-node");
    let refused = common::archy_cmd(["node", "run", "--data"])
        .arg(&bad)
        .args([
            "--api",
            "127.0.0.1:0",
            "--name",
            "bad",
            "--join",
            &forged.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("refusing to trust"), "{said}");
    assert!(!bad.join("root.json").exists());
    assert!(
        !bad.join("join.ticket").exists(),
        "a failed ticket is not kept"
    );

    // The real ticket: the node gets its root, its origin and the DHT from it alone.
    let data = w.join("node");
    let node = common::start_node_cmd(
        common::archy_cmd(["node", "run", "--data"])
            .arg(&data)
            .args([
                "--api",
                "127.0.0.1:0",
                "--name",
                "joined",
                "--join",
                &ticket,
            ]),
    );
    assert_eq!(
        std::fs::read(data.join("root.json")).unwrap(),
        std::fs::read(publish.join("root.json")).unwrap(),
        "the pinned root is the trust anchor"
    );
    let api = ApiClient::from_data_dir(&data).unwrap();
    let status = archy_harness::poll_until(
        "the catalog from the origin",
        Duration::from_secs(60),
        || {
            let v = api.get_json("/v1/status").ok()?;
            (v["catalog"]["version"] == 1).then_some(v)
        },
    )
    .unwrap();
    assert_eq!(status["swarm"]["origin"], info["addr"], "{status}");
    assert_eq!(
        status["swarm"]["dht"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    // The ticket's relay is the node's home relay, and it says how it reaches the
    // origin.
    let origin_id = info["addr"]
        .as_str()
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let status = archy_harness::poll_until(
        "the home relay and a path to the origin",
        Duration::from_secs(30),
        || {
            let v = api.get_json("/v1/status").ok()?;
            let home = v["swarm"]["home_relay"].as_str()?.to_string();
            let to_origin = v["swarm"]["paths"]
                .as_array()?
                .iter()
                .any(|p| p["id"] == origin_id.as_str());
            (to_origin && v["swarm"]["relays"][0] == home.as_str()).then_some(v)
        },
    )
    .unwrap();
    let home = status["swarm"]["home_relay"].as_str().unwrap();
    assert!(
        home.trim_end_matches('/') == parsed.relays[0].url,
        "{home} is the relay the ticket names"
    );
    let text = common::archy_cmd(["node", "status", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("(home: peers behind NAT"), "{text}");
    assert!(text.contains(&format!("path     {origin_id} ")), "{text}");

    // Restarted without the ticket: the saved one is used.
    drop(node);
    let _again = common::start_node_cmd(
        common::archy_cmd(["node", "run", "--data"])
            .arg(&data)
            .args(["--api", "127.0.0.1:0", "--name", "joined"]),
    );
    let api = ApiClient::from_data_dir(&data).unwrap();
    let v = archy_harness::poll_until("the node to answer", Duration::from_secs(30), || {
        api.get_json("/v1/status").ok()
    })
    .unwrap();
    assert_eq!(v["swarm"]["origin"], info["addr"], "{v}");
}
