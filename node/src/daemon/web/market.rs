//! The marketplace as the dashboard shows it: one synced, scored view of the Nostr relays
//! in the node's config, kept in memory and synced again in the background when a page
//! finds it stale, so a Store page filters thousands of apps without waiting for a relay.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use archy_discovery::client::{sync_market, SyncOptions, SyncResult};
use nostr_sdk::PublicKey;

/// How old the view may get before a page view syncs it again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// What each relay may take per request.
const RELAY_TIMEOUT: Duration = Duration::from_secs(10);

/// The last sync: what the relays gave, scored, and when.
pub struct MarketSnapshot {
    pub result: SyncResult,
    /// Unix seconds.
    pub synced_at: u64,
}

/// The newest [`MarketSnapshot`] and the last sync's failure, if it failed as a whole.
#[derive(Default)]
pub struct MarketCache {
    snapshot: RwLock<Option<Arc<MarketSnapshot>>>,
    last_error: RwLock<Option<String>>,
    syncing: AtomicBool,
}

impl MarketCache {
    pub fn snapshot(&self) -> Option<Arc<MarketSnapshot>> {
        self.snapshot.read().ok().and_then(|s| s.clone())
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().ok().and_then(|e| e.clone())
    }

    pub fn syncing(&self) -> bool {
        self.syncing.load(Ordering::Relaxed)
    }

    /// Syncs from `relays` now, scoring against `me` (the operator's key, npub or hex).
    /// One sync at a time: a call while one runs returns at once.
    pub async fn sync(&self, relays: &[String], me: Option<&str>) {
        if relays.is_empty() || self.syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        let operator = me.and_then(|m| PublicKey::parse(m).ok());
        let outcome = sync_market(&SyncOptions {
            relays: relays.to_vec(),
            operator,
            timeout: RELAY_TIMEOUT,
        })
        .await;
        match outcome {
            Ok(result) => {
                tracing::info!(
                    apps = result.view.apps().len(),
                    relays_ok = result.relays.iter().filter(|r| r.ok).count(),
                    "marketplace synced for the dashboard"
                );
                if let Ok(mut s) = self.snapshot.write() {
                    *s = Some(Arc::new(MarketSnapshot {
                        result,
                        synced_at: crate::state::now(),
                    }));
                }
                if let Ok(mut e) = self.last_error.write() {
                    *e = None;
                }
            }
            Err(e) => {
                let why = archy_discovery::error_chain(&e);
                tracing::warn!(error = %why, "marketplace sync failed");
                if let Ok(mut last) = self.last_error.write() {
                    *last = Some(why);
                }
            }
        }
        self.syncing.store(false, Ordering::Release);
    }

    /// Starts a sync in the background when there is no view yet or it is older than
    /// [`REFRESH_EVERY`]: the marketplace is synced when someone looks at it, not
    /// polled by a node whose dashboard nobody opens.
    pub fn refresh_if_stale(self: &Arc<Self>, relays: &[String], me: Option<&str>) {
        let fresh = self.snapshot().is_some_and(|s| {
            crate::state::now().saturating_sub(s.synced_at) < REFRESH_EVERY.as_secs()
        });
        if fresh || relays.is_empty() || self.syncing() {
            return;
        }
        let cache = self.clone();
        let relays = relays.to_vec();
        let me = me.map(str::to_string);
        tokio::spawn(async move { cache.sync(&relays, me.as_deref()).await });
    }
}
