//! One test per row of the threat-model table in `docs/catalog-format.md`.
//!
//! Every test builds real signed documents with real keys and feeds their bytes to
//! [`TrustedState`], exactly as a node or `catalog-signer verify` does; the clock is
//! passed in, so expiry is tested without waiting.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use archy_catalog::{
    documents::{
        AppEntry, Catalog, Envelope, ImageRef, Release, Role, RoleKeys, Roles, Root, Timestamp,
        SPEC_VERSION,
    },
    keys::{KeyMap, SecretKey},
    manifest::{self, ManifestFormat},
    oci::ArchiveFormat,
    publisher::sign,
    ContentHash, Limits, TrustError, TrustedState,
};
use chrono::{DateTime, Duration, Utc};

fn now() -> DateTime<Utc> {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

fn seed(n: u8) -> SecretKey {
    SecretKey::from_seed(&[n; 32])
}

/// Two root keys (threshold 2), one catalog key, one timestamp key.
struct Publisher {
    root_keys: Vec<SecretKey>,
    catalog_key: SecretKey,
    timestamp_key: SecretKey,
}

impl Publisher {
    fn new() -> Self {
        Self {
            root_keys: vec![seed(1), seed(2)],
            catalog_key: seed(3),
            timestamp_key: seed(4),
        }
    }

    fn root_doc(
        &self,
        version: u64,
        root_keys: &[&SecretKey],
        threshold: u32,
        catalog: &SecretKey,
        ts: &SecretKey,
    ) -> Root {
        let mut keys = KeyMap::new();
        for k in root_keys.iter().copied().chain([catalog, ts]) {
            keys.insert(k.key_id(), k.public());
        }
        Root {
            role: Role::Root,
            spec_version: SPEC_VERSION,
            version,
            expires: now() + Duration::days(365),
            keys,
            roles: Roles {
                root: RoleKeys {
                    keyids: root_keys.iter().map(|k| k.key_id()).collect(),
                    threshold,
                },
                catalog: RoleKeys {
                    keyids: vec![catalog.key_id()],
                    threshold: 1,
                },
                timestamp: RoleKeys {
                    keyids: vec![ts.key_id()],
                    threshold: 1,
                },
            },
        }
    }

    fn root(&self) -> Root {
        let rk: Vec<&SecretKey> = self.root_keys.iter().collect();
        self.root_doc(1, &rk, 2, &self.catalog_key, &self.timestamp_key)
    }

    fn root_bytes(&self) -> Vec<u8> {
        let rk: Vec<&SecretKey> = self.root_keys.iter().collect();
        sign(&self.root(), &rk)
    }

    fn state(&self) -> TrustedState {
        TrustedState::bootstrap(&self.root_bytes(), &Limits::default()).expect("bootstrap")
    }

    fn catalog(&self, version: u64) -> Catalog {
        let text = r#"
app:
  id: org.example.hello
  name: Hello
  version: 1.0.0
  description: { short: "A tiny web server" }
  container:
    image: ./hello.oci.tar
    cmd: ["/bin/busybox", "httpd", "-f", "-p", "8080"]
    ports: [{ host: 18080, container: 8080 }]
  health_check: { type: http, port: 8080, path: / }
"#;
        let mut m = manifest::parse_and_validate(text, ManifestFormat::Yaml).unwrap();
        let image = ImageRef {
            hash: ContentHash::of(b"image bytes"),
            size: 11,
            config_digest: format!("sha256:{}", "ab".repeat(32)),
            format: ArchiveFormat::OciArchive,
            web_seeds: Vec::new(),
        };
        m.container.image = image.hash.to_string();
        let release = Release {
            manifest_hash: m.manifest_hash(),
            manifest: m,
            image,
        };
        Catalog {
            role: Role::Catalog,
            spec_version: SPEC_VERSION,
            version,
            expires: now() + Duration::days(30),
            apps: BTreeMap::from([(
                "org.example.hello".to_string(),
                AppEntry {
                    releases: BTreeMap::from([("1.0.0".to_string(), Box::new(release))]),
                },
            )]),
        }
    }

    fn catalog_bytes(&self, version: u64) -> Vec<u8> {
        sign(&self.catalog(version), &[&self.catalog_key])
    }

    fn timestamp_bytes(&self, version: u64, catalog_bytes: &[u8]) -> Vec<u8> {
        let ts = Timestamp::for_catalog(catalog_bytes, version, now() + Duration::days(1)).unwrap();
        sign(&ts, &[&self.timestamp_key])
    }
}

fn limits() -> Limits {
    Limits::default()
}

/// Verifies timestamp then catalog, as a node does.
fn verify_head(state: &mut TrustedState, ts: &[u8], cat: &[u8]) -> Result<Catalog, TrustError> {
    let t = state.verify_timestamp(ts, now(), &limits())?;
    state.verify_catalog(cat, Some(&t), now(), &limits())
}

#[test]
fn honest_head_verifies() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(1);
    let c = verify_head(&mut s, &p.timestamp_bytes(1, &cat), &cat).unwrap();
    assert_eq!(c.version, 1);
    assert_eq!((s.timestamp_version, s.catalog_version), (1, 1));
}

