//! The catalog head protocol (ALPN `archy/head/1`): "give me the newest signed head".
//!
//! A client sends the root version it trusts; the server answers with the signed roots
//! newer than that (so the client can walk a key rotation one version at a time), the
//! signed timestamp and the catalog it pins. Any peer may answer, since the documents
//! verify themselves: the client checks them with its [`TrustedState`] (thresholds,
//! expiry, rollback, mix-and-match) before using anything. The origin answers
//! authoritatively; nodes serve the head they last accepted, so the swarm keeps
//! working while the origin is down.
//!
//! Wire format, one bi-directional stream per request:
//! request: JSON `{"root_version": N, "catalog_blake3": "<hex>"}` (at most 1 KiB; the
//! hash of the catalog the client holds is optional), then the client finishes;
//! response: frames `kind (1 byte: b'R' root, b'T' timestamp, b'C' catalog) | len (u32
//! big-endian) | bytes`, roots in ascending version, then T, then C. C is left out when
//! the client already holds that very catalog (a node polling an unchanged head costs
//! the server a timestamp, not the whole catalog); the timestamp still pins its hash, so
//! the client verifies the catalog it holds against it. Every frame is
//! bounded by [`Limits`] (the catalog also by the size its timestamp pins) and checked
//! from its header before its bytes are read; at most [`MAX_ROOTS`] roots are sent.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use archy_catalog::{
    head::{chain_is_whole, document_version, timestamp_body, verify_head, SignedHead},
    Catalog, Limits, TrustError, TrustedState,
};
use iroh::{
    endpoint::Connection,
    protocol::{AcceptError, ProtocolHandler},
};
use serde::{Deserialize, Serialize};

use crate::{PeerAddr, SwarmNode};

/// The head protocol's ALPN.
pub const HEAD_ALPN: &[u8] = b"archy/head/1";
/// Most roots one answer carries.
pub const MAX_ROOTS: usize = 64;

/// Why a head could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The peer could not be asked, or broke the protocol.
    #[error("{peer}: {fault}")]
    Peer { peer: String, fault: HeadFault },
    /// The peer's head did not verify (rollback, expired, bad signatures, ...).
    #[error("{peer}: head refused: {source}")]
    Refused { peer: String, source: TrustError },
    /// Every source failed; each failure, in the order asked.
    #[error("no head from the origin or any peer: {}", list(.0))]
    Nobody(Vec<HeadError>),
}

impl HeadError {
    /// Whether a head was had and refused by verification somewhere (not merely
    /// unavailable): what a node counts as a verification failure.
    pub fn is_refusal(&self) -> bool {
        match self {
            HeadError::Refused { .. } => true,
            HeadError::Peer { .. } => false,
            HeadError::Nobody(all) => all.iter().any(HeadError::is_refusal),
        }
    }
}

impl HeadError {
    /// Each source's own failure (the members of [`HeadError::Nobody`], flattened).
    pub fn per_source(&self) -> Vec<&HeadError> {
        match self {
            HeadError::Nobody(all) => all.iter().flat_map(HeadError::per_source).collect(),
            one => vec![one],
        }
    }
}

