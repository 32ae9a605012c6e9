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

/// An `archy relay run` on 127.0.0.1 (killed on drop) and its URL.
fn start_relay() -> (common::Proc, String) {
    let relay = common::start(
        &["relay", "run", "--listen", "127.0.0.1:0"].map(String::from),
        "relay listening on ws://127.0.0.1:",
    );
    let url = relay.ready.split_whitespace().nth(3).unwrap().to_string();
    (relay, url)
}

/// A developer's project: the busybox web app (`img.oci.tar`, page `page`) on a free
/// host port, its manifest and the developer's key.
struct Project {
    dir: std::path::PathBuf,
    manifest: std::path::PathBuf,
    key: std::path::PathBuf,
    port: u16,
}

impl Project {
    fn new(dir: &Path, page: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        common::busybox_image(dir, page);
        let port = common::free_port();
        let manifest = dir.join("hello.yaml");
        std::fs::write(&manifest, HelloApp::new("1.0.0", port).yaml()).unwrap();
        let key = dir.join("dev.nsec");
        common::assert_ok(
            &archy(&["key", "new", "--out", key.to_str().unwrap()]),
            "key new",
        );
        Self {
            dir: dir.to_path_buf(),
            manifest,
            key,
            port,
        }
    }
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
    let (_relay, relay_url) = start_relay();
    let Project {
        manifest,
        key,
        port,
        ..
    } = Project::new(&w.join("project"), "from the developer");

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
    // The seeding API takes only an absolute path to a regular file with the hash asked
    // for; anything else is refused and nothing enters the store.
    let dev_api = ApiClient::from_data_dir(&dev_data).unwrap();
    let held = |api: &ApiClient| api.get_json("/v1/status").unwrap()["swarm"]["blobs_held"].clone();
    let before = held(&dev_api);
    for (body, why) in [
        (serde_json::json!({"path": "hello.yaml"}), "absolute path"),
        (serde_json::json!({"path": w}), "not a file"),
        (
            serde_json::json!({"path": manifest, "hash": archy_catalog::ContentHash::of(b"an image")}),
            "hashes to",
        ),
    ] {
        let e = dev_api.post("/v1/seeds", body).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    assert_eq!(held(&dev_api), before, "nothing refused was stored");

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

/// The guide's script block (the ```sh block after the `guide-test` marker).
fn guide_script(guide: &str) -> String {
    let after = guide
        .split_once("<!-- guide-test")
        .expect("the guide marks its script")
        .1;
    let block = after.split_once("```sh\n").expect("a sh block").1;
    block
        .split_once("\n```")
        .expect("a closed sh block")
        .0
        .to_string()
}

/// docs/app-developer-guide.md's script, run as written (ports moved to free ones) by
/// bash with the `archy` this build made: a relay, the developer's node, an operator's
/// node; the app ends up running on the operator's node with the image from the
/// developer's. The guide's example manifest validates too.
#[test]
fn the_developer_guide_runs_as_written() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/app-developer-guide.md"
    ))
    .unwrap();
    let example = guide
        .split_once("## The manifest, field by field")
        .unwrap()
        .1
        .split_once("```yaml\n")
        .unwrap()
        .1
        .split_once("\n```")
        .unwrap()
        .0;
    let npub = archy_discovery::index::npub(&nostr_sdk::Keys::generate().public_key());
    archy_catalog::manifest::parse_and_validate(
        &example.replace("npub1...", &npub),
        archy_catalog::manifest::ManifestFormat::Yaml,
    )
    .unwrap_or_else(|e| panic!("the guide's example manifest: {e}"));

    if !common::can_run(common::needs_podman().or(common::needs_busybox())) {
        return;
    }
    let _watchdog = archy_harness::watchdog(Duration::from_secs(400));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut script = guide_script(&guide);
    for (from, to) in [
        ("7447", common::free_port()),
        ("7421", common::free_port()),
        ("7422", common::free_port()),
        ("4002", common::free_port()),
        ("4003", common::free_port()),
    ] {
        script = script.replace(from, &to.to_string());
    }
    let app_port = common::free_port();
    script = script
        .replace("--port 8080", &format!("--port {app_port}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{app_port}"));
    std::fs::write(w.join("guide.sh"), format!("set -euo pipefail\n{script}\n")).unwrap();
    let archy = std::path::PathBuf::from(env!("CARGO_BIN_EXE_archy"));
    let path = format!(
        "{}:{}",
        archy.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = w.join("guide.log");
    let mut bash = std::process::Command::new("bash");
    bash.arg("guide.sh")
        .current_dir(w)
        .env("PATH", path)
        .env_remove("ARCHY_DATA")
        .env_remove("ARCHY_RELAYS")
        .env_remove("ARCHY_ME")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(w.join("guide.err")).unwrap());
    // Its own process group: the relay and the nodes it starts in the background go
    // with it at the end.
    std::os::unix::process::CommandExt::process_group(&mut bash, 0);
    let started = std::time::Instant::now();
    let child = bash.spawn().unwrap();
    let group = child.id();
    let output = child.wait_with_output().unwrap();
    // The issue's measure (docs/benchmarks.md): the flow's wall time, build excluded.
    eprintln!("guide flow: {:.1} s", started.elapsed().as_secs_f64());
    let op = w.join("op-node");
    let answer = |op: &Path| app(op);
    let running = answer(&op);
    let fetched = ApiClient::from_data_dir(&op)
        .and_then(|api| api.get_json("/v1/status"))
        .unwrap_or_default();
    // Uninstall before the nodes go, so no container outlives the test.
    if let Ok(api) = ApiClient::from_data_dir(&op) {
        let _ = api.post(
            "/v1/apps/org.example.hello/uninstall",
            serde_json::json!({"purge": true}),
        );
        let _ = archy_harness::poll_until("the app gone", Duration::from_secs(60), || {
            (answer(&op)["phase"].is_null()).then_some(())
        });
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", "--", &format!("-{group}")])
        .output();
    std::thread::sleep(Duration::from_secs(2));
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .output();
    let said = format!(
        "{}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(w.join("guide.err")).unwrap_or_default()
    );
    assert!(
        output.status.success(),
        "the guide's script failed:\n{said}"
    );
    assert_eq!(running["phase"], "running", "{running}\n{said}");
    assert!(
        said.contains("Hello from hello"),
        "the app answered: {said}"
    );
    assert!(
        fetched["swarm"]["fetched_bytes"]["peer"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the image came from the developer's node: {fetched}"
    );
}

/// What a web seed sends is used only if it is exactly the signed archive: a seed that
/// sends other bytes, too many or too few is reported as lying and leaves nothing.
#[test]
fn a_web_seed_that_lies_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = b"the signed archive bytes".to_vec();
    let image = archy_catalog::ImageRef {
        hash: archy_catalog::ContentHash::of(&archive),
        size: archive.len() as u64,
        config_digest: format!("sha256:{}", "ab".repeat(32)),
        format: archy_catalog::oci::ArchiveFormat::OciArchive,
        web_seeds: Vec::new(),
    };
    let host = archy_harness::web::StaticHost::start();
    host.put("/archive", archive.clone());
    let url = host.url("/archive");
    let out = dir.path().join("seeds");
    let got = archy_node::web_seed::download(&url, &image, &out).unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), archive);
    std::fs::remove_file(got).unwrap();
    for lie in [
        b"the signed archive byteZ".to_vec(),
        [archive.clone(), b"and more".to_vec()].concat(),
        archive[..5].to_vec(),
    ] {
        host.put("/archive", lie);
        let e = archy_node::web_seed::download(&url, &image, &out).unwrap_err();
        assert!(
            matches!(e, archy_node::web_seed::WebSeedError::Lied { .. }),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing kept");
    }
}

