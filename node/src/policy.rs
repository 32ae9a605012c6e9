//! The reconciler's policy, as pure functions beside the planner.
//!
//! [`crate::planner`] says which runtime actions bring one app to a release. This module
//! says which release that is and what the outcome of a pass does to the app's
//! [`Condition`]: whether an app waits for its dependencies, whether a held-back release
//! stays held back, whether a failure rolls back to the last healthy release or backs
//! off, and when the failure count starts over. The daemon's reconcile loop only reads
//! the state, calls these, and performs what they decide; every rule is a table row in
//! the tests below.

use std::{collections::BTreeMap, time::Duration};

use archy_catalog::{AppManifest, ContentHash, ImageRef};

use crate::state::{Condition, Deployment, DesiredRecord, HeldBack, Phase};

/// How long an app must stay healthy before its failure count starts over.
pub const HEALTHY_RESET: Duration = Duration::from_secs(600);

/// Delay before retrying an app after `failures` consecutive failures: 10 s doubling to
/// 5 min. Zero failures, no delay.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let secs = 10u64.saturating_mul(1u64 << (failures - 1).min(10));
    Duration::from_secs(secs.min(300))
}

/// The failure count after a reconcile pass: bumped on a failure, reset once the app has
/// been healthy for [`HEALTHY_RESET`], otherwise kept (an app that flaps between a good
/// pass and a failure backs off further each time).
pub fn next_failures(failures: u32, failed_now: bool, healthy_for: Option<Duration>) -> u32 {
    if failed_now {
        failures.saturating_add(1)
    } else if healthy_for.is_some_and(|d| d >= HEALTHY_RESET) {
        0
    } else {
        failures
    }
}

/// The first dependency of `manifest` that is not running in a matching version, as
/// `"<app id> <version req>"`: the app waits (phase `pending`) until there is none.
pub fn unmet_dependency(
    manifest: &AppManifest,
    conditions: &BTreeMap<String, Condition>,
) -> Option<String> {
    manifest.dependencies.iter().find_map(|d| {
        let req = d.version_req.as_deref().unwrap_or("*");
        let met = conditions.get(&d.app_id).is_some_and(|c| {
            c.phase == Phase::Running
                && c.version
                    .as_deref()
                    .and_then(|v| semver::Version::parse(v).ok())
                    .is_some_and(|v| semver::VersionReq::parse(req).is_ok_and(|r| r.matches(&v)))
        });
        (!met).then(|| format!("{} {req}", d.app_id))
    })
}

/// What one pass deploys for an app.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployChoice {
    pub deployment: Deployment,
    /// The desired release failed its health check for this very request and is held
    /// back: `deployment` is the last healthy release instead.
    pub holding_back: bool,
}

/// The release to deploy: the desired one, unless it already failed for this install
/// request (`requested`) and a healthy release exists to keep running. A held-back
/// release is tried again only when asked again (a newer request) or when the desired
/// release changes.
pub fn choose_deployment(
    desired: Deployment,
    requested: u64,
    cond: Option<&Condition>,
) -> DeployChoice {
    let last_good = cond.and_then(|c| c.last_good.as_ref());
    let held = cond
        .and_then(|c| c.held_back.as_ref())
        .is_some_and(|h| (h.manifest_hash, h.request) == (hash_of(&desired), requested));
    match last_good {
        Some(good) if held => DeployChoice {
            deployment: good.clone(),
            holding_back: true,
        },
        _ => DeployChoice {
            deployment: desired,
            holding_back: false,
        },
    }
}

/// What a failed pass leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure {
    /// Put the last healthy release back and hold the failed one back.
    RollBack(Deployment),
    /// Record the failure and retry after [`backoff`].
    BackOff,
}

/// Whether a failed deployment of `attempted` goes back to the last healthy release.
///
/// Only when something of the running app was touched (a fetch or verification failure
/// leaves the old container as it was), the app should run, and there is a healthy
/// release that is not the one that just failed (restarting the same release again is
/// the backoff's job, not a rollback).
pub fn after_failure(
    attempted: &Deployment,
    last_good: Option<&Deployment>,
    wants_running: bool,
    app_touched: bool,
) -> AfterFailure {
    match last_good {
        Some(good) if app_touched && wants_running && hash_of(good) != hash_of(attempted) => {
            AfterFailure::RollBack(good.clone())
        }
        _ => AfterFailure::BackOff,
    }
}

