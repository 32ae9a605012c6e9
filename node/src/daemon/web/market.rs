//! The marketplace as the dashboard shows it: one synced, scored view of the Nostr relays
//! in the node's config, kept in memory and refreshed in the background, so a Store page
//! filters thousands of apps without waiting for a relay.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use archy_discovery::client::{sync_market, SyncOptions, SyncResult};
use nostr_sdk::PublicKey;

/// How often the view is synced again by itself.
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

    /// Keeps the view fresh: a sync now and every [`REFRESH_EVERY`].
    pub async fn keep_fresh(self: Arc<Self>, relays: Vec<String>, me: Option<String>) {
        if relays.is_empty() {
            return;
        }
        loop {
            self.sync(&relays, me.as_deref()).await;
            tokio::time::sleep(REFRESH_EVERY).await;
        }
    }
}
