//! The reconciler's decisions, as pure functions.
//!
//! `plan(desired, observed)` says what to do to make one app's runtime state match what
//! the operator asked for; the executor performs the actions. Keeping the decision free of
//! I/O means every situation the anchors got wrong (ghosts after uninstall, zombies
//! reported "Up", drift that recreates forever) is a table row in the tests below, and a
//! convergence test checks that applying a plan and planning again yields nothing.

use std::time::Duration;

use archy_catalog::ContentHash;

/// What the operator wants for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredApp {
    pub app_id: String,
    /// Identity of "what runs": [`archy_catalog::AppManifest::manifest_hash`].
    pub manifest_hash: ContentHash,
    /// BLAKE3 of the image archive.
    pub image: ContentHash,
    /// Started (true) or installed but stopped (false).
    pub running: bool,
    /// Every dependency is installed and healthy.
    pub dependencies_ready: bool,
}

/// Whether the process behind a container is alive, as far as can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// The runtime could not tell; counts as alive (never recreate on a guess).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running,
    Exited,
}

/// A container of ours as the runtime reports it (found by its labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub app_id: String,
    /// From the `io.archy.manifest-hash` label.
    pub manifest_hash: ContentHash,
    /// From the `io.archy.image` label.
    pub image: ContentHash,
    pub status: ContainerStatus,
    pub liveness: Liveness,
    /// Result of the app's health check, if it has one and it has run.
    pub healthy: Option<bool>,
}

/// What is there now for one app.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The image is loaded in the runtime.
    pub image_loaded: bool,
    /// The node holds the image archive itself (verified), so it can seed it.
    pub image_fetched: bool,
    pub container: Option<ObservedContainer>,
    /// The node's state records this container as its own (false after a restart with
    /// a container that survived: it must be adopted, not recreated).
    pub recorded: bool,
}

/// One step of a plan, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    WaitForDependencies,
    FetchImage,
    LoadImage,
    /// Take over an existing container with our labels and the right manifest hash.
    Adopt,
    Create,
    Start,
    Stop,
    Restart,
    /// Stop (if needed), remove and create again: drift or a zombie.
    Recreate,
    Remove,
}

/// Decides what to do for one app. `desired = None` means the app is not wanted (any
/// container of ours for it is an orphan and goes).
pub fn plan(desired: Option<&DesiredApp>, observed: &Observed) -> Vec<Action> {
    use Action::*;
    let Some(d) = desired else {
        return match &observed.container {
            Some(c) if c.status == ContainerStatus::Running && c.liveness != Liveness::Dead => {
                vec![Stop, Remove]
            }
            Some(_) => vec![Remove],
            None => vec![],
        };
    };
    if !d.dependencies_ready {
        return vec![WaitForDependencies];
    }
    let mut actions = Vec::new();
    let drifted = observed
        .container
        .as_ref()
        .is_some_and(|c| c.manifest_hash != d.manifest_hash || c.image != d.image);
    // A node holds (and so seeds) the archive of everything it runs, even when the
    // engine already has the image loaded (another node on the same engine may have
    // loaded it).
    if !observed.image_fetched {
        actions.push(FetchImage);
    }
    let needs_image = observed.container.is_none() || drifted;
    if needs_image && !observed.image_loaded {
        actions.push(LoadImage);
    }
    match &observed.container {
        None => {
            actions.push(Create);
            if d.running {
                actions.push(Start);
            }
        }
        Some(_) if drifted => {
            actions.push(Recreate);
            if d.running {
                actions.push(Start);
            }
        }
        Some(c) => {
            if !observed.recorded {
                actions.push(Adopt);
            }
            let zombie = c.status == ContainerStatus::Running && c.liveness == Liveness::Dead;
            match (d.running, c.status) {
                _ if zombie => {
                    actions.push(Recreate);
                    if d.running {
                        actions.push(Start);
                    }
                }
                (true, ContainerStatus::Running) if c.healthy == Some(false) => {
                    actions.push(Restart)
                }
                (true, ContainerStatus::Running) => {}
                (true, _) => actions.push(Start),
                (false, ContainerStatus::Running) => actions.push(Stop),
                (false, _) => {}
            }
        }
    }
    actions
}

/// The effect a successful action has on what is observed: the executor's contract,
/// used by the convergence test and by the executor to update its view between steps.
pub fn apply(desired: Option<&DesiredApp>, observed: &Observed, action: Action) -> Observed {
    let mut o = observed.clone();
    let fresh = |d: &DesiredApp, status| ObservedContainer {
        app_id: d.app_id.clone(),
        manifest_hash: d.manifest_hash,
        image: d.image,
        status,
        liveness: if status == ContainerStatus::Running {
            Liveness::Alive
        } else {
            Liveness::Dead
        },
        healthy: None,
    };
    match (action, desired) {
        (Action::WaitForDependencies, _) => {}
        (Action::FetchImage, _) => o.image_fetched = true,
        (Action::LoadImage, _) => o.image_loaded = true,
        (Action::Adopt, _) => o.recorded = true,
        (Action::Create | Action::Recreate, Some(d)) => {
            o.container = Some(fresh(d, ContainerStatus::Created));
            o.recorded = true;
        }
        (Action::Start | Action::Restart, _) => {
            if let Some(c) = &mut o.container {
                c.status = ContainerStatus::Running;
                c.liveness = Liveness::Alive;
                c.healthy = None;
            }
        }
        (Action::Stop, _) => {
            if let Some(c) = &mut o.container {
                c.status = ContainerStatus::Exited;
                c.liveness = Liveness::Dead;
            }
        }
        (Action::Remove, _) | (Action::Create | Action::Recreate, None) => {
            o.container = None;
            o.recorded = false;
        }
    }
    o
}

