//! What this node stores for others.
//!
//! Kademlia would store any record and any provider record a peer sends it
//! (`StoreInserts::Unfiltered`), so one hostile peer could fill a node's memory with
//! records under keys of its choosing. Here every inbound record passes [`InboundPolicy`]
//! first (`StoreInserts::FilterBoth`):
//!
//! - a value record must be an address record under `/archy/iroh-addr/<peer>` that
//!   verifies for that very peer (signed by its key);
//! - a provider record must be under an Archy key (`/archy/blob/<32 bytes>` or
//!   `/archy/heads`), and each providing peer, and all peers together, may have only so
//!   many accepted within one record lifetime.
//!
//! A refused record is counted, and logged once per source peer.

use std::collections::{HashMap, HashSet};

use libp2p::{
    kad::{ProviderRecord, Record},
    PeerId,
};

use crate::record::AddressRecord;

/// Limits on what others may make this node store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundLimits {
    /// Provider records accepted from one providing peer per record lifetime.
    pub providers_per_peer: usize,
    /// Provider records accepted from all peers per record lifetime.
    pub providers: usize,
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self {
            providers_per_peer: 10_000,
            providers: 200_000,
        }
    }
}

/// The decisions, and what was refused so far.
#[derive(Debug, Default)]
pub(crate) struct InboundPolicy {
    limits: InboundLimits,
    per_peer: HashMap<PeerId, usize>,
    providers: usize,
    warned: HashSet<PeerId>,
    pub(crate) refused: u64,
}

/// Why a record a peer sent is not stored.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("a record under a key that is not Archy's")]
    ForeignRecordKey,
    #[error("an address record for no valid peer id")]
    NoPeerId,
    #[error(transparent)]
    BadRecord(#[from] crate::RecordError),
    #[error("a provider record under a key that is not Archy's")]
    ForeignProviderKey,
    #[error("more than {0} provider records from one peer")]
    TooManyFromPeer(usize),
    #[error("more than {0} provider records in all")]
    TooMany(usize),
    #[error("the record store refused it: {0}")]
    Store(#[from] libp2p::kad::store::Error),
}

impl InboundPolicy {
    pub(crate) fn new(limits: InboundLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Whether to store a value record `source` sent.
    pub(crate) fn record(&self, record: &Record) -> Result<(), Refusal> {
        let key = record.key.as_ref();
        let peer = key
            .strip_prefix(b"/archy/iroh-addr/".as_slice())
            .ok_or(Refusal::ForeignRecordKey)?;
        let peer = PeerId::from_bytes(peer).map_err(|_| Refusal::NoPeerId)?;
        AddressRecord::from_bytes(&record.value).and_then(|r| r.verify_for(&peer).map(|_| ()))?;
        Ok(())
    }

    /// Whether to store a provider record (its provider is the peer that sent it:
    /// Kademlia drops one that names another).
    pub(crate) fn provider(&mut self, record: &ProviderRecord) -> Result<(), Refusal> {
        let key = record.key.as_ref();
        let archy = key == b"/archy/heads"
            || key
                .strip_prefix(b"/archy/blob/".as_slice())
                .is_some_and(|h| h.len() == 32);
        if !archy {
            return Err(Refusal::ForeignProviderKey);
        }
        let from_peer = self.per_peer.entry(record.provider).or_default();
        if *from_peer >= self.limits.providers_per_peer {
            return Err(Refusal::TooManyFromPeer(self.limits.providers_per_peer));
        }
        if self.providers >= self.limits.providers {
            return Err(Refusal::TooMany(self.limits.providers));
        }
        *from_peer += 1;
        self.providers += 1;
        Ok(())
    }

    /// Counts a refusal, and logs it the first time `source` gets one.
    pub(crate) fn refuse(&mut self, source: PeerId, why: &Refusal) {
        self.refused += 1;
        if self.warned.insert(source) {
            tracing::warn!(peer = %source, reason = %why, "refused a DHT record (further refusals from this peer are counted, not logged)");
        }
    }

    /// Starts a new record lifetime: what was accepted before has expired by now.
    pub(crate) fn new_lifetime(&mut self) {
        self.per_peer.clear();
        self.providers = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::kad::RecordKey;

    fn provider(key: &[u8], peer: PeerId) -> ProviderRecord {
        ProviderRecord::new(RecordKey::new(&key), peer, Vec::new())
    }

    #[test]
    fn only_archy_keys_within_the_caps_are_stored() {
        let mut p = InboundPolicy::new(InboundLimits {
            providers_per_peer: 3,
            providers: 5,
        });
        let (a, b) = (PeerId::random(), PeerId::random());
        let blob = |n: u8| {
            let mut k = b"/archy/blob/".to_vec();
            k.extend([n; 32]);
            k
        };
        assert!(p.provider(&provider(b"/ipfs/whatever", a)).is_err());
        assert!(p.provider(&provider(b"/archy/blob/short", a)).is_err());
        for n in 0..3 {
            p.provider(&provider(&blob(n), a))
                .expect("under the per-peer cap");
        }
        let e = p
            .provider(&provider(&blob(9), a))
            .expect_err("per-peer cap");
        assert!(matches!(e, Refusal::TooManyFromPeer(3)), "{e}");
        p.provider(&provider(b"/archy/heads", b))
            .expect("b's first");
        p.provider(&provider(&blob(1), b)).expect("b's second");
        let e = p.provider(&provider(&blob(2), b)).expect_err("total cap");
        assert!(matches!(e, Refusal::TooMany(_)), "{e}");
        p.new_lifetime();
        p.provider(&provider(&blob(9), a)).expect("a new lifetime");

        let mut secret = [7u8; 32];
        let me = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
            .expect("key")
            .public()
            .to_peer_id();
        let mut key = b"/archy/iroh-addr/".to_vec();
        key.extend(me.to_bytes());
        let signed =
            AddressRecord::sign(&[7u8; 32], &["127.0.0.1:1".parse().expect("addr")], None, 1);
        p.record(&Record::new(RecordKey::new(&key), signed.to_bytes()))
            .expect("a record signed by the peer it names");
        let mut other = b"/archy/iroh-addr/".to_vec();
        other.extend(a.to_bytes());
        assert!(
            matches!(
                p.record(&Record::new(RecordKey::new(&other), signed.to_bytes())),
                Err(Refusal::BadRecord(_))
            ),
            "the same record under another peer"
        );
        let forged = Record::new(RecordKey::new(&b"/archy/iroh-addr/x"), b"{}".to_vec());
        assert!(p.record(&forged).is_err());
        let mut key = b"/archy/iroh-addr/".to_vec();
        key.extend(a.to_bytes());
        assert!(p
            .record(&Record::new(RecordKey::new(&key), b"garbage".to_vec()))
            .is_err());
        assert!(matches!(
            p.record(&Record::new(RecordKey::new(&b"/other"), Vec::new())),
            Err(Refusal::ForeignRecordKey)
        ));
        p.refuse(a, &Refusal::ForeignRecordKey);
        p.refuse(a, &Refusal::NoPeerId);
        assert_eq!(p.refused, 2);
    }
}
