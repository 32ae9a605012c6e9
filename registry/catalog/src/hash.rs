//! Content addresses.
//!
//! Everything Archy moves is named by the BLAKE3 hash of its exact bytes and written
//! `blake3:<64 hex digits>`. One type for it keeps parsing and printing in one place.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A BLAKE3 content address, written `blake3:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

/// The prefix every [`ContentHash`] carries in text form.
pub const BLAKE3_PREFIX: &str = "blake3:";

impl ContentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The 64 lowercase hex digits without the `blake3:` prefix.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{BLAKE3_PREFIX}{}", self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a content hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a content hash: expected `blake3:` followed by 64 hex digits, got {0:?}")]
pub struct ParseHashError(pub String);

impl FromStr for ContentHash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseHashError(s.chars().take(80).collect());
        let hex_part = s.strip_prefix(BLAKE3_PREFIX).ok_or_else(err)?;
        if hex_part.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| err())?;
        Ok(Self(out))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let h = ContentHash::of(b"hello");
        let s = h.to_string();
        assert!(s.starts_with("blake3:"));
        assert_eq!(s.parse::<ContentHash>().unwrap(), h);
    }

    #[test]
    fn rejects_wrong_prefix_length_and_digits() {
        let hex = ContentHash::of(b"x").to_hex();
        assert!(hex.parse::<ContentHash>().is_err());
        assert!(format!("sha256:{hex}").parse::<ContentHash>().is_err());
        assert!(format!("blake3:{}", &hex[..62])
            .parse::<ContentHash>()
            .is_err());
        assert!(format!("blake3:{}zz", &hex[..62])
            .parse::<ContentHash>()
            .is_err());
    }
}
