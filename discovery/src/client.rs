//! Talking to relays: fetch from several in parallel, publish to all, report per relay.
//!
//! A relay may be down, slow, or hostile; none of that may stop the others from being
//! heard. Every relay is queried on its own task with a timeout, results are kept per
//! relay (so the index can count how many relays carry an event), and every failure
//! ends up in a [`RelayReport`] instead of an error. What relays send is verified again
//! by the [`Index`]: nothing a relay says is trusted.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use nostr_sdk::prelude::*;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::{
    announcement::{MARKER_TAG, MARKET_KIND},
    index::Index,
    market::MarketView,
    transport::CountingTransport,
};

/// Events asked for per request; relays may return fewer, so fetches page on `until`.
pub const PAGE_SIZE: usize = 5_000;
/// Most pages fetched from one relay for one filter.
pub const MAX_PAGES: usize = 50;
/// Most keys in one `authors` or `#p` filter.
const MAX_KEYS_PER_FILTER: usize = 1_000;
/// Most events one relay may send in one sync (all filters together); past it the relay
/// is dropped for the rest of the sync and what it sent beyond is not kept.
pub const MAX_EVENTS_PER_RELAY: usize = 50_000;
/// Most event bytes (normalised JSON) one relay may send in one sync.
pub const MAX_BYTES_PER_RELAY: usize = 64 << 20;
/// Largest event or relay message accepted (a manifest is at most 256 KiB).
pub const MAX_EVENT_BYTES: u32 = 512 << 10;

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no relays given")]
    NoRelays,
    #[error("relay URL {url:?} is invalid")]
    BadRelayUrl {
        url: String,
        #[source]
        source: nostr_sdk::nostr::types::url::Error,
    },
    #[error("cannot add relay {url} to the client")]
    AddRelay {
        url: RelayUrl,
        #[source]
        source: nostr_sdk::client::Error,
    },
}

/// What went wrong with one relay. Sources are shared ([`Arc`]) so one connection
/// failure can be reported for every event a publish tried to send.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect")]
    Connect {
        #[source]
        source: Arc<nostr_sdk::pool::relay::Error>,
    },
    #[error("the task talking to the relay failed")]
    Task {
        #[source]
        source: Arc<tokio::task::JoinError>,
    },
    #[error("query failed")]
    Query {
        #[source]
        source: Arc<nostr_sdk::pool::relay::Error>,
    },
    #[error("no end of stored events (EOSE) within {timeout:?}")]
    NoEndOfStoredEvents { timeout: Duration },
    #[error("more than the {limit} events a page asks for")]
    OverPage { limit: usize },
    #[error("the rest is ignored")]
    OverBudget(#[source] BudgetExceeded),
    #[error("did not take the event")]
    Publish {
        #[source]
        source: Arc<nostr_sdk::pool::relay::Error>,
    },
    #[error("no answer within {timeout:?}")]
    NoAnswer { timeout: Duration },
}

/// Which part of a [`RelayBudget`] a relay used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetExceeded {
    #[error("sent more events in one sync than the budget per relay allows")]
    Events,
    #[error("sent more event bytes in one sync than the budget per relay allows")]
    Bytes,
}

/// Serializes an optional error as its whole chain of causes, one string.
fn serialize_error_chain<S: serde::Serializer>(
    error: &Option<RelayError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match error {
        Some(e) => serializer.serialize_some(&crate::error_chain(e)),
        None => serializer.serialize_none(),
    }
}

/// What happened with one relay.
#[derive(Debug, Clone, Serialize)]
pub struct RelayReport {
    pub url: String,
    /// Connected and answered every request.
    pub ok: bool,
    /// Events received (all requests).
    pub events: usize,
    /// Event bytes received (normalised JSON, all requests).
    pub bytes: usize,
    /// The first problem, if any.
    #[serde(serialize_with = "serialize_error_chain")]
    pub error: Option<RelayError>,
}

