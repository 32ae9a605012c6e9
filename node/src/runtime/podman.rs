//! The podman runtime, driven through the podman CLI.
//!
//! Images are loaded from verified OCI archives and addressed by their config digest (the
//! image id), never by a mutable tag. Containers are named `archy-<node>-<app id>` and
//! labelled with node, app, manifest hash and image, so several nodes can share one
//! engine and a restarted daemon finds its containers again. Every container gets the
//! same hardening: its own user namespace, all capabilities dropped except podman's default
//! set plus the manifest's allow-listed extras, `no-new-privileges`, ports published on the node's
//! address only, volumes only under the app's data dir.
//!
//! Debian's podman on hosts like the CI machine needs `--runtime runc` and explicit
//! ulimits; both are set here.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use archy_catalog::{ContentHash, ImageRef};
use serde::Deserialize;

use super::{
    pid_alive, ContainerSpec, Runtime, RuntimeError, LABEL_APP, LABEL_IMAGE, LABEL_MANIFEST,
    LABEL_NODE,
};
use crate::planner::{ContainerStatus, Liveness, ObservedContainer};

/// What every podman command that runs a container needs on hosts like the CI machine
/// (Debian's podman: runc, explicit ulimits).
pub const HOST_ARGS: &[&str] = &[
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Seconds a container gets to stop before it is killed.
const STOP_TIMEOUT: &str = "3";

/// Why podman cannot run apps on this host.
#[derive(Debug, thiserror::Error)]
pub enum PodmanUnavailable {
    #[error("podman not found: {0}")]
    NotFound(#[source] std::io::Error),
    #[error("`podman info` failed: {stderr}")]
    InfoFailed { stderr: String },
}

/// The podman engine, for one node.
#[derive(Debug, Clone)]
pub struct Podman {
    /// The node's name: part of container names and the `io.archy.node` label.
    node: String,
    program: String,
    ids: super::ids::IdRanges,
    unpack: super::process::UnpackLimits,
}

impl Podman {
    /// Podman for node `node`, whose apps' id blocks are kept in `ids`.
    pub fn new(node: impl Into<String>, ids: super::ids::IdRanges) -> Self {
        Self {
            node: node.into(),
            program: "podman".into(),
            ids,
            unpack: Default::default(),
        }
    }

    /// The byte budget for checking an archive's layers before it is loaded.
    pub fn with_unpack_limits(mut self, limits: super::process::UnpackLimits) -> Self {
        self.unpack = limits;
        self
    }

    /// Whether podman works here (`podman info` succeeds); the error says why not.
    pub fn check() -> Result<(), PodmanUnavailable> {
        let out = Command::new("podman")
            .args(["info", "--format", "{{.Host.OCIRuntime.Name}}"])
            .output()
            .map_err(PodmanUnavailable::NotFound)?;
        match out.status.success() {
            true => Ok(()),
            false => Err(PodmanUnavailable::InfoFailed {
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    /// The node name this runtime manages containers for.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn container_name(&self, app_id: &str) -> String {
        format!("archy-{}-{}", self.node, app_id)
    }

    fn run(&self, args: &[String]) -> Result<Output, RuntimeError> {
        let out = Command::new(&self.program)
            .args(args)
            .output()
            .map_err(|source| RuntimeError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(RuntimeError::Command {
                command: format!(
                    "{} {}",
                    self.program,
                    args.first().map(String::as_str).unwrap_or("")
                ),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `podman create` arguments for a spec (pure, so it is tested without podman).
    /// Secret values are never among them (any local user can read a command line):
    /// they go in `env_file`, which [`Runtime::create`] writes 0600 and removes after.
    /// `volumes` are the host paths [`super::open_volume`] checked, one per volume.
    pub fn create_args(&self, spec: &ContainerSpec, prepared: &Prepared) -> Vec<String> {
        let Prepared {
            env_file,
            volumes,
            id_start,
        } = prepared;
        let m = &spec.manifest;
        let c = &m.container;
        let mut a: Vec<String> = vec!["create".into(), "--name".into(), self.container_name(&m.id)];
        a.extend(HOST_ARGS.iter().map(|s| s.to_string()));
        a.extend(["--security-opt", "no-new-privileges", "--cap-drop", "ALL"].map(String::from));
        // The same default set as the process runtime: podman's own.
        let mut caps: Vec<String> = archy_confine::caps::DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .collect();
        caps.extend(c.capabilities_add.iter().cloned());
        caps.sort();
        caps.dedup();
        for cap in caps {
            a.extend(["--cap-add".into(), cap]);
        }
        for (k, v) in [
            (LABEL_NODE, self.node.clone()),
            (LABEL_APP, m.id.clone()),
            (LABEL_MANIFEST, spec.manifest_hash.to_string()),
            (LABEL_IMAGE, spec.image.hash.to_string()),
        ] {
            a.extend(["--label".into(), format!("{k}={v}")]);
        }
        for p in &c.ports {
            a.extend([
                "-p".into(),
                format!(
                    "{}:{}:{}/{}",
                    spec.publish_ip, p.host, p.container, p.protocol
                ),
            ]);
        }
        for (k, v) in &c.env {
            a.extend(["--env".into(), format!("{k}={v}")]);
        }
        // Root in the app is the first id of its own block on the host.
        for map in ["--uidmap", "--gidmap"] {
            a.extend([map.into(), format!("0:{id_start}:{}", super::ids::PER_APP)]);
        }
        // A private IPC namespace whose /dev/shm is mounted inside the container: podman's
        // default host-side shm mount gets copied into the user namespaces of containers
        // created later, and then removing this one fails with EBUSY (podman 4.3).
        a.extend(
            [
                "--ipc",
                "none",
                "--tmpfs",
                "/dev/shm:rw,nosuid,nodev,noexec,size=65536k",
            ]
            .map(String::from),
        );
        if let Some(f) = env_file {
            a.extend(["--env-file".into(), f.display().to_string()]);
        }
        if !spec.secrets.is_empty() {
            let dir = spec.data_dir.join("secrets");
            a.extend(["-v".into(), format!("{}:/run/secrets:ro", dir.display())]);
        }
        for (v, host) in c.volumes.iter().zip(volumes) {
            let ro = if v.readonly == Some(true) { "ro," } else { "" };
            a.extend([
                "-v".into(),
                format!("{}:{}:{ro}nosuid,nodev", host.display(), v.target),
            ]);
        }
        if let Some(u) = &c.user {
            a.extend(["--user".into(), u.clone()]);
        }
        if let Some(w) = &c.workdir {
            a.extend(["--workdir".into(), w.clone()]);
        }
        if c.readonly_root == Some(true) {
            a.push("--read-only".into());
        }
        if let Some(r) = &m.resources {
            if let Some(mem) = &r.memory_limit {
                a.extend(["--memory".into(), mem.clone()]);
            }
            if let Some(cpu) = r.cpu_limit {
                a.extend(["--cpus".into(), cpu.to_string()]);
            }
        }
        let pids = m.resources.as_ref().and_then(|r| r.pids_limit);
        a.extend([
            "--pids-limit".into(),
            pids.unwrap_or(archy_catalog::manifest::DEFAULT_PIDS_LIMIT)
                .to_string(),
        ]);
        if let Some(ep) = &c.entrypoint {
            a.extend([
                "--entrypoint".into(),
                serde_json::to_string(ep).unwrap_or_default(),
            ]);
        }
        // The config digest was checked when the image was loaded; a spec that names
        // another form never reaches podman as an image reference.
        a.push(image_id(&spec.image).unwrap_or_else(|_| "invalid-config-digest".into()));
        if let Some(cmd) = &c.cmd {
            a.extend(cmd.iter().cloned());
        }
        a
    }
}

/// What [`Runtime::create`] prepares on the host before it asks podman to create.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The secrets' env file, if the app has secrets.
    pub env_file: Option<PathBuf>,
    /// One host path per volume, checked by [`super::open_volume`].
    pub volumes: Vec<PathBuf>,
    /// The first host id of the app's block.
    pub id_start: u32,
}

/// Secrets as `KEY=value` lines in a 0600 file for `podman create --env-file`, removed
/// when dropped (podman has read it by then and keeps the values in its own storage).
struct SecretEnvFile {
    path: PathBuf,
}

impl SecretEnvFile {
    fn write(
        data_dir: &Path,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, RuntimeError> {
        let mut text = String::new();
        for (k, v) in secrets {
            if v.contains(['\n', '\r', '\0']) {
                return Err(RuntimeError::SecretNotEnvSafe(k.clone()));
            }
            text.push_str(&format!("{k}={v}\n"));
        }
        let path = data_dir.join(".create.env");
        archy_catalog::fsutil::write_atomic_mode(&path, text.as_bytes(), Some(0o600))?;
        Ok(Self { path })
    }
}

impl Drop for SecretEnvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The podman image id: the config digest's hex, once the digest is known to be one.
fn image_id(image: &ImageRef) -> Result<String, RuntimeError> {
    archy_catalog::oci::check_digest(&image.config_digest)?;
    Ok(image.config_digest["sha256:".len()..].to_string())
}

/// The tag an archive's image gets: its BLAKE3 hash, so a loaded image is found by the
/// signed hash of the archive it came from.
fn archive_tag(image: &ImageRef) -> String {
    format!("localhost/archy-image:{}", image.hash.to_hex())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PsEntry {
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    pid: u32,
}

impl Runtime for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }

    /// Loaded means: the tag naming this archive's BLAKE3 hash exists and points at the
    /// image whose id is the catalog's config digest.
    fn image_loaded(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        let out = Command::new(&self.program)
            .args([
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                &archive_tag(image),
            ])
            .output()
            .map_err(|source| RuntimeError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == image_id(image)?)
    }

    /// Checks every layer against the config's diff_ids first (so the config digest
    /// names exactly these files, whatever podman checks itself), loads, checks that the
    /// image podman reports is the catalog's, and tags it with the archive's hash.
    fn load_image(&self, archive: &Path, image: &ImageRef) -> Result<(), RuntimeError> {
        let id = image_id(image)?;
        let info =
            archy_catalog::oci::inspect(archive).map_err(super::process::ProcessError::from)?;
        if info.config_digest != image.config_digest {
            return Err(RuntimeError::DigestMismatch {
                expected: image.config_digest.clone(),
            });
        }
        archy_catalog::oci::verify_layers(archive, &info, self.unpack.max_bytes)
            .map_err(super::process::ProcessError::from)?;
        let out = self.run(&[
            "load".into(),
            "-q".into(),
            "-i".into(),
            archive.display().to_string(),
        ])?;
        let reported = String::from_utf8_lossy(&out.stdout);
        let loaded = self.run(&[
            "image".into(),
            "inspect".into(),
            "--format".into(),
            "{{.Id}}".into(),
            id.clone(),
        ]);
        if !loaded.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == id) {
            return Err(RuntimeError::DigestMismatch {
                expected: format!(
                    "{} (podman loaded {})",
                    image.config_digest,
                    reported.trim()
                ),
            });
        }
        self.run(&["tag".into(), id, archive_tag(image)])?;
        Ok(())
    }

    fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        spec.require_absolute_data_dir()?;
        image_id(&spec.image)?;
        let id_start = self.ids.for_app(&spec.id_block())?;
        let mut volumes = Vec::new();
        for v in &spec.manifest.container.volumes {
            let dir = spec.data_dir.join("volumes").join(&v.name);
            let (_, path) = super::open_volume(&dir, v.source.as_deref())?;
            super::ids::give_to_block(&dir, id_start)?;
            volumes.push(path);
        }
        let secrets = spec.data_dir.join("secrets");
        if secrets.is_dir() {
            super::ids::shift_owners(&secrets, id_start)?;
        }
        let env_file = match spec.secrets.is_empty() {
            true => None,
            false => Some(SecretEnvFile::write(&spec.data_dir, &spec.secrets)?),
        };
        let prepared = Prepared {
            env_file: env_file.as_ref().map(|f| f.path.clone()),
            volumes,
            id_start,
        };
        self.run(&self.create_args(spec, &prepared))?;
        Ok(())
    }

    fn start(&self, app_id: &str) -> Result<(), RuntimeError> {
        self.run(&["start".into(), self.container_name(app_id)])
            .map(|_| ())
    }

    fn stop(&self, app_id: &str) -> Result<(), RuntimeError> {
        self.run(&[
            "stop".into(),
            "-t".into(),
            STOP_TIMEOUT.into(),
            self.container_name(app_id),
        ])
        .map(|_| ())
    }

    fn remove(&self, app_id: &str) -> Result<(), RuntimeError> {
        self.run(&[
            "rm".into(),
            "-f".into(),
            "-t".into(),
            STOP_TIMEOUT.into(),
            self.container_name(app_id),
        ])
        .map(|_| ())
    }

    fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let out = self.run(&[
            "ps".into(),
            "-a".into(),
            "--filter".into(),
            format!("label={LABEL_NODE}={}", self.node),
            "--format".into(),
            "json".into(),
        ])?;
        let entries: Vec<PsEntry> =
            serde_json::from_slice(&out.stdout).map_err(|source| RuntimeError::Json {
                what: "the output of `podman ps`".into(),
                source,
            })?;
        let mut found = Vec::new();
        for e in entries {
            let labels = e.labels.unwrap_or_default();
            let hash = |k: &str| labels.get(k).and_then(|v| v.parse::<ContentHash>().ok());
            let (Some(app_id), Some(manifest_hash), Some(image)) = (
                labels.get(LABEL_APP),
                hash(LABEL_MANIFEST),
                hash(LABEL_IMAGE),
            ) else {
                continue; // not one of ours in the expected shape
            };
            let status = match e.state.as_str() {
                "running" => ContainerStatus::Running,
                "created" | "configured" | "initialized" => ContainerStatus::Created,
                _ => ContainerStatus::Exited,
            };
            let liveness = match status {
                ContainerStatus::Running => match pid_alive(e.pid) {
                    Some(true) => Liveness::Alive,
                    Some(false) => Liveness::Dead,
                    None => Liveness::Unknown,
                },
                _ => Liveness::Dead,
            };
            found.push(ObservedContainer {
                app_id: app_id.clone(),
                manifest_hash,
                image,
                status,
                liveness,
                healthy: None,
            });
        }
        Ok(found)
    }

    fn protections(&self) -> Vec<String> {
        [
            "own user namespace per app (--uidmap: root inside is an unprivileged host id)",
            "capabilities: podman's default set plus the manifest's (--cap-drop ALL)",
            "seccomp: podman's default profile",
            "no-new-privileges",
            "pids, memory and CPU limits",
            "nosuid,nodev volumes",
            "podman's masked and read-only /proc paths",
        ]
        .map(String::from)
        .to_vec()
    }

    fn logs(&self, app_id: &str, tail: usize) -> Result<String, RuntimeError> {
        let out = self.run(&[
            "logs".into(),
            "--tail".into(),
            tail.to_string(),
            self.container_name(app_id),
        ])?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archy_catalog::manifest::{parse_and_validate, ManifestFormat};

    #[test]
    fn create_args_carry_labels_hardening_and_the_node_address() {
        let mut m = parse_and_validate(
            "app:\n  id: org.example.hello\n  name: Hello\n  version: 1.0.0\n  description: {short: x}\n  container:\n    image: ./x.tar\n    cmd: [/bin/busybox, httpd, -f]\n    ports: [{host: 18080, container: 8080}]\n    volumes: [{name: data, target: /data}]\n    capabilities_add: [SYS_CHROOT]\n",
            ManifestFormat::Yaml,
        )
        .unwrap();
        let image = ImageRef {
            hash: ContentHash::of(b"img"),
            size: 3,
            config_digest: format!("sha256:{}", "ab".repeat(32)),
            format: archy_catalog::oci::ArchiveFormat::OciArchive,
            web_seeds: Vec::new(),
        };
        m.container.image = image.hash.to_string();
        let spec = ContainerSpec {
            manifest_hash: m.manifest_hash(),
            manifest: m,
            image,
            publish_ip: "127.0.0.3".parse().unwrap(),
            data_dir: "/var/lib/archy/apps/org.example.hello".into(),
            secrets: [("DB_PASSWORD".to_string(), "hunter2-secret".to_string())].into(),
            owner: crate::app_identity::AppOwner::Catalog,
        };
        let prepared = Prepared {
            env_file: Some("/var/lib/archy/apps/org.example.hello/.create.env".into()),
            volumes: vec!["/var/lib/archy/apps/org.example.hello/volumes/data".into()],
            id_start: 1_000_065_536,
        };
        let ids =
            crate::runtime::ids::IdRanges::new("/nonexistent", crate::runtime::ids::DEFAULT_POOL);
        let a = Podman::new("n1", ids)
            .create_args(&spec, &prepared)
            .join(" ");
        for want in [
            "--name archy-n1-org.example.hello",
            "--cap-drop ALL",
            "--cap-add SYS_CHROOT",
            "--security-opt no-new-privileges",
            "-p 127.0.0.3:18080:8080/tcp",
            "--label io.archy.node=n1",
            "-v /var/lib/archy/apps/org.example.hello/volumes/data:/data:nosuid,nodev",
            "--env-file /var/lib/archy/apps/org.example.hello/.create.env",
            "--uidmap 0:1000065536:65536",
            "--gidmap 0:1000065536:65536",
            "--pids-limit 1024",
            "--ipc none --tmpfs /dev/shm:rw,nosuid,nodev,noexec,size=65536k",
            &format!("{} /bin/busybox httpd -f", "ab".repeat(32)),
        ] {
            assert!(a.contains(want), "missing {want:?} in {a}");
        }
        assert!(!a.contains("--privileged"));
        assert!(!a.contains("hunter2"), "a secret on the command line: {a}");
    }
}
