//! The process runtime with real processes: an image packed from the static busybox is
//! unpacked, run in its own namespaces and reached over HTTP on its published port; two
//! nodes with different publish addresses run the same app on the same ports at once;
//! stop/start; a crash is repaired by the reconciler; a fresh runtime object adopts the
//! running app without restarting it; a pid file naming a live unrelated process (a
//! recycled PID) is not adopted; remove leaves nothing in the runtime and keeps the data
//! volume. Skips with a printed reason when not root or without /bin/busybox.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use archy_catalog::{manifest, oci, AppManifest, ImageRef};
use archy_node::{
    executor::{reconcile, AppTarget, DirImageSource},
    planner::{Action, ContainerStatus, DesiredApp, Liveness},
    runtime::{
        health,
        process::{proc_state, PidRecord, ProcState, ProcessRuntime},
        ContainerSpec, Runtime,
    },
};

const HELPER: &str = env!("CARGO_BIN_EXE_archy");

fn skip() -> bool {
    !common::can_run(common::needs_root().or(common::needs_busybox()))
}

/// A distinct port per test and process (kept clear of the podman tests' range).
fn port(k: u16) -> u16 {
    40_000 + (std::process::id() % 2_000) as u16 * 10 + k
}

/// A busybox image with a page in /www, and a manifest for `id` around it.
struct App {
    dir: tempfile::TempDir,
    /// The published (host) port.
    port: u16,
    archive: PathBuf,
    image: ImageRef,
    manifest: AppManifest,
}

/// `None` (after saying why) when this host cannot run the process runtime.
fn app(id: &str, k: u16, cmd: &str, extra: &str) -> Option<App> {
    if skip() {
        return None;
    }
    let host_port = port(k);
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path(), "process test page");
    let text = format!(
        "app:\n  id: {id}\n  name: T\n  version: 1.0.0\n  description: {{short: t}}\n  container:\n    image: ./img.oci.tar\n    cmd: [/bin/busybox, sh, -c, {cmd:?}]\n    ports: [{{host: {host_port}, container: 8080}}]\n    volumes: [{{name: data, target: /data}}]\n{extra}"
    );
    let (m, archive, image) = common::manifest_with_image(dir.path(), &text);
    Some(App {
        dir,
        port: host_port,
        archive,
        image,
        manifest: m.normalized(),
    })
}

fn spec(a: &App, manifest: &AppManifest, ip: &str, data: &Path) -> ContainerSpec {
    ContainerSpec {
        manifest_hash: manifest.manifest_hash(),
        manifest: manifest.clone(),
        image: a.image.clone(),
        publish_ip: ip.parse().unwrap(),
        data_dir: data.to_path_buf(),
        secrets: Default::default(),
        owner: archy_node::app_identity::AppOwner::Catalog,
    }
}

/// GET / until it answers 2xx (body returned) or `deadline` passes.
fn get(addr: SocketAddr, deadline: Duration) -> Option<String> {
    use std::io::{Read, Write};
    archy_harness::poll_until("the app to answer", deadline, || {
        health::http(addr, "/", Duration::from_secs(1)).ok()
    })
    .ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    Some(body)
}

fn pid_record(rt: &ProcessRuntime, id: &str) -> PidRecord {
    serde_json::from_slice(&fs::read(rt.app_dir(id).unwrap().join("pid")).unwrap()).unwrap()
}

/// Polls until `f` holds or `deadline` passes.
fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    archy_harness::poll_until("a condition", deadline, || f().then_some(())).is_ok() || f()
}

