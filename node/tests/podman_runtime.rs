//! The podman runtime against the real engine: load a packed busybox image, run it,
//! reach it over HTTP, find it again from a fresh runtime (adoption), stop, remove.
//! Skips with a printed reason only when `podman info` fails on this host.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::{fs, net::SocketAddr, time::Duration};

use archy_node::{
    planner::{ContainerStatus, Liveness},
    runtime::{health, podman::Podman, ContainerSpec, Runtime},
};

#[test]
fn podman_runs_adopts_and_removes_an_app() {
    if !common::can_run(
        Podman::check()
            .err()
            .map(|why| format!("podman does not work here: {why}")),
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    common::busybox_image(d.path(), "podman test page");
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let text = format!(
        "app:\n  id: org.example.podtest\n  name: T\n  version: 1.0.0\n  description: {{short: t}}\n  container:\n    image: ./img.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{host: {port}, container: 8080}}]\n    volumes: [{{name: data, target: /data}}]\n"
    );
    let (m, archive, image) = common::manifest_with_image(d.path(), &text);
    let m = m.normalized();
    let node = format!("t{}", std::process::id());
    let rt = Podman::new(&node, archy_node::runtime::node_ids(d.path()));
    let spec = ContainerSpec {
        manifest_hash: m.manifest_hash(),
        manifest: m,
        image: image.clone(),
        publish_ip: "127.0.0.1".parse().unwrap(),
        data_dir: d.path().join("appdata"),
        secrets: Default::default(),
        owner: archy_node::app_identity::AppOwner::Catalog,
    };

    rt.load_image(&archive, &image).unwrap();
    assert!(rt.image_loaded(&image).unwrap());
    let _ = rt.remove("org.example.podtest");
    rt.create(&spec).unwrap();
    rt.start("org.example.podtest").unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_until(
        "the app to answer over HTTP",
        Duration::from_secs(10),
        || health::http(addr, "/", Duration::from_secs(1)).is_ok(),
    );
    assert!(
        d.path().join("appdata/volumes/data").is_dir(),
        "volume dir under the app data dir"
    );

    // A fresh runtime (as after a daemon restart) finds the container by its labels.
    let again = Podman::new(&node, archy_node::runtime::node_ids(d.path()))
        .list()
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].manifest_hash, spec.manifest_hash);
    assert_eq!(
        (again[0].status, again[0].liveness),
        (ContainerStatus::Running, Liveness::Alive)
    );
    // Another node sharing the engine sees none of it.
    assert!(
        Podman::new(format!("{node}x"), archy_node::runtime::node_ids(d.path()))
            .list()
            .unwrap()
            .is_empty()
    );

    rt.stop("org.example.podtest").unwrap();
    assert_eq!(rt.list().unwrap()[0].status, ContainerStatus::Exited);
    rt.remove("org.example.podtest").unwrap();
    assert!(
        rt.list().unwrap().is_empty(),
        "no ghost left in the runtime"
    );
}

