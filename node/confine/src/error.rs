//! The crate's one error type. These errors end up in an operator's log far from the code
//! that raised them, so every variant says what was being done and to what: a path, a pid,
//! a syscall, a capability, a cgroup controller.

use std::{io, path::PathBuf};

use nix::errno::Errno;

/// A confinement step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// A capability name that is not one of Linux's capabilities.
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    /// Changing one of the calling thread's capability sets failed.
    #[error("capabilities: {what}: {source}")]
    Capability {
        /// What was being changed, e.g. "dropping CAP_SYS_ADMIN from the bounding set".
        what: String,
        /// The `caps` crate's error.
        source: ::caps::errors::CapsError,
    },
    /// Capabilities that this crate cannot name are still in the bounding set.
    #[error("capabilities unknown to the caps crate are still in the bounding set (mask {0:#x})")]
    BoundingSetLeft(u64),
    /// Building or installing a seccomp filter failed.
    #[error("seccomp: {what}: {source}")]
    Seccomp {
        /// What was being done, e.g. "installing filter 2 of 3".
        what: String,
        /// seccompiler's error.
        source: seccompiler::Error,
    },
    /// Reading or writing a file (a cgroup knob, a uid map, /proc) failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "writing \"16\" to".
        what: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A mount-related syscall failed.
    #[error("{syscall} on {}: {source}", path.display())]
    Syscall {
        /// The syscall, e.g. "open_tree".
        syscall: &'static str,
        /// The path it was given.
        path: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// Killing a process left in a cgroup failed.
    #[error("killing pid {pid} in cgroup {}: {source}", cgroup.display())]
    Kill {
        /// The process.
        pid: i32,
        /// The cgroup directory it was listed in.
        cgroup: PathBuf,
        /// The errno.
        source: Errno,
    },
    /// A cgroup controller that the limits need is not available.
    #[error("cgroup controller {controller}: {detail}")]
    CgroupController {
        /// The controller(s): "memory", "pids" or "cpu".
        controller: &'static str,
        /// Why it is unavailable and how to make it available.
        detail: String,
    },
    /// A cgroup name that is not a simple file name.
    #[error("invalid cgroup name {0:?}: use 1 to 255 of A-Z a-z 0-9 . _ - (and not . or ..)")]
    InvalidCgroupName(String),
    /// A CPU limit that is not a positive, finite number of CPUs.
    #[error("invalid cpu limit {0}: must be a positive number of CPUs")]
    InvalidCpus(f64),
    /// A path under the app's root goes through a symlink, which could lead out of the root.
    #[error("refusing {}: it is a symlink inside the app's root", path.display())]
    Symlink {
        /// The symlink.
        path: PathBuf,
    },
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, ConfineError>;

/// The `map_err` closure for an I/O error on `path` while doing `what`.
pub(crate) fn io_error(
    what: impl Into<String>,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ConfineError {
    move |source| ConfineError::Io {
        what: what.into(),
        path: path.into(),
        source,
    }
}

/// The `map_err` closure for `syscall` failing on `path`.
pub(crate) fn syscall_error(
    syscall: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(Errno) -> ConfineError {
    move |source| ConfineError::Syscall {
        syscall,
        path: path.into(),
        source,
    }
}