/// The result of publishing one event to one relay.
#[derive(Debug, Clone)]
pub struct PublishReport {
    pub url: String,
    /// Why the relay did not take the event; `None` when it did.
    pub error: Option<RelayError>,
}

impl PublishReport {
    pub fn accepted(&self) -> bool {
        self.error.is_none()
    }

    /// `accepted`, or the whole chain of why not.
    pub fn message(&self) -> String {
        match &self.error {
            None => "accepted".to_string(),
            Some(e) => crate::error_chain(e),
        }
    }
}

/// Connections to a set of relays. End it with [`RelaySet::shutdown`], which closes
/// every connection with a websocket close handshake; a set that is only dropped
/// starts the close but cannot wait for it, so a runtime that ends right after resets
/// the connections instead.
#[derive(Debug)]
pub struct RelaySet {
    client: Client,
    transport: CountingTransport,
    /// Set by [`RelaySet::shutdown`].
    closed: bool,
    timeout: Duration,
    /// Relays whose connection succeeded and that have not failed since.
    connected: Vec<(String, Relay)>,
    reports: Vec<RelayReport>,
    budget: RelayBudget,
}

impl RelaySet {
    /// Connects to every relay in parallel, waiting at most `timeout`. Relays that
    /// cannot be reached are reported, not fatal; bad URLs are.
    pub async fn connect(urls: &[String], timeout: Duration) -> Result<Self, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::NoRelays);
        }
        let mut parsed = Vec::new();
        for url in urls {
            let u = RelayUrl::parse(url).map_err(|source| ClientError::BadRelayUrl {
                url: url.clone(),
                source,
            })?;
            if !parsed.contains(&u) {
                parsed.push(u);
            }
        }
        // Each event and message is bounded before it is parsed or stored.
        let mut limits = RelayLimits::default();
        limits.messages.max_size = Some(2 * MAX_EVENT_BYTES);
        limits.events.max_size = Some(MAX_EVENT_BYTES);
        let transport = CountingTransport::new();
        let client = Client::builder()
            .opts(ClientOptions::new().relay_limits(limits))
            .websocket_transport(transport.clone())
            .build();
        let mut relays = Vec::new();
        for u in parsed {
            // Nothing is connected yet, so an early return leaves no socket open.
            if let Err(source) = client.add_relay(u.clone()).await {
                return Err(ClientError::AddRelay { url: u, source });
            }
            match client.relay(u.clone()).await {
                Ok(relay) => relays.push((u.to_string(), relay)),
                Err(source) => return Err(ClientError::AddRelay { url: u, source }),
            }
        }
        let mut tasks = JoinSet::new();
        let mut url_of_task = HashMap::new();
        for (url, relay) in &relays {
            let relay = relay.clone();
            let handle = tasks.spawn(async move { relay.try_connect(timeout).await });
            url_of_task.insert(handle.id(), url.clone());
        }
        let mut reports = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            let (url, result) = match joined {
                Ok((id, result)) => (
                    url_of_task.remove(&id),
                    result.map_err(|e| RelayError::Connect {
                        source: Arc::new(e),
                    }),
                ),
                Err(e) => (
                    url_of_task.remove(&e.id()),
                    Err(RelayError::Task {
                        source: Arc::new(e),
                    }),
                ),
            };
            let Some(url) = url else { continue };
            if let Err(e) = &result {
                tracing::warn!(relay = %url, error = %crate::error_chain(e), "cannot connect to relay");
            }
            reports.push(RelayReport {
                url,
                ok: result.is_ok(),
                events: 0,
                bytes: 0,
                error: result.err(),
            });
        }
        reports.sort_by(|a, b| a.url.cmp(&b.url));
        let connected = relays
            .into_iter()
            .filter(|(url, _)| reports.iter().any(|r| r.url == *url && r.ok))
            .collect();
        Ok(Self {
            client,
            transport,
            closed: false,
            timeout,
            connected,
            reports,
            budget: RelayBudget::default(),
        })
    }

    /// What each relay may send in all (default [`RelayBudget::default`]).
    pub fn with_budget(mut self, budget: RelayBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Per-relay outcomes so far.
    pub fn reports(&self) -> &[RelayReport] {
        &self.reports
    }

    /// Fetches every event matching `filter` from every connected relay, in parallel,
    /// paging backwards in time. Returns (event, relay URL) pairs.
    #[tracing::instrument(skip_all, fields(filter = %filter.as_json()))]
    pub async fn fetch(&mut self, filter: Filter) -> Vec<(Event, String)> {
        let mut tasks = JoinSet::new();
        let mut url_of_task = HashMap::new();
        for (url, relay) in &self.connected {
            let relay = relay.clone();
            let filter = filter.clone();
            let timeout = self.timeout;
            let spent = self
                .reports
                .iter()
                .find(|r| r.url == *url)
                .map_or((0, 0), |r| (r.events, r.bytes));
            let budget = RelayBudget {
                events: self.budget.events.saturating_sub(spent.0),
                bytes: self.budget.bytes.saturating_sub(spent.1),
            };
            let handle =
                tasks.spawn(async move { fetch_paged(&relay, filter, timeout, budget).await });
            url_of_task.insert(handle.id(), url.clone());
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            let (url, page) = match joined {
                Ok((id, page)) => (url_of_task.remove(&id), page),
                Err(e) => (
                    url_of_task.remove(&e.id()),
                    FetchedPages {
                        error: Some(RelayError::Task {
                            source: Arc::new(e),
                        }),
                        ..FetchedPages::default()
                    },
                ),
            };
            let Some(url) = url else { continue };
            if let Some(report) = self.reports.iter_mut().find(|r| r.url == url) {
                report.events += page.events.len();
                report.bytes += page.bytes;
                if let Some(e) = page.error {
                    // A relay that failed once is not waited on again in this session.
                    tracing::warn!(relay = %url, error = %crate::error_chain(&e), "relay query failed; dropping it");
                    report.ok = false;
                    report.error.get_or_insert(e);
                    self.connected.retain(|(u, _)| *u != url);
                }
            }
            out.extend(page.events.into_iter().map(|e| (e, url.clone())));
        }
        out
    }

    /// Sends `event` to every relay and reports what each said.
    pub async fn publish(&self, event: &Event) -> Vec<PublishReport> {
        let mut out = Vec::new();
        let mut tasks = JoinSet::new();
        let mut url_of_task = HashMap::new();
        for report in &self.reports {
            let Some((url, relay)) = self.connected.iter().find(|(u, _)| *u == report.url) else {
                out.push(PublishReport {
                    url: report.url.clone(),
                    error: report.error.clone(),
                });
                continue;
            };
            let relay = relay.clone();
            let event = event.clone();
            let timeout = self.timeout;
            let handle = tasks.spawn(async move {
                match tokio::time::timeout(timeout, relay.send_event(&event)).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(RelayError::Publish {
                        source: Arc::new(e),
                    }),
                    Err(_) => Some(RelayError::NoAnswer { timeout }),
                }
            });
            url_of_task.insert(handle.id(), url.clone());
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            let (url, error) = match joined {
                Ok((id, error)) => (url_of_task.remove(&id), error),
                Err(e) => (
                    url_of_task.remove(&e.id()),
                    Some(RelayError::Task {
                        source: Arc::new(e),
                    }),
                ),
            };
            if let Some(url) = url {
                out.push(PublishReport { url, error });
            }
        }
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    /// Closes every connection, waiting (at most the per-relay timeout) for the close
    /// handshakes, and returns what each relay did.
    pub async fn shutdown(mut self) -> Vec<RelayReport> {
        self.closed = true;
        self.client.shutdown().await;
        if !self.transport.all_closed(self.timeout).await {
            tracing::warn!(timeout = ?self.timeout, "relay connections did not close in time; dropping them");
        }
        std::mem::take(&mut self.reports)
    }
}

