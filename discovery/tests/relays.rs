//! The marketplace against real relays: nostr-relay-builder `LocalRelay`s on
//! 127.0.0.1, plus a hostile relay speaking raw websocket, plus a relay that is down.
#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, time::Duration};

use archy_catalog::{
    manifest::{parse_and_validate, ManifestFormat},
    oci::ArchiveFormat,
    ContentHash, ImageRef,
};
use archy_discovery::{
    announcement::{
        announcement_builders, endorsement_builder, AnnouncementContent, EventRejection,
        MARKET_KIND,
    },
    client::{sync_market, BudgetExceeded, RelayError, RelaySet, SyncOptions, SyncResult},
    trust::Tier,
};
use archy_harness::hostile::event_frame;
use nostr_relay_builder::prelude::*;
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(3);

async fn start_relay() -> LocalRelay {
    let builder = RelayBuilder::default()
        .addr("127.0.0.1".parse().unwrap())
        .rate_limit(RateLimit {
            max_reqs: 1000,
            notes_per_minute: 100_000,
        });
    let relay = LocalRelay::new(builder);
    relay.run().await.expect("relay starts");
    relay
}

fn content(id: &str, name: &str, version: &str) -> AnnouncementContent {
    let hash = ContentHash::of(format!("{id}@{version}").as_bytes());
    let text = format!(
        "app:\n  id: {id}\n  name: {name}\n  version: {version}\n  category: notes\n  \
         description: {{ short: \"Take notes\" }}\n  container:\n    image: \"{hash}\"\n"
    );
    AnnouncementContent {
        manifest: parse_and_validate(&text, ManifestFormat::Yaml).unwrap(),
        image: ImageRef {
            hash,
            size: 42,
            config_digest: format!("sha256:{}", "cd".repeat(32)),
            format: ArchiveFormat::OciArchive,
            web_seeds: Vec::new(),
        },
        providers: vec!["ab".repeat(32)],
    }
}

fn announcements(keys: &Keys, c: &AnnouncementContent, expires: Option<Timestamp>) -> Vec<Event> {
    announcement_builders(c, expires)
        .unwrap()
        .into_iter()
        .map(|b| b.sign_with_keys(keys).unwrap())
        .collect()
}

/// Sends every event to every relay; returns whether each relay accepted each event.
async fn try_publish(urls: &[String], events: &[Event]) -> Vec<bool> {
    let relays = RelaySet::connect(urls, TIMEOUT).await.unwrap();
    let mut out = Vec::new();
    for e in events {
        out.extend(relays.publish(e).await.into_iter().map(|r| r.accepted()));
    }
    relays.shutdown().await;
    out
}

async fn publish(urls: &[String], events: &[Event]) {
    let accepted = try_publish(urls, events).await;
    assert!(accepted.iter().all(|a| *a), "a relay refused an event");
}

async fn sync(urls: &[String], me: Option<&Keys>) -> SyncResult {
    sync_market(&SyncOptions {
        relays: urls.to_vec(),
        operator: me.map(|k| k.public_key()),
        timeout: TIMEOUT,
    })
    .await
    .unwrap()
}

async fn urls_of(relays: &[&LocalRelay]) -> Vec<String> {
    let mut out = Vec::new();
    for r in relays {
        out.push(r.url().await.to_string());
    }
    out
}

