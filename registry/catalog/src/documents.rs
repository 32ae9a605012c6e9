//! The three signed documents (`root`, `catalog`, `timestamp`) and their envelope.
//!
//! A document file is JSON `{"signed": {...}, "signatures": [{"keyid", "sig"}]}`.
//! Signatures cover the *exact bytes* of the `signed` value as they appear in the file
//! (kept verbatim with `serde_json::value::RawValue`), prefixed by a domain tag, so no
//! canonicalisation is needed and re-formatting a file invalidates its signatures.
//! `docs/catalog-format.md` is the normative description.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    hash::ContentHash,
    keys::{KeyId, KeyMap, SecretKey},
    manifest::{AppManifest, ImageField},
};

/// Prepended to the hash of the signed bytes before signing: signatures made for Archy
/// documents can never be replayed as signatures over anything else.
pub const SIGNING_CONTEXT: &[u8] = b"archy-signed-document-v1\n";

/// The format version every document carries in `spec_version`.
pub const SPEC_VERSION: u32 = 1;

/// The role a document plays; also its `_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Root,
    Catalog,
    Timestamp,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Root => "root",
            Role::Catalog => "catalog",
            Role::Timestamp => "timestamp",
        })
    }
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub keyid: KeyId,
    /// 64 bytes, hex.
    pub sig: String,
}

/// A signed document as stored: the exact `signed` bytes plus signatures.
///
/// `S` is `Box<RawValue>` for a document being written or signed ([`Envelope`]) and
/// `&RawValue` for one being verified ([`EnvelopeRef`]), which borrows the file's bytes
/// instead of copying a catalog of many megabytes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEnvelope<S> {
    pub signed: S,
    pub signatures: Vec<Signature>,
}

/// An owned envelope, for writing and signing.
pub type Envelope = SignedEnvelope<Box<RawValue>>;

/// An envelope borrowing the bytes it was parsed from, for verification.
pub type EnvelopeRef<'a> = SignedEnvelope<&'a RawValue>;

impl Clone for Envelope {
    fn clone(&self) -> Self {
        Self {
            signed: self.signed.to_owned(),
            signatures: self.signatures.clone(),
        }
    }
}

/// The minimal header every signed body has, read before the full parse.
#[derive(Debug, Deserialize)]
pub struct Header {
    #[serde(rename = "_type")]
    pub role: Role,
    pub version: u64,
}

impl Envelope {
    /// Wraps a document body (serialised pretty, so humans can review it) with no
    /// signatures yet.
    pub fn new_unsigned<T: Serialize>(body: &T) -> Result<Self, serde_json::Error> {
        let text = serde_json::to_string_pretty(body)?;
        Ok(Self {
            signed: RawValue::from_string(text)?,
            signatures: Vec::new(),
        })
    }

    /// Parses an envelope from a file's bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Adds (or replaces) the signature of `key`.
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = hex::encode(key.sign(&self.signing_message()));
        let keyid = key.key_id();
        self.signatures.retain(|s| s.keyid != keyid);
        self.signatures.push(Signature { keyid, sig });
    }

    /// The file form: pretty JSON ending in a newline; `signed` is kept verbatim.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

impl<'a> EnvelopeRef<'a> {
    /// Parses an envelope borrowing `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl<S: std::ops::Deref<Target = RawValue>> SignedEnvelope<S> {
    /// The exact bytes of the `signed` value.
    pub fn signed_bytes(&self) -> &[u8] {
        self.signed.get().as_bytes()
    }

    /// The message a signature covers: [`SIGNING_CONTEXT`] followed by the BLAKE3 hash
    /// of the exact `signed` bytes (57 bytes in all, whatever the document's size).
    pub fn signing_message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + 32);
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(blake3::hash(self.signed_bytes()).as_bytes());
        msg
    }

    /// Reads `_type` and `version` without parsing the rest.
    pub fn header(&self) -> Result<Header, serde_json::Error> {
        serde_json::from_str(self.signed.get())
    }

    /// Parses the body as `T`.
    pub fn body<T: for<'de> Deserialize<'de>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.signed.get())
    }
}

/// Which keys may sign for a role, and how many must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    pub keyids: Vec<KeyId>,
    pub threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    pub root: RoleKeys,
    pub catalog: RoleKeys,
    pub timestamp: RoleKeys,
}

impl Roles {
    pub fn get(&self, role: Role) -> &RoleKeys {
        match role {
            Role::Root => &self.root,
            Role::Catalog => &self.catalog,
            Role::Timestamp => &self.timestamp,
        }
    }
}

/// The root of trust: keys and thresholds for every role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    #[serde(rename = "_type")]
    pub role: Role,
    pub spec_version: u32,
    pub version: u64,
    pub expires: DateTime<Utc>,
    pub keys: KeyMap,
    pub roles: Roles,
}

