//! The marketplace's event formats: app and release announcements, endorsements and
//! developer key successor statements, all addressable kind 30078 events.
//!
//! Building and parsing live side by side so the format is defined once. Parsing is
//! strict: an event is either a well-formed Archy event whose signature, tags and
//! content agree, or it is refused with an [`EventRejection`] saying why. The manifest
//! inside an announcement goes through the very validator the catalog uses
//! ([`archy_catalog::manifest`]), with `container.image` required to be a content hash.
//! The format is specified in `docs/marketplace-protocol.md`.

use archy_catalog::{
    manifest::{ImageField, ManifestError},
    AppManifest, ImageRef,
};
use nostr_sdk::prelude::*;
use serde::{Deserialize, Serialize};

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

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventRejection {
    #[error("forged event: {0}")]
    Forged(String),
    #[error("wrong kind {found}: Archy marketplace events are kind {}", MARKET_KIND.as_u16())]
    WrongKind { found: u16 },
    #[error("not an Archy event (no `d` tag starting with `archy:`)")]
    NotArchy,
    #[error("unknown Archy event type `d`={0:?}")]
    UnknownType(String),
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("tag `{tag}` is {found:?} but the content says {expected:?}")]
    TagMismatch {
        tag: &'static str,
        expected: String,
        found: String,
    },
    #[error("malformed content: {0}")]
    MalformedContent(String),
    #[error("{0}")]
    InvalidManifest(ManifestError),
}

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
        .map_err(|e| EventRejection::Forged(e.to_string()))?;
    if d.starts_with(APP_PREFIX) || d.starts_with(RELEASE_PREFIX) {
        parse_announcement_body(event, d).map(|a| MarketEvent::Announcement(Box::new(a)))
    } else if let Some(rest) = d.strip_prefix(ENDORSE_PREFIX) {
        let (dev, app_id) = rest
            .split_once('/')
            .ok_or_else(|| EventRejection::UnknownType(d.to_string()))?;
        let developer = PublicKey::from_hex(dev)
            .map_err(|e| EventRejection::MalformedContent(format!("endorsed key {dev:?}: {e}")))?;
        Ok(MarketEvent::Endorsement(Endorsement {
            event_id: event.id,
            endorser: event.pubkey,
            developer,
            app_id: app_id.to_string(),
            created_at: event.created_at,
        }))
    } else if let Some(new_hex) = d.strip_prefix(SUCCESSOR_PREFIX) {
        let successor = PublicKey::from_hex(new_hex).map_err(|e| {
            EventRejection::MalformedContent(format!("successor key {new_hex:?}: {e}"))
        })?;
        if successor == event.pubkey {
            return Err(EventRejection::MalformedContent(
                "a key cannot name itself as its successor".into(),
            ));
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
        Err(EventRejection::UnknownType(d.to_string()))
    }
}

/// Parses and verifies an announcement; anything else is refused.
pub fn parse_announcement(event: &Event) -> Result<Announcement, EventRejection> {
    match parse_market_event(event)? {
        MarketEvent::Announcement(a) => Ok(*a),
        _ => Err(EventRejection::UnknownType(
            event.tags.identifier().unwrap_or_default().to_string(),
        )),
    }
}

fn single_tag<'a>(event: &'a Event, name: &'static str) -> Result<&'a str, EventRejection> {
    event
        .tags
        .find(TagKind::custom(name))
        .and_then(|t| t.content())
        .ok_or(EventRejection::MissingTag(name))
}

fn expect_tag(tag: &'static str, found: &str, expected: &str) -> Result<(), EventRejection> {
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
        return Err(EventRejection::MalformedContent(format!(
            "{} bytes; at most {MAX_CONTENT_BYTES} allowed",
            event.content.len()
        )));
    }
    let content: AnnouncementContent = serde_json::from_str(&event.content)
        .map_err(|e| EventRejection::MalformedContent(e.to_string()))?;
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
    if content.providers.len() > MAX_PROVIDERS {
        return Err(EventRejection::MalformedContent(format!(
            "{} providers; at most {MAX_PROVIDERS} allowed",
            content.providers.len()
        )));
    }
    if let Some(bad) = content.providers.iter().find(|p| !is_endpoint_id(p)) {
        return Err(EventRejection::MalformedContent(format!(
            "provider {bad:?} is not an iroh endpoint id (64 lowercase hex digits)"
        )));
    }
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

