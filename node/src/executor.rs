//! Carrying out a plan for one app, with honest progress.
//!
//! [`reconcile`] observes the runtime, asks the pure planner what to do, and performs the
//! actions in order, emitting [`ProgressEvent`]s whose stages only move forward and end in
//! `done` or `failed` with a reason. Images come from an [`ImageSource`], which only ever
//! returns an archive whose BLAKE3 hash and size match the catalog: nothing unverified
//! reaches the runtime.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use archy_catalog::{manifest::HealthCheckKind, oci, ContentHash, ImageRef};
use serde::{Deserialize, Serialize};

use crate::{
    planner::{self, Action, DesiredApp, Observed},
    runtime::{health, ContainerSpec, Runtime, RuntimeError},
    secrets,
};

/// Named stages, in the order an install passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Plan,
    Fetch,
    Verify,
    Load,
    Stop,
    Remove,
    Create,
    Start,
    Healthy,
    /// Going back to the last healthy release after a failed update.
    Rollback,
    Done,
    Failed,
}

impl Stage {
    /// The stage's name, as it appears in events and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Plan => "plan",
            Stage::Fetch => "fetch",
            Stage::Verify => "verify",
            Stage::Load => "load",
            Stage::Stop => "stop",
            Stage::Remove => "remove",
            Stage::Create => "create",
            Stage::Start => "start",
            Stage::Healthy => "healthy",
            Stage::Rollback => "rollback",
            Stage::Done => "done",
            Stage::Failed => "failed",
        }
    }
}

/// One progress report. `bytes_*` are set during fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    pub app_id: String,
    pub stage: Stage,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub message: String,
    /// During `fetch`: bytes received so far from each source (`origin`, `peer 3f2a1b2c`,
    /// `web seed URL`).
    #[serde(default, skip_serializing_if = "Sources::is_empty")]
    pub sources: Sources,
}

/// Bytes received from each source of an image, by a name a person reads.
pub type Sources = std::collections::BTreeMap<String, u64>;

/// Why an image archive could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Swarm(#[from] archy_registry::SwarmError),
    #[error("{hash} is in none of {dirs:?}")]
    NotInDirs {
        hash: ContentHash,
        dirs: Vec<PathBuf>,
    },
    #[error("cannot keep {hash} in the blob store: {source}")]
    Keep {
        hash: ContentHash,
        source: archy_registry::SwarmError,
    },
    #[error("cannot read the archive: {0}")]
    Read(#[from] archy_catalog::oci::OciError),
    /// The swarm had no verified archive and neither had any web seed.
    #[error("{swarm}; web seeds: {}", seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; "))]
    WebSeeds {
        swarm: archy_registry::SwarmError,
        seeds: Vec<crate::web_seed::WebSeedError>,
    },
    #[error("no verified archive to load")]
    NoArchive,
}

/// Why reconciling an app failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("fetch failed: {0}")]
    Fetch(#[from] FetchError),
    #[error("image verification failed: expected {expected}, got {actual}")]
    Verify { expected: String, actual: String },
    /// Reading the runtime's state (the container, whether the image is loaded) failed:
    /// nothing was changed.
    #[error("cannot read the runtime's state: {0}")]
    Inspect(RuntimeError),
    /// Loading the verified image into the runtime failed: the app was not touched.
    #[error("cannot load the image: {0}")]
    Load(RuntimeError),
    /// A change to the app's container failed (create, remove, start, stop).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot prepare secrets: {0}")]
    Secrets(std::io::Error),
    #[error("not healthy within {seconds} s: {reason}")]
    Unhealthy {
        seconds: u64,
        reason: health::ProbeFailure,
    },
}

impl ExecError {
    /// Whether the image could not be had because nothing serves it: no provider was
    /// named, found or configured, or those asked had none of it (not a provider that
    /// failed or lied). A provider may still come online, so the install waits rather
    /// than fails.
    pub fn no_provider(&self) -> bool {
        use archy_registry::{FetchFailure, SwarmError};
        match self {
            ExecError::Fetch(FetchError::NotInDirs { .. }) => true,
            ExecError::Fetch(
                FetchError::Swarm(SwarmError::Fetch { failure, .. })
                | FetchError::WebSeeds {
                    swarm: SwarmError::Fetch { failure, .. },
                    ..
                },
            ) => matches!(
                failure,
                FetchFailure::NoProviders
                    | FetchFailure::SizeUnknown(_)
                    | FetchFailure::PiecesMissing { verified: 0, .. }
            ),
            _ => false,
        }
    }