impl Root {
    /// A root for a machine that holds every secret key itself (the demo, benchmarks,
    /// tests): `threshold` of `root_keys` sign roots, one key each signs catalogs and
    /// timestamps, and the key map holds exactly these keys. Publishers build roots
    /// from public keys with `catalog-signer root init`.
    pub fn for_keys(
        version: u64,
        expires: DateTime<Utc>,
        (root_keys, threshold): (&[&SecretKey], u32),
        catalog: &SecretKey,
        timestamp: &SecretKey,
    ) -> Self {
        let one = |k: &SecretKey| RoleKeys {
            keyids: vec![k.key_id()],
            threshold: 1,
        };
        Self {
            role: Role::Root,
            spec_version: SPEC_VERSION,
            version,
            expires,
            keys: root_keys
                .iter()
                .copied()
                .chain([catalog, timestamp])
                .map(|k| (k.key_id(), k.public()))
                .collect(),
            roles: Roles {
                root: RoleKeys {
                    keyids: root_keys.iter().map(|k| k.key_id()).collect(),
                    threshold,
                },
                catalog: one(catalog),
                timestamp: one(timestamp),
            },
        }
    }

    /// Structural checks: thresholds between 1 and the number of distinct listed keys,
    /// every key id present in `keys` and matching its key.
    pub fn check(&self) -> Result<(), InvalidRoot> {
        if self.role != Role::Root {
            return Err(InvalidRoot::WrongType(self.role));
        }
        if self.version == 0 {
            return Err(InvalidRoot::VersionZero);
        }
        for (id, key) in &self.keys {
            if key.key_id().as_ref() != Some(id) {
                return Err(InvalidRoot::KeyIdMismatch(id.clone()));
            }
        }
        for role in [Role::Root, Role::Catalog, Role::Timestamp] {
            let rk = self.roles.get(role);
            let distinct: BTreeSet<&KeyId> = rk.keyids.iter().collect();
            if distinct.len() != rk.keyids.len() {
                return Err(InvalidRoot::DuplicateKey(role));
            }
            if rk.threshold == 0 || rk.threshold as usize > distinct.len() {
                return Err(InvalidRoot::Threshold {
                    role,
                    threshold: rk.threshold,
                    keys: distinct.len(),
                });
            }
            if let Some(missing) = rk.keyids.iter().find(|id| !self.keys.contains_key(id)) {
                return Err(InvalidRoot::UnknownKey {
                    role,
                    keyid: missing.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Why a root fails [`Root::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoot {
    #[error("_type is {0}, expected root")]
    WrongType(Role),
    #[error("version must be at least 1")]
    VersionZero,
    #[error("keys.{0}: key id does not match the public key")]
    KeyIdMismatch(KeyId),
    #[error("roles.{0}.keyids lists a key twice")]
    DuplicateKey(Role),
    #[error(
        "roles.{role}.threshold is {threshold} but must be between 1 and the {keys} listed keys"
    )]
    Threshold {
        role: Role,
        threshold: u32,
        keys: usize,
    },
    #[error("roles.{role}.keyids names {keyid}, which is not in keys")]
    UnknownKey { role: Role, keyid: KeyId },
}

/// What the catalog says about one image: its content address and how to check it
/// after loading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// BLAKE3 of the archive bytes.
    pub hash: ContentHash,
    /// Archive size in bytes.
    pub size: u64,
    /// The OCI image config digest (`sha256:` + 64 lowercase hex, refused in any other
    /// form when parsed), checked after the runtime loads it.
    #[serde(deserialize_with = "config_digest")]
    pub config_digest: String,
    /// `oci-archive` or `docker-archive`.
    pub format: crate::oci::ArchiveFormat,
    /// HTTP(S) URLs that serve the archive bytes (a static host, a CDN, a Blossom-style
    /// blob server), used next to the swarm. Whatever they send is checked against
    /// `hash` before it is used. At most [`MAX_WEB_SEEDS`], each checked by
    /// [`check_web_seed`] when parsed.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "web_seeds"
    )]
    pub web_seeds: Vec<String>,
}

/// At most this many web seeds per image.
pub const MAX_WEB_SEEDS: usize = 8;

/// Why a web seed URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadWebSeed {
    #[error("more than {MAX_WEB_SEEDS} web seeds")]
    TooMany,
    #[error("web seed {0:?}: not an http:// or https:// URL of at most 2048 printable characters")]
    NotAUrl(String),
}

/// A web seed must be an `http://` or `https://` URL of at most 2048 printable ASCII
/// characters with a host.
pub fn check_web_seed(url: &str) -> Result<(), BadWebSeed> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = url.len() <= 2048
        && url.bytes().all(|b| b.is_ascii_graphic())
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    match ok {
        true => Ok(()),
        false => Err(BadWebSeed::NotAUrl(url.chars().take(100).collect())),
    }
}

fn web_seeds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let seeds = Vec::<String>::deserialize(d)?;
    if seeds.len() > MAX_WEB_SEEDS {
        return Err(serde::de::Error::custom(BadWebSeed::TooMany));
    }
    for s in &seeds {
        check_web_seed(s).map_err(serde::de::Error::custom)?;
    }
    Ok(seeds)
}

/// Reads a config digest, refusing anything but `sha256:` + 64 lowercase hex: it becomes
/// a file name and a podman argument on every node.
fn config_digest<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    crate::oci::check_digest(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

/// One release of an app in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The validated manifest, with `container.image` set to the image hash.
    pub manifest: AppManifest,
    /// [`AppManifest::manifest_hash`] of the manifest.
    pub manifest_hash: ContentHash,
    pub image: ImageRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    /// Releases keyed by their semantic version.
    pub releases: BTreeMap<String, Box<Release>>,
}

impl AppEntry {
    /// The highest release by semantic version.
    pub fn latest(&self) -> Option<&Release> {
        self.releases
            .values()
            .filter_map(|r| r.manifest.semver().map(|v| (v, r)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, r)| &**r)
    }
}

/// The list of apps and releases, signed by the `catalog` role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(rename = "_type")]
    pub role: Role,
    pub spec_version: u32,
    pub version: u64,
    pub expires: DateTime<Utc>,
    pub apps: BTreeMap<String, AppEntry>,
}

impl Release {
    /// Full check of one release before it is applied: the manifest passes validation
    /// and the security policy, its image field is the image hash, and the manifest
    /// hash is right. Nodes run this on the release they install, so one faulty entry
    /// cannot block the rest of a catalog, and never runs.
    pub fn check(&self) -> Result<(), InvalidRelease> {
        let m = &self.manifest;
        if m.image_hash() != Some(self.image.hash) {
            return Err(InvalidRelease::ImageNotItsHash(self.image.hash));
        }
        m.validate_with(ImageField::Hash)?;
        if m.manifest_hash() != self.manifest_hash {
            return Err(InvalidRelease::ManifestHashMismatch);
        }
        Ok(())
    }
}

/// Why a release fails [`Release::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRelease {
    #[error("container.image is not the image hash {0}")]
    ImageNotItsHash(ContentHash),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("manifest_hash does not match the manifest")]
    ManifestHashMismatch,
}

impl Catalog {
    /// The structural checks run on every catalog accepted: each entry sits under its
    /// own app id and version and names its own image. (The per-release policy check is
    /// [`Release::check`], run before a release is applied, and for every release by
    /// [`Catalog::check_releases`].)
    pub fn check(&self) -> Result<(), InvalidCatalog> {
        if self.role != Role::Catalog {
            return Err(InvalidCatalog::WrongType(self.role));
        }
        for (id, entry) in &self.apps {
            for (version, rel) in &entry.releases {
                let m = &rel.manifest;
                if &m.id != id || &m.version != version {
                    return Err(InvalidCatalog::Misfiled {
                        id: id.clone(),
                        version: version.clone(),
                        says: format!("{}@{}", m.id, m.version),
                    });
                }
                if m.image_hash() != Some(rel.image.hash) {
                    return Err(InvalidCatalog::ImageNotItsHash {
                        id: id.clone(),
                        version: version.clone(),
                        hash: rel.image.hash,
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs [`Release::check`] on every release; returns `(app@version, problem)` pairs.
    pub fn check_releases(&self) -> Vec<(String, InvalidRelease)> {
        self.apps
            .iter()
            .flat_map(|(id, e)| {
                e.releases
                    .iter()
                    .map(move |(v, r)| (format!("{id}@{v}"), r))
            })
            .filter_map(|(at, r)| r.check().err().map(|e| (at, e)))
            .collect()
    }

    /// Looks up a release: the given version, or the latest.
    pub fn release(&self, app_id: &str, version: Option<&str>) -> Option<&Release> {
        let entry = self.apps.get(app_id)?;
        match version {
            Some(v) => entry.releases.get(v).map(|r| &**r),
            None => entry.latest(),
        }
    }
}

/// Why a catalog fails [`Catalog::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCatalog {
    #[error("_type is {0}, expected catalog")]
    WrongType(Role),
    #[error("apps.{id}.releases.{version}: manifest says {says}")]
    Misfiled {
        id: String,
        version: String,
        /// `id@version` as the manifest gives them.
        says: String,
    },
    #[error("apps.{id}.releases.{version}: container.image is not the image hash {hash}")]
    ImageNotItsHash {
        id: String,
        version: String,
        hash: ContentHash,
    },
}

/// What the timestamp pins: the one catalog that is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogMeta {
    pub version: u64,
    pub hash: ContentHash,
    pub size: u64,
}

/// The short-lived head, signed by the online `timestamp` role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    #[serde(rename = "_type")]
    pub role: Role,
    pub spec_version: u32,
    pub version: u64,
    pub expires: DateTime<Utc>,
    pub catalog: CatalogMeta,
}

impl Timestamp {
    /// A timestamp pinning the catalog file `catalog_bytes`.
    pub fn for_catalog(
        catalog_bytes: &[u8],
        version: u64,
        expires: DateTime<Utc>,
    ) -> Result<Self, NotACatalog> {
        let env = Envelope::from_slice(catalog_bytes)
            .map_err(|e| NotACatalog(format!("not a signed document: {e}")))?;
        let header = env
            .header()
            .map_err(|e| NotACatalog(format!("no _type/version: {e}")))?;
        if header.role != Role::Catalog {
            return Err(NotACatalog(format!(
                "this is a {} document, not a catalog",
                header.role
            )));
        }
        Ok(Self {
            role: Role::Timestamp,
            spec_version: SPEC_VERSION,
            version,
            expires,
            catalog: CatalogMeta {
                version: header.version,
                hash: ContentHash::of(catalog_bytes),
                size: catalog_bytes.len() as u64,
            },
        })
    }
}

/// Bytes given as a catalog to pin in a timestamp that are not a signed catalog.
#[derive(Debug, thiserror::Error)]
#[error("cannot pin this file in a timestamp: {0}")]
pub struct NotACatalog(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_seeds_are_http_urls_and_few() {
        let image = |seeds: serde_json::Value| {
            serde_json::from_value::<ImageRef>(serde_json::json!({
                "hash": ContentHash::of(b"x").to_string(),
                "size": 1,
                "config_digest": format!("sha256:{}", "ab".repeat(32)),
                "format": "oci-archive",
                "web_seeds": seeds,
            }))
        };
        let ok = image(serde_json::json!([
            "https://cdn.example/a",
            "http://127.0.0.1:8080/b"
        ]))
        .expect("http and https URLs");
        assert_eq!(ok.web_seeds.len(), 2);
        for bad in [
            "file:///etc/passwd",
            "https://",
            "http:///x",
            "https://a b",
            "ftp://x",
        ] {
            assert!(image(serde_json::json!([bad])).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..9).map(|i| format!("https://h{i}.example/x")).collect();
        assert!(image(serde_json::json!(many)).is_err(), "at most 8");
        // Without seeds the field is left out, so documents signed before it hash the same.
        let plain = ImageRef {
            web_seeds: Vec::new(),
            ..ok
        };
        assert!(!serde_json::to_string(&plain).unwrap().contains("web_seeds"));
    }

    #[test]
    fn an_image_ref_with_a_config_digest_in_another_form_does_not_parse() {
        let good = format!("sha256:{}", "ab".repeat(32));
        let image = |digest: &str| {
            serde_json::json!({
                "hash": ContentHash::of(b"x").to_string(),
                "size": 1,
                "config_digest": digest,
                "format": "oci-archive",
            })
        };
        assert!(serde_json::from_value::<ImageRef>(image(&good)).is_ok());
        for bad in [
            "latest",
            "sha256:../../etc/passwd",
            &good.to_uppercase(),
            "sha256:",
            &format!("{good}0"),
        ] {
            let e = serde_json::from_value::<ImageRef>(image(bad)).expect_err(bad);
            assert!(e.to_string().contains("not a digest"), "{bad}: {e}");
        }
    }

    #[test]
    fn signed_bytes_survive_re_signing_verbatim() {
        let body = serde_json::json!({"_type": "timestamp", "version": 3, "odd": "  spacing  "});
        let mut env = Envelope::new_unsigned(&body).unwrap();
        let before = env.signed.get().to_string();
        let k = SecretKey::generate().unwrap();
        env.sign(&k);
        let reparsed = Envelope::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(reparsed.signed.get(), before);
        assert_eq!(reparsed.header().unwrap().version, 3);
        let sig = hex::decode(&reparsed.signatures[0].sig).unwrap();
        assert!(k.public().verify(&reparsed.signing_message(), &sig));
    }

    #[test]
    fn signing_twice_with_one_key_keeps_one_signature() {
        let mut env = Envelope::new_unsigned(&serde_json::json!({"a": 1})).unwrap();
        let k = SecretKey::generate().unwrap();
        env.sign(&k);
        env.sign(&k);
        assert_eq!(env.signatures.len(), 1);
    }
}
