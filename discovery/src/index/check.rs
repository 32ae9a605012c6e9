//! What one event means on its own: verified and parsed into a [`Checked`] without
//! looking at any other event, so a batch can be checked on every core before the
//! [`Index`](super::Index) merges it in order.

use std::collections::BTreeSet;

use nostr_sdk::prelude::*;

use crate::announcement::{
    parse_market_event, EventRejection, MarketEvent, APP_PREFIX, MARKET_KIND, RELEASE_PREFIX,
};

/// A NIP-56 report as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReportRecord {
    pub(super) id: EventId,
    pub(super) reporter: PublicKey,
    pub(super) created_at: Timestamp,
    pub(super) reason: String,
    pub(super) developers: Vec<PublicKey>,
    pub(super) events: Vec<EventId>,
    pub(super) apps: Vec<(PublicKey, String)>,
}

/// A NIP-09 deletion request.
#[derive(Debug, Clone)]
pub(super) struct Deletion {
    pub(super) created_at: Timestamp,
    pub(super) ids: Vec<EventId>,
    pub(super) identifiers: Vec<String>,
}
/// What one event means, decided without looking at anything else.
#[derive(Debug)]
pub(super) enum Checked {
    Market(MarketEvent),
    Deletion(Deletion),
    Report(ReportRecord),
    Contacts(BTreeSet<PublicKey>),
    /// Not a marketplace event (another kind, or someone else's kind 30078 data).
    Ignored,
    Rejected(EventRejection),
}

/// Verifies and parses one event. Pure, so batches run in parallel.
pub(super) fn check(event: &Event) -> Checked {
    let verified = |event: &Event| {
        event
            .verify()
            .map_err(|source| EventRejection::Forged { source })
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
    if let Some(id) = d.strip_prefix(APP_PREFIX) {
        return Some(id.to_string());
    }
    let rest = d.strip_prefix(RELEASE_PREFIX)?;
    rest.rsplit_once('@').map(|(id, _)| id.to_string())
}