    /// Whether the failure came after the running app was changed (stopped, removed,
    /// recreated). Reading the runtime, fetching, verifying and loading the image happen
    /// first, so their failures leave it as it was.
    pub fn touched_the_app(&self) -> bool {
        !matches!(
            self,
            ExecError::Inspect(_)
                | ExecError::Load(_)
                | ExecError::Fetch(_)
                | ExecError::Verify { .. }
        )
    }
}

/// A verified archive on local disk, and where its bytes came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedImage {
    pub path: PathBuf,
    /// Human-readable origin of the bytes, e.g. "origin 1.9 MB, peer 3f2a 0.4 MB".
    pub source: String,
}

/// Where verified image archives come from (a local directory, the swarm, ...).
pub trait ImageSource {
    /// Returns a local copy of the archive, verified against `image` (BLAKE3 + size).
    /// `progress(done, total, sources)` may be called while bytes arrive.
    fn fetch(
        &self,
        image: &ImageRef,
        progress: &mut dyn FnMut(u64, u64, &Sources),
    ) -> Result<FetchedImage, ExecError>;
    /// Whether the node already holds the archive (a cheap check; `fetch` verifies).
    fn holds(&self, image: &ImageRef) -> bool;
}

/// Archives in local directories, named by their BLAKE3 hex (what `catalog-signer catalog
/// build --blobs DIR` writes and an origin serves). Directories are tried in order; a file
/// that fails verification is skipped (and named in the error if nothing verifies).
#[derive(Debug, Clone)]
pub struct DirImageSource {
    pub dirs: Vec<PathBuf>,
}

impl ImageSource for DirImageSource {
    fn holds(&self, image: &ImageRef) -> bool {
        self.dirs
            .iter()
            .any(|d| d.join(image.hash.to_hex()).is_file())
    }

    fn fetch(
        &self,
        image: &ImageRef,
        progress: &mut dyn FnMut(u64, u64, &Sources),
    ) -> Result<FetchedImage, ExecError> {
        let mut problems = Vec::new();
        for dir in &self.dirs {
            let path = dir.join(image.hash.to_hex());
            if !path.exists() {
                continue;
            }
            match verify_archive(&path, image) {
                Ok(()) => {
                    progress(image.size, image.size, &Sources::new());
                    return Ok(FetchedImage {
                        source: format!("local file {}", path.display()),
                        path,
                    });
                }
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        match problems.is_empty() {
            true => Err(FetchError::NotInDirs {
                hash: image.hash,
                dirs: self.dirs.clone(),
            }
            .into()),
            false => Err(ExecError::Verify {
                expected: format!("{} ({} bytes)", image.hash, image.size),
                actual: problems.join("; "),
            }),
        }
    }
}

/// Checks an archive's BLAKE3 hash and size against the catalog's reference.
pub fn verify_archive(path: &Path, image: &ImageRef) -> Result<(), ExecError> {
    let (hash, size) = oci::hash_file(path).map_err(FetchError::Read)?;
    if hash != image.hash || size != image.size {
        return Err(ExecError::Verify {
            expected: format!("{} ({} bytes)", image.hash, image.size),
            actual: format!("{hash} ({size} bytes)"),
        });
    }
    Ok(())
}

/// What the node wants for one app: the planner's view plus what the runtime needs.
#[derive(Debug, Clone)]
pub struct AppTarget {
    pub desired: DesiredApp,
    /// Secrets are filled in by [`reconcile`]; leave them empty.
    pub spec: ContainerSpec,
}

/// Emits events, refusing to let the stage go backwards.
struct Reporter<'a> {
    app_id: String,
    last: Stage,
    emit: &'a mut dyn FnMut(ProgressEvent),
}

impl Reporter<'_> {
    fn stage(&mut self, stage: Stage, done: u64, total: u64, message: impl Into<String>) {
        let stage = stage.max(self.last);
        self.last = stage;
        (self.emit)(ProgressEvent {
            app_id: self.app_id.clone(),
            stage,
            bytes_done: done,
            bytes_total: total,
            message: message.into(),
            sources: Sources::new(),
        });
    }

