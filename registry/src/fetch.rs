//! One blob from many providers at once: the I/O half of the swarm fetch.
//!
//! Every provider gets a worker with one QUIC connection. A peer's worker also polls
//! the peer's bitfield (an iroh-blobs observe request, cancelled after its first answer)
//! every `observe_every` until the peer holds the whole blob, so pieces a peer is still
//! downloading become available from it soon after it has verified them. (Following the
//! observe stream instead costs a message per 16 KiB the peer stores, to every
//! observer: with N peers all downloading, N² streams of tiny messages.) Workers ask
//! the [`PieceBoard`] for their next piece and fetch it with an iroh-blobs GET for just
//! that chunk range; every chunk is BLAKE3-verified as it streams in and written to the
//! store, so nothing verified is ever fetched twice, not after a provider dies mid-piece
//! and not after the whole fetch is interrupted and started again (resume).
//!
//! Each worker keeps `requests_per_provider` pieces in flight on its connection (one QUIC
//! stream each), so a provider is never idle while a request turns around. A piece counts
//! as verified when the store holds all of it once its request has ended (asked of the
//! store, not taken from the provider's word). The fetch holds an observer on its own
//! store entry for its whole run, which keeps the entry loaded, so the store does not
//! write out (and fsync) the partial entry between pieces; it never reads it (following
//! it cost a wake-up per 16 KiB stored).
//!
//! Web seeds (HTTP hosts that serve the blob and its hash tree, see [`crate::web_seed`])
//! take part like the origin: they hold everything, and are asked for the pieces no
//! live peer holds or is getting. Each piece comes as one `Range` request, is checked
//! against the signed hash with the tree's hashes and imported into the store only
//! once verified.
//!
//! A provider is dropped for good when it cannot be reached, sends bytes that fail
//! verification, closes the connection, or stalls three times; its pieces go back to
//! the others. A stalled piece (no bytes for `stall_timeout`) goes back at once, so a
//! slow peer ends up with few pieces and the endgame duplicates the last ones.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use archy_catalog::ContentHash;
use bao_tree::{ChunkNum, ChunkRanges};
use futures_util::{stream::FuturesUnordered, StreamExt};
use iroh::endpoint::Connection;
use iroh_blobs::{
    api::remote::GetProgressItem,
    get::{fsm::DecodeError, GetError},
    protocol::{GetRequest, ObserveRequest},
    Hash,
};
use tokio::sync::{mpsc, watch, Notify};
use tracing::Instrument;

use crate::{
    schedule::{id_seed, PieceBoard, ProviderView, CHUNK},
    web_seed::{WebSeed, WebSeedFault},
    PeerAddr, SwarmError, SwarmNode,
};

/// Knobs of one fetch; the defaults suit images of a few MiB to a few GiB.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Size of the pieces handed to providers.
    pub piece_bytes: u64,
    /// Longest a provider may take to accept a connection.
    pub connect_timeout: Duration,
    /// A piece with no bytes for this long goes to someone else.
    pub stall_timeout: Duration,
    /// The fetch fails when no verified byte arrives for this long.
    pub idle_timeout: Duration,
    /// Pieces each provider has in flight at once.
    pub requests_per_provider: usize,
    /// How often a peer that does not hold the whole blob is asked for its bitfield.
    pub observe_every: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            piece_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            requests_per_provider: 2,
            observe_every: Duration::from_millis(100),
        }
    }
}

/// Where a fetch stands, published while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStatus {
    pub size: u64,
    /// Verified bytes held (including what was held before the fetch).
    pub verified: u64,
    /// Payload bytes received from each provider so far.
    pub received: BTreeMap<String, u64>,
    /// Providers dropped, with the reason.
    pub failed: BTreeMap<String, String>,
}

/// What a fetch did: bytes from each provider, and which ones failed and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    pub size: u64,
    pub bytes_by_provider: BTreeMap<String, u64>,
    pub failed_providers: BTreeMap<String, String>,
    /// Bytes already held before the fetch started (resume).
    pub already_held: u64,
    pub elapsed: Duration,
}

