//! `verify`: checking documents exactly as a node does (with the node's own
//! [`verify_in_order`]), optionally remembering the
//! versions accepted (`--state`) so a later run refuses a rollback.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;
use archy_catalog::{
    head::{verify_in_order, HeadDocument, Verified},
    Defect, Limits, Role, TrustError, TrustedState,
};
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
    // Reading is not verifying: a file that cannot be read is an error, not a refusal.
    let roots = args
        .roots
        .iter()
        .map(|r| read(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let timestamp = args.timestamp.as_deref().map(read).transpose()?;
    let catalog = args.catalog.as_deref().map(read).transpose()?;
    let mut report: BTreeMap<&str, Value> = BTreeMap::new();
    let mut state_slot = remembered;
    let result = (|| -> Result<(), (PathBuf, TrustError)> {
        let mut roots_to_apply = roots.iter().map(Vec::as_slice);
        let mut root_files: Vec<&PathBuf> = args.roots.iter().collect();
        let state = match state_slot.as_mut() {
            Some(s) => s,
            None => {
                // Without remembered state, the first root is the trust anchor.
                let first = roots_to_apply.next().unwrap_or_default();
                let anchor = root_files.remove(0);
                state_slot.insert(
                    TrustedState::bootstrap(first, &limits).map_err(|e| (anchor.clone(), e))?,
                )
            }
        };
        let roots: Vec<&[u8]> = roots_to_apply.collect();
        // The same function, in the same order, as a node verifies a head.
        let verified = verify_in_order(
            state,
            &roots,
            timestamp.as_deref(),
            catalog.as_deref(),
            now,
            &limits,
            |doc| match doc {
                Verified::Root(root) => {
                    report.insert(
                        "root",
                        json!({"version": root.version, "expires": root.expires}),
                    );
                }
                Verified::Timestamp(ts) => {
                    report.insert(
                        "timestamp",
                        json!({"version": ts.version, "expires": ts.expires, "catalog": ts.catalog}),
                    );
                }
                Verified::Catalog(cat) => {
                    let releases: usize = cat.apps.values().map(|a| a.releases.len()).sum();
                    report.insert(
                        "catalog",
                        json!({"version": cat.version, "expires": cat.expires, "apps": cat.apps.len(), "releases": releases}),
                    );
                }
            },
        )
        .map_err(|refusal| {
            let file = match refusal.document {
                HeadDocument::Root(i) => root_files[i].clone(),
                HeadDocument::TrustedRoot => args.roots.last().cloned().unwrap_or_default(),
                HeadDocument::Timestamp => args.timestamp.clone().unwrap_or_default(),
                HeadDocument::Catalog => args.catalog.clone().unwrap_or_default(),
            };
            (file, refusal.source)
        })?;
        // The publisher's check goes deeper than a node's: every release must pass the
        // manifest policy, not just the one being installed.
        if let (Some(cat), Some(p)) = (verified, &args.catalog) {
            if let Some((at, problem)) = cat.check_releases().into_iter().next() {
                report.remove("catalog");
                return Err((
                    p.clone(),
                    TrustError::Malformed {
                        role: Role::Catalog,
                        defect: Defect::Release { at, problem },
                    },
                ));
            }
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
