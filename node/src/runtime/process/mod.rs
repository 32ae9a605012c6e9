//! The `process` runtime: apps as plain supervised processes, no container engine.
//!
//! It exists so a node runs apps on hosts without podman (and as the embedded runtime for
//! demos), with the same contract the reconciler relies on: adoption after a daemon
//! restart, drift found by labels, dead processes reported so the planner restarts them.
//!
//! Layout under the runtime's root (`<node data>/process`):
//!
//! - `images/<config hex>/rootfs` and `config.json`: an image unpacked from its verified
//!   archive (layers applied in order, OCI whiteouts honoured, layer digests and the
//!   config digest checked). Unpacking goes to a temp dir renamed into place, so an image
//!   dir is either complete or absent.
//! - `apps/<app id>/` (0700): `spec.json` (what `create` decided: argv, env without
//!   secret values, workdir, user, mounts, ports, labels), `app.log`, `pid`, `exit`, and
//!   the app's writable layer (`upper/`, `work/`; `merged/` is its root while it runs).
//!
//! `start` runs `archy process-helper supervise <app dir>` (see [`sandbox`]), which
//! detaches (`setsid`), binds the published ports on the host, enters new mount,
//! network, PID, UTS and IPC namespaces, mounts an overlay of the image rootfs with the
//! app's writable layer, the volumes, `/dev`, `/proc` and `/run/secrets`, brings `lo` up
//! and starts the entrypoint chrooted into that root as PID 2 of its PID namespace, under
//! a minimal init that passes signals on (so SIGTERM stops it at once). The
//! supervisor then stays, in the app's network namespace, as the port forwarder
//! (`publish_ip:host` to `127.0.0.1:container` inside) and exits when the app exits; the
//! app is killed if the supervisor dies. Because each app has its own network namespace,
//! several nodes on one host (each with its own `publish_ip`) run the same app on the
//! same container port, as with podman. Nothing the app mounts is visible on the host.
//!
//! The `pid` file records the supervisor's and the app's PIDs with their start times
//! (`/proc/PID/stat` field 22). [`Runtime::list`] reports an app as running only when the
//! supervisor's PID is alive and has the recorded start time, so a recycled PID is never
//! adopted; a dead or recycled one is reported as exited and the planner starts it again
//! (restart on crash, with the executor's per-app backoff). Status that cannot be read
//! counts as alive.
//!
//! Not provided (unlike podman): capability dropping and seccomp (the app runs as root
//! unless the manifest or image names a user; `no_new_privs` is set), memory and CPU
//! limits, and any network beyond the app's own loopback (no outbound connections).
//! Needs root and overlayfs.

mod error;
mod files;
mod image;
mod layer_fault;
mod procfs;
pub mod sandbox;
mod spec;

pub(crate) use error::{io_at, json_at, setup};
pub use error::{ProcessError, ProcessUnavailable};
pub(crate) use files::{create_private_dir, lock};
use files::{open_log, tail};
pub use image::{UnpackLimits, Unpacked};
use procfs::{kernel_at_least, signal, wait_gone};
pub use procfs::{proc_state, same_process, ProcState};
use spec::SpecLabels;
pub use spec::{AppSpec, MountSpec, PidRecord, PortSpec};

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use archy_catalog::{oci::RuntimeConfig, ContentHash, ImageRef};
use nix::sys::signal::Signal;

use super::{ContainerSpec, Runtime, RuntimeError};
use crate::planner::{ContainerStatus, Liveness, ObservedContainer};

/// Seconds an app gets to stop after SIGTERM before it is killed (as podman's `-t 3`).
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `start` waits for the supervisor to report the app started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A log bigger than this is rotated to `app.log.1` when the app starts.
const LOG_ROTATE_BYTES: u64 = 8 << 20;
/// The PATH an app gets when neither the image nor the manifest sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process runtime for one node.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    node: String,
    root: PathBuf,
    helper: PathBuf,
    unpack: UnpackLimits,
    ids: crate::runtime::ids::IdRanges,
}