/// Why a fetch ended without the whole blob verified.
#[derive(Debug, thiserror::Error)]
pub enum FetchFailure {
    /// Nobody was there to ask: no provider named, found or configured.
    #[error("no providers")]
    NoProviders,
    /// No provider told the blob's size: what each one said.
    #[error("no provider told the size: {}", list(.0))]
    SizeUnknown(Vec<(PeerAddr, String)>),
    /// Providers were asked and dropped: each one's reason (as in
    /// [`FetchReport::failed_providers`]).
    #[error("{}", list(.0))]
    ProvidersFailed(Vec<(String, String)>),
    /// Every provider stayed, but none had the pieces still missing.
    #[error("no provider had the missing pieces ({verified} of {size} bytes verified)")]
    PiecesMissing { verified: u64, size: u64 },
}

fn list<P: std::fmt::Display>(all: &[(P, String)]) -> String {
    let each: Vec<String> = all.iter().map(|(p, why)| format!("{p}: {why}")).collect();
    each.join("; ")
}

/// A fetch being set up: `node.fetch(hash).size(n).origin(a).peers(ps).run().await`.
#[derive(Debug)]
pub struct Fetch<'a> {
    node: &'a SwarmNode,
    hash: ContentHash,
    size: Option<u64>,
    origin: Option<PeerAddr>,
    peers: Vec<PeerAddr>,
    web_seeds: Vec<String>,
    more_peers: Option<mpsc::Receiver<PeerAddr>>,
    progress: Option<watch::Sender<FetchStatus>>,
    options: FetchOptions,
}

impl<'a> Fetch<'a> {
    pub(crate) fn new(node: &'a SwarmNode, hash: ContentHash) -> Self {
        Self {
            node,
            hash,
            size: None,
            origin: None,
            peers: Vec::new(),
            web_seeds: Vec::new(),
            more_peers: None,
            progress: None,
            options: FetchOptions::default(),
        }
    }

    /// The blob's size as the signed catalog gives it (asked from a provider otherwise;
    /// either way the bytes are verified against the hash).
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// The origin: holds everything, used for pieces no peer can give.
    pub fn origin(mut self, origin: Option<PeerAddr>) -> Self {
        self.origin = origin;
        self
    }

    pub fn peers(mut self, peers: impl IntoIterator<Item = PeerAddr>) -> Self {
        self.peers.extend(peers);
        self
    }

    /// Web seeds: HTTP(S) URLs serving the blob, and its hash tree at `<url>.obao`.
    /// Asked for ranges like the origin; one without a hash tree is dropped (its
    /// ranges could not be verified). Needs the size (signed) to be given.
    pub fn web_seeds(mut self, urls: impl IntoIterator<Item = String>) -> Self {
        for url in urls {
            if !self.web_seeds.contains(&url) {
                self.web_seeds.push(url);
            }
        }
        self
    }

    /// Providers learned while the fetch runs (from the DHT, say) join it.
    pub fn more_peers(mut self, rx: mpsc::Receiver<PeerAddr>) -> Self {
        self.more_peers = Some(rx);
        self
    }

    pub fn progress(mut self, tx: watch::Sender<FetchStatus>) -> Self {
        self.progress = Some(tx);
        self
    }

