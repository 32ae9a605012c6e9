//! The node daemon as a real process: with the real podman engine, install through the
//! local API with progress, survive a daemon kill (adopted, not recreated), stop/start,
//! uninstall without ghosts, data kept unless purged, token required; with the process
//! runtime, an update that never becomes healthy rolls back to the last healthy release.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use archy_node::runtime::podman::Podman;
use common::{archy_data, assert_ok, http_ok, metrics, publish_signed, ProcessCleanup};

mod common;

/// One release of the test app: busybox httpd on `port`, healthy when `health_path`
/// answers 200.
struct Release {
    version: &'static str,
    health_path: &'static str,
}

const HEALTHY: Release = Release {
    version: "1.0.0",
    health_path: "/",
};

/// A publish dir with the signed app `org.example.hello` in the given releases (all on
/// one image), as an origin holds it.
fn publish_dir(dir: &Path, port: u16, releases: &[Release]) -> PathBuf {
    let apps = common::busybox_apps(dir, "daemon test");
    for r in releases {
        let app = common::HelloApp {
            health_path: r.health_path,
            with_data: true,
            ..common::HelloApp::new(r.version, port)
        };
        fs::write(apps.join(format!("hello-{}.yaml", r.version)), app.yaml()).unwrap();
    }
    publish_signed(&apps, dir)
}

