//! A catalog head: the signed documents a node needs to move to the newest catalog
//! (the roots since the one it trusts, the timestamp, the catalog it pins), and the one
//! order they are verified in. The head protocol (`archy-registry`) moves heads between
//! peers; nodes and `catalog-signer verify` check them here, with the same rules.

use std::path::Path;

use crate::{fsutil::write_atomic, Catalog, Limits, TrustError, TrustedState};

/// A signed head: the documents a node needs to move to the newest catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedHead {
    /// Signed roots with their versions, ascending.
    pub roots: Vec<(u64, Vec<u8>)>,
    pub timestamp: Vec<u8>,
    pub catalog: Vec<u8>,
}

impl SignedHead {
    /// When the head stops being usable: the earlier of its timestamp's and its
    /// catalog's expiry. Read from the head's own bytes, so call it on a verified head
    /// with the catalog [`verify_head`] returned; `None` if the timestamp does not parse.
    pub fn expires(&self, catalog: &Catalog) -> Option<chrono::DateTime<chrono::Utc>> {
        Some(
            timestamp_body(&self.timestamp)?
                .expires
                .min(catalog.expires),
        )
    }
}

/// The body of a signed timestamp's bytes, without checking its signatures.
pub fn timestamp_body(bytes: &[u8]) -> Option<crate::documents::Timestamp> {
    crate::documents::EnvelopeRef::parse(bytes)
        .ok()?
        .body()
        .ok()
}

/// The version a signed document's header claims (0 if it has none: verification
/// refuses such a document later anyway).
pub fn document_version(bytes: &[u8]) -> u64 {
    crate::documents::EnvelopeRef::parse(bytes)
        .ok()
        .and_then(|e| e.header().ok())
        .map_or(0, |h| h.version)
}

impl SignedHead {
    /// A head from its documents; roots are sorted by their version.
    pub fn new(roots: Vec<Vec<u8>>, timestamp: Vec<u8>, catalog: Vec<u8>) -> Self {
        let mut roots: Vec<(u64, Vec<u8>)> = roots
            .into_iter()
            .map(|r| (document_version(&r), r))
            .collect();
        roots.sort_by_key(|(v, _)| *v);
        roots.dedup_by_key(|(v, _)| *v);
        Self {
            roots,
            timestamp,
            catalog,
        }
    }

    /// The signed documents of a publisher's publish dir, as they are on disk (not
    /// verified): `root.json` and any older roots under `roots/`, `timestamp.json`,
    /// `catalog.json`. Errors name the file.
    pub fn read_publish_dir(publish: &Path) -> std::io::Result<Self> {
        let mut roots = Vec::new();
        if let Ok(dir) = std::fs::read_dir(publish.join("roots")) {
            for entry in dir.flatten() {
                roots.push(read_named(&entry.path())?);
            }
        }
        roots.push(read_named(&publish.join("root.json"))?);
        Ok(Self::new(
            roots,
            read_named(&publish.join("timestamp.json"))?,
            read_named(&publish.join("catalog.json"))?,
        ))
    }

    /// A head kept with [`SignedHead::save`] (`roots/<version>.json`, `timestamp.json`,
    /// `catalog.json` under `dir`).
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let mut roots = Vec::new();
        for entry in std::fs::read_dir(dir.join("roots"))?.flatten() {
            roots.push(read_named(&entry.path())?);
        }
        Ok(Self::new(
            roots,
            read_named(&dir.join("timestamp.json"))?,
            read_named(&dir.join("catalog.json"))?,
        ))
    }

    /// Keeps the head under `dir`, each file atomically, the catalog before the
    /// timestamp that pins it.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir.join("roots"))?;
        for (v, r) in &self.roots {
            write_atomic(&dir.join("roots").join(format!("{v}.json")), r)?;
        }
        write_atomic(&dir.join("catalog.json"), &self.catalog)?;
        write_atomic(&dir.join("timestamp.json"), &self.timestamp)
    }
}

