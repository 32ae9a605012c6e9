//! The node's persistent state: what the operator asked for and what happened.
//!
//! One JSON document, `<data>/state.json`, replaced atomically (write, fsync, rename) on
//! every change, so a daemon killed at any point restarts from the last complete state.
//! It holds the accepted trust state (document versions), desired apps with a generation
//! counter, and per-app conditions (phase, last error, observed generation, backoff).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use archy_catalog::{AppManifest, ContentHash, ImageRef, TrustedState};
use serde::{Deserialize, Serialize};

use archy_discovery::market::AppHandle;

use crate::app_identity::AppOwner;

/// Where a desired app comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AppSource {
    /// The signed catalog (optionally pinned to a version).
    Catalog { version: Option<String> },
    /// A marketplace announcement, resolved at install time and kept here.
    Market {
        handle: AppHandle,
        manifest: Box<AppManifest>,
        image: ImageRef,
        /// The endpoint ids the announcement names as serving the image.
        #[serde(default)]
        providers: Vec<String>,
    },
}

impl AppSource {
    /// Who the app belongs to: what its data dir is namespaced by.
    pub fn owner(&self) -> AppOwner {
        match self {
            AppSource::Catalog { .. } => AppOwner::Catalog,
            AppSource::Market { handle, .. } => AppOwner::from(handle),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredRecord {
    pub source: AppSource,
    /// Started (true) or installed but stopped (false).
    pub running: bool,
    /// Bumped on every change the operator makes.
    pub generation: u64,
    /// Bumped only when the operator asks for a release (install, update): what a
    /// held-back release waits for, so stop/start do not count as asking again.
    #[serde(default)]
    pub requested: u64,
}

/// Where an app stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Installing,
    Running,
    Stopped,
    Failed,
    Uninstalling,
}

impl Phase {
    /// The phase's name, as it appears in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Installing => "installing",
            Phase::Running => "running",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Uninstalling => "uninstalling",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub phase: Phase,
    pub version: Option<String>,
    pub last_error: Option<String>,
    /// The desired generation the last successful reconcile applied.
    pub observed_generation: u64,
    /// Recent failures (drives the backoff); starts over after ten healthy minutes.
    pub failures: u32,
    /// Unix seconds since when the app has been running and healthy without a failure.
    #[serde(default)]
    pub healthy_since: Option<u64>,
    /// Unix seconds before which the app is not retried.
    pub retry_at: u64,
    pub updated_at: u64,
    /// The last release that ran and passed its health check: what a failed update
    /// rolls back to.
    #[serde(default)]
    pub last_good: Option<Deployment>,
    /// A release that did not become healthy and was rolled back. It is not tried again
    /// until the operator asks again (a newer generation) or the catalog moves on.
    #[serde(default)]
    pub held_back: Option<HeldBack>,
}

impl Condition {
    /// The condition of an app nothing has happened to yet.
    pub fn pending() -> Self {
        Self {
            phase: Phase::Pending,
            version: None,
            last_error: None,
            observed_generation: 0,
            failures: 0,
            healthy_since: None,
            retry_at: 0,
            updated_at: now(),
            last_good: None,
            held_back: None,
        }
    }
}

/// One release of an app as it was deployed: enough to deploy it again without the
/// catalog (which may have dropped it since).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub manifest: Box<AppManifest>,
    pub image: ImageRef,
}

impl Deployment {
    pub fn version(&self) -> &str {
        &self.manifest.version
    }
}

/// A release refused after it failed to become healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldBack {
    pub version: String,
    pub manifest_hash: ContentHash,
    /// The install request ([`DesiredRecord::requested`]) that asked for it.
    pub request: u64,
    /// What failed and what was done about it (also the app's last error meanwhile).
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub trusted: Option<TrustedState>,
    pub desired: BTreeMap<String, DesiredRecord>,
    pub conditions: BTreeMap<String, Condition>,
    /// Apps being uninstalled, with whether their data is purged.
    #[serde(default)]
    pub uninstalling: BTreeMap<String, bool>,
}

/// The state file and its in-memory copy.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    pub state: NodeState,
}

impl StateStore {
    /// Opens `<data>/state.json` (empty state if missing). A corrupt file is an error,
    /// never silently replaced.
    pub fn open(data: &Path) -> Result<Self, std::io::Error> {
        let path = data.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!("{}: corrupt state: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeState::default(),
            Err(e) => return Err(e),
        };
        Ok(Self { path, state })
    }

    /// Writes the state atomically.
    pub fn save(&self) -> Result<(), std::io::Error> {
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(std::io::Error::other)?;
        archy_catalog::fsutil::write_atomic_mode(&self.path, &bytes, Some(0o600))
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_reopen_and_corruption_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(d.path()).unwrap();
        s.state.desired.insert(
            "org.example.hello".into(),
            DesiredRecord {
                source: AppSource::Catalog { version: None },
                running: true,
                generation: 3,
                requested: 2,
            },
        );
        s.save().unwrap();
        let again = StateStore::open(d.path()).unwrap();
        assert_eq!(again.state, s.state);
        std::fs::write(d.path().join("state.json"), b"{torn").unwrap();
        assert!(StateStore::open(d.path())
            .unwrap_err()
            .to_string()
            .contains("corrupt state"));
    }
}