impl Drop for RelaySet {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        tracing::debug!("relay set dropped without shutdown; connections may be reset");
        for (_, relay) in &self.connected {
            relay.disconnect();
        }
    }
}

/// What one relay sent for one filter, and the problem that ended the fetch early.
#[derive(Debug, Default)]
struct FetchedPages {
    events: Vec<Event>,
    /// Normalised JSON bytes of `events`.
    bytes: usize,
    error: Option<RelayError>,
}

/// Pages through one relay: `limit` [`PAGE_SIZE`], then `until` the oldest second
/// seen, until a page brings nothing new (bounded by [`MAX_PAGES`]; each page bounded
/// by twice `timeout`). A page lying entirely within the second it started from means
/// the relay holds more events in that second than it returns per request: NIP-01
/// filters cannot page inside one second, so the rest of it is skipped with a warning.
async fn fetch_paged(
    relay: &Relay,
    filter: Filter,
    timeout: Duration,
    mut budget: RelayBudget,
) -> FetchedPages {
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let done = |events, bytes, error| FetchedPages {
        events,
        bytes,
        error,
    };
    let mut until: Option<Timestamp> = None;
    for _ in 0..MAX_PAGES {
        let mut f = filter.clone().limit(PAGE_SIZE);
        if let Some(u) = until {
            f = f.until(u);
        }
        let mut stream = match relay
            .stream_events(f, timeout, ReqExitPolicy::ExitOnEOSE)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let error = RelayError::Query {
                    source: Arc::new(e),
                };
                return done(events, bytes, Some(error));
            }
        };
        let mut new = 0usize;
        let mut received = 0usize;
        let mut oldest: Option<Timestamp> = None;
        let mut error = None;
        let page = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        // Duplicates cost the budget nothing, so the page's own limit
                        // bounds them: a relay may not send more than it was asked for.
                        received += 1;
                        if received > PAGE_SIZE {
                            error = Some(RelayError::OverPage { limit: PAGE_SIZE });
                            break;
                        }
                        oldest = Some(oldest.map_or(event.created_at, |o| o.min(event.created_at)));
                        if seen.insert(event.id) {
                            let size = event.as_json().len();
                            if let Err(over) = budget.spend(size) {
                                error = Some(RelayError::OverBudget(over));
                                break;
                            }
                            bytes += size;
                            new += 1;
                            events.push(event);
                        }
                    }
                    Err(e) => {
                        error = Some(RelayError::Query {
                            source: Arc::new(e),
                        });
                        break;
                    }
                }
            }
        };
        // The stream ends on EOSE or, silently, on the subscription's own timeout:
        // a page that took the whole timeout means the relay never said EOSE. The
        // outer bound catches a relay that trickles events forever.
        let started = std::time::Instant::now();
        if tokio::time::timeout(timeout * 2, page).await.is_err() || started.elapsed() >= timeout {
            error.get_or_insert(RelayError::NoEndOfStoredEvents { timeout });
        }
        let Some(oldest) = oldest else {
            return done(events, bytes, error);
        };
        if error.is_some() || new == 0 {
            return done(events, bytes, error);
        }
        until = Some(if until == Some(oldest) {
            tracing::warn!(relay = %relay.url(), second = %oldest, "relay returned a full page within one second; the rest of that second is skipped");
            Timestamp::from(oldest.as_secs().saturating_sub(1))
        } else {
            oldest
        });
    }
    done(events, bytes, None)
}