// --- arbitrary installation ---------------------------------------------------------

#[test]
fn arbitrary_installation_catalog_signed_by_unknown_key_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let attacker = seed(66);
    let cat = sign(&p.catalog(1), &[&attacker]);
    let ts = p.timestamp_bytes(1, &cat);
    let e = verify_head(&mut s, &ts, &cat).unwrap_err();
    assert_eq!(e.kind(), "unknown_key", "{e}");
    assert_eq!(s.catalog_version, 0, "a refused catalog leaves no trace");
}

#[test]
fn arbitrary_installation_tampered_catalog_fails_its_signature() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(1);
    let tampered = String::from_utf8(cat)
        .unwrap()
        .replace("18080", "18081")
        .into_bytes();
    let ts = p.timestamp_bytes(1, &tampered); // even a valid timestamp pinning it
    let e = verify_head(&mut s, &ts, &tampered).unwrap_err();
    assert_eq!(e.kind(), "bad_signature", "{e}");
}

#[test]
fn arbitrary_installation_key_of_another_role_does_not_count() {
    let p = Publisher::new();
    let mut s = p.state();
    // The timestamp key is trusted, but not for the catalog role.
    let cat = sign(&p.catalog(1), &[&p.timestamp_key]);
    let ts = p.timestamp_bytes(1, &cat);
    assert_eq!(
        verify_head(&mut s, &ts, &cat).unwrap_err().kind(),
        "unknown_key"
    );
}

#[test]
fn wrong_software_entry_whose_image_differs_from_its_manifest_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let mut c = p.catalog(1);
    let rel = c
        .apps
        .get_mut("org.example.hello")
        .unwrap()
        .releases
        .get_mut("1.0.0")
        .unwrap();
    rel.image.hash = ContentHash::of(b"other image");
    let cat = sign(&c, &[&p.catalog_key]);
    let e = verify_head(&mut s, &p.timestamp_bytes(1, &cat), &cat).unwrap_err();
    assert_eq!(e.kind(), "malformed", "{e}");
    assert!(e.to_string().contains("not the image hash"), "{e}");
}

#[test]
fn wrong_software_signed_entry_that_breaks_the_security_policy_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let mut c = p.catalog(1);
    let rel = c
        .apps
        .get_mut("org.example.hello")
        .unwrap()
        .releases
        .get_mut("1.0.0")
        .unwrap();
    rel.manifest.container.privileged = Some(true);
    rel.manifest_hash = rel.manifest.manifest_hash();
    let cat = sign(&c, &[&p.catalog_key]);
    // The catalog as a whole is still usable; the faulty release is refused before it
    // can be applied, and the publisher's `verify` lists it.
    let verified = verify_head(&mut s, &p.timestamp_bytes(1, &cat), &cat).unwrap();
    let release = verified.release("org.example.hello", None).unwrap();
    assert!(release
        .check()
        .unwrap_err()
        .to_string()
        .contains("privileged"));
    let problems = verified.check_releases();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, "org.example.hello@1.0.0");
}

