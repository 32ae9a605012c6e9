//! What this node served to others. iroh-blobs reports every get request it answers
//! (with its transfer statistics at the end) on an event channel; a task adds the payload
//! bytes up, so `node status` and the metrics can say how much a node gave back to the
//! swarm, not only what it took.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use iroh_blobs::provider::events::{
    EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode, RequestUpdate,
};

/// Totals over every get request this node answered since it started.
#[derive(Debug, Default)]
pub struct ServedCounters {
    /// Verified content bytes sent (BAO hash pairs and headers not counted).
    pub bytes: AtomicU64,
    /// Blob transfers that ended, completed or aborted.
    pub transfers: AtomicU64,
}

impl ServedCounters {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// An event sender for the blobs protocol that feeds `counters`. Pushes stay disabled
/// (nobody writes into our store), observe requests are not reported.
pub(crate) fn event_sender(counters: Arc<ServedCounters>) -> EventSender {
    let mask = EventMask {
        get: RequestMode::NotifyLog,
        get_many: RequestMode::NotifyLog,
        observe: ObserveMode::None,
        ..EventMask::DEFAULT
    };
    let (sender, mut events) = EventSender::channel(64, mask);
    tokio::spawn(async move {
        while let Some(msg) = events.recv().await {
            let mut updates = match msg {
                ProviderMessage::GetRequestReceivedNotify(m) => m.rx,
                ProviderMessage::GetManyRequestReceivedNotify(m) => m.rx,
                // Nothing else is enabled by the mask.
                _ => continue,
            };
            let counters = counters.clone();
            tokio::spawn(async move {
                while let Ok(Some(update)) = updates.recv().await {
                    let stats = match update {
                        RequestUpdate::Completed(c) => c.stats,
                        RequestUpdate::Aborted(a) => a.stats,
                        RequestUpdate::Started(_) | RequestUpdate::Progress(_) => continue,
                    };
                    counters
                        .bytes
                        .fetch_add(stats.payload_bytes_sent, Ordering::Relaxed);
                    counters.transfers.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    sender
}