#[tokio::test]
async fn published_app_is_found_with_its_score_and_followed_developer_ranks_first() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let (r1, r2) = (start_relay().await, start_relay().await);
    let urls = urls_of(&[&r1, &r2]).await;
    let me = Keys::generate();
    let friend = Keys::generate();
    let stranger = Keys::generate();
    let mut events = announcements(
        &stranger,
        &content("org.stranger.notes", "Notes", "1.0.0"),
        None,
    );
    events.extend(announcements(
        &friend,
        &content("org.friend.jot", "Jot", "2.1.0"),
        None,
    ));
    events.push(
        EventBuilder::contact_list([Contact::new(friend.public_key())])
            .sign_with_keys(&me)
            .unwrap(),
    );
    publish(&urls, &events).await;

    let result = sync(&urls, Some(&me)).await;
    assert!(result.relays.iter().all(|r| r.ok), "{:?}", result.relays);
    let hits = result.view.search(&["notes".to_string()]);
    assert_eq!(hits.len(), 2, "category `notes` matches both");
    let first = hits[0];
    assert_eq!(first.listing.developer, friend.public_key());
    assert_eq!(first.listing.current.version(), "2.1.0");
    assert_eq!(first.trust.tier, Tier::Verified);
    // followed by you (50) + seen on 2 relays (4) + age 0.
    assert_eq!(first.trust.score, 54, "{:#?}", first.trust.reasons);
    assert!(first
        .trust
        .reasons
        .iter()
        .any(|r| r.text == "seen on 2 relays"));
    let second = hits[1];
    assert_eq!(second.listing.developer, stranger.public_key());
    assert_eq!(
        (second.trust.score, second.trust.tier),
        (4, Tier::Unverified)
    );
    assert_eq!(
        second.listing.current.content.providers,
        vec!["ab".repeat(32)]
    );

    // Without an operator key nobody is verified.
    let anon = sync(&urls, None).await;
    assert!(anon
        .view
        .apps()
        .iter()
        .all(|a| a.trust.tier == Tier::Unverified));
}

#[tokio::test]
async fn deletion_by_the_author_removes_the_app_and_others_cannot_delete() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let relay = start_relay().await;
    let urls = urls_of(&[&relay]).await;
    let dev = Keys::generate();
    let events = announcements(&dev, &content("org.example.gone", "Gone", "1.0.0"), None);
    publish(&urls, &events).await;
    assert_eq!(sync(&urls, None).await.view.apps().len(), 1);

    let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    let attacker_delete = EventBuilder::delete(EventDeletionRequest::new().ids(ids.clone()))
        .sign_with_keys(&Keys::generate())
        .unwrap();
    // The relay may refuse it itself; either way the app stays.
    try_publish(&urls, &[attacker_delete]).await;
    assert_eq!(
        sync(&urls, None).await.view.apps().len(),
        1,
        "a stranger's deletion is ignored"
    );

    let delete = EventBuilder::delete(EventDeletionRequest::new().ids(ids))
        .sign_with_keys(&dev)
        .unwrap();
    publish(&urls, &[delete]).await;
    assert!(sync(&urls, None).await.view.apps().is_empty());
}

#[tokio::test]
async fn expired_announcement_is_ignored() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let relay = start_relay().await;
    let urls = urls_of(&[&relay]).await;
    let dev = Keys::generate();
    let expires = Timestamp::now() + Duration::from_secs(2);
    publish(
        &urls,
        &announcements(
            &dev,
            &content("org.example.brief", "Brief", "1.0.0"),
            Some(expires),
        ),
    )
    .await;
    publish(
        &urls,
        &announcements(
            &dev,
            &content("org.example.lasting", "Lasting", "1.0.0"),
            None,
        ),
    )
    .await;
    assert_eq!(sync(&urls, None).await.view.apps().len(), 2);
    // Wait (bounded) for the expiry to pass.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while Timestamp::now() <= expires {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clock did not advance"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let view = sync(&urls, None).await.view;
    let ids: Vec<&str> = view
        .apps()
        .iter()
        .map(|a| a.listing.app_id.as_str())
        .collect();
    assert_eq!(ids, ["org.example.lasting"]);
}

#[tokio::test]
async fn id_collision_between_developers_is_two_apps_with_warnings() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let relay = start_relay().await;
    let urls = urls_of(&[&relay]).await;
    let (alice, mallory) = (Keys::generate(), Keys::generate());
    publish(
        &urls,
        &announcements(
            &alice,
            &content("org.example.vault", "Vault", "1.0.0"),
            None,
        ),
    )
    .await;
    publish(
        &urls,
        &announcements(
            &mallory,
            &content("org.example.vault", "Vault", "9.9.9"),
            None,
        ),
    )
    .await;
    let view = sync(&urls, None).await.view;
    let apps = view.search(&["vault".to_string()]);
    assert_eq!(apps.len(), 2);
    for a in &apps {
        assert!(
            a.listing
                .warnings
                .iter()
                .any(|w| w.contains("also announced by another developer")),
            "{:?}",
            a.listing.warnings
        );
    }
    let alice_app = view
        .resolve(&alice.public_key(), "org.example.vault")
        .unwrap();
    assert_eq!(
        alice_app.listing.current.version(),
        "1.0.0",
        "never shadowed"
    );
}