fn list(errors: &[HeadError]) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// How asking a peer for its head failed.
#[derive(Debug, thiserror::Error)]
pub enum HeadFault {
    #[error(transparent)]
    Connect(#[from] crate::ConnectError),
    #[error("{what}: {source}")]
    Stream {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no answer within {0:?}")]
    Silent(Duration),
    #[error("more than {MAX_ROOTS} roots")]
    TooManyRoots,
    #[error("frame {} after the timestamp", char::from(*.0))]
    AfterTimestamp(u8),
    #[error("catalog frame before the timestamp")]
    CatalogBeforeTimestamp,
    #[error("unknown frame kind {0:#x}")]
    UnknownFrame(u8),
    #[error("frame {} of {len} bytes: over its limit of {limit}", char::from(*.kind))]
    OverLimit { kind: u8, len: u64, limit: u64 },
    #[error("the peer has no head")]
    NoHead,
    #[error("the peer sent no catalog")]
    NoCatalog,
}

impl HeadFault {
    /// Whether the peer sent what the protocol forbids (frames out of order, of an
    /// unknown kind, or over their limits): a hostile input, not an outage.
    pub fn breaks_protocol(&self) -> bool {
        match self {
            HeadFault::TooManyRoots
            | HeadFault::AfterTimestamp(_)
            | HeadFault::CatalogBeforeTimestamp
            | HeadFault::UnknownFrame(_)
            | HeadFault::OverLimit { .. } => true,
            HeadFault::Connect(_)
            | HeadFault::Stream { .. }
            | HeadFault::Silent(_)
            | HeadFault::NoHead
            | HeadFault::NoCatalog => false,
        }
    }

    fn stream(what: &'static str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Self {
        move |source| HeadFault::Stream { what, source }
    }
}

#[derive(Serialize, Deserialize)]
struct HeadRequest {
    root_version: u64,
    /// BLAKE3 (hex) of the signed catalog the client holds: the server leaves the same
    /// catalog out. (The hash, not the version: a catalog re-signed under the same
    /// version must still reach the client.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    catalog_blake3: Option<String>,
}

/// Serves the current head; [`HeadServer::set`] replaces it (origin reload, a node
/// accepting a newer head).
#[derive(Debug, Clone, Default)]
pub struct HeadServer {
    head: Arc<RwLock<Option<Arc<ServedHead>>>>,
}

/// The head being served, with its catalog's hash computed once (not per request: the
/// catalog may be megabytes), shared by every request and reader (not copied).
#[derive(Debug)]
struct ServedHead {
    head: Arc<SignedHead>,
    catalog_blake3: String,
}

impl HeadServer {
    pub fn set(&self, head: SignedHead) {
        let served = ServedHead {
            catalog_blake3: archy_catalog::ContentHash::of(&head.catalog).to_hex(),
            head: Arc::new(head),
        };
        *self.head.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(served));
    }

    /// The head being served (shared, not copied).
    pub fn get(&self) -> Option<Arc<SignedHead>> {
        self.current().map(|s| s.head.clone())
    }

    fn current(&self) -> Option<Arc<ServedHead>> {
        self.head.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ProtocolHandler for HeadServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let req = recv
                .read_to_end(1024)
                .await
                .map_err(AcceptError::from_err)?;
            let Ok(req) = serde_json::from_slice::<HeadRequest>(&req) else {
                conn.close(2u32.into(), b"bad request");
                return Ok(());
            };
            let Some(served) = self.current() else {
                let _ = send.finish();
                continue;
            };
            let head = &served.head;
            let mut out = Vec::new();
            let newer = head.roots.iter().filter(|(v, _)| *v > req.root_version);
            for (_, r) in newer.take(MAX_ROOTS) {
                frame(&mut out, b'R', r);
            }
            frame(&mut out, b'T', &head.timestamp);
            if req.catalog_blake3.as_ref() != Some(&served.catalog_blake3) {
                frame(&mut out, b'C', &head.catalog);
            }
            send.write_all(&out).await.map_err(AcceptError::from_err)?;
            let _ = send.finish();
        }
        Ok(())
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A signed catalog the asker already holds, with its hash (computed once, however
/// many peers a sync asks: the catalog may be megabytes).
#[derive(Debug, Clone)]
pub struct KnownCatalog<'a> {
    bytes: &'a [u8],
    blake3: String,
}

impl<'a> KnownCatalog<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            blake3: archy_catalog::ContentHash::of(bytes).to_hex(),
        }
    }
}

/// Asks `peer` for its head, reading no more than `limits` allow. `held_catalog` is the
/// signed catalog the caller already has: when the peer's head has the same catalog,
/// the peer does not send it again and the answer carries `held_catalog` instead
/// (still to be verified against the timestamp, like any catalog).
pub async fn fetch_head(
    node: &SwarmNode,
    peer: &PeerAddr,
    root_version: u64,
    held_catalog: Option<&KnownCatalog<'_>>,
    limits: &Limits,
    timeout: Duration,
) -> Result<SignedHead, HeadError> {
    let err = |fault: HeadFault| HeadError::Peer {
        peer: peer.to_string(),
        fault,
    };
    let work = async {
        let conn = node.connect_alpn(peer, HEAD_ALPN, timeout).await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| HeadFault::stream("open a stream")(e.into()))?;
        let req = serde_json::to_vec(&HeadRequest {
            root_version,
            catalog_blake3: held_catalog.map(|c| c.blake3.clone()),
        })
        .map_err(|e| HeadFault::stream("encode the request")(e.into()))?;
        send.write_all(&req)
            .await
            .map_err(|e| HeadFault::stream("send the request")(e.into()))?;
        send.finish()
            .map_err(|e| HeadFault::stream("send the request")(e.into()))?;
        let mut head = read_frames(&mut recv, limits).await?;
        if head.catalog.is_empty() {
            match held_catalog {
                Some(held) => head.catalog = held.bytes.to_vec(),
                None => return Err(HeadFault::NoCatalog),
            }
        }
        Ok(head)
    };
    tokio::time::timeout(timeout * 4, work)
        .await
        .map_err(|_| err(HeadFault::Silent(timeout * 4)))?
        .map_err(err)
}

