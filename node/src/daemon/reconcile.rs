//! The reconcile loop: level-triggered, on start, every [`RESYNC`] and whenever the
//! operator changes something.
//!
//! A pass reads the desired state and the conditions, asks [`policy`] which release to
//! deploy and whether the app must wait for a dependency, hands the target to the
//! executor (which asks [`crate::planner`] for the actions and performs them), and
//! records the outcome through [`policy::succeeded`] / [`policy::failed`]: a failed
//! update rolls back to the last healthy release, other failures back off.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use super::{refusals::Input, HeldCatalog, Node, ReleaseError};
use crate::{
    app_identity::{self, AppOwner},
    executor::{self, AppTarget, ProgressEvent, Stage},
    planner::{self, DesiredApp},
    policy::{self, AfterFailure, Hold},
    runtime::ContainerSpec,
    state::{self, AppSource, Condition, Deployment, DesiredRecord, HeldBack, Phase},
};

/// How often the reconciler runs without being woken.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Syncs the catalog and reconciles every app, forever.
pub(super) async fn run(node: Arc<Node>) {
    // A sync that fails the same way every pass is logged once, not every 30 s.
    let mut last_failure: Option<Vec<super::sync::FailureMark>> = None;
    loop {
        let started = std::time::Instant::now();
        match super::sync::sync_catalog(&node).await {
            Ok(()) => {
                if last_failure.take().is_some() {
                    tracing::info!("catalog sync works again");
                }
            }
            Err(e) => {
                let fingerprint = e.fingerprint();
                if last_failure.as_ref() != Some(&fingerprint) {
                    tracing::warn!(error = %e, "catalog sync (repeats of this failure are not logged)");
                    last_failure = Some(fingerprint);
                }
            }
        }
        reconcile_all(&node).await;
        node.metrics.reconcile_passes.inc();
        node.metrics.pass_took(started.elapsed());
        let _ = tokio::time::timeout(RESYNC, node.wake.notified()).await;
    }
}

