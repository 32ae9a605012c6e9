//! The `catalog-signer` commands exactly as the issue writes them, run as a real process
//! on real files; each refusal must be one line naming the attack or defect.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use archy_catalog::oci;

fn signer(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_catalog-signer"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run catalog-signer")
}

/// Runs a command given as words (no argument has a space), whatever its outcome.
fn signer_words(dir: &Path, words: &str) -> Output {
    signer(dir, &words.split_whitespace().collect::<Vec<_>>())
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = signer(dir, args);
    assert!(
        out.status.success(),
        "catalog-signer {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command given as words (no argument has a space) that must succeed.
fn run(dir: &Path, words: &str) -> String {
    ok(dir, &words.split_whitespace().collect::<Vec<_>>())
}

/// Runs a verify that must fail; returns its single stderr line.
fn refused(dir: &Path, args: &[&str]) -> String {
    let out = signer(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected refusal for {args:?}: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line expected, got {err:?}");
    err
}

/// A publisher's working dir: keys, one app with a real OCI archive, a signed root.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_path_buf();
    for k in ["root1", "root2", "catalog", "timestamp"] {
        let id = ok(&d, &["keygen", "--out", &format!("keys/{k}")]);
        assert_eq!(id.trim().len(), 64, "prints the key id");
    }
    let rootfs = d.join("rootfs");
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::write(rootfs.join("www/index.html"), "hi").unwrap();
    fs::create_dir_all(d.join("apps")).unwrap();
    oci::pack_rootfs(
        &rootfs,
        &d.join("apps/hello.oci.tar"),
        &oci::PackOptions::default(),
    )
    .unwrap();
    fs::write(
        d.join("apps/hello.yaml"),
        r#"app:
  id: org.example.hello
  name: Hello
  version: 1.0.0
  description: { short: "A tiny web server" }
  container:
    image: ./hello.oci.tar
    cmd: ["/bin/busybox", "httpd", "-f", "-p", "8080"]
    ports: [{ host: 18080, container: 8080 }]
  health_check: { type: http, port: 8080, path: / }
"#,
    )
    .unwrap();
    run(&d, "root init --root-key keys/root1.pub --root-key keys/root2.pub --root-threshold 2 --catalog-key keys/catalog.pub --catalog-threshold 1 --timestamp-key keys/timestamp.pub --expires 365d --out root.json");
    (tmp, d)
}

fn publish(d: &Path, catalog_version: &str, ts_version: &str) {
    ok(
        d,
        &[
            "catalog",
            "build",
            "--apps",
            "apps",
            "--version",
            catalog_version,
            "--expires",
            "30d",
            "--out",
            "catalog.json",
        ],
    );
    ok(d, &["sign", "catalog.json", "--key", "keys/catalog.key"]);
    ok(
        d,
        &[
            "timestamp",
            "--catalog",
            "catalog.json",
            "--version",
            ts_version,
            "--expires",
            "1d",
            "--out",
            "timestamp.json",
        ],
    );
    run(d, "sign timestamp.json --key keys/timestamp.key");
}

const VERIFY_ALL: &[&str] = &[
    "verify",
    "--root",
    "root.json",
    "--catalog",
    "catalog.json",
    "--timestamp",
    "timestamp.json",
];

#[test]
fn keygen_writes_a_0600_secret_and_refuses_to_overwrite() {
    let (_t, d) = setup();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(d.join("keys/root1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = signer(&d, &["keygen", "--out", "keys/root1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn full_publication_verifies() {
    let (_t, d) = setup();
    ok(&d, &["sign", "root.json", "--key", "keys/root1.key"]);
    ok(&d, &["sign", "root.json", "--key", "keys/root2.key"]);
    publish(&d, "1", "1");
    let out = ok(&d, VERIFY_ALL);
    assert!(out.starts_with("ok:"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&d, &[VERIFY_ALL, &["--json"]].concat())).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["verified"]["catalog"]["apps"], 1);
}

#[test]
fn root_below_threshold_is_named() {
    let (_t, d) = setup();
    ok(&d, &["sign", "root.json", "--key", "keys/root1.key"]);
    let err = refused(&d, &["verify", "--root", "root.json"]);
    assert!(err.contains("below threshold"), "{err}");
}

#[test]
fn each_attack_gets_its_one_line_reason() {
    let (_t, d) = setup();
    run(
        &d,
        "sign root.json --key keys/root1.key --key keys/root2.key",
    );
    publish(&d, "1", "1");

    // Bad signature: the catalog changed after signing (and a fresh timestamp pins it).
    let good = fs::read_to_string(d.join("catalog.json")).unwrap();
    fs::write(d.join("catalog.json"), good.replace("18080", "18081")).unwrap();
    run(
        &d,
        "timestamp --catalog catalog.json --version 2 --out timestamp.json",
    );
    run(&d, "sign timestamp.json --key keys/timestamp.key");
    assert!(refused(&d, VERIFY_ALL).contains("bad signature"));

    // Mix-and-match: a valid catalog that is not the one the timestamp pins.
    publish(&d, "1", "1");
    let ts = fs::read(d.join("timestamp.json")).unwrap();
    publish(&d, "2", "2");
    fs::write(d.join("timestamp.json"), ts).unwrap();
    let err = refused(&d, VERIFY_ALL);
    assert!(err.contains("does not match the timestamp"), "{err}");

    // Unknown key: the catalog signed by someone else's key.
    ok(&d, &["keygen", "--out", "keys/mallory"]);
    run(
        &d,
        "catalog build --apps apps --version 3 --out catalog.json",
    );
    ok(&d, &["sign", "catalog.json", "--key", "keys/mallory.key"]);
    run(
        &d,
        "timestamp --catalog catalog.json --version 3 --out timestamp.json",
    );
    run(&d, "sign timestamp.json --key keys/timestamp.key");
    assert!(refused(&d, VERIFY_ALL).contains("unknown key"));

    // Document too large.
    fs::write(d.join("timestamp.json"), " ".repeat(20_000)).unwrap();
    assert!(refused(&d, VERIFY_ALL).contains("document too large"));
}

#[test]
fn state_remembers_versions_and_refuses_rollback() {
    let (_t, d) = setup();
    run(
        &d,
        "sign root.json --key keys/root1.key --key keys/root2.key",
    );
    publish(&d, "1", "1");
    let old_cat = fs::read(d.join("catalog.json")).unwrap();
    let old_ts = fs::read(d.join("timestamp.json")).unwrap();
    publish(&d, "2", "2");
    let state = [VERIFY_ALL, &["--state", "state"]].concat();
    ok(&d, &state);
    fs::write(d.join("catalog.json"), old_cat).unwrap();
    fs::write(d.join("timestamp.json"), old_ts).unwrap();
    // Without memory the old pair is fine; with it, it is a rollback.
    ok(&d, VERIFY_ALL);
    let err = refused(&d, &state);
    assert!(
        err.contains("rollback: timestamp from version 2 to 1"),
        "{err}"
    );
    let out = signer(&d, &[state.as_slice(), &["--json"]].concat());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["kind"], "rollback");
}

#[test]
fn expired_timestamp_is_named() {
    let (_t, d) = setup();
    run(
        &d,
        "sign root.json --key keys/root1.key --key keys/root2.key",
    );
    publish(&d, "1", "1");
    run(
        &d,
        "timestamp --catalog catalog.json --version 2 --expires 1s --out timestamp.json",
    );
    run(&d, "sign timestamp.json --key keys/timestamp.key");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(refused(&d, VERIFY_ALL).starts_with("FAILED timestamp.json: expired"));
}

#[test]
fn rotation_walks_the_chain() {
    let (_t, d) = setup();
    run(
        &d,
        "sign root.json --key keys/root1.key --key keys/root2.key",
    );
    ok(&d, &["keygen", "--out", "keys/root3"]);
    run(&d, "root rotate --root root.json --root-key keys/root2.pub --root-key keys/root3.pub --out root2.json");
    // Only the new keys: the old root's threshold is not met.
    run(
        &d,
        "sign root2.json --key keys/root3.key --key keys/root2.key",
    );
    let err = refused(
        &d,
        &["verify", "--root", "root.json", "--root", "root2.json"],
    );
    assert!(err.contains("root"), "{err}");
    ok(&d, &["sign", "root2.json", "--key", "keys/root1.key"]);
    let out = run(&d, "verify --root root.json --root root2.json");
    assert!(out.contains("root v2"), "{out}");
}

#[test]
fn catalog_build_reports_every_bad_manifest_with_its_file() {
    let (_t, d) = setup();
    fs::write(d.join("apps/bad.yaml"), "app:\n  id: Bad App\n  name: x\n  version: one\n  description: {short: x}\n  container: {image: ./missing.tar, privileged: true}\n").unwrap();
    let out = signer_words(
        &d,
        "catalog build --apps apps --version 1 --out catalog.json --json",
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let msg = json["problems"][0]["message"].as_str().unwrap();
    assert!(json["problems"][0]["file"]
        .as_str()
        .unwrap()
        .ends_with("bad.yaml"));
    for needle in ["app.id", "app.version", "app.container.privileged"] {
        assert!(msg.contains(needle), "{needle} missing in {msg}");
    }
    assert!(
        !d.join("catalog.json").exists(),
        "nothing written on failure"
    );
}

/// Runs a command with `--json`; its stdout must be exactly one JSON object with `"ok": true`.
/// Runs a command given as words with `--json`; returns its JSON answer, which must say ok.
fn json_run(dir: &Path, words: &str) -> serde_json::Value {
    let args: Vec<&str> = words.split_whitespace().collect();
    let out = ok(dir, &[&args[..], &["--json"]].concat());
    let json: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{args:?} --json printed no JSON object ({e}): {out}"));
    assert_eq!(json["ok"], true, "{args:?}: {json}");
    json
}

#[test]
fn every_command_answers_with_one_json_object() {
    let (_t, d) = setup();

    let key = json_run(&d, "keygen --out keys/root3");
    assert_eq!(key["keyid"].as_str().unwrap().len(), 64, "{key}");
    assert!(d.join(key["key"].as_str().unwrap()).is_file(), "{key}");
    assert!(d.join(key["pub"].as_str().unwrap()).is_file(), "{key}");

    let root = json_run(&d, "root init --root-key keys/root1.pub --root-key keys/root2.pub --root-threshold 2 --catalog-key keys/catalog.pub --timestamp-key keys/timestamp.pub --out root.json");
    assert_eq!(root["out"], "root.json");
    assert_eq!(root["role"], "root");
    assert_eq!(root["version"], 1);
    assert_eq!(root["signed"], false);
    assert_eq!(root["roles"]["root"]["threshold"], 2);
    assert_eq!(root["roles"]["root"]["keyids"].as_array().unwrap().len(), 2);
    assert!(root["expires"].is_string(), "{root}");

    let signed = json_run(
        &d,
        "sign root.json --key keys/root1.key --key keys/root2.key",
    );
    assert_eq!(signed["file"], "root.json");
    assert_eq!(signed["role"], "root");
    assert_eq!(signed["version"], 1);
    assert_eq!(signed["signatures"], 2);
    assert_eq!(signed["signed_by"].as_array().unwrap().len(), 2);
    assert_eq!(signed["expires"], root["expires"]);

    let catalog = json_run(
        &d,
        "catalog build --apps apps --version 4 --out catalog.json --blobs blobs",
    );
    assert_eq!(catalog["out"], "catalog.json");
    assert_eq!(catalog["role"], "catalog");
    assert_eq!(catalog["version"], 4);
    assert_eq!(catalog["apps"], 1);
    assert_eq!(catalog["releases"][0]["id"], "org.example.hello");
    assert!(catalog["expires"].is_string(), "{catalog}");
    // The blobs dir holds each archive and its hash tree, ready for a web seed.
    let hex = catalog["releases"][0]["image"]["hash"]
        .as_str()
        .unwrap()
        .trim_start_matches("blake3:")
        .to_string();
    let blob = std::fs::read(d.join("blobs").join(&hex)).unwrap();
    let (_, tree) = archy_catalog::hash_tree::hash_tree(&blob[..], blob.len() as u64).unwrap();
    assert_eq!(
        std::fs::read(d.join("blobs").join(format!("{hex}.obao"))).unwrap(),
        tree
    );
    let signed = json_run(&d, "sign catalog.json --key keys/catalog.key");
    assert_eq!(signed["role"], "catalog");
    assert_eq!(signed["version"], 4);

    let ts = json_run(
        &d,
        "timestamp --catalog catalog.json --version 9 --expires 7d --out timestamp.json",
    );
    assert_eq!(ts["out"], "timestamp.json");
    assert_eq!(ts["role"], "timestamp");
    assert_eq!(ts["version"], 9);
    assert_eq!(ts["catalog"]["version"], 4);
    assert!(ts["catalog"]["hash"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));
    let signed = json_run(&d, "sign timestamp.json --key keys/timestamp.key");
    assert_eq!(signed["role"], "timestamp");
    assert_eq!(signed["signed_by"][0], key_id(&d, "timestamp"));

    let verified = json_run(&d, &VERIFY_ALL.join(" "));
    assert_eq!(verified["verified"]["root"]["version"], 1);
    assert_eq!(verified["verified"]["catalog"]["version"], 4);
    assert_eq!(verified["verified"]["timestamp"]["version"], 9);

    let rotated = json_run(&d, "root rotate --root root.json --root-key keys/root3.pub --root-threshold 1 --out root2.json");
    assert_eq!(rotated["out"], "root2.json");
    assert_eq!(rotated["version"], 2);
    assert_eq!(rotated["previous_version"], 1);
    assert_eq!(rotated["old_root_threshold"], 2);
    assert_eq!(rotated["roles"]["root"]["keyids"][0], key["keyid"]);
}

/// The key id in `keys/NAME.pub`, as `keygen` printed it.
fn key_id(d: &Path, name: &str) -> String {
    let public: archy_catalog::keys::PublicKey =
        archy_catalog::keys::load_public(&d.join(format!("keys/{name}.pub"))).unwrap();
    public.key_id().unwrap().to_string()
}

/// Writes a timestamp valid for `validity` and signs it; returns the signer's stderr.
fn sign_timestamp_valid_for(d: &Path, validity: &str) -> String {
    ok(
        d,
        &[
            "timestamp",
            "--catalog",
            "catalog.json",
            "--version",
            "2",
            "--expires",
            validity,
            "--out",
            "timestamp.json",
        ],
    );
    let out = signer(
        d,
        &["sign", "timestamp.json", "--key", "keys/timestamp.key"],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn signing_a_document_that_expires_within_a_day_warns() {
    let (_t, d) = setup();
    publish(&d, "1", "1");
    let err = sign_timestamp_valid_for(&d, "12h");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("warning: timestamp.json expires at "),
        "{err}"
    );
    assert!(
        err.contains("(within a day); nodes will refuse it after that"),
        "{err}"
    );
    assert_eq!(sign_timestamp_valid_for(&d, "7d"), "");
}

#[test]
fn web_seed_base_names_every_image_and_must_be_a_url() {
    let (_t, d) = setup();
    run(
        &d,
        "catalog build --apps apps --version 1 --out catalog.json --web-seed-base https://cdn.example/blobs/",
    );
    let catalog: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("catalog.json")).unwrap()).unwrap();
    let image = &catalog["signed"]["apps"]["org.example.hello"]["releases"]["1.0.0"]["image"];
    let hash = image["hash"]
        .as_str()
        .unwrap()
        .trim_start_matches("blake3:");
    assert_eq!(
        image["web_seeds"][0],
        format!("https://cdn.example/blobs/{hash}"),
        "{image}"
    );
    let out = signer_words(
        &d,
        "catalog build --apps apps --version 2 --out c2.json --web-seed-base ftp://cdn.example",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--web-seed-base"));
    assert!(!d.join("c2.json").exists());
}