#[test]
fn wrong_type_timestamp_presented_as_catalog_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(1);
    let ts = p.timestamp_bytes(1, &cat);
    let e = s.verify_catalog(&ts, None, now(), &limits()).unwrap_err();
    assert_eq!(
        e,
        TrustError::WrongType {
            expected: Role::Catalog,
            found: Role::Timestamp
        }
    );
}

// --- key compromise below threshold -------------------------------------------------

#[test]
fn key_compromise_one_root_key_cannot_sign_a_root() {
    let p = Publisher::new();
    let rk: Vec<&SecretKey> = p.root_keys.iter().collect();
    let bytes = sign(&p.root(), &rk[..1]);
    let e = TrustedState::bootstrap(&bytes, &limits()).unwrap_err();
    assert_eq!(
        e,
        TrustError::BelowThreshold {
            role: Role::Root,
            valid: 1,
            threshold: 2
        }
    );
}

#[test]
fn key_compromise_one_key_signing_twice_counts_once() {
    let p = Publisher::new();
    let mut env = Envelope::new_unsigned(&p.root()).unwrap();
    env.sign(&p.root_keys[0]);
    let dup = env.signatures[0].clone();
    env.signatures.push(dup);
    let e = TrustedState::bootstrap(&env.to_bytes(), &limits()).unwrap_err();
    assert_eq!(e.kind(), "below_threshold", "{e}");
}

#[test]
fn key_compromise_root_listing_a_key_twice_is_malformed() {
    let p = Publisher::new();
    let mut root = p.root();
    root.roles.root.keyids = vec![p.root_keys[0].key_id(), p.root_keys[0].key_id()];
    let bytes = sign(&root, &[&p.root_keys[0]]);
    assert_eq!(
        TrustedState::bootstrap(&bytes, &limits())
            .unwrap_err()
            .kind(),
        "malformed"
    );
}

// --- rollback -----------------------------------------------------------------------

#[test]
fn rollback_of_the_timestamp_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(1);
    verify_head(&mut s, &p.timestamp_bytes(5, &cat), &cat).unwrap();
    let e = s
        .verify_timestamp(&p.timestamp_bytes(4, &cat), now(), &limits())
        .unwrap_err();
    assert_eq!(
        e,
        TrustError::Rollback {
            role: Role::Timestamp,
            from: 5,
            to: 4
        }
    );
}

#[test]
fn rollback_of_the_catalog_is_refused_even_under_a_newer_timestamp() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat2 = p.catalog_bytes(2);
    verify_head(&mut s, &p.timestamp_bytes(1, &cat2), &cat2).unwrap();
    let cat1 = p.catalog_bytes(1);
    let e = verify_head(&mut s, &p.timestamp_bytes(2, &cat1), &cat1).unwrap_err();
    assert_eq!(
        e,
        TrustError::Rollback {
            role: Role::Catalog,
            from: 2,
            to: 1
        }
    );
}

#[test]
fn rollback_of_the_root_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let rk: Vec<&SecretKey> = p.root_keys.iter().collect();
    let v2 = p.root_doc(2, &rk, 2, &p.catalog_key, &p.timestamp_key);
    s.update_root(&sign(&v2, &rk), &limits()).unwrap();
    let e = s.update_root(&p.root_bytes(), &limits()).unwrap_err();
    assert_eq!(
        e,
        TrustError::Rollback {
            role: Role::Root,
            from: 2,
            to: 1
        }
    );
}

#[test]
fn equivocation_two_timestamps_with_one_version_are_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat1 = p.catalog_bytes(1);
    verify_head(&mut s, &p.timestamp_bytes(3, &cat1), &cat1).unwrap();
    let cat2 = p.catalog_bytes(2);
    let e = s
        .verify_timestamp(&p.timestamp_bytes(3, &cat2), now(), &limits())
        .unwrap_err();
    assert_eq!(e.kind(), "conflict");
}

