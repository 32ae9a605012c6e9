//! # archy-catalog
//!
//! Archy's data model and trust rules, with no network stack, so the offline
//! `catalog-signer` stays small:
//!
//! - [`manifest`]: app manifests (YAML/JSON), strict validation with the security policy;
//! - [`documents`]: the signed `root`, `catalog` and `timestamp` documents and the
//!   envelope whose signatures cover exact bytes;
//! - [`duration`]: the one duration grammar (health-check timings, validities);
//! - [`trust`]: [`TrustedState`], which accepts documents only when they pass every
//!   TUF-style check (threshold, expiry, rollback, mix-and-match, size limits);
//! - [`oci`]: reading and writing OCI image archives;
//! - [`build`]: turning a directory of manifests into a catalog;
//! - [`head`]: a catalog head (roots, timestamp, catalog) and the one order it is
//!   verified in;
//! - [`publisher`]: a publisher holding all its keys on one machine (demo, tests,
//!   benchmarks), signing a publish dir as an origin serves it.
//!
//! ```
//! use archy_catalog::{documents::*, keys::SecretKey, trust::{Limits, TrustedState}};
//! use std::collections::BTreeMap;
//!
//! let key = SecretKey::generate().unwrap();
//! let id = key.key_id();
//! let one = RoleKeys { keyids: vec![id.clone()], threshold: 1 };
//! let expires = chrono::Utc::now() + chrono::Duration::days(1);
//! let root = Root {
//!     role: Role::Root, spec_version: SPEC_VERSION, version: 1, expires,
//!     keys: BTreeMap::from([(id, key.public())]),
//!     roles: Roles { root: one.clone(), catalog: one.clone(), timestamp: one },
//! };
//! let mut env = Envelope::new_unsigned(&root).unwrap();
//! env.sign(&key);
//! let state = TrustedState::bootstrap(&env.to_bytes(), &Limits::default()).unwrap();
//! assert_eq!(state.root_version, 1);
//! ```

pub mod build;
pub mod documents;
pub mod duration;
pub mod fsutil;
pub mod hash;
pub mod hash_tree;
pub mod head;
pub mod keys;
pub mod manifest;
pub mod oci;
pub mod online;
pub mod publisher;
pub mod trust;

pub use documents::{Catalog, Envelope, ImageRef, Release, Role, Root, Timestamp};
pub use hash::ContentHash;
pub use manifest::{AppManifest, FieldError, ManifestError};
pub use trust::{Defect, Limits, TrustError, TrustedState};