    pub fn options(mut self, options: FetchOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the fetch to a complete, verified blob in the store, or an error naming
    /// every provider that failed and why.
    pub async fn run(self) -> Result<FetchReport, SwarmError> {
        let span = tracing::info_span!("fetch", hash = %self.hash.to_hex().get(..12).unwrap_or(""));
        self.run_inner().instrument(span).await
    }

    async fn run_inner(self) -> Result<FetchReport, SwarmError> {
        let started = Instant::now();
        let hash = self.hash;
        let fail = |failure: FetchFailure| SwarmError::Fetch { hash, failure };
        let local = self.node.held_ranges(&hash).await?;
        let mut providers: Vec<(PeerAddr, bool)> = Vec::new();
        if let Some(o) = &self.origin {
            providers.push((o.clone(), true));
        }
        for p in &self.peers {
            if !providers.iter().any(|(q, _)| q == p) && p.id != self.node.addr().id {
                providers.push((p.clone(), false));
            }
        }
        let size = match (self.size, local.1) {
            (Some(s), _) => s,
            (None, Some(s)) => s,
            (None, None) => self.ask_size(&providers).await.map_err(fail)?,
        };
        let missing = ChunkRanges::all().difference(&local.0);
        let seed = id_seed(&self.node.addr().id);
        let board = PieceBoard::new(size, &missing, self.options.piece_bytes, seed);
        let already_held = size - board.remaining_bytes(size);
        if board.is_complete() && self.node.has(&hash).await? {
            return Ok(FetchReport {
                size,
                already_held: size,
                elapsed: started.elapsed(),
                ..FetchReport::default()
            });
        }
        if providers.is_empty() && self.web_seeds.is_empty() && self.more_peers.is_none() {
            return Err(fail(FetchFailure::NoProviders));
        }
        let ctx = Ctx {
            node: self.node,
            content: hash,
            hash: crate::node::to_hash(&hash),
            size,
            total_chunks: size.div_ceil(CHUNK).max(1),
            options: self.options.clone(),
            shared: Mutex::new(Shared {
                board,
                views: Vec::new(),
                names: Vec::new(),
                received: Vec::new(),
                failed: BTreeMap::new(),
            }),
            changed: Notify::new(),
            offered: Notify::new(),
            progress: self.progress,
        };
        let hold_store_entry = ctx.hold_store_entry();
        tokio::pin!(hold_store_entry);
        let mut workers = FuturesUnordered::new();
        let ours = self.node.local_ips();
        for (addr, origin) in providers {
            let far = !origin && !is_near(&ours, addr.socket.ip());
            let i = ctx.add_provider(addr.to_string(), id_seed(&addr.id), origin, far);
            workers.push(ctx.worker(i, Provider::Peer(addr)));
        }
        for url in self.web_seeds {
            // Held whole, asked after the peers: like the origin.
            let seed = id_seed(blake3::hash(url.as_bytes()).as_bytes());
            let i = ctx.add_provider(url.clone(), seed, true, false);
            workers.push(ctx.worker(i, Provider::Web(url)));
        }
        let mut more = self.more_peers;
        let mut last_verified = (already_held, Instant::now());
        let mut last_sync: Option<Instant> = None;
        loop {
            if ctx.lock().board.is_complete() {
                break;
            }
            let status = ctx.status();
            if let Some(tx) = &ctx.progress {
                tx.send_replace(status.clone());
            }
            let verified = status.verified;
            if verified > last_verified.0 {
                // Make the store's record of the partial blob durable about once a
                // second, so a node killed mid-download resumes from what it verified.
                // In its own task: the workers are polled by this loop and must not wait.
                if last_sync.is_none_or(|t: Instant| t.elapsed() >= SYNC_EVERY) {
                    last_sync = Some(Instant::now());
                    let store = ctx.node.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.sync_db().await {
                            tracing::warn!(error = %e, "cannot sync the blob store");
                        }
                    });
                }
                last_verified = (verified, Instant::now());
            } else if last_verified.1.elapsed() > ctx.options.idle_timeout {
                break;
            }
            tokio::select! {
                Some(()) = workers.next() => {}
                Some(addr) = async { match more.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                    let known = ctx.lock().names.contains(&addr.to_string());
                    if !known && addr.id != self.node.addr().id {
                        tracing::debug!(provider = %addr, "a holder the DHT found joins");
                        let far = !is_near(&ours, addr.socket.ip());
                        let i = ctx.add_provider(addr.to_string(), id_seed(&addr.id), false, far);
                        workers.push(ctx.worker(i, Provider::Peer(addr)));
                    }
                }
                _ = ctx.changed.notified() => {}
                () = &mut hold_store_entry => {}
                // Also the progress tick: bytes in flight are reported from here.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            if workers.is_empty() && more.is_none() {
                break;
            }
        }
        drop(workers);
        let status = ctx.status();
        if let Some(tx) = &ctx.progress {
            tx.send_replace(status.clone());
        }
        let complete = self.node.has(&hash).await?;
        let shared = ctx.lock();
        let report = FetchReport {
            size,
            bytes_by_provider: status
                .received
                .into_iter()
                .filter(|(_, b)| *b > 0)
                .collect(),
            failed_providers: status.failed,
            already_held,
            elapsed: started.elapsed(),
        };
        if complete {
            tracing::info!(elapsed = ?report.elapsed, providers = shared.names.len(), "fetched and verified");
            return Ok(report);
        }
        Err(fail(match report.failed_providers.is_empty() {
            true => FetchFailure::PiecesMissing {
                verified: status.verified,
                size,
            },
            false => FetchFailure::ProvidersFailed(report.failed_providers.into_iter().collect()),
        }))
    }

    /// The blob's size as a provider reports it (verified later with the bytes); else
    /// what each provider said.
    async fn ask_size(&self, providers: &[(PeerAddr, bool)]) -> Result<u64, FetchFailure> {
        let mut why = Vec::new();
        for (p, _) in providers {
            let conn = match self.node.connect(p, self.options.connect_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    why.push((p.clone(), e.to_string()));
                    continue;
                }
            };
            let mut s = self
                .node
                .store
                .remote()
                .observe(conn, ObserveRequest::new(crate::node::to_hash(&self.hash)))
                .boxed();
            match tokio::time::timeout(self.options.connect_timeout, s.next()).await {
                Ok(Some(Ok(b))) if b.size() > 0 => return Ok(b.size()),
                Ok(Some(Err(e))) => why.push((p.clone(), format!("observe: {e}"))),
                _ => why.push((p.clone(), "does not know the blob".to_string())),
            }
        }
        Err(match why.is_empty() {
            true => FetchFailure::NoProviders,
            false => FetchFailure::SizeUnknown(why),
        })
    }
}

