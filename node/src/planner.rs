//! The reconciler's runtime decisions, as pure functions.
//!
//! `plan(desired, observed)` says what to do to make one app's runtime state match what
//! the operator asked for; the executor performs the actions. Keeping the decision free of
//! I/O means every situation the anchors got wrong (ghosts after uninstall, zombies
//! reported "Up", drift that recreates forever) is a table row in the tests below, and a
//! convergence test checks that applying a plan and planning again yields nothing.
//! Which release to plan for, and what a failure leads to, is [`crate::policy`].

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
        ];
        for (name, d, o, want) in rows {
            assert_eq!(plan(d, &o), want, "row: {name}");
        }
    }

    /// Every plan, applied, leads to a state whose plan is empty: drift
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
}
