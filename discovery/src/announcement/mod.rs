//! The marketplace's event formats: app and release announcements, endorsements and
//! developer key successor statements, all addressable kind 30078 events.
//!
//! This module holds the types, tags and limits; `build.rs` makes the unsigned events
//! and `parse.rs` reads them back, side by side so the format is defined once (the
//! functions are re-exported here). Parsing is strict: an event is either a
//! well-formed Archy event whose signature, tags and content agree, or it is refused
//! with an [`EventRejection`] saying why. The manifest inside an announcement goes
//! through the very validator the catalog uses ([`archy_catalog::manifest`]), with
//! `container.image` required to be a content hash.
//! The format is specified in `docs/marketplace-protocol.md`.

use archy_catalog::{manifest::ManifestError, AppManifest, ImageRef};
use nostr_sdk::prelude::*;
use serde::{Deserialize, Serialize};

mod build;
mod parse;
#[cfg(test)]
pub(crate) mod tests;

pub use build::{
    announcement_builders, app_identifier, endorsement_builder, release_identifier, report_builder,
    retraction_builder, successor_builder,
};
pub use parse::{check_author, is_endpoint_id, parse_announcement, parse_market_event};

/// Kind of every Archy marketplace event (NIP-78 application-specific data).
pub const MARKET_KIND: Kind = Kind::ApplicationSpecificData;
/// `t` tag every Archy event carries, so relays can be asked for Archy events only.
pub const MARKER_TAG: &str = "archy";
/// `d` prefix of an app announcement: `archy:app:<app_id>`.
pub const APP_PREFIX: &str = "archy:app:";
/// `d` prefix of a release announcement: `archy:release:<app_id>@<version>`.
pub const RELEASE_PREFIX: &str = "archy:release:";
/// `d` prefix of an endorsement: `archy:endorse:<developer hex>/<app_id>`.
pub const ENDORSE_PREFIX: &str = "archy:endorse:";
/// `d` prefix of a key successor statement: `archy:successor:<new key hex>`.
pub const SUCCESSOR_PREFIX: &str = "archy:successor:";
/// Every Archy `d` tag starts with this; other kind 30078 events are someone else's.
pub const ARCHY_D_PREFIX: &str = "archy:";
/// Largest announcement content accepted, in bytes.
pub const MAX_CONTENT_BYTES: usize = 300 * 1024;
/// Most provider endpoint ids one announcement may list.
pub const MAX_PROVIDERS: usize = 32;

/// What an announcement's content carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementContent {
    /// The validated manifest; `container.image` is the image's `blake3:` hash.
    pub manifest: AppManifest,
    /// The image archive the manifest names.
    pub image: ImageRef,
    /// iroh endpoint ids (64 lowercase hex digits) that serve the image.
    #[serde(default)]
    pub providers: Vec<String>,
}

/// Whether an announcement describes the app (its current release) or one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    App,
    Release,
}

/// A parsed, verified announcement.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    pub event_id: EventId,
    /// The developer: the event's author.
    pub developer: PublicKey,
    pub scope: Scope,
    /// The `d` tag.
    pub identifier: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// `t` tags other than the marker, lowercased.
    pub categories: Vec<String>,
    pub content: AnnouncementContent,
}

impl Announcement {
    pub fn app_id(&self) -> &str {
        &self.content.manifest.id
    }
    pub fn version(&self) -> &str {
        &self.content.manifest.version
    }
    pub fn name(&self) -> &str {
        &self.content.manifest.name
    }
}

/// A trusted-key endorsement of one app, identified by (developer, app id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endorsement {
    pub event_id: EventId,
    pub endorser: PublicKey,
    pub developer: PublicKey,
    pub app_id: String,
    pub created_at: Timestamp,
}

/// The old key's statement that `successor` now speaks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessorStatement {
    pub event_id: EventId,
    pub old_key: PublicKey,
    pub successor: PublicKey,
    pub created_at: Timestamp,
}

/// Any Archy marketplace event, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum MarketEvent {
    Announcement(Box<Announcement>),
    Endorsement(Endorsement),
    Successor(SuccessorStatement),
}

/// Why an event was refused. Variants that wrap a parser's error keep it as their
/// `source`; [`crate::error_chain`] writes the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum EventRejection {
    #[error("forged event: its id or signature does not match its content")]
    Forged {
        #[source]
        source: nostr_sdk::nostr::event::Error,
    },
    #[error("wrong kind {found}: Archy marketplace events are kind {}", MARKET_KIND.as_u16())]
    WrongKind { found: u16 },
    #[error("not an Archy event (no `d` tag starting with `archy:`)")]
    NotArchy,
    #[error("unknown Archy event type `d`={d:?}")]
    UnknownType { d: String },
    #[error("`d`={d:?} is an Archy event but not an app or release announcement")]
    NotAnAnnouncement { d: String },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("tag `{tag}` is {found:?} but the content says {expected:?}")]
    TagMismatch {
        tag: &'static str,
        expected: String,
        found: String,
    },
    #[error("content is {bytes} bytes; at most {max} allowed")]
    ContentTooLarge { bytes: usize, max: usize },
    #[error("malformed content: not an announcement's JSON")]
    MalformedContent {
        #[source]
        source: serde_json::Error,
    },
    #[error("{field} {value:?} is not a public key")]
    BadKey {
        field: &'static str,
        value: String,
        #[source]
        source: nostr_sdk::nostr::key::Error,
    },
    #[error("a key cannot name itself as its successor")]
    SelfSuccession,
    #[error("{count} providers; at most {max} allowed")]
    TooManyProviders { count: usize, max: usize },
    #[error("provider {value:?} is not an iroh endpoint id (64 lowercase hex digits)")]
    BadProvider { value: String },
    #[error("cannot encode the announcement content")]
    Encode {
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    InvalidManifest(ManifestError),
}