struct Shared {
    board: PieceBoard,
    views: Vec<ProviderView>,
    names: Vec<String>,
    received: Vec<u64>,
    failed: BTreeMap<String, String>,
}

struct Ctx<'a> {
    node: &'a SwarmNode,
    content: ContentHash,
    /// The same hash, as iroh-blobs names it.
    hash: Hash,
    size: u64,
    total_chunks: u64,
    options: FetchOptions,
    shared: Mutex<Shared>,
    /// Woken when a piece completes or goes back, or a provider is dropped.
    changed: Notify,
    /// Woken when a peer's bitfield grows (idle workers may find work).
    offered: Notify,
    progress: Option<watch::Sender<FetchStatus>>,
}

/// Who a worker fetches from.
enum Provider {
    Peer(PeerAddr),
    /// A web seed's URL.
    Web(String),
}

/// Where a worker's pieces come from, once it is connected.
#[derive(Clone, Copy)]
enum PieceSource<'s> {
    Peer(&'s Connection),
    Web(&'s Arc<WebSeed>),
}

impl PieceSource<'_> {
    /// Whether the peer is reached only through a relay right now.
    fn relayed(&self) -> bool {
        match self {
            Self::Peer(conn) => conn.paths().iter().any(|p| {
                p.is_selected() && matches!(p.remote_addr(), iroh::TransportAddr::Relay(_))
            }),
            Self::Web(_) => false,
        }
    }

    /// Whether the provider is gone for good (a peer closed its connection).
    fn closed(&self) -> bool {
        match self {
            Self::Peer(conn) => conn.close_reason().is_some(),
            Self::Web(_) => false,
        }
    }
}

/// How one piece request ended.
enum PieceEnd {
    Got,
    /// Another worker finished the piece first (endgame).
    Cancelled,
    /// The provider sent bytes that failed BLAKE3 verification.
    BadData(String),
    /// The provider cannot serve this fetch at all (a web seed without ranges).
    Unusable(String),
    Stalled,
    Failed(String),
}

/// How often a fetch that is making progress syncs the store's metadata.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Consecutive stalls or failures after which a provider is dropped.
const MAX_STRIKES: u32 = 3;

