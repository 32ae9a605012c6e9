//! The trust rules: what a client accepts, and why it refuses the rest.
//!
//! [`TrustedState`] is what a client remembers between runs: the newest root it
//! accepted and the highest timestamp and catalog versions it has seen. Every update goes
//! through it, and each check defends against one attack from the TUF threat model:
//!
//! | attack | defence here |
//! |---|---|
//! | arbitrary installation | threshold of valid signatures by the role's keys |
//! | rollback | versions never go below the remembered ones |
//! | indefinite freeze | expiry on every document, checked against the clock |
//! | mix-and-match | catalog hash, size and version must equal the timestamp's |
//! | endless data | size limits checked before parsing |
//! | key compromise below threshold | one key (or one key listed twice) never meets a threshold above 1 |
//! | root key rotation | a new root needs a threshold of the old *and* new root keys, one version at a time |
//!
//! All functions take `now` so the logic is tested without a clock; they never do I/O.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    documents::{
        Catalog, EnvelopeRef, InvalidCatalog, InvalidRelease, InvalidRoot, Role, RoleKeys, Root,
        Timestamp, SPEC_VERSION,
    },
    hash::ContentHash,
    keys::{KeyId, KeyMap},
};

/// Size limits checked before any parsing (endless-data defence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub root: u64,
    pub timestamp: u64,
    /// Upper bound for a catalog; the timestamp's pinned size is the real limit.
    pub catalog: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            root: 512 * 1024,
            timestamp: 16 * 1024,
            catalog: 128 * 1024 * 1024,
        }
    }
}

impl Limits {
    pub fn for_role(&self, role: Role) -> u64 {
        match role {
            Role::Root => self.root,
            Role::Timestamp => self.timestamp,
            Role::Catalog => self.catalog,
        }
    }
}

/// What makes a document malformed: its bytes are not JSON of the role's shape, or its
/// content breaks a rule of the role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error(transparent)]
    Root(#[from] InvalidRoot),
    #[error(transparent)]
    Catalog(#[from] InvalidCatalog),
    /// A release that a node would refuse to install (found by the publisher's deeper check).
    #[error("release {at}: {problem}")]
    Release { at: String, problem: InvalidRelease },
}

/// A JSON parse error, kept whole as the source and comparable by where it happened
/// and what kind it was (`serde_json::Error` is neither `Clone` nor `Eq`).
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct JsonError(Arc<serde_json::Error>);

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        JsonError(Arc::new(e))
    }
}

impl PartialEq for JsonError {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        (a.classify(), a.line(), a.column()) == (b.classify(), b.line(), b.column())
    }
}

impl Eq for JsonError {}

/// Why a document was refused. Each variant names one attack or defect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("document too large: {role} is {size} bytes, the limit is {limit}")]
    TooLarge { role: Role, size: u64, limit: u64 },
    #[error("malformed {role}: {defect}")]
    Malformed {
        role: Role,
        #[source]
        defect: Defect,
    },
    #[error("wrong document type: expected {expected}, found {found}")]
    WrongType { expected: Role, found: Role },
    #[error("unsupported spec_version {found} in {role} (this client understands {SPEC_VERSION})")]
    UnsupportedSpec { role: Role, found: u32 },
    #[error("bad signature: {role} signature by key {keyid} does not verify ({valid} of {threshold} required valid)")]
    BadSignature {
        role: Role,
        keyid: String,
        valid: u32,
        threshold: u32,
    },
    #[error("unknown key: {role} is signed by key {keyid}, which is not a trusted {role} key ({valid} of {threshold} required valid)")]
    UnknownKey {
        role: Role,
        keyid: String,
        valid: u32,
        threshold: u32,
    },
    #[error("below threshold: {role} has {valid} valid signature(s), {threshold} required")]
    BelowThreshold {
        role: Role,
        valid: u32,
        threshold: u32,
    },
    #[error("expired: {role} version {version} expired at {expires}")]
    Expired {
        role: Role,
        version: u64,
        expires: DateTime<Utc>,
    },
    #[error("rollback: {role} from version {from} to {to}")]
    Rollback { role: Role, from: u64, to: u64 },
    #[error("root version gap: trusted root is version {trusted}, got version {got}; roots must be applied one version at a time")]
    RootGap { trusted: u64, got: u64 },
    #[error("conflicting {role} version {version}: same version as the trusted one but different content")]
    Conflict { role: Role, version: u64 },
    #[error(
        "catalog hash does not match the timestamp: timestamp pins {expected}, catalog is {actual}"
    )]
    HashMismatch {
        expected: ContentHash,
        actual: ContentHash,
    },
    #[error("catalog size does not match the timestamp: timestamp pins {expected} bytes, catalog is {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("catalog version does not match the timestamp: timestamp pins version {expected}, catalog is version {actual}")]
    VersionMismatch { expected: u64, actual: u64 },
}

