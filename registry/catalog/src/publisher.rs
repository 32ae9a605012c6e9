//! A publisher that holds every one of its secret keys on one machine: what the demo,
//! the tests of every crate and the benchmarks sign their documents with. Real
//! publishers keep their root keys offline and use `catalog-signer`; this is the same
//! signing, in one place, for the places where one machine plays the publisher.
//!
//! ```
//! use archy_catalog::{publisher::{Publisher, Validity}, Limits, TrustedState};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir_all(dir.path().join("apps")).unwrap();
//! let publisher = Publisher::from_seed(7);
//! let root = publisher.signed_root(1, Validity::default().root);
//! let state = TrustedState::bootstrap(&root, &Limits::default()).unwrap();
//! assert_eq!(state.root_version, 1);
//! // An empty apps dir is refused by the catalog build, naming the directory.
//! let e = publisher.publish(&dir.path().join("apps"), &dir.path().join("publish"), 1, &Validity::default());
//! assert!(e.unwrap_err().to_string().contains("no manifests"));
//! ```

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::{
    build::{build_catalog, BuildError},
    documents::{Catalog, Envelope, NotACatalog, Root, Timestamp},
    fsutil::write_atomic,
    keys::{KeyError, SecretKey},
};

/// Why a publish dir could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Timestamp(#[from] NotACatalog),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy the image {from} into the publish dir: {source}")]
    CopyImage {
        from: PathBuf,
        source: std::io::Error,
    },
}

/// When each document a [`Publisher::publish`] signs expires.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub root: DateTime<Utc>,
    pub catalog: DateTime<Utc>,
    pub timestamp: DateTime<Utc>,
}

impl Default for Validity {
    /// A year for the root, 30 days for the catalog, 7 days for the timestamp.
    fn default() -> Self {
        let now = Utc::now();
        Self {
            root: now + Duration::days(365),
            catalog: now + Duration::days(30),
            timestamp: now + Duration::days(7),
        }
    }
}

/// What [`Publisher::publish`] wrote.
#[derive(Debug, Clone)]
pub struct Published {
    /// The publish dir: `root.json`, `catalog.json`, `timestamp.json`, `blobs/<hex>`.
    pub dir: PathBuf,
    /// The signed catalog, as written.
    pub catalog: Vec<u8>,
    /// How many apps it lists.
    pub apps: usize,
}

/// A publisher's keys: `threshold` of the root keys sign roots, one key signs
/// catalogs, one signs timestamps.
#[derive(Debug)]
pub struct Publisher {
    root_keys: Vec<SecretKey>,
    threshold: u32,
    catalog_key: SecretKey,
    timestamp_key: SecretKey,
}

