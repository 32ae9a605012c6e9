//! Building the unsigned marketplace events a developer or operator signs: app and
//! release announcements, endorsements, successor statements, retractions and reports.
//! Announcements are validated first, so nothing is built that nodes would refuse.

use archy_catalog::manifest::ImageField;
use nostr_sdk::prelude::*;

use super::{
    parse::{check_providers, expect_tag},
    AnnouncementContent, EventRejection, APP_PREFIX, ENDORSE_PREFIX, MARKER_TAG, MARKET_KIND,
    RELEASE_PREFIX, SUCCESSOR_PREFIX,
};

/// The `d` tag of an app announcement.
pub fn app_identifier(app_id: &str) -> String {
    format!("{APP_PREFIX}{app_id}")
}

/// The `d` tag of a release announcement.
pub fn release_identifier(app_id: &str, version: &str) -> String {
    format!("{RELEASE_PREFIX}{app_id}@{version}")
}

/// The unsigned app and release announcements for `content` (in that order).
///
/// The manifest is validated (with `container.image` a content hash equal to the
/// image's) before anything is built, so a developer cannot publish what nodes refuse.
pub fn announcement_builders(
    content: &AnnouncementContent,
    expiration: Option<Timestamp>,
) -> Result<[EventBuilder; 2], EventRejection> {
    let m = &content.manifest;
    m.validate_with(ImageField::Hash)
        .map_err(EventRejection::InvalidManifest)?;
    expect_tag(
        "manifest container.image",
        &m.container.image,
        &content.image.hash.to_string(),
    )?;
    check_providers(&content.providers)?;
    let json =
        serde_json::to_string(content).map_err(|source| EventRejection::Encode { source })?;
    let build = |d: String| {
        let mut tags = vec![
            Tag::identifier(d),
            Tag::hashtag(MARKER_TAG),
            Tag::custom(TagKind::custom("name"), [m.name.clone()]),
            Tag::custom(TagKind::custom("version"), [m.version.clone()]),
            Tag::alt(format!("Archy app announcement: {} {}", m.name, m.version)),
        ];
        if let Some(cat) = &m.category {
            tags.push(Tag::hashtag(cat.to_lowercase()));
        }
        if let Some(exp) = expiration {
            tags.push(Tag::expiration(exp));
        }
        EventBuilder::new(MARKET_KIND, json.clone()).tags(tags)
    };
    Ok([
        build(app_identifier(&m.id)),
        build(release_identifier(&m.id, &m.version)),
    ])
}

/// An endorsement of (developer, app id) by whoever signs it.
pub fn endorsement_builder(developer: &PublicKey, app_id: &str) -> EventBuilder {
    EventBuilder::new(MARKET_KIND, "").tags([
        Tag::identifier(format!("{ENDORSE_PREFIX}{}/{app_id}", developer.to_hex())),
        Tag::hashtag(MARKER_TAG),
        Tag::public_key(*developer),
    ])
}

/// A successor statement naming `successor`; the old key signs it.
pub fn successor_builder(successor: &PublicKey) -> EventBuilder {
    EventBuilder::new(MARKET_KIND, "").tags([
        Tag::identifier(format!("{SUCCESSOR_PREFIX}{}", successor.to_hex())),
        Tag::hashtag(MARKER_TAG),
        Tag::public_key(*successor),
    ])
}

/// A NIP-09 deletion of the signer's own announcements: each `d` in `identifiers` as
/// an `a` coordinate (every version up to now) and each of `ids` as an `e` tag (for
/// relays that delete by id only).
pub fn retraction_builder(
    developer: &PublicKey,
    identifiers: &[String],
    ids: &[EventId],
) -> EventBuilder {
    let mut request = EventDeletionRequest::new().ids(ids.iter().copied());
    for d in identifiers {
        request =
            request.coordinate(Coordinate::new(MARKET_KIND, *developer).identifier(d.clone()));
    }
    EventBuilder::delete(request.reason("retracted by the developer"))
}

/// A NIP-56 report of one app (developer, app id), with the report type on the `p` tag
/// and the app as an `a` coordinate.
pub fn report_builder(
    developer: &PublicKey,
    app_id: &str,
    report: Report,
    text: &str,
) -> EventBuilder {
    EventBuilder::report(
        [
            Tag::public_key_report(*developer, report),
            Tag::coordinate(
                Coordinate::new(MARKET_KIND, *developer).identifier(app_identifier(app_id)),
                None,
            ),
        ],
        text,
    )
}