impl TrustError {
    /// A stable machine-readable name for the attack or defect (used in `--json`).
    pub fn kind(&self) -> &'static str {
        match self {
            TrustError::TooLarge { .. } => "too_large",
            TrustError::Malformed { .. } => "malformed",
            TrustError::WrongType { .. } => "wrong_type",
            TrustError::UnsupportedSpec { .. } => "unsupported_spec",
            TrustError::BadSignature { .. } => "bad_signature",
            TrustError::UnknownKey { .. } => "unknown_key",
            TrustError::BelowThreshold { .. } => "below_threshold",
            TrustError::Expired { .. } => "expired",
            TrustError::Rollback { .. } => "rollback",
            TrustError::RootGap { .. } => "root_gap",
            TrustError::Conflict { .. } => "conflict",
            TrustError::HashMismatch { .. } => "hash_mismatch",
            TrustError::SizeMismatch { .. } => "size_mismatch",
            TrustError::VersionMismatch { .. } => "version_mismatch",
        }
    }
}

/// Counts distinct keys of `role_keys` with a valid signature and explains a shortfall.
///
/// Signatures by keys outside the role, bad signatures and a key listed twice never
/// count. When the threshold is not met, the most alarming reason is reported: a bad
/// signature from a trusted key, then a signature by an unknown key, then a plain
/// shortfall.
pub fn check_threshold(
    role: Role,
    role_keys: &RoleKeys,
    keys: &KeyMap,
    env: &EnvelopeRef<'_>,
) -> Result<u32, TrustError> {
    let msg = env.signing_message();
    let mut valid: Vec<&KeyId> = Vec::new();
    let mut bad: Option<&KeyId> = None;
    let mut unknown: Option<&KeyId> = None;
    for s in &env.signatures {
        let key = role_keys
            .keyids
            .contains(&s.keyid)
            .then(|| keys.get(&s.keyid))
            .flatten();
        let Some(key) = key else {
            unknown.get_or_insert(&s.keyid);
            continue;
        };
        let ok = hex::decode(&s.sig)
            .map(|sig| key.verify(&msg, &sig))
            .unwrap_or(false);
        if ok {
            if !valid.contains(&&s.keyid) {
                valid.push(&s.keyid);
            }
        } else {
            bad.get_or_insert(&s.keyid);
        }
    }
    let n = valid.len() as u32;
    let threshold = role_keys.threshold;
    if n >= threshold && threshold > 0 {
        return Ok(n);
    }
    Err(if let Some(k) = bad {
        TrustError::BadSignature {
            role,
            keyid: k.to_string(),
            valid: n,
            threshold,
        }
    } else if let Some(k) = unknown {
        TrustError::UnknownKey {
            role,
            keyid: k.to_string(),
            valid: n,
            threshold,
        }
    } else {
        TrustError::BelowThreshold {
            role,
            valid: n,
            threshold,
        }
    })
}

fn parse_envelope(role: Role, bytes: &[u8], limit: u64) -> Result<EnvelopeRef<'_>, TrustError> {
    if bytes.len() as u64 > limit {
        return Err(TrustError::TooLarge {
            role,
            size: bytes.len() as u64,
            limit,
        });
    }
    let env = EnvelopeRef::parse(bytes).map_err(|e| TrustError::Malformed {
        role,
        defect: JsonError::from(e).into(),
    })?;
    let header = env.header().map_err(|e| TrustError::Malformed {
        role,
        defect: JsonError::from(e).into(),
    })?;
    if header.role != role {
        return Err(TrustError::WrongType {
            expected: role,
            found: header.role,
        });
    }
    Ok(env)
}

fn parse_body<T: for<'de> Deserialize<'de>>(
    role: Role,
    env: &EnvelopeRef<'_>,
) -> Result<T, TrustError> {
    env.body().map_err(|e| TrustError::Malformed {
        role,
        defect: JsonError::from(e).into(),
    })
}

