//! `archy seed` and `archy fetch` as a user runs them by hand: real processes on
//! 127.0.0.1, one blob fetched from two seeders at once, a dead peer dropped, nobody
//! holding it, and bad arguments refused with the argument named.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{fs, path::Path};

use archy_catalog::oci::hash_file;
use common::{archy, noise, Proc};
use serde_json::Value;

mod common;

/// `archy seed --import FILE --json` in `data`: the process and its ready line.
fn seed(data: &Path, file: &Path) -> (Proc, Value) {
    let p = common::start(
        &[
            "seed".into(),
            "--data".into(),
            data.to_string_lossy().into_owned(),
            "--import".into(),
            file.to_string_lossy().into_owned(),
            "--json".into(),
        ],
        "{",
    );
    let v: Value = serde_json::from_str(&p.ready).unwrap();
    (p, v)
}

fn fetch_json(args: &[&str]) -> (bool, Value, String) {
    let out = archy(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("archy {args:?} printed no JSON ({e}): {stdout}"));
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_blob_from_two_seeders_then_without_a_dead_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n).to_string_lossy().into_owned();
    let file = tmp.path().join("blob.bin");
    fs::write(&file, noise(3 << 20)).unwrap();
    let (want, size) = hash_file(&file).unwrap();

    let (origin, o) = seed(&tmp.path().join("origin"), &file);
    let (mut peer, p) = seed(&tmp.path().join("peer"), &file);
    assert_eq!(o["blobs"][0], want.to_string(), "{o}");
    let origin_addr = o["addr"].as_str().unwrap().to_string();
    let peer_addr = p["addr"].as_str().unwrap().to_string();

    // Peers before the origin: a peer that holds everything leaves the origin nothing
    // (but the endgame).
    let (ok, v, stderr) = fetch_json(&[
        "fetch",
        &want.to_string(),
        "--data",
        &d("p"),
        "--origin",
        &origin_addr,
        "--peer",
        &peer_addr,
        "--json",
    ]);
    assert!(
        ok,
        "{v}
{stderr}"
    );
    assert!(
        v["bytes_by_provider"][&peer_addr].as_u64() >= Some(size - (1 << 20)),
        "{v}"
    );

    // Two seeders named as peers both serve a share of one fetch; the copy written out
    // is the blob.
    let out = tmp.path().join("out.bin");
    let (ok, v, stderr) = fetch_json(&[
        "fetch",
        &want.to_string(),
        "--data",
        &d("a"),
        "--peer",
        &origin_addr,
        "--peer",
        &peer_addr,
        "--piece-kib",
        "256",
        "--out",
        &out.to_string_lossy(),
        "--json",
    ]);
    assert!(ok, "{v}\n{stderr}");
    assert_eq!(v["verified"], true);
    assert_eq!(v["size"], size);
    let shares = v["bytes_by_provider"].as_object().unwrap();
    assert_eq!(shares.len(), 2, "both seeders sent a share: {v}");
    assert!(shares.values().map(|b| b.as_u64().unwrap()).sum::<u64>() >= size);
    assert_eq!(hash_file(&out).unwrap(), (want, size));

    // Fetching again into the same data dir costs nothing.
    let (ok, v, _) = fetch_json(&[
        "fetch",
        &want.to_string(),
        "--data",
        &d("a"),
        "--origin",
        &origin_addr,
        "--json",
    ]);
    assert!(ok);
    assert_eq!(v["already_held"], size, "{v}");

    // The peer dies: a new fetch that still names it is served by the origin alone,
    // and the progress display (stderr, not a terminal) says who gave what.
    peer.child.kill().unwrap();
    peer.child.wait().unwrap();
    let out = archy(&[
        "fetch",
        &want.to_string(),
        "--data",
        &d("b"),
        "--origin",
        &origin_addr,
        "--peer",
        &peer_addr,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("verified"), "{stderr}");
    assert!(
        stderr.contains("origin"),
        "the origin's share is shown: {stderr}"
    );
    assert!(
        !stderr.lines().any(|l| l
            .trim_start()
            .starts_with(&format!("peer {}", &peer_addr[..8]))),
        "the dead peer gave nothing (the fetch does not wait out its dial): {stderr}"
    );
    drop(origin);

    // Nobody holds it any more: the JSON summary says so and the exit code fails.
    let (ok, v, _) = fetch_json(&[
        "fetch",
        &want.to_string(),
        "--data",
        &d("c"),
        "--origin",
        &origin_addr,
        "--out",
        &d("c/out.bin"),
        "--json",
    ]);
    assert!(!ok);
    assert_eq!(v["verified"], false, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert!(
        !tmp.path().join("c").join("out.bin").exists(),
        "nothing written on failure"
    );
}

#[test]
fn bad_arguments_are_refused_with_what_was_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("n").to_string_lossy().into_owned();
    let hash = format!("blake3:{}", "ab".repeat(32));
    for (args, names) in [
        (
            vec!["fetch", "not-a-hash", "--data", &data, "--peer", "x"],
            "not-a-hash",
        ),
        (
            vec!["fetch", &hash, "--data", &data, "--peer", "nobody@nowhere"],
            "nobody@nowhere",
        ),
        (vec!["fetch", &hash, "--data", &data], "--origin or --peer"),
    ] {
        let out = archy(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "archy {args:?} was accepted");
        assert!(
            stderr.contains(names),
            "archy {args:?}: the error names {names:?}: {stderr}"
        );
        assert!(!stderr.contains("ERROR"), "a clean exit: {stderr}");
    }
}