impl Ctx<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A poisoned lock means a worker panicked; the data is still consistent
        // (every update is a single assignment), so keep going.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a provider named `name` (what reports call it), ranked by `seed`.
    fn add_provider(&self, name: String, seed: u64, origin: bool, far: bool) -> usize {
        let mut s = self.lock();
        s.views.push(ProviderView {
            far,
            // A peer's bitfield arrives by observe; until then it is assumed to hold
            // nothing. The origin holds everything.
            has: if origin {
                ChunkRanges::all()
            } else {
                ChunkRanges::empty()
            },
            origin,
            relayed: false,
            alive: true,
            known: origin,
            grew_at: None,
            own_growth_at: None,
            seed,
        });
        s.names.push(name);
        s.received.push(0);
        s.views.len() - 1
    }

    fn status(&self) -> FetchStatus {
        let s = self.lock();
        FetchStatus {
            size: self.size,
            verified: self.size - s.board.remaining_bytes(self.size),
            received: s
                .names
                .iter()
                .cloned()
                .zip(s.received.iter().copied())
                .collect(),
            failed: s.failed.clone(),
        }
    }

    /// Wakes the main loop (which publishes the status) and waiting workers.
    fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until a piece completes or goes back, a provider is dropped, or a peer's
    /// bitfield grows.
    async fn changed_or_offered(&self) {
        tokio::select! {
            () = self.changed.notified() => {}
            () = self.offered.notified() => {}
        }
    }

    /// What a piece in flight waits for besides its bytes: [`Self::changed_or_offered`]
    /// from outside, only a change of the board from a LAN peer.
    async fn news_for_piece(&self, outside: bool) {
        match outside {
            true => self.changed_or_offered().await,
            false => self.changed.notified().await,
        }
    }

    fn drop_provider(&self, i: usize, why: String) {
        let mut s = self.lock();
        s.views[i].alive = false;
        let name = s.names[i].clone();
        tracing::warn!(provider = %name, reason = %why, "provider dropped");
        s.failed.insert(name, why);
        drop(s);
        self.notify_changed();
    }

    /// Fetches pieces from provider `i` until the blob is complete or the provider is
    /// dropped.
    async fn worker(&self, i: usize, provider: Provider) {
        match provider {
            Provider::Peer(addr) => {
                let span = tracing::debug_span!("provider", %addr);
                self.peer_worker(i, addr).instrument(span).await
            }
            Provider::Web(url) => {
                let span = tracing::debug_span!("web_seed", %url);
                self.web_worker(i, url).instrument(span).await
            }
        }
    }

    /// A web seed's worker: its hash tree first, then pieces by `Range` requests.
    async fn web_worker(&self, i: usize, url: String) {
        let (hash, size, o) = (self.content, self.size, self.options.clone());
        let total = o.idle_timeout.max(o.stall_timeout);
        let open = tokio::task::spawn_blocking(move || {
            WebSeed::open(&url, hash, size, o.stall_timeout, total)
        });
        match open.await {
            Ok(Ok(seed)) => self.work(i, PieceSource::Web(&Arc::new(seed))).await,
            Ok(Err(fault)) => self.drop_provider(i, fault.to_string()),
            Err(e) => self.drop_provider(i, format!("asking for its hash tree: {e}")),
        }
    }

    async fn peer_worker(&self, i: usize, addr: PeerAddr) {
        let conn = match self.node.connect(&addr, self.options.connect_timeout).await {
            Ok(c) => c,
            Err(e) => return self.drop_provider(i, e.to_string()),
        };
        let origin = self.lock().views[i].origin;
        let observe = async {
            if origin {
                return std::future::pending::<()>().await;
            }
            loop {
                // The first item of an observe stream is the peer's whole bitfield; the
                // stream is dropped (cancelled) right after it.
                let first = self
                    .node
                    .store
                    .remote()
                    .observe(conn.clone(), ObserveRequest::new(self.hash))
                    .boxed()
                    .next()
                    .await;
                let Some(Ok(bitfield)) = first else { break };
                {
                    let mut s = self.lock();
                    let Shared { board, views, .. } = &mut *s;
                    board.saw_bitfield(views, i, &bitfield.ranges, Instant::now());
                }
                self.offered.notify_waiters();
                if bitfield.is_complete() {
                    break;
                }
                tokio::time::sleep(self.options.observe_every).await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = self.work(i, PieceSource::Peer(&conn)) => {}
            () = observe => {}
        }
    }

    async fn work(&self, i: usize, source: PieceSource<'_>) {
        let mut strikes = 0;
        let mut in_flight = FuturesUnordered::new();
        let end = loop {
            // Keep the pipeline full.
            let relayed = source.relayed();
            while in_flight.len() < self.options.requests_per_provider.max(1) {
                let next = {
                    let mut s = self.lock();
                    let Shared { board, views, .. } = &mut *s;
                    views[i].relayed = relayed;
                    board.next_for(i, views, Instant::now())
                };
                let Some(piece) = next else { break };
                tracing::trace!(piece, "piece asked");
                in_flight.push(async move { (piece, self.fetch_piece(i, source, piece).await) });
            }
            let Some((piece, end)) = in_flight.next().await else {
                if self.lock().board.is_complete() {
                    break None;
                }
                // Nothing for this provider now: wait for a bitfield update or a
                // released piece.
                let _ = tokio::time::timeout(Duration::from_millis(250), self.changed_or_offered())
                    .await;
                if source.closed() {
                    break Some("connection closed".to_string());
                }
                continue;
            };
            let mut s = self.lock();
            match end {
                PieceEnd::Got => {
                    strikes = 0;
                    s.board.complete(piece);
                    tracing::debug!(piece, provider = %s.names[i], "piece verified");
                }
                PieceEnd::Cancelled => s.board.release(piece, i),
                PieceEnd::BadData(why) => break Some(format!("sent bad data: {why}")),
                PieceEnd::Unusable(why) => break Some(why),
                PieceEnd::Stalled | PieceEnd::Failed(_) => {
                    s.board.release(piece, i);
                    strikes += 1;
                    if strikes >= MAX_STRIKES || source.closed() {
                        break Some(match end {
                            PieceEnd::Failed(e) => e,
                            _ => format!("stalled {strikes} times"),
                        });
                    }
                }
            }
            drop(s);
            self.notify_changed();
        };
        // Pieces still in flight go back to the others.
        drop(in_flight);
        self.lock().board.release_all(i);
        match end {
            Some(why) => self.drop_provider(i, why),
            None => self.notify_changed(),
        }
    }

    /// Keeps the blob's store entry loaded for as long as the fetch runs (never
    /// returns), so the store does not write out (and fsync) the partial entry between
    /// pieces. An observer holds the entry; it is never read: the store's side of it
    /// keeps only the newest bitfield and waits, so this costs nothing per write.
    async fn hold_store_entry(&self) {
        let _observer = self.node.store.blobs().observe(self.hash).stream().await;
        std::future::pending::<()>().await
    }

    /// Fetches what is still missing of `piece` from provider `i`.
    async fn fetch_piece(&self, i: usize, source: PieceSource<'_>, piece: usize) -> PieceEnd {
        let wanted = self.lock().board.request_ranges(piece, self.total_chunks);
        // Part of it may be held already (a piece retried after its provider died).
        let held = match self.node.held_ranges(&self.content).await {
            Ok((h, _)) => h,
            Err(e) => return PieceEnd::Failed(format!("local store: {e}")),
        };
        if self.piece_held(&wanted, &held) {
            return PieceEnd::Got;
        }
        let ranges = wanted.difference(&held);
        let end = match source {
            PieceSource::Peer(conn) => self.get_from_peer(i, conn, piece, ranges).await,
            PieceSource::Web(seed) => self.get_from_web(i, seed, piece, ranges).await,
        };
        if !matches!(end, PieceEnd::Got) {
            return end;
        }
        // A peer that is still downloading may have sent less than asked: only what is
        // verified in the store counts. The GET has finished writing by now.
        match self.node.held_ranges(&self.content).await {
            Ok((held, _)) if self.piece_held(&wanted, &held) => PieceEnd::Got,
            Ok(_) => PieceEnd::Failed("sent less than the piece".into()),
            Err(e) => PieceEnd::Failed(format!("local store: {e}")),
        }
    }

    /// Counts `delta` payload bytes from provider `i`.
    fn count_received(&self, i: usize, delta: u64) {
        let mut s = self.lock();
        let first_bytes = delta > 0 && s.received.iter().all(|&b| b == 0);
        s.received[i] += delta;
        drop(s);
        if first_bytes {
            // The status goes out now, not at the next tick: with a DHT, the node is
            // announced from its first verified bytes.
            self.notify_changed();
        }
    }

    /// One piece's `ranges` from a web seed: a `Range` request on the blocking pool,
    /// verified with the seed's hash tree, imported into the store (which checks it
    /// against the hash once more as it decodes).
    async fn get_from_web(
        &self,
        i: usize,
        seed: &Arc<WebSeed>,
        piece: usize,
        ranges: ChunkRanges,
    ) -> PieceEnd {
        let Some(span) = crate::web_seed::span_of(&ranges, self.size) else {
            return PieceEnd::Got;
        };
        let (seed, wanted) = (seed.clone(), ranges.clone());
        let job = tokio::task::spawn_blocking(move || seed.verified_range(span, &wanted));
        tokio::pin!(job);
        let got = loop {
            tokio::select! {
                got = &mut job => break got,
                _ = self.changed.notified() => {
                    if self.lock().board.is_done(piece) {
                        return PieceEnd::Cancelled;
                    }
                }
            }
        };
        let (encoded, payload) = match got {
            Ok(Ok(got)) => got,
            Ok(Err(fault)) if fault.is_lie() => return PieceEnd::BadData(fault.to_string()),
            // A host that cannot serve ranges will not learn it during this fetch.
            Ok(Err(fault @ WebSeedFault::NoRanges(_))) => {
                return PieceEnd::Unusable(fault.to_string())
            }
            Ok(Err(fault)) => return PieceEnd::Failed(fault.to_string()),
            Err(e) => return PieceEnd::Failed(format!("range request: {e}")),
        };
        match self
            .node
            .store
            .blobs()
            .import_bao_bytes(self.hash, ranges, encoded)
            .await
        {
            Ok(()) => {
                self.count_received(i, payload);
                PieceEnd::Got
            }
            Err(e) => PieceEnd::BadData(format!("the store refused its range: {e}")),
        }
    }

    /// One piece's `ranges` from a peer: an iroh-blobs GET, every chunk verified as it
    /// streams into the store.
    async fn get_from_peer(
        &self,
        i: usize,
        conn: &Connection,
        piece: usize,
        ranges: ChunkRanges,
    ) -> PieceEnd {
        let request = GetRequest::builder().root(ranges).build(self.hash);
        let mut stream = self
            .node
            .store
            .remote()
            .execute_get(conn.clone(), request)
            .stream()
            .boxed();
        let mut seen = 0u64;
        // An outside provider's piece also watches the peers' bitfields (should_yield);
        // a LAN peer's only the board.
        let outside = {
            let s = self.lock();
            s.views[i].origin || s.views[i].far
        };
        // One stall clock per piece, pushed back only when bytes arrive (other workers'
        // completions wake this loop too, and must not reset it).
        let stall = tokio::time::sleep(self.options.stall_timeout);
        tokio::pin!(stall);
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                () = &mut stall => break PieceEnd::Stalled,
                // Another worker finished the piece, or (from outside) a LAN peer now
                // holds it whole: the rest is not worth the uplink.
                () = self.news_for_piece(outside) => {
                    let s = self.lock();
                    if s.board.is_done(piece) || s.board.should_yield(piece, i, &s.views, Instant::now()) {
                        tracing::debug!(piece, received = seen, "piece given up: another source has it");
                        break PieceEnd::Cancelled;
                    }
                    continue;
                }
            };
            match item {
                None => break PieceEnd::Failed("stream ended without a result".into()),
                Some(GetProgressItem::Progress(n)) => {
                    stall
                        .as_mut()
                        .reset(tokio::time::Instant::now() + self.options.stall_timeout);
                    self.count_received(i, n.saturating_sub(seen));
                    seen = n;
                }
                Some(GetProgressItem::Done(stats)) => {
                    let delta = stats.payload_bytes_read.saturating_sub(seen);
                    self.lock().received[i] += delta;
                    break PieceEnd::Got;
                }
                Some(GetProgressItem::Error(e)) => break classify(e),
            }
        }
    }

    fn piece_held(&self, wanted: &ChunkRanges, held: &ChunkRanges) -> bool {
        let within = ChunkRanges::from(..ChunkNum(self.total_chunks));
        held.is_superset(&(wanted & &within))
    }
}

