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
    #[error("image layer {layer}: {message}")]
    Layer { layer: String, message: String },
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
    #[error("{0}")]
    Invalid(String),
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
