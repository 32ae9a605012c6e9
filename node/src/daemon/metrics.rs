//! `/metrics`: the node's Prometheus exposition (OpenMetrics text, `prometheus-client`).
//!
//! The daemon's own counters live in [`Metrics`]; figures that other parts keep (bytes
//! served and fetched, apps by phase, the catalog's version and expiry, DHT refusals)
//! are read at scrape time into a registry built for that scrape.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use axum::{extract::State, response::IntoResponse, response::Response};
use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::ConstCounter,
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::Registry,
};

use super::Node;
use crate::swarm_source::FetchCounters;

/// The daemon's counters.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    pub reconcile_passes: Counter,
    pub actions: Counter,
    pub failures: Counter,
    pub verification_failures: Counter,
    /// Inputs refused from outside (an image size over `max_image_bytes`, a head that
    /// does not verify), by input; each source logged once.
    pub refused: super::refusals::Refusals,
    pub rollbacks: Counter,
    /// How long the last reconcile pass (catalog sync and every app) took, and the
    /// longest since start, in seconds.
    pub last_pass_seconds: Gauge<f64, AtomicU64>,
    pub max_pass_seconds: Gauge<f64, AtomicU64>,
    /// Image bytes fetched, by source (shared with the image source).
    pub fetched: Arc<FetchCounters>,
}

type Labels = Vec<(&'static str, &'static str)>;

/// `GET /metrics`.
pub(super) async fn render(State(node): State<Arc<Node>>) -> Response {
    let mut r = Registry::default();
    let m = &node.metrics;
    for (name, help, counter) in [
        (
            "archy_reconcile_passes",
            "Reconcile passes run.",
            &m.reconcile_passes,
        ),
        (
            "archy_reconcile_actions",
            "Actions performed by the reconciler.",
            &m.actions,
        ),
        (
            "archy_reconcile_failures",
            "App reconciles that failed.",
            &m.failures,
        ),
        (
            "archy_rollbacks",
            "Failed updates rolled back to the last healthy release.",
            &m.rollbacks,
        ),
        (
            "archy_verification_failures",
            "Documents or images refused by verification.",
            &m.verification_failures,
        ),
    ] {
        r.register(name, help, counter.clone());
    }
    r.register(
        "archy_reconcile_last_pass_seconds",
        "How long the last reconcile pass (catalog sync and every app) took.",
        m.last_pass_seconds.clone(),
    );
    r.register(
        "archy_reconcile_max_pass_seconds",
        "The longest reconcile pass since the daemon started.",
        m.max_pass_seconds.clone(),
    );
    r.register(
        "archy_refused_inputs",
        "Inputs from outside refused before anything was stored for them, by input (image_size: over max_image_bytes; head: a head that did not verify or broke the protocol).",
        m.refused.counts(),
    );
    let served = node.swarm.node.served();
    r.register(
        "archy_served_bytes",
        "Verified content bytes this node sent to peers.",
        ConstCounter::new(served.bytes()),
    );
    r.register(
        "archy_served_transfers",
        "Blob transfers this node answered (completed or aborted by the peer).",
        ConstCounter::new(served.transfers.load(Ordering::Relaxed)),
    );
    let fetched = Family::<Labels, Counter>::default();
    let f = &m.fetched;
    for (source, n) in [
        ("origin", &f.origin),
        ("peer", &f.peers),
        ("publish_dir", &f.publish_dir),
        ("web_seed", &f.web_seed),
    ] {
        fetched
            .get_or_create(&vec![("source", source)])
            .inc_by(n.load(Ordering::Relaxed));
    }
    r.register(
        "archy_fetched_bytes",
        "Image bytes fetched, by source.",
        fetched,
    );
    r.register(
        "archy_fetch_resumed_bytes",
        "Image bytes already held when a fetch started (not fetched again).",
        ConstCounter::new(f.resumed.load(Ordering::Relaxed)),
    );
    r.register(
        "archy_dht_refused_records",
        "DHT records and provider records refused for others (not Archy's, forged, or over a cap).",
        ConstCounter::new(node.swarm.dht_refused().await),
    );
    let phases = Family::<Labels, prometheus_client::metrics::gauge::Gauge>::default();
    {
        let store = node.store.lock().await;
        for c in store.state.conditions.values() {
            phases
                .get_or_create(&vec![("phase", c.phase.as_str())])
                .inc();
        }
        if let Some(t) = &store.state.trusted {
            r.register(
                "archy_catalog_version",
                "Highest accepted catalog version.",
                ConstGauge::new(t.catalog_version as i64),
            );
        }
    }
    r.register("archy_app_phase", "Apps by phase.", phases);
    if let Some(h) = node.catalog.lock().await.as_ref() {
        r.register(
            "archy_catalog_expires_timestamp_seconds",
            "When the held catalog stops being usable (its timestamp's expiry), Unix seconds.",
            ConstGauge::new(h.expires.timestamp()),
        );
    }
    let mut out = String::new();
    match encode(&mut out, &r) {
        Ok(()) => (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => super::api::error(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        ),
    }
}

impl Metrics {
    /// Records how long one reconcile pass took.
    pub(super) fn pass_took(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        self.last_pass_seconds.set(secs);
        if secs > self.max_pass_seconds.get() {
            self.max_pass_seconds.set(secs);
        }
    }
}