fn check_spec(role: Role, spec: u32) -> Result<(), TrustError> {
    if spec == SPEC_VERSION {
        Ok(())
    } else {
        Err(TrustError::UnsupportedSpec { role, found: spec })
    }
}

fn check_expiry(
    role: Role,
    version: u64,
    expires: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), TrustError> {
    if expires <= now {
        Err(TrustError::Expired {
            role,
            version,
            expires,
        })
    } else {
        Ok(())
    }
}

/// A root that passed the checks, with the exact bytes it was accepted from.
#[derive(Debug, Clone)]
pub struct VerifiedRoot {
    pub root: Root,
    pub bytes: Vec<u8>,
}

/// Parses a root and checks it is signed by a threshold of *its own* root keys.
fn self_signed_root(bytes: &[u8], limits: &Limits) -> Result<VerifiedRoot, TrustError> {
    let env = parse_envelope(Role::Root, bytes, limits.root)?;
    let root: Root = parse_body(Role::Root, &env)?;
    check_spec(Role::Root, root.spec_version)?;
    root.check().map_err(|e| TrustError::Malformed {
        role: Role::Root,
        defect: e.into(),
    })?;
    check_threshold(Role::Root, &root.roles.root, &root.keys, &env)?;
    Ok(VerifiedRoot {
        root,
        bytes: bytes.to_vec(),
    })
}

/// What a client remembers: the trusted root and the highest versions accepted.
///
/// Serialise it to persist it; see `catalog-signer verify --state` and the node's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedState {
    /// The exact bytes of the newest trusted root document.
    pub root: String,
    pub root_version: u64,
    pub timestamp_version: u64,
    /// The catalog hash the trusted timestamp pinned, to detect two different
    /// timestamps carrying one version.
    pub timestamp_catalog_hash: Option<ContentHash>,
    pub catalog_version: u64,
}

impl TrustedState {
    /// Starts trust from a root obtained out of band (shipped with the node, or the
    /// publisher's own). It must be signed by a threshold of its own root keys.
    /// Expiry is checked when the root is used, so a chain of newer roots can still
    /// be applied to an expired anchor.
    pub fn bootstrap(root_bytes: &[u8], limits: &Limits) -> Result<Self, TrustError> {
        let root = self_signed_root(root_bytes, limits)?;
        Ok(Self {
            root_version: root.root.version,
            root: String::from_utf8_lossy(&root.bytes).into_owned(),
            timestamp_version: 0,
            timestamp_catalog_hash: None,
            catalog_version: 0,
        })
    }

    /// The trusted root, parsed.
    pub fn root(&self) -> Result<Root, TrustError> {
        let env = parse_envelope(Role::Root, self.root.as_bytes(), u64::MAX)?;
        parse_body(Role::Root, &env)
    }

    /// Applies the next root (version `trusted + 1`). It must be signed by a threshold of
    /// the trusted root's root keys and of its own. When the new root changes the keys
    /// of the timestamp or catalog role, the remembered versions of that role are reset
    /// so that a compromised, since-rotated key cannot have pinned them out of reach.
    /// A root equal to the trusted one is accepted as a no-op.
    pub fn update_root(&mut self, bytes: &[u8], limits: &Limits) -> Result<(), TrustError> {
        let trusted = self.root()?;
        let env = parse_envelope(Role::Root, bytes, limits.root)?;
        let header = env.header().map_err(|e| TrustError::Malformed {
            role: Role::Root,
            defect: JsonError::from(e).into(),
        })?;
        if header.version < trusted.version {
            return Err(TrustError::Rollback {
                role: Role::Root,
                from: trusted.version,
                to: header.version,
            });
        }
        if header.version == trusted.version {
            return if bytes == self.root.as_bytes() {
                Ok(())
            } else {
                Err(TrustError::Conflict {
                    role: Role::Root,
                    version: header.version,
                })
            };
        }
        if header.version != trusted.version + 1 {
            return Err(TrustError::RootGap {
                trusted: trusted.version,
                got: header.version,
            });
        }
        check_threshold(Role::Root, &trusted.roles.root, &trusted.keys, &env)?;
        let new = self_signed_root(bytes, limits)?;
        let role_keys_changed = |role: Role| {
            let set = |r: &Root| {
                let mut ids: Vec<_> = r
                    .roles
                    .get(role)
                    .keyids
                    .iter()
                    .map(|k| (k.clone(), r.keys.get(k).cloned()))
                    .collect();
                ids.sort_by(|a, b| a.0.cmp(&b.0));
                ids
            };
            set(&trusted) != set(&new.root)
        };
        if role_keys_changed(Role::Timestamp) {
            self.timestamp_version = 0;
            self.timestamp_catalog_hash = None;
        }
        if role_keys_changed(Role::Catalog) {
            self.catalog_version = 0;
        }
        self.root_version = new.root.version;
        self.root = String::from_utf8_lossy(&new.bytes).into_owned();
        Ok(())
    }

