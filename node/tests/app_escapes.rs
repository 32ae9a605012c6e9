//! A hostile app, running as root inside, tries to reach the host on both runtimes: it
//! reads its own id map and capability sets, then tries a mount, a block device node, a
//! write to `/proc/sysrq-trigger`, reading a host file by its path (directly and after a
//! chroot walk-up), seeing host processes (to ptrace them), more processes than its pids
//! limit and more memory than its memory limit, and plants `h -> /` in its volume. It
//! writes what happened to its volume; the test asserts every attempt failed, and that a
//! next release naming the planted symlink as its volume `source` is refused. These are the rows of the isolation table in
//! docs/security.md.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::{collections::BTreeMap, fs, path::Path, time::Duration};

use archy_node::runtime::{podman::Podman, process::ProcessRuntime, ContainerSpec, Runtime};

/// The hostile app: each line of its report is `name=result`.
fn script(canary: &Path, test_pid: u32) -> String {
    let canary = canary.display();
    [
        "r=/data/report; : > $r; mkdir -p /tmp",
        "echo uid_map=$(head -n1 /proc/self/uid_map | tr -s ' ' ' ' | sed 's/^ //') >> $r",
        "grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status | sed 's/:[[:space:]]*/=/' >> $r",
        "mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo mount=MOUNTED >> $r || echo mount=refused >> $r",
        "mknod /tmp/disk b 8 0 2>/dev/null && echo mknod=MADE >> $r || echo mknod=refused >> $r",
        // 'h' only prints the sysrq help to the kernel log, should the write get through.
        "(echo h > /proc/sysrq-trigger) 2>/dev/null && echo sysrq=WROTE >> $r || echo sysrq=refused >> $r",
        // A kernel without sysrq-trigger still has /proc/sys, read-only for the app.
        "(echo archy > /proc/sys/kernel/domainname) 2>/dev/null && echo proc_sys=WROTE >> $r || echo proc_sys=refused >> $r",
        &format!("cat {canary} >/dev/null 2>&1 && echo host_file=READ >> $r || echo host_file=refused >> $r"),
        &format!("mkdir -p /jail; chroot /jail /bin/busybox sh -c 'cd ../../../../..; cat {canary}' >/dev/null 2>&1 && echo chroot_escape=READ >> $r || echo chroot_escape=refused >> $r"),
        &format!("test -e /proc/{test_pid} && echo host_process=VISIBLE >> $r || echo host_process=hidden >> $r"),
        "head -c 200000000 /dev/zero | tail > /dev/null; echo memory_exit=$? >> $r",
        // A symlink to the host's root, planted for a later release to name as `source`.
        "ln -s / /data/h",
        "echo done=1 >> $r",
        // The shell dies at the first fork the pids limit refuses; the last line it
        // wrote says how far it got.
        "for i in $(seq 1 64); do sleep 30 & echo spawned=$i >> $r; done",
        "echo spawned=all >> $r",
        "exec sleep 600",
    ]
    .join("\n")
}

