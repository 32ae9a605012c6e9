//! Container runtimes behind one trait.
//!
//! The reconciler speaks only [`Runtime`]; `podman` drives the real engine, `process`
//! runs apps as supervised processes in their own namespaces without one. Containers
//! are found again by their labels (node, app, manifest hash, image), so a restarted
//! daemon adopts what is already running instead of recreating it.

pub mod health;
pub mod ids;
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
    /// Who the app belongs to: with the id, it names the app's block of host ids, so an
    /// app that replaced another of the same id never owns the files that one left.
    pub owner: crate::app_identity::AppOwner,
}

impl ContainerSpec {
    /// The key of the app's block of host ids ([`ids::IdRanges::for_app`]).
    pub fn id_block(&self) -> String {
        self.owner.id_block(&self.manifest.id)
    }
}

impl ContainerSpec {
    /// Volume paths handed to a runtime must be absolute (podman reads a relative one as
    /// the name of a named volume; the process runtime mounts from another directory).
    pub fn require_absolute_data_dir(&self) -> Result<(), RuntimeError> {
        match self.data_dir.is_absolute() {
            true => Ok(()),
            false => Err(RuntimeError::RelativeDataDir(self.data_dir.clone())),
        }
    }
}

/// Opens a volume's directory `<data_dir>/volumes/<name>` (created if missing) and, with `source`, the path
/// beneath it, creating missing directories. No symlink is followed on the way below
/// the volume's own directory: the app owns everything in there and could have planted
/// `h -> /` for a later release to name as its `source`. Returns an `O_PATH` handle to
/// bind from (`/proc/self/fd/N`) and the path it was found at.
pub fn open_volume(
    root_path: &Path,
    source: Option<&str>,
) -> Result<(std::os::fd::OwnedFd, PathBuf), RuntimeError> {
    use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
    let name = root_path.file_name().unwrap_or_default().to_string_lossy();
    let refused = |fault| RuntimeError::Volume {
        volume: name.to_string(),
        fault,
    };
    std::fs::create_dir_all(root_path)?;
    let beneath = ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV;
    let open = |dir: &std::os::fd::OwnedFd, path: &Path| {
        rfs::openat2(
            dir,
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            beneath,
        )
    };
    let root = rfs::openat(
        rfs::CWD,
        root_path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        refused(VolumeFault::Open {
            path: root_path.to_path_buf(),
            source: e.into(),
        })
    })?;
    let Some(source) = source else {
        return Ok((root, root_path.to_path_buf()));
    };
    let rel = Path::new(source);
    if !rel.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err(refused(VolumeFault::SourceOutside(source.to_string())));
    }
    let symlink = |e: rustix::io::Errno| match e {
        rustix::io::Errno::LOOP => refused(VolumeFault::SourceThroughSymlink(source.to_string())),
        e => refused(VolumeFault::Source {
            source: source.to_string(),
            error: e.into(),
        }),
    };
    match open(&root, rel) {
        Ok(fd) => return Ok((fd, root_path.join(rel))),
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(symlink(e)),
    }
    // Create what is missing, one directory at a time, each resolved without symlinks.
    let mut prefix = PathBuf::new();
    for c in rel.components() {
        prefix.push(c);
        match open(&root, &prefix) {
            Ok(_) => continue,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(symlink(e)),
        }
        let parent = match prefix.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => open(&root, p).map_err(symlink)?,
            None => open(&root, Path::new(".")).map_err(symlink)?,
        };
        let dir = rfs::openat(
            &parent,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(symlink)?;
        match rfs::mkdirat(&dir, c.as_os_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(symlink(e)),
        }
    }
    let fd = open(&root, rel).map_err(symlink)?;
    Ok((fd, root_path.join(rel)))
}

/// Why a volume (or the `source` path inside it) was refused.
#[derive(Debug, thiserror::Error)]
pub enum VolumeFault {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("source {0:?} must stay inside the volume")]
    SourceOutside(String),
    #[error("source {0:?} passes through a symlink in the volume; refused (a symlink there could point anywhere on the host)")]
    SourceThroughSymlink(String),
    #[error("source {source:?}: {error}")]
    Source {
        source: String,
        #[source]
        error: std::io::Error,
    },
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
    #[error("cannot read {what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("app data dir {0} must be an absolute path")]
    RelativeDataDir(PathBuf),
    #[error("secret {0} has a line break, which an env file cannot carry")]
    SecretNotEnvSafe(String),
    #[error(transparent)]
    ConfigDigest(#[from] archy_catalog::oci::NotADigest),
    #[error("no free block of {per_app} ids left in the pool {start}..{end} for app {app}")]
    IdPoolFull {
        app: String,
        per_app: u32,
        start: u32,
        end: u64,
    },
    #[error("a directory tree deeper than 4096 levels")]
    TreeTooDeep,
    #[error("volume {volume}: {fault}")]
    Volume {
        volume: String,
        #[source]
        fault: VolumeFault,
    },
    #[error("loaded image does not have the config digest the catalog names ({expected})")]
    DigestMismatch { expected: String },
    #[error(transparent)]
    Process(#[from] process::ProcessError),
}

/// Which runtime a node uses (`runtime` in config.toml, `archy node run --runtime`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// The podman engine (checked to work here).
    #[default]
    Podman,
    /// No engine: apps run as supervised processes in their own namespaces (root only).
    Process,
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Podman => "podman",
            RuntimeKind::Process => "process",
        })
    }
}

/// Why a runtime cannot be used on this host.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeUnavailable {
    #[error("podman does not work here: {0}")]
    Podman(#[from] podman::PodmanUnavailable),
    #[error(transparent)]
    Process(#[from] process::ProcessUnavailable),
    #[error("cannot find the archy binary for the process runtime: {0}")]
    NoHelper(#[source] std::io::Error),
}

/// The runtime a node uses: `podman` (checked to work here) or `process` (its images and
/// apps under `<data>/process`, started through this very `archy` binary). The error
/// says why the runtime cannot be used on this host.
pub fn for_node(
    kind: RuntimeKind,
    node: &str,
    data: &Path,
    unpack: process::UnpackLimits,
) -> Result<Arc<dyn Runtime>, RuntimeUnavailable> {
    match kind {
        RuntimeKind::Podman => {
            podman::Podman::check()?;
            Ok(Arc::new(
                podman::Podman::new(node, node_ids(data)).with_unpack_limits(unpack),
            ))
        }
        RuntimeKind::Process => {
            process::ProcessRuntime::check()?;
            let helper = std::env::current_exe().map_err(RuntimeUnavailable::NoHelper)?;
            Ok(Arc::new(
                process::ProcessRuntime::new(node, data.join("process"), helper)
                    .with_ids(node_ids(data))
                    .with_unpack_limits(unpack),
            ))
        }
    }
}

/// The id blocks of a node's apps, kept in `<data>/id-ranges.json`.
pub fn node_ids(data: &Path) -> ids::IdRanges {
    ids::IdRanges::new(data.join("id-ranges.json"), ids::DEFAULT_POOL)
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
    /// What confines every app on this runtime, in words (`archy node status`).
    fn protections(&self) -> Vec<String>;
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