/// Tells bad data (a verification failure: drop the provider) from other failures.
fn classify(e: GetError) -> PieceEnd {
    match &e {
        GetError::Decode {
            source: DecodeError::LeafHashMismatch { .. } | DecodeError::ParentHashMismatch { .. },
            ..
        } => PieceEnd::BadData(e.to_string()),
        _ => PieceEnd::Failed(e.to_string()),
    }
}

/// Whether a peer at `peer` is on this node's LAN: the same /24 (IPv4) or /64 (IPv6)
/// as one of `ours`, or both on loopback. With no address of its own known, every peer
/// counts as near (no preference).
pub(crate) fn is_near(ours: &[std::net::IpAddr], peer: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    if ours.is_empty() {
        return true;
    }
    ours.iter().any(|&me| match (me, peer) {
        (a, b) if a.is_loopback() && b.is_loopback() => true,
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    })
}

#[cfg(test)]
mod near_tests {
    use super::is_near;

    #[test]
    fn lan_peers_share_the_subnet() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let home = [ip("192.168.1.11")];
        assert!(is_near(&home, ip("192.168.1.12")));
        assert!(!is_near(&home, ip("192.168.2.12")), "another home");
        assert!(!is_near(&home, ip("10.99.0.1")), "the public side");
        assert!(is_near(&[ip("127.0.0.1")], ip("127.0.0.3")));
        assert!(
            is_near(&[], ip("203.0.113.9")),
            "no address known: no preference"
        );
        assert!(is_near(&[ip("fd00::1")], ip("fd00::2")));
    }
}
