//! The node daemon as a real process with the real podman engine: install through the
//! local API with progress, survive a daemon kill (adopted, not recreated), stop/start,
//! uninstall without ghosts, data kept unless purged, token required.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use archy_catalog::{
    build::build_catalog,
    documents::{Envelope, Role, RoleKeys, Roles, Root, Timestamp, SPEC_VERSION},
    keys::{KeyMap, SecretKey},
    oci,
};
use archy_node::runtime::podman::Podman;
use chrono::{Duration as Days, Utc};

fn signed<T: serde::Serialize>(path: &Path, doc: &T, key: &SecretKey) {
    let mut env = Envelope::new_unsigned(doc).unwrap();
    env.sign(key);
    fs::write(path, env.to_bytes()).unwrap();
}

/// A publish dir with one signed app (busybox httpd on `port`), as an origin holds it.
fn publish_dir(dir: &Path, port: u16) -> PathBuf {
    let apps = dir.join("apps");
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::create_dir_all(&apps).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    fs::write(rootfs.join("www/index.html"), "daemon test").unwrap();
    oci::pack_rootfs(
        &rootfs,
        &apps.join("hello.oci.tar"),
        &oci::PackOptions::default(),
    )
    .unwrap();
    fs::write(
        apps.join("hello.yaml"),
        format!(
            "app:\n  id: org.example.hello\n  name: Hello\n  version: 1.0.0\n  description: {{short: hi}}\n  container:\n    image: ./hello.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{host: {port}, container: 8080}}]\n    volumes: [{{name: data, target: /data}}]\n  generated_secrets: [{{name: ADMIN_TOKEN, kind: hex32}}]\n  health_check: {{type: http, port: 8080, path: /, interval: 1s, retries: 10}}\n"
        ),
    )
    .unwrap();
    let key = SecretKey::generate().unwrap();
    let one = RoleKeys {
        keyids: vec![key.key_id()],
        threshold: 1,
    };
    let root = Root {
        role: Role::Root,
        spec_version: SPEC_VERSION,
        version: 1,
        expires: Utc::now() + Days::days(30),
        keys: KeyMap::from([(key.key_id(), key.public())]),
        roles: Roles {
            root: one.clone(),
            catalog: one.clone(),
            timestamp: one,
        },
    };
    let publish = dir.join("publish");
    fs::create_dir_all(publish.join("blobs")).unwrap();
    signed(&publish.join("root.json"), &root, &key);
    let built = build_catalog(&apps, 1, Utc::now() + Days::days(30)).unwrap();
    for r in &built.releases {
        fs::copy(
            &r.image_file,
            publish.join("blobs").join(r.image.hash.to_hex()),
        )
        .unwrap();
    }
    signed(&publish.join("catalog.json"), &built.catalog, &key);
    let cat = fs::read(publish.join("catalog.json")).unwrap();
    let ts = Timestamp::for_catalog(&cat, 1, Utc::now() + Days::days(1)).unwrap();
    signed(&publish.join("timestamp.json"), &ts, &key);
    publish
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_daemon(data: &Path, name: &str, publish: &Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_archy"))
        .args(["node", "run", "--data"])
        .arg(data)
        .args(["--name", name, "--api", "127.0.0.1:0", "--origin-dir"])
        .arg(publish)
        .arg("--root")
        .arg(publish.join("root.json"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "daemon said {line:?}");
    Daemon(child)
}

fn archy(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archy"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

fn app_json(data: &Path) -> serde_json::Value {
    let out = archy(data, &["app", "status", "org.example.hello", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn http_ok(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET / HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
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
    if let Err(why) = Podman::check() {
        eprintln!("SKIPPED: podman does not work here: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = 30_000 + (std::process::id() % 20_000) as u16;
    let publish = publish_dir(tmp.path(), port);
    let data = tmp.path().join("node");
    let name = format!("d{}", std::process::id());
    let _cleanup = EngineCleanup(name.clone());
    // Start from an engine without the image, so the install fetches and loads it.
    let config_digest = archy_catalog::oci::inspect(&tmp.path().join("apps/hello.oci.tar"))
        .unwrap()
        .config_digest;
    let _ = Command::new("podman")
        .args(["rmi", "-f", config_digest.trim_start_matches("sha256:")])
        .output();
    let daemon = start_daemon(&data, &name, &publish);

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
    let out = archy(&data, &["app", "install", "org.example.nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in the signed catalog"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Install with progress.
    let out = archy(&data, &["app", "install", "org.example.hello", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert!(http_ok(port), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(app_json(&data)["phase"], "running");
    let secret =
        fs::read_to_string(data.join("apps/org.example.hello/secrets/ADMIN_TOKEN")).unwrap();
    let id_before = container_ids(&name);

    // Kill the daemon outright; the app keeps running and is adopted, not recreated.
    drop(daemon);
    assert!(http_ok(port), "the app outlives its daemon");
    let daemon = start_daemon(&data, &name, &publish);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(app_json(&data)["phase"], "running");
    assert_eq!(container_ids(&name), id_before, "adopted without recreate");

    // Stop and start.
    assert!(archy(&data, &["app", "stop", "org.example.hello"])
        .status
        .success());
    assert_eq!(app_json(&data)["phase"], "stopped");
    assert!(!http_ok(port));
    assert!(archy(&data, &["app", "start", "org.example.hello"])
        .status
        .success());
    assert!(http_ok(port));

    // Uninstall: no ghost in API or runtime; data and secrets stay.
    assert!(archy(&data, &["app", "uninstall", "org.example.hello"])
        .status
        .success());
    assert!(
        !archy(&data, &["app", "status", "org.example.hello"])
            .status
            .success(),
        "no ghost in the API"
    );
    assert_eq!(container_ids(&name), "", "no ghost in the runtime");
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&archy(&data, &["app", "list", "--json"]).stdout).unwrap();
    assert!(list.is_empty());
    // Reinstall finds its data (the same secret).
    assert!(archy(&data, &["app", "install", "org.example.hello"])
        .status
        .success());
    assert_eq!(
        fs::read_to_string(data.join("apps/org.example.hello/secrets/ADMIN_TOKEN")).unwrap(),
        secret
    );
    // Purge removes the data too.
    assert!(
        archy(&data, &["app", "uninstall", "org.example.hello", "--purge"])
            .status
            .success()
    );
    assert!(!data.join("apps/org.example.hello").exists());
    let metrics = ureq_metrics(&data);
    assert!(
        metrics.contains("archy_reconcile_passes_total"),
        "{metrics}"
    );
    drop(daemon);
}

fn ureq_metrics(data: &Path) -> String {
    let addr = fs::read_to_string(data.join("api.addr")).unwrap();
    let token = fs::read_to_string(data.join("api.token")).unwrap();
    let mut s = std::net::TcpStream::connect(addr.trim()).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nAuthorization: Bearer {}\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
