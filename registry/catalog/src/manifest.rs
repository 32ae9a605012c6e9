//! App manifests: parsing, strict validation and normalisation.
//!
//! A manifest is the developer's description of one app release (YAML or JSON, root key
//! `app`). The same validator runs in `catalog-signer catalog build`, in `archy app
//! validate`, on marketplace announcements and in the node before anything is applied,
//! so a manifest that passes here is safe to hand to a runtime: no privileged mode, no
//! host namespaces, no mounts outside the app's own data dir, no runtime socket, and only
//! allow-listed ports and capabilities.
//!
//! Every problem is reported as a [`FieldError`] naming the field path, the bad value and
//! what is allowed; validation collects all problems rather than stopping at the first.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::hash::ContentHash;

/// Largest manifest accepted, in bytes (endless-data defence for parsers).
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// Capabilities an app may add on top of the runtime's default set.
pub const ALLOWED_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "SYS_CHROOT",
    "AUDIT_WRITE",
];

/// Lowest host port an app may publish (ports below need root and belong to the host).
pub const MIN_HOST_PORT: u16 = 1024;

/// Host ports reserved for Archy itself (local API default, relay, origin) or common
/// host services; apps may not publish on them.
pub const RESERVED_HOST_PORTS: &[u16] = &[7420, 7421, 7422];

/// Container paths an app may not mount over.
const FORBIDDEN_MOUNT_TARGETS: &[&str] =
    &["/", "/proc", "/sys", "/dev", "/etc", "/run", "/var/run"];

/// Path fragments that identify a container-runtime control socket.
const RUNTIME_SOCKETS: &[&str] = &[
    "docker.sock",
    "podman.sock",
    "containerd.sock",
    "crio.sock",
    "archy.sock",
];

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

/// One problem in a manifest: where, what was found, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Field path such as `app.container.ports[0].host`.
    pub path: String,
    /// The offending value as written (shortened when long).
    pub value: String,
    /// What is allowed, or why the value is refused.
    pub allowed: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.allowed)
        } else {
            write!(
                f,
                "{}: {} is not allowed: {}",
                self.path, self.value, self.allowed
            )
        }
    }
}

/// Why a manifest was refused: one or more [`FieldError`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// Where the manifest came from (file path or "announcement ..."), if known.
    pub source_name: Option<String>,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        match &self.source_name {
            Some(src) => write!(f, "{src}: invalid manifest ({n} problem{})", plural(n))?,
            None => write!(f, "invalid manifest ({n} problem{})", plural(n))?,
        }
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl ManifestError {
    fn single(
        path: impl Into<String>,
        value: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        Self {
            source_name: None,
            errors: vec![FieldError {
                path: path.into(),
                value: value.into(),
                allowed: allowed.into(),
            }],
        }
    }

    /// Names where the manifest came from, for messages.
    pub fn with_source(mut self, name: impl Into<String>) -> Self {
        self.source_name = Some(name.into());
        self
    }
}

/// The text format of a manifest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Yaml,
    Json,
}

impl ManifestFormat {
    /// Picks the format from a file name: `.json` is JSON, everything else YAML
    /// (YAML is a superset of JSON, so this only matters for error messages).
    pub fn from_path(path: &std::path::Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => ManifestFormat::Json,
            _ => ManifestFormat::Yaml,
        }
    }
}

/// Parses a manifest (without validating it). Type errors name the field path.
pub fn parse(text: &str, format: ManifestFormat) -> Result<AppManifest, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::single(
            "app",
            format!("{} bytes", text.len()),
            format!("a manifest is at most {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    let doc: Result<ManifestDocument, (String, String)> = match format {
        ManifestFormat::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| (e.path().to_string(), e.inner().to_string()))
        }
        ManifestFormat::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| (e.path().to_string(), e.inner().to_string()))
        }
    };
    match doc {
        Ok(doc) => Ok(doc.app),
        Err((path, msg)) => {
            let path = if path == "." || path.is_empty() {
                "(document)".to_string()
            } else {
                path
            };
            Err(ManifestError::single(
                path,
                "",
                format!("cannot parse: {msg}"),
            ))
        }
    }
}