#[tokio::test]
async fn sybil_endorsements_do_not_lift_an_app_but_a_trusted_one_does() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let relay = start_relay().await;
    let urls = urls_of(&[&relay]).await;
    let (me, friend, dev) = (Keys::generate(), Keys::generate(), Keys::generate());
    let mut events = announcements(&dev, &content("org.example.e", "E", "1.0.0"), None);
    for _ in 0..20 {
        events.push(
            endorsement_builder(&dev.public_key(), "org.example.e")
                .sign_with_keys(&Keys::generate())
                .unwrap(),
        );
    }
    events.push(
        EventBuilder::contact_list([Contact::new(friend.public_key())])
            .sign_with_keys(&me)
            .unwrap(),
    );
    publish(&urls, &events).await;
    let before = sync(&urls, Some(&me)).await.view.apps()[0].trust.clone();
    assert_eq!(before.tier, Tier::Unverified);
    assert_eq!(before.score, 2);
    publish(
        &urls,
        &[endorsement_builder(&dev.public_key(), "org.example.e")
            .sign_with_keys(&friend)
            .unwrap()],
    )
    .await;
    let after = sync(&urls, Some(&me)).await.view.apps()[0].trust.clone();
    assert_eq!(
        (after.score, after.tier),
        (17, Tier::Community),
        "{:#?}",
        after.reasons
    );
}

/// A relay that answers every REQ with a forged event, a validly signed event whose
/// content is garbage, a non-JSON frame and a malformed message, then EOSE.
async fn start_hostile_relay(forged: Event, malformed: Event) -> SocketAddr {
    archy_harness::hostile::scripted_relay(move |sub| {
        vec![
            event_frame(sub, &forged),
            event_frame(sub, &malformed),
            "this is not json".to_string(),
            event_frame(sub, serde_json::json!({"id": "zz"})),
        ]
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn hostile_and_dead_relays_do_not_stop_the_good_one() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let good = start_relay().await;
    let dev = Keys::generate();
    let real = announcements(&dev, &content("org.example.real", "Real", "1.0.0"), None);
    publish(&urls_of(&[&good]).await, &real).await;

    // Forged: a real announcement re-attributed to another key.
    let mut json = serde_json::to_value(&real[0]).unwrap();
    json["pubkey"] = Keys::generate().public_key().to_hex().into();
    let forged: Event = serde_json::from_value(json).unwrap();
    // Malformed: correctly signed, content is not an announcement.
    let malformed = EventBuilder::new(MARKET_KIND, "{\"manifest\": 1}")
        .tags([
            Tag::identifier("archy:app:org.example.junk"),
            Tag::hashtag("archy"),
        ])
        .sign_with_keys(&Keys::generate())
        .unwrap();
    let malformed_id = malformed.id;
    let hostile = start_hostile_relay(forged, malformed).await;
    // Dead: a port that was bound and released.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();

    let mut urls = urls_of(&[&good]).await;
    urls.push(format!("ws://{hostile}"));
    urls.push(format!("ws://{dead}"));
    let started = std::time::Instant::now();
    let result = sync(&urls, None).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by timeouts"
    );

    let apps = result.view.apps();
    assert_eq!(apps.len(), 1, "only the genuine app");
    assert_eq!(apps[0].listing.app_id, "org.example.real");
    assert_eq!(apps[0].listing.relays.len(), 1);
    let dead_report = result
        .relays
        .iter()
        .find(|r| r.url.contains(&dead.port().to_string()))
        .unwrap();
    assert!(
        !dead_report.ok && matches!(dead_report.error, Some(RelayError::Connect { .. })),
        "{dead_report:?}"
    );
    // The validly signed junk reached the index and was refused with a reason.
    let rejection = result
        .view
        .rejections()
        .iter()
        .find(|r| r.event_id == malformed_id)
        .expect("malformed event refused");
    assert!(rejection.relay.contains(&hostile.port().to_string()));
    assert!(
        matches!(rejection.reason, EventRejection::MalformedContent { .. }),
        "{:?}",
        rejection.reason
    );
}

#[tokio::test]
async fn paging_gets_everything_from_a_relay_that_caps_results() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let capped = LocalRelay::new(
        RelayBuilder::default()
            .addr("127.0.0.1".parse().unwrap())
            .rate_limit(RateLimit {
                max_reqs: 1000,
                notes_per_minute: 100_000,
            })
            .max_filter_limit(7),
    );
    capped.run().await.unwrap();
    let urls = urls_of(&[&capped]).await;
    let dev = Keys::generate();
    let now = Timestamp::now().as_secs();
    let mut events = Vec::new();
    for i in 0..12u64 {
        let c = content(&format!("org.example.app{i}"), &format!("App {i}"), "1.0.0");
        for b in announcement_builders(&c, None).unwrap() {
            events.push(
                b.custom_created_at(Timestamp::from(now - 60 * i))
                    .sign_with_keys(&dev)
                    .unwrap(),
            );
        }
    }
    publish(&urls, &events).await;
    let result = sync(&urls, None).await;
    assert_eq!(result.view.apps().len(), 12, "all pages fetched");
    assert_eq!(result.relays[0].events, 24);

    // 12 more apps in one single second: more than one page cannot hold. The fetch
    // still terminates and returns what the relay gave.
    let same = Timestamp::from(now - 10_000);
    let mut crowded = Vec::new();
    for i in 0..12u64 {
        let c = content(
            &format!("org.example.crowd{i}"),
            &format!("Crowd {i}"),
            "1.0.0",
        );
        for b in announcement_builders(&c, None).unwrap() {
            crowded.push(b.custom_created_at(same).sign_with_keys(&dev).unwrap());
        }
    }
    publish(&urls, &crowded).await;
    let result = sync(&urls, None).await;
    let apps = result.view.apps().len();
    assert!(
        (12..24).contains(&apps),
        "{apps}: all spread-out apps and part of the crowded second"
    );
}