/// What one relay may send in one sync (one [`RelaySet`]), all filters together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayBudget {
    pub events: usize,
    pub bytes: usize,
}

impl Default for RelayBudget {
    fn default() -> Self {
        Self {
            events: MAX_EVENTS_PER_RELAY,
            bytes: MAX_BYTES_PER_RELAY,
        }
    }
}

impl RelayBudget {
    /// Takes one event of `size` bytes, or says which budget it would break.
    fn spend(&mut self, size: usize) -> Result<(), BudgetExceeded> {
        if self.events == 0 {
            return Err(BudgetExceeded::Events);
        }
        if size > self.bytes {
            return Err(BudgetExceeded::Bytes);
        }
        self.events -= 1;
        self.bytes -= size;
        Ok(())
    }
}

/// What a node needs to look at the marketplace.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub relays: Vec<String>,
    /// The operator's key: the root of the follow graph.
    pub operator: Option<PublicKey>,
    /// Per relay request.
    pub timeout: Duration,
}

/// A synced marketplace and what each relay did.
#[derive(Debug)]
pub struct SyncResult {
    pub view: MarketView,
    pub relays: Vec<RelayReport>,
}

fn chunked(keys: &BTreeSet<PublicKey>) -> Vec<Vec<PublicKey>> {
    let all: Vec<PublicKey> = keys.iter().copied().collect();
    all.chunks(MAX_KEYS_PER_FILTER).map(<[_]>::to_vec).collect()
}

