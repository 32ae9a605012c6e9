//! Strict parsing of Archy marketplace events: signature, `d` tag, the other tags and
//! the content must agree, or the event is refused with an [`EventRejection`] saying
//! which part is wrong.

use archy_catalog::{manifest::ImageField, AppManifest};
use nostr_sdk::prelude::*;

use super::{
    app_identifier, release_identifier, Announcement, AnnouncementContent, Endorsement,
    EventRejection, MarketEvent, Scope, SuccessorStatement, APP_PREFIX, ARCHY_D_PREFIX,
    ENDORSE_PREFIX, MARKER_TAG, MARKET_KIND, MAX_CONTENT_BYTES, MAX_PROVIDERS, RELEASE_PREFIX,
    SUCCESSOR_PREFIX,
};

/// Parses and verifies any Archy marketplace event.
///
/// `Err(EventRejection::NotArchy)` means "someone else's kind 30078 event": callers
/// ignore it rather than report it.
pub fn parse_market_event(event: &Event) -> Result<MarketEvent, EventRejection> {
    if event.kind != MARKET_KIND {
        return Err(EventRejection::WrongKind {
            found: event.kind.as_u16(),
        });
    }
    let d = event
        .tags
        .identifier()
        .filter(|d| d.starts_with(ARCHY_D_PREFIX))
        .ok_or(EventRejection::NotArchy)?;
    event
        .verify()
        .map_err(|source| EventRejection::Forged { source })?;
    if d.starts_with(APP_PREFIX) || d.starts_with(RELEASE_PREFIX) {
        parse_announcement_body(event, d).map(|a| MarketEvent::Announcement(Box::new(a)))
    } else if let Some(rest) = d.strip_prefix(ENDORSE_PREFIX) {
        let (dev, app_id) = rest
            .split_once('/')
            .ok_or_else(|| EventRejection::UnknownType { d: d.to_string() })?;
        let developer = PublicKey::from_hex(dev).map_err(|source| EventRejection::BadKey {
            field: "endorsed developer key",
            value: dev.to_string(),
            source,
        })?;
        Ok(MarketEvent::Endorsement(Endorsement {
            event_id: event.id,
            endorser: event.pubkey,
            developer,
            app_id: app_id.to_string(),
            created_at: event.created_at,
        }))
    } else if let Some(new_hex) = d.strip_prefix(SUCCESSOR_PREFIX) {
        let successor = PublicKey::from_hex(new_hex).map_err(|source| EventRejection::BadKey {
            field: "successor key",
            value: new_hex.to_string(),
            source,
        })?;
        if successor == event.pubkey {
            return Err(EventRejection::SelfSuccession);
        }
        match event.tags.public_keys().next() {
            Some(p) if *p == successor => {}
            Some(p) => {
                return Err(EventRejection::TagMismatch {
                    tag: "p",
                    expected: successor.to_hex(),
                    found: p.to_hex(),
                })
            }
            None => return Err(EventRejection::MissingTag("p")),
        }
        Ok(MarketEvent::Successor(SuccessorStatement {
            event_id: event.id,
            old_key: event.pubkey,
            successor,
            created_at: event.created_at,
        }))
    } else {
        Err(EventRejection::UnknownType { d: d.to_string() })
    }
}

/// Parses and verifies an announcement; anything else is refused.
pub fn parse_announcement(event: &Event) -> Result<Announcement, EventRejection> {
    match parse_market_event(event)? {
        MarketEvent::Announcement(a) => Ok(*a),
        _ => Err(EventRejection::NotAnAnnouncement {
            d: event.tags.identifier().unwrap_or_default().to_string(),
        }),
    }
}

fn single_tag<'a>(event: &'a Event, name: &'static str) -> Result<&'a str, EventRejection> {
    event
        .tags
        .find(TagKind::custom(name))
        .and_then(|t| t.content())
        .ok_or(EventRejection::MissingTag(name))
}

pub(super) fn expect_tag(
    tag: &'static str,
    found: &str,
    expected: &str,
) -> Result<(), EventRejection> {
    if found == expected {
        Ok(())
    } else {
        Err(EventRejection::TagMismatch {
            tag,
            expected: expected.to_string(),
            found: found.to_string(),
        })
    }
}

fn parse_announcement_body(event: &Event, d: &str) -> Result<Announcement, EventRejection> {
    if event.content.len() > MAX_CONTENT_BYTES {
        return Err(EventRejection::ContentTooLarge {
            bytes: event.content.len(),
            max: MAX_CONTENT_BYTES,
        });
    }
    let content: AnnouncementContent = serde_json::from_str(&event.content)
        .map_err(|source| EventRejection::MalformedContent { source })?;
    let m = &content.manifest;
    m.validate_with(ImageField::Hash).map_err(|e| {
        EventRejection::InvalidManifest(e.with_source(format!("announcement {}", event.id)))
    })?;
    expect_tag(
        "manifest container.image",
        &m.container.image,
        &content.image.hash.to_string(),
    )?;
    let (scope, expected_d) = if d.starts_with(APP_PREFIX) {
        (Scope::App, app_identifier(&m.id))
    } else {
        (Scope::Release, release_identifier(&m.id, &m.version))
    };
    expect_tag("d", d, &expected_d)?;
    check_author(m, &event.pubkey)?;
    expect_tag("name", single_tag(event, "name")?, &m.name)?;
    expect_tag("version", single_tag(event, "version")?, &m.version)?;
    check_providers(&content.providers)?;
    let categories: Vec<String> = event
        .tags
        .hashtags()
        .map(str::to_lowercase)
        .filter(|t| t != MARKER_TAG)
        .collect();
    if let Some(cat) = &m.category {
        if !categories.contains(&cat.to_lowercase()) {
            return Err(EventRejection::TagMismatch {
                tag: "t",
                expected: cat.to_lowercase(),
                found: categories.join(","),
            });
        }
    }
    Ok(Announcement {
        event_id: event.id,
        developer: event.pubkey,
        scope,
        identifier: d.to_string(),
        created_at: event.created_at,
        expires_at: event.tags.expiration().copied(),
        categories,
        content,
    })
}

/// When the manifest names its author's Nostr key, the signer must be that key.
pub fn check_author(manifest: &AppManifest, signer: &PublicKey) -> Result<(), EventRejection> {
    let Some(declared) = manifest
        .author
        .as_ref()
        .and_then(|a| a.nostr_pubkey.as_deref())
    else {
        return Ok(());
    };
    if PublicKey::parse(declared).is_ok_and(|k| k == *signer) {
        Ok(())
    } else {
        Err(EventRejection::TagMismatch {
            tag: "pubkey (manifest app.author.nostr_pubkey)",
            expected: declared.to_string(),
            found: signer.to_hex(),
        })
    }
}

/// At most [`MAX_PROVIDERS`] providers, each an iroh endpoint id.
pub(super) fn check_providers(providers: &[String]) -> Result<(), EventRejection> {
    if providers.len() > MAX_PROVIDERS {
        return Err(EventRejection::TooManyProviders {
            count: providers.len(),
            max: MAX_PROVIDERS,
        });
    }
    match providers.iter().find(|p| !is_endpoint_id(p)) {
        Some(bad) => Err(EventRejection::BadProvider { value: bad.clone() }),
        None => Ok(()),
    }
}

/// Whether `s` is an iroh endpoint id as Archy writes it: 64 lowercase hex digits.
pub fn is_endpoint_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