/// Runs the hostile app on `rt` and returns its report.
fn report_of(rt: &dyn Runtime, dir: &Path, id: &str) -> BTreeMap<String, String> {
    let canary = dir.join("host-canary");
    fs::write(&canary, "host secret").unwrap();
    common::busybox_image(dir, "escape test");
    let text = format!(
        "app:\n  id: {id}\n  name: T\n  version: 1.0.0\n  description: {{short: t}}\n  container:\n    image: ./img.oci.tar\n    cmd: [/bin/busybox, sh, -c, {:?}]\n    volumes: [{{name: data, target: /data}}]\n    capabilities_add: [SYS_CHROOT]\n  resources: {{memory_limit: 64m, pids_limit: 24}}\n",
        script(&canary, std::process::id())
    );
    let (m, archive, image) = common::manifest_with_image(dir, &text);
    let m = m.normalized();
    let data = dir.join("appdata");
    let spec = ContainerSpec {
        manifest_hash: m.manifest_hash(),
        manifest: m,
        image: image.clone(),
        publish_ip: "127.0.0.1".parse().unwrap(),
        data_dir: data.clone(),
        secrets: Default::default(),
        owner: archy_node::app_identity::AppOwner::Catalog,
    };
    let _ = rt.remove(id);
    rt.load_image(&archive, &image).unwrap();
    rt.create(&spec).unwrap();
    rt.start(id).unwrap();
    let report = data.join("volumes/data/report");
    let finished = archy_harness::poll_until("the app's report", Duration::from_secs(60), || {
        fs::read_to_string(&report)
            .ok()
            .filter(|t| t.contains("done=1"))
    });
    if let Err(e) = finished {
        let logs = rt.logs(id, 50).unwrap_or_default();
        let _ = rt.remove(id);
        panic!("{e}: the app did not finish its report\nlogs: {logs}");
    }
    // Give the fork loop time to end one way or the other.
    std::thread::sleep(Duration::from_secs(3));
    let text = fs::read_to_string(&report).unwrap();
    rt.remove(id).unwrap();
    // The next release names the planted symlink as its volume's source: refused.
    let text2 = text_with_source(&spec.manifest, "h");
    let mut next = spec.clone();
    next.manifest = text2;
    next.manifest_hash = next.manifest.manifest_hash();
    let e = rt
        .create(&next)
        .expect_err("a source through a planted symlink")
        .to_string();
    assert!(e.contains("symlink") && e.contains("volume data"), "{e}");
    assert!(
        rt.list().unwrap().iter().all(|c| c.app_id != id),
        "nothing created"
    );
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// `m` with its first volume bound from `source` inside the volume.
fn text_with_source(m: &archy_catalog::AppManifest, source: &str) -> archy_catalog::AppManifest {
    let mut m = m.clone();
    m.container.volumes[0].source = Some(source.to_string());
    m
}

/// Every row of the isolation table, asserted on one runtime's report.
fn assert_confined(runtime: &str, r: &BTreeMap<String, String>) {
    let row = |k: &str| {
        r.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{runtime}: no {k} in {r:?}"))
    };
    let map: Vec<u64> = row("uid_map")
        .split(' ')
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(map.first(), Some(&0), "{runtime}: uid_map {map:?}");
    assert!(
        map.get(1).is_some_and(|host| *host >= 100_000) && map.get(2) == Some(&65_536),
        "{runtime}: root in the app must be an unprivileged host id, uid_map {map:?}"
    );
    let caps = |k: &str| u64::from_str_radix(&row(k), 16).unwrap();
    const SYS_ADMIN: u64 = 1 << 21;
    const MKNOD: u64 = 1 << 27;
    const SYS_MODULE: u64 = 1 << 16;
    const SYS_PTRACE: u64 = 1 << 19;
    for k in ["CapEff", "CapBnd"] {
        assert_eq!(
            caps(k) & (SYS_ADMIN | MKNOD | SYS_MODULE | SYS_PTRACE),
            0,
            "{runtime}: {k} {}",
            row(k)
        );
    }
    assert_eq!(row("Seccomp"), "2", "{runtime}: seccomp filter");
    assert_eq!(row("NoNewPrivs"), "1", "{runtime}: no_new_privs");
    for (k, want) in [
        ("mount", "refused"),
        ("mknod", "refused"),
        ("sysrq", "refused"),
        ("proc_sys", "refused"),
        ("host_file", "refused"),
        ("chroot_escape", "refused"),
        ("host_process", "hidden"),
    ] {
        assert_eq!(row(k), want, "{runtime}: {k}");
    }
    // Killed by the OOM killer (SIGKILL: 128 + 9) instead of growing past 64 MiB.
    assert_eq!(row("memory_exit"), "137", "{runtime}: memory limit");
    let spawned = row("spawned");
    assert!(
        spawned.parse::<u32>().is_ok_and(|n| n < 24),
        "{runtime}: the pids limit of 24 let {spawned} sleeps start"
    );
}

#[test]
fn a_hostile_app_cannot_reach_the_host_on_the_process_runtime() {
    if !common::can_run(common::needs_process_apps()) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::new(
        "esc",
        d.path().join("node/process"),
        env!("CARGO_BIN_EXE_archy"),
    )
    .with_ids(archy_node::runtime::node_ids(&d.path().join("node")));
    let report = report_of(&rt, d.path(), "org.example.escape");
    assert_confined("process", &report);
}

#[test]
fn a_hostile_app_cannot_reach_the_host_on_podman() {
    if !common::can_run(common::needs_busybox().or(common::needs_podman())) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let node = format!("esc{}", std::process::id());
    let rt = Podman::new(&node, archy_node::runtime::node_ids(d.path()));
    let report = report_of(&rt, d.path(), "org.example.escape");
    assert_confined("podman", &report);
}
