//! The lifecycle gate in CI: `tests/lifecycle/gate.sh --iterations 3` on both runtimes,
//! with this build's `archy`. Every example app goes through install, reachable, stop,
//! start, restart, daemon restart (adopted), update, uninstall (no ghost), reinstall
//! (data found) and purge, and an unhealthy update must roll back; the gate's last line
//! must be `N passed, 0 failed`. The publisher's update is signed with this build's
//! `catalog-signer` (built beside `archy` by `cargo test --workspace`; otherwise the
//! gate builds it).
//!
//! One test runs both gates one after the other, so the two never compete for the CPU.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{path::Path, process::Command};

mod common;

fn gate(runtime: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let archy = Path::new(env!("CARGO_BIN_EXE_archy"));
    let signer = archy.with_file_name("catalog-signer");
    let mut cmd = Command::new(root.join("tests/lifecycle/gate.sh"));
    cmd.args(["--runtime", runtime, "--iterations", "3"])
        .env("ARCHY", archy);
    if signer.exists() {
        cmd.env("CATALOG_SIGNER", signer);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let passed = last
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        out.status.success() && passed.is_some_and(|n| n > 0),
        "gate on {runtime} ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_example_app_passes_the_lifecycle_gate_on_both_runtimes() {
    let needs = common::needs_root()
        .or(common::needs_busybox())
        .or(common::needs_podman());
    if !common::can_run(needs) {
        return;
    }
    gate("process");
    gate("podman");
}
