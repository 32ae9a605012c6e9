//! What can go wrong in the process runtime, each failure with the path or app it
//! concerns.

use std::path::{Path, PathBuf};

/// Why the process runtime could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("the process runtime needs root (it mounts and enters namespaces); run the node as root or use --runtime podman")]
    NotRoot,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read image archive: {0}")]
    Archive(#[from] archy_catalog::oci::OciError),
    #[error("image layer {layer}: {fault}")]
    Layer {
        layer: String,
        #[source]
        fault: super::layer_fault::LayerFault,
    },
    #[error("image {0} is not loaded")]
    ImageNotLoaded(String),
    #[error("no app {0} in this runtime")]
    NoSuchApp(String),
    #[error("{0:?} is not a usable app id")]
    BadAppId(String),
    #[error("app {0} is running; stop it first")]
    Running(String),
    #[error("the image and manifest give no command to run")]
    NoCommand,
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A step of setting up the app's sandbox failed (a system call, a socket, a signal).
    #[error("{step}: {source}")]
    Setup {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Confine {
        step: &'static str,
        #[source]
        source: archy_confine::ConfineError,
    },
    /// A check on the host's side (a volume, the app's id block) refused the app.
    #[error(transparent)]
    Host(Box<crate::runtime::RuntimeError>),
    /// What a helper process (the user namespace holder, the app's init) reported
    /// before it exited: text across a process boundary.
    #[error("{step}: {message}")]
    HelperReported { step: &'static str, message: String },
    #[error("{0} is not set")]
    MissingEnv(&'static str),
    #[error("user {0:?} is not in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} is not in the image's /etc/group")]
    UnknownGroup(String),
    #[error("cannot use working dir {0}")]
    WorkDir(String),
    #[error("{0}: too many symlinks in the app's root")]
    SymlinkLoop(String),
    #[error("{0}: overlayfs cannot take paths with ',', ':' or '\\'; use another data dir")]
    OverlayPath(PathBuf),
    #[error("the app already has a running supervisor")]
    SupervisorRunning,
    #[error("resources.memory_limit: {0}")]
    MemoryLimit(#[from] archy_catalog::manifest::InvalidMemorySize),
    #[error(transparent)]
    ConfigDigest(#[from] archy_catalog::oci::NotADigest),
    #[error("cannot run the helper {program}: {source}")]
    Helper {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("app {app} did not start: {reason}")]
    StartFailed { app: String, reason: String },
    #[error("app {0} did not stop within its deadline")]
    StopTimeout(String),
    #[error("{0}")]
    Sys(#[from] nix::Error),
}

/// Attaches the path to an I/O error.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ProcessError + '_ {
    move |source| ProcessError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Attaches the path to a JSON error.
pub(crate) fn json_at(path: &Path) -> impl FnOnce(serde_json::Error) -> ProcessError + '_ {
    move |source| ProcessError::Json {
        path: path.to_path_buf(),
        source,
    }
}

/// Names the sandbox step that a system call or socket failed in.
pub(crate) fn setup<E: Into<std::io::Error>>(
    step: impl std::fmt::Display,
) -> impl FnOnce(E) -> ProcessError {
    move |e| ProcessError::Setup {
        step: step.to_string(),
        source: e.into(),
    }
}

/// Why this host cannot run the process runtime with every protection.
#[derive(Debug, thiserror::Error)]
pub enum ProcessUnavailable {
    #[error("the process runtime needs root (it mounts and enters namespaces); run the node as root or use --runtime podman")]
    NotRoot,
    #[error(
        "the process runtime cannot confine apps on this host; missing: {}. Use --runtime podman, or give the host what is missing",
        .0.join("; ")
    )]
    Missing(Vec<String>),
}