/// Whether `s` is an iroh endpoint id as Archy writes it: 64 lowercase hex digits.
pub fn is_endpoint_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

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
    if let Some(bad) = content.providers.iter().find(|p| !is_endpoint_id(p)) {
        return Err(EventRejection::MalformedContent(format!(
            "provider {bad:?} is not an iroh endpoint id (64 lowercase hex digits)"
        )));
    }
    let json = serde_json::to_string(content)
        .map_err(|e| EventRejection::MalformedContent(e.to_string()))?;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use archy_catalog::{manifest::ManifestFormat, oci::ArchiveFormat, ContentHash};

    pub fn content(id: &str, name: &str, version: &str) -> AnnouncementContent {
        let hash = ContentHash::of(format!("{id}{version}").as_bytes());
        let text = format!(
            r#"
app:
  id: {id}
  name: {name}
  version: {version}
  category: tools
  description: {{ short: "A test app" }}
  container:
    image: "{hash}"
    ports: [{{ host: 18080, container: 8080 }}]
"#
        );
        let manifest = archy_catalog::manifest::parse_and_validate(&text, ManifestFormat::Yaml)
            .expect("test manifest is valid");
        AnnouncementContent {
            manifest,
            image: ImageRef {
                hash,
                size: 1234,
                config_digest: format!("sha256:{}", "ab".repeat(32)),
                format: ArchiveFormat::OciArchive,
            },
            providers: vec!["0f".repeat(32)],
        }
    }

    pub fn announce(keys: &Keys, c: &AnnouncementContent) -> [Event; 2] {
        let [a, r] = announcement_builders(c, None).expect("valid content");
        [
            a.sign_with_keys(keys).expect("sign"),
            r.sign_with_keys(keys).expect("sign"),
        ]
    }

    /// Re-signs a raw event with arbitrary tags/content (the way an attacker or a buggy
    /// client would), bypassing [`announcement_builders`].
    fn raw(keys: &Keys, d: &str, tags: Vec<Tag>, content: &str) -> Event {
        let mut all = vec![Tag::identifier(d), Tag::hashtag(MARKER_TAG)];
        all.extend(tags);
        EventBuilder::new(MARKET_KIND, content)
            .tags(all)
            .sign_with_keys(keys)
            .expect("sign")
    }

    fn name_version(n: &str, v: &str) -> Vec<Tag> {
        vec![
            Tag::custom(TagKind::custom("name"), [n]),
            Tag::custom(TagKind::custom("version"), [v]),
            Tag::hashtag("tools"),
        ]
    }

    #[test]
    fn built_announcements_parse_back() {
        let keys = Keys::generate();
        let c = content("org.example.hello", "Hello", "1.2.0");
        let [app, rel] = announce(&keys, &c);
        let a = parse_announcement(&app).unwrap();
        assert_eq!(a.scope, Scope::App);
        assert_eq!(a.identifier, "archy:app:org.example.hello");
        assert_eq!(a.developer, keys.public_key());
        assert_eq!(a.categories, vec!["tools".to_string()]);
        assert_eq!(a.content, c);
        let r = parse_announcement(&rel).unwrap();
        assert_eq!(r.scope, Scope::Release);
        assert_eq!(r.identifier, "archy:release:org.example.hello@1.2.0");

        // A manifest naming its author's key is accepted when the signer is that key.
        let mut own = c.clone();
        own.manifest.author = Some(archy_catalog::manifest::Author {
            name: "Me".into(),
            nostr_pubkey: Some(keys.public_key().to_bech32().unwrap()),
        });
        let [app, _] = announce(&keys, &own);
        assert!(parse_announcement(&app).is_ok());
    }

    #[test]
    fn refusals_name_their_reason() {
        let keys = Keys::generate();
        let c = content("org.example.hello", "Hello", "1.2.0");
        let good = serde_json::to_string(&c).unwrap();
        let nv = || name_version("Hello", "1.2.0");

        let mut bad_manifest = c.clone();
        bad_manifest.manifest.container.ports[0].host = 22;
        let mut path_image = c.clone();
        path_image.manifest.container.image = "./hello.tar".into();
        let mut bad_provider = c.clone();
        bad_provider.providers = vec!["not-an-id".into()];
        let mut other_author = c.clone();
        other_author.manifest.author = Some(archy_catalog::manifest::Author {
            name: "Someone else".into(),
            nostr_pubkey: Some(Keys::generate().public_key().to_bech32().unwrap()),
        });

        type Case = (&'static str, Event, fn(&EventRejection) -> bool);
        let cases: Vec<Case> = vec![
            (
                "content is not JSON",
                raw(&keys, "archy:app:org.example.hello", nv(), "{not json"),
                |e| matches!(e, EventRejection::MalformedContent(_)),
            ),
            (
                "unknown content field",
                raw(
                    &keys,
                    "archy:app:org.example.hello",
                    nv(),
                    &good.replacen('{', r#"{"extra":1,"#, 1),
                ),
                |e| matches!(e, EventRejection::MalformedContent(_)),
            ),
            (
                "manifest breaks policy",
                raw(
                    &keys,
                    "archy:app:org.example.hello",
                    nv(),
                    &serde_json::to_string(&bad_manifest).unwrap(),
                ),
                |e| matches!(e, EventRejection::InvalidManifest(m) if m.errors.iter().any(|f| f.path.contains("ports"))),
            ),
            (
                "image is a path, not a hash",
                raw(
                    &keys,
                    "archy:app:org.example.hello",
                    nv(),
                    &serde_json::to_string(&path_image).unwrap(),
                ),
                |e| matches!(e, EventRejection::InvalidManifest(_)),
            ),
            (
                "d names another app",
                raw(&keys, "archy:app:org.example.other", nv(), &good),
                |e| matches!(e, EventRejection::TagMismatch { tag: "d", .. }),
            ),
            (
                "release d names another version",
                raw(&keys, "archy:release:org.example.hello@9.9.9", nv(), &good),
                |e| matches!(e, EventRejection::TagMismatch { tag: "d", .. }),
            ),
            (
                "name tag disagrees",
                raw(
                    &keys,
                    "archy:app:org.example.hello",
                    name_version("Other", "1.2.0"),
                    &good,
                ),
                |e| matches!(e, EventRejection::TagMismatch { tag: "name", .. }),
            ),
            (
                "no version tag",
                raw(
                    &keys,
                    "archy:app:org.example.hello",
                    vec![Tag::custom(TagKind::custom("name"), ["Hello"])],
                    &good,
                ),
                |e| matches!(e, EventRejection::MissingTag("version")),
            ),
            (
                "category tag missing",
                raw(
                    &keys,
                    "archy:app:org.example.hello",
                    name_version("Hello", "1.2.0")[..2].to_vec(),
                    &good,
                ),
                |e| matches!(e, EventRejection::TagMismatch { tag: "t", .. }),
            ),
            (
                "provider is not an endpoint id",
                raw(
                    &keys,
                    "archy:app:org.example.hello",
                    nv(),
                    &serde_json::to_string(&bad_provider).unwrap(),
                ),
                |e| matches!(e, EventRejection::MalformedContent(m) if m.contains("provider")),
            ),
            (
                "manifest names another author key",
                raw(
                    &keys,
                    "archy:app:org.example.hello",
                    nv(),
                    &serde_json::to_string(&other_author).unwrap(),
                ),
                |e| matches!(e, EventRejection::TagMismatch { tag, .. } if tag.contains("nostr_pubkey")),
            ),
            (
                "unknown archy type",
                raw(&keys, "archy:whatever", vec![], ""),
                |e| matches!(e, EventRejection::UnknownType(_)),
            ),
            (
                "someone else's app data",
                raw(&keys, "com.other.settings", vec![], "{}"),
                |e| matches!(e, EventRejection::NotArchy),
            ),
        ];
        for (what, event, check) in cases {
            let err = parse_market_event(&event).expect_err(what);
            assert!(check(&err), "{what}: unexpected {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn forged_signature_and_tampered_content_are_refused() {
        let keys = Keys::generate();
        let other = Keys::generate();
        let [app, _] = announce(&keys, &content("org.example.hello", "Hello", "1.0.0"));
        // Claim another author for a valid event.
        let mut json: serde_json::Value = serde_json::to_value(&app).unwrap();
        json["pubkey"] = other.public_key().to_hex().into();
        let forged: Event = serde_json::from_value(json.clone()).unwrap();
        assert!(matches!(
            parse_market_event(&forged),
            Err(EventRejection::Forged(_))
        ));
        // Change the content under the signature.
        json["pubkey"] = keys.public_key().to_hex().into();
        json["content"] = app.content.replace("1234", "9999").into();
        let tampered: Event = serde_json::from_value(json).unwrap();
        assert!(matches!(
            parse_market_event(&tampered),
            Err(EventRejection::Forged(_))
        ));
    }

    #[test]
    fn wrong_kind_is_refused() {
        let keys = Keys::generate();
        let note = EventBuilder::text_note("hi").sign_with_keys(&keys).unwrap();
        assert_eq!(
            parse_market_event(&note),
            Err(EventRejection::WrongKind { found: 1 })
        );
    }

    #[test]
    fn endorsement_and_successor_round_trip() {
        let dev = Keys::generate();
        let fan = Keys::generate();
        let e = endorsement_builder(&dev.public_key(), "org.example.hello")
            .sign_with_keys(&fan)
            .unwrap();
        match parse_market_event(&e).unwrap() {
            MarketEvent::Endorsement(en) => {
                assert_eq!(en.endorser, fan.public_key());
                assert_eq!(en.developer, dev.public_key());
                assert_eq!(en.app_id, "org.example.hello");
            }
            other => panic!("{other:?}"),
        }
        let new = Keys::generate();
        let s = successor_builder(&new.public_key())
            .sign_with_keys(&dev)
            .unwrap();
        match parse_market_event(&s).unwrap() {
            MarketEvent::Successor(st) => {
                assert_eq!(st.old_key, dev.public_key());
                assert_eq!(st.successor, new.public_key());
            }
            other => panic!("{other:?}"),
        }
        let to_self = successor_builder(&dev.public_key())
            .sign_with_keys(&dev)
            .unwrap();
        assert!(matches!(
            parse_market_event(&to_self),
            Err(EventRejection::MalformedContent(_))
        ));
    }
}