/// Delay before retrying an app after `failures` consecutive failures: 10 s doubling to
/// 5 min. Zero failures, no delay.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let secs = 10u64.saturating_mul(1u64 << (failures - 1).min(10));
    Duration::from_secs(secs.min(300))
}

/// The failure count after a reconcile pass: reset once the app has been healthy for 10
/// minutes, otherwise kept (or bumped on a new failure).
pub fn next_failures(failures: u32, failed_now: bool, healthy_for: Option<Duration>) -> u32 {
    if failed_now {
        failures.saturating_add(1)
    } else if healthy_for.is_some_and(|d| d >= Duration::from_secs(600)) {
        0
    } else {
        failures
    }
}

/// Whether a failed update goes back to the last release that was healthy.
///
/// Only when something of the running app was touched (a fetch or verification failure
/// leaves the old container as it was), the app should run, and there is a healthy
/// release that is not the one that just failed (restarting the same release again is
/// the backoff's job, not a rollback).
pub fn should_roll_back(
    attempted: ContentHash,
    last_good: Option<ContentHash>,
    wants_running: bool,
    app_touched: bool,
) -> bool {
    app_touched && wants_running && last_good.is_some_and(|good| good != attempted)
}

/// Whether the release the operator wants is one that already failed for this very
/// install request. A held-back release is tried again only when asked again (a newer
/// request) or when the desired release changes.
pub fn is_held_back(
    attempted: ContentHash,
    request: u64,
    held_back: Option<(ContentHash, u64)>,
) -> bool {
    held_back == Some((attempted, request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn h(s: &str) -> ContentHash {
        ContentHash::of(s.as_bytes())
    }

    fn desired(running: bool) -> DesiredApp {
        DesiredApp {
            app_id: "org.example.hello".into(),
            manifest_hash: h("m1"),
            image: h("i1"),
            running,
            dependencies_ready: true,
        }
    }

    fn container(status: ContainerStatus, liveness: Liveness) -> ObservedContainer {
        ObservedContainer {
            app_id: "org.example.hello".into(),
            manifest_hash: h("m1"),
            image: h("i1"),
            status,
            liveness,
            healthy: Some(true),
        }
    }

    fn observed(c: Option<ObservedContainer>, recorded: bool) -> Observed {
        Observed {
            image_loaded: true,
            image_fetched: true,
            container: c,
            recorded,
        }
    }

    use ContainerStatus::*;
    use Liveness::*;

    #[test]
    fn table() {
        let d = desired(true);
        let stopped = desired(false);
        let mut drift_manifest = container(Running, Alive);
        drift_manifest.manifest_hash = h("m0");
        let mut drift_image = container(Running, Alive);
        drift_image.image = h("i0");
        let mut unhealthy = container(Running, Alive);
        unhealthy.healthy = Some(false);
        let nothing = Observed::default();
        let blocked = DesiredApp {
            dependencies_ready: false,
            ..d.clone()
        };

        let rows: Vec<(&str, Option<&DesiredApp>, Observed, Vec<Action>)> = vec![
            (
                "missing, nothing local",
                Some(&d),
                nothing.clone(),
                vec![FetchImage, LoadImage, Create, Start],
            ),
            (
                "missing, image fetched",
                Some(&d),
                Observed {
                    image_fetched: true,
                    ..nothing.clone()
                },
                vec![LoadImage, Create, Start],
            ),
            (
                "missing, image loaded",
                Some(&d),
                observed(None, false),
                vec![Create, Start],
            ),
            (
                "installed stopped on purpose",
                Some(&stopped),
                observed(None, false),
                vec![Create],
            ),
            (
                "created, should run",
                Some(&d),
                observed(Some(container(Created, Dead)), true),
                vec![Start],
            ),
            (
                "exited, should run",
                Some(&d),
                observed(Some(container(Exited, Dead)), true),
                vec![Start],
            ),
            (
                "running healthy",
                Some(&d),
                observed(Some(container(Running, Alive)), true),
                vec![],
            ),
            (
                "running, liveness unknown counts as alive",
                Some(&d),
                observed(Some(container(Running, Unknown)), true),
                vec![],
            ),
            (
                "running unhealthy",
                Some(&d),
                observed(Some(unhealthy), true),
                vec![Restart],
            ),
            (
                "zombie: running but pid dead",
                Some(&d),
                observed(Some(container(Running, Dead)), true),
                vec![Recreate, Start],
            ),
            (
                "drift: manifest hash",
                Some(&d),
                observed(Some(drift_manifest.clone()), true),
                vec![Recreate, Start],
            ),
            (
                "drift: image (not loaded yet)",
                Some(&d),
                Observed {
                    image_loaded: false,
                    ..observed(Some(drift_image), true)
                },
                vec![LoadImage, Recreate, Start],
            ),
            (
                "adoptable after daemon restart",
                Some(&d),
                observed(Some(container(Running, Alive)), false),
                vec![Adopt],
            ),
            (
                "adoptable but stopped",
                Some(&d),
                observed(Some(container(Exited, Dead)), false),
                vec![Adopt, Start],
            ),
            (
                "drifted unrecorded is recreated, not adopted",
                Some(&d),
                observed(Some(drift_manifest), false),
                vec![Recreate, Start],
            ),
            (
                "running, should stop",
                Some(&stopped),
                observed(Some(container(Running, Alive)), true),
                vec![Stop],
            ),
            (
                "stopped, should stay stopped",
                Some(&stopped),
                observed(Some(container(Exited, Dead)), true),
                vec![],
            ),
            (
                "orphan running",
                None,
                observed(Some(container(Running, Alive)), false),
                vec![Stop, Remove],
            ),
            (
                "orphan dead",
                None,
                observed(Some(container(Running, Dead)), true),
                vec![Remove],
            ),
            (
                "orphan exited",
                None,
                observed(Some(container(Exited, Dead)), true),
                vec![Remove],
            ),
            (
                "uninstalled, nothing left",
                None,
                observed(None, false),
                vec![],
            ),
            (
                "dependency not ready",
                Some(&blocked),
                nothing,
                vec![WaitForDependencies],
            ),
        ];
        for (name, d, o, want) in rows {
            assert_eq!(plan(d, &o), want, "row: {name}");
        }
    }

    /// Every plan, applied, leads to a state whose plan is empty (or only waits): drift
    /// repair converges instead of recreating forever.
    #[test]
    fn plans_converge() {
        let liveness = [Alive, Dead, Unknown];
        let statuses = [Created, Running, Exited];
        let mut cases = 0;
        for want in [None, Some(desired(true)), Some(desired(false))] {
            for (m, i) in [("m1", "i1"), ("m0", "i1"), ("m1", "i0")] {
                for &st in &statuses {
                    for &lv in &liveness {
                        for healthy in [None, Some(true), Some(false)] {
                            for (loaded, fetched, recorded) in [
                                (true, true, true),
                                (false, false, false),
                                (false, true, true),
                            ] {
                                let mut c = container(st, lv);
                                c.manifest_hash = h(m);
                                c.image = h(i);
                                c.healthy = healthy;
                                for cont in [None, Some(c)] {
                                    let mut o = Observed {
                                        image_loaded: loaded,
                                        image_fetched: fetched,
                                        container: cont,
                                        recorded,
                                    };
                                    for a in plan(want.as_ref(), &o) {
                                        o = apply(want.as_ref(), &o, a);
                                    }
                                    assert_eq!(
                                        plan(want.as_ref(), &o),
                                        vec![],
                                        "after applying, from {o:?}"
                                    );
                                    cases += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(cases > 400);
    }

    #[test]
    fn backoff_doubles_to_five_minutes_and_resets_after_ten_healthy() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(5), Duration::from_secs(160));
        assert_eq!(backoff(6), Duration::from_secs(300));
        assert_eq!(backoff(60), Duration::from_secs(300));
        assert_eq!(next_failures(3, true, None), 4);
        assert_eq!(next_failures(3, false, Some(Duration::from_secs(599))), 3);
        assert_eq!(next_failures(3, false, Some(Duration::from_secs(600))), 0);
    }

    #[test]
    fn a_failed_update_rolls_back_only_to_a_different_healthy_release() {
        let (new, old) = (h("v2"), h("v1"));
        // attempted, last good, wants running, app touched -> roll back
        let table = [
            (new, Some(old), true, true, true),
            (new, Some(old), true, false, false), // fetch failed: old one untouched
            (new, Some(old), false, true, false), // stopped app: nothing to keep alive
            (new, Some(new), true, true, false),  // same release: backoff, not rollback
            (new, None, true, true, false),       // first install: nothing to go back to
        ];
        for (attempted, good, running, touched, expected) in table {
            assert_eq!(
                should_roll_back(attempted, good, running, touched),
                expected,
                "{attempted:?} {good:?} running={running} touched={touched}"
            );
        }
    }

    #[test]
    fn a_held_back_release_waits_for_a_new_request() {
        let (bad, other) = (h("v2"), h("v3"));
        assert!(is_held_back(bad, 4, Some((bad, 4))));
        assert!(!is_held_back(bad, 5, Some((bad, 4)))); // asked again
        assert!(!is_held_back(other, 4, Some((bad, 4)))); // the catalog moved on
        assert!(!is_held_back(bad, 4, None));
    }
}
