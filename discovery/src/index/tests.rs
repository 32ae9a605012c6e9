//! Tests of ingestion and merge: arrival order, duplicates, deletions, expiry, reports,
//! collisions, endorsements and key rotations.

use super::*;
use crate::announcement::{
    endorsement_builder, successor_builder, tests::announce, tests::content, AnnouncementContent,
    MARKET_KIND,
};

fn at(secs: u64) -> Timestamp {
    Timestamp::from(secs)
}

/// Signs announcements for `c` at time `t` (optionally expiring).
fn announce_at(keys: &Keys, c: &AnnouncementContent, t: u64, exp: Option<u64>) -> [Event; 2] {
    let [a, r] = crate::announcement::announcement_builders(c, exp.map(at)).unwrap();
    [
        a.custom_created_at(at(t)).sign_with_keys(keys).unwrap(),
        r.custom_created_at(at(t)).sign_with_keys(keys).unwrap(),
    ]
}

fn delete(keys: &Keys, t: u64, ids: &[EventId], coords: &[(PublicKey, String)]) -> Event {
    let mut tags: Vec<Tag> = ids.iter().map(|i| Tag::event(*i)).collect();
    tags.extend(coords.iter().map(|(pk, d)| {
        Tag::coordinate(
            Coordinate::new(MARKET_KIND, *pk).identifier(d.clone()),
            None,
        )
    }));
    EventBuilder::new(Kind::EventDeletion, "")
        .tags(tags)
        .custom_created_at(at(t))
        .sign_with_keys(keys)
        .unwrap()
}

fn index_of(events: &[(&Event, &str)]) -> Index {
    let mut idx = Index::new();
    for (e, relay) in events {
        idx.ingest(e, relay);
    }
    idx
}

const NOW: u64 = 1_800_000_000;

#[test]
fn newest_event_per_author_and_d_wins_in_any_order() {
    let dev = Keys::generate();
    let v1 = announce_at(&dev, &content("org.example.a", "A", "1.0.0"), 100, None);
    let v2 = announce_at(&dev, &content("org.example.a", "A", "2.0.0"), 200, None);
    for order in [[&v1[0], &v2[0]], [&v2[0], &v1[0]]] {
        let mut idx = Index::new();
        for e in order {
            idx.ingest(e, "ws://r1");
        }
        idx.ingest(&v1[1], "ws://r1");
        idx.ingest(&v2[1], "ws://r1");
        let apps = idx.apps(at(NOW));
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].current.version(), "2.0.0");
        let versions: Vec<_> = apps[0].releases.iter().map(|r| r.version()).collect();
        assert_eq!(versions, ["2.0.0", "1.0.0"]);
        assert_eq!(apps[0].first_published, at(100));
    }
}

#[test]
fn relay_count_is_per_event_and_deduplicated() {
    let dev = Keys::generate();
    let [app, _] = announce(&dev, &content("org.example.a", "A", "1.0.0"));
    let idx = index_of(&[(&app, "ws://r1"), (&app, "ws://r2"), (&app, "ws://r1")]);
    let apps = idx.apps(at(NOW));
    assert_eq!(apps[0].relays.len(), 2);
}

#[test]
fn deletions_apply_only_to_the_authors_events() {
    let dev = Keys::generate();
    let other = Keys::generate();
    let [app, rel] = announce_at(&dev, &content("org.example.a", "A", "1.0.0"), 100, None);
    let d_app = app.tags.identifier().unwrap().to_string();
    let d_rel = rel.tags.identifier().unwrap().to_string();
    let cases: Vec<(&str, Event, bool)> = vec![
        (
            "author deletes by id",
            delete(&dev, 150, &[app.id, rel.id], &[]),
            true,
        ),
        (
            "author deletes by coordinate",
            delete(
                &dev,
                150,
                &[],
                &[
                    (dev.public_key(), d_app.clone()),
                    (dev.public_key(), d_rel.clone()),
                ],
            ),
            true,
        ),
        (
            "someone else deletes by id",
            delete(&other, 150, &[app.id, rel.id], &[]),
            false,
        ),
        (
            "someone else deletes by coordinate",
            delete(
                &other,
                150,
                &[],
                &[
                    (dev.public_key(), d_app.clone()),
                    (dev.public_key(), d_rel.clone()),
                ],
            ),
            false,
        ),
        (
            "older coordinate deletion does not remove a newer event",
            delete(
                &dev,
                50,
                &[],
                &[
                    (dev.public_key(), d_app.clone()),
                    (dev.public_key(), d_rel.clone()),
                ],
            ),
            false,
        ),
    ];
    for (what, del, removed) in cases {
        // Deletion before and after the announcement: order must not matter.
        for del_first in [true, false] {
            let idx = if del_first {
                index_of(&[(&del, "r"), (&app, "r"), (&rel, "r")])
            } else {
                index_of(&[(&app, "r"), (&rel, "r"), (&del, "r")])
            };
            assert_eq!(idx.apps(at(NOW)).is_empty(), removed, "{what}");
        }
    }
}

