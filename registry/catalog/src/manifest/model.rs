//! The manifest's data model: the fields a developer writes, with their serde shape,
//! and the derived forms the runtime uses (normalised manifest, its hash, health timings).

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::hash::ContentHash;

/// A manifest file: everything sits under the root key `app`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDocument {
    pub app: AppManifest,
}

/// One app release as its developer describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppManifest {
    /// Reverse-DNS identifier, e.g. `org.example.vaultwarden`.
    pub id: String,
    pub name: String,
    /// Semantic version of this release.
    pub version: String,
    pub description: Description,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    pub container: Container,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated_secrets: Vec<GeneratedSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    pub short: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Author {
    pub name: String,
    /// The developer's Nostr key (npub or hex), if they publish on the marketplace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nostr_pubkey: Option<String>,
}

/// How the app's container runs.
///
/// The fields `privileged`, `network_mode`, `pid_mode` and `ipc_mode` exist only so that
/// a manifest asking for them is refused with an explanation instead of "unknown field".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// At build time a path to an OCI archive (relative to the manifest); in a catalog or
    /// announcement the archive's content hash `blake3:<hex>`.
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A named volume. Its host side always lives under the app's data dir
/// (`<data>/apps/<id>/volumes/<name>`); `source` can only pick a sub-path of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Optional host path; must be relative to the app's data dir. Present so that a
    /// bind mount of a host path is refused with a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedSecret {
    /// Exposed to the container as an environment variable of this name and as the file
    /// `/run/secrets/<name>`.
    pub name: String,
    pub kind: SecretKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretKind {
    /// 32 random bytes as 64 hex digits.
    Hex32,
    /// 32 random bytes, standard base64.
    Base64,
    /// 24 random characters from an unambiguous alphabet.
    Password,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    Http,
    Tcp,
    Exec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: HealthCheckKind,
    /// Container port probed by `http` and `tcp` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Path requested by `http` checks (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Command run inside the container by `exec` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub app_id: String,
    /// A semver requirement such as `^1.2` (default `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_req: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Bytes with an optional unit: `512m`, `1g`, `1048576`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// CPU cores, e.g. `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Processes and threads the app may have at once (default [`DEFAULT_PIDS_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
}

/// Processes and threads an app may have at once unless its manifest says otherwise.
pub const DEFAULT_PIDS_LIMIT: u32 = 1024;

impl AppManifest {
    /// The parsed semantic version (valid after [`AppManifest::validate`]).
    pub fn semver(&self) -> Option<semver::Version> {
        semver::Version::parse(&self.version).ok()
    }

    /// The image's content hash, if `container.image` is one.
    pub fn image_hash(&self) -> Option<ContentHash> {
        self.container.image.parse().ok()
    }

    /// Fills every default so the result says exactly what will run: protocols, health
    /// check timings, and `readonly_root`. The runtime and the manifest hash use this form.
    pub fn normalized(&self) -> AppManifest {
        let mut m = self.clone();
        m.container.readonly_root.get_or_insert(false);
        m.container.capabilities_add = m
            .container
            .capabilities_add
            .iter()
            .map(|c| normalize_capability(c))
            .collect();
        m.container.capabilities_add.sort();
        m.container.capabilities_add.dedup();
        if let Some(hc) = &mut m.health_check {
            hc.interval.get_or_insert_with(|| "10s".into());
            hc.timeout.get_or_insert_with(|| "5s".into());
            hc.retries.get_or_insert(3);
            hc.start_period.get_or_insert_with(|| "0s".into());
            if hc.kind == HealthCheckKind::Http {
                hc.path.get_or_insert_with(|| "/".into());
            }
        }
        for d in &mut m.dependencies {
            d.version_req.get_or_insert_with(|| "*".into());
        }
        m
    }

    /// BLAKE3 of the canonical JSON of the normalised manifest: the identity of "what
    /// runs", used for drift detection and container labels.
    pub fn manifest_hash(&self) -> ContentHash {
        let bytes = serde_json::to_vec(&self.normalized()).unwrap_or_default();
        ContentHash::of(&bytes)
    }

    /// Health-check timings as durations (defaults filled in).
    pub fn health_timing(&self) -> Option<HealthTiming> {
        let hc = self.normalized().health_check?;
        Some(HealthTiming {
            interval: crate::duration::parse(hc.interval.as_deref().unwrap_or("10s")).ok()?,
            timeout: crate::duration::parse(hc.timeout.as_deref().unwrap_or("5s")).ok()?,
            retries: hc.retries.unwrap_or(3),
            start_period: crate::duration::parse(hc.start_period.as_deref().unwrap_or("0s"))
                .ok()?,
        })
    }
}

/// Health-check timings with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTiming {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

pub(super) fn normalize_capability(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map(str::to_string).unwrap_or(up)
}
