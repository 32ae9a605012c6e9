//! Container runtimes behind one trait.
//!
//! The reconciler speaks only [`Runtime`]; `podman` drives the real engine, `process`
//! runs apps as supervised processes in their own namespaces without one. Containers
//! are found again by their labels (node, app, manifest hash, image), so a restarted
//! daemon adopts what is already running instead of recreating it.

pub mod health;
pub mod podman;
pub mod process;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use archy_catalog::{AppManifest, ContentHash, ImageRef};

use crate::planner::ObservedContainer;

/// Labels every Archy container carries.
pub const LABEL_NODE: &str = "io.archy.node";
pub const LABEL_APP: &str = "io.archy.app";
pub const LABEL_MANIFEST: &str = "io.archy.manifest-hash";
pub const LABEL_IMAGE: &str = "io.archy.image";

/// Everything a runtime needs to create an app's container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The manifest, normalised, with `container.image` the image hash.
    pub manifest: AppManifest,
    pub manifest_hash: ContentHash,
    pub image: ImageRef,
    /// Host address ports are published on (loopback by default; several nodes on
    /// one host use different loopback addresses).
    pub publish_ip: IpAddr,
    /// The app's data dir; volume `NAME` lives in `<data_dir>/volumes/NAME` and
    /// survives uninstall unless purged.
    pub data_dir: PathBuf,
    /// Generated secrets by name (files are 0600 under `<data_dir>/secrets`).
    pub secrets: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// Volume paths handed to a runtime must be absolute (podman reads a relative one as
    /// the name of a named volume; the process runtime mounts from another directory).
    pub fn require_absolute_data_dir(&self) -> Result<(), RuntimeError> {
        match self.data_dir.is_absolute() {
            true => Ok(()),
            false => Err(RuntimeError::Parse(format!(
                "app data dir {} must be an absolute path",
                self.data_dir.display()
            ))),
        }
    }
}

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot parse runtime output: {0}")]
    Parse(String),
    #[error("loaded image does not have the config digest the catalog names ({expected})")]
    DigestMismatch { expected: String },
    #[error(transparent)]
    Process(#[from] process::ProcessError),
}

/// The runtime names `NodeConfig.runtime` and `archy node run --runtime` accept.
pub const RUNTIMES: &[&str] = &["podman", "process"];

/// The runtime a node uses: `podman` (checked to work here) or `process` (its images and
/// apps under `<data>/process`, started through this very `archy` binary). The error
/// says why the runtime cannot be used on this host.
pub fn for_node(kind: &str, node: &str, data: &Path) -> Result<Arc<dyn Runtime>, String> {
    match kind {
        "podman" => {
            podman::Podman::check().map_err(|why| format!("podman does not work here: {why}"))?;
            Ok(Arc::new(podman::Podman::new(node)))
        }
        "process" => {
            process::ProcessRuntime::check()?;
            let helper = std::env::current_exe().map_err(|e| {
                format!("cannot find the archy binary for the process runtime: {e}")
            })?;
            Ok(Arc::new(process::ProcessRuntime::new(
                node,
                data.join("process"),
                helper,
            )))
        }
        other => Err(format!(
            "runtime {other:?} is not one of {}",
            RUNTIMES.join(", ")
        )),
    }
}

/// A container engine, as the reconciler sees it.
pub trait Runtime: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether the image (by config digest) is loaded.
    fn image_loaded(&self, image: &ImageRef) -> Result<bool, RuntimeError>;
    /// Loads a verified archive and checks the config digest of what was loaded.
    fn load_image(&self, archive: &Path, image: &ImageRef) -> Result<(), RuntimeError>;
    fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    fn start(&self, app_id: &str) -> Result<(), RuntimeError>;
    fn stop(&self, app_id: &str) -> Result<(), RuntimeError>;
    fn remove(&self, app_id: &str) -> Result<(), RuntimeError>;
    /// This node's containers, found by label.
    fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError>;
    /// This node's container of one app, if it has one (a runtime that can look one
    /// up directly overrides this; the reconciler asks it for every app on every pass).
    fn observe(&self, app_id: &str) -> Result<Option<ObservedContainer>, RuntimeError> {
        Ok(self.list()?.into_iter().find(|c| c.app_id == app_id))
    }
    fn logs(&self, app_id: &str, tail: usize) -> Result<String, RuntimeError>;
}

/// Whether a PID is alive: `Some(true/false)` when /proc answers, `None` when it cannot
/// be told (the caller counts that as alive).
pub fn pid_alive(pid: u32) -> Option<bool> {
    if pid == 0 {
        return Some(false);
    }
    match std::fs::metadata(format!("/proc/{pid}")) {
        Ok(_) => Some(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}