#[test]
fn expired_announcements_are_ignored() {
    let dev = Keys::generate();
    let c = content("org.example.a", "A", "1.0.0");
    let expired = announce_at(&dev, &c, 100, Some(NOW - 1));
    let live = announce_at(&dev, &c, 100, Some(NOW + 1000));
    assert!(index_of(&[(&expired[0], "r"), (&expired[1], "r")])
        .apps(at(NOW))
        .is_empty());
    assert_eq!(
        index_of(&[(&live[0], "r"), (&live[1], "r")])
            .apps(at(NOW))
            .len(),
        1
    );
}

#[test]
fn reports_attach_to_the_right_app() {
    let dev = Keys::generate();
    let reporter = Keys::generate();
    let [a, _] = announce(&dev, &content("org.example.a", "A", "1.0.0"));
    let [b, _] = announce(&dev, &content("org.example.b", "B", "1.0.0"));
    let report = |tags: Vec<Tag>| {
        EventBuilder::report(tags, "bad")
            .sign_with_keys(&reporter)
            .unwrap()
    };
    let cases: Vec<(&str, Event, usize, usize)> = vec![
        (
            "by event id",
            report(vec![
                Tag::event_report(a.id, Report::Malware),
                Tag::public_key(dev.public_key()),
            ]),
            1,
            0,
        ),
        (
            "by coordinate",
            report(vec![
                Tag::public_key_report(dev.public_key(), Report::Spam),
                Tag::coordinate(
                    Coordinate::new(MARKET_KIND, dev.public_key())
                        .identifier("archy:app:org.example.b"),
                    None,
                ),
            ]),
            0,
            1,
        ),
        (
            "the developer",
            report(vec![Tag::public_key_report(
                dev.public_key(),
                Report::Malware,
            )]),
            1,
            1,
        ),
    ];
    for (what, r, on_a, on_b) in cases {
        let idx = index_of(&[(&a, "r"), (&b, "r"), (&r, "r")]);
        let apps = idx.apps(at(NOW));
        let count = |id: &str| apps.iter().find(|l| l.app_id == id).unwrap().reports.len();
        assert_eq!(
            (count("org.example.a"), count("org.example.b")),
            (on_a, on_b),
            "{what}"
        );
    }
    let r = report(vec![Tag::public_key_report(
        dev.public_key(),
        Report::Malware,
    )]);
    let idx = index_of(&[(&a, "r"), (&r, "r")]);
    assert_eq!(idx.apps(at(NOW))[0].reports[0].reason, "malware");
    // The reporter retracts the report.
    let del = delete(&reporter, NOW, &[r.id], &[]);
    let idx = index_of(&[(&a, "r"), (&r, "r"), (&del, "r")]);
    assert!(idx.apps(at(NOW))[0].reports.is_empty());
}

#[test]
fn same_id_or_name_from_two_developers_is_two_flagged_apps() {
    let alice = Keys::generate();
    let mallory = Keys::generate();
    let [a, _] = announce(&alice, &content("org.example.a", "Vault", "1.0.0"));
    let [m, _] = announce(&mallory, &content("org.example.a", "Vault", "9.0.0"));
    let [n, _] = announce(&mallory, &content("org.example.n", "vault", "1.0.0"));
    let idx = index_of(&[(&a, "r"), (&m, "r"), (&n, "r")]);
    let apps = idx.apps(at(NOW));
    assert_eq!(apps.len(), 3);
    let of = |k: &Keys, id: &str| {
        apps.iter()
            .find(|l| l.developer == k.public_key() && l.app_id == id)
            .unwrap()
    };
    assert_eq!(of(&alice, "org.example.a").current.version(), "1.0.0");
    assert_eq!(of(&mallory, "org.example.a").current.version(), "9.0.0");
    let w = &of(&alice, "org.example.a").warnings;
    assert!(
        w.iter().any(|w| w.contains("app id org.example.a")),
        "{w:?}"
    );
    assert!(w.iter().any(|w| w.contains("name")), "{w:?}");
    assert!(of(&mallory, "org.example.n")
        .warnings
        .iter()
        .any(|w| w.contains("name")));
}