/// One level-triggered pass over every app we want, are removing, or still find in the
/// runtime.
async fn reconcile_all(node: &Arc<Node>) {
    let observed: Vec<String> = {
        let rt = node.runtime.clone();
        tokio::task::spawn_blocking(move || {
            rt.list()
                .map(|l| l.into_iter().map(|c| c.app_id).collect())
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    };
    let ids: BTreeSet<String> = {
        let s = &node.store.lock().await.state;
        s.desired
            .keys()
            .chain(s.uninstalling.keys())
            .cloned()
            .chain(observed)
            .collect()
    };
    // Apps waiting for a dependency get another go once something else has come up.
    let mut waiting: Vec<String> = Vec::new();
    for id in ids {
        if reconcile_one(node, &id).await == Outcome::Waiting {
            waiting.push(id);
        }
    }
    for _ in 0..3 {
        let before = waiting.len();
        let mut still = Vec::new();
        for id in waiting {
            if reconcile_one(node, &id).await == Outcome::Waiting {
                still.push(id);
            }
        }
        waiting = still;
        if waiting.is_empty() || waiting.len() == before {
            break;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Waiting,
}

async fn reconcile_one(node: &Arc<Node>, id: &str) -> Outcome {
    let (record, cond, purge) = {
        let s = &node.store.lock().await.state;
        (
            s.desired.get(id).cloned(),
            s.conditions.get(id).cloned(),
            s.uninstalling.get(id).copied(),
        )
    };
    if cond.as_ref().is_some_and(|c| c.retry_at > state::now()) {
        return Outcome::Done;
    }
    let recorded = cond.is_some();
    let Some(record) = record else {
        return remove_app(node, id, recorded, purge == Some(true)).await;
    };
    let last_good = cond.as_ref().and_then(|c| c.last_good.clone());
    let release = match desired_release(node, id, &record, last_good.as_ref()).await {
        Ok(r) => r,
        Err(e) => {
            if let ReleaseError::TooLarge(too_large) = &e {
                let source = record.source.owner().id_block(id);
                node.metrics
                    .refused
                    .refuse(Input::ImageSize, &source, too_large);
            }
            record_failure(node, id, e.to_string(), None).await;
            return Outcome::Done;
        }
    };
    let choice = policy::choose_deployment(release, record.requested, cond.as_ref());
    let deploy = choice.deployment;
    let waiting_for = {
        let s = &node.store.lock().await.state;
        policy::unmet_dependency(&deploy.manifest, &s.conditions)
    };
    if let Some(missing) = waiting_for {
        update_condition(node, id, |c| {
            c.phase = Phase::Pending;
            c.last_error = Some(format!("waiting for {missing}"));
        })
        .await;
        let _ = node.events.send(ProgressEvent {
            app_id: id.to_string(),
            stage: Stage::Plan,
            bytes_done: 0,
            bytes_total: 0,
            message: format!("waiting for {missing}"),
            sources: Default::default(),
        });
        return Outcome::Waiting;
    }
    let target = app_target(node, id, &record.source.owner(), &deploy, record.running);
    let (result, terminal) = execute(node, id, Some(target), recorded, false).await;
    let error = match result {
        Ok(_) => {
            let hold = match choice.holding_back {
                true => Hold::Keep,
                false => Hold::Clear,
            };
            record_success(node, id, &record, deploy, hold).await;
            finish(node, terminal);
            return Outcome::Done;
        }
        Err(e) => e,
    };
    if error.no_provider() {
        let message = policy::no_provider_message(&deploy.image.hash, &record.source);
        tracing::warn!(app = id, "{message}");
        node.metrics.failures.inc();
        update_condition(node, id, |cond| {
            policy::waiting_for_provider(cond, message.clone(), state::now())
        })
        .await;
        finish(node, Some(failed_event(id, message)));
        return Outcome::Done;
    }
    let good = match policy::after_failure(
        &deploy,
        last_good.as_ref(),
        record.running,
        error.touched_the_app(),
    ) {
        AfterFailure::RollBack(good) => good,
        AfterFailure::BackOff => {
            record_failure(node, id, error.to_string(), None).await;
            finish(node, terminal);
            return Outcome::Done;
        }
    };
    roll_back(node, id, &record, &deploy, good, &error).await;
    Outcome::Done
}

/// The update to `failed` broke the app: put the last healthy release back and hold
/// the failed one back.
async fn roll_back(
    node: &Arc<Node>,
    id: &str,
    record: &DesiredRecord,
    failed: &Deployment,
    good: Deployment,
    error: &executor::ExecError,
) {
    tracing::warn!(app = id, from = failed.version(), to = good.version(), error = %error, "update failed; rolling back");
    node.metrics.rollbacks.inc();
    let back = app_target(node, id, &record.source.owner(), &good, true);
    let (rolled, _) = execute(node, id, Some(back), true, true).await;
    let message = match &rolled {
        Ok(_) => format!(
            "update to {} failed: {error}; rolled back to {}, which is running",
            failed.version(),
            good.version()
        ),
        Err(e) => format!(
            "update to {} failed: {error}; rollback to {} failed too: {e}",
            failed.version(),
            good.version()
        ),
    };
    // Why the release is held back. After a failed rollback it says only what failed
    // (the rollback's own failure goes to `last_error`): a later pass that brings the
    // last good release back shows this reason, and must not say the rollback failed.
    let reason = match &rolled {
        Ok(_) => message.clone(),
        Err(_) => format!("update to {} failed: {error}", failed.version()),
    };
    let held = HeldBack {
        version: failed.version().to_string(),
        manifest_hash: policy::hash_of(failed),
        request: record.requested,
        reason,
    };
    match rolled {
        Ok(_) => record_success(node, id, record, good, Hold::Set(held)).await,
        Err(_) => record_failure(node, id, message.clone(), Some(held)).await,
    }
    finish(node, Some(failed_event(id, message)));
}

/// Uninstall: remove whatever of the app the runtime has, then forget it (its data
/// stays unless purged; a purge takes the data every owner of the id left).
async fn remove_app(node: &Arc<Node>, id: &str, recorded: bool, purge: bool) -> Outcome {
    let (result, terminal) = execute(node, id, None, recorded, false).await;
    match result {
        Ok(_) => {
            let mut store = node.store.lock().await;
            store.state.conditions.remove(id);
            store.state.uninstalling.remove(id);
            if let Err(e) = store.save() {
                tracing::error!(app = id, error = %e, "cannot save the node state");
            }
            if purge {
                // Every owner's data for this id: the app's, and what a replaced app
                // left behind.
                for dir in app_identity::all_data_dirs(&node.data, id) {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(app = id, dir = %dir.display(), error = %e, "cannot purge");
                    }
                }
            }
        }
        Err(e) => record_failure(node, id, e.to_string(), None).await,
    }
    finish(node, terminal);
    Outcome::Done
}

/// Runs the executor for one app off the async threads. Progress events go out as they
/// come, except the terminal one, which is returned so it can be sent once the state
/// (and, on purge, the data dir) reflects the outcome: a client that sees `done` sees
/// the finished result. A rollback pass reports every step as [`Stage::Rollback`], so
/// the stages a client sees still only move forward.
async fn execute(
    node: &Arc<Node>,
    id: &str,
    target: Option<AppTarget>,
    recorded: bool,
    rollback: bool,
) -> (
    Result<Vec<planner::Action>, executor::ExecError>,
    Option<ProgressEvent>,
) {
    // Local blobs first (delivered out of band or by an earlier fetch), then the swarm
    // (origin and peers at once), then the origin's publish dir as a last resort.
    let images = crate::swarm_source::SwarmImageSource {
        swarm: node.swarm.clone(),
        origin: node.cfg.origin.clone(),
        peers: node.cfg.peers.clone(),
        blobs_dir: node.data.join("blobs"),
        fallback_dirs: node
            .cfg
            .origin_dir
            .iter()
            .map(|d| d.join("blobs"))
            .collect(),
        handle: tokio::runtime::Handle::current(),
        counters: node.metrics.fetched.clone(),
    };
    let rt = node.runtime.clone();
    let events = node.events.clone();
    let app = id.to_string();
    let (result, terminal) = tokio::task::spawn_blocking(move || {
        let mut terminal = None;
        let r = executor::reconcile(
            rt.as_ref(),
            &images,
            &app,
            target.as_ref(),
            recorded,
            &mut |mut e| {
                if is_terminal(e.stage) {
                    terminal = Some(e);
                } else {
                    if rollback {
                        e.stage = Stage::Rollback;
                        e.message = format!("rollback: {}", e.message);
                    }
                    let _ = events.send(e);
                }
            },
        );
        (r, terminal)
    })
    .await
    .unwrap_or_else(|e| {
        (
            Err(executor::ExecError::Runtime(
                std::io::Error::other(format!("reconcile task failed: {e}")).into(),
            )),
            None,
        )
    });
    if let Ok(actions) = &result {
        node.metrics.actions.inc_by(actions.len() as u64);
    }
    (result, terminal)
}

/// The last progress event of a pass that failed, saying why.
fn failed_event(id: &str, message: String) -> ProgressEvent {
    ProgressEvent {
        app_id: id.to_string(),
        stage: Stage::Failed,
        bytes_done: 0,
        bytes_total: 0,
        message,
        sources: Default::default(),
    }
}

fn finish(node: &Node, terminal: Option<ProgressEvent>) {
    if let Some(e) = terminal {
        let _ = node.events.send(e);
    }
}

/// Changes one app's condition (created if missing) and saves the state.
async fn update_condition(node: &Node, id: &str, change: impl FnOnce(&mut Condition)) {
    let mut store = node.store.lock().await;
    let cond = store
        .state
        .conditions
        .entry(id.to_string())
        .or_insert_with(Condition::pending);
    let before = cond.clone();
    change(cond);
    if *cond == before {
        return; // a quiet pass: nothing to write
    }
    cond.updated_at = state::now();
    if let Err(e) = store.save() {
        tracing::error!(app = id, error = %e, "cannot save the node state");
    }
}

/// Records a pass that left the app as desired (see [`policy::succeeded`]).
async fn record_success(
    node: &Node,
    id: &str,
    record: &DesiredRecord,
    deployed: Deployment,
    hold: Hold,
) {
    update_condition(node, id, |cond| {
        policy::succeeded(cond, record, deployed, hold, state::now())
    })
    .await;
}

/// Records a failed pass (see [`policy::failed`]).
async fn record_failure(node: &Node, id: &str, error: String, held: Option<HeldBack>) {
    node.metrics.failures.inc();
    update_condition(node, id, |cond| {
        policy::failed(cond, error, held, state::now())
    })
    .await;
}

/// The release `r` asks for: from the verified catalog or the stored market
/// announcement, within the node's image size budget. From an expired catalog only the
/// release already running (`last_good`, if it is what `r` pins) is kept.
async fn desired_release(
    node: &Node,
    id: &str,
    r: &DesiredRecord,
    last_good: Option<&Deployment>,
) -> Result<Deployment, ReleaseError> {
    let (manifest, image) = match &r.source {
        AppSource::Catalog { version } => {
            let catalog = node.catalog.lock().await;
            let held: &HeldCatalog = catalog.as_ref().ok_or(ReleaseError::NoCatalog)?;
            match held.release(id, version.as_deref(), chrono::Utc::now()) {
                Ok(rel) => (rel.manifest.clone(), rel.image.clone()),
                Err(e @ ReleaseError::Expired { .. }) => {
                    return last_good
                        .filter(|good| {
                            version
                                .as_deref()
                                .is_none_or(|v| good.manifest.version == v)
                        })
                        .cloned()
                        .ok_or(e);
                }
                Err(e) => return Err(e),
            }
        }
        AppSource::Market {
            manifest, image, ..
        } => ((**manifest).clone(), image.clone()),
    };
    // Checked again here: a catalog, or a request saved before the budget changed, may
    // claim more; the fetch would plan its pieces from that number.
    policy::check_image_size(&image, node.cfg.max_image_bytes)?;
    Ok(Deployment {
        manifest: Box::new(manifest.normalized()),
        image,
    })
}

/// The executor's target for one release of an app.
fn app_target(node: &Node, id: &str, owner: &AppOwner, d: &Deployment, running: bool) -> AppTarget {
    let m = (*d.manifest).clone();
    let desired = DesiredApp {
        app_id: id.to_string(),
        manifest_hash: m.manifest_hash(),
        image: d.image.hash,
        running,
    };
    let spec = ContainerSpec {
        manifest_hash: m.manifest_hash(),
        manifest: m,
        image: d.image.clone(),
        publish_ip: node.cfg.publish_ip,
        data_dir: app_identity::data_dir(&node.data, owner, id),
        secrets: Default::default(),
        owner: owner.clone(),
    };
    AppTarget { desired, spec }
}

/// Terminal stages, for clients following the event stream.
fn is_terminal(stage: Stage) -> bool {
    matches!(stage, Stage::Done | Stage::Failed)
}
