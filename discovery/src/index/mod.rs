//! Ingestion and merge of marketplace events, with no I/O.
//!
//! Events arrive from several relays in any order, some duplicated, some stale, some
//! hostile. [`Index`] keeps what each relay said and answers "which apps exist now":
//! the newest event per (author, `d`), minus what the author deleted (NIP-09) and what
//! has expired (NIP-40), with reports (NIP-56), endorsements, contact lists (for the
//! trust score) and how many relays carry each event. Apps are identified by
//! (developer, app id); two developers using one id or one name are listed apart and
//! flagged, never merged. Every refused event is kept with its reason.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use nostr_sdk::prelude::*;
use serde::Serialize;

use crate::announcement::{
    parse_market_event, Announcement, Endorsement, EventRejection, MarketEvent, Scope,
    SuccessorStatement, MARKET_KIND, RELEASE_PREFIX,
};

/// Longest chain of successor statements followed from one key.
pub const MAX_SUCCESSION_DEPTH: usize = 8;

/// An event that was refused, where it came from and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub event_id: EventId,
    pub author: PublicKey,
    pub relay: String,
    pub reason: EventRejection,
}

/// A NIP-56 report as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReportRecord {
    id: EventId,
    reporter: PublicKey,
    created_at: Timestamp,
    reason: String,
    developers: Vec<PublicKey>,
    events: Vec<EventId>,
    apps: Vec<(PublicKey, String)>,
}

/// One report against one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppReport {
    pub event_id: String,
    pub reporter: PublicKey,
    /// The NIP-56 report type (`malware`, `spam`, ...; `other` if none given).
    pub reason: String,
}

/// A NIP-09 deletion request.
#[derive(Debug, Clone)]
struct Deletion {
    created_at: Timestamp,
    ids: Vec<EventId>,
    identifiers: Vec<String>,
}

/// One app as the merged view sees it: identified by (developer, app id).
#[derive(Debug, Clone)]
pub struct AppListing {
    pub developer: PublicKey,
    pub app_id: String,
    /// The app announcement, or the newest release when there is none.
    pub current: Announcement,
    /// Every live release, newest version first.
    pub releases: Vec<Announcement>,
    /// Relays that carry `current`.
    pub relays: BTreeSet<String>,
    /// Oldest `created_at` of any live announcement of this app (its age).
    pub first_published: Timestamp,
    pub reports: Vec<AppReport>,
    /// Keys that endorse this app (any key; the trust score decides which count).
    pub endorsers: BTreeSet<PublicKey>,
    /// When the developer rotated keys: the old key this listing continues.
    pub continues: Option<PublicKey>,
    /// Collisions with other developers' apps, in words.
    pub warnings: Vec<String>,
}

/// Key rotations as the accepted successor statements say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Successions {
    /// Old key -> the one key it named.
    pub accepted: BTreeMap<PublicKey, PublicKey>,
    /// Old keys that named more than one successor: none of them is accepted.
    pub disputed: BTreeSet<PublicKey>,
}

impl Successions {
    /// The keys `key` succeeds, nearest first (bounded, cycle-safe).
    pub fn predecessors(&self, key: &PublicKey) -> Vec<PublicKey> {
        let mut out = Vec::new();
        let mut current = *key;
        for _ in 0..MAX_SUCCESSION_DEPTH {
            match self
                .accepted
                .iter()
                .find(|(_, new)| **new == current)
                .map(|(old, _)| *old)
            {
                Some(old) if old != *key && !out.contains(&old) => {
                    out.push(old);
                    current = old;
                }
                _ => break,
            }
        }
        out
    }
}

/// The merged view of everything fetched.
#[derive(Debug, Default)]
pub struct Index {
    /// Newest announcement per (author, d).
    announcements: HashMap<(PublicKey, String), Announcement>,
    endorsements: HashMap<(PublicKey, String), Endorsement>,
    successors: HashMap<EventId, SuccessorStatement>,
    relays_by_event: HashMap<EventId, BTreeSet<String>>,
    deletions: HashMap<PublicKey, Vec<Deletion>>,
    seen_deletions: HashSet<EventId>,
    reports: HashMap<EventId, ReportRecord>,
    /// Newest contact list per author: (created_at, follows).
    contacts: HashMap<PublicKey, (Timestamp, BTreeSet<PublicKey>)>,
    rejections: Vec<Rejection>,
}