/// The executor end to end on podman: install with monotonic progress to healthy, a
/// second pass does nothing, env drift is repaired by one recreate and then converges,
/// a corrupted archive is refused before loading, uninstall leaves no ghost and keeps data.
#[test]
fn executor_installs_converges_repairs_drift_and_uninstalls() {
    use archy_node::{
        executor::{reconcile, AppTarget, DirImageSource, Stage},
        planner::{Action, DesiredApp},
    };
    if !common::can_run(
        Podman::check()
            .err()
            .map(|why| format!("podman does not work here: {why}")),
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    common::busybox_image(d.path(), "executor test page");
    let port = 20_000 + (std::process::id() % 20_000) as u16 + 1;
    let text = format!(
        "app:\n  id: org.example.exectest\n  name: T\n  version: 1.0.0\n  description: {{short: t}}\n  container:\n    image: ./img.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{host: {port}, container: 8080}}]\n  generated_secrets: [{{name: ADMIN_TOKEN, kind: hex32}}]\n  health_check: {{type: http, port: 8080, path: /, interval: 1s, retries: 10}}\n"
    );
    let (m, archive, image) = common::manifest_with_image(d.path(), &text);
    let blobs = d.path().join("blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::copy(&archive, blobs.join(image.hash.to_hex())).unwrap();
    let source = DirImageSource {
        dirs: vec![blobs.clone()],
    };
    let node = format!("e{}", std::process::id());
    let rt = Podman::new(&node, archy_node::runtime::node_ids(d.path()));
    let target = |m: &archy_catalog::AppManifest| {
        let m = m.normalized();
        AppTarget {
            desired: DesiredApp {
                app_id: m.id.clone(),
                manifest_hash: m.manifest_hash(),
                image: image.hash,
                running: true,
            },
            spec: ContainerSpec {
                manifest_hash: m.manifest_hash(),
                manifest: m,
                image: image.clone(),
                publish_ip: "127.0.0.1".parse().unwrap(),
                data_dir: d.path().join("appdata"),
                secrets: Default::default(),
                owner: archy_node::app_identity::AppOwner::Catalog,
            },
        }
    };
    let id = "org.example.exectest";
    let _ = rt.remove(id);

    let mut events = Vec::new();
    let t1 = target(&m);
    let actions = reconcile(&rt, &source, id, Some(&t1), false, &mut |e| events.push(e)).unwrap();
    assert!(
        actions.contains(&Action::Create) && actions.contains(&Action::Start),
        "{actions:?}"
    );
    let stages: Vec<Stage> = events.iter().map(|e| e.stage).collect();
    assert!(
        stages.windows(2).all(|w| w[0] <= w[1]),
        "monotonic: {stages:?}"
    );
    for s in [Stage::Create, Stage::Start, Stage::Healthy, Stage::Done] {
        assert!(stages.contains(&s), "missing {s:?} in {stages:?}");
    }
    let secret = fs::read_to_string(d.path().join("appdata/secrets/ADMIN_TOKEN")).unwrap();
    assert!(
        events.iter().all(|e| !e.message.contains(&secret)),
        "secrets never appear in progress"
    );

    // Level-triggered: nothing to do the second time.
    assert_eq!(
        reconcile(&rt, &source, id, Some(&t1), true, &mut |_| {}).unwrap(),
        vec![]
    );

    // Drift (env) is repaired by exactly one recreate, then converges.
    let mut m2 = m.clone();
    m2.container.env.insert("MODE".into(), "changed".into());
    let t2 = target(&m2);
    assert_eq!(
        reconcile(&rt, &source, id, Some(&t2), true, &mut |_| {}).unwrap(),
        vec![Action::Recreate, Action::Start]
    );
    assert_eq!(
        reconcile(&rt, &source, id, Some(&t2), true, &mut |_| {}).unwrap(),
        vec![]
    );
    assert_eq!(
        fs::read_to_string(d.path().join("appdata/secrets/ADMIN_TOKEN")).unwrap(),
        secret,
        "secret stable across recreate"
    );

    // Uninstall: no ghost in the runtime, data kept.
    reconcile(&rt, &source, id, None, true, &mut |_| {}).unwrap();
    assert!(rt.list().unwrap().is_empty());
    assert!(d.path().join("appdata/secrets/ADMIN_TOKEN").exists());

    // A corrupted archive never reaches the runtime.
    let mut bytes = fs::read(blobs.join(image.hash.to_hex())).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(blobs.join(image.hash.to_hex()), bytes).unwrap();
    let rmi = std::process::Command::new("podman")
        .args([
            "rmi",
            "-f",
            image.config_digest.trim_start_matches("sha256:"),
        ])
        .output();
    assert!(rmi.is_ok());
    let mut last = None;
    let err = reconcile(&rt, &source, id, Some(&t1), false, &mut |e| last = Some(e)).unwrap_err();
    assert!(err.to_string().contains("verification failed"), "{err}");
    assert_eq!(last.unwrap().stage, Stage::Failed);
    assert!(rt.list().unwrap().is_empty());
}