// --- indefinite freeze --------------------------------------------------------------

#[test]
fn freeze_expired_timestamp_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(1);
    let ts = Timestamp::for_catalog(&cat, 1, now() - Duration::seconds(1)).unwrap();
    let e = s
        .verify_timestamp(&sign(&ts, &[&p.timestamp_key]), now(), &limits())
        .unwrap_err();
    assert_eq!(e.kind(), "expired");
}

#[test]
fn freeze_expired_catalog_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let mut c = p.catalog(1);
    c.expires = now() - Duration::days(1);
    let cat = sign(&c, &[&p.catalog_key]);
    let e = verify_head(&mut s, &p.timestamp_bytes(1, &cat), &cat).unwrap_err();
    assert_eq!(e.kind(), "expired");
}

#[test]
fn freeze_expired_root_is_refused_when_used() {
    let p = Publisher::new();
    let mut root = p.root();
    root.expires = now() - Duration::days(1);
    let rk: Vec<&SecretKey> = p.root_keys.iter().collect();
    let mut s = TrustedState::bootstrap(&sign(&root, &rk), &limits()).unwrap();
    let cat = p.catalog_bytes(1);
    let e = s
        .verify_timestamp(&p.timestamp_bytes(1, &cat), now(), &limits())
        .unwrap_err();
    assert_eq!(
        e,
        TrustError::Expired {
            role: Role::Root,
            version: 1,
            expires: root.expires
        }
    );
}

// --- mix-and-match ------------------------------------------------------------------

#[test]
fn mix_and_match_catalog_other_than_the_pinned_one_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let pinned = p.catalog_bytes(2);
    let ts = p.timestamp_bytes(1, &pinned);
    // A validly signed catalog of the same size, but not the pinned one.
    let mut other = p.catalog(2);
    other.expires += Duration::seconds(1);
    let other = sign(&other, &[&p.catalog_key]);
    assert_eq!(other.len(), pinned.len());
    let e = verify_head(&mut s, &ts, &other).unwrap_err();
    assert_eq!(e.kind(), "hash_mismatch", "{e}");
}

#[test]
fn mix_and_match_catalog_version_must_equal_the_pinned_version() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(7);
    let mut ts = Timestamp::for_catalog(&cat, 1, now() + Duration::days(1)).unwrap();
    ts.catalog.version = 8;
    let ts = sign(&ts, &[&p.timestamp_key]);
    let e = verify_head(&mut s, &ts, &cat).unwrap_err();
    assert_eq!(
        e,
        TrustError::VersionMismatch {
            expected: 8,
            actual: 7
        }
    );
}

// --- endless data -------------------------------------------------------------------

#[test]
fn endless_data_oversized_timestamp_is_refused_before_parsing() {
    let p = Publisher::new();
    let mut s = p.state();
    let huge = vec![b' '; 17 * 1024];
    let e = s.verify_timestamp(&huge, now(), &limits()).unwrap_err();
    assert_eq!(e.kind(), "too_large");
}

#[test]
fn endless_data_catalog_longer_than_pinned_is_refused() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(1);
    let ts = p.timestamp_bytes(1, &cat);
    let mut longer = cat.clone();
    longer.extend(std::iter::repeat_n(b' ', 1 << 20));
    let e = verify_head(&mut s, &ts, &longer).unwrap_err();
    assert_eq!(e.kind(), "too_large", "{e}");
}

#[test]
fn endless_data_oversized_root_is_refused() {
    let p = Publisher::new();
    let huge = vec![b' '; 600 * 1024];
    assert_eq!(
        TrustedState::bootstrap(&huge, &limits())
            .unwrap_err()
            .kind(),
        "too_large"
    );
    let mut s = p.state();
    assert_eq!(
        s.update_root(&huge, &limits()).unwrap_err().kind(),
        "too_large"
    );
}

// --- root rotation ------------------------------------------------------------------