    /// The trusted root, refused if it has expired (freeze defence).
    pub fn fresh_root(&self, now: DateTime<Utc>) -> Result<Root, TrustError> {
        let root = self.root()?;
        check_expiry(Role::Root, root.version, root.expires, now)?;
        Ok(root)
    }

    /// Verifies a timestamp and, on success, remembers its version.
    pub fn verify_timestamp(
        &mut self,
        bytes: &[u8],
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<Timestamp, TrustError> {
        let root = self.fresh_root(now)?;
        let env = parse_envelope(Role::Timestamp, bytes, limits.timestamp)?;
        check_threshold(Role::Timestamp, &root.roles.timestamp, &root.keys, &env)?;
        let ts: Timestamp = parse_body(Role::Timestamp, &env)?;
        check_spec(Role::Timestamp, ts.spec_version)?;
        if ts.version < self.timestamp_version {
            return Err(TrustError::Rollback {
                role: Role::Timestamp,
                from: self.timestamp_version,
                to: ts.version,
            });
        }
        if ts.version == self.timestamp_version
            && self
                .timestamp_catalog_hash
                .is_some_and(|h| h != ts.catalog.hash)
        {
            return Err(TrustError::Conflict {
                role: Role::Timestamp,
                version: ts.version,
            });
        }
        if ts.catalog.version < self.catalog_version {
            return Err(TrustError::Rollback {
                role: Role::Catalog,
                from: self.catalog_version,
                to: ts.catalog.version,
            });
        }
        check_expiry(Role::Timestamp, ts.version, ts.expires, now)?;
        self.timestamp_version = ts.version;
        self.timestamp_catalog_hash = Some(ts.catalog.hash);
        Ok(ts)
    }

    /// Verifies a catalog. With a timestamp, the catalog's hash, size and version must
    /// be the ones it pins (mix-and-match defence); nodes always pass one. On success the
    /// catalog version is remembered.
    pub fn verify_catalog(
        &mut self,
        bytes: &[u8],
        timestamp: Option<&Timestamp>,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<Catalog, TrustError> {
        let root = self.fresh_root(now)?;
        if let Some(ts) = timestamp {
            let size = bytes.len() as u64;
            if size > ts.catalog.size.min(limits.catalog) {
                return Err(TrustError::TooLarge {
                    role: Role::Catalog,
                    size,
                    limit: ts.catalog.size.min(limits.catalog),
                });
            }
            if size != ts.catalog.size {
                return Err(TrustError::SizeMismatch {
                    expected: ts.catalog.size,
                    actual: size,
                });
            }
            let actual = ContentHash::of(bytes);
            if actual != ts.catalog.hash {
                return Err(TrustError::HashMismatch {
                    expected: ts.catalog.hash,
                    actual,
                });
            }
        }
        let env = parse_envelope(Role::Catalog, bytes, limits.catalog)?;
        check_threshold(Role::Catalog, &root.roles.catalog, &root.keys, &env)?;
        let catalog: Catalog = parse_body(Role::Catalog, &env)?;
        check_spec(Role::Catalog, catalog.spec_version)?;
        if let Some(ts) = timestamp {
            if catalog.version != ts.catalog.version {
                return Err(TrustError::VersionMismatch {
                    expected: ts.catalog.version,
                    actual: catalog.version,
                });
            }
        }
        if catalog.version < self.catalog_version {
            return Err(TrustError::Rollback {
                role: Role::Catalog,
                from: self.catalog_version,
                to: catalog.version,
            });
        }
        check_expiry(Role::Catalog, catalog.version, catalog.expires, now)?;
        catalog.check().map_err(|e| TrustError::Malformed {
            role: Role::Catalog,
            defect: e.into(),
        })?;
        self.catalog_version = catalog.version;
        Ok(catalog)
    }
}
