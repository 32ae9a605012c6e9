//! Signed address records: "the node with this key is reachable at these iroh
//! addresses", verifiable by anyone who knows the node's peer id.
//!
//! Kademlia records are not authenticated, so a record's value carries its own ed25519
//! signature by the node key. The peer id embeds that same key, so a reader checks that
//! the record's endpoint id *is* the peer's key and that the signature verifies; a record
//! planted by anyone else, or replayed with other addresses, fails.

use std::net::SocketAddr;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

const CONTEXT: &str = "archy-iroh-addr-v1";
/// Largest address record accepted.
pub(crate) const MAX_RECORD_BYTES: usize = 4096;

/// Why an address record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("malformed address record: {0}")]
    Malformed(Malformation),
    #[error("address record is for endpoint {record} but was found under peer {peer}")]
    WrongPeer { record: String, peer: String },
    #[error("address record signature does not verify")]
    BadSignature,
}

/// What is wrong with the bytes of an address record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformation {
    #[error("{0} bytes, at most {MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("not a record (JSON {category:?} error at line {line}, column {column})")]
    NotJson {
        category: serde_json::error::Category,
        line: usize,
        column: usize,
    },
    #[error("{0} is not hex of the right length")]
    BadHex(&'static str),
}

/// A node's iroh endpoint id and direct addresses, signed by the node key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRecord {
    pub endpoint_id: [u8; 32],
    pub addrs: Vec<SocketAddr>,
    /// The node's home relay (an `https://` URL), for peers that cannot dial its
    /// addresses (it is behind NAT).
    pub relay: Option<String>,
    /// Unix seconds; the newest valid record wins.
    pub issued_at: u64,
    pub signature: [u8; 64],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    endpoint_id: String,
    addrs: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relay: Option<String>,
    issued_at: u64,
    sig: String,
}

fn message(
    endpoint_id: &[u8; 32],
    addrs: &[SocketAddr],
    relay: Option<&str>,
    issued_at: u64,
) -> Vec<u8> {
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let mut m = format!(
        "{CONTEXT}\n{}\n{}\n{issued_at}",
        hex::encode(endpoint_id),
        addrs.join(",")
    );
    if let Some(relay) = relay {
        m.push_str("\nrelay ");
        m.push_str(relay);
    }
    m.into_bytes()
}

impl AddressRecord {
    /// Signs a record for the node whose secret key is `secret`.
    pub fn sign(
        secret: &[u8; 32],
        addrs: &[SocketAddr],
        relay: Option<&str>,
        issued_at: u64,
    ) -> Self {
        let key = SigningKey::from_bytes(secret);
        let endpoint_id = key.verifying_key().to_bytes();
        let signature = key
            .sign(&message(&endpoint_id, addrs, relay, issued_at))
            .to_bytes();
        Self {
            endpoint_id,
            addrs: addrs.to_vec(),
            relay: relay.map(str::to_string),
            issued_at,
            signature,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Wire {
            endpoint_id: hex::encode(self.endpoint_id),
            addrs: self.addrs.clone(),
            relay: self.relay.clone(),
            issued_at: self.issued_at,
            sig: hex::encode(self.signature),
        })
        .unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::Malformed(Malformation::TooLarge(bytes.len())));
        }
        let w: Wire = serde_json::from_slice(bytes).map_err(|e| {
            RecordError::Malformed(Malformation::NotJson {
                category: e.classify(),
                line: e.line(),
                column: e.column(),
            })
        })?;
        let mut endpoint_id = [0u8; 32];
        hex::decode_to_slice(&w.endpoint_id, &mut endpoint_id)
            .map_err(|_| RecordError::Malformed(Malformation::BadHex("endpoint_id")))?;
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&w.sig, &mut signature)
            .map_err(|_| RecordError::Malformed(Malformation::BadHex("sig")))?;
        Ok(Self {
            endpoint_id,
            addrs: w.addrs,
            relay: w.relay,
            issued_at: w.issued_at,
            signature,
        })
    }

    /// Checks that the record belongs to `peer` (same key) and is signed by it.
    pub fn verify_for(&self, peer: &PeerId) -> Result<(), RecordError> {
        let wrong = || RecordError::WrongPeer {
            record: hex::encode(self.endpoint_id),
            peer: peer.to_string(),
        };
        let key = libp2p::identity::PublicKey::try_decode_protobuf(peer.as_ref().digest())
            .ok()
            .and_then(|k| k.try_into_ed25519().ok())
            .ok_or_else(wrong)?;
        if key.to_bytes() != self.endpoint_id {
            return Err(wrong());
        }
        let vk =
            VerifyingKey::from_bytes(&self.endpoint_id).map_err(|_| RecordError::BadSignature)?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        vk.verify(
            &message(
                &self.endpoint_id,
                &self.addrs,
                self.relay.as_deref(),
                self.issued_at,
            ),
            &sig,
        )
        .map_err(|_| RecordError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_of(secret: [u8; 32]) -> PeerId {
        let mut s = secret;
        libp2p::identity::Keypair::ed25519_from_bytes(&mut s)
            .unwrap()
            .public()
            .to_peer_id()
    }

    #[test]
    fn record_verifies_for_its_own_peer_only() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:4000".parse().unwrap()];
        let rec = AddressRecord::sign(&[1; 32], &addrs, Some("https://relay.example:443"), 10);
        let back = AddressRecord::from_bytes(&rec.to_bytes()).unwrap();
        assert_eq!(back, rec);
        back.verify_for(&peer_of([1; 32])).unwrap();
        assert!(matches!(
            back.verify_for(&peer_of([2; 32])),
            Err(RecordError::WrongPeer { .. })
        ));
    }

    #[test]
    fn changed_addresses_break_the_signature() {
        let rec = AddressRecord::sign(&[1; 32], &["127.0.0.1:4000".parse().unwrap()], None, 10);
        let mut moved = rec.clone();
        moved.addrs = vec!["127.0.0.1:6666".parse().unwrap()];
        assert_eq!(
            moved.verify_for(&peer_of([1; 32])),
            Err(RecordError::BadSignature)
        );
        // A relay added by someone else (to pull the node's traffic through it).
        let mut relayed = rec;
        relayed.relay = Some("https://evil.example".into());
        assert_eq!(
            relayed.verify_for(&peer_of([1; 32])),
            Err(RecordError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            AddressRecord::from_bytes(b"{nope"),
            Err(RecordError::Malformed(Malformation::NotJson { .. }))
        ));
        assert!(matches!(
            AddressRecord::from_bytes(&vec![b' '; 5000]),
            Err(RecordError::Malformed(Malformation::TooLarge(5000)))
        ));
    }
}
