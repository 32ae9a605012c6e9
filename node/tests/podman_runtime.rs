//! The podman runtime against the real engine: load a packed busybox image, run it,
//! reach it over HTTP, find it again from a fresh runtime (adoption), stop, remove.
//! Skips with a printed reason only when `podman info` fails on this host.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{fs, net::SocketAddr, time::Duration};

use archy_catalog::{build::resolve_image, manifest, oci};
use archy_node::{
    planner::{ContainerStatus, Liveness},
    runtime::{health, podman::Podman, ContainerSpec, Runtime},
};

#[test]
fn podman_runs_adopts_and_removes_an_app() {
    if let Err(why) = Podman::check() {
        eprintln!("SKIPPED: podman does not work here: {why}");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let rootfs = d.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    fs::write(rootfs.join("www/index.html"), "podman test page").unwrap();
    oci::pack_rootfs(
        &rootfs,
        &d.path().join("img.oci.tar"),
        &oci::PackOptions::default(),
    )
    .unwrap();
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let text = format!(
        "app:\n  id: org.example.podtest\n  name: T\n  version: 1.0.0\n  description: {{short: t}}\n  container:\n    image: ./img.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{host: {port}, container: 8080}}]\n    volumes: [{{name: data, target: /data}}]\n"
    );
    fs::write(d.path().join("app.yaml"), &text).unwrap();
    let mut m = manifest::parse_and_validate(&text, manifest::ManifestFormat::Yaml).unwrap();
    let (archive, image) = resolve_image(&d.path().join("app.yaml"), &m.container.image).unwrap();
    m.container.image = image.hash.to_string();
    let m = m.normalized();
    let node = format!("t{}", std::process::id());
    let rt = Podman::new(&node);
    let spec = ContainerSpec {
        manifest_hash: m.manifest_hash(),
        manifest: m,
        image: image.clone(),
        publish_ip: "127.0.0.1".parse().unwrap(),
        data_dir: d.path().join("appdata"),
        secrets: Default::default(),
    };

    rt.load_image(&archive, &image).unwrap();
    assert!(rt.image_loaded(&image).unwrap());
    let _ = rt.remove("org.example.podtest");
    rt.create(&spec).unwrap();
    rt.start("org.example.podtest").unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut probe = health::Probe::Unhealthy("not probed".into());
    for _ in 0..50 {
        probe = health::http(addr, "/", Duration::from_secs(1));
        if probe == health::Probe::Healthy {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(probe, health::Probe::Healthy);
    assert!(
        d.path().join("appdata/volumes/data").is_dir(),
        "volume dir under the app data dir"
    );

    // A fresh runtime (as after a daemon restart) finds the container by its labels.
    let again = Podman::new(&node).list().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].manifest_hash, spec.manifest_hash);
    assert_eq!(
        (again[0].status, again[0].liveness),
        (ContainerStatus::Running, Liveness::Alive)
    );
    // Another node sharing the engine sees none of it.
    assert!(Podman::new(format!("{node}x")).list().unwrap().is_empty());

    rt.stop("org.example.podtest").unwrap();
    assert_eq!(rt.list().unwrap()[0].status, ContainerStatus::Exited);
    rt.remove("org.example.podtest").unwrap();
    assert!(
        rt.list().unwrap().is_empty(),
        "no ghost left in the runtime"
    );
}