    /// Verified bytes of the image so far, and from whom.
    fn fetching(&mut self, done: u64, total: u64, sources: &Sources) {
        self.last = self.last.max(Stage::Fetch);
        (self.emit)(ProgressEvent {
            app_id: self.app_id.clone(),
            stage: self.last,
            bytes_done: done,
            bytes_total: total,
            message: "fetching".into(),
            sources: sources.clone(),
        });
    }
}

/// Brings one app to its desired state. `target = None` removes it (uninstall).
/// `recorded` says whether the node's state already owns the container (if not, an
/// existing matching container is adopted rather than recreated).
pub fn reconcile(
    runtime: &dyn Runtime,
    images: &dyn ImageSource,
    app_id: &str,
    target: Option<&AppTarget>,
    recorded: bool,
    emit: &mut dyn FnMut(ProgressEvent),
) -> Result<Vec<Action>, ExecError> {
    let mut r = Reporter {
        app_id: app_id.to_string(),
        last: Stage::Plan,
        emit,
    };
    let result = run(runtime, images, app_id, target, recorded, &mut r);
    match &result {
        Ok(actions) if actions.is_empty() => r.stage(Stage::Done, 0, 0, "nothing to do"),
        Ok(actions) => r.stage(Stage::Done, 0, 0, format!("{actions:?}")),
        Err(e) => r.stage(Stage::Failed, 0, 0, e.to_string()),
    }
    result
}

fn run(
    runtime: &dyn Runtime,
    images: &dyn ImageSource,
    app_id: &str,
    target: Option<&AppTarget>,
    recorded: bool,
    r: &mut Reporter<'_>,
) -> Result<Vec<Action>, ExecError> {
    let container = runtime.observe(app_id).map_err(ExecError::Inspect)?;
    let image_loaded = match target {
        Some(t) => runtime
            .image_loaded(&t.spec.image)
            .map_err(ExecError::Inspect)?,
        None => false,
    };
    let image_fetched = target.is_some_and(|t| images.holds(&t.spec.image));
    let observed = Observed {
        image_loaded,
        image_fetched,
        container,
        recorded,
    };
    let actions = planner::plan(target.map(|t| &t.desired), &observed);
    r.stage(Stage::Plan, 0, 0, format!("{actions:?}"));
    let mut archive: Option<PathBuf> = None;
    for &action in &actions {
        match (action, target) {
            (Action::FetchImage, Some(t)) | (Action::LoadImage, Some(t)) if archive.is_none() => {
                let total = t.spec.image.size;
                r.stage(
                    Stage::Fetch,
                    0,
                    total,
                    format!("fetching {}", t.spec.image.hash),
                );
                let fetched = images.fetch(&t.spec.image, &mut |done, total, sources| {
                    r.fetching(done, total, sources)
                })?;
                r.stage(
                    Stage::Verify,
                    total,
                    total,
                    format!(
                        "BLAKE3 and size match the catalog; bytes from {}",
                        fetched.source
                    ),
                );
                archive = Some(fetched.path);
                if action == Action::LoadImage {
                    load(runtime, t, archive.as_deref(), r)?;
                }
            }
            (Action::FetchImage, _) => {}
            (Action::LoadImage, Some(t)) => load(runtime, t, archive.as_deref(), r)?,
            (Action::Adopt, _) => r.stage(Stage::Create, 0, 0, "adopted the existing container"),
            (Action::Create, Some(t)) => create(runtime, t, r)?,
            (Action::Recreate, Some(t)) => {
                r.stage(
                    Stage::Remove,
                    0,
                    0,
                    "removing the drifted or dead container",
                );
                runtime.remove(app_id)?;
                create(runtime, t, r)?;
            }
            (Action::Start, Some(t)) => {
                r.stage(Stage::Start, 0, 0, "starting");
                runtime.start(app_id)?;
                wait_healthy(t, r)?;
            }
            (Action::Restart, Some(t)) => {
                r.stage(Stage::Start, 0, 0, "restarting an unhealthy container");
                runtime.stop(app_id)?;
                runtime.start(app_id)?;
                wait_healthy(t, r)?;
            }
            (Action::Stop, _) => {
                r.stage(Stage::Stop, 0, 0, "stopping");
                runtime.stop(app_id)?;
            }
            (Action::Remove, _) => {
                r.stage(
                    Stage::Remove,
                    0,
                    0,
                    "removing the container (app data is kept)",
                );
                runtime.remove(app_id)?;
            }
            (
                Action::LoadImage
                | Action::Create
                | Action::Recreate
                | Action::Start
                | Action::Restart,
                None,
            ) => {}
        }
    }
    Ok(actions)
}

