//! What the merged view hands out: one [`AppListing`] per (developer, app id), the
//! key rotations ([`Successions`]) that fold an old key's listing into its successor's,
//! and the warnings when two developers use one app id or one name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use nostr_sdk::prelude::*;
use serde::Serialize;

use super::MAX_SUCCESSION_DEPTH;
use crate::announcement::Announcement;

/// One report against one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppReport {
    pub event_id: String,
    pub reporter: PublicKey,
    /// The NIP-56 report type (`malware`, `spam`, ...; `other` if none given).
    pub reason: String,
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

/// Folds an old key's listing into its successor's listing of the same app id.
pub(super) fn merge_rotations(listings: &mut Vec<AppListing>, successions: &Successions) {
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
pub(super) fn flag_collisions(listings: &mut [AppListing]) {
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