/// Fetches everything the marketplace view needs from every relay and scores it:
/// announcements, endorsements and successor statements; the operator's contact list
/// and those of the keys they follow; reports against the developers; deletions by
/// everyone involved.
#[tracing::instrument(skip_all, fields(relays = opts.relays.len(), operator = ?opts.operator))]
pub async fn sync_market(opts: &SyncOptions) -> Result<SyncResult, ClientError> {
    let mut relays = RelaySet::connect(&opts.relays, opts.timeout).await?;
    let mut index = Index::new();
    let ingest = |index: &mut Index, events: Vec<(Event, String)>| index.ingest_all(&events);

    let market = Filter::new().kind(MARKET_KIND).hashtag(MARKER_TAG);
    let mut authors: BTreeSet<PublicKey> = BTreeSet::new();
    let mut developers: BTreeSet<PublicKey> = BTreeSet::new();
    let started = std::time::Instant::now();
    let fetched = relays.fetch(market).await;
    tracing::debug!(events = fetched.len(), elapsed = ?started.elapsed(), "fetched marketplace events");
    for (e, _) in &fetched {
        authors.insert(e.pubkey);
        if e.tags.identifier().is_some_and(|d| {
            d.starts_with(crate::announcement::APP_PREFIX)
                || d.starts_with(crate::announcement::RELEASE_PREFIX)
        }) {
            developers.insert(e.pubkey);
        }
    }
    let started = std::time::Instant::now();
    ingest(&mut index, fetched);
    tracing::debug!(elapsed = ?started.elapsed(), "ingested marketplace events");

    if let Some(me) = opts.operator {
        let mine = relays
            .fetch(Filter::new().kind(Kind::ContactList).author(me))
            .await;
        ingest(&mut index, mine);
        let follows = index.follows(&me).cloned().unwrap_or_default();
        for chunk in chunked(&follows) {
            let theirs = relays
                .fetch(Filter::new().kind(Kind::ContactList).authors(chunk))
                .await;
            ingest(&mut index, theirs);
        }
    }

    for chunk in chunked(&developers) {
        let reports = relays
            .fetch(Filter::new().kind(Kind::Reporting).pubkeys(chunk))
            .await;
        authors.extend(reports.iter().map(|(e, _)| e.pubkey));
        ingest(&mut index, reports);
    }
    for chunk in chunked(&authors) {
        let deletions = relays
            .fetch(Filter::new().kind(Kind::EventDeletion).authors(chunk))
            .await;
        ingest(&mut index, deletions);
    }

    let reports = relays.shutdown().await;
    let started = std::time::Instant::now();
    let view = MarketView::new(index, opts.operator, Timestamp::now());
    tracing::debug!(apps = view.apps().len(), elapsed = ?started.elapsed(), "scored marketplace apps");
    Ok(SyncResult {
        view,
        relays: reports,
    })
}