/// A release served by a web seed only: publish checks the seed serves the archive
/// (and refuses a seed that does not), says where to upload the hash tree when the seed
/// has none, and an operator's node with no peer at all installs it from the seed in
/// verified byte ranges.
#[test]
fn an_app_installs_from_its_web_seed_when_no_node_serves_it() {
    if !common::can_run(common::needs_process_apps()) {
        return;
    }
    let _watchdog = archy_harness::watchdog(Duration::from_secs(300));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let _cleanup = common::ProcessCleanup(vec![w.join("op-node")]);
    let (_relay, relay_url) = start_relay();
    let Project {
        dir: project,
        manifest,
        key,
        port,
    } = Project::new(&w.join("project"), "from a web seed");
    let host = archy_harness::web::StaticHost::start();
    host.put("/archive", b"not the archive".to_vec());
    let seed = host.url("/archive");

    let refused = publish(&manifest, &key, &relay_url, &["--web-seed", &seed]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("does not serve this image") && err.contains(&seed),
        "{err}"
    );

    let archive = project.join("img.oci.tar");
    host.put("/archive", std::fs::read(&archive).unwrap());
    let out = publish(&manifest, &key, &relay_url, &["--web-seed", &seed]);
    common::assert_ok(&out, "publish --web-seed");
    let published: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        published["image"]["web_seeds"][0],
        seed.as_str(),
        "{published}"
    );
    assert_eq!(
        published["web_seeds_without_hash_tree"][0],
        seed.as_str(),
        "{published}"
    );
    let tree_file = project.join("img.oci.tar.obao");
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains(&tree_file.display().to_string()) && note.contains(&format!("{seed}.obao")),
        "publish says what to upload where: {note}"
    );
    // The developer uploads the tree as told.
    host.put("/archive.obao", std::fs::read(&tree_file).unwrap());
    let handle = published["handle"].as_str().unwrap().to_string();

    let op_data = w.join("op-node");
    let _op = common::start_node_cmd(common::node_cmd(&op_data, "op", "process", None));
    let install = archy_cmd(["app", "install", &handle, "--data"])
        .arg(&op_data)
        .args(["--relay", &relay_url, "--allow-unverified", "--yes"])
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert_eq!(app(&op_data)["phase"], "running");
    assert!(common::http_ok([127, 0, 0, 1], port), "the app answers");
    let status = ApiClient::from_data_dir(&op_data)
        .unwrap()
        .get_json("/v1/status")
        .unwrap();
    let size = published["image"]["size"].as_u64().unwrap();
    assert_eq!(
        status["swarm"]["fetched_bytes"]["web_seed"].as_u64(),
        Some(size),
        "{status}"
    );
    let requests = host.requests();
    assert!(
        requests.iter().any(|r| r.path == "/archive.obao"),
        "the node read the hash tree: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/archive" && r.range.is_some()),
        "the node fetched verified ranges: {requests:?}"
    );
}
