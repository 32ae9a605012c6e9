//! Talking to relays: fetch from several in parallel, publish to all, report per relay.
//!
//! A relay may be down, slow, or hostile; none of that may stop the others from being
//! heard. Every relay is queried on its own task with a timeout, results are kept per
//! relay (so the index can count how many relays carry an event), and every failure
//! ends up in a [`RelayReport`] instead of an error. What relays send is verified again
//! by the [`Index`]: nothing a relay says is trusted.

use std::{
    collections::{BTreeSet, HashSet},
    time::Duration,
};

use nostr_sdk::prelude::*;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::{
    announcement::{MARKER_TAG, MARKET_KIND},
    index::Index,
    market::MarketView,
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
    #[error("relay URL {url:?} is invalid: {reason}")]
    BadRelayUrl { url: String, reason: String },
}

/// What happened with one relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelayReport {
    pub url: String,
    /// Connected and answered every request.
    pub ok: bool,
    /// Events received (all requests).
    pub events: usize,
    /// Event bytes received (normalised JSON, all requests).
    pub bytes: usize,
    /// The first problem, if any.
    pub error: Option<String>,
}

/// The result of publishing one event to one relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishReport {
    pub url: String,
    pub accepted: bool,
    /// The relay's message, or why it could not be reached.
    pub message: String,
}

