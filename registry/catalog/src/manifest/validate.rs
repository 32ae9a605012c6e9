//! Validation: every field against the schema and the security policy (no privileged
//! mode, no host namespaces, no mounts outside the app's data dir, no runtime socket,
//! allow-listed ports and capabilities). All problems are collected, not just the first.

use std::time::Duration;

use super::{
    model::normalize_capability, parse_memory, AppManifest, Container, FieldError, HealthCheck,
    HealthCheckKind, ManifestError, PortMapping, Volume,
};
use crate::hash::ContentHash;

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
