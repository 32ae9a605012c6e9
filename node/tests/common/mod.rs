//! Helpers the node's process-level tests share: an image archive made from the host's
//! static busybox (as `archy app pack` makes one, without any engine), talking to a
//! daemon's API, probing apps, a signed publish dir, background `archy` processes, and
//! cleaning up what the process runtime started.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part; tests fail loudly

pub mod netns;

use std::{
    ffi::OsStr,
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use archy_harness::{poll_until, Background, Cmd};

use archy_catalog::{
    build::resolve_image,
    manifest, oci,
    publisher::{Publisher, Validity},
    AppManifest, ImageRef,
};

/// Whether this test can have what it needs (`why` is `None`, or says what is missing).
/// Without it the test is skipped with the reason printed, unless
/// `ARCHY_REQUIRE_PRIVILEGED=1` (CI sets it): then a missing privilege or runtime fails
/// the test, so nothing passes by skipping.
pub fn can_run(why: Option<String>) -> bool {
    let Some(why) = why else {
        return true;
    };
    if std::env::var("ARCHY_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("ARCHY_REQUIRE_PRIVILEGED=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// `None` as root, else why a test needs it.
pub fn needs_root() -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| "this test needs root".to_string())
}

/// `None` with the host's static busybox (what test images are made of), else why.
pub fn needs_busybox() -> Option<String> {
    (!Path::new("/bin/busybox").is_file())
        .then(|| "this test needs /bin/busybox (busybox-static)".to_string())
}

/// `None` when this host can run the process runtime with every protection, else why not.
pub fn needs_process_runtime() -> Option<String> {
    archy_node::runtime::process::ProcessRuntime::check()
        .err()
        .map(|why| why.to_string())
}

/// `None` when busybox apps can run here on the process runtime (root, busybox, every
/// protection), else why not: what the process-runtime daemon tests need.
pub fn needs_process_apps() -> Option<String> {
    needs_root().or(needs_busybox()).or(needs_process_runtime())
}

/// `None` when podman runs containers here, else why not.
pub fn needs_podman() -> Option<String> {
    archy_node::runtime::podman::Podman::check()
        .err()
        .map(|why| format!("podman does not work here: {why}"))
}

/// `archy ARGS` (the binary this test build made), without the operator's defaults from
/// the environment (`ARCHY_DATA`, `ARCHY_RELAYS`, `ARCHY_ME`), to build on.
pub fn archy_cmd<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Cmd {
    Cmd::new(env!("CARGO_BIN_EXE_archy"))
        .env_remove("ARCHY_DATA")
        .env_remove("ARCHY_RELAYS")
        .env_remove("ARCHY_ME")
        .args(args)
}

/// Runs `archy ARGS` to completion.
pub fn archy(args: &[&str]) -> Output {
    archy_cmd(args).output().unwrap()
}

/// Runs `archy ARGS --data DATA` to completion.
pub fn archy_data(data: &Path, args: &[&str]) -> Output {
    archy_cmd(args).arg("--data").arg(data).output().unwrap()
}

/// Fails the test, naming `what` and showing both output streams, unless `out` is a
/// success.
pub fn assert_ok(out: &Output, what: impl std::fmt::Debug) {
    assert!(
        out.status.success(),
        "{what:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `archy ARGS`, which must succeed; its stdout.
pub fn archy_ok(args: &[&str]) -> String {
    archy_cmd(args).stdout().unwrap_or_else(|e| panic!("{e}"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `ok` until it holds; fails the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    poll_until(what, limit, || ok().then_some(())).unwrap_or_else(|e| panic!("{e}"));
}

/// `size` random bytes (they neither compress nor repeat).
pub fn noise(size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

/// `<dir>/rootfs` with the host's static busybox as `/bin/busybox` and `page` as
/// `/www/index.html`.
pub fn busybox_rootfs(dir: &Path, page: &str) -> PathBuf {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    fs::write(rootfs.join("www/index.html"), page).unwrap();
    rootfs
}

/// Packs [`busybox_rootfs`] into `<dir>/img.oci.tar`, the image the tests' manifests
/// name as `./img.oci.tar`.
pub fn busybox_image(dir: &Path, page: &str) {
    let rootfs = busybox_rootfs(dir, page);
    oci::pack_rootfs(
        &rootfs,
        &dir.join("img.oci.tar"),
        &oci::PackOptions::default(),
    )
    .unwrap();
}

/// `<dir>/apps` holding [`busybox_image`]: where the tests' catalogs are built from.
pub fn busybox_apps(dir: &Path, page: &str) -> PathBuf {
    let apps = dir.join("apps");
    fs::create_dir_all(&apps).unwrap();
    busybox_image(&apps, page);
    apps
}

/// The tests' web app `org.example.hello`: busybox httpd from `./img.oci.tar` (see
/// [`busybox_image`]) on host `port`, healthy when `health_path` answers 200.
#[derive(Debug, Clone, Copy)]
pub struct HelloApp<'a> {
    pub version: &'a str,
    pub port: u16,
    pub health_path: &'a str,
    /// With a volume `data` at `/data` and a generated secret `ADMIN_TOKEN`.
    pub with_data: bool,
}

impl<'a> HelloApp<'a> {
    /// Version `version` on `port`, healthy at `/`, without data.
    pub fn new(version: &'a str, port: u16) -> Self {
        Self {
            version,
            port,
            health_path: "/",
            with_data: false,
        }
    }

    /// The manifest, as YAML.
    pub fn yaml(&self) -> String {
        let Self {
            version,
            port,
            health_path,
            with_data,
        } = self;
        let data = match with_data {
            true => "    volumes: [{name: data, target: /data}]\n  generated_secrets: [{name: ADMIN_TOKEN, kind: hex32}]\n",
            false => "",
        };
        format!("app:\n  id: org.example.hello\n  name: Hello\n  version: {version}\n  description: {{short: hi}}\n  container:\n    image: ./img.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{host: {port}, container: 8080}}]\n{data}  health_check: {{type: http, port: 8080, path: {health_path}, interval: 1s, timeout: 1s, retries: 4}}\n")
    }
}

/// Writes `text` as `<dir>/app.yaml`, validates it and resolves its image archive; the
/// manifest comes back naming the image by hash, as a catalog holds it.
pub fn manifest_with_image(dir: &Path, text: &str) -> (AppManifest, PathBuf, ImageRef) {
    fs::write(dir.join("app.yaml"), text).unwrap();
    let mut m = manifest::parse_and_validate(text, manifest::ManifestFormat::Yaml).unwrap();
    let (archive, image) = resolve_image(&dir.join("app.yaml"), &m.container.image).unwrap();
    m.container.image = image.hash.to_string();
    (m, archive, image)
}

/// A daemon's `/metrics` text (the token from its data dir).
pub fn metrics(data: &Path) -> String {
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

/// Whether an app answers `GET /` with 200 on `ip:port`.
pub fn http_ok(ip: [u8; 4], port: u16) -> bool {
    let Ok(mut c) =
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))
    else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(c, "GET / HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
}

/// The publisher's side for tests: signs a root of trust, a catalog of every manifest
/// under `apps` and its timestamp (one day) into `<dir>/publish`, with each image under
/// `blobs/<blake3 hex>`, as an origin serves it. Returns the publish dir.
pub fn publish_signed(apps: &Path, dir: &Path) -> PathBuf {
    publish_signed_until(apps, dir, chrono::Utc::now() + chrono::Duration::days(1))
}

/// [`publish_signed`] with a timestamp that expires at `expires`.
pub fn publish_signed_until(
    apps: &Path,
    dir: &Path,
    expires: chrono::DateTime<chrono::Utc>,
) -> PathBuf {
    let validity = Validity {
        timestamp: expires,
        ..Validity::default()
    };
    Publisher::generate()
        .unwrap()
        .publish(apps, &dir.join("publish"), 1, &validity)
        .unwrap()
        .dir
}

/// Stops whatever the process runtime left running under these data dirs, however the
/// test ends (normally an uninstall already did). Declare it before the daemons, so it
/// runs after they are gone.
pub struct ProcessCleanup(pub Vec<PathBuf>);

impl Drop for ProcessCleanup {
    fn drop(&mut self) {
        for data in &self.0 {
            let Ok(apps) = fs::read_dir(data.join("process/apps")) else {
                continue;
            };
            for app in apps.flatten() {
                let Ok(pid) = fs::read_to_string(app.path().join("pid")) else {
                    continue;
                };
                let pid: serde_json::Value = serde_json::from_str(&pid).unwrap_or_default();
                if let Some(pid) = pid["pid"].as_i64() {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
                }
            }
        }
    }
}

/// A background `archy` process, killed (SIGKILL) when dropped.
pub type Proc = Background;

/// Starts `archy ARGS` and waits (at most 30 s) for a stdout line starting with `ready`.
pub fn start(args: &[String], ready: &str) -> Proc {
    archy_cmd(args)
        .background("archy", ready, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `archy node run` on `runtime` with its origin dir `publish` (and its root.json as
/// the trust anchor), API on a free port; waits for it to listen.
pub fn start_node(data: &Path, name: &str, runtime: &str, publish: Option<&Path>) -> Proc {
    start_node_cmd(node_cmd(data, name, runtime, publish))
}

/// The command [`start_node`] runs, to add to (`--root`, a log file) before
/// [`start_node_cmd`].
pub fn node_cmd(data: &Path, name: &str, runtime: &str, publish: Option<&Path>) -> Cmd {
    let cmd = archy_cmd(["node", "run", "--data"]).arg(data).args([
        "--runtime",
        runtime,
        "--name",
        name,
        "--api",
        "127.0.0.1:0",
    ]);
    match publish {
        Some(p) => cmd
            .arg("--origin-dir")
            .arg(p)
            .arg("--root")
            .arg(p.join("root.json")),
        None => cmd,
    }
}

/// Starts a node command and waits (at most 30 s) for it to listen.
pub fn start_node_cmd(cmd: Cmd) -> Proc {
    cmd.background("archy", "archy node", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"))
}