/// A relay that accepts websocket connections and then never answers.
async fn start_silent_relay() -> SocketAddr {
    archy_harness::hostile::silent_relay().await.unwrap()
}

#[tokio::test]
async fn a_silent_relay_times_out_and_is_reported() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let good = start_relay().await;
    let dev = Keys::generate();
    publish(
        &urls_of(&[&good]).await,
        &announcements(&dev, &content("org.example.up", "Up", "1.0.0"), None),
    )
    .await;
    let silent = start_silent_relay().await;
    let mut urls = urls_of(&[&good]).await;
    urls.push(format!("ws://{silent}"));
    let started = std::time::Instant::now();
    let result = sync_market(&SyncOptions {
        relays: urls,
        operator: None,
        timeout: Duration::from_secs(1),
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(result.view.apps().len(), 1);
    let report = result
        .relays
        .iter()
        .find(|r| r.url.contains(&silent.port().to_string()))
        .unwrap();
    assert!(!report.ok);
    assert!(
        matches!(report.error, Some(RelayError::NoEndOfStoredEvents { .. })),
        "{report:?}"
    );
    let good_report = result
        .relays
        .iter()
        .find(|r| !r.url.contains(&silent.port().to_string()))
        .unwrap();
    assert!(good_report.ok, "{good_report:?}");
}

/// A relay that floods: more events than one sync's budget lets a relay send. The fetch
/// keeps no more than the budget, reports the relay with the reason and drops it for the
/// rest of the sync (its memory and time are bounded by the budget, not by the relay).
#[tokio::test]
async fn a_flooding_relay_is_cut_off_at_its_budget() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let relay = start_relay().await;
    let urls = urls_of(&[&relay]).await;
    let dev = Keys::generate();
    let mut events = Vec::new();
    for i in 0..30u64 {
        let c = content(
            &format!("org.example.flood{i}"),
            &format!("Flood {i}"),
            "1.0.0",
        );
        events.extend(announcements(&dev, &c, None));
    }
    publish(&urls, &events).await;
    let budget = archy_discovery::client::RelayBudget {
        events: 10,
        bytes: archy_discovery::client::MAX_BYTES_PER_RELAY,
    };
    let mut relays = RelaySet::connect(&urls, TIMEOUT)
        .await
        .unwrap()
        .with_budget(budget);
    let market = Filter::new().kind(archy_discovery::announcement::MARKET_KIND);
    let got = relays.fetch(market.clone()).await;
    assert_eq!(got.len(), 10, "no more than the budget is kept");
    let report = &relays.reports()[0];
    assert!(!report.ok, "the relay is reported");
    assert!(
        matches!(
            report.error,
            Some(RelayError::OverBudget(BudgetExceeded::Events))
        ),
        "{report:?}"
    );
    assert!(
        relays.fetch(market).await.is_empty(),
        "and not asked again in this sync"
    );
    // A byte budget cuts off the same way.
    let budget = archy_discovery::client::RelayBudget {
        events: 1_000,
        bytes: 4_000,
    };
    let mut relays = RelaySet::connect(&urls, TIMEOUT)
        .await
        .unwrap()
        .with_budget(budget);
    let got = relays
        .fetch(Filter::new().kind(archy_discovery::announcement::MARKET_KIND))
        .await;
    let bytes: usize = got.iter().map(|(e, _)| e.as_json().len()).sum();
    assert!(bytes <= 4_000 && !got.is_empty(), "{bytes} bytes kept");
    assert!(
        matches!(
            relays.reports()[0].error,
            Some(RelayError::OverBudget(BudgetExceeded::Bytes))
        ),
        "{:?}",
        relays.reports()[0]
    );
}

