//! Inputs sized by strangers against a running daemon (issue 14): each test sends what a
//! hostile publisher or peer would and asserts that the daemon refuses it with a clear
//! reason, stays up, and stays small, and that no app takes another's id and data.
//! Listed in docs/security.md.

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
        "handle": format!("{}/org.evil.big", nostr_sdk::Keys::generate().public_key().to_hex()),
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
        common::metrics(&data).contains("archy_refused_inputs_total{input=\"image_size\"} 1"),
        "counted"
    );
}

/// A node cut off from its origin keeps its last catalog, but only until that catalog's
/// timestamp expires: then an update from it is refused with the reason, while the app
/// already running keeps running (a freeze attack would otherwise keep the node
/// installing revoked releases forever).
#[test]
fn an_expired_catalog_is_not_installed_from_while_the_origin_is_away() {
    if !common::can_run(common::needs_process_apps()) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let apps = common::busybox_apps(d.path(), "freeze test");
    for v in ["1.0.0", "1.0.1"] {
        fs::write(
            apps.join(format!("hello-{v}.yaml")),
            common::HelloApp::new(v, port).yaml(),
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

/// A marketplace developer picks the id of an app the node has installed from the signed
/// catalog. Before, the newcomer replaced the catalog app's record and inherited its
/// volumes and secrets. Now the install is refused, naming both; with `replace` the
/// newcomer runs with fresh data, the catalog app's data stays untouched, and
/// `uninstall --purge` removes both.
#[test]
fn an_app_id_held_by_the_catalog_is_not_taken_with_its_data() {
    if !common::can_run(common::needs_process_apps()) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let apps = common::busybox_apps(d.path(), "identity test");
    let manifest = |version| {
        common::HelloApp {
            with_data: true,
            ..common::HelloApp::new(version, port)
        }
        .yaml()
    };
    fs::write(apps.join("hello.yaml"), manifest("1.0.0")).unwrap();
    let publish = common::publish_signed(&apps, d.path());
    let data = d.path().join("node");
    let _cleanup = common::ProcessCleanup(vec![data.clone()]);
    let _node = daemon(&data, "identity", Some(&publish));
    common::assert_ok(
        &common::archy_data(&data, &["app", "install", "org.example.hello"]),
        "install from the catalog",
    );
    let catalog_dir = data.join("apps/catalog/org.example.hello");
    let catalog_secret = fs::read_to_string(catalog_dir.join("secrets/ADMIN_TOKEN")).unwrap();
    fs::write(
        catalog_dir.join("volumes/data/notes"),
        "the operator's notes",
    )
    .unwrap();

    // The stranger's app: same id, same image (the node already holds it), own version.
    let market = d.path().join("market");
    fs::create_dir_all(&market).unwrap();
    fs::copy(apps.join("img.oci.tar"), market.join("img.oci.tar")).unwrap();
    let (m, _, image) = common::manifest_with_image(&market, &manifest("6.6.6"));
    let developer = nostr_sdk::Keys::generate().public_key();
    let handle = format!("{}/org.example.hello", developer.to_hex());
    let body = |replace: bool| json!({"market": {"handle": handle, "manifest": m, "image": image}, "replace": replace});
    let api = ApiClient::from_data_dir(&data).unwrap();
    let refused = api
        .post("/v1/apps/org.example.hello/install", body(false))
        .expect_err("an id the catalog holds")
        .to_string();
    let npub = archy_discovery::index::npub(&developer);
    assert!(
        refused.contains("the signed catalog")
            && refused.contains(&npub)
            && refused.contains("--replace"),
        "the refusal names both owners and the way out: {refused}"
    );
    let app = |what: &str| -> serde_json::Value {
        let out = common::archy_data(&data, &["app", "status", "org.example.hello", "--json"]);
        common::assert_ok(&out, what);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(app("after the refusal")["desired"]["owner"], "catalog");

    let accepted = api
        .post("/v1/apps/org.example.hello/install", body(true))
        .unwrap();
    assert_eq!(accepted["replaced"]["owner"], "catalog", "{accepted}");
    common::wait_until("the market app runs", Duration::from_secs(60), || {
        let a = app("status");
        a["version"] == "6.6.6" && a["phase"] == "running"
    });
    let market_dir = data.join("apps").join(&npub).join("org.example.hello");
    let market_secret = fs::read_to_string(market_dir.join("secrets/ADMIN_TOKEN")).unwrap();
    assert_ne!(market_secret, catalog_secret, "fresh secrets");
    assert!(
        !market_dir.join("volumes/data/notes").exists(),
        "fresh volumes"
    );
    assert_eq!(
        fs::read_to_string(catalog_dir.join("volumes/data/notes")).unwrap(),
        "the operator's notes",
        "the catalog app's data is kept"
    );
    assert_eq!(
        fs::read_to_string(catalog_dir.join("secrets/ADMIN_TOKEN")).unwrap(),
        catalog_secret
    );
    // Nor does it run as the host ids that own the catalog app's files.
    let blocks: serde_json::Value =
        serde_json::from_slice(&fs::read(data.join("id-ranges.json")).unwrap()).unwrap();
    let (old_block, new_block) = (
        &blocks["org.example.hello"],
        &blocks[format!("{npub}/org.example.hello")],
    );
    assert!(
        old_block.is_u64() && new_block.is_u64() && old_block != new_block,
        "{blocks}"
    );

    // The other way round, through the CLI: the catalog app may not take the id back
    // without --replace.
    let out = common::archy_data(&data, &["app", "install", "org.example.hello"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains(&npub), "{text}");

    common::assert_ok(
        &common::archy_data(&data, &["app", "uninstall", "org.example.hello", "--purge"]),
        "uninstall --purge",
    );
    assert!(
        !market_dir.exists() && !catalog_dir.exists(),
        "purged, both"
    );
}

/// A source whose head never verifies (here a publish dir signed by someone other than
/// the node's trust anchor; a hostile peer's heads go the same way) is asked on every
/// sync. Each refusal is counted, but the source is logged once, not every 30 s.
#[test]
fn a_refused_head_is_counted_every_time_and_logged_once_per_source() {
    if !common::can_run(common::needs_root().or(common::needs_process_runtime())) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let apps = common::busybox_apps(d.path(), "refusal test");
    fs::write(
        apps.join("hello.yaml"),
        common::HelloApp::new("1.0.0", 18_081).yaml(),
    )
    .unwrap();
    let trusted = common::publish_signed(&apps, &d.path().join("trusted"));
    let stranger = common::publish_signed(&apps, &d.path().join("stranger"));
    let data = d.path().join("node");
    let log = d.path().join("node.log");
    let _node = common::start_node_cmd(
        common::node_cmd(&data, "refusals", "process", None)
            .arg("--root")
            .arg(trusted.join("root.json"))
            .arg("--origin-dir")
            .arg(&stranger)
            .stderr_to_file(&log),
    );
    // Every install asks for a fresh head first, so each is one more refusal.
    for _ in 0..3 {
        let out = common::archy_data(&data, &["app", "install", "org.example.hello"]);
        assert!(!out.status.success(), "no catalog to install from");
    }
    let metrics = common::metrics(&data);
    let count: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("archy_refused_inputs_total{input=\"head\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no head refusals counted:\n{metrics}"));
    assert!(count >= 3, "every refusal counted: {count}");
    let text = fs::read_to_string(&log).unwrap();
    let logged = text.lines().filter(|l| l.contains("input refused")).count();
    assert_eq!(logged, 1, "the source is logged once:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("input refused") && l.contains(&stranger.display().to_string())),
        "the log line names the source:\n{text}"
    );
}