/// Reads a file; the error names it.
fn read_named(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Which document of a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadDocument {
    /// The `n`th root given (0-based), refused as a rotation.
    Root(usize),
    /// The root in force after the rotations (it has expired).
    TrustedRoot,
    Timestamp,
    Catalog,
}

/// A document of a head that did not verify, and why.
#[derive(Debug, thiserror::Error)]
#[error("{document:?}: {source}")]
pub struct HeadRefusal {
    pub document: HeadDocument,
    #[source]
    pub source: TrustError,
}

/// A document of a head that verified, as [`verify_in_order`] reports it.
#[derive(Debug, Clone, Copy)]
pub enum Verified<'a> {
    /// The root in force after the rotations.
    Root(&'a crate::Root),
    Timestamp(&'a crate::Timestamp),
    Catalog(&'a Catalog),
}

/// The one order a head's documents are verified in, by nodes and by
/// `catalog-signer verify`: each root as a rotation (one version at a time), the root
/// in force must not have expired, then the timestamp, then the catalog (against the
/// timestamp when one is given). Each document is applied to `state` as soon as it
/// verifies and reported to `on_verified`; on a refusal `state` holds what verified
/// before it (verify a clone to accept all or nothing). Returns the catalog, if given.
pub fn verify_in_order(
    state: &mut TrustedState,
    roots: &[&[u8]],
    timestamp: Option<&[u8]>,
    catalog: Option<&[u8]>,
    now: chrono::DateTime<chrono::Utc>,
    limits: &Limits,
    mut on_verified: impl FnMut(Verified<'_>),
) -> Result<Option<Catalog>, HeadRefusal> {
    let refused = |document| move |source| HeadRefusal { document, source };
    for (i, root) in roots.iter().enumerate() {
        state
            .update_root(root, limits)
            .map_err(refused(HeadDocument::Root(i)))?;
    }
    let root = state
        .fresh_root(now)
        .map_err(refused(HeadDocument::TrustedRoot))?;
    on_verified(Verified::Root(&root));
    let ts = match timestamp {
        Some(bytes) => {
            let ts = state
                .verify_timestamp(bytes, now, limits)
                .map_err(refused(HeadDocument::Timestamp))?;
            on_verified(Verified::Timestamp(&ts));
            Some(ts)
        }
        None => None,
    };
    let Some(bytes) = catalog else {
        return Ok(None);
    };
    let catalog = state
        .verify_catalog(bytes, ts.as_ref(), now, limits)
        .map_err(refused(HeadDocument::Catalog))?;
    on_verified(Verified::Catalog(&catalog));
    Ok(Some(catalog))
}

/// Verifies `head` against `trusted` ([`verify_in_order`] with the timestamp and the
/// catalog it pins); returns the new trusted state and the catalog. `trusted` itself is
/// untouched: nothing is accepted until everything verified.
pub fn verify_head(
    trusted: &TrustedState,
    head: &SignedHead,
    now: chrono::DateTime<chrono::Utc>,
    limits: &Limits,
) -> Result<(TrustedState, Catalog), TrustError> {
    let mut next = trusted.clone();
    // Roots older than the trusted one are part of a chain kept for peers, not a step.
    let roots: Vec<&[u8]> = head
        .roots
        .iter()
        .filter(|(v, _)| *v >= trusted.root_version)
        .map(|(_, r)| r.as_slice())
        .collect();
    let catalog = verify_in_order(
        &mut next,
        &roots,
        Some(&head.timestamp),
        Some(&head.catalog),
        now,
        limits,
        |_| {},
    )
    .map_err(|r| r.source)?;
    let catalog = catalog.expect("verify_in_order returns the catalog it was given");
    Ok((next, catalog))
}

/// The roots worth keeping to serve peers that trust an older root: the longest run of
/// consecutive versions among `held` and the trusted root that ends at the trusted
/// root and walks to it (each root signed by its predecessor's keys, as
/// `TrustedState::update_root` checks). Roots outside that run are dropped; the trusted
/// root itself is always kept.
pub fn root_chain(
    trusted: &TrustedState,
    held: impl IntoIterator<Item = (u64, Vec<u8>)>,
    limits: &Limits,
) -> Vec<(u64, Vec<u8>)> {
    let top = trusted.root_version;
    let mut by_version: std::collections::BTreeMap<u64, Vec<u8>> =
        held.into_iter().filter(|(v, _)| *v < top).collect();
    by_version.insert(top, trusted.root.as_bytes().to_vec());
    let mut low = top;
    while low > 1 && by_version.contains_key(&(low - 1)) {
        low -= 1;
    }
    let walks = |from: u64| {
        let Ok(mut t) = TrustedState::bootstrap(&by_version[&from], limits) else {
            return false;
        };
        (from + 1..=top).all(|v| t.update_root(&by_version[&v], limits).is_ok())
            && t.root == trusted.root
    };
    let from = (low..top).find(|&from| walks(from)).unwrap_or(top);
    (from..=top).map(|v| (v, by_version[&v].clone())).collect()
}

/// Whether `roots` hold every root a peer trusting any older root needs (versions 2 up
/// to the trusted one; version 1 is every peer's oldest possible anchor).
pub fn chain_is_whole(trusted: &TrustedState, roots: &[(u64, Vec<u8>)]) -> bool {
    (2..=trusted.root_version).all(|v| roots.iter().any(|(have, _)| *have == v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{
        documents::{Role, SPEC_VERSION},
        publisher::{Publisher, Validity},
    };
    use chrono::{Duration, Utc};

    fn catalog(version: u64) -> Catalog {
        Catalog {
            role: Role::Catalog,
            spec_version: SPEC_VERSION,
            version,
            expires: Utc::now() + Duration::days(30),
            apps: Default::default(),
        }
    }

    #[test]
    fn a_head_is_accepted_whole_or_not_at_all() {
        let p = Publisher::from_seed(5);
        let validity = Validity::default();
        let limits = Limits::default();
        let root = p.signed_root(1, validity.root);
        let trusted = TrustedState::bootstrap(&root, &limits).unwrap();
        let head = |v: u64| {
            let cat = p.signed_catalog(&catalog(v));
            let ts = p.signed_timestamp(&cat, v, validity.timestamp).unwrap();
            SignedHead::new(vec![root.clone()], ts, cat)
        };

        let (next, cat) = verify_head(&trusted, &head(2), Utc::now(), &limits).unwrap();
        assert_eq!((cat.version, next.root_version), (2, 1));
        assert_eq!(
            head(2).expires(&cat),
            Some(validity.timestamp.min(cat.expires))
        );

        // A catalog the timestamp does not pin (mix and match) is refused, and nothing
        // of the head is taken.
        let mut mixed = head(3);
        mixed.catalog = head(4).catalog;
        assert!(verify_head(&next, &mixed, Utc::now(), &limits).is_err());
        // An older head after a newer one: rollback.
        assert!(verify_head(&next, &head(1), Utc::now(), &limits).is_err());
        // After its expiry, the same head is refused.
        let later = validity.timestamp + Duration::seconds(1);
        assert!(verify_head(&trusted, &head(2), later, &limits).is_err());
    }

    #[test]
    fn a_saved_head_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::from_seed(6);
        let cat = p.signed_catalog(&catalog(1));
        let ts = p.signed_timestamp(&cat, 1, Utc::now()).unwrap();
        let head = SignedHead::new(vec![p.signed_root(1, Utc::now())], ts, cat);
        head.save(dir.path()).unwrap();
        assert_eq!(SignedHead::load(dir.path()).unwrap(), head);
    }
}