impl Publisher {
    /// Fresh keys, one per role (one root key, threshold 1).
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self {
            root_keys: vec![SecretKey::generate()?],
            threshold: 1,
            catalog_key: SecretKey::generate()?,
            timestamp_key: SecretKey::generate()?,
        })
    }

    /// Keys derived from `seed`, the same on every run (for tests that compare bytes).
    pub fn from_seed(seed: u8) -> Self {
        let key = |role: u8| SecretKey::from_seed(&[seed.wrapping_mul(3).wrapping_add(role); 32]);
        Self {
            root_keys: vec![key(0)],
            threshold: 1,
            catalog_key: key(1),
            timestamp_key: key(2),
        }
    }

    /// Replaces the root keys: `threshold` of `keys` must sign a root.
    pub fn with_root_keys(mut self, keys: Vec<SecretKey>, threshold: u32) -> Self {
        self.root_keys = keys;
        self.threshold = threshold;
        self
    }

    pub fn root_keys(&self) -> &[SecretKey] {
        &self.root_keys
    }

    pub fn catalog_key(&self) -> &SecretKey {
        &self.catalog_key
    }

    pub fn timestamp_key(&self) -> &SecretKey {
        &self.timestamp_key
    }

    /// The root of trust that names these keys.
    pub fn root(&self, version: u64, expires: DateTime<Utc>) -> Root {
        let root_keys: Vec<&SecretKey> = self.root_keys.iter().collect();
        Root::for_keys(
            version,
            expires,
            (&root_keys, self.threshold),
            &self.catalog_key,
            &self.timestamp_key,
        )
    }

    /// [`Publisher::root`], signed by every root key.
    pub fn signed_root(&self, version: u64, expires: DateTime<Utc>) -> Vec<u8> {
        let keys: Vec<&SecretKey> = self.root_keys.iter().collect();
        sign(&self.root(version, expires), &keys)
    }

    /// `catalog`, signed by the catalog key.
    pub fn signed_catalog(&self, catalog: &Catalog) -> Vec<u8> {
        sign(catalog, &[&self.catalog_key])
    }

    /// A timestamp pinning `catalog` (signed bytes), signed by the timestamp key.
    pub fn signed_timestamp(
        &self,
        catalog: &[u8],
        version: u64,
        expires: DateTime<Utc>,
    ) -> Result<Vec<u8>, NotACatalog> {
        let ts = Timestamp::for_catalog(catalog, version, expires)?;
        Ok(sign(&ts, &[&self.timestamp_key]))
    }

    /// Builds a catalog (version `version`) of every manifest under `apps` and writes,
    /// as an origin serves it, the publish dir `out`: each image under
    /// `blobs/<blake3 hex>`, then the head ([`Publisher::write_head`]). Every file is
    /// written atomically.
    pub fn publish(
        &self,
        apps: &Path,
        out: &Path,
        version: u64,
        validity: &Validity,
    ) -> Result<Published, PublishError> {
        let built = build_catalog(apps, version, validity.catalog)?;
        let blobs = out.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|source| PublishError::Write {
            path: blobs.clone(),
            source,
        })?;
        for r in &built.releases {
            std::fs::copy(&r.image_file, blobs.join(r.image.hash.to_hex())).map_err(|source| {
                PublishError::CopyImage {
                    from: r.image_file.clone(),
                    source,
                }
            })?;
        }
        let catalog = self.write_head(&built.catalog, out, validity)?;
        Ok(Published {
            dir: out.to_path_buf(),
            catalog,
            apps: built.catalog.apps.len(),
        })
    }

    /// Signs `catalog` and writes the head of a publish dir into `out`: root v1, the
    /// catalog and a timestamp of the catalog's version that pins it. Returns the
    /// signed catalog.
    pub fn write_head(
        &self,
        catalog: &Catalog,
        out: &Path,
        validity: &Validity,
    ) -> Result<Vec<u8>, PublishError> {
        let signed = self.signed_catalog(catalog);
        let timestamp = self.signed_timestamp(&signed, catalog.version, validity.timestamp)?;
        std::fs::create_dir_all(out).map_err(|source| PublishError::Write {
            path: out.to_path_buf(),
            source,
        })?;
        let write = |name: &str, bytes: &[u8]| {
            let path = out.join(name);
            write_atomic(&path, bytes).map_err(|source| PublishError::Write { path, source })
        };
        write("root.json", &self.signed_root(1, validity.root))?;
        write("catalog.json", &signed)?;
        write("timestamp.json", &timestamp)?;
        Ok(signed)
    }
}

/// `doc` in a signed envelope, signed by each of `keys`.
pub fn sign<T: Serialize>(doc: &T, keys: &[&SecretKey]) -> Vec<u8> {
    // Archy's documents are plain data (strings, numbers, maps with string keys):
    // serializing them cannot fail.
    let mut env = Envelope::new_unsigned(doc).expect("a document serializes to JSON");
    for k in keys {
        env.sign(k);
    }
    env.to_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Limits, TrustedState};

    #[test]
    fn a_published_dir_verifies_as_a_node_verifies_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("apps/hello");
        std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("rootfs/index.html"), "hi").unwrap();
        std::fs::create_dir_all(&app).unwrap();
        crate::oci::pack_rootfs(
            &dir.path().join("rootfs"),
            &app.join("image.oci.tar"),
            &crate::oci::PackOptions::default(),
        )
        .unwrap();
        std::fs::write(
            app.join("app.yaml"),
            "app:\n  id: org.example.hello\n  name: Hello\n  version: 1.0.0\n  category: demo\n  description: { short: \"A page\" }\n  container:\n    image: ./image.oci.tar\n    cmd: [\"/bin/busybox\", \"httpd\", \"-f\"]\n",
        )
        .unwrap();
        let two_of_two = vec![
            SecretKey::from_seed(&[9; 32]),
            SecretKey::from_seed(&[8; 32]),
        ];
        let p = Publisher::generate().unwrap().with_root_keys(two_of_two, 2);
        let out = dir.path().join("publish");
        let published = p
            .publish(&dir.path().join("apps"), &out, 4, &Validity::default())
            .unwrap();
        assert_eq!(published.apps, 1);

        let read = |n: &str| std::fs::read(out.join(n)).unwrap();
        let limits = Limits::default();
        let mut state = TrustedState::bootstrap(&read("root.json"), &limits).unwrap();
        let ts = state
            .verify_timestamp(&read("timestamp.json"), Utc::now(), &limits)
            .unwrap();
        let catalog = state
            .verify_catalog(&read("catalog.json"), Some(&ts), Utc::now(), &limits)
            .unwrap();
        assert_eq!((ts.version, catalog.version), (4, 4));
        let image = &catalog.apps["org.example.hello"].releases["1.0.0"].image;
        let blob = out.join("blobs").join(image.hash.to_hex());
        assert_eq!(
            crate::oci::hash_file(&blob).unwrap(),
            (image.hash, image.size)
        );
        assert!(
            p.signed_timestamp(&read("root.json"), 1, Utc::now())
                .is_err(),
            "a root is not a catalog"
        );
    }
}