/// Parses and validates in one step.
pub fn parse_and_validate(
    text: &str,
    format: ManifestFormat,
) -> Result<AppManifest, ManifestError> {
    let m = parse(text, format)?;
    m.validate()?;
    Ok(m)
}

/// Whether `container.image` is expected to be a build-time path or a content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageField {
    /// Either a relative path (build time) or a content hash.
    PathOrHash,
    /// Must be `blake3:<hex>` (catalog entries, announcements, the node).
    Hash,
}

impl AppManifest {
    /// Validates with `container.image` allowed to be a path or a hash.
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.validate_with(ImageField::PathOrHash)
    }

    /// Validates every field against the schema and the security policy.
    pub fn validate_with(&self, image: ImageField) -> Result<(), ManifestError> {
        let mut v = Validator::default();
        v.check_app(self, image);
        if v.errors.is_empty() {
            Ok(())
        } else {
            Err(ManifestError {
                source_name: None,
                errors: v.errors,
            })
        }
    }

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

fn normalize_capability(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map(str::to_string).unwrap_or(up)
}

/// Why a memory limit is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMemorySize {
    #[error("a size like 512m or 1g")]
    NotASize,
    #[error("a size that fits in 64 bits")]
    TooLarge,
}

/// Parses a memory size `512m`, `1g`, `64k` or plain bytes.
pub fn parse_memory(s: &str) -> Result<u64, InvalidMemorySize> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s).to_string();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| InvalidMemorySize::NotASize)?;
    let mul: u64 = match unit {
        "" => 1,
        "k" | "ki" => 1 << 10,
        "m" | "mi" => 1 << 20,
        "g" | "gi" => 1 << 30,
        _ => return Err(InvalidMemorySize::NotASize),
    };
    n.checked_mul(mul).ok_or(InvalidMemorySize::TooLarge)
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

/// `org.example.app`: 2 to 16 dot-separated labels of `[a-z0-9-]`, each starting with
/// a letter or digit, at most 128 bytes in all.
pub fn is_valid_app_id(id: &str) -> bool {
    let labels: Vec<&str> = id.split('.').collect();
    id.len() <= 128
        && (2..=16).contains(&labels.len())
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 128
}

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !s.starts_with('.')
}

impl Validator {
    fn err(
        &mut self,
        path: impl Into<String>,
        value: impl Into<String>,
        allowed: impl Into<String>,
    ) {
        self.errors.push(FieldError {
            path: path.into(),
            value: value.into(),
            allowed: allowed.into(),
        });
    }