/// A relay that answers every REQ with `events`, in order, then EOSE.
async fn start_sending_relay(events: Vec<Event>) -> SocketAddr {
    archy_harness::hostile::scripted_relay(move |sub| {
        events
            .iter()
            .map(|e| event_frame(sub, e))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap()
}

/// Duplicates cost a relay's budget nothing (the event is kept once), so a relay that
/// resends one event without end is cut off at the page's own limit: it may not send
/// more events than a page asks for.
#[tokio::test]
async fn a_relay_repeating_one_event_is_cut_off_at_the_page_limit() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let dev = Keys::generate();
    let event = announcements(&dev, &content("org.example.echo", "Echo", "1.0.0"), None).remove(0);
    let page = archy_discovery::client::PAGE_SIZE;
    let relay = start_sending_relay(vec![event; page + 500]).await;
    let mut relays = RelaySet::connect(&[format!("ws://{relay}")], TIMEOUT)
        .await
        .unwrap();
    let market = Filter::new().kind(archy_discovery::announcement::MARKET_KIND);
    let got = relays.fetch(market).await;
    assert_eq!(got.len(), 1, "the event is kept once");
    let report = &relays.reports()[0];
    assert!(
        matches!(report.error, Some(RelayError::OverPage { .. })),
        "{report:?}"
    );
    relays.shutdown().await;
}

/// An event over 512 KiB (a validly signed one, so only its size is wrong) is dropped
/// by the relay limits before it is parsed; the relay's other events still count.
#[tokio::test]
async fn an_event_over_512_kib_is_dropped_before_it_is_parsed() {
    let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(180));
    let dev = Keys::generate();
    let big = EventBuilder::new(MARKET_KIND, "x".repeat(600 << 10))
        .tags([
            Tag::identifier("archy:app:org.example.big"),
            Tag::hashtag("archy"),
        ])
        .sign_with_keys(&dev)
        .unwrap();
    assert!(big.as_json().len() > archy_discovery::client::MAX_EVENT_BYTES as usize);
    let small =
        announcements(&dev, &content("org.example.small", "Small", "1.0.0"), None).remove(0);
    let relay = start_sending_relay(vec![big.clone(), small.clone()]).await;
    let mut relays = RelaySet::connect(&[format!("ws://{relay}")], TIMEOUT)
        .await
        .unwrap();
    let got = relays.fetch(Filter::new().kind(MARKET_KIND)).await;
    let ids: Vec<EventId> = got.iter().map(|(e, _)| e.id).collect();
    assert_eq!(ids, vec![small.id], "only the small event arrives");
    assert!(relays.reports()[0].ok, "{:?}", relays.reports()[0]);
    relays.shutdown().await;
}
