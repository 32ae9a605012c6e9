//! # archy-discovery
//!
//! The Nostr marketplace: third-party developers announce apps as signed addressable
//! events; nodes fetch them from several relays, merge them, and score each app with
//! the operator's own web of trust.
//!
//! - [`announcement`]: the event formats, building and strict parsing;
//! - [`index`]: pure ingestion and merge (dedupe, deletions, expiry, reports, relay
//!   counts, collisions);
//! - [`trust`]: the local, explainable trust score and tiers;
//! - [`client`]: talking to relays (parallel fetch with timeouts, publish per relay)
//!   and the one-call [`client::sync_market`] a node uses.
//!
//! The protocol is specified in `docs/marketplace-protocol.md`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod announcement;
pub mod client;
pub mod index;
pub mod market;
mod transport;
pub mod trust;

/// An error and every `source` under it, as `outer: inner: innermost`: for logs, the
/// CLI's JSON and anything else that shows a typed error as one line of text.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
