//! A third-party developer's app, from `archy app publish` to an operator's node, with
//! real processes: an `archy relay run` relay, the developer's `archy node run` (which
//! seeds the image), and an operator's node that finds it through the DHT.
//!
//! - Publishing with nothing to serve the image is refused, and nothing is sent.
//! - An app whose image nobody serves waits (pending) with an error that says what is
//!   missing and who can fix it, and installs by itself once the developer's node seeds
//!   the image: the bytes come from that peer.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use archy_node::client::ApiClient;
use common::{archy, archy_cmd, HelloApp};
use serde_json::Value;

mod common;

/// An endpoint id that no node has.
const UNSERVED: &str = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

fn publish(manifest: &Path, key: &Path, relay: &str, source: &[&str]) -> std::process::Output {
    let mut args = vec![
        "app",
        "publish",
        manifest.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--relay",
        relay,
        "--timeout",
        "5",
        "--json",
    ];
    args.extend(source);
    archy(&args)
}

fn app(data: &Path) -> Value {
    ApiClient::from_data_dir(data)
        .unwrap()
        .get_json("/v1/apps/org.example.hello")
        .unwrap_or_default()
}

#[test]
fn an_unserved_app_waits_and_installs_once_the_developer_node_seeds_it() {
    if !common::can_run(common::needs_process_apps()) {
        return;
    }
    let _watchdog = archy_harness::watchdog(Duration::from_secs(300));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let _cleanup = common::ProcessCleanup(vec![w.join("dev-node"), w.join("op-node")]);
    let relay = common::start(
        &["relay", "run", "--listen", "127.0.0.1:0"].map(String::from),
        "relay listening on ws://127.0.0.1:",
    );
    let relay_url = relay.ready.split_whitespace().nth(3).unwrap().to_string();

    // The developer's project: a busybox web app and a key.
    let project = w.join("project");
    std::fs::create_dir_all(&project).unwrap();
    common::busybox_image(&project, "from the developer");
    let port = common::free_port();
    let manifest = project.join("hello.yaml");
    std::fs::write(&manifest, HelloApp::new("1.0.0", port).yaml()).unwrap();
    let key = project.join("dev.nsec");
    common::assert_ok(
        &archy(&["key", "new", "--out", key.to_str().unwrap()]),
        "key new",
    );

    // Nothing to serve the image: refused before anything is sent.
    let refused = publish(&manifest, &key, &relay_url, &[]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("nothing would serve") && err.contains("--data DIR"),
        "{err}"
    );

    // Two nodes on one DHT: the developer's and an operator's.
    let dev_data = w.join("dev-node");
    let _dev = common::start_node_cmd(
        common::node_cmd(&dev_data, "dev", "process", None).args(["--dht-listen", "127.0.0.1:0"]),
    );
    let dht = archy_harness::poll_until(
        "the developer node's DHT address",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(dev_data.join("dht.addr"))
                .ok()?
                .lines()
                .next()
                .map(str::to_string)
        },
    )
    .unwrap();
    let op_data = w.join("op-node");
    let _op = common::start_node_cmd(common::node_cmd(&op_data, "op", "process", None).args([
        "--dht-listen",
        "127.0.0.1:0",
        "--bootstrap",
        &dht,
    ]));

    // Announced with a provider nobody is: the install waits, and says why.
    let out = publish(&manifest, &key, &relay_url, &["--provider", UNSERVED]);
    common::assert_ok(&out, "publish naming an unserved provider");
    let handle = serde_json::from_slice::<Value>(&out.stdout).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_string();
    let install = archy_cmd(["app", "install", &handle, "--data"])
        .arg(&op_data)
        .args(["--relay", &relay_url, "--allow-unverified", "--yes"])
        .output()
        .unwrap();
    assert!(!install.status.success(), "nobody serves the image yet");
    let said = String::from_utf8_lossy(&install.stderr);
    assert!(said.contains("no provider serves"), "{said}");
    let waiting = app(&op_data);
    assert_eq!(waiting["phase"], "pending", "{waiting}");
    let why = waiting["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("the announcement lists 1, none of which can be reached")
            && why.contains("ask the developer")
            && why.contains(&handle),
        "{why}"
    );

    // The developer publishes again with their node: it seeds the image, and the
    // operator's node installs it on its next try, with the bytes from that peer.
    let out = publish(
        &manifest,
        &key,
        &relay_url,
        &["--data", dev_data.to_str().unwrap()],
    );
    common::assert_ok(&out, "publish --data");
    let published: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dev_id = ApiClient::from_data_dir(&dev_data)
        .unwrap()
        .get_json("/v1/status")
        .unwrap()["swarm"]["addr"]
        .as_str()
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(published["providers"][0], dev_id.as_str(), "{published}");
    archy_harness::poll_until(
        "the app running on the operator's node",
        Duration::from_secs(120),
        || (app(&op_data)["phase"] == "running").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", app(&op_data)));
    assert!(common::http_ok([127, 0, 0, 1], port), "the app answers");
    let status = ApiClient::from_data_dir(&op_data)
        .unwrap()
        .get_json("/v1/status")
        .unwrap();
    assert!(
        status["swarm"]["fetched_bytes"]["peer"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the image came from the developer's node: {status}"
    );
}