fn app_json(data: &Path) -> serde_json::Value {
    let out = archy_data(data, &["app", "status", "org.example.hello", "--json"]);
    assert_ok(&out, "app status");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Removes whatever the test left in the engine, however it ends.
struct EngineCleanup(String);

impl Drop for EngineCleanup {
    fn drop(&mut self) {
        let ids = container_ids(&self.0);
        for id in ids.split_whitespace() {
            let _ = Command::new("podman")
                .args(["rm", "-f", "-t", "0", id])
                .output();
        }
    }
}

fn container_ids(node: &str) -> String {
    let out = Command::new("podman")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=io.archy.node={node}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn daemon_lifecycle_end_to_end() {
    if !common::can_run(
        Podman::check()
            .err()
            .map(|why| format!("podman does not work here: {why}")),
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = 30_000 + (std::process::id() % 20_000) as u16;
    let publish = publish_dir(tmp.path(), port, &[HEALTHY]);
    let data = tmp.path().join("node");
    let name = format!("d{}", std::process::id());
    let _cleanup = EngineCleanup(name.clone());
    // Start from an engine without the image, so the install fetches and loads it.
    let config_digest = archy_catalog::oci::inspect(&tmp.path().join("apps/img.oci.tar"))
        .unwrap()
        .config_digest;
    let _ = Command::new("podman")
        .args(["rmi", "-f", config_digest.trim_start_matches("sha256:")])
        .output();
    let daemon = common::start_node(&data, &name, "podman", Some(&publish));

    // The API needs the token.
    let addr = fs::read_to_string(data.join("api.addr")).unwrap();
    let mut s = std::net::TcpStream::connect(addr.trim()).unwrap();
    write!(s, "GET /v1/apps HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.0 401") || resp.starts_with("HTTP/1.1 401"),
        "{resp}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(data.join("api.token"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    // Unknown app: a clear refusal.
    let out = archy_data(&data, &["app", "install", "org.example.nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in the signed catalog"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Install with progress.
    let out = archy_data(&data, &["app", "install", "org.example.hello", "--json"]);
    assert_ok(&out, "app install");
    let stages: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["stage"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for s in [
        "fetch", "verify", "load", "create", "start", "healthy", "done",
    ] {
        assert!(
            stages.iter().any(|x| x == s),
            "stage {s} missing in {stages:?}"
        );
    }
    assert!(
        http_ok([127, 0, 0, 1], port),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(app_json(&data)["phase"], "running");
    let secret =
        fs::read_to_string(data.join("apps/catalog/org.example.hello/secrets/ADMIN_TOKEN"))
            .unwrap();
    let id_before = container_ids(&name);

    // Kill the daemon outright; the app keeps running and is adopted, not recreated.
    let old_token = fs::read_to_string(data.join("api.token")).unwrap();
    drop(daemon);
    assert!(http_ok([127, 0, 0, 1], port), "the app outlives its daemon");
    let daemon = common::start_node(&data, &name, "podman", Some(&publish));
    // Every start has a new token; the old one opens nothing.
    let token = fs::read_to_string(data.join("api.token")).unwrap();
    assert_ne!(token, old_token, "a new token on every start");
    let addr = fs::read_to_string(data.join("api.addr")).unwrap();
    let mut s = std::net::TcpStream::connect(addr.trim()).unwrap();
    write!(
        s,
        "GET /v1/apps HTTP/1.0\r\nAuthorization: Bearer {}\r\n\r\n",
        old_token.trim()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.contains(" 401 "), "the old token is refused: {resp}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(app_json(&data)["phase"], "running");
    assert_eq!(container_ids(&name), id_before, "adopted without recreate");

    // Stop and start.
    assert_ok(
        &archy_data(&data, &["app", "stop", "org.example.hello"]),
        ["app", "stop", "org.example.hello"],
    );
    assert_eq!(app_json(&data)["phase"], "stopped");
    assert!(!http_ok([127, 0, 0, 1], port));
    assert_ok(
        &archy_data(&data, &["app", "start", "org.example.hello"]),
        ["app", "start", "org.example.hello"],
    );
    assert!(http_ok([127, 0, 0, 1], port));

    // Uninstall: no ghost in API or runtime; data and secrets stay.
    assert_ok(
        &archy_data(&data, &["app", "uninstall", "org.example.hello"]),
        ["app", "uninstall", "org.example.hello"],
    );
    assert!(
        !archy_data(&data, &["app", "status", "org.example.hello"])
            .status
            .success(),
        "no ghost in the API"
    );
    assert_eq!(container_ids(&name), "", "no ghost in the runtime");
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&archy_data(&data, &["app", "list", "--json"]).stdout).unwrap();
    assert!(list.is_empty());
    // Reinstall finds its data (the same secret).
    assert_ok(
        &archy_data(&data, &["app", "install", "org.example.hello"]),
        "reinstall",
    );
    assert_eq!(
        fs::read_to_string(data.join("apps/catalog/org.example.hello/secrets/ADMIN_TOKEN"))
            .unwrap(),
        secret
    );
    // Purge removes the data too.
    assert_ok(
        &archy_data(&data, &["app", "uninstall", "org.example.hello", "--purge"]),
        ["app", "uninstall", "org.example.hello", "--purge"],
    );
    assert!(!data.join("apps/catalog/org.example.hello").exists());
    let metrics = metrics(&data);
    assert!(
        metrics.contains("archy_reconcile_passes_total"),
        "{metrics}"
    );
    drop(daemon);
}

/// An update whose health check never passes is undone: the previous release runs again,
/// the install reports the failure and the rollback, the bad release is held back
/// (also across a daemon restart) until the operator asks for something else.
#[test]
fn failed_update_rolls_back_to_the_last_healthy_release() {
    if !common::can_run(common::needs_process_runtime()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = 30_000 + ((std::process::id() + 7_919) % 20_000) as u16;
    let publish = publish_dir(
        tmp.path(),
        port,
        &[
            HEALTHY,
            Release {
                version: "1.1.0",
                health_path: "/",
            },
            Release {
                version: "1.2.0",
                health_path: "/never-there",
            },
        ],
    );
    let data = tmp.path().join("node");
    let name = format!("r{}", std::process::id());
    // Declared before the daemon, so it runs after the daemon is gone.
    let _apps = ProcessCleanup(vec![data.clone()]);
    let daemon = common::start_node(&data, &name, "process", Some(&publish));
    let install = |version: &str| {
        archy_data(
            &data,
            &["app", "install", "org.example.hello", "--version", version],
        )
    };

    let out = install("1.0.0");
    assert_ok(&out, "install 1.0.0");
    // A good update replaces the app and becomes the release to fall back to.
    let out = install("1.1.0");
    assert_ok(&out, "install 1.1.0");
    assert_eq!(app_json(&data)["version"], "1.1.0");
    let secret =
        fs::read_to_string(data.join("apps/catalog/org.example.hello/secrets/ADMIN_TOKEN"))
            .unwrap();

    // The bad update: the install fails, says why and that it rolled back.
    let out = archy_data(
        &data,
        &[
            "app",
            "install",
            "org.example.hello",
            "--version",
            "1.2.0",
            "--json",
        ],
    );
    assert!(!out.status.success(), "an unhealthy update must fail");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["stage"], "failed", "{events:?}");
    let message = last["message"].as_str().unwrap();
    assert!(
        message.contains("update to 1.2.0 failed")
            && message.contains("not healthy")
            && message.contains("rolled back to 1.1.0"),
        "{message}"
    );
    assert!(
        events.iter().any(|e| e["stage"] == "rollback"),
        "the rollback is reported: {events:?}"
    );
    // Stages only move forward, through the rollback too.
    let order = [
        "plan", "fetch", "verify", "load", "stop", "remove", "create", "start", "healthy",
        "rollback", "done", "failed",
    ];
    let ranks: Vec<usize> = events
        .iter()
        .map(|e| order.iter().position(|s| e["stage"] == *s).unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{events:?}");

    let app = app_json(&data);
    assert_eq!(app["phase"], "running", "{app}");
    assert_eq!(app["version"], "1.1.0", "{app}");
    assert_eq!(app["held_back"]["version"], "1.2.0", "{app}");
    assert!(
        http_ok([127, 0, 0, 1], port),
        "the previous release answers again"
    );
    assert_eq!(
        fs::read_to_string(data.join("apps/catalog/org.example.hello/secrets/ADMIN_TOKEN"))
            .unwrap(),
        secret,
        "the rollback keeps the app's data"
    );
    assert!(metrics(&data).contains("archy_rollbacks_total 1"));

    // Stop and start are not a new request: the hold stays, 1.1.0 comes back.
    for verb in ["stop", "start"] {
        let out = archy_data(&data, &["app", verb, "org.example.hello"]);
        assert_ok(&out, verb);
    }
    let app = app_json(&data);
    assert_eq!(app["version"], "1.1.0", "{app}");
    assert_eq!(app["held_back"]["version"], "1.2.0", "{app}");
    assert!(
        app["last_error"]
            .as_str()
            .unwrap()
            .contains("rolled back to 1.1.0"),
        "{app}"
    );
    assert!(http_ok([127, 0, 0, 1], port));

    // After a daemon restart the bad release is still held back: no second attempt.
    let pid_before = fs::read_to_string(data.join("process/apps/org.example.hello/pid")).unwrap();
    drop(daemon);
    let daemon = common::start_node(&data, &name, "process", Some(&publish));
    std::thread::sleep(Duration::from_secs(3));
    let app = app_json(&data);
    assert_eq!(app["version"], "1.1.0", "{app}");
    assert_eq!(app["phase"], "running", "{app}");
    assert_eq!(
        fs::read_to_string(data.join("process/apps/org.example.hello/pid")).unwrap(),
        pid_before,
        "adopted, not recreated for the held-back release"
    );
    assert!(http_ok([127, 0, 0, 1], port));

    // Asking for another release clears the hold.
    let out = install("1.0.0");
    assert_ok(&out, "install 1.0.0");
    let app = app_json(&data);
    assert_eq!(app["version"], "1.0.0", "{app}");
    assert!(app["held_back"].is_null(), "{app}");
    assert_ok(
        &archy_data(&data, &["app", "uninstall", "org.example.hello"]),
        ["app", "uninstall", "org.example.hello"],
    );
    drop(daemon);
}

/// The CLI talks to the daemon over its Unix socket only: a local user who binds the
/// daemon's old TCP port while it is down gets no request and no token, and the CLI
/// says no daemon is running.
#[test]
fn the_cli_never_sends_its_token_to_a_stale_api_address() {
    if !common::can_run(common::needs_process_runtime()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let daemon = common::start_node(&data, &format!("s{}", std::process::id()), "process", None);
    assert_ok(&archy_data(&data, &["app", "list", "--json"]), "app list");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(data.join("api.sock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the socket is root's alone");
    }
    let addr = fs::read_to_string(data.join("api.addr")).unwrap();
    drop(daemon);

    // Someone else takes the port the daemon listened on.
    let squatter = std::net::TcpListener::bind(addr.trim()).unwrap();
    squatter.set_nonblocking(true).unwrap();
    let out = archy_data(&data, &["app", "list"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cannot reach the daemon"), "{said}");
    assert!(
        matches!(squatter.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the CLI connected to whatever holds the old TCP address"
    );
}
