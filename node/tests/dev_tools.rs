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
        let o = archy(
            &[
                "app", "pack", "rootfs", "--out", out, "--name", "hi", "--json",
            ],
            d.path(),
        );
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

/// `archy app init` makes a folder whose manifest validates and whose README's steps
/// pack it; it never writes into a folder that has files.
#[test]
fn init_scaffolds_an_app_that_validates_and_packs() {
    let d = tempfile::tempdir().unwrap();
    let o = archy(&["app", "init", "notes", "--json"], d.path());
    assert!(o.status.success(), "{o:?}");
    let made: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(made["id"], "org.example.notes");
    let app = d.path().join("notes");
    let v = archy(&["app", "validate", "app.yaml"], &app);
    assert!(v.status.success(), "{v:?}");
    let readme = fs::read_to_string(app.join("README.md")).unwrap();
    assert!(readme.contains("archy app pack rootfs --out notes.oci.tar --name notes"));
    let p = archy(
        &[
            "app",
            "pack",
            "rootfs",
            "--out",
            "notes.oci.tar",
            "--name",
            "notes",
        ],
        &app,
    );
    assert!(p.status.success(), "{p:?}");
    // The manifest names the archive pack wrote: publish's build step resolves it.
    archy_catalog::build::build_release(&app.join("app.yaml")).unwrap();
    let again = archy(&["app", "init", "notes"], d.path());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let bad = archy(&["app", "init", "x", "--id", "Bad Id"], d.path());
    assert!(!bad.status.success());
    assert!(
        !d.path().join("x").exists(),
        "nothing is left of a failed init"
    );
}

/// `pack --from` takes an archive (or an image podman holds) as it is, after checking
/// it is one a node can run; an archive `pack` wrote loads into podman under its name.
#[test]
fn pack_from_an_archive_or_podman_keeps_the_image_as_it_is() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("rootfs/www")).unwrap();
    fs::write(d.path().join("rootfs/www/index.html"), "hi").unwrap();
    let json = |args: &[&str]| {
        let o = archy(args, d.path());
        assert!(o.status.success(), "{args:?}: {o:?}");
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let packed = json(&["app", "pack", "rootfs", "--out", "hello.oci.tar", "--json"]);
    assert_eq!(packed["name"], "hello", "named after the file");
    let copied = json(&[
        "app",
        "pack",
        "--from",
        "hello.oci.tar",
        "--out",
        "copy.tar",
        "--json",
    ]);
    assert_eq!(copied["hash"], packed["hash"], "the same bytes");
    assert_eq!(copied["format"], "oci-archive");
    fs::write(d.path().join("junk.tar"), vec![7u8; 4096]).unwrap();
    let o = archy(
        &["app", "pack", "--from", "junk.tar", "--out", "j.tar"],
        d.path(),
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not an image Archy can run"),
        "{o:?}"
    );
    assert!(
        !d.path().join("j.tar").exists(),
        "nothing written for a refused image"
    );
    let o = archy(
        &["app", "pack", "rootfs", "--from", "x.tar", "--out", "k.tar"],
        d.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "a directory and --from are one or the other"
    );

    if !common::can_run(common::needs_podman()) {
        return;
    }
    let tag = format!("localhost/archy-pack-test-{}", std::process::id());
    let load = std::process::Command::new("podman")
        .args(["load", "-i"])
        .arg(d.path().join("hello.oci.tar"))
        .output()
        .unwrap();
    assert!(load.status.success(), "{load:?}");
    let loaded = String::from_utf8_lossy(&load.stdout);
    assert!(
        loaded.contains("hello"),
        "podman names it after the app: {loaded}"
    );
    let image = loaded.trim().rsplit(' ').next().unwrap().to_string();
    let tagged = std::process::Command::new("podman")
        .args(["tag", &image, &tag])
        .status()
        .unwrap();
    assert!(tagged.success());
    let from_podman = json(&[
        "app",
        "pack",
        "--from",
        &format!("podman:{tag}"),
        "--out",
        "saved.tar",
        "--json",
    ]);
    let _ = std::process::Command::new("podman")
        .args(["rmi", "-f", &tag, &image])
        .output();
    assert_eq!(
        from_podman["config_digest"], packed["config_digest"],
        "podman keeps the image config: {from_podman}"
    );
}
