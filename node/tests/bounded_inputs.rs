//! Inputs sized by strangers against a running daemon (issue 14): each test sends what a
//! hostile publisher or peer would and asserts that the daemon refuses it with a clear
//! reason, stays up, and stays small. Listed in docs/security.md.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::{fs, path::Path, time::Duration};

use archy_catalog::{manifest, ContentHash};
use archy_node::client::ApiClient;
use serde_json::json;

fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// A node daemon on the process runtime; with `publish`, that dir is its origin.
fn daemon(data: &Path, name: &str, publish: Option<&Path>) -> common::Proc {
    common::start_node(data, name, "process", publish)
}

/// A marketplace app whose announcement claims an image of 2^62 bytes: before, the fetch
/// planned a piece per MiB of that and the daemon grew until the machine ran out of
/// memory, then crash-looped on the saved request.
#[test]
fn an_inflated_image_size_is_refused_and_the_daemon_stays_small() {
    if !common::can_run(common::needs_root().or(common::needs_process_runtime())) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("node");
    let node = daemon(&data, "inflate", None);
    let hash = ContentHash::of(b"an image nobody has");
    let text = format!(
        "app:\n  id: org.evil.big\n  name: Big\n  version: 1.0.0\n  description: {{short: b}}\n  container:\n    image: {hash}\n    cmd: [/bin/true]\n"
    );
    let m = manifest::parse_and_validate(&text, manifest::ManifestFormat::Yaml).unwrap();
    let claimed = 1u64 << 62;
    let body = json!({"market": {
        "handle": "npub1evil/org.evil.big",
        "manifest": m,
        "image": {"hash": hash, "size": claimed, "config_digest": format!("sha256:{}", "ab".repeat(32)), "format": "oci-archive"},
    }});
    let api = ApiClient::from_data_dir(&data).unwrap();
    let e = api
        .post("/v1/apps/org.evil.big/install", body)
        .expect_err("an image over the budget")
        .to_string();
    assert!(
        e.contains(&claimed.to_string()) && e.contains("max_image_bytes"),
        "the refusal names the claim and the budget: {e}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let pid = node.child.id();
    assert_eq!(
        archy_node::runtime::pid_alive(pid),
        Some(true),
        "the daemon is still up"
    );
    let rss = rss_bytes(pid);
    assert!(rss < 256 << 20, "the daemon uses {rss} bytes");
    let status = api.get_json("/v1/status").unwrap();
    assert!(
        status["apps"].get("org.evil.big").is_none(),
        "nothing was saved: {status}"
    );
    assert!(
        common::metrics(&data).contains("archy_refused_inputs_total 1"),
        "counted"
    );
}

/// A node cut off from its origin keeps its last catalog, but only until that catalog's
/// timestamp expires: then an update from it is refused with the reason, while the app
/// already running keeps running (a freeze attack would otherwise keep the node
/// installing revoked releases forever).
#[test]
fn an_expired_catalog_is_not_installed_from_while_the_origin_is_away() {
    if !common::can_run(
        common::needs_root()
            .or(common::needs_busybox())
            .or(common::needs_process_runtime()),
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let apps = d.path().join("apps");
    fs::create_dir_all(&apps).unwrap();
    common::busybox_image(&apps, "freeze test");
    for v in ["1.0.0", "1.0.1"] {
        fs::write(
            apps.join(format!("hello-{v}.yaml")),
            format!("app:\n  id: org.example.hello\n  name: Hello\n  version: {v}\n  description: {{short: hi}}\n  container:\n    image: ./img.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{host: {port}, container: 8080}}]\n  health_check: {{type: http, port: 8080, path: /, interval: 1s, timeout: 1s, retries: 4}}\n"),
        )
        .unwrap();
    }
    let expires = chrono::Utc::now() + chrono::Duration::seconds(20);
    let publish = common::publish_signed_until(&apps, d.path(), expires);
    let data = d.path().join("node");
    let _cleanup = common::ProcessCleanup(vec![data.clone()]);
    let _node = daemon(&data, "freeze", Some(&publish));
    common::assert_ok(
        &common::archy_data(
            &data,
            &["app", "install", "org.example.hello", "--version", "1.0.0"],
        ),
        "install 1.0.0",
    );
    assert!(common::http_ok([127, 0, 0, 1], port));
    // The origin goes away; the held catalog's timestamp runs out.
    fs::rename(&publish, d.path().join("gone")).unwrap();
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(left + Duration::from_secs(2));

    let out = common::archy_data(
        &data,
        &["app", "install", "org.example.hello", "--version", "1.0.1"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "an update from an expired catalog: {text}"
    );
    assert!(text.contains("expired at"), "the refusal says why: {text}");
    // What ran keeps running, on its release.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        common::http_ok([127, 0, 0, 1], port),
        "the running app keeps running"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&common::archy_data(&data, &["node", "status", "--json"]).stdout)
            .unwrap();
    assert!(status["catalog"]["expired"].is_string(), "{status}");
    assert!(common::metrics(&data).contains("archy_catalog_expires_timestamp_seconds"));
    let out = common::archy_data(&data, &["app", "status", "org.example.hello", "--json"]);
    let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(app["version"], "1.0.0", "{app}");
    common::assert_ok(
        &common::archy_data(&data, &["app", "uninstall", "org.example.hello"]),
        "uninstall",
    );
}
