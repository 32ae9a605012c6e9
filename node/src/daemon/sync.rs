//! Catalog sync: keeps the verified catalog fresh and tells the DHT what this node holds.
//!
//! Each pass asks the origin and the configured peers at once (the origin wins when it
//! answers), then the head servers the DHT names, then a local publish dir; the head
//! that verifies against the trusted state replaces the held catalog. On failure the
//! last verified catalog stays in use until it expires, and the reason is returned.

use std::{sync::Arc, time::Duration};

use archy_catalog::{Limits, TrustError};
use archy_registry::head::HeadError;

use super::{refusals::Input, HeldCatalog, Node};
use crate::state;

/// At most this many DHT-named head servers are asked in one sync.
const MAX_HEAD_SERVERS: usize = 8;

/// Why a sync found no newer verified head.
#[derive(Debug, thiserror::Error)]
pub(super) enum SyncError {
    #[error("no trust anchor: put the publisher's root.json in the data dir or set `root` in config.toml")]
    NoAnchor,
    #[error("no origin configured")]
    NoSource,
    #[error("{}", .0.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "))]
    Unavailable(Vec<SourceFailure>),
    #[error("the verified head's timestamp does not parse")]
    NoExpiry,
    #[error("cannot save the trusted state: {0}")]
    Save(#[source] std::io::Error),
}

/// What one source of heads answered instead of a head that verifies.
#[derive(Debug, thiserror::Error)]
pub(super) enum SourceFailure {
    /// The origin and the configured peers.
    #[error("{0}")]
    Swarm(HeadError),
    #[error("DHT head servers: {0}")]
    HeadServers(HeadError),
    #[error("{}: head refused: {source}", dir.display())]
    PublishDirRefused {
        dir: std::path::PathBuf,
        source: TrustError,
    },
    #[error("{}: {source}", dir.display())]
    PublishDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl SyncError {
    /// How the sync failed, without what changes from pass to pass (byte counts,
    /// timings, wording): two failures with one fingerprint failed "the same way".
    pub(super) fn fingerprint(&self) -> Vec<FailureMark> {
        let kind = |e: &SyncError| std::mem::discriminant(e);
        match self {
            SyncError::Unavailable(all) => all
                .iter()
                .flat_map(|f| match f {
                    SourceFailure::Swarm(e) | SourceFailure::HeadServers(e) => e
                        .per_source()
                        .into_iter()
                        .map(|e| match e {
                            HeadError::Peer { peer, fault } => {
                                FailureMark::Fault(peer.clone(), std::mem::discriminant(fault))
                            }
                            HeadError::Refused { peer, source } => {
                                FailureMark::Refused(peer.clone(), source.kind())
                            }
                            HeadError::Nobody(_) => FailureMark::Other(kind(self)),
                        })
                        .collect(),
                    SourceFailure::PublishDirRefused { dir, source } => vec![FailureMark::Refused(
                        dir.display().to_string(),
                        source.kind(),
                    )],
                    SourceFailure::PublishDir { dir, source } => {
                        vec![FailureMark::Io(dir.display().to_string(), source.kind())]
                    }
                })
                .collect(),
            other => vec![FailureMark::Other(kind(other))],
        }
    }
}

/// One source's failure in a [`SyncError::fingerprint`]: who failed, and the kind of
/// failure.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FailureMark {
    Fault(
        String,
        std::mem::Discriminant<archy_registry::head::HeadFault>,
    ),
    Refused(String, &'static str),
    Io(String, std::io::ErrorKind),
    Other(std::mem::Discriminant<SyncError>),
}

impl SourceFailure {
    /// Whether a head was had and refused by verification (counted in
    /// `archy_verification_failures_total`), not merely unavailable.
    fn is_refusal(&self) -> bool {
        match self {
            SourceFailure::Swarm(e) | SourceFailure::HeadServers(e) => e.is_refusal(),
            SourceFailure::PublishDirRefused { .. } => true,
            SourceFailure::PublishDir { .. } => false,
        }
    }
}

/// Gets and verifies the newest head: over the swarm from the origin (which wins when
/// it answers) or, when it does not, from peers; else from a local publish dir. Keeps
/// the last verified catalog on failure (and says why).
pub(super) async fn sync_catalog(node: &Node) -> Result<(), SyncError> {
    let Some(trusted) = node.store.lock().await.state.trusted.clone() else {
        return Err(SyncError::NoAnchor);
    };
    let limits = Limits::default();
    let origin = node.cfg.origin.clone();
    let peers = node.cfg.peers.clone();
    let mut why = Vec::new();
    let mut got = None;
    // The catalog accepted last: an unchanged head then costs a timestamp, not a catalog.
    let held = node.head.get();
    let held_expiry = node.catalog.lock().await.as_ref().map(|h| h.expires);
    let sync = |origin: Option<archy_registry::PeerAddr>, peers: Vec<archy_registry::PeerAddr>| {
        let (trusted, held) = (&trusted, &held);
        async move {
            archy_registry::head::sync_head(
                &node.swarm.node,
                origin.as_ref(),
                &peers,
                trusted,
                held.as_deref(),
                &limits,
                Duration::from_secs(3),
            )
            .await
            .map(|s| (s.trusted, s.catalog, s.head, s.source.to_string()))
        }
    };
    if origin.is_some() || !peers.is_empty() {
        match sync(origin.clone(), peers.clone()).await {
            Ok(s) => got = Some(s),
            Err(e) => why.push(SourceFailure::Swarm(e)),
        }
    }
    // Neither the origin nor a configured peer had a head: ask the nodes the DHT names
    // as head servers (their heads are verified like any other). Status shows whom
    // the last sync asked.
    let learned: Vec<_> = match got {
        Some(_) => Vec::new(),
        None => node
            .swarm
            .head_servers()
            .await
            .into_iter()
            .filter(|p| !peers.contains(p) && origin.as_ref() != Some(p))
            .take(MAX_HEAD_SERVERS)
            .collect(),
    };
    if let Ok(mut h) = node.head_servers.lock() {
        h.clone_from(&learned);
    }
    if !learned.is_empty() {
        match sync(None, learned).await {
            Ok(s) => got = Some(s),
            Err(e) => why.push(SourceFailure::HeadServers(e)),
        }
    }
    if got.is_none() {
        if let Some(dir) = node.cfg.origin_dir.clone() {
            match archy_catalog::head::SignedHead::read_publish_dir(&dir) {
                Ok(head) => match archy_catalog::head::verify_head(
                    &trusted,
                    &head,
                    chrono::Utc::now(),
                    &limits,
                ) {
                    Ok((t, c)) => got = Some((t, c, head, "publish dir".into())),
                    Err(source) => why.push(SourceFailure::PublishDirRefused { dir, source }),
                },
                Err(source) => why.push(SourceFailure::PublishDir { dir, source }),
            }
        }
    }
    for failure in &why {
        refused_heads(node, failure);
    }
    let Some((next, catalog, mut head, source)) = got else {
        if why.iter().any(SourceFailure::is_refusal) {
            node.metrics.verification_failures.inc();
        }
        return Err(match why.is_empty() {
            true => SyncError::NoSource,
            false => SyncError::Unavailable(why),
        });
    };
    tracing::debug!(%source, version = catalog.version, "head verified");
    let expires = head.expires(&catalog).ok_or(SyncError::NoExpiry)?;
    if expires - chrono::Utc::now() < chrono::Duration::days(1)
        && held_expiry.is_none_or(|e| e != expires)
    {
        tracing::warn!(%source, expires = %expires.to_rfc3339(), "the catalog expires within a day; the publisher must sign a new timestamp");
    }
    // Peers that trust an older root need the chain: keep every root known that walks
    // to the trusted one.
    let known = held.iter().flat_map(|h| h.roots.clone());
    head.roots = archy_catalog::head::root_chain(&next, known.chain(head.roots), &limits);
    // An unchanged head (the usual pass: same root, timestamp and catalog versions)
    // writes nothing.
    if next != trusted || held.as_ref().is_none_or(|h| h.roots != head.roots) {
        let mut store = node.store.lock().await;
        store.state.trusted = Some(next);
        store.save().map_err(SyncError::Save)?;
        drop(store);
        if let Err(e) = head.save(&node.data.join("head")) {
            tracing::warn!(error = %e, "cannot keep the head for peers");
        }
        node.head.set(head);
        if held.is_none() {
            node.swarm.announce_head_server().await;
        }
    }
    *node.catalog.lock().await = Some(HeldCatalog {
        catalog,
        verified_at: state::now(),
        source,
        expires,
    });
    Ok(())
}

/// Counts (and logs once per source) every head a source sent that was refused: one
/// that did not verify, or a stream that broke the protocol's order or limits.
fn refused_heads(node: &Node, failure: &SourceFailure) {
    let refuse = |source: &str, reason: &dyn std::fmt::Display| {
        node.metrics.refused.refuse(Input::Head, source, reason);
    };
    match failure {
        SourceFailure::Swarm(e) | SourceFailure::HeadServers(e) => {
            for one in e.per_source() {
                match one {
                    HeadError::Refused { peer, source } => refuse(peer, source),
                    HeadError::Peer { peer, fault } if fault.breaks_protocol() => {
                        refuse(peer, fault)
                    }
                    _ => {}
                }
            }
        }
        SourceFailure::PublishDirRefused { dir, source } => {
            refuse(&dir.display().to_string(), source)
        }
        SourceFailure::PublishDir { .. } => {}
    }
}

/// Seeding: every blob the node holds whole, and the head it holds, are announced in
/// the DHT once at start (a fetch announces its blob from its first verified bytes, a
/// first head sync the head); Kademlia republishes the records for as long as the
/// node runs.
pub(super) async fn announce_held(node: Arc<Node>) {
    let swarm = &node.swarm;
    if swarm.dht_addrs().is_empty() {
        return;
    }
    if node.head.get().is_some() {
        swarm.announce_head_server().await;
    }
    match swarm.announce_held().await {
        Ok(held) => tracing::debug!(blobs = held.len(), "announced held blobs"),
        Err(e) => tracing::warn!(error = %e, "cannot list held blobs to announce"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use archy_registry::head::{HeadError, HeadFault};

    use super::{SourceFailure, SyncError};

    fn silent_origin(after: Duration) -> SyncError {
        SyncError::Unavailable(vec![SourceFailure::Swarm(HeadError::Nobody(vec![
            HeadError::Peer {
                peer: "origin".into(),
                fault: HeadFault::Silent(after),
            },
        ]))])
    }

    #[test]
    fn a_failure_is_the_same_when_only_its_details_change() {
        let a = silent_origin(Duration::from_secs(5)).fingerprint();
        assert_eq!(a, silent_origin(Duration::from_secs(6)).fingerprint());
        let no_head = SyncError::Unavailable(vec![SourceFailure::Swarm(HeadError::Peer {
            peer: "origin".into(),
            fault: HeadFault::NoHead,
        })]);
        assert_ne!(a, no_head.fingerprint(), "another kind of fault");
        let other_peer = SyncError::Unavailable(vec![SourceFailure::Swarm(HeadError::Peer {
            peer: "peer-2".into(),
            fault: HeadFault::Silent(Duration::from_secs(5)),
        })]);
        assert_ne!(a, other_peer.fingerprint(), "another source");
        assert_ne!(
            SyncError::NoAnchor.fingerprint(),
            SyncError::NoSource.fingerprint()
        );
        assert_eq!(
            SyncError::NoSource.fingerprint(),
            SyncError::NoSource.fingerprint()
        );
    }
}
