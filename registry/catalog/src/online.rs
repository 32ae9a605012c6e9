//! The online timestamp role, as TUF allows it: an origin that holds the timestamp key
//! signs the short-lived timestamp itself, so a catalog stays fresh for as long as the
//! origin runs, with no hand signing. It never touches the root or the catalog: those
//! keys stay offline with the publisher.
//!
//! [`timestamp_due`] is the decision (pure): a new timestamp when the catalog on disk is
//! not the one the current timestamp pins, or when half of the timestamp's lifetime has
//! passed. [`next_timestamp`] makes and signs it.
//!
//! ```
//! use archy_catalog::online::{timestamp_due, TimestampDue};
//! use archy_catalog::documents::{CatalogMeta, Role, Timestamp};
//! use chrono::{Duration, Utc};
//!
//! let now = Utc::now();
//! let pinned = CatalogMeta { version: 1, hash: archy_catalog::ContentHash::of(b"c"), size: 1 };
//! let served = Timestamp { role: Role::Timestamp, spec_version: 1, version: 4,
//!     expires: now + Duration::hours(20), catalog: pinned.clone() };
//! let day = Duration::days(1);
//! assert_eq!(timestamp_due(Some(&served), &pinned, now, day), None);
//! assert_eq!(timestamp_due(Some(&served), &pinned, now + Duration::hours(9), day), Some(TimestampDue::HalfLife));
//! ```

use chrono::{DateTime, Duration, Utc};

use crate::{
    documents::{CatalogMeta, NotACatalog, Timestamp},
    keys::SecretKey,
    publisher::sign,
};

/// Why a new timestamp is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampDue {
    /// There is no timestamp yet.
    First,
    /// The catalog is not the one the timestamp pins (the publisher signed a new one).
    NewCatalog,
    /// Less than half of the lifetime is left.
    HalfLife,
}

/// Whether the holder of the timestamp key should sign a new timestamp at `now`, given
/// the one it serves, the catalog on disk and the lifetime it gives timestamps.
pub fn timestamp_due(
    served: Option<&Timestamp>,
    catalog: &CatalogMeta,
    now: DateTime<Utc>,
    lifetime: Duration,
) -> Option<TimestampDue> {
    let Some(ts) = served else {
        return Some(TimestampDue::First);
    };
    if ts.catalog != *catalog {
        return Some(TimestampDue::NewCatalog);
    }
    (ts.expires - now < lifetime / 2).then_some(TimestampDue::HalfLife)
}

/// The timestamp after `served` (version + 1, or 1), pinning `catalog_bytes` and
/// expiring `lifetime` after `now`, signed by `key`.
pub fn next_timestamp(
    served: Option<&Timestamp>,
    catalog_bytes: &[u8],
    now: DateTime<Utc>,
    lifetime: Duration,
    key: &SecretKey,
) -> Result<(Timestamp, Vec<u8>), NotACatalog> {
    let version = served.map_or(1, |t| t.version + 1);
    let ts = Timestamp::for_catalog(catalog_bytes, version, now + lifetime)?;
    let bytes = sign(&ts, &[key]);
    Ok((ts, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{documents::Role, ContentHash};

    #[test]
    fn a_timestamp_is_due_first_for_a_new_catalog_and_at_half_life() {
        let now = Utc::now();
        let day = Duration::days(1);
        let meta = |b: &[u8]| CatalogMeta {
            version: 1,
            hash: ContentHash::of(b),
            size: b.len() as u64,
        };
        let served = Timestamp {
            role: Role::Timestamp,
            spec_version: 1,
            version: 3,
            expires: now + day,
            catalog: meta(b"one"),
        };
        // served, catalog on disk, time -> due
        let rows = [
            (None, meta(b"one"), now, Some(TimestampDue::First)),
            (
                Some(&served),
                meta(b"two"),
                now,
                Some(TimestampDue::NewCatalog),
            ),
            (Some(&served), meta(b"one"), now, None),
            (Some(&served), meta(b"one"), now + Duration::hours(11), None),
            (
                Some(&served),
                meta(b"one"),
                now + Duration::hours(13),
                Some(TimestampDue::HalfLife),
            ),
            (
                Some(&served),
                meta(b"one"),
                now + Duration::days(2),
                Some(TimestampDue::HalfLife),
            ),
        ];
        for (i, (served, catalog, at, want)) in rows.into_iter().enumerate() {
            assert_eq!(timestamp_due(served, &catalog, at, day), want, "row {i}");
        }
    }
}