#[test]
fn forged_and_malformed_events_are_recorded_with_reasons() {
    let dev = Keys::generate();
    let [a, _] = announce(&dev, &content("org.example.a", "A", "1.0.0"));
    let mut json = serde_json::to_value(&a).unwrap();
    json["pubkey"] = Keys::generate().public_key().to_hex().into();
    let forged: Event = serde_json::from_value(json).unwrap();
    let junk = EventBuilder::new(MARKET_KIND, "{}")
        .tag(Tag::identifier("archy:app:org.example.x"))
        .sign_with_keys(&dev)
        .unwrap();
    let foreign = EventBuilder::new(MARKET_KIND, "{}")
        .tag(Tag::identifier("some.other.app"))
        .sign_with_keys(&dev)
        .unwrap();
    let idx = index_of(&[
        (&forged, "ws://bad"),
        (&junk, "ws://bad"),
        (&foreign, "ws://r"),
    ]);
    assert!(idx.apps(at(NOW)).is_empty());
    let reasons: Vec<_> = idx.rejections().iter().map(|r| &r.reason).collect();
    assert!(
        matches!(
            reasons[..],
            [
                EventRejection::Forged { .. },
                EventRejection::MalformedContent { .. }
            ]
        ),
        "{reasons:?}"
    );
    assert!(idx.rejections().iter().all(|r| r.relay == "ws://bad"));
}

