//! Tests of the event formats: builders round-trip, every refusal names its reason.

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
            web_seeds: Vec::new(),
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
            |e| matches!(e, EventRejection::MalformedContent { .. }),
        ),
        (
            "unknown content field",
            raw(
                &keys,
                "archy:app:org.example.hello",
                nv(),
                &good.replacen('{', r#"{"extra":1,"#, 1),
            ),
            |e| matches!(e, EventRejection::MalformedContent { .. }),
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
            |e| matches!(e, EventRejection::BadProvider { value } if value == "not-an-id"),
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
            |e| matches!(e, EventRejection::UnknownType { .. }),
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
        Err(EventRejection::Forged { .. })
    ));
    // Change the content under the signature.
    json["pubkey"] = keys.public_key().to_hex().into();
    json["content"] = app.content.replace("1234", "9999").into();
    let tampered: Event = serde_json::from_value(json).unwrap();
    assert!(matches!(
        parse_market_event(&tampered),
        Err(EventRejection::Forged { .. })
    ));
}

#[test]
fn wrong_kind_is_refused() {
    let keys = Keys::generate();
    let note = EventBuilder::text_note("hi").sign_with_keys(&keys).unwrap();
    assert!(matches!(
        parse_market_event(&note),
        Err(EventRejection::WrongKind { found: 1 })
    ));
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
        Err(EventRejection::SelfSuccession)
    ));
}