fn load(
    runtime: &dyn Runtime,
    t: &AppTarget,
    archive: Option<&Path>,
    r: &mut Reporter<'_>,
) -> Result<(), ExecError> {
    let archive = archive.ok_or(FetchError::NoArchive)?;
    r.stage(
        Stage::Load,
        0,
        0,
        format!("loading into {}", runtime.name()),
    );
    runtime
        .load_image(archive, &t.spec.image)
        .map_err(ExecError::Load)?;
    Ok(())
}

fn create(runtime: &dyn Runtime, t: &AppTarget, r: &mut Reporter<'_>) -> Result<(), ExecError> {
    r.stage(Stage::Create, 0, 0, "creating the container");
    let mut spec = t.spec.clone();
    spec.secrets = secrets::ensure(&spec.data_dir, &spec.manifest.generated_secrets)
        .map_err(ExecError::Secrets)?;
    runtime.create(&spec)?;
    Ok(())
}

/// Probes the app's health check through its published port until it passes or the
/// deadline (start period + retries x (interval + timeout), at most 2 min) runs out.
fn wait_healthy(t: &AppTarget, r: &mut Reporter<'_>) -> Result<(), ExecError> {
    let m = &t.spec.manifest;
    let (Some(hc), Some(timing)) = (&m.health_check, m.health_timing()) else {
        r.stage(Stage::Healthy, 0, 0, "no health check declared");
        return Ok(());
    };
    let port = hc
        .port
        .and_then(|p| m.container.ports.iter().find(|pm| pm.container == p))
        .map(|pm| pm.host);
    let Some(port) = port.filter(|_| hc.kind != HealthCheckKind::Exec) else {
        r.stage(
            Stage::Healthy,
            0,
            0,
            "health check not probed from the host (exec or unpublished port)",
        );
        return Ok(());
    };
    let addr = SocketAddr::new(t.spec.publish_ip, port);
    let budget = (timing.start_period + (timing.interval + timing.timeout) * timing.retries)
        .min(Duration::from_secs(120));
    let started = Instant::now();
    let last = loop {
        let probe = match hc.kind {
            HealthCheckKind::Http => {
                health::http(addr, hc.path.as_deref().unwrap_or("/"), timing.timeout)
            }
            _ => health::tcp(addr, timing.timeout),
        };
        match probe {
            Ok(()) => {
                r.stage(
                    Stage::Healthy,
                    0,
                    0,
                    format!(
                        "healthy at {addr} after {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                return Ok(());
            }
            Err(why) if started.elapsed() >= budget => break why,
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    Err(ExecError::Unhealthy {
        seconds: budget.as_secs(),
        reason: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_after_a_change_count_as_touching_the_app() {
        let rt = || RuntimeError::SecretNotEnvSafe("KEY".into());
        for untouched in [
            ExecError::Inspect(rt()),
            ExecError::Load(rt()),
            ExecError::Fetch(FetchError::NoArchive),
        ] {
            assert!(!untouched.touched_the_app(), "{untouched}");
        }
        for touched in [
            ExecError::Runtime(rt()),
            ExecError::Unhealthy {
                seconds: 8,
                reason: health::ProbeFailure::Status {
                    url: "http://127.0.0.1:8080/".into(),
                    status: 500,
                },
            },
        ] {
            assert!(touched.touched_the_app(), "{touched}");
        }
    }
}