/// Reads a head's frames one at a time, each checked before its bytes are read: the
/// kind must be known and in order (roots, the timestamp, then the catalog), and the
/// length within [`frame_limit`]. A peer can make a node read and hold no more than one
/// frame's limit, and for the catalog no more than its timestamp pins.
async fn read_frames(
    recv: &mut iroh::endpoint::RecvStream,
    limits: &Limits,
) -> Result<SignedHead, HeadFault> {
    let mut head = SignedHead::default();
    let mut pinned: Option<u64> = None;
    let mut got_t = false;
    loop {
        let mut header = [0u8; 5];
        match recv.read_exact(&mut header).await {
            Ok(()) => {}
            Err(iroh::endpoint::ReadExactError::FinishedEarly(0)) => break,
            Err(e) => return Err(HeadFault::stream("read a frame header")(e.into())),
        }
        let [kind, a, b, c, d] = header;
        let len = u64::from(u32::from_be_bytes([a, b, c, d]));
        let limit = frame_limit(kind, got_t, pinned, head.roots.len(), limits)?;
        if len > limit {
            return Err(HeadFault::OverLimit { kind, len, limit });
        }
        let mut doc = vec![0u8; len as usize];
        recv.read_exact(&mut doc)
            .await
            .map_err(|e| HeadFault::stream("read a frame")(e.into()))?;
        match kind {
            b'R' => head.roots.push((document_version(&doc), doc)),
            b'T' => {
                // Unverified here; verification checks the catalog against it later.
                pinned = timestamp_body(&doc).map(|t| t.catalog.size);
                head.timestamp = doc;
                got_t = true;
            }
            _ => head.catalog = doc,
        }
    }
    if !got_t {
        return Err(HeadFault::NoHead);
    }
    Ok(head)
}

/// The most bytes the next frame of `kind` may have, or why it may not come at all:
/// roots (at most [`MAX_ROOTS`]) before the timestamp, one timestamp, and one catalog
/// after it, no longer than the size the timestamp pins.
fn frame_limit(
    kind: u8,
    got_t: bool,
    pinned: Option<u64>,
    roots: usize,
    limits: &Limits,
) -> Result<u64, HeadFault> {
    match (kind, got_t) {
        (b'R', false) if roots < MAX_ROOTS => Ok(limits.root),
        (b'R', false) => Err(HeadFault::TooManyRoots),
        (b'T', false) => Ok(limits.timestamp),
        (b'C', true) => Ok(pinned.map_or(limits.catalog, |p| p.min(limits.catalog))),
        (b'R' | b'T', true) => Err(HeadFault::AfterTimestamp(kind)),
        (b'C', false) => Err(HeadFault::CatalogBeforeTimestamp),
        (other, _) => Err(HeadFault::UnknownFrame(other)),
    }
}

/// Where a head came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadSource {
    Origin,
    Peer(String),
}

impl std::fmt::Display for HeadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadSource::Origin => f.write_str("origin"),
            HeadSource::Peer(p) => write!(f, "peer {p}"),
        }
    }
}

/// A head that verified, and what accepting it means.
#[derive(Debug, Clone)]
pub struct SyncedHead {
    /// The trusted state after accepting it (persist this).
    pub trusted: TrustedState,
    pub catalog: Catalog,
    pub head: SignedHead,
    pub source: HeadSource,
}

