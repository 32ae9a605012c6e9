//! What `create` decides for an app (`spec.json`) and what the supervisor records
//! about the processes it started (`pid`); the helpers act on both.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use archy_catalog::{manifest::Protocol, ContentHash};
use serde::{Deserialize, Serialize};

/// What `create` decides for an app, stored as `spec.json`; the helpers act on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSpec {
    pub node: String,
    pub app_id: String,
    pub manifest_hash: ContentHash,
    pub image: ContentHash,
    pub config_digest: String,
    /// The image's unpacked root filesystem (the overlay's lower layer).
    pub rootfs: PathBuf,
    pub argv: Vec<String>,
    /// Without secret values: those are read from `secrets_dir` when the app starts.
    pub env: BTreeMap<String, String>,
    pub secrets_dir: Option<PathBuf>,
    pub secret_names: Vec<String>,
    pub workdir: String,
    pub user: Option<String>,
    pub hostname: String,
    pub mounts: Vec<MountSpec>,
    pub ports: Vec<PortSpec>,
    pub readonly_root: bool,
    /// The first host id of the app's block: root in the app is this id on the host.
    pub id_start: u32,
    /// The app's cgroup (`archy/<name>` in each hierarchy).
    pub cgroup: String,
    /// Capabilities on top of the default container set, from the manifest.
    pub capabilities: Vec<String>,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: u32,
}

impl AppSpec {
    /// The app's cgroup limits.
    pub fn limits(&self) -> archy_confine::cgroup::Limits {
        archy_confine::cgroup::Limits {
            memory_bytes: self.memory_bytes,
            cpus: self.cpus,
            pids: Some(u64::from(self.pids)),
        }
    }
}

/// The fields of [`AppSpec`] that identify an app, readable from any version of it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SpecLabels {
    pub(crate) node: String,
    pub(crate) app_id: String,
    pub(crate) manifest_hash: ContentHash,
    pub(crate) image: ContentHash,
}

/// A host directory (or a path beneath it) bind-mounted into the app's root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSpec {
    /// The volume's own directory under the app's data dir.
    pub host: PathBuf,
    /// A path beneath `host`, resolved at every start without following symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    pub readonly: bool,
}

/// `host` (on the node's publish address) forwarded to `container` on the app's loopback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortSpec {
    pub host: SocketAddr,
    pub container: u16,
    pub protocol: Protocol,
}

/// The `pid` file: supervisor and app, each with its start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    pub pid: u32,
    pub start_time: u64,
    pub app_pid: u32,
    pub app_start_time: u64,
}
