//! `archy app validate|render|pack` and `archy demo --once`, run as the real binary.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{fs, path::Path};

mod common;

fn archy(args: &[&str], dir: &Path) -> std::process::Output {
    common::archy_cmd(args).dir(dir).output().unwrap()
}

const HELLO: &str = r#"app:
  id: org.example.hello
  name: Hello
  version: 1.0.0
  description: { short: "A tiny web server" }
  container:
    image: ./hello.oci.tar
    cmd: ["/bin/busybox", "httpd", "-f", "-p", "8080"]
    ports: [{ host: 18080, container: 8080 }]
  health_check: { type: http, port: 8080, path: / }
"#;

#[test]
fn validate_accepts_the_minimal_manifest_and_explains_a_bad_one() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("hello.yaml"), HELLO).unwrap();
    let out = archy(&["app", "validate", "hello.yaml"], d.path());
    assert!(out.status.success(), "{out:?}");

    let bad = HELLO
        .replace("host: 18080", "host: 80")
        .replace("    ports:", "    privileged: true\n    ports:");
    fs::write(d.path().join("bad.yaml"), bad).unwrap();
    let out = archy(&["app", "validate", "bad.yaml"], d.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("app.container.ports[0].host: 80 is not allowed"),
        "{err}"
    );
    assert!(err.contains("app.container.privileged"), "{err}");

    let out = archy(&["app", "validate", "bad.yaml", "--json"], d.path());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 2);
}

#[test]
fn render_fills_defaults_and_shows_the_runtime_view() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("hello.yaml"), HELLO).unwrap();
    let out = archy(&["app", "render", "hello.yaml", "--json"], d.path());
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest"]["app"]["health_check"]["interval"], "10s");
    assert_eq!(v["runtime"]["ports"][0], "127.0.0.1:18080:8080/tcp");
    assert_eq!(v["runtime"]["privileged"], false);
}

#[test]
fn pack_is_deterministic() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("rootfs/www")).unwrap();
    fs::write(d.path().join("rootfs/www/index.html"), "hi").unwrap();
    let hash = |out: &str| {
        let o = archy(&["app", "pack", "rootfs", "--out", out, "--json"], d.path());
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["hash"].clone()
    };
    assert_eq!(hash("a.tar"), hash("b.tar"));
    let o = archy(&["app", "pack", "missing", "--out", "c.tar"], d.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing"));
}

/// The image's command comes after `--`, with arguments that look like flags.
#[test]
fn pack_takes_the_command_after_a_double_dash() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("rootfs")).unwrap();
    let cmd = ["/bin/busybox", "httpd", "-f", "-p", "8080"];
    let mut args = vec!["app", "pack", "rootfs", "--out", "c.tar", "--"];
    args.extend(cmd);
    let o = archy(&args, d.path());
    assert!(o.status.success(), "{o:?}");
    let info = archy_catalog::oci::inspect(&d.path().join("c.tar")).unwrap();
    assert_eq!(info.config.cmd, Some(cmd.map(String::from).to_vec()));
}

/// The demo on its default runtime (podman here when it works) and forced onto the
/// engine-less process runtime; one after the other, since both publish the same ports.
#[test]
fn demo_once_runs_to_its_summary_on_both_runtimes() {
    // The process run needs root; the default run uses podman when it works.
    if !common::can_run(common::needs_root().or(common::needs_busybox())) {
        return;
    }
    for runtime in ["default", "process"] {
        let d = tempfile::tempdir().unwrap();
        let mut args = vec!["demo", "--once", "--dir", "work"];
        if runtime == "process" {
            args.extend(["--runtime", "process"]);
        }
        let out = archy(&args, d.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{runtime}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.lines().any(|l| l.ends_with(" passed, 0 failed")),
            "{stdout}"
        );
        if runtime == "process" {
            assert!(stdout.contains("process runtime"), "{stdout}");
        }
        // A successful demo logs no errors between its steps (relay clients close their
        // connections with a handshake, and nothing else goes wrong unseen).
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
        assert!(errors.is_empty(), "{runtime}: {errors:#?}");
    }
}