/// Connections to a set of relays.
#[derive(Debug)]
pub struct RelaySet {
    client: Client,
    timeout: Duration,
    /// Relays whose connection succeeded.
    connected: Vec<String>,
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
            let u = RelayUrl::parse(url).map_err(|e| ClientError::BadRelayUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            if !parsed.contains(&u) {
                parsed.push(u);
            }
        }
        // Each event and message is bounded before it is parsed or stored.
        let mut limits = RelayLimits::default();
        limits.messages.max_size = Some(2 * MAX_EVENT_BYTES);
        limits.events.max_size = Some(MAX_EVENT_BYTES);
        let client = Client::builder()
            .opts(ClientOptions::new().relay_limits(limits))
            .build();
        for u in &parsed {
            client
                .add_relay(u.clone())
                .await
                .map_err(|e| ClientError::BadRelayUrl {
                    url: u.to_string(),
                    reason: e.to_string(),
                })?;
        }
        let mut tasks = JoinSet::new();
        for u in &parsed {
            let relay = client.relay(u.clone()).await.ok();
            let url = u.to_string();
            tasks.spawn(async move {
                let result = match relay {
                    Some(r) => r.try_connect(timeout).await.map_err(|e| e.to_string()),
                    None => Err("relay not added".to_string()),
                };
                (url, result)
            });
        }
        let mut reports = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (url, result) = match joined {
                Ok(r) => r,
                Err(e) => ("(unknown)".to_string(), Err(e.to_string())),
            };
            if let Err(e) = &result {
                tracing::warn!(relay = %url, error = %e, "cannot connect to relay");
            }
            reports.push(RelayReport {
                url,
                ok: result.is_ok(),
                events: 0,
                bytes: 0,
                error: result.err().map(|e| format!("cannot connect: {e}")),
            });
        }
        reports.sort_by(|a, b| a.url.cmp(&b.url));
        let connected = reports
            .iter()
            .filter(|r| r.ok)
            .map(|r| r.url.clone())
            .collect();
        Ok(Self {
            client,
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
        for url in self.connected.clone() {
            let Ok(relay) = self.client.relay(url.as_str()).await else {
                continue;
            };
            let filter = filter.clone();
            let timeout = self.timeout;
            let spent = self
                .reports
                .iter()
                .find(|r| r.url == url)
                .map_or((0, 0), |r| (r.events, r.bytes));
            let budget = RelayBudget {
                events: self.budget.events.saturating_sub(spent.0),
                bytes: self.budget.bytes.saturating_sub(spent.1),
            };
            tasks.spawn(async move {
                let (events, bytes, error) = fetch_paged(&relay, filter, timeout, budget).await;
                (url, events, bytes, error)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((url, events, bytes, error)) = joined else {
                continue;
            };
            if let Some(report) = self.reports.iter_mut().find(|r| r.url == url) {
                report.events += events.len();
                report.bytes += bytes;
                if let Some(e) = error {
                    // A relay that failed once is not waited on again in this session.
                    tracing::warn!(relay = %url, error = %e, "relay query failed; dropping it");
                    report.ok = false;
                    report.error.get_or_insert(e);
                    self.connected.retain(|u| *u != url);
                }
            }
            out.extend(events.into_iter().map(|e| (e, url.clone())));
        }
        out
    }

    /// Sends `event` to every relay and reports what each said.
    pub async fn publish(&self, event: &Event) -> Vec<PublishReport> {
        let mut tasks = JoinSet::new();
        for r in &self.reports {
            let url = r.url.clone();
            let connect_error = (!self.connected.contains(&r.url))
                .then(|| r.error.clone().unwrap_or_else(|| "not connected".into()));
            let relay = self.client.relay(url.as_str()).await.ok();
            let event = event.clone();
            let timeout = self.timeout;
            tasks.spawn(async move {
                let outcome: Result<(), String> = match (connect_error, relay) {
                    (Some(e), _) => Err(e),
                    (None, None) => Err("relay not added".into()),
                    (None, Some(relay)) => {
                        match tokio::time::timeout(timeout, relay.send_event(&event)).await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err(format!("no answer within {timeout:?}")),
                        }
                    }
                };
                PublishReport {
                    url,
                    accepted: outcome.is_ok(),
                    message: outcome.err().unwrap_or_else(|| "accepted".into()),
                }
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(r) = joined {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    /// Closes every connection.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
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
) -> (Vec<Event>, usize, Option<String>) {
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut events = Vec::new();
    let mut bytes = 0usize;
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
            Err(e) => return (events, bytes, Some(e.to_string())),
        };
        let mut new = 0usize;
        let mut oldest: Option<Timestamp> = None;
        let mut error = None;
        let page = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        oldest = Some(oldest.map_or(event.created_at, |o| o.min(event.created_at)));
                        if seen.insert(event.id) {
                            let size = event.as_json().len();
                            if let Err(over) = budget.spend(size) {
                                error = Some(over);
                                break;
                            }
                            bytes += size;
                            new += 1;
                            events.push(event);
                        }
                    }
                    Err(e) => {
                        error = Some(e.to_string());
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
            error.get_or_insert_with(|| {
                format!("no end of stored events (EOSE) within {timeout:?}")
            });
        }
        let Some(oldest) = oldest else {
            return (events, bytes, error);
        };
        if error.is_some() || new == 0 {
            return (events, bytes, error);
        }
        until = Some(if until == Some(oldest) {
            tracing::warn!(relay = %relay.url(), second = %oldest, "relay returned a full page within one second; the rest of that second is skipped");
            Timestamp::from(oldest.as_secs().saturating_sub(1))
        } else {
            oldest
        });
    }
    (events, bytes, None)
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
    fn spend(&mut self, size: usize) -> Result<(), String> {
        if self.events == 0 {
            return Err(
                "sent more events in one sync than the budget per relay allows; the rest is ignored"
                    .into(),
            );
        }
        if size > self.bytes {
            return Err(
                "sent more event bytes in one sync than the budget per relay allows; the rest is ignored"
                    .into(),
            );
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

    let reports = relays.reports().to_vec();
    relays.shutdown().await;
    let started = std::time::Instant::now();
    let view = MarketView::new(index, opts.operator, Timestamp::now());
    tracing::debug!(apps = view.apps().len(), elapsed = ?started.elapsed(), "scored marketplace apps");
    Ok(SyncResult {
        view,
        relays: reports,
    })
}
