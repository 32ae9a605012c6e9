//! `verify`: checking documents exactly as a node does, optionally remembering the
//! versions accepted (`--state`) so a later run refuses a rollback.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;
use archy_catalog::{Limits, Role, TrustError, TrustedState};
use chrono::Utc;
use clap::Args;
use serde_json::{json, Value};

use crate::{docfile, report::Report};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Root file(s). Without --state the first is the trust anchor (it must be signed by
    /// its own root keys); further ones, in version order, are verified as rotations.
    /// With --state, they are applied as updates to the remembered root.
    #[arg(long = "root", required = true)]
    roots: Vec<PathBuf>,
    #[arg(long)]
    catalog: Option<PathBuf>,
    #[arg(long)]
    timestamp: Option<PathBuf>,
    /// Remember the highest versions accepted in DIR/trusted.json and refuse older ones.
    #[arg(long)]
    state: Option<PathBuf>,
}

const STATE_FILE: &str = "trusted.json";

pub fn run(args: VerifyArgs) -> anyhow::Result<Report> {
    let limits = Limits::default();
    let now = Utc::now();
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let state_file = args.state.as_ref().map(|d| d.join(STATE_FILE));
    let remembered: Option<TrustedState> = match &state_file {
        Some(f) if f.exists() => Some(
            serde_json::from_slice(&read(f)?)
                .with_context(|| format!("{}: corrupt trust state", f.display()))?,
        ),
        _ => None,
    };
    let mut report: BTreeMap<&str, Value> = BTreeMap::new();
    let mut state_slot = remembered;
    let result = (|| -> Result<(), (PathBuf, TrustError)> {
        let mut roots = args.roots.iter();
        let state = match state_slot.as_mut() {
            Some(s) => s,
            None => {
                let first = roots.next().expect("clap requires one root");
                let bytes = read(first).map_err(|e| (first.clone(), malformed(Role::Root, e)))?;
                state_slot.insert(
                    TrustedState::bootstrap(&bytes, &limits).map_err(|e| (first.clone(), e))?,
                )
            }
        };
        for r in roots {
            let bytes = read(r).map_err(|e| (r.clone(), malformed(Role::Root, e)))?;
            state
                .update_root(&bytes, &limits)
                .map_err(|e| (r.clone(), e))?;
        }
        let root_path = args.roots.last().cloned().unwrap_or_default();
        let root = state.fresh_root(now).map_err(|e| (root_path, e))?;
        report.insert(
            "root",
            json!({"version": root.version, "expires": root.expires}),
        );
        let ts = match &args.timestamp {
            Some(p) => {
                let bytes = read(p).map_err(|e| (p.clone(), malformed(Role::Timestamp, e)))?;
                let ts = state
                    .verify_timestamp(&bytes, now, &limits)
                    .map_err(|e| (p.clone(), e))?;
                report.insert(
                    "timestamp",
                    json!({"version": ts.version, "expires": ts.expires, "catalog": ts.catalog}),
                );
                Some(ts)
            }
            None => None,
        };
        if let Some(p) = &args.catalog {
            let bytes = read(p).map_err(|e| (p.clone(), malformed(Role::Catalog, e)))?;
            let cat = state
                .verify_catalog(&bytes, ts.as_ref(), now, &limits)
                .map_err(|e| (p.clone(), e))?;
            // The publisher's check goes deeper than a node's: every release must pass
            // the manifest policy, not just the one being installed.
            if let Some((at, problem)) = cat.check_releases().into_iter().next() {
                let reason = format!("release {at}: {}", problem.to_string().replace('\n', ";"));
                return Err((
                    p.clone(),
                    TrustError::Malformed {
                        role: Role::Catalog,
                        reason,
                    },
                ));
            }
            let releases: usize = cat.apps.values().map(|a| a.releases.len()).sum();
            report.insert(
                "catalog",
                json!({"version": cat.version, "expires": cat.expires, "apps": cat.apps.len(), "releases": releases}),
            );
        }
        Ok(())
    })();
    // Whatever was accepted before a failure is remembered: TrustedState only changes
    // on success of each step, so this never records a refused document.
    if let (Some(f), Some(state)) = (&state_file, &state_slot) {
        if let Some(dir) = f.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut bytes = serde_json::to_vec_pretty(state)?;
        bytes.push(b'\n');
        docfile::write(f, &bytes)?;
    }
    Ok(match result {
        Ok(()) => {
            let parts: Vec<String> = report
                .iter()
                .map(|(name, v)| format!("{name} v{}", v["version"]))
                .collect();
            Report::done(
                json!({"verified": report, "state": state_file}),
                format!("ok: {}", parts.join(", ")),
            )
        }
        Err((file, e)) => Report::refused(
            json!({"file": file, "error": {"kind": e.kind(), "message": e.to_string()}, "verified": report}),
            format!("FAILED {}: {e}", file.display()),
        ),
    })
}

fn malformed(role: Role, e: anyhow::Error) -> TrustError {
    TrustError::Malformed {
        role,
        reason: format!("{e:#}"),
    }
}