/// What a successful pass does with a held-back release.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// This pass ran the last good release for the request that held one back: the
    /// hold stays, and its reason is the app's last error.
    Keep,
    /// The desired release ran: any hold is over.
    Clear,
    /// The update failed and was rolled back: hold it.
    Set(HeldBack),
}

/// The condition after a pass that left the app as desired (or, after a rollback,
/// running its last healthy release with the failed one held back), at Unix time `now`.
pub fn succeeded(
    cond: &mut Condition,
    record: &DesiredRecord,
    deployed: Deployment,
    hold: Hold,
    now: u64,
) {
    cond.phase = if record.running {
        Phase::Running
    } else {
        Phase::Stopped
    };
    cond.retry_at = 0;
    cond.observed_generation = record.generation;
    cond.version = Some(deployed.version().to_string());
    if record.running {
        let since = *cond.healthy_since.get_or_insert(now);
        let healthy_for = Duration::from_secs(now.saturating_sub(since));
        cond.failures = next_failures(cond.failures, false, Some(healthy_for));
        cond.last_good = Some(deployed);
    } else {
        cond.healthy_since = None;
    }
    match hold {
        Hold::Keep => {}
        Hold::Clear => cond.held_back = None,
        Hold::Set(held) => cond.held_back = Some(held),
    }
    cond.last_error = cond.held_back.as_ref().map(|h| h.reason.clone());
}

/// The condition after a failed pass at Unix time `now`: failed, retried after the
/// backoff, and (after a rollback) the failed release held back.
pub fn failed(cond: &mut Condition, error: String, held: Option<HeldBack>, now: u64) {
    cond.phase = Phase::Failed;
    cond.failures = next_failures(cond.failures, true, None);
    cond.retry_at = now + backoff(cond.failures).as_secs();
    cond.healthy_since = None;
    cond.last_error = Some(error);
    if held.is_some() {
        cond.held_back = held;
    }
}

/// The condition after a pass that found nobody serving the release's image: the app
/// waits (pending) for a provider to come online, asked again after [`backoff`], with
/// `error` saying what is missing and who can fix it.
pub fn waiting_for_provider(cond: &mut Condition, error: String, now: u64) {
    cond.phase = Phase::Pending;
    cond.failures = next_failures(cond.failures, true, None);
    cond.retry_at = now + backoff(cond.failures).as_secs();
    cond.last_error = Some(error);
}

/// What to tell the operator when no provider serves `image` of an app from `source`.
pub fn no_provider_message(image: &ContentHash, source: &crate::state::AppSource) -> String {
    match source {
        crate::state::AppSource::Market {
            handle, providers, ..
        } => {
            let named = match providers.len() {
                0 => "the announcement lists none".to_string(),
                n => format!("the announcement lists {n}, none of which can be reached"),
            };
            format!(
                "no provider serves {image}: {named} and no peer has it; ask the developer \
                 ({handle}) to seed it (archy app publish --data DIR). Waiting: a provider \
                 may come online"
            )
        }
        crate::state::AppSource::Catalog { .. } => format!(
            "no provider serves {image}: neither the origin nor any peer has it. Waiting: a \
             provider may come online"
        ),
    }
}

/// An image whose claimed size is over the node's budget (`max_image_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image {hash} claims {size} bytes, more than this node's max_image_bytes ({max}); refused")]
pub struct ImageTooLarge {
    pub hash: ContentHash,
    pub size: u64,
    pub max: u64,
}

/// Refuses an image whose claimed size is over `max` bytes, before anything is planned
/// or allocated for it (the fetch plans its pieces from that number).
pub fn check_image_size(image: &ImageRef, max: u64) -> Result<(), ImageTooLarge> {
    match image.size > max {
        true => Err(ImageTooLarge {
            hash: image.hash,
            size: image.size,
            max,
        }),
        false => Ok(()),
    }
}

