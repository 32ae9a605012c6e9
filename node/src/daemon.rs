//! `archy node run`: the node daemon.
//!
//! It keeps the verified catalog fresh (from the origin), runs the level-triggered
//! reconciler (on start, every 30 s, and whenever the operator changes something) and
//! serves the local API. The API listens on loopback only and every request needs the
//! bearer token stored in `<data>/api.token` (mode 0600); the bound address is written to
//! `<data>/api.addr` for the CLI.
//!
//! Routes (all JSON unless noted):
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/status` | node name, runtime, catalog version and age, swarm (address, DHT, origin, peers, blobs held, bytes fetched by source, bytes served), apps |
//! | GET | `/v1/apps` | every app with its phase |
//! | GET | `/v1/apps/{id}` | one app (404 once uninstalled: no ghosts) |
//! | POST | `/v1/apps/{id}/install` | `{"version": "1.0.0"?}` or `{"market": {...}}` |
//! | POST | `/v1/apps/{id}/uninstall` | `{"purge": false}` |
//! | POST | `/v1/apps/{id}/start`, `/stop`, `/restart` | |
//! | GET | `/v1/apps/{id}/logs` | text |
//! | GET | `/v1/events` | server-sent events, one [`ProgressEvent`] per `data:` line |
//! | GET | `/metrics` | Prometheus text format |

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use archy_catalog::{Catalog, Limits, TrustedState};
use axum::{
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, Mutex, Notify};

use crate::{
    config::NodeConfig,
    executor::{self, AppTarget, ProgressEvent, Stage},
    planner::{self, DesiredApp},
    runtime::{ContainerSpec, Runtime},
    state::{self, AppSource, Condition, Deployment, DesiredRecord, HeldBack, Phase, StateStore},
};

/// At most this many DHT-named head servers are asked in one sync.
const MAX_HEAD_SERVERS: usize = 8;

/// The swarm and DHT addresses a previous run wrote (`swarm.addr`, `dht.addr`).
#[derive(Debug, Default)]
struct LastAddrs {
    swarm: Option<SocketAddr>,
    dht: Option<SocketAddr>,
}

impl LastAddrs {
    fn read(data: &Path) -> Self {
        let swarm = std::fs::read_to_string(data.join("swarm.addr"))
            .ok()
            .and_then(|a| a.trim().parse::<archy_registry::PeerAddr>().ok())
            .map(|a| a.socket);
        let dht = std::fs::read_to_string(data.join("dht.addr"))
            .ok()
            .and_then(|a| a.lines().next()?.parse().ok())
            .and_then(|a: archy_registry::Multiaddr| archy_registry::socket_of(&a));
        Self { swarm, dht }
    }
}

/// The address to listen on: `configured`, or when it leaves the port to the system
/// (`:0`), the port of `last` if that was on the same IP.
fn reuse_port(configured: SocketAddr, last: Option<SocketAddr>) -> SocketAddr {
    match last {
        Some(last)
            if configured.port() == 0 && last.ip() == configured.ip() && last.port() != 0 =>
        {
            SocketAddr::new(configured.ip(), last.port())
        }
        _ => configured,
    }
}

/// How often the reconciler runs without being woken.
pub const RESYNC: Duration = Duration::from_secs(30);

struct Node {
    data: PathBuf,
    /// The node's iroh endpoint and, when configured, its DHT membership.
    swarm: archy_registry::Swarm,
    /// The head this node last accepted, served to peers (ALPN archy/head/1).
    head: archy_registry::head::HeadServer,
    cfg: NodeConfig,
    store: Mutex<StateStore>,
    runtime: Arc<dyn Runtime>,
    catalog: Mutex<Option<HeldCatalog>>,
    /// Head servers the DHT named when the origin and configured peers had no head.
    head_servers: std::sync::Mutex<Vec<archy_registry::PeerAddr>>,
    events: broadcast::Sender<ProgressEvent>,
    wake: Notify,
    token: String,
    metrics: Metrics,
}

/// The catalog the reconciler installs from: verified, when, where it came from, and
/// until when it may be used (its timestamp's expiry, or the catalog's if earlier).
struct HeldCatalog {
    catalog: Catalog,
    verified_at: u64,
    source: String,
    expires: chrono::DateTime<chrono::Utc>,
}

impl HeldCatalog {
    /// Why nothing may be installed or updated from it any more, once it has expired: a
    /// node cut off from its origin must not keep installing what may since have been
    /// revoked (a freeze attack).
    fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
        (now >= self.expires).then(|| {
            format!(
                "catalog v{} expired at {}; no fresh head since {} (origin and peers unreachable?): installs and updates are refused until one arrives",
                self.catalog.version,
                self.expires.to_rfc3339(),
                chrono::DateTime::from_timestamp(self.verified_at as i64, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| self.verified_at.to_string()),
            )
        })
    }
}

#[derive(Default)]
struct Metrics {
    reconcile_passes: AtomicU64,
    actions: AtomicU64,
    failures: AtomicU64,
    verification_failures: AtomicU64,
    /// Inputs refused by a budget (an image size over `max_image_bytes`, ...).
    refused_inputs: AtomicU64,
    rollbacks: AtomicU64,
    fetched: Arc<crate::swarm_source::FetchCounters>,
}

/// Runs the daemon until Ctrl-C or SIGTERM.
pub async fn run(data: PathBuf, cfg: NodeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    // The node's keys, secrets, app data and unpacked images are for root alone.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (0700)", data.display()))?;
    // Volume paths handed to the engine must be absolute (podman reads a relative one as
    // the name of a named volume).
    let data = data
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", data.display()))?;
    cfg.check().map_err(anyhow::Error::msg)?;
    let runtime = crate::runtime::for_node(&cfg.runtime, &cfg.name, &data, cfg.unpack)
        .map_err(anyhow::Error::msg)?;
    let token = load_or_create_token(&data)?;
    let mut store = StateStore::open(&data)?;
    let anchor = data.join("root.json");
    if !anchor.exists() {
        if let Some(root) = &cfg.root {
            std::fs::copy(root, &anchor)
                .with_context(|| format!("cannot copy the trust anchor {}", root.display()))?;
        }
    }
    if store.state.trusted.is_none() && anchor.exists() {
        let bytes = std::fs::read(&anchor)?;
        store.state.trusted = Some(
            TrustedState::bootstrap(&bytes, &Limits::default())
                .context("trust anchor root.json")?,
        );
        store.save()?;
    }
    let listener = tokio::net::TcpListener::bind(cfg.api)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.api))?;
    let addr = listener.local_addr()?;
    archy_catalog::fsutil::write_atomic(&data.join("api.addr"), addr.to_string().as_bytes())?;
    let head = archy_registry::head::HeadServer::default();
    // A port picked by the system (`:0`) is picked again after a restart: the same one
    // as last time when it is free, so peers configured with this node's address (and
    // the DHT's records) stay right.
    let last = LastAddrs::read(&data);
    let listen = (
        reuse_port(cfg.swarm_listen, last.swarm),
        cfg.dht_listen.map(|d| reuse_port(d, last.dht)),
    );
    let bootstrap: Vec<archy_registry::Multiaddr> = cfg
        .bootstrap
        .iter()
        .filter_map(|b| b.parse().ok()) // checked by cfg.check()
        .collect();
    let start_swarm = |(swarm_listen, dht_listen): (SocketAddr, Option<SocketAddr>)| {
        archy_registry::Swarm::start(
            archy_registry::SwarmNode::builder(&data, swarm_listen)
                .accept(archy_registry::head::HEAD_ALPN, head.clone()),
            dht_listen.map(|listen| archy_registry::DhtSettings {
                listen,
                bootstrap: bootstrap.clone(),
            }),
        )
    };
    let swarm = match start_swarm(listen).await {
        Err(e) if listen != (cfg.swarm_listen, cfg.dht_listen) => {
            tracing::warn!(error = %e, "last run's ports are taken; new ones are picked");
            start_swarm((cfg.swarm_listen, cfg.dht_listen)).await
        }
        started => started,
    }
    .context("swarm endpoint")?;
    let mut catalog = None;
    if let (Some(saved), Some(trusted)) = (
        archy_registry::head::SignedHead::load(&data.join("head")).ok(),
        store.state.trusted.as_ref(),
    ) {
        // The head accepted before the restart: served to peers at once, and the
        // catalog is usable before the first sync if it has not expired meanwhile.
        if let Ok((_, c)) = archy_registry::head::verify_head(
            trusted,
            &saved,
            chrono::Utc::now(),
            &Limits::default(),
        ) {
            if let Some(expires) = saved.expires(&c) {
                catalog = Some(HeldCatalog {
                    catalog: c,
                    verified_at: state::now(),
                    source: "saved head".into(),
                    expires,
                });
            }
        }
        head.set(saved);
    }
    let swarm_addr = swarm.node.addr();
    let dht_addrs: Vec<String> = swarm.dht_addrs().iter().map(|a| a.to_string()).collect();
    if !dht_addrs.is_empty() {
        archy_catalog::fsutil::write_atomic(
            &data.join("dht.addr"),
            dht_addrs.join("\n").as_bytes(),
        )?;
    }
    archy_catalog::fsutil::write_atomic(
        &data.join("swarm.addr"),
        swarm_addr.to_string().as_bytes(),
    )?;
    let (events, _) = broadcast::channel(1024);
    let node = Arc::new(Node {
        swarm,
        head,
        runtime,
        data,
        cfg,
        store: Mutex::new(store),
        catalog: Mutex::new(catalog),
        head_servers: Default::default(),
        events,
        wake: Notify::new(),
        token,
        metrics: Metrics::default(),
    });
    tracing::info!(%addr, node = %node.cfg.name, "local API listening");
    println!(
        "archy node {} listening on http://{addr} (token in {}), swarm {swarm_addr}",
        node.cfg.name,
        node.data.join("api.token").display()
    );

    let reconciler = tokio::spawn(reconcile_loop(node.clone()));
    let seeder = tokio::spawn(announce_held(node.clone()));
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/apps", get(list_apps))
        .route("/v1/apps/{id}", get(get_app))
        .route("/v1/apps/{id}/install", post(install))
        .route("/v1/apps/{id}/uninstall", post(uninstall))
        .route("/v1/apps/{id}/start", post(|s, p| set_running(s, p, true)))
        .route("/v1/apps/{id}/stop", post(|s, p| set_running(s, p, false)))
        .route("/v1/apps/{id}/restart", post(restart))
        .route("/v1/apps/{id}/logs", get(logs))
        .route("/v1/events", get(event_stream))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(node.clone(), auth))
        .with_state(node.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    reconciler.abort();
    seeder.abort();
    // Peers see this node's connections close instead of timing out; bounded, so a
    // stuck peer cannot hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(3), node.swarm.clone().shutdown()).await;
    Ok(())
}

fn load_or_create_token(data: &Path) -> anyhow::Result<String> {
    let path = data.join("api.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if t.trim().len() >= 32 {
            return Ok(t.trim().to_string());
        }
    }
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = hex::encode(b);
    archy_catalog::fsutil::write_atomic_mode(&path, token.as_bytes(), Some(0o600))?;
    Ok(token)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn auth(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), node.token.as_bytes()));
    if ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong bearer token (see <data>/api.token)"})),
        )
            .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

async fn status(State(node): State<Arc<Node>>) -> Response {
    let catalog = node.catalog.lock().await.as_ref().map(|h| json!({"version": h.catalog.version, "apps": h.catalog.apps.len(), "age_seconds": state::now().saturating_sub(h.verified_at), "source": h.source, "expires": h.expires.to_rfc3339(), "expired": h.expired(chrono::Utc::now())}));
    let held = node.swarm.node.list_complete().await.unwrap_or_default();
    let f = &node.metrics.fetched;
    let swarm = json!({
        "addr": node.swarm.node.addr().to_string(),
        "dht": node.swarm.dht_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "origin": node.cfg.origin,
        "peers": node.cfg.peers,
        "dht_peers": node.swarm.dht_peers().await,
        "head_servers": node.head_servers.lock().map(|h| h.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "blobs_held": held.len(),
        "fetched_bytes": {
            "origin": f.origin.load(Ordering::Relaxed),
            "peer": f.peers.load(Ordering::Relaxed),
            "publish_dir": f.publish_dir.load(Ordering::Relaxed),
        },
        "served_bytes": node.swarm.node.served().bytes(),
    });
    let store = node.store.lock().await;
    let apps: BTreeMap<_, _> = store
        .state
        .conditions
        .iter()
        .map(|(k, c)| (k.clone(), c.phase))
        .collect();
    Json(json!({
        "name": node.cfg.name,
        "runtime": node.runtime.name(),
        "protections": node.runtime.protections(),
        "catalog": catalog,
        "swarm": swarm,
        "trusted_versions": store.state.trusted.as_ref().map(|t| json!({"root": t.root_version, "timestamp": t.timestamp_version, "catalog": t.catalog_version})),
        "apps": apps,
    }))
    .into_response()
}

fn app_json(
    id: &str,
    desired: Option<&DesiredRecord>,
    cond: Option<&Condition>,
) -> serde_json::Value {
    json!({
        "id": id,
        "desired": desired.map(|d| json!({"running": d.running, "generation": d.generation, "source": match &d.source {
            AppSource::Catalog { version } => json!({"kind": "catalog", "version": version}),
            AppSource::Market { handle, .. } => json!({"kind": "market", "handle": handle}),
        }})),
        "phase": cond.map(|c| c.phase).unwrap_or(Phase::Pending),
        "version": cond.and_then(|c| c.version.clone()),
        "last_error": cond.and_then(|c| c.last_error.clone()),
        "observed_generation": cond.map(|c| c.observed_generation),
        "failures": cond.map(|c| c.failures),
        "held_back": cond.and_then(|c| c.held_back.as_ref()).map(|h| json!({"version": h.version, "request": h.request, "reason": h.reason})),
    })
}

async fn list_apps(State(node): State<Arc<Node>>) -> Response {
    let store = node.store.lock().await;
    let s = &store.state;
    let ids: BTreeSet<&String> = s.desired.keys().chain(s.conditions.keys()).collect();
    Json(
        ids.into_iter()
            .map(|id| app_json(id, s.desired.get(id), s.conditions.get(id)))
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn get_app(State(node): State<Arc<Node>>, UrlPath(id): UrlPath<String>) -> Response {
    let store = node.store.lock().await;
    let s = &store.state;
    if !s.desired.contains_key(&id) && !s.conditions.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, format!("{id} is not installed"));
    }
    Json(app_json(&id, s.desired.get(&id), s.conditions.get(&id))).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    version: Option<String>,
    market: Option<MarketInstall>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarketInstall {
    handle: String,
    manifest: archy_catalog::AppManifest,
    image: archy_catalog::ImageRef,
}

async fn install(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<InstallBody>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let source = match body.market {
        Some(m) => {
            if m.manifest.id != id {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the announced manifest is {} not {id}", m.manifest.id),
                );
            }
            if let Err(e) = m
                .manifest
                .validate_with(archy_catalog::manifest::ImageField::Hash)
            {
                return error(StatusCode::BAD_REQUEST, e.to_string());
            }
            if m.manifest.image_hash() != Some(m.image.hash) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the manifest does not name the announced image",
                );
            }
            if let Err(e) = check_image_size(&node.cfg, &m.image) {
                node.metrics.refused_inputs.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(handle = %m.handle, "{e}");
                return error(StatusCode::UNPROCESSABLE_ENTITY, e);
            }
            AppSource::Market {
                handle: m.handle,
                manifest: Box::new(m.manifest),
                image: m.image,
            }
        }
        None => {
            if let Err(e) = sync_catalog(&node).await {
                tracing::warn!(error = %e, "catalog sync failed; using the last verified catalog");
            }
            let catalog = node.catalog.lock().await;
            let Some(held) = catalog.as_ref() else {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no verified catalog yet (is origin_dir configured and reachable?)",
                );
            };
            if let Some(why) = held.expired(chrono::Utc::now()) {
                return error(StatusCode::SERVICE_UNAVAILABLE, why);
            }
            let c = &held.catalog;
            match c.release(&id, body.version.as_deref()) {
                Some(r) => {
                    if let Err(e) = r.check() {
                        return error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            format!("{id}: refused by policy: {e}"),
                        );
                    }
                }
                None => {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!(
                            "{id}{} is not in the signed catalog v{}",
                            body.version
                                .as_ref()
                                .map(|v| format!("@{v}"))
                                .unwrap_or_default(),
                            c.version
                        ),
                    )
                }
            }
            AppSource::Catalog {
                version: body.version,
            }
        }
    };
    let mut store = node.store.lock().await;
    let (generation, requested) = store
        .state
        .desired
        .get(&id)
        .map_or((1, 1), |d| (d.generation + 1, d.requested + 1));
    store.state.uninstalling.remove(&id);
    store.state.desired.insert(
        id.clone(),
        DesiredRecord {
            source,
            running: true,
            generation,
            requested,
        },
    );
    let cond = store
        .state
        .conditions
        .entry(id.clone())
        .or_insert_with(Condition::pending);
    cond.retry_at = 0;
    cond.failures = 0;
    if let Err(e) = store.save() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot save state: {e}"),
        );
    }
    drop(store);
    node.wake.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "generation": generation})),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
struct UninstallBody {
    #[serde(default)]
    purge: bool,
}

async fn uninstall(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<UninstallBody>>,
) -> Response {
    let purge = body.map(|Json(b)| b.purge).unwrap_or(false);
    let mut store = node.store.lock().await;
    if !store.state.desired.contains_key(&id) && !store.state.conditions.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, format!("{id} is not installed"));
    }
    store.state.desired.remove(&id);
    store.state.uninstalling.insert(id.clone(), purge);
    if let Some(c) = store.state.conditions.get_mut(&id) {
        c.phase = Phase::Uninstalling;
        c.retry_at = 0;
    }
    if let Err(e) = store.save() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot save state: {e}"),
        );
    }
    drop(store);
    node.wake.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "purge": purge})),
    )
        .into_response()
}

async fn set_running(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    running: bool,
) -> Response {
    let mut store = node.store.lock().await;
    let Some(d) = store.state.desired.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, format!("{id} is not installed"));
    };
    d.running = running;
    d.generation += 1;
    let generation = d.generation;
    if let Err(e) = store.save() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot save state: {e}"),
        );
    }
    drop(store);
    node.wake.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "generation": generation, "running": running})),
    )
        .into_response()
}

async fn restart(State(node): State<Arc<Node>>, UrlPath(id): UrlPath<String>) -> Response {
    if !node.store.lock().await.state.desired.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, format!("{id} is not installed"));
    }
    let rt = node.runtime.clone();
    let app = id.clone();
    match tokio::task::spawn_blocking(move || rt.stop(&app).and_then(|_| rt.start(&app))).await {
        Ok(Ok(())) => Json(json!({"id": id, "restarted": true})).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn logs(State(node): State<Arc<Node>>, UrlPath(id): UrlPath<String>) -> Response {
    let rt = node.runtime.clone();
    match tokio::task::spawn_blocking(move || rt.logs(&id, 200)).await {
        Ok(Ok(text)) => text.into_response(),
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn event_stream(
    State(node): State<Arc<Node>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let rx = node.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let ev = Event::default().data(serde_json::to_string(&e).unwrap_or_default());
                    return Some((Ok(ev), rx));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let store = node.store.lock().await;
    let mut out = String::new();
    let m = &node.metrics;
    let served = node.swarm.node.served();
    for (name, help, v) in [
        (
            "archy_reconcile_passes_total",
            "Reconcile passes run.",
            m.reconcile_passes.load(Ordering::Relaxed),
        ),
        (
            "archy_reconcile_actions_total",
            "Actions performed by the reconciler.",
            m.actions.load(Ordering::Relaxed),
        ),
        (
            "archy_reconcile_failures_total",
            "App reconciles that failed.",
            m.failures.load(Ordering::Relaxed),
        ),
        (
            "archy_rollbacks_total",
            "Failed updates rolled back to the last healthy release.",
            m.rollbacks.load(Ordering::Relaxed),
        ),
        (
            "archy_verification_failures_total",
            "Documents or images refused by verification.",
            m.verification_failures.load(Ordering::Relaxed),
        ),
        (
            "archy_refused_inputs_total",
            "Inputs refused by a budget before anything was allocated for them.",
            m.refused_inputs.load(Ordering::Relaxed),
        ),
        (
            "archy_served_bytes_total",
            "Verified content bytes this node sent to peers.",
            served.bytes(),
        ),
        (
            "archy_served_transfers_total",
            "Blob transfers this node answered (completed or aborted by the peer).",
            served.transfers.load(Ordering::Relaxed),
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    let f = &m.fetched;
    out.push_str("# HELP archy_fetched_bytes_total Image bytes fetched, by source.\n# TYPE archy_fetched_bytes_total counter\n");
    for (source, counter) in [
        ("origin", &f.origin),
        ("peer", &f.peers),
        ("publish_dir", &f.publish_dir),
    ] {
        out.push_str(&format!(
            "archy_fetched_bytes_total{{source=\"{source}\"}} {}\n",
            counter.load(Ordering::Relaxed)
        ));
    }
    out.push_str(&format!(
        "# HELP archy_fetch_resumed_bytes_total Image bytes already held when a fetch started (not fetched again).\n# TYPE archy_fetch_resumed_bytes_total counter\narchy_fetch_resumed_bytes_total {}\n",
        f.resumed.load(Ordering::Relaxed)
    ));
    out.push_str("# HELP archy_app_phase Apps by phase.\n# TYPE archy_app_phase gauge\n");
    let mut by_phase: BTreeMap<String, u64> = BTreeMap::new();
    for c in store.state.conditions.values() {
        *by_phase
            .entry(format!("{:?}", c.phase).to_lowercase())
            .or_default() += 1;
    }
    for (p, n) in by_phase {
        out.push_str(&format!("archy_app_phase{{phase=\"{p}\"}} {n}\n"));
    }
    if let Some(t) = &store.state.trusted {
        out.push_str(&format!("# HELP archy_catalog_version Highest accepted catalog version.\n# TYPE archy_catalog_version gauge\narchy_catalog_version {}\n", t.catalog_version));
    }
    drop(store);
    out.push_str(&format!("# HELP archy_dht_refused_records_total DHT records and provider records refused for others (not Archy's, forged, or over a cap).\n# TYPE archy_dht_refused_records_total counter\narchy_dht_refused_records_total {}\n", node.swarm.dht_refused().await));
    if let Some(h) = node.catalog.lock().await.as_ref() {
        out.push_str(&format!("# HELP archy_catalog_expires_timestamp_seconds When the held catalog stops being usable (its timestamp's expiry), Unix seconds.\n# TYPE archy_catalog_expires_timestamp_seconds gauge\narchy_catalog_expires_timestamp_seconds {}\n", h.expires.timestamp()));
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// Gets and verifies the newest head: over the swarm from the origin (which wins when
/// it answers) or, when it does not, from peers; else from a local publish dir. Keeps
/// the last verified catalog on failure (and says why).
async fn sync_catalog(node: &Node) -> anyhow::Result<()> {
    let Some(trusted) = node.store.lock().await.state.trusted.clone() else {
        anyhow::bail!("no trust anchor: put the publisher's root.json in the data dir or set `root` in config.toml");
    };
    let limits = Limits::default();
    let origin: Option<archy_registry::PeerAddr> =
        node.cfg.origin.as_ref().and_then(|p| p.parse().ok());
    let peers: Vec<archy_registry::PeerAddr> = node
        .cfg
        .peers
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
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
            .map_err(|e| e.to_string())
        }
    };
    if origin.is_some() || !peers.is_empty() {
        match sync(origin.clone(), peers.clone()).await {
            Ok(s) => got = Some(s),
            Err(e) => why.push(e),
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
            Err(e) => why.push(format!("DHT head servers: {e}")),
        }
    }
    if got.is_none() {
        if let Some(dir) = node.cfg.origin_dir.clone() {
            match archy_registry::head::SignedHead::read_publish_dir(&dir) {
                Ok(head) => match archy_registry::head::verify_head(
                    &trusted,
                    &head,
                    chrono::Utc::now(),
                    &limits,
                ) {
                    Ok((t, c)) => got = Some((t, c, head, "publish dir".into())),
                    Err(e) => why.push(format!("{}: head refused: {e}", dir.display())),
                },
                Err(e) => why.push(e.to_string()),
            }
        }
    }
    let Some((next, catalog, mut head, source)) = got else {
        if why.iter().any(|w| w.contains("refused")) {
            node.metrics
                .verification_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        if why.is_empty() {
            anyhow::bail!("no origin configured");
        }
        anyhow::bail!("{}", why.join("; "));
    };
    tracing::debug!(%source, version = catalog.version, "head verified");
    let expires = head
        .expires(&catalog)
        .context("the verified head's timestamp does not parse")?;
    if expires - chrono::Utc::now() < chrono::Duration::days(1)
        && held_expiry.is_none_or(|e| e != expires)
    {
        tracing::warn!(%source, expires = %expires.to_rfc3339(), "the catalog expires within a day; the publisher must sign a new timestamp");
    }
    // Peers that trust an older root need the chain: keep every root known that walks
    // to the trusted one.
    let known = held.iter().flat_map(|h| h.roots.clone());
    head.roots = archy_registry::head::root_chain(&next, known.chain(head.roots), &limits);
    // An unchanged head (the usual pass: same root, timestamp and catalog versions)
    // writes nothing.
    if next != trusted || held.as_ref().is_none_or(|h| h.roots != head.roots) {
        let mut store = node.store.lock().await;
        store.state.trusted = Some(next);
        store.save()?;
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

/// Seeding: every blob the node holds whole, and the head it holds, are announced in
/// the DHT once at start (a fetch announces its blob from its first verified bytes, a
/// first head sync the head); Kademlia republishes the records for as long as the
/// node runs.
async fn announce_held(node: Arc<Node>) {
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

async fn reconcile_loop(node: Arc<Node>) {
    loop {
        if let Err(e) = sync_catalog(&node).await {
            tracing::warn!(error = %e, "catalog sync");
        }
        reconcile_all(&node).await;
        node.metrics
            .reconcile_passes
            .fetch_add(1, Ordering::Relaxed);
        let _ = tokio::time::timeout(RESYNC, node.wake.notified()).await;
    }
}

/// One level-triggered pass over every app we want, are removing, or still find in the
/// runtime.
async fn reconcile_all(node: &Arc<Node>) {
    let observed: Vec<String> = {
        let rt = node.runtime.clone();
        tokio::task::spawn_blocking(move || {
            rt.list()
                .map(|l| l.into_iter().map(|c| c.app_id).collect())
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    };
    let ids: BTreeSet<String> = {
        let s = &node.store.lock().await.state;
        s.desired
            .keys()
            .chain(s.uninstalling.keys())
            .cloned()
            .chain(observed)
            .collect()
    };
    // Apps waiting for a dependency get another go once something else has come up.
    let mut waiting: Vec<String> = Vec::new();
    for id in ids {
        if reconcile_one(node, &id).await == Outcome::Waiting {
            waiting.push(id);
        }
    }
    for _ in 0..3 {
        let before = waiting.len();
        let mut still = Vec::new();
        for id in waiting {
            if reconcile_one(node, &id).await == Outcome::Waiting {
                still.push(id);
            }
        }
        waiting = still;
        if waiting.is_empty() || waiting.len() == before {
            break;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Waiting,
}

async fn reconcile_one(node: &Arc<Node>, id: &str) -> Outcome {
    let (record, cond, purge) = {
        let s = &node.store.lock().await.state;
        (
            s.desired.get(id).cloned(),
            s.conditions.get(id).cloned(),
            s.uninstalling.get(id).copied(),
        )
    };
    if cond.as_ref().is_some_and(|c| c.retry_at > state::now()) {
        return Outcome::Done;
    }
    let recorded = cond.is_some();
    let Some(record) = record else {
        return remove_app(node, id, recorded, purge == Some(true)).await;
    };
    let last_good = cond.as_ref().and_then(|c| c.last_good.clone());
    let release = match desired_release(node, id, &record, last_good.as_ref()).await {
        Ok(r) => r,
        Err(e) => {
            record_failure(node, id, e.to_string(), None).await;
            return Outcome::Done;
        }
    };
    let held_back = cond
        .as_ref()
        .and_then(|c| c.held_back.as_ref())
        .map(|h| (h.manifest_hash, h.request));
    // A release that already failed its health check for this request stays held back:
    // the last healthy one keeps running.
    let held = last_good.is_some()
        && planner::is_held_back(hash_of(&release), record.requested, held_back);
    let deploy = match &last_good {
        Some(good) if held => good.clone(),
        _ => release,
    };
    let target = app_target(node, id, &deploy, record.running);
    if let Some(missing) = unmet_dependency(node, &target.spec.manifest).await {
        update_condition(node, id, |c| {
            c.phase = Phase::Pending;
            c.last_error = Some(format!("waiting for {missing}"));
        })
        .await;
        let _ = node.events.send(ProgressEvent {
            app_id: id.to_string(),
            stage: Stage::Plan,
            bytes_done: 0,
            bytes_total: 0,
            message: format!("waiting for {missing}"),
        });
        return Outcome::Waiting;
    }
    let (result, terminal) = execute(node, id, Some(target.clone()), recorded, false).await;
    let error = match result {
        Ok(_) => {
            let hold = if held { Hold::Keep } else { Hold::Clear };
            record_success(node, id, &record, deploy, hold).await;
            finish(node, terminal);
            return Outcome::Done;
        }
        Err(e) => e,
    };
    let attempted = target.desired.manifest_hash;
    let rollback_to = last_good.filter(|good| {
        planner::should_roll_back(
            attempted,
            Some(hash_of(good)),
            record.running,
            error.touched_the_app(),
        )
    });
    let Some(good) = rollback_to else {
        record_failure(node, id, error.to_string(), None).await;
        finish(node, terminal);
        return Outcome::Done;
    };
    // The update broke the app: put the last healthy release back and hold this one.
    tracing::warn!(app = id, from = deploy.version(), to = good.version(), error = %error, "update failed; rolling back");
    node.metrics.rollbacks.fetch_add(1, Ordering::Relaxed);
    let back = app_target(node, id, &good, true);
    let (rolled, _) = execute(node, id, Some(back), true, true).await;
    let message = match &rolled {
        Ok(_) => format!(
            "update to {} failed: {error}; rolled back to {}, which is running",
            deploy.version(),
            good.version()
        ),
        Err(e) => format!(
            "update to {} failed: {error}; rollback to {} failed too: {e}",
            deploy.version(),
            good.version()
        ),
    };
    // Why the release is held back. After a failed rollback it says only what failed
    // (the rollback's own failure goes to `last_error`): a later pass that brings the
    // last good release back shows this reason, and must not say the rollback failed.
    let reason = match &rolled {
        Ok(_) => message.clone(),
        Err(_) => format!("update to {} failed: {error}", deploy.version()),
    };
    let held = HeldBack {
        version: deploy.version().to_string(),
        manifest_hash: attempted,
        request: record.requested,
        reason,
    };
    match rolled {
        Ok(_) => record_success(node, id, &record, good, Hold::Set(held)).await,
        Err(_) => record_failure(node, id, message.clone(), Some(held)).await,
    }
    finish(
        node,
        Some(ProgressEvent {
            app_id: id.to_string(),
            stage: Stage::Failed,
            bytes_done: 0,
            bytes_total: 0,
            message,
        }),
    );
    Outcome::Done
}

/// Uninstall: remove whatever of the app the runtime has, then forget it (its data
/// stays unless purged).
async fn remove_app(node: &Arc<Node>, id: &str, recorded: bool, purge: bool) -> Outcome {
    let (result, terminal) = execute(node, id, None, recorded, false).await;
    match result {
        Ok(_) => {
            let mut store = node.store.lock().await;
            store.state.conditions.remove(id);
            store.state.uninstalling.remove(id);
            let _ = store.save();
            if purge {
                let _ = std::fs::remove_dir_all(node.data.join("apps").join(id));
            }
        }
        Err(e) => record_failure(node, id, e.to_string(), None).await,
    }
    finish(node, terminal);
    Outcome::Done
}

/// Runs the executor for one app off the async threads. Progress events go out as they
/// come, except the terminal one, which is returned so it can be sent once the state
/// (and, on purge, the data dir) reflects the outcome: a client that sees `done` sees
/// the finished result. A rollback pass reports every step as [`Stage::Rollback`], so
/// the stages a client sees still only move forward.
async fn execute(
    node: &Arc<Node>,
    id: &str,
    target: Option<AppTarget>,
    recorded: bool,
    rollback: bool,
) -> (
    Result<Vec<planner::Action>, executor::ExecError>,
    Option<ProgressEvent>,
) {
    // Local blobs first (delivered out of band or by an earlier fetch), then the swarm
    // (origin and peers at once), then the origin's publish dir as a last resort.
    let images = crate::swarm_source::SwarmImageSource {
        swarm: node.swarm.clone(),
        origin: node.cfg.origin.as_ref().and_then(|p| p.parse().ok()),
        peers: node
            .cfg
            .peers
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
        blobs_dir: node.data.join("blobs"),
        fallback_dirs: node
            .cfg
            .origin_dir
            .iter()
            .map(|d| d.join("blobs"))
            .collect(),
        handle: tokio::runtime::Handle::current(),
        counters: node.metrics.fetched.clone(),
    };
    let rt = node.runtime.clone();
    let events = node.events.clone();
    let app = id.to_string();
    let (result, terminal) = tokio::task::spawn_blocking(move || {
        let mut terminal = None;
        let r = executor::reconcile(
            rt.as_ref(),
            &images,
            &app,
            target.as_ref(),
            recorded,
            &mut |mut e| {
                if is_terminal(e.stage) {
                    terminal = Some(e);
                } else {
                    if rollback {
                        e.stage = Stage::Rollback;
                        e.message = format!("rollback: {}", e.message);
                    }
                    let _ = events.send(e);
                }
            },
        );
        (r, terminal)
    })
    .await
    .unwrap_or_else(|e| {
        (
            Err(executor::ExecError::Runtime(
                std::io::Error::other(format!("reconcile task failed: {e}")).into(),
            )),
            None,
        )
    });
    if let Ok(actions) = &result {
        node.metrics
            .actions
            .fetch_add(actions.len() as u64, Ordering::Relaxed);
    }
    (result, terminal)
}

fn finish(node: &Node, terminal: Option<ProgressEvent>) {
    if let Some(e) = terminal {
        let _ = node.events.send(e);
    }
}

/// The first dependency that is not installed and running in a matching version.
async fn unmet_dependency(node: &Node, m: &archy_catalog::AppManifest) -> Option<String> {
    let store = node.store.lock().await;
    for d in &m.dependencies {
        let req = d.version_req.as_deref().unwrap_or("*");
        let ok = store.state.conditions.get(&d.app_id).is_some_and(|c| {
            c.phase == Phase::Running
                && c.version
                    .as_deref()
                    .and_then(|v| semver::Version::parse(v).ok())
                    .is_some_and(|v| semver::VersionReq::parse(req).is_ok_and(|r| r.matches(&v)))
        });
        if !ok {
            return Some(format!("{} {req}", d.app_id));
        }
    }
    None
}

/// Changes one app's condition (created if missing) and saves the state.
async fn update_condition(node: &Node, id: &str, change: impl FnOnce(&mut Condition)) {
    let mut store = node.store.lock().await;
    let cond = store
        .state
        .conditions
        .entry(id.to_string())
        .or_insert_with(Condition::pending);
    let before = cond.clone();
    change(cond);
    if *cond == before {
        return; // a quiet pass: nothing to write
    }
    cond.updated_at = state::now();
    if let Err(e) = store.save() {
        tracing::error!(app = id, error = %e, "cannot save the node state");
    }
}

/// What a successful pass does with a held-back release.
enum Hold {
    /// This pass ran the last good release for the request that held one back: the
    /// hold stays, and its reason is the app's last error.
    Keep,
    /// The desired release ran: any hold is over.
    Clear,
    /// The update failed and was rolled back: hold it.
    Set(HeldBack),
}

/// Records a pass that left the app as desired (or, after a rollback, running its last
/// healthy release with the failed one held back).
async fn record_success(
    node: &Node,
    id: &str,
    record: &DesiredRecord,
    deployed: Deployment,
    hold: Hold,
) {
    update_condition(node, id, |cond| {
        cond.phase = if record.running {
            Phase::Running
        } else {
            Phase::Stopped
        };
        cond.failures = 0;
        cond.retry_at = 0;
        cond.observed_generation = record.generation;
        cond.version = Some(deployed.version().to_string());
        if record.running {
            cond.last_good = Some(deployed);
        }
        match hold {
            Hold::Keep => {}
            Hold::Clear => cond.held_back = None,
            Hold::Set(held) => cond.held_back = Some(held),
        }
        cond.last_error = cond.held_back.as_ref().map(|h| h.reason.clone());
    })
    .await;
}

async fn record_failure(node: &Node, id: &str, error: String, held: Option<HeldBack>) {
    node.metrics.failures.fetch_add(1, Ordering::Relaxed);
    update_condition(node, id, |cond| {
        cond.phase = Phase::Failed;
        cond.failures = planner::next_failures(cond.failures, true, None);
        cond.retry_at = state::now() + planner::backoff(cond.failures).as_secs();
        cond.last_error = Some(error);
        if held.is_some() {
            cond.held_back = held;
        }
    })
    .await;
}

/// The release a desired app asks for: from the verified catalog (policy-checked) or
/// the stored market announcement.
/// Refuses an image whose claimed size is over the node's budget, naming both figures.
fn check_image_size(cfg: &NodeConfig, image: &archy_catalog::ImageRef) -> Result<(), String> {
    match image.size > cfg.max_image_bytes {
        true => Err(format!(
            "image {} claims {} bytes, more than this node's max_image_bytes ({}); refused",
            image.hash, image.size, cfg.max_image_bytes
        )),
        false => Ok(()),
    }
}

/// The release `r` asks for. From an expired catalog only the release already running
/// (`last_good`, if it is what `r` pins) is kept; anything else is refused.
async fn desired_release(
    node: &Node,
    id: &str,
    r: &DesiredRecord,
    last_good: Option<&Deployment>,
) -> anyhow::Result<Deployment> {
    let (manifest, image) = match &r.source {
        AppSource::Catalog { version } => {
            let catalog = node.catalog.lock().await;
            let held = catalog.as_ref().context("no verified catalog yet")?;
            if let Some(why) = held.expired(chrono::Utc::now()) {
                return match last_good {
                    Some(good)
                        if version
                            .as_deref()
                            .is_none_or(|v| good.manifest.version == v) =>
                    {
                        Ok(good.clone())
                    }
                    _ => Err(anyhow::anyhow!("{id}: {why}")),
                };
            }
            let c = &held.catalog;
            let rel = c
                .release(id, version.as_deref())
                .with_context(|| format!("{id} is not in catalog v{}", c.version))?;
            rel.check()
                .map_err(|e| anyhow::anyhow!("{id}: refused by policy: {e}"))?;
            (rel.manifest.clone(), rel.image.clone())
        }
        AppSource::Market {
            manifest, image, ..
        } => ((**manifest).clone(), image.clone()),
    };
    // Checked again here: a catalog, or a request saved before the budget changed, may
    // claim more; the fetch would plan its pieces from that number.
    check_image_size(&node.cfg, &image).map_err(anyhow::Error::msg)?;
    Ok(Deployment {
        manifest: Box::new(manifest.normalized()),
        image,
    })
}

fn hash_of(d: &Deployment) -> archy_catalog::ContentHash {
    d.manifest.manifest_hash()
}

/// The executor's target for one release of an app.
fn app_target(node: &Node, id: &str, d: &Deployment, running: bool) -> AppTarget {
    let m = (*d.manifest).clone();
    let desired = DesiredApp {
        app_id: id.to_string(),
        manifest_hash: m.manifest_hash(),
        image: d.image.hash,
        running,
        dependencies_ready: true,
    };
    let spec = ContainerSpec {
        manifest_hash: m.manifest_hash(),
        manifest: m,
        image: d.image.clone(),
        publish_ip: node.cfg.publish_ip,
        data_dir: node.data.join("apps").join(id),
        secrets: Default::default(),
    };
    AppTarget { desired, spec }
}

/// Terminal stages, for clients following the event stream.
pub fn is_terminal(stage: Stage) -> bool {
    matches!(stage, Stage::Done | Stage::Failed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_system_picked_port_is_picked_again_after_a_restart() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let last: SocketAddr = "127.0.0.1:4711".parse().unwrap();
        assert_eq!(reuse_port(any, Some(last)), last);
        assert_eq!(reuse_port(any, None), any);
        // A configured port, or a last run on another IP, is left alone.
        let fixed: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(reuse_port(fixed, Some(last)), fixed);
        let other: SocketAddr = "127.0.0.2:4711".parse().unwrap();
        assert_eq!(reuse_port(any, Some(other)), any);

        let dir = tempfile::tempdir().unwrap();
        let id = "7a19ddf08533f66004148316cfd540004a614c3435d7d7f8b9310798cc6a4912";
        std::fs::write(
            dir.path().join("swarm.addr"),
            format!("{id}@127.0.0.1:4711"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("dht.addr"),
            "/ip4/127.0.0.1/tcp/4712/p2p/12D3KooWCfK5JmuWcm38zw1Q1sQ3o3Y5ZCHmVxwemEV6Mm5Dq1dx\n",
        )
        .unwrap();
        let read = LastAddrs::read(dir.path());
        assert_eq!(read.swarm, Some(last));
        assert_eq!(read.dht, Some("127.0.0.1:4712".parse().unwrap()));
        std::fs::write(dir.path().join("dht.addr"), "garbage").unwrap();
        assert_eq!(LastAddrs::read(dir.path()).dht, None);
    }
}