#[test]
fn rotation_new_root_needs_old_and_new_thresholds() {
    let p = Publisher::new();
    let new_roots = [seed(11), seed(12)];
    let nr: Vec<&SecretKey> = new_roots.iter().collect();
    let v2 = p.root_doc(2, &nr, 2, &p.catalog_key, &p.timestamp_key);
    let old: Vec<&SecretKey> = p.root_keys.iter().collect();

    let mut s = p.state();
    let only_new = sign(&v2, &nr);
    assert_eq!(
        s.update_root(&only_new, &limits()).unwrap_err().kind(),
        "unknown_key"
    );
    let only_old = sign(&v2, &old);
    assert_eq!(
        s.update_root(&only_old, &limits()).unwrap_err().kind(),
        "unknown_key"
    );
    assert_eq!(s.root_version, 1, "refused rotations leave the old root");

    let both: Vec<&SecretKey> = old.iter().chain(nr.iter()).copied().collect();
    s.update_root(&sign(&v2, &both), &limits()).unwrap();
    assert_eq!(s.root_version, 2);
}

#[test]
fn rotation_skipping_a_version_is_refused() {
    let p = Publisher::new();
    let rk: Vec<&SecretKey> = p.root_keys.iter().collect();
    let v3 = p.root_doc(3, &rk, 2, &p.catalog_key, &p.timestamp_key);
    let mut s = p.state();
    assert_eq!(
        s.update_root(&sign(&v3, &rk), &limits()).unwrap_err(),
        TrustError::RootGap { trusted: 1, got: 3 }
    );
}

#[test]
fn rotation_revokes_the_old_catalog_key_and_resets_its_version() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(9);
    verify_head(&mut s, &p.timestamp_bytes(1, &cat), &cat).unwrap();

    let new_catalog_key = seed(21);
    let rk: Vec<&SecretKey> = p.root_keys.iter().collect();
    let v2 = p.root_doc(2, &rk, 2, &new_catalog_key, &p.timestamp_key);
    s.update_root(&sign(&v2, &rk), &limits()).unwrap();
    assert_eq!(
        s.catalog_version, 0,
        "a rotated catalog role starts its version count afresh"
    );

    // The old (maybe compromised) catalog key no longer verifies.
    let old_signed = p.catalog_bytes(10);
    let e = verify_head(&mut s, &p.timestamp_bytes(2, &old_signed), &old_signed).unwrap_err();
    assert_eq!(e.kind(), "unknown_key");
    // The new one does, even with a lower version than the old key had pinned.
    let fresh = sign(&p.catalog(1), &[&new_catalog_key]);
    verify_head(&mut s, &p.timestamp_bytes(3, &fresh), &fresh).unwrap();
}

#[test]
fn rotation_chain_is_walked_version_by_version() {
    let p = Publisher::new();
    let mut s = p.state();
    let keys: Vec<SecretKey> = (30..34).map(seed).collect();
    let mut prev: Vec<&SecretKey> = p.root_keys.iter().collect();
    for (i, pair) in keys.chunks(2).enumerate() {
        let next: Vec<&SecretKey> = pair.iter().collect();
        let doc = p.root_doc(i as u64 + 2, &next, 2, &p.catalog_key, &p.timestamp_key);
        let signers: Vec<&SecretKey> = prev.iter().chain(next.iter()).copied().collect();
        s.update_root(&sign(&doc, &signers), &limits()).unwrap();
        prev = next;
    }
    assert_eq!(s.root_version, 3);
}

// --- persistence --------------------------------------------------------------------

#[test]
fn trusted_state_survives_serialisation_and_still_refuses_rollback() {
    let p = Publisher::new();
    let mut s = p.state();
    let cat = p.catalog_bytes(4);
    verify_head(&mut s, &p.timestamp_bytes(4, &cat), &cat).unwrap();
    let saved = serde_json::to_string(&s).unwrap();
    let mut restored: TrustedState = serde_json::from_str(&saved).unwrap();
    let old = p.catalog_bytes(3);
    let e = restored
        .verify_timestamp(&p.timestamp_bytes(3, &old), now(), &limits())
        .unwrap_err();
    assert_eq!(e.kind(), "rollback");
}