/// Gets a verified head: the origin's when it answers (origin always wins), else the
/// newest one any peer offers that verifies. Refusals (rollback, expired, bad
/// signatures) are reported with the peer that offered them. `held` is the head
/// accepted last: its catalog is not sent again (see [`fetch_head`]), and while its
/// root chain is not whole (a node anchored at a later root), the older roots are asked
/// for too; keep them with [`root_chain`] so this node can serve peers that trust an
/// older root.
pub async fn sync_head(
    node: &SwarmNode,
    origin: Option<&PeerAddr>,
    peers: &[PeerAddr],
    trusted: &TrustedState,
    held: Option<&SignedHead>,
    limits: &Limits,
    timeout: Duration,
) -> Result<SyncedHead, HeadError> {
    let now = chrono::Utc::now();
    let mut why = Vec::new();
    let held_catalog = held.map(|h| KnownCatalog::new(&h.catalog));
    let held_catalog = held_catalog.as_ref();
    let held_roots = held.map(|h| h.roots.as_slice()).unwrap_or_default();
    let roots_from = if chain_is_whole(trusted, held_roots) {
        trusted.root_version
    } else {
        1
    };
    if let Some(o) = origin {
        match fetch_head(node, o, roots_from, held_catalog, limits, timeout).await {
            Ok(head) => {
                return match verify_head(trusted, &head, now, limits) {
                    Ok((trusted, catalog)) => Ok(SyncedHead {
                        head,
                        trusted,
                        catalog,
                        source: HeadSource::Origin,
                    }),
                    Err(source) => Err(HeadError::Refused {
                        peer: format!("origin {o}"),
                        source,
                    }),
                };
            }
            Err(HeadError::Peer { peer, fault }) => why.push(HeadError::Peer {
                peer: format!("origin {peer}"),
                fault,
            }),
            Err(e) => why.push(e),
        }
    }
    let answers = futures_util::future::join_all(
        peers
            .iter()
            .map(|p| fetch_head(node, p, roots_from, held_catalog, limits, timeout)),
    )
    .await;
    let mut best: Option<SyncedHead> = None;
    for (p, answer) in peers.iter().zip(answers) {
        match answer.map(|h| (verify_head(trusted, &h, now, limits), h)) {
            Ok((Ok((t, catalog)), head)) => {
                if best
                    .as_ref()
                    .is_none_or(|b| t.timestamp_version > b.trusted.timestamp_version)
                {
                    best = Some(SyncedHead {
                        head,
                        trusted: t,
                        catalog,
                        source: HeadSource::Peer(p.to_string()),
                    });
                }
            }
            Ok((Err(source), _)) => why.push(HeadError::Refused {
                peer: p.to_string(),
                source,
            }),
            Err(e) => why.push(e),
        }
    }
    best.ok_or(HeadError::Nobody(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_among_failures_is_still_a_refusal() {
        let unavailable = || HeadError::Peer {
            peer: "p1".into(),
            fault: HeadFault::NoHead,
        };
        let refused = HeadError::Refused {
            peer: "p2".into(),
            source: TrustError::TooLarge {
                role: archy_catalog::Role::Catalog,
                size: 2,
                limit: 1,
            },
        };
        assert!(!HeadError::Nobody(vec![unavailable()]).is_refusal());
        let both = HeadError::Nobody(vec![unavailable(), refused]);
        assert!(both.is_refusal());
        assert_eq!(
            both.to_string(),
            "no head from the origin or any peer: p1: the peer has no head; p2: head refused: \
             document too large: catalog is 2 bytes, the limit is 1"
        );
    }

    #[test]
    fn frames_come_in_order_and_within_their_limits() {
        let l = Limits::default();
        assert_eq!(frame_limit(b'R', false, None, 0, &l).ok(), Some(l.root));
        assert!(
            frame_limit(b'R', false, None, MAX_ROOTS, &l).is_err(),
            "too many roots"
        );
        assert_eq!(
            frame_limit(b'T', false, None, 2, &l).ok(),
            Some(l.timestamp)
        );
        assert!(
            frame_limit(b'T', true, None, 0, &l).is_err(),
            "a second timestamp"
        );
        assert!(
            frame_limit(b'R', true, None, 0, &l).is_err(),
            "a root after the timestamp"
        );
        assert!(
            frame_limit(b'C', false, None, 0, &l).is_err(),
            "a catalog before its timestamp"
        );
        assert_eq!(
            frame_limit(b'C', true, Some(700), 0, &l).ok(),
            Some(700),
            "the pinned size"
        );
        assert_eq!(
            frame_limit(b'C', true, Some(u64::MAX), 0, &l).ok(),
            Some(l.catalog),
            "never over the limit"
        );
        assert_eq!(frame_limit(b'C', true, None, 0, &l).ok(), Some(l.catalog));
        assert!(frame_limit(b'X', false, None, 0, &l).is_err());
    }
}