#[test]
fn runs_adopts_stops_starts_and_removes_an_app() {
    let id = "org.example.proctest";
    let Some(a) = app(
        id,
        0,
        "echo kept > /data/marker; exec /bin/busybox httpd -f -p 8080 -h /www",
        "",
    ) else {
        return;
    };
    let p = a.port;
    let node = a.dir.path().join("node");
    let rt = ProcessRuntime::new("n1", node.join("process"), HELPER);
    assert!(!rt.image_loaded(&a.image).unwrap());
    // What an unpack interrupted by a crash leaves behind.
    let digest = a.image.hash.to_hex();
    let interrupted = node.join(format!("process/images/.tmp-{digest}-999999"));
    fs::create_dir_all(interrupted.join("rootfs")).unwrap();
    rt.load_image(&a.archive, &a.image).unwrap();
    assert!(rt.image_loaded(&a.image).unwrap());
    let image_dir = node.join("process/images").join(&digest);
    assert!(image_dir.join("rootfs/bin/busybox").is_file());
    // No half-unpacked leftovers next to it, the interrupted one included.
    let leftovers: Vec<_> = fs::read_dir(node.join("process/images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());

    let data = a.dir.path().join("appdata");
    let s = spec(&a, &a.manifest, "127.0.0.1", &data);
    rt.create(&s).unwrap();
    let listed = rt.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, ContainerStatus::Created);
    assert_eq!(listed[0].manifest_hash, s.manifest_hash);
    assert_eq!(listed[0].image, a.image.hash);

    rt.start(id).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
    let body = get(addr, Duration::from_secs(10)).expect("reachable on its published port");
    assert!(body.contains("process test page"), "{body}");
    assert_eq!(
        fs::read_to_string(data.join("volumes/data/marker")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        fs::metadata(rt.app_dir(id).unwrap().join("spec.json"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o600
    );

    // A fresh runtime object (a restarted daemon) adopts the same process.
    let before = pid_record(&rt, id);
    let again = ProcessRuntime::new("n1", node.join("process"), HELPER);
    let listed = again.list().unwrap();
    assert_eq!(
        (listed[0].status, listed[0].liveness),
        (ContainerStatus::Running, Liveness::Alive)
    );
    again.start(id).unwrap(); // already running: nothing happens
    assert_eq!(pid_record(&again, id), before, "not restarted");
    // Another node's runtime sees none of it.
    assert!(ProcessRuntime::new("n2", node.join("process"), HELPER)
        .list()
        .unwrap()
        .is_empty());

    // The app runs in its own PID namespace (under its init) and sees no host process.
    let ps = fs::read_dir(format!("/proc/{}/root/proc", before.app_pid))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    assert!(ps < 10, "{ps} processes visible inside");

    again.stop(id).unwrap();
    assert_eq!(again.list().unwrap()[0].status, ContainerStatus::Exited);
    // SIGTERM reached the app through its init and ended it (128 + 15); as PID 1 itself,
    // busybox httpd would have ignored it and died of the SIGKILL after the timeout.
    let exit = fs::read_to_string(again.app_dir(id).unwrap().join("exit")).unwrap();
    assert!(exit.contains("code 143"), "{exit}");
    assert!(
        get(addr, Duration::from_millis(300)).is_none(),
        "unreachable when stopped"
    );
    assert_eq!(proc_state(before.app_pid), ProcState::Gone);
    again.start(id).unwrap();
    assert!(
        get(addr, Duration::from_secs(10)).is_some(),
        "reachable after start"
    );
    assert!(again.logs(id, 50).is_ok());
    assert!(
        again.logs("org.example.nobody", 50).is_err(),
        "no logs of an app that is not there"
    );

    again.remove(id).unwrap();
    assert!(again.list().unwrap().is_empty(), "no ghost");
    assert!(!node.join("process/apps").join(id).exists(), "nothing left");
    assert!(get(addr, Duration::from_millis(300)).is_none());
    assert!(
        data.join("volumes/data/marker").is_file(),
        "data volume kept"
    );
}

#[test]
fn two_nodes_run_the_same_app_on_the_same_ports() {
    let id = "org.example.proctwin";
    let Some(a) = app(
        id,
        1,
        "mkdir -p /srv; echo node-$NODE > /srv/index.html; exec /bin/busybox httpd -f -p 8080 -h /srv",
        "",
    ) else {
        return;
    };
    let p = a.port;
    let mut runtimes = Vec::new();
    for (n, ip) in [("a", "127.0.0.2"), ("b", "127.0.0.3")] {
        let mut m = a.manifest.clone();
        m.container.env.insert("NODE".into(), n.into());
        let node = a.dir.path().join(n);
        let rt = ProcessRuntime::new(n, node.join("process"), HELPER);
        rt.load_image(&a.archive, &a.image).unwrap();
        rt.create(&spec(&a, &m, ip, &node.join("appdata"))).unwrap();
        rt.start(id).unwrap();
        runtimes.push((rt, ip, n));
    }
    for (_, ip, n) in &runtimes {
        let addr: SocketAddr = format!("{ip}:{p}").parse().unwrap();
        let body = get(addr, Duration::from_secs(10)).expect("both reachable");
        assert!(body.contains(&format!("node-{n}")), "{ip}: {body}");
    }
    for (rt, _, _) in &runtimes {
        rt.remove(id).unwrap();
    }
}

fn target(a: &App, data: &Path) -> AppTarget {
    let m = &a.manifest;
    AppTarget {
        desired: DesiredApp {
            app_id: m.id.clone(),
            manifest_hash: m.manifest_hash(),
            image: a.image.hash,
            running: true,
        },
        spec: spec(a, m, "127.0.0.1", data),
    }
}

#[test]
fn reconciler_installs_adopts_restarts_a_crash_and_uninstalls() {
    let id = "org.example.proccrash";
    let Some(a) = app(
        id,
        2,
        "exec /bin/busybox httpd -f -p 8080 -h /www",
        "  generated_secrets: [{name: ADMIN_TOKEN, kind: hex32}]\n  health_check: {type: http, port: 8080, path: /, interval: 1s, retries: 10}\n",
    ) else {
        return;
    };
    let p = a.port;
    let blobs = a.dir.path().join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::copy(&a.archive, blobs.join(a.image.hash.to_hex())).unwrap();
    let source = DirImageSource { dirs: vec![blobs] };
    let node = a.dir.path().join("node");
    let data = a.dir.path().join("appdata");
    let rt = ProcessRuntime::new("n1", node.join("process"), HELPER);
    let t = target(&a, &data);

    let mut events = Vec::new();
    let actions = reconcile(&rt, &source, id, Some(&t), false, &mut |e| events.push(e)).unwrap();
    assert_eq!(
        actions,
        vec![Action::LoadImage, Action::Create, Action::Start],
        "{events:?}"
    );
    let secret = fs::read_to_string(data.join("secrets/ADMIN_TOKEN")).unwrap();
    assert!(events.iter().all(|e| !e.message.contains(&secret)));
    let log = fs::read_to_string(rt.app_dir(id).unwrap().join("app.log")).unwrap();
    assert!(!log.contains(&secret), "secret never logged");
    // The app (the child of its init) gets its secret as env and as /run/secrets/NAME;
    // the init does not hold it.
    let pid = pid_record(&rt, id);
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", pid.app_pid)).unwrap();
    let app_pid = children
        .split_whitespace()
        .next()
        .expect("the init runs the app");
    let environ = fs::read(format!("/proc/{app_pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains(&format!("ADMIN_TOKEN={secret}")));
    let init_environ = fs::read(format!("/proc/{}/environ", pid.app_pid)).unwrap();
    assert!(!String::from_utf8_lossy(&init_environ).contains(&secret));
    assert_eq!(
        fs::read_to_string(format!(
            "/proc/{}/root/run/secrets/ADMIN_TOKEN",
            pid.app_pid
        ))
        .unwrap(),
        secret
    );
    assert_eq!(
        reconcile(&rt, &source, id, Some(&t), true, &mut |_| {}).unwrap(),
        vec![]
    );

    // After a daemon restart (fresh runtime, nothing recorded): adopted, not restarted.
    let rt = ProcessRuntime::new("n1", node.join("process"), HELPER);
    assert_eq!(
        reconcile(&rt, &source, id, Some(&t), false, &mut |_| {}).unwrap(),
        vec![Action::Adopt]
    );
    assert_eq!(pid_record(&rt, id), pid, "same process");

    // The app crashes: reported exited, the next pass starts it again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.app_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || rt.list().unwrap()[0].status
            == ContainerStatus::Exited),
        "a dead app is reported exited"
    );
    assert!(fs::read_to_string(rt.app_dir(id).unwrap().join("exit"))
        .unwrap()
        .contains("signal 9"));
    assert_eq!(
        reconcile(&rt, &source, id, Some(&t), true, &mut |_| {}).unwrap(),
        vec![Action::Start]
    );
    assert_ne!(pid_record(&rt, id).app_pid, pid.app_pid);
    let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
    assert!(get(addr, Duration::from_secs(5)).is_some(), "restarted");

    // Uninstall: no ghost, data and secrets kept.
    reconcile(&rt, &source, id, None, true, &mut |_| {}).unwrap();
    assert!(rt.list().unwrap().is_empty());
    assert!(!node.join("process/apps").join(id).exists());
    assert!(data.join("secrets/ADMIN_TOKEN").exists());
    assert!(data.join("volumes/data").is_dir());
}

#[test]
fn a_recycled_pid_is_never_adopted() {
    let id = "org.example.procpid";
    let Some(a) = app(id, 3, "exec /bin/busybox httpd -f -p 8080 -h /www", "") else {
        return;
    };
    let node = a.dir.path().join("node");
    let rt = ProcessRuntime::new("n1", node.join("process"), HELPER);
    rt.load_image(&a.archive, &a.image).unwrap();
    rt.create(&spec(
        &a,
        &a.manifest,
        "127.0.0.1",
        &a.dir.path().join("appdata"),
    ))
    .unwrap();
    // An unrelated live process now holds the PID the file names.
    let mut stranger = std::process::Command::new("/bin/busybox")
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let ProcState::Alive { start_time } = proc_state(stranger.id()) else {
        panic!("stranger is alive");
    };
    let fake = PidRecord {
        pid: stranger.id(),
        start_time: start_time + 1,
        app_pid: stranger.id(),
        app_start_time: start_time + 1,
    };
    fs::write(
        rt.app_dir(id).unwrap().join("pid"),
        serde_json::to_vec(&fake).unwrap(),
    )
    .unwrap();
    let listed = rt.list().unwrap();
    assert_eq!(
        (listed[0].status, listed[0].liveness),
        (ContainerStatus::Exited, Liveness::Dead),
        "a PID with another start time is not ours"
    );
    rt.stop(id).unwrap();
    rt.remove(id).unwrap();
    assert!(
        matches!(proc_state(stranger.id()), ProcState::Alive { .. }),
        "the stranger was not signalled"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
}

#[test]
fn a_wrong_config_digest_is_refused() {
    let Some(a) = app("org.example.procdigest", 4, "true", "") else {
        return;
    };
    let rt = ProcessRuntime::new("n1", a.dir.path().join("process"), HELPER);
    let mut wrong = a.image.clone();
    wrong.config_digest = format!("sha256:{}", "00".repeat(32));
    let err = rt.load_image(&a.archive, &wrong).unwrap_err().to_string();
    assert!(err.contains("config digest"), "{err}");
    assert!(!rt.image_loaded(&wrong).unwrap());
}

/// Archives as podman writes them (gzip layers in `oci-archive`, plain ones in
/// `docker-archive`), with a deleted file and a replaced directory: the whiteouts hide
/// the lower layers' files, and the result runs.
#[test]
fn podman_saved_archives_unpack_with_their_whiteouts() {
    if skip() {
        return;
    }
    if !common::can_run(common::needs_podman()) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", d.path().join("busybox")).unwrap();
    fs::write(
        d.path().join("Containerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /x /www && /bin/busybox touch /x/old /gone && echo layered > /www/index.html\"]\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox rm -rf /x /gone && /bin/busybox mkdir /x && /bin/busybox touch /x/new\"]\n\
         CMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    let tag = format!("localhost/archy-process-test-{}", std::process::id());
    let podman = |args: &[&str]| {
        let out = std::process::Command::new("podman")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let context = d.path().display().to_string();
    let mut build = vec!["build"];
    build.extend(archy_node::runtime::podman::HOST_ARGS);
    build.extend(["-q", "-t", &tag, &context]);
    podman(&build);
    for format in ["oci-archive", "docker-archive"] {
        let archive = d.path().join(format!("{format}.tar"));
        podman(&[
            "save",
            "--format",
            format,
            "-o",
            &archive.display().to_string(),
            &tag,
        ]);
        let info = oci::inspect(&archive).unwrap();
        assert!(info.layers.len() >= 3, "{format}: {:?}", info.layers);
        let (hash, size) = oci::hash_file(&archive).unwrap();
        let image = ImageRef {
            hash,
            size,
            config_digest: info.config_digest.clone(),
            format: info.format,
            web_seeds: Vec::new(),
        };
        let root = d.path().join(format!("node-{format}"));
        let rt = ProcessRuntime::new("n1", &root, HELPER);
        rt.load_image(&archive, &image).unwrap();
        let rootfs = root.join("images").join(image.hash.to_hex()).join("rootfs");
        assert!(rootfs.join("bin/busybox").is_file(), "{format}");
        assert!(rootfs.join("x/new").is_file(), "{format}");
        assert!(
            !rootfs.join("x/old").exists(),
            "{format}: opaque dir hides the old layer"
        );
        assert!(
            !rootfs.join("gone").exists(),
            "{format}: whiteout removes the file"
        );
        assert!(!rootfs.join("x/.wh..wh..opq").exists() && !rootfs.join(".wh.gone").exists());
        if format == "oci-archive" {
            // The image's own CMD runs when the manifest gives none.
            let id = "org.example.proclayers";
            let p = port(5);
            let text = format!(
                "app:\n  id: {id}\n  name: T\n  version: 1.0.0\n  description: {{short: t}}\n  container:\n    image: ./layers.tar\n    ports: [{{host: {p}, container: 8080}}]\n"
            );
            let mut m =
                manifest::parse_and_validate(&text, manifest::ManifestFormat::Yaml).unwrap();
            m.container.image = image.hash.to_string();
            let m = m.normalized();
            run_layered(&rt, &image, &m, d.path(), p);
        }
    }
    let _ = std::process::Command::new("podman")
        .args(["rmi", "-f", &tag])
        .output();
}

fn run_layered(rt: &ProcessRuntime, image: &ImageRef, m: &AppManifest, dir: &Path, p: u16) {
    let spec = ContainerSpec {
        manifest_hash: m.manifest_hash(),
        manifest: m.clone(),
        image: image.clone(),
        publish_ip: "127.0.0.1".parse().unwrap(),
        data_dir: dir.join("layered-data"),
        secrets: Default::default(),
        owner: archy_node::app_identity::AppOwner::Catalog,
    };
    rt.create(&spec).unwrap();
    rt.start(&m.id).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
    let body = get(addr, Duration::from_secs(10));
    rt.remove(&m.id).unwrap();
    assert!(body.expect("image CMD serves").contains("layered"));
}

/// The API's restart and the reconciler may start an app at the same moment: one
/// supervisor runs it, the other starts find it running.
#[test]
fn concurrent_starts_run_one_supervisor() {
    let id = "org.example.procrace";
    let Some(a) = app(id, 6, "exec /bin/busybox httpd -f -p 8080 -h /www", "") else {
        return;
    };
    let root = a.dir.path().join("process");
    let rt = ProcessRuntime::new("n1", &root, HELPER);
    rt.load_image(&a.archive, &a.image).unwrap();
    rt.create(&spec(
        &a,
        &a.manifest,
        "127.0.0.1",
        &a.dir.path().join("appdata"),
    ))
    .unwrap();
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || ProcessRuntime::new("n1", root, HELPER).start(id))
        })
        .collect();
    for s in starts {
        s.join().unwrap().unwrap();
    }
    let app_dir = rt.app_dir(id).unwrap().canonicalize().unwrap();
    let needle = format!("process-helper\0supervise\0{}", app_dir.display());
    let supervisors = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .count();
    rt.remove(id).unwrap();
    assert_eq!(supervisors, 1);
}