/// NIP-01 order for replaceable events: newer wins, ties go to the lower id.
fn newer(a_time: Timestamp, a_id: &EventId, b_time: Timestamp, b_id: &EventId) -> bool {
    a_time > b_time || (a_time == b_time && a_id < b_id)
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one event as `relay` delivered it. Refused events are recorded (and
    /// logged) with their reason; events of no interest are ignored.
    pub fn ingest(&mut self, event: &Event, relay: &str) {
        let checked = check(event);
        self.apply(event, relay, checked);
    }

    /// Takes many (event, relay) pairs: verifies and parses them on every core (the
    /// expensive, independent part), then merges them in order, with the same result
    /// as [`Index::ingest`] on each.
    pub fn ingest_all(&mut self, events: &[(Event, String)]) {
        const CHUNK: usize = 1024;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for chunk in events.chunks(CHUNK) {
            let per_thread = chunk.len().div_ceil(threads).max(1);
            let checked: Vec<Checked> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .chunks(per_thread)
                    .map(|part| {
                        scope.spawn(move || part.iter().map(|(e, _)| check(e)).collect::<Vec<_>>())
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            for ((event, relay), c) in chunk.iter().zip(checked) {
                self.apply(event, relay, c);
            }
        }
    }

    /// Every refused event, in arrival order.
    pub fn rejections(&self) -> &[Rejection] {
        &self.rejections
    }

    /// Whom `key` follows, per its newest contact list.
    pub fn follows(&self, key: &PublicKey) -> Option<&BTreeSet<PublicKey>> {
        self.contacts.get(key).map(|(_, f)| f)
    }

    fn apply(&mut self, event: &Event, relay: &str, checked: Checked) {
        match checked {
            Checked::Ignored => return,
            Checked::Rejected(reason) => {
                tracing::warn!(event = %event.id, author = %event.pubkey, relay, %reason, "refused marketplace event");
                self.rejections.push(Rejection {
                    event_id: event.id,
                    author: event.pubkey,
                    relay: relay.to_string(),
                    reason,
                });
                return;
            }
            Checked::Market(MarketEvent::Announcement(a)) => {
                let key = (a.developer, a.identifier.clone());
                match self.announcements.get(&key) {
                    Some(old)
                        if !newer(a.created_at, &a.event_id, old.created_at, &old.event_id) => {}
                    _ => {
                        self.announcements.insert(key, *a);
                    }
                }
            }
            Checked::Market(MarketEvent::Endorsement(e)) => {
                let key = (
                    e.endorser,
                    event.tags.identifier().unwrap_or_default().to_string(),
                );
                match self.endorsements.get(&key) {
                    Some(old)
                        if !newer(e.created_at, &e.event_id, old.created_at, &old.event_id) => {}
                    _ => {
                        self.endorsements.insert(key, e);
                    }
                }
            }
            Checked::Market(MarketEvent::Successor(s)) => {
                self.successors.insert(s.event_id, s);
            }
            Checked::Deletion(d) => {
                if self.seen_deletions.insert(event.id) {
                    self.deletions.entry(event.pubkey).or_default().push(d);
                }
            }
            Checked::Report(r) => {
                self.reports.insert(event.id, r);
            }
            Checked::Contacts(follows) => match self.contacts.get(&event.pubkey) {
                Some((t, _)) if *t >= event.created_at => {}
                _ => {
                    self.contacts
                        .insert(event.pubkey, (event.created_at, follows));
                }
            },
        }
        self.relays_by_event
            .entry(event.id)
            .or_default()
            .insert(relay.to_string());
    }

    /// Whether `author` withdrew the event (`id`, `d`, `created_at`).
    /// `d` is the event's identifier when it is addressable.
    fn is_deleted(
        &self,
        author: &PublicKey,
        id: &EventId,
        d: Option<&str>,
        created_at: Timestamp,
    ) -> bool {
        self.deletions.get(author).is_some_and(|ds| {
            ds.iter().any(|del| {
                del.ids.contains(id)
                    || (del.created_at >= created_at
                        && d.is_some_and(|d| del.identifiers.iter().any(|i| i == d)))
            })
        })
    }

    fn live(&self, a: &Announcement, now: Timestamp) -> bool {
        a.expires_at.is_none_or(|e| e > now)
            && !self.is_deleted(&a.developer, &a.event_id, Some(&a.identifier), a.created_at)
    }

    /// Accepted and disputed key rotations.
    pub fn successions(&self) -> Successions {
        let mut named: BTreeMap<PublicKey, BTreeSet<PublicKey>> = BTreeMap::new();
        for s in self.successors.values() {
            let d = format!(
                "{}{}",
                crate::announcement::SUCCESSOR_PREFIX,
                s.successor.to_hex()
            );
            if !self.is_deleted(&s.old_key, &s.event_id, Some(&d), s.created_at) {
                named.entry(s.old_key).or_default().insert(s.successor);
            }
        }
        let mut out = Successions::default();
        for (old, new) in named {
            if new.len() == 1 {
                out.accepted.extend(new.into_iter().map(|n| (old, n)));
            } else {
                out.disputed.insert(old);
            }
        }
        out
    }

    /// Every live app, merged and flagged, in (developer, app id) order.
    pub fn apps(&self, now: Timestamp) -> Vec<AppListing> {
        let mut grouped: BTreeMap<(PublicKey, String), Vec<&Announcement>> = BTreeMap::new();
        for a in self.announcements.values().filter(|a| self.live(a, now)) {
            grouped
                .entry((a.developer, a.app_id().to_string()))
                .or_default()
                .push(a);
        }
        let successions = self.successions();
        let mut listings: Vec<AppListing> = grouped
            .into_iter()
            .filter_map(|((developer, app_id), anns)| self.listing(developer, app_id, anns))
            .collect();
        merge_rotations(&mut listings, &successions);
        flag_collisions(&mut listings);
        listings
    }

    fn listing(
        &self,
        developer: PublicKey,
        app_id: String,
        anns: Vec<&Announcement>,
    ) -> Option<AppListing> {
        let mut releases: Vec<Announcement> = anns
            .iter()
            .filter(|a| a.scope == Scope::Release)
            .map(|a| (*a).clone())
            .collect();
        releases.sort_by(|a, b| {
            let v = |x: &Announcement| x.content.manifest.semver();
            v(b).cmp(&v(a))
        });
        let current = anns
            .iter()
            .find(|a| a.scope == Scope::App)
            .map(|a| (*a).clone())
            .or_else(|| releases.first().cloned())?;
        let first_published = anns.iter().map(|a| a.created_at).min()?;
        let event_ids: HashSet<EventId> = anns.iter().map(|a| a.event_id).collect();
        let reports = self
            .reports
            .values()
            .filter(|r| !self.is_deleted(&r.reporter, &r.id, None, r.created_at))
            .filter(|r| {
                let names_app = r
                    .apps
                    .iter()
                    .any(|(d, id)| *d == developer && *id == app_id);
                let names_event = r.events.iter().any(|e| event_ids.contains(e));
                let developer_only = r.apps.is_empty() && r.events.is_empty();
                names_app || names_event || (developer_only && r.developers.contains(&developer))
            })
            .map(|r| AppReport {
                event_id: r.id.to_hex(),
                reporter: r.reporter,
                reason: r.reason.clone(),
            })
            .collect();
        let endorsers = self
            .endorsements
            .values()
            .filter(|e| e.developer == developer && e.app_id == app_id)
            .filter(|e| {
                let d = format!(
                    "{}{}/{}",
                    crate::announcement::ENDORSE_PREFIX,
                    developer.to_hex(),
                    app_id
                );
                !self.is_deleted(&e.endorser, &e.event_id, Some(&d), e.created_at)
            })
            .map(|e| e.endorser)
            .collect();
        Some(AppListing {
            relays: self
                .relays_by_event
                .get(&current.event_id)
                .cloned()
                .unwrap_or_default(),
            developer,
            app_id,
            current,
            releases,
            first_published,
            reports,
            endorsers,
            continues: None,
            warnings: Vec::new(),
        })
    }
}

/// What one event means, decided without looking at anything else.
#[derive(Debug)]
enum Checked {
    Market(MarketEvent),
    Deletion(Deletion),
    Report(ReportRecord),
    Contacts(BTreeSet<PublicKey>),
    /// Not a marketplace event (another kind, or someone else's kind 30078 data).
    Ignored,
    Rejected(EventRejection),
}

/// Verifies and parses one event. Pure, so batches run in parallel.
fn check(event: &Event) -> Checked {
    let verified = |event: &Event| {
        event
            .verify()
            .map_err(|e| EventRejection::Forged(e.to_string()))
    };
    let result = match event.kind {
        k if k == MARKET_KIND => match parse_market_event(event) {
            Err(EventRejection::NotArchy) => return Checked::Ignored,
            other => other.map(Checked::Market),
        },
        Kind::EventDeletion => verified(event).map(|()| Checked::Deletion(deletion_of(event))),
        Kind::Reporting => verified(event).and_then(|()| report_of(event).map(Checked::Report)),
        Kind::ContactList => {
            verified(event).map(|()| Checked::Contacts(event.tags.public_keys().copied().collect()))
        }
        _ => return Checked::Ignored,
    };
    result.unwrap_or_else(Checked::Rejected)
}

/// A deletion request. Only the author's own events can be deleted: coordinates
/// naming another key are dropped here, and ids are checked against the author when
/// applied.
fn deletion_of(event: &Event) -> Deletion {
    Deletion {
        created_at: event.created_at,
        ids: event.tags.event_ids().copied().collect(),
        identifiers: market_coordinates(event)
            .filter(|(author, _)| *author == event.pubkey)
            .map(|(_, d)| d)
            .collect(),
    }
}

/// A NIP-56 report; one with neither `p` nor `a` targets is refused.
fn report_of(event: &Event) -> Result<ReportRecord, EventRejection> {
    let mut reason = None;
    for tag in event.tags.iter() {
        let s = tag.as_slice();
        if matches!(s.first().map(String::as_str), Some("p" | "e")) {
            if let Some(r) = s.get(2) {
                reason.get_or_insert_with(|| r.to_lowercase());
            }
        }
    }
    let record = ReportRecord {
        id: event.id,
        reporter: event.pubkey,
        created_at: event.created_at,
        reason: reason.unwrap_or_else(|| "other".into()),
        developers: event.tags.public_keys().copied().collect(),
        events: event.tags.event_ids().copied().collect(),
        apps: market_coordinates(event)
            .filter_map(|(author, d)| Some((author, app_id_of_identifier(&d)?)))
            .collect(),
    };
    if record.developers.is_empty() && record.apps.is_empty() {
        return Err(EventRejection::MissingTag("p"));
    }
    Ok(record)
}

/// The (author, `d`) of every `a` tag naming a kind 30078 event.
///
/// Parsed by hand: Archy identifiers contain `:`, which generic coordinate parsers
/// refuse, and the `d` part is everything after the second `:`.
fn market_coordinates(event: &Event) -> impl Iterator<Item = (PublicKey, String)> + '_ {
    let kind = MARKET_KIND.as_u16().to_string();
    event.tags.iter().filter_map(move |tag| {
        let s = tag.as_slice();
        if s.first().map(String::as_str) != Some("a") {
            return None;
        }
        let mut parts = s.get(1)?.splitn(3, ':');
        if parts.next()? != kind {
            return None;
        }
        let author = PublicKey::from_hex(parts.next()?).ok()?;
        Some((author, parts.next()?.to_string()))
    })
}

/// The app id an announcement `d` tag names, if it is one.
fn app_id_of_identifier(d: &str) -> Option<String> {
    if let Some(id) = d.strip_prefix(crate::announcement::APP_PREFIX) {
        return Some(id.to_string());
    }
    let rest = d.strip_prefix(RELEASE_PREFIX)?;
    rest.rsplit_once('@').map(|(id, _)| id.to_string())
}

/// Folds an old key's listing into its successor's listing of the same app id.
fn merge_rotations(listings: &mut Vec<AppListing>, successions: &Successions) {
    let mut i = 0;
    while i < listings.len() {
        let old = listings[i].developer;
        let target = successions.accepted.get(&old).and_then(|new| {
            listings
                .iter()
                .position(|l| l.developer == *new && l.app_id == listings[i].app_id)
        });
        match target {
            Some(t) => {
                let old_listing = listings.remove(i);
                let t = if t > i { t - 1 } else { t };
                let new_listing = &mut listings[t];
                new_listing.continues = Some(old_listing.developer);
                new_listing.first_published =
                    new_listing.first_published.min(old_listing.first_published);
                new_listing.reports.extend(old_listing.reports);
                new_listing.endorsers.extend(old_listing.endorsers);
            }
            None => i += 1,
        }
    }
}

/// Adds a warning to every listing whose app id or name another developer also uses.
fn flag_collisions(listings: &mut [AppListing]) {
    let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, l) in listings.iter().enumerate() {
        by_id.entry(l.app_id.clone()).or_default().push(i);
        by_name
            .entry(l.current.name().trim().to_lowercase())
            .or_default()
            .push(i);
    }
    let mut warnings: Vec<Vec<String>> = vec![Vec::new(); listings.len()];
    for group in by_id.values().filter(|g| g.len() > 1) {
        for &i in group {
            for &j in group.iter().filter(|&&j| j != i) {
                warnings[i].push(format!(
                    "app id {} is also announced by another developer ({}): a different app",
                    listings[j].app_id,
                    npub(&listings[j].developer)
                ));
            }
        }
    }
    for group in by_name.values().filter(|g| g.len() > 1) {
        for &i in group {
            for &j in group.iter().filter(|&&j| j != i) {
                if listings[j].developer != listings[i].developer {
                    warnings[i].push(format!(
                        "name {:?} is also used by {}/{}",
                        listings[j].current.name(),
                        npub(&listings[j].developer),
                        listings[j].app_id
                    ));
                }
            }
        }
    }
    for (l, w) in listings.iter_mut().zip(warnings) {
        l.warnings = w;
    }
}

/// A key in bech32 (`npub1...`), falling back to hex.
pub fn npub(key: &PublicKey) -> String {
    key.to_bech32().unwrap_or_else(|_| key.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announcement::{
        endorsement_builder, successor_builder, tests::announce, tests::content,
        AnnouncementContent,
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
                    EventRejection::Forged(_),
                    EventRejection::MalformedContent(_)
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
        assert_eq!(batch.rejections(), one_by_one.rejections());
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
        let report = crate::announcement::report_builder(
            &dev.public_key(),
            "org.example.b",
            Report::Spam,
            "",
        )
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
}