    fn text(&mut self, path: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.err(path, shorten(value), "must not be empty");
        } else if value.chars().count() > max {
            self.err(path, shorten(value), format!("at most {max} characters"));
        } else if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            self.err(path, shorten(value), "no control characters");
        }
    }

    fn check_app(&mut self, m: &AppManifest, image: ImageField) {
        if !is_valid_app_id(&m.id) {
            self.err(
                "app.id",
                shorten(&m.id),
                "a reverse-DNS id such as org.example.app: 2-16 dot-separated labels of a-z, 0-9 and '-', at most 128 bytes",
            );
        }
        self.text("app.name", &m.name, 64);
        if semver::Version::parse(&m.version).is_err() {
            self.err(
                "app.version",
                shorten(&m.version),
                "a semantic version such as 1.2.3",
            );
        }
        self.text("app.description.short", &m.description.short, 200);
        if let Some(long) = &m.description.long {
            if long.chars().count() > 10_000 {
                self.err("app.description.long", "", "at most 10000 characters");
            }
        }
        if let Some(cat) = &m.category {
            if !is_simple_name(cat) || cat.chars().any(|c| c.is_ascii_uppercase()) {
                self.err(
                    "app.category",
                    shorten(cat),
                    "a lowercase word such as media or bitcoin",
                );
            }
        }
        if let Some(a) = &m.author {
            self.text("app.author.name", &a.name, 128);
            if let Some(pk) = &a.nostr_pubkey {
                let ok = (pk.len() == 64 && pk.bytes().all(|b| b.is_ascii_hexdigit()))
                    || (pk.starts_with("npub1") && pk.len() == 63);
                if !ok {
                    self.err(
                        "app.author.nostr_pubkey",
                        shorten(pk),
                        "an npub1... key or 64 hex digits",
                    );
                }
            }
        }
        self.check_container(&m.container, image);
        self.check_secrets(m);
        if let Some(hc) = &m.health_check {
            self.check_health(hc, &m.container);
        }
        for (i, d) in m.dependencies.iter().enumerate() {
            let p = format!("app.dependencies[{i}]");
            if !is_valid_app_id(&d.app_id) {
                self.err(
                    format!("{p}.app_id"),
                    shorten(&d.app_id),
                    "a reverse-DNS app id",
                );
            } else if d.app_id == m.id {
                self.err(
                    format!("{p}.app_id"),
                    shorten(&d.app_id),
                    "an app cannot depend on itself",
                );
            }
            if let Some(req) = &d.version_req {
                if semver::VersionReq::parse(req).is_err() {
                    self.err(
                        format!("{p}.version_req"),
                        shorten(req),
                        "a semver requirement such as ^1.2 or >=2",
                    );
                }
            }
        }
        if let Some(r) = &m.resources {
            if let Some(mem) = &r.memory_limit {
                match parse_memory(mem) {
                    Ok(b) if b >= 4 << 20 => {}
                    Ok(_) => self.err("app.resources.memory_limit", shorten(mem), "at least 4m"),
                    Err(e) => self.err("app.resources.memory_limit", shorten(mem), e.to_string()),
                }
            }
            if let Some(pids) = r.pids_limit {
                if !(8..=65_536).contains(&pids) {
                    self.err(
                        "app.resources.pids_limit",
                        pids.to_string(),
                        "a number of processes between 8 and 65536",
                    );
                }
            }
            if let Some(cpu) = r.cpu_limit {
                if !(cpu.is_finite() && cpu > 0.0 && cpu <= 1024.0) {
                    self.err(
                        "app.resources.cpu_limit",
                        cpu.to_string(),
                        "a number of cores between 0 and 1024, e.g. 0.5",
                    );
                }
            }
        }
    }

    fn check_container(&mut self, c: &Container, image: ImageField) {
        let img = c.image.trim();
        let is_hash = img.parse::<ContentHash>().is_ok();
        match image {
            ImageField::Hash if !is_hash => self.err(
                "app.container.image",
                shorten(img),
                "a content hash blake3:<64 hex digits> (paths are resolved by `catalog build` / `app publish`)",
            ),
            ImageField::PathOrHash if !is_hash => {
                if img.is_empty() {
                    self.err("app.container.image", "\"\"", "a path to an OCI archive or blake3:<hex>");
                } else if img.starts_with("blake3:") {
                    self.err("app.container.image", shorten(img), "blake3: followed by exactly 64 hex digits");
                } else if img.contains("://") {
                    self.err(
                        "app.container.image",
                        shorten(img),
                        "registry references cannot be verified; give a path to an OCI archive or blake3:<hex>",
                    );
                }
            }
            _ => {}
        }
        for (field, argv) in [("entrypoint", &c.entrypoint), ("cmd", &c.cmd)] {
            if let Some(argv) = argv {
                if argv.is_empty() || argv.iter().any(|a| a.contains('\0')) {
                    self.err(
                        format!("app.container.{field}"),
                        format!("{argv:?}"),
                        "a non-empty list of arguments without NUL bytes",
                    );
                }
            }
        }
        if let Some(w) = &c.workdir {
            if !w.starts_with('/') {
                self.err(
                    "app.container.workdir",
                    shorten(w),
                    "an absolute path inside the container",
                );
            }
        }
        for (k, v) in &c.env {
            if !is_env_name(k) {
                self.err(
                    format!("app.container.env.{k}"),
                    shorten(k),
                    "names of letters, digits and '_', not starting with a digit",
                );
            }
            if v.contains('\0') {
                self.err(
                    format!("app.container.env.{k}"),
                    shorten(v),
                    "values without NUL bytes",
                );
            }
        }
        if c.privileged == Some(true) {
            self.err(
                "app.container.privileged",
                "true",
                "privileged containers are never allowed",
            );
        }
        for (field, val) in [
            ("network_mode", &c.network_mode),
            ("pid_mode", &c.pid_mode),
            ("ipc_mode", &c.ipc_mode),
        ] {
            if let Some(v) = val {
                let allowed = if field == "network_mode" {
                    ["bridge", "private"]
                } else {
                    ["private", "private"]
                };
                if !allowed.contains(&v.as_str()) {
                    self.err(
                        format!("app.container.{field}"),
                        shorten(v),
                        "host and shared namespaces are never allowed; leave it out (private)",
                    );
                }
            }
        }
        self.check_ports(&c.ports);
        self.check_volumes(&c.volumes);
        for (i, cap) in c.capabilities_add.iter().enumerate() {
            let norm = normalize_capability(cap);
            if !ALLOWED_CAPABILITIES.contains(&norm.as_str()) {
                self.err(
                    format!("app.container.capabilities_add[{i}]"),
                    shorten(cap),
                    format!("one of {}", ALLOWED_CAPABILITIES.join(", ")),
                );
            }
        }
        if let Some(u) = &c.user {
            let ok = !u.is_empty()
                && u.len() <= 64
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'-');
            if !ok {
                self.err("app.container.user", shorten(u), "a user name or uid[:gid]");
            }
        }
    }

    fn check_ports(&mut self, ports: &[PortMapping]) {
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in ports.iter().enumerate() {
            let path = format!("app.container.ports[{i}]");
            if p.host < MIN_HOST_PORT {
                self.err(
                    format!("{path}.host"),
                    p.host.to_string(),
                    format!("host ports from {MIN_HOST_PORT} to 65535"),
                );
            } else if RESERVED_HOST_PORTS.contains(&p.host) {
                self.err(
                    format!("{path}.host"),
                    p.host.to_string(),
                    "this port is reserved for Archy itself",
                );
            }
            if p.container == 0 {
                self.err(
                    format!("{path}.container"),
                    "0",
                    "container ports from 1 to 65535",
                );
            }
            if !seen.insert((p.host, p.protocol)) {
                self.err(
                    format!("{path}.host"),
                    p.host.to_string(),
                    "each host port/protocol may be published once",
                );
            }
        }
    }

    fn check_volumes(&mut self, volumes: &[Volume]) {
        let mut names = std::collections::BTreeSet::new();
        let mut targets = std::collections::BTreeSet::new();
        for (i, vol) in volumes.iter().enumerate() {
            let path = format!("app.container.volumes[{i}]");
            if !is_simple_name(&vol.name) {
                self.err(
                    format!("{path}.name"),
                    shorten(&vol.name),
                    "a simple name of letters, digits, '-', '_' and '.'",
                );
            } else if !names.insert(vol.name.as_str()) {
                self.err(
                    format!("{path}.name"),
                    shorten(&vol.name),
                    "volume names must be unique",
                );
            }
            let t = vol.target.trim_end_matches('/');
            let t = if t.is_empty() { "/" } else { t };
            if !vol.target.starts_with('/') || vol.target.split('/').any(|s| s == "..") {
                self.err(
                    format!("{path}.target"),
                    shorten(&vol.target),
                    "an absolute path inside the container without '..'",
                );
            } else if FORBIDDEN_MOUNT_TARGETS.contains(&t) {
                self.err(
                    format!("{path}.target"),
                    shorten(&vol.target),
                    format!(
                        "mounting over {} is not allowed",
                        FORBIDDEN_MOUNT_TARGETS.join(", ")
                    ),
                );
            } else if !targets.insert(t.to_string()) {
                self.err(
                    format!("{path}.target"),
                    shorten(&vol.target),
                    "each target may be mounted once",
                );
            }
            if let Some(src) = &vol.source {
                if src.starts_with('/') || src.starts_with('~') || src.split('/').any(|s| s == "..")
                {
                    self.err(
                        format!("{path}.source"),
                        shorten(src),
                        "bind mounts outside the app's data dir are not allowed; give a relative path inside it",
                    );
                }
            }
            for (field, val) in [
                ("target", Some(&vol.target)),
                ("source", vol.source.as_ref()),
            ] {
                if let Some(v) = val {
                    if v.contains([':', ',']) || v.chars().any(char::is_control) {
                        // A runtime would read `/etc:ro` or `a,b` as mount options.
                        self.err(
                            format!("{path}.{field}"),
                            shorten(v),
                            "a path without ':', ',' or control characters",
                        );
                    } else if RUNTIME_SOCKETS.iter().any(|s| v.contains(s)) {
                        self.err(
                            format!("{path}.{field}"),
                            shorten(v),
                            "container runtime sockets are never mounted",
                        );
                    }
                }
            }
        }
    }

    fn check_secrets(&mut self, m: &AppManifest) {
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in m.generated_secrets.iter().enumerate() {
            let path = format!("app.generated_secrets[{i}].name");
            if !is_env_name(&s.name) || s.name.len() > 64 {
                self.err(
                    &path,
                    shorten(&s.name),
                    "letters, digits and '_', not starting with a digit, at most 64",
                );
            } else if !names.insert(s.name.as_str()) {
                self.err(&path, shorten(&s.name), "secret names must be unique");
            } else if m.container.env.contains_key(&s.name) {
                self.err(
                    &path,
                    shorten(&s.name),
                    "a secret may not share its name with an env variable",
                );
            }
        }
    }

    fn check_health(&mut self, hc: &HealthCheck, c: &Container) {
        match hc.kind {
            HealthCheckKind::Http | HealthCheckKind::Tcp => match hc.port {
                None => self.err(
                    "app.health_check.port",
                    "",
                    "http and tcp checks need the container port to probe",
                ),
                Some(0) => self.err("app.health_check.port", "0", "ports 1 to 65535"),
                Some(p) if !c.ports.is_empty() && !c.ports.iter().any(|m| m.container == p) => self
                    .err(
                        "app.health_check.port",
                        p.to_string(),
                        "a container port listed in app.container.ports",
                    ),
                Some(_) => {}
            },
            HealthCheckKind::Exec => {
                if hc.command.as_ref().is_none_or(|c| c.is_empty()) {
                    self.err(
                        "app.health_check.command",
                        "",
                        "exec checks need a non-empty command",
                    );
                }
            }
        }
        if let Some(path) = &hc.path {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.err(
                    "app.health_check.path",
                    shorten(path),
                    "an HTTP path starting with '/'",
                );
            }
        }
        for (field, val) in [
            ("interval", &hc.interval),
            ("timeout", &hc.timeout),
            ("start_period", &hc.start_period),
        ] {
            if let Some(v) = val {
                match crate::duration::parse(v) {
                    Ok(d) if d <= Duration::from_secs(3600) => {}
                    Ok(_) => self.err(
                        format!("app.health_check.{field}"),
                        shorten(v),
                        "at most 1h",
                    ),
                    Err(e) => self.err(
                        format!("app.health_check.{field}"),
                        shorten(v),
                        e.to_string(),
                    ),
                }
            }
        }
        if let Some(r) = hc.retries {
            if r == 0 || r > 100 {
                self.err("app.health_check.retries", r.to_string(), "1 to 100");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
app:
  id: org.example.hello
  name: Hello
  version: 1.0.0
  description: { short: "A tiny web server" }
  container:
    image: ./hello.oci.tar
    cmd: ["/bin/busybox", "httpd", "-f", "-p", "8080"]
    ports: [{ host: 18080, container: 8080 }]
  health_check: { type: http, port: 8080, path: / }
"#;

    fn hello() -> AppManifest {
        parse_and_validate(HELLO, ManifestFormat::Yaml)
            .expect("the issue's minimal manifest validates")
    }

    fn errors_of(m: &AppManifest) -> Vec<FieldError> {
        m.validate().expect_err("should be refused").errors
    }

    fn has(errors: &[FieldError], path: &str) -> bool {
        errors.iter().any(|e| e.path == path)
    }

    #[test]
    fn minimal_manifest_from_the_issue_validates() {
        let m = hello();
        assert_eq!(m.id, "org.example.hello");
        assert_eq!(m.container.ports[0].protocol, Protocol::Tcp);
    }

    #[test]
    fn json_and_yaml_parse_to_the_same_manifest() {
        let m = hello();
        let json = serde_json::to_string(&ManifestDocument { app: m.clone() }).unwrap();
        assert_eq!(parse_and_validate(&json, ManifestFormat::Json).unwrap(), m);
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let bad = HELLO.replace("host: 18080", "host: eighty");
        let e = parse(&bad, ManifestFormat::Yaml).unwrap_err();
        assert_eq!(e.errors[0].path, "app.container.ports[0].host", "{e}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let bad = HELLO.replace("name: Hello", "name: Hello\n  colour: red");
        let e = parse(&bad, ManifestFormat::Yaml).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn security_policy_refuses_privileged_host_namespaces_binds_and_sockets() {
        let mut m = hello();
        m.container.privileged = Some(true);
        m.container.network_mode = Some("host".into());
        m.container.pid_mode = Some("host".into());
        m.container.volumes = vec![
            Volume {
                name: "etc".into(),
                target: "/data".into(),
                source: Some("/etc".into()),
                readonly: None,
            },
            Volume {
                name: "sock".into(),
                target: "/var/lib/docker.sock".into(),
                source: None,
                readonly: None,
            },
            Volume {
                name: "esc".into(),
                target: "/x".into(),
                source: Some("../../other-app".into()),
                readonly: None,
            },
            // A runtime reads `:` and `,` as option separators: `/etc:ro` would pass
            // the forbidden-target list as text and then mount over /etc.
            Volume {
                name: "opt".into(),
                target: "/etc:ro".into(),
                source: Some("a,b".into()),
                readonly: None,
            },
        ];
        m.container.capabilities_add = vec!["SYS_ADMIN".into(), "cap_net_bind_service".into()];
        let errs = errors_of(&m);
        for path in [
            "app.container.privileged",
            "app.container.network_mode",
            "app.container.pid_mode",
            "app.container.volumes[0].source",
            "app.container.volumes[1].target",
            "app.container.volumes[2].source",
            "app.container.volumes[3].target",
            "app.container.volumes[3].source",
            "app.container.capabilities_add[0]",
        ] {
            assert!(has(&errs, path), "missing {path} in {errs:#?}");
        }
        assert!(
            !has(&errs, "app.container.capabilities_add[1]"),
            "NET_BIND_SERVICE is allowed"
        );
    }

    #[test]
    fn ports_outside_the_allow_list_are_refused() {
        let mut m = hello();
        m.container.ports = vec![
            PortMapping {
                host: 80,
                container: 80,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host: 7420,
                container: 1,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host: 18080,
                container: 8080,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                host: 18080,
                container: 8081,
                protocol: Protocol::Tcp,
            },
        ];
        let errs = errors_of(&m);
        assert!(has(&errs, "app.container.ports[0].host"));
        assert!(has(&errs, "app.container.ports[1].host"));
        assert!(has(&errs, "app.container.ports[3].host"));
        assert!(!has(&errs, "app.container.ports[2].host"));
    }

    #[test]
    fn errors_name_path_value_and_what_is_allowed() {
        let mut m = hello();
        m.id = "Hello World".into();
        m.version = "one".into();
        let errs = errors_of(&m);
        let id = errs.iter().find(|e| e.path == "app.id").unwrap();
        assert!(id.value.contains("Hello World"));
        assert!(id.allowed.contains("reverse-DNS"));
        assert!(has(&errs, "app.version"));
        let text = ManifestError {
            source_name: Some("x.yaml".into()),
            errors: errs,
        }
        .to_string();
        assert!(
            text.starts_with("x.yaml: invalid manifest (2 problems)"),
            "{text}"
        );
    }

    #[test]
    fn catalog_entries_require_a_content_hash() {
        let m = hello();
        let e = m.validate_with(ImageField::Hash).unwrap_err();
        assert!(has(&e.errors, "app.container.image"));
        let mut m2 = m.clone();
        m2.container.image = ContentHash::of(b"img").to_string();
        m2.validate_with(ImageField::Hash).unwrap();
        assert_eq!(m2.image_hash(), Some(ContentHash::of(b"img")));
    }

    #[test]
    fn health_checks_are_checked() {
        let mut m = hello();
        m.health_check = Some(HealthCheck {
            kind: HealthCheckKind::Http,
            port: Some(9999),
            path: Some("nope".into()),
            command: None,
            interval: Some("ten".into()),
            timeout: None,
            retries: Some(0),
            start_period: None,
        });
        let errs = errors_of(&m);
        for p in [
            "app.health_check.port",
            "app.health_check.path",
            "app.health_check.interval",
            "app.health_check.retries",
        ] {
            assert!(has(&errs, p), "missing {p}");
        }
    }

    #[test]
    fn secrets_and_dependencies_are_checked() {
        let mut m = hello();
        m.generated_secrets = vec![
            GeneratedSecret {
                name: "DB_PASS".into(),
                kind: SecretKind::Password,
            },
            GeneratedSecret {
                name: "DB_PASS".into(),
                kind: SecretKind::Hex32,
            },
            GeneratedSecret {
                name: "9bad".into(),
                kind: SecretKind::Hex32,
            },
        ];
        m.dependencies = vec![
            Dependency {
                app_id: "org.example.hello".into(),
                version_req: None,
            },
            Dependency {
                app_id: "org.example.db".into(),
                version_req: Some("not a req".into()),
            },
        ];
        let errs = errors_of(&m);
        for p in [
            "app.generated_secrets[1].name",
            "app.generated_secrets[2].name",
            "app.dependencies[0].app_id",
            "app.dependencies[1].version_req",
        ] {
            assert!(has(&errs, p), "missing {p}");
        }
    }

    #[test]
    fn normalisation_fills_defaults_and_hash_is_stable() {
        let m = hello();
        let n = m.normalized();
        let hc = n.health_check.as_ref().unwrap();
        assert_eq!(hc.interval.as_deref(), Some("10s"));
        assert_eq!(n.container.readonly_root, Some(false));
        assert_eq!(
            m.manifest_hash(),
            n.manifest_hash(),
            "normalising is idempotent"
        );
        let mut changed = m.clone();
        changed.container.env.insert("A".into(), "1".into());
        assert_ne!(m.manifest_hash(), changed.manifest_hash());
    }

    #[test]
    fn oversized_manifest_is_refused_before_parsing() {
        let big = "a".repeat(MAX_MANIFEST_BYTES + 1);
        let e = parse(&big, ManifestFormat::Yaml).unwrap_err();
        assert!(e.to_string().contains("at most"));
    }

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert!(parse_memory("lots").is_err());
    }
}