impl ProcessRuntime {
    /// `root` holds images and apps (the daemon uses `<data>/process`); `helper` is the
    /// `archy` binary, run as `archy process-helper ...` to start apps.
    pub fn new(
        node: impl Into<String>,
        root: impl Into<PathBuf>,
        helper: impl Into<PathBuf>,
    ) -> Self {
        let root = root.into();
        Self {
            node: node.into(),
            ids: crate::runtime::ids::IdRanges::new(
                root.join("id-ranges.json"),
                crate::runtime::ids::DEFAULT_POOL,
            ),
            root,
            helper: helper.into(),
            unpack: UnpackLimits::default(),
        }
    }

    /// Where the apps' id blocks are kept (default `<root>/id-ranges.json`; a node keeps
    /// one table for both runtimes).
    pub fn with_ids(mut self, ids: crate::runtime::ids::IdRanges) -> Self {
        self.ids = ids;
        self
    }

    /// Budgets for unpacking one image (defaults: [`UnpackLimits::default`]).
    pub fn with_unpack_limits(mut self, limits: UnpackLimits) -> Self {
        self.unpack = limits;
        self
    }

    /// Whether this host can run the process runtime with every protection: root,
    /// overlayfs, user namespaces, idmapped mounts for overlay (Linux 5.19), seccomp, and
    /// cgroups with the memory, cpu and pids controllers. The error names everything that
    /// is missing; the runtime never runs an app with less.
    pub fn check() -> Result<(), ProcessUnavailable> {
        if !nix::unistd::geteuid().is_root() {
            return Err(ProcessUnavailable::NotRoot);
        }
        let mut missing = Vec::new();
        let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
            // The module may still load on first mount; say so rather than refuse.
            tracing::warn!("overlay is not listed in /proc/filesystems; app starts may fail");
        }
        let userns = fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
        if userns.trim().parse::<u64>().unwrap_or(0) == 0 {
            missing.push("user namespaces (sysctl user.max_user_namespaces is 0)".to_string());
        }
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        if kernel_at_least(&release, 5, 19) != Some(true) {
            missing.push(format!(
                "idmapped mounts under overlayfs (Linux 5.19 or later; this is {release:?})"
            ));
        }
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        if !status.lines().any(|l| l.starts_with("Seccomp:")) {
            missing.push("seccomp (a kernel built with CONFIG_SECCOMP_FILTER)".to_string());
        }
        if let Err(e) = archy_confine::cgroup::Hierarchy::detect() {
            missing.push(format!("cgroup limits: {e}"));
        }
        match missing.is_empty() {
            true => Ok(()),
            false => Err(ProcessUnavailable::Missing(missing)),
        }
    }

    /// What confines an app on this runtime, as `archy node status` lists it.
    pub fn protections() -> Vec<String> {
        let cgroup = match archy_confine::cgroup::Hierarchy::detect() {
            Ok(archy_confine::cgroup::Hierarchy::V2 { .. }) => {
                "cgroup v2 limits (memory, cpu, pids)"
            }
            Ok(archy_confine::cgroup::Hierarchy::V1 { .. }) => {
                "cgroup v1 limits (memory, cpu, pids)"
            }
            Err(_) => "no cgroup limits",
        };
        [
            "own user namespace per app (root inside is an unprivileged host id)",
            "pivot_root (host tree unmounted)",
            "capabilities: podman's default set plus the manifest's",
            "seccomp: podman's default filter",
            "no_new_privs",
            "masked and read-only /proc paths",
            "nosuid,nodev root and volumes",
            cgroup,
            "own mount, network, PID, UTS and IPC namespaces",
        ]
        .map(String::from)
        .to_vec()
    }

    /// The runtime's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/images/<BLAKE3 hex>`: an unpacked image is found by the signed hash of
    /// the archive it came from, never by anything the archive itself says.
    fn image_dir(&self, image: &ImageRef) -> PathBuf {
        self.root.join("images").join(image.hash.to_hex())
    }

    /// `<root>/apps/<id>`, refusing ids that could name anything else.
    pub fn app_dir(&self, app_id: &str) -> Result<PathBuf, ProcessError> {
        let ok = !app_id.is_empty()
            && !app_id.starts_with('.')
            && app_id.len() <= 200
            && app_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        match ok {
            true => Ok(self.root.join("apps").join(app_id)),
            false => Err(ProcessError::BadAppId(app_id.to_string())),
        }
    }

    fn read_spec(&self, app_id: &str) -> Result<AppSpec, ProcessError> {
        let path = self.app_dir(app_id)?.join("spec.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(json_at(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ProcessError::NoSuchApp(app_id.to_string()))
            }
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// Just the labels of a `spec.json`, which every version of it carries.
    fn read_labels(&self, app_id: &str) -> Option<SpecLabels> {
        let path = self.app_dir(app_id).ok()?.join("spec.json");
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    fn read_pid(&self, app_id: &str) -> Result<Option<PidRecord>, ProcessError> {
        let path = self.app_dir(app_id)?.join("pid");
        match fs::read(&path) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// The app's state from its pid file (see the module doc).
    fn status_of(&self, app_id: &str) -> Result<(ContainerStatus, Liveness), ProcessError> {
        Ok(match self.read_pid(app_id)? {
            None => (ContainerStatus::Created, Liveness::Dead),
            Some(p) => match same_process(p.pid, p.start_time) {
                Some(true) => (ContainerStatus::Running, Liveness::Alive),
                Some(false) => (ContainerStatus::Exited, Liveness::Dead),
                None => (ContainerStatus::Running, Liveness::Unknown),
            },
        })
    }

    /// Builds the stored spec from the reconciler's container spec and the image config.
    fn app_spec(&self, spec: &ContainerSpec) -> Result<AppSpec, RuntimeError> {
        let m = &spec.manifest;
        let c = &m.container;
        let image_dir = self.image_dir(&spec.image);
        let config_path = image_dir.join("config.json");
        let config: RuntimeConfig = match fs::read(&config_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(json_at(&config_path))?,
            Err(_) => return Err(ProcessError::ImageNotLoaded(spec.image.hash.to_string()).into()),
        };
        // Docker semantics: an entrypoint from the manifest replaces the image's command too.
        let (entrypoint, cmd) = match &c.entrypoint {
            Some(ep) => (ep.clone(), c.cmd.clone().unwrap_or_default()),
            None => (
                config.entrypoint.clone().unwrap_or_default(),
                c.cmd.clone().or(config.cmd.clone()).unwrap_or_default(),
            ),
        };
        let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
        if argv.is_empty() {
            return Err(ProcessError::NoCommand.into());
        }
        let mut env: BTreeMap<String, String> = config
            .env
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(c.env.clone());
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        let hostname: String = m.id.chars().take(63).collect();
        env.insert("HOSTNAME".into(), hostname.clone());
        let mut mounts = Vec::new();
        for v in &c.volumes {
            // Checked now, so a refusal fails the create; resolved again at every start.
            let host = spec.data_dir.join("volumes").join(&v.name);
            super::open_volume(&host, v.source.as_deref())?;
            mounts.push(MountSpec {
                host,
                source: v.source.clone(),
                target: v.target.clone(),
                readonly: v.readonly == Some(true),
            });
        }
        let secrets_dir = (!spec.secrets.is_empty()).then(|| spec.data_dir.join("secrets"));
        if let Some(dir) = &secrets_dir {
            mounts.push(MountSpec {
                host: dir.clone(),
                source: None,
                target: "/run/secrets".into(),
                readonly: true,
            });
        }
        Ok(AppSpec {
            node: self.node.clone(),
            app_id: m.id.clone(),
            manifest_hash: spec.manifest_hash,
            image: spec.image.hash,
            config_digest: spec.image.config_digest.clone(),
            rootfs: image_dir.join("rootfs"),
            argv,
            env,
            secrets_dir,
            secret_names: spec.secrets.keys().cloned().collect(),
            workdir: c
                .workdir
                .clone()
                .or(config.working_dir.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: c
                .user
                .clone()
                .or(config.user.clone())
                .filter(|u| !u.is_empty()),
            hostname,
            mounts,
            ports: c
                .ports
                .iter()
                .map(|p| PortSpec {
                    host: SocketAddr::new(spec.publish_ip, p.host),
                    container: p.container,
                    protocol: p.protocol,
                })
                .collect(),
            readonly_root: c.readonly_root == Some(true),
            id_start: self.ids.for_app(&spec.id_block())?,
            cgroup: format!("{}.{}", self.node, m.id),
            capabilities: c.capabilities_add.clone(),
            memory_bytes: m
                .resources
                .as_ref()
                .and_then(|r| r.memory_limit.as_deref())
                .map(archy_catalog::manifest::parse_memory)
                .transpose()
                .map_err(ProcessError::from)?,
            cpus: m.resources.as_ref().and_then(|r| r.cpu_limit),
            pids: m
                .resources
                .as_ref()
                .and_then(|r| r.pids_limit)
                .unwrap_or(archy_catalog::manifest::DEFAULT_PIDS_LIMIT),
        })
    }

    /// Starts the supervisor and waits for its `ready` (or the reason it failed).
    fn launch(&self, app_id: &str, dir: &Path) -> Result<(), ProcessError> {
        let log_path = dir.join("app.log");
        if fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
            let _ = fs::rename(&log_path, dir.join("app.log.1"));
        }
        let log = open_log(&log_path)?;
        let _ = fs::remove_file(dir.join("exit"));
        let mut child = Command::new(&self.helper)
            .arg("process-helper")
            .arg("supervise")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|source| ProcessError::Helper {
                program: self.helper.clone(),
                source,
            })?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        if line.trim() == "ready" {
            // Reap the supervisor whenever it exits while this process lives.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        let _ = child.kill();
        let _ = child.wait();
        let reason = match line.trim() {
            "" => format!("the supervisor gave no answer (see {})", log_path.display()),
            l => l.trim_start_matches("error: ").to_string(),
        };
        Err(ProcessError::StartFailed {
            app: app_id.to_string(),
            reason,
        })
    }

    fn stop_app(&self, app_id: &str) -> Result<(), ProcessError> {
        let Some(p) = self.read_pid(app_id)? else {
            return Ok(());
        };
        let alive = |pid, start| same_process(pid, start) != Some(false);
        if same_process(p.pid, p.start_time) == Some(true) {
            // The supervisor passes SIGTERM on to the app.
            signal(p.pid, Signal::SIGTERM);
            if wait_gone(p.pid, p.start_time, STOP_TIMEOUT) {
                return Ok(());
            }
        }
        if same_process(p.app_pid, p.app_start_time) == Some(true) {
            // PID 1 of the app's PID namespace: killing it ends every process in there.
            signal(p.app_pid, Signal::SIGKILL);
        }
        if same_process(p.pid, p.start_time) == Some(true) {
            signal(p.pid, Signal::SIGKILL);
        }
        let deadline = Duration::from_secs(5);
        if wait_gone(p.pid, p.start_time, deadline)
            && wait_gone(p.app_pid, p.app_start_time, deadline)
        {
            return Ok(());
        }
        match alive(p.pid, p.start_time) || alive(p.app_pid, p.app_start_time) {
            true => Err(ProcessError::StopTimeout(app_id.to_string())),
            false => Ok(()),
        }
    }
}

impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn image_loaded(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        let dir = self.image_dir(image);
        Ok(dir.join("rootfs").is_dir() && dir.join("config.json").is_file())
    }

    /// Unpacks a verified archive (its BLAKE3 hash is `image.hash`; the caller checked
    /// it) after checking that its config is the one the catalog names; every layer is
    /// then checked against the config's diff_ids while it unpacks.
    fn load_image(&self, archive: &Path, image: &ImageRef) -> Result<(), RuntimeError> {
        archy_catalog::oci::check_digest(&image.config_digest).map_err(ProcessError::from)?;
        let info = archy_catalog::oci::inspect(archive).map_err(ProcessError::from)?;
        if info.config_digest != image.config_digest {
            return Err(RuntimeError::DigestMismatch {
                expected: image.config_digest.clone(),
            });
        }
        if self.image_loaded(image)? {
            return Ok(());
        }
        let done = image::unpack(archive, &info, &self.image_dir(image), &self.unpack)?;
        tracing::info!(
            image = %image.hash,
            entries = done.entries,
            bytes = done.bytes,
            skipped_special = done.skipped_special,
            cleared_setid = done.cleared_setid,
            "image unpacked"
        );
        Ok(())
    }

    fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        spec.require_absolute_data_dir()?;
        let app_id = &spec.manifest.id;
        let dir = self.app_dir(app_id)?;
        if dir.exists() {
            if self
                .status_of(app_id)
                .is_ok_and(|(s, _)| s == ContainerStatus::Running)
            {
                return Err(ProcessError::Running(app_id.clone()).into());
            }
            fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        }
        let app = self.app_spec(spec)?;
        create_private_dir(&self.root)?;
        create_private_dir(&dir)?;
        let path = dir.join("spec.json");
        let bytes = serde_json::to_vec_pretty(&app).map_err(json_at(&path))?;
        archy_catalog::fsutil::write_atomic_mode(&path, &bytes, Some(0o600))
            .map_err(io_at(&path))?;
        Ok(())
    }

    fn start(&self, app_id: &str) -> Result<(), RuntimeError> {
        self.read_spec(app_id)?;
        if self.status_of(app_id)?.0 == ContainerStatus::Running {
            return Ok(());
        }
        let dir = self.app_dir(app_id)?;
        // One start at a time per app (the API's restart and the reconciler may race);
        // the supervisor's own lock makes a second one for the same app fail regardless.
        let _guard = lock(&dir.join("start.lock"), nix::fcntl::FlockArg::LockExclusive)?;
        if self.status_of(app_id)?.0 == ContainerStatus::Running {
            return Ok(());
        }
        self.launch(app_id, &dir)?;
        Ok(())
    }

    fn stop(&self, app_id: &str) -> Result<(), RuntimeError> {
        self.read_spec(app_id)?;
        Ok(self.stop_app(app_id)?)
    }

    fn remove(&self, app_id: &str) -> Result<(), RuntimeError> {
        let dir = self.app_dir(app_id)?;
        if !dir.exists() {
            return Ok(());
        }
        self.stop_app(app_id)?;
        fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let apps = self.root.join("apps");
        let entries = match fs::read_dir(&apps) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&apps)(e).into()),
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            if let Some(id) = entry.file_name().to_str() {
                found.extend(self.observe(id)?);
            }
        }
        found.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        Ok(found)
    }

    fn observe(&self, app_id: &str) -> Result<Option<ObservedContainer>, RuntimeError> {
        // Only complete apps of this node (a dir without a readable spec is not one).
        let (labels, current) = match self.read_spec(app_id) {
            Ok(spec) => (
                SpecLabels {
                    node: spec.node,
                    app_id: spec.app_id,
                    manifest_hash: spec.manifest_hash,
                    image: spec.image,
                },
                true,
            ),
            // A spec an older Archy wrote, from before apps were confined: reported with a
            // manifest hash that matches nothing, so the planner recreates it confined.
            Err(ProcessError::Json { .. }) => match self.read_labels(app_id) {
                Some(labels) => (labels, false),
                None => return Ok(None),
            },
            Err(_) => return Ok(None),
        };
        if labels.node != self.node || labels.app_id != app_id {
            return Ok(None);
        }
        let (status, liveness) = self.status_of(app_id)?;
        Ok(Some(ObservedContainer {
            app_id: app_id.to_string(),
            manifest_hash: match current {
                true => labels.manifest_hash,
                false => ContentHash::of(b"spec written by an older archy"),
            },
            image: labels.image,
            status,
            liveness,
            healthy: None,
        }))
    }

    fn protections(&self) -> Vec<String> {
        Self::protections()
    }

    fn logs(&self, app_id: &str, tail_lines: usize) -> Result<String, RuntimeError> {
        self.read_spec(app_id)?;
        Ok(tail(&self.app_dir(app_id)?.join("app.log"), tail_lines)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_state_reads_this_process_and_refuses_strangers() {
        let me = std::process::id();
        let ProcState::Alive { start_time } = proc_state(me) else {
            panic!("this process is alive");
        };
        assert_eq!(same_process(me, start_time), Some(true));
        assert_eq!(
            same_process(me, start_time + 1),
            Some(false),
            "recycled PID"
        );
        assert_eq!(proc_state(0), ProcState::Gone);
        assert_eq!(proc_state(u32::MAX - 1), ProcState::Gone);
    }

    #[test]
    fn app_ids_cannot_escape_the_apps_dir() {
        let rt = ProcessRuntime::new("n", "/x", "/bin/false");
        assert!(rt.app_dir("org.example.hello").is_ok());
        for bad in ["", "..", "../etc", "a/b", ".hidden", "a b"] {
            assert!(rt.app_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_app_from_an_older_archy_is_reported_for_recreation() {
        let d = tempfile::tempdir().expect("tempdir");
        let rt = ProcessRuntime::new("n1", d.path(), "/bin/false");
        let dir = rt.app_dir("org.example.old").expect("dir");
        fs::create_dir_all(&dir).expect("mkdir");
        let hash = ContentHash::of(b"manifest");
        // What an older version wrote: no id block, cgroup or limits.
        let old = serde_json::json!({
            "node": "n1", "app_id": "org.example.old", "manifest_hash": hash,
            "image": ContentHash::of(b"image"), "config_digest": "sha256:x",
            "rootfs": "/x", "argv": ["/bin/true"], "env": {}, "secrets_dir": null,
            "secret_names": [], "workdir": "/", "user": null, "hostname": "h",
            "mounts": [], "ports": [], "readonly_root": false,
        });
        fs::write(dir.join("spec.json"), old.to_string()).expect("write");
        let seen = rt
            .observe("org.example.old")
            .expect("observe")
            .expect("reported");
        assert_ne!(
            seen.manifest_hash, hash,
            "drifts, so the planner recreates it"
        );
        assert_eq!(seen.image, ContentHash::of(b"image"));
        assert!(ProcessRuntime::new("n2", d.path(), "/bin/false")
            .observe("org.example.old")
            .expect("observe")
            .is_none());
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert_eq!(kernel_at_least("6.18.44-fc-v1147", 5, 19), Some(true));
        assert_eq!(kernel_at_least("5.19.0", 5, 19), Some(true));
        assert_eq!(kernel_at_least("5.15.0-91-generic", 5, 19), Some(false));
        assert_eq!(kernel_at_least("4.19", 5, 19), Some(false));
        assert_eq!(kernel_at_least("garbage", 5, 19), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("log");
        fs::write(&p, "a\nb\nc\n").expect("write");
        assert_eq!(tail(&p, 2).expect("tail"), "b\nc\n");
        assert_eq!(tail(&d.path().join("none"), 2).expect("tail"), "");
    }
}