/// Identity of a release: its manifest hash.
pub fn hash_of(d: &Deployment) -> ContentHash {
    d.manifest.manifest_hash()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use archy_catalog::manifest;

    fn release(version: &str) -> Deployment {
        let text = format!(
            "app:\n  id: org.example.hello\n  name: Hello\n  version: {version}\n  description: {{ short: hi }}\n  container:\n    image: ./hello.oci.tar\n    cmd: [\"/bin/busybox\"]\n"
        );
        let m = manifest::parse_and_validate(&text, manifest::ManifestFormat::Yaml).unwrap();
        Deployment {
            manifest: Box::new(m),
            image: ImageRef {
                hash: ContentHash::of(version.as_bytes()),
                size: 1,
                config_digest: format!("sha256:{}", "ab".repeat(32)),
                format: archy_catalog::oci::ArchiveFormat::OciArchive,
                web_seeds: Vec::new(),
            },
        }
    }

    fn record(running: bool, requested: u64) -> DesiredRecord {
        DesiredRecord {
            source: crate::state::AppSource::Catalog { version: None },
            running,
            generation: 7,
            requested,
        }
    }

    fn held(d: &Deployment, request: u64) -> HeldBack {
        HeldBack {
            version: d.version().into(),
            manifest_hash: hash_of(d),
            request,
            reason: "update to 2.0.0 failed".into(),
        }
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
    fn an_image_nobody_serves_leaves_the_app_pending_and_says_who_can_fix_it() {
        let mut cond = Condition::pending();
        waiting_for_provider(&mut cond, "no provider".into(), 1_000);
        assert_eq!(cond.phase, Phase::Pending);
        assert_eq!((cond.failures, cond.retry_at), (1, 1_010));
        waiting_for_provider(&mut cond, "no provider".into(), 2_000);
        assert_eq!((cond.failures, cond.retry_at), (2, 2_020), "backs off");
        let image = release("1.0.0").image.hash;
        let keys = nostr_sdk::Keys::generate();
        let handle: archy_discovery::market::AppHandle =
            format!("{}/org.example.a", keys.public_key().to_hex())
                .parse()
                .unwrap();
        let market = |providers: Vec<String>| crate::state::AppSource::Market {
            handle: handle.clone(),
            manifest: release("1.0.0").manifest,
            image: release("1.0.0").image,
            providers,
        };
        let none = no_provider_message(&image, &market(vec![]));
        assert!(
            none.contains("the announcement lists none")
                && none.contains(&handle.to_string())
                && none.contains(&image.to_string()),
            "{none}"
        );
        let two = no_provider_message(&image, &market(vec!["ab".repeat(32), "cd".repeat(32)]));
        assert!(
            two.contains("lists 2, none of which can be reached"),
            "{two}"
        );
        let catalog =
            no_provider_message(&image, &crate::state::AppSource::Catalog { version: None });
        assert!(
            catalog.contains("neither the origin nor any peer"),
            "{catalog}"
        );
    }

    #[test]
    fn a_failed_update_rolls_back_only_to_a_different_healthy_release() {
        let (new, old) = (release("2.0.0"), release("1.0.0"));
        // attempted, last good, wants running, app touched -> roll back
        let table = [
            (&new, Some(&old), true, true, true),
            (&new, Some(&old), true, false, false), // fetch failed: old one untouched
            (&new, Some(&old), false, true, false), // stopped app: nothing to keep alive
            (&new, Some(&new), true, true, false),  // same release: backoff, not rollback
            (&new, None, true, true, false),        // first install: nothing to go back to
        ];
        for (attempted, good, running, touched, rolls_back) in table {
            let want = match rolls_back {
                true => AfterFailure::RollBack(old.clone()),
                false => AfterFailure::BackOff,
            };
            assert_eq!(
                after_failure(attempted, good, running, touched),
                want,
                "{} {:?} running={running} touched={touched}",
                attempted.version(),
                good.map(|g| g.version())
            );
        }
    }

    #[test]
    fn a_held_back_release_waits_for_a_new_request() {
        let (bad, good, other) = (release("2.0.0"), release("1.0.0"), release("3.0.0"));
        let mut cond = Condition::pending();
        cond.last_good = Some(good.clone());
        cond.held_back = Some(held(&bad, 4));
        // desired, request, condition -> deployed, holding back
        let nothing_good = Condition {
            last_good: None,
            ..cond.clone()
        };
        let rows = [
            ("held for this request", &bad, 4, Some(&cond), &good, true),
            ("asked again", &bad, 5, Some(&cond), &bad, false),
            (
                "the catalog moved on",
                &other,
                4,
                Some(&cond),
                &other,
                false,
            ),
            ("no hold", &bad, 4, None, &bad, false),
            (
                "nothing healthy to keep",
                &bad,
                4,
                Some(&nothing_good),
                &bad,
                false,
            ),
        ];
        for (row, desired, request, cond, deployed, holding) in rows {
            let c = choose_deployment(desired.clone(), request, cond);
            assert_eq!(c.deployment.version(), deployed.version(), "row: {row}");
            assert_eq!(c.holding_back, holding, "row: {row}");
        }
    }

    #[test]
    fn failures_back_off_and_start_over_after_ten_healthy_minutes() {
        let v1 = release("1.0.0");
        let mut c = Condition::pending();
        failed(&mut c, "boom".into(), None, 1000);
        assert_eq!((c.phase, c.failures, c.retry_at), (Phase::Failed, 1, 1010));
        failed(&mut c, "boom".into(), None, 1010);
        assert_eq!((c.failures, c.retry_at), (2, 1030));
        // A good pass keeps the count: a flapping app backs off further next time.
        succeeded(&mut c, &record(true, 1), v1.clone(), Hold::Clear, 1030);
        assert_eq!((c.phase, c.failures, c.retry_at), (Phase::Running, 2, 0));
        assert_eq!(c.healthy_since, Some(1030));
        assert_eq!(c.last_error, None);
        failed(&mut c, "boom".into(), None, 1100);
        assert_eq!((c.failures, c.retry_at, c.healthy_since), (3, 1140, None));
        // Healthy from 1140 on; ten minutes later the count starts over.
        succeeded(&mut c, &record(true, 1), v1.clone(), Hold::Clear, 1140);
        succeeded(&mut c, &record(true, 1), v1.clone(), Hold::Clear, 1739);
        assert_eq!(c.failures, 3);
        succeeded(&mut c, &record(true, 1), v1.clone(), Hold::Clear, 1740);
        assert_eq!(c.failures, 0);
        assert_eq!(c.last_good.as_ref().map(|d| d.version()), Some("1.0.0"));
        // Stopped on purpose: not healthy-running, nothing becomes last_good.
        let mut s = Condition::pending();
        succeeded(&mut s, &record(false, 1), v1, Hold::Clear, 2000);
        assert_eq!(
            (s.phase, s.healthy_since, s.last_good),
            (Phase::Stopped, None, None)
        );
    }

    #[test]
    fn a_hold_is_kept_set_or_cleared_and_is_the_last_error() {
        let (bad, good) = (release("2.0.0"), release("1.0.0"));
        let mut c = Condition::pending();
        succeeded(
            &mut c,
            &record(true, 4),
            good.clone(),
            Hold::Set(held(&bad, 4)),
            10,
        );
        assert_eq!(c.last_error.as_deref(), Some("update to 2.0.0 failed"));
        succeeded(&mut c, &record(true, 4), good.clone(), Hold::Keep, 20);
        assert!(c.held_back.is_some() && c.last_error.is_some());
        succeeded(&mut c, &record(true, 5), bad, Hold::Clear, 30);
        assert_eq!((c.held_back, c.last_error), (None, None));
        // A failed rollback records the hold with the failure.
        let mut f = Condition::pending();
        failed(&mut f, "rollback failed".into(), Some(held(&good, 1)), 5);
        assert!(f.held_back.is_some());
    }

    #[test]
    fn an_image_over_the_budget_is_refused_with_both_figures() {
        let image = release("1.0.0").image;
        assert_eq!(check_image_size(&image, 1), Ok(()));
        let e = check_image_size(&image, 0).unwrap_err();
        assert_eq!((e.size, e.max), (1, 0));
        assert!(e.to_string().contains("max_image_bytes (0)"), "{e}");
    }

    #[test]
    fn dependencies_wait_until_running_in_a_matching_version() {
        let text = "app:\n  id: org.example.web\n  name: Web\n  version: 1.0.0\n  description: { short: hi }\n  container:\n    image: ./web.oci.tar\n    cmd: [\"/bin/busybox\"]\n  dependencies:\n    - { app_id: org.example.db, version_req: \"^1\" }\n";
        let m = manifest::parse_and_validate(text, manifest::ManifestFormat::Yaml).unwrap();
        let db = |phase, version: &str| {
            let mut c = Condition::pending();
            c.phase = phase;
            c.version = Some(version.into());
            BTreeMap::from([("org.example.db".to_string(), c)])
        };
        let waiting = Some("org.example.db ^1".to_string());
        assert_eq!(unmet_dependency(&m, &BTreeMap::new()), waiting);
        assert_eq!(
            unmet_dependency(&m, &db(Phase::Installing, "1.2.0")),
            waiting
        );
        assert_eq!(unmet_dependency(&m, &db(Phase::Running, "2.0.0")), waiting);
        assert_eq!(unmet_dependency(&m, &db(Phase::Running, "1.2.0")), None);
    }
}