#[test]
fn batch_ingest_matches_one_by_one() {
    let dev = Keys::generate();
    let mut events: Vec<(Event, String)> = Vec::new();
    for i in 0..1500u64 {
        let c = content(
            &format!("org.example.a{}", i % 700),
            "A",
            &format!("1.0.{i}"),
        );
        for e in announce_at(&dev, &c, 100 + i, None) {
            events.push((e, format!("ws://r{}", i % 3)));
        }
    }
    let [victim, _] = announce_at(&dev, &content("org.example.v", "V", "1.0.0"), 50, None);
    events.push((victim.clone(), "ws://r0".into()));
    events.push((delete(&dev, 60, &[victim.id], &[]), "ws://r0".into()));
    let mut json = serde_json::to_value(&victim).unwrap();
    json["content"] = "{}".into();
    events.push((serde_json::from_value(json).unwrap(), "ws://bad".into()));
    let mut one_by_one = Index::new();
    for (e, r) in &events {
        one_by_one.ingest(e, r);
    }
    let mut batch = Index::new();
    batch.ingest_all(&events);
    let summary = |idx: &Index| {
        idx.apps(at(NOW))
            .into_iter()
            .map(|l| (l.app_id, l.current.event_id, l.relays, l.releases.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&batch), summary(&one_by_one));
    assert_eq!(summary(&batch).len(), 700);
    let rejected = |idx: &Index| {
        idx.rejections()
            .iter()
            .map(|r| (r.event_id, r.author, r.relay.clone(), r.reason.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(rejected(&batch), rejected(&one_by_one));
    assert_eq!(batch.rejections().len(), 1);
}

#[test]
fn retraction_and_report_builders_target_what_they_name() {
    let dev = Keys::generate();
    let [a, r] = announce(&dev, &content("org.example.a", "A", "1.0.0"));
    let [b, _] = announce(&dev, &content("org.example.b", "B", "1.0.0"));
    let ids = [
        a.tags.identifier().unwrap().to_string(),
        r.tags.identifier().unwrap().to_string(),
    ];
    // By coordinates alone (no ids): only app A goes.
    let retract = crate::announcement::retraction_builder(&dev.public_key(), &ids, &[])
        .sign_with_keys(&dev)
        .unwrap();
    let idx = index_of(&[(&a, "r"), (&r, "r"), (&b, "r"), (&retract, "r")]);
    let left: Vec<_> = idx
        .apps(Timestamp::now())
        .into_iter()
        .map(|l| l.app_id)
        .collect();
    assert_eq!(left, ["org.example.b"]);
    let report =
        crate::announcement::report_builder(&dev.public_key(), "org.example.b", Report::Spam, "")
            .sign_with_keys(&Keys::generate())
            .unwrap();
    let idx = index_of(&[(&a, "r"), (&b, "r"), (&report, "r")]);
    let apps = idx.apps(Timestamp::now());
    let reports: Vec<_> = apps
        .iter()
        .map(|l| (l.app_id.as_str(), l.reports.len()))
        .collect();
    assert_eq!(reports, [("org.example.a", 0), ("org.example.b", 1)]);
    assert_eq!(apps[1].reports[0].reason, "spam");
}

#[test]
fn contact_lists_keep_the_newest() {
    let me = Keys::generate();
    let (x, y) = (Keys::generate(), Keys::generate());
    let list = |t: u64, who: &Keys| {
        EventBuilder::contact_list([Contact::new(who.public_key())])
            .custom_created_at(at(t))
            .sign_with_keys(&me)
            .unwrap()
    };
    let (old, new) = (list(1, &x), list(2, &y));
    for order in [[&old, &new], [&new, &old]] {
        let idx = index_of(&[(order[0], "r"), (order[1], "r")]);
        assert_eq!(
            idx.follows(&me.public_key()).unwrap(),
            &BTreeSet::from([y.public_key()])
        );
    }
}

#[test]
fn endorsements_are_collected_and_retractable() {
    let dev = Keys::generate();
    let fan = Keys::generate();
    let [a, _] = announce(&dev, &content("org.example.a", "A", "1.0.0"));
    let e = endorsement_builder(&dev.public_key(), "org.example.a")
        .custom_created_at(at(100))
        .sign_with_keys(&fan)
        .unwrap();
    let idx = index_of(&[(&a, "r"), (&e, "r")]);
    assert_eq!(
        idx.apps(at(NOW))[0].endorsers,
        BTreeSet::from([fan.public_key()])
    );
    let del = delete(
        &fan,
        200,
        &[],
        &[(fan.public_key(), e.tags.identifier().unwrap().to_string())],
    );
    let idx = index_of(&[(&a, "r"), (&e, "r"), (&del, "r")]);
    assert!(idx.apps(at(NOW))[0].endorsers.is_empty());
}

#[test]
fn key_rotation_continues_the_app_and_disputes_are_not_accepted() {
    let old = Keys::generate();
    let new = Keys::generate();
    let thief = Keys::generate();
    let [o, _] = announce_at(&old, &content("org.example.a", "A", "1.0.0"), 100, None);
    let [n, _] = announce_at(&new, &content("org.example.a", "A", "2.0.0"), 300, None);
    let stmt = successor_builder(&new.public_key())
        .sign_with_keys(&old)
        .unwrap();
    let idx = index_of(&[(&o, "r"), (&n, "r"), (&stmt, "r")]);
    let apps = idx.apps(at(NOW));
    assert_eq!(apps.len(), 1, "rotation is one app, not a collision");
    assert_eq!(apps[0].developer, new.public_key());
    assert_eq!(apps[0].continues, Some(old.public_key()));
    assert_eq!(apps[0].first_published, at(100));
    assert!(apps[0].warnings.is_empty());
    assert_eq!(
        idx.successions().predecessors(&new.public_key()),
        vec![old.public_key()]
    );

    let rival = successor_builder(&thief.public_key())
        .sign_with_keys(&old)
        .unwrap();
    let idx = index_of(&[(&o, "r"), (&n, "r"), (&stmt, "r"), (&rival, "r")]);
    let s = idx.successions();
    assert!(s.accepted.is_empty());
    assert!(s.disputed.contains(&old.public_key()));
    assert_eq!(idx.apps(at(NOW)).len(), 2);
}

/// A relay that sends many bad events gets one log line, not one per event; every
/// event is still recorded.
#[test]
fn refused_events_are_logged_once_per_relay() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dev = Keys::generate();
    let junk: Vec<Event> = (0..20)
        .map(|i| {
            EventBuilder::new(MARKET_KIND, "{}")
                .tag(Tag::identifier(format!("archy:app:org.example.x{i}")))
                .sign_with_keys(&dev)
                .unwrap()
        })
        .collect();
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let idx = tracing::subscriber::with_default(subscriber, || {
        let mut events: Vec<(&Event, &str)> = junk.iter().map(|e| (e, "ws://bad")).collect();
        events.extend(junk.iter().take(3).map(|e| (e, "ws://worse")));
        index_of(&events)
    });
    assert_eq!(idx.rejections().len(), 23);
    let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(logged.len(), 2, "{log}");
    assert!(logged[0].contains("ws://bad") && logged[1].contains("ws://worse"));
}
