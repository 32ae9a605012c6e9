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

use crate::announcement::{
    Announcement, Endorsement, EventRejection, MarketEvent, Scope, SuccessorStatement,
};

mod check;
mod listing;
#[cfg(test)]
mod tests;

use check::{check, Checked, Deletion, ReportRecord};
use listing::{flag_collisions, merge_rotations};
pub use listing::{npub, AppListing, AppReport, Successions};

/// Longest chain of successor statements followed from one key.
pub const MAX_SUCCESSION_DEPTH: usize = 8;

/// An event that was refused, where it came from and why.
#[derive(Debug)]
pub struct Rejection {
    pub event_id: EventId,
    pub author: PublicKey,
    pub relay: String,
    pub reason: EventRejection,
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
    /// Relays whose first refused event has been logged.
    logged_relays: HashSet<String>,
}

/// NIP-01 order for replaceable events: newer wins, ties go to the lower id.
fn newer(a_time: Timestamp, a_id: &EventId, b_time: Timestamp, b_id: &EventId) -> bool {
    a_time > b_time || (a_time == b_time && a_id < b_id)
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one event as `relay` delivered it. Refused events are recorded with their
    /// reason (and the first from each relay logged); events of no interest are ignored.
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
                // A relay can send thousands of bad events: the first is logged, the
                // rest are only recorded (`rejections`, which the CLI counts).
                let reason_text = crate::error_chain(&reason);
                match !self.logged_relays.insert(relay.to_string()) {
                    false => {
                        tracing::warn!(event = %event.id, author = %event.pubkey, relay, reason = %reason_text, "refused marketplace event (further refusals from this relay are counted, not logged)")
                    }
                    true => {
                        tracing::debug!(event = %event.id, author = %event.pubkey, relay, reason = %reason_text, "refused marketplace event")
                    }
                }
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
