//! The local HTTP API: what the CLI (and scripts) use to drive the node.
//!
//! It listens on the Unix socket `<data>/api.sock` (0600; the CLI's way in) and on
//! loopback TCP (metrics; the address is in `<data>/api.addr`), and every request needs
//! the bearer token stored in `<data>/api.token` (0600, new at every start). Requests
//! only record what the operator wants (atomically, in the state file) and wake the
//! reconcile loop; the work and its progress happen there.
//!
//! Routes (all JSON unless noted):
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/status` | node name, runtime, catalog version and age, swarm (address, DHT, origin, peers, blobs held, bytes fetched by source, bytes served), apps |
//! | GET | `/v1/apps` | every app with its phase |
//! | GET | `/v1/apps/{id}` | one app (404 once uninstalled: no ghosts) |
//! | POST | `/v1/apps/{id}/install` | `{"version": "1.0.0"?}` or `{"market": {...}}`, with `"replace": true` to take an id another source holds (409 otherwise) |
//! | POST | `/v1/apps/{id}/uninstall` | `{"purge": false}` |
//! | POST | `/v1/apps/{id}/start`, `/stop`, `/restart` | |
//! | GET | `/v1/apps/{id}/logs` | text |
//! | GET | `/v1/events` | server-sent events, one [`crate::executor::ProgressEvent`] per `data:` line |
//! | POST | `/v1/seeds` | `{"path": "/abs/file", "hash": "blake3:..."?}`: seed a file into the swarm |
//! | POST | `/v1/web/login-link` | a one-time dashboard login link (`archy node web-url`) |
//! | GET | `/metrics` | Prometheus text format |

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    sync::{atomic::Ordering, Arc},
};

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
use tokio::sync::broadcast;

use super::{metrics, refusals, sync::sync_catalog, Node, ReleaseError};
use crate::{
    app_identity::{self, Claim},
    policy,
    state::{self, AppSource, Condition, DesiredRecord, Phase},
};

/// The API's routes, behind the token check.
pub(super) fn router(node: Arc<Node>) -> Router {
    Router::new()
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
        .route("/v1/seeds", post(seed))
        .route("/v1/web/login-link", post(super::web::new_login_link))
        .route("/metrics", get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(node.clone(), auth))
        .with_state(node)
}

/// Why a request was refused: the HTTP status and a message that names what was wrong.
#[derive(Debug)]
pub(super) struct Refused {
    pub code: StatusCode,
    pub message: String,
}

impl Refused {
    fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error(self.code, self.message)
    }
}

/// A request the reconcile loop carries out: 202 with its answer, or the refusal.
fn accepted(answer: Result<serde_json::Value, Refused>) -> Response {
    match answer {
        Ok(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Saves an operator's change and wakes the reconcile loop.
fn save_and_wake(
    node: &Node,
    store: tokio::sync::MutexGuard<'_, crate::state::StateStore>,
) -> Result<(), Refused> {
    store.save().map_err(|e| {
        Refused::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot save state: {e}"),
        )
    })?;
    drop(store);
    node.wake.notify_one();
    Ok(())
}

/// Every route needs the bearer token from `<data>/api.token`.
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

pub(super) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedBody {
    /// An absolute path this daemon can read.
    path: std::path::PathBuf,
    /// The hash the file must have (the release's image), if known.
    #[serde(default)]
    hash: Option<archy_catalog::ContentHash>,
}

/// Imports a file the operator names into the node's store, which from then on serves
/// it and announces it in the DHT: how a developer's own node seeds the image they
/// publish. Answers with the hash and this node's endpoint id, the provider to announce.
async fn seed(State(node): State<Arc<Node>>, Json(body): Json<SeedBody>) -> Response {
    let path = &body.path;
    if !path.is_absolute() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{}: give an absolute path", path.display()),
        );
    }
    let size = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{}: not a file", path.display()),
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{}: {e}", path.display())),
    };
    if size > node.cfg.max_image_bytes {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} is {size} bytes, more than this node's max_image_bytes ({})",
                path.display(),
                node.cfg.max_image_bytes
            ),
        );
    }
    // A file that is not the image asked for is refused before it enters the store,
    // which would serve it to anyone who asks.
    if let Some(want) = body.hash {
        let owned = path.clone();
        let got = tokio::task::spawn_blocking(move || archy_catalog::oci::hash_file(&owned)).await;
        match got {
            Ok(Ok((got, _))) if got == want => {}
            Ok(Ok((got, _))) => {
                return error(
                    StatusCode::CONFLICT,
                    format!("{} hashes to {got}, not {want}", path.display()),
                )
            }
            Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    let hash = match node.swarm.import(path).await {
        Ok(h) => h,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot import {}: {e}", path.display()),
            )
        }
    };
    node.swarm.announce(hash).await;
    tracing::info!(%hash, size, file = %path.display(), "seeding");
    let addr = node.swarm.node.addr();
    Json(json!({
        "hash": hash,
        "size": size,
        "provider": hex::encode(addr.id),
        "addr": addr.to_string(),
    }))
    .into_response()
}

async fn status(State(node): State<Arc<Node>>) -> Response {
    Json(status_json(&node).await).into_response()
}

/// What `/v1/status` answers (and the dashboard's Node page shows).
pub(super) async fn status_json(node: &Node) -> serde_json::Value {
    let catalog = node.catalog.lock().await.as_ref().map(|h| json!({"version": h.catalog.version, "apps": h.catalog.apps.len(), "age_seconds": state::now().saturating_sub(h.verified_at), "source": h.source, "expires": h.expires.to_rfc3339(), "expired": h.expired(chrono::Utc::now()).map(|e| e.to_string())}));
    let held = node.swarm.node.list_complete().await.unwrap_or_default();
    let f = &node.metrics.fetched;
    let swarm = json!({
        "addr": node.swarm.node.addr().to_string(),
        // Where peers dial it (differs from `addr` when bound to every address).
        "direct_addrs": node.swarm.node.direct_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "dht": node.swarm.dht_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "origin": node.cfg.origin.as_ref().map(|o| o.to_string()),
        "peers": node.cfg.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "dht_peers": node.swarm.dht_peers().await,
        "relays": node.swarm.node.relays().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "home_relay": node.swarm.node.home_relay().map(|r| r.to_string()),
        "paths": node.swarm.node.peer_paths(),
        "head_servers": node.head_servers.lock().map(|h| h.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "blobs_held": held.len(),
        "fetched_bytes": {
            "origin": f.origin.load(Ordering::Relaxed),
            "peer": f.peers.load(Ordering::Relaxed),
            "publish_dir": f.publish_dir.load(Ordering::Relaxed),
            "web_seed": f.web_seed.load(Ordering::Relaxed),
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
    json!({
        "name": node.cfg.name,
        "runtime": node.runtime.name(),
        "protections": node.runtime.protections(),
        "catalog": catalog,
        "swarm": swarm,
        "trusted_versions": store.state.trusted.as_ref().map(|t| json!({"root": t.root_version, "timestamp": t.timestamp_version, "catalog": t.catalog_version})),
        "apps": apps,
    })
}

pub(super) fn app_json(
    id: &str,
    desired: Option<&DesiredRecord>,
    cond: Option<&Condition>,
) -> serde_json::Value {
    json!({
        "id": id,
        "desired": desired.map(|d| json!({"running": d.running, "generation": d.generation, "owner": d.source.owner().dir_name(), "source": match &d.source {
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
pub(super) struct InstallBody {
    pub version: Option<String>,
    pub market: Option<MarketInstall>,
    /// Replace an app of the same id from another source (see [`app_identity::claim`]).
    #[serde(default)]
    pub replace: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MarketInstall {
    /// Read as text and parsed here, so a bad handle gets its own message.
    pub handle: String,
    pub manifest: archy_catalog::AppManifest,
    pub image: archy_catalog::ImageRef,
    /// The endpoint ids the announcement names as serving the image.
    #[serde(default)]
    pub providers: Vec<String>,
}

async fn install(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<InstallBody>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    accepted(request_install(&node, &id, body).await)
}

/// Checks an install (or update) request and records it as desired: a catalog release
/// that may be installed now, or a marketplace announcement whose manifest, image and
/// providers are well formed and within this node's budgets.
pub(super) async fn request_install(
    node: &Node,
    id: &str,
    body: InstallBody,
) -> Result<serde_json::Value, Refused> {
    let bad = |msg: String| Refused::new(StatusCode::BAD_REQUEST, msg);
    let source = match body.market {
        Some(m) => {
            let handle = match m.handle.parse::<archy_discovery::market::AppHandle>() {
                Ok(h) if h.app_id == id => h,
                Ok(h) => return Err(bad(format!("the handle {h} names {}, not {id}", h.app_id))),
                Err(e) => return Err(bad(e.to_string())),
            };
            if m.manifest.id != id {
                return Err(bad(format!(
                    "the announced manifest is {} not {id}",
                    m.manifest.id
                )));
            }
            m.manifest
                .validate_with(archy_catalog::manifest::ImageField::Hash)
                .map_err(|e| bad(e.to_string()))?;
            if m.providers.len() > archy_discovery::announcement::MAX_PROVIDERS
                || !m
                    .providers
                    .iter()
                    .all(|p| archy_discovery::announcement::is_endpoint_id(p))
            {
                return Err(bad(format!(
                    "providers must be at most {} endpoint ids (64 lowercase hex digits)",
                    archy_discovery::announcement::MAX_PROVIDERS
                )));
            }
            if m.manifest.image_hash() != Some(m.image.hash) {
                return Err(bad("the manifest does not name the announced image".into()));
            }
            if let Err(e) = policy::check_image_size(&m.image, node.cfg.max_image_bytes) {
                node.metrics
                    .refused
                    .refuse(refusals::Input::ImageSize, &handle.to_string(), &e);
                return Err(Refused::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    e.to_string(),
                ));
            }
            AppSource::Market {
                handle,
                manifest: Box::new(m.manifest),
                image: m.image,
                providers: m.providers,
            }
        }
        None => {
            if let Err(e) = sync_catalog(node).await {
                tracing::warn!(error = %e, "catalog sync failed; using the last verified catalog");
            }
            let catalog = node.catalog.lock().await;
            let found = match catalog.as_ref() {
                Some(held) => held.release(id, body.version.as_deref(), chrono::Utc::now()),
                None => Err(ReleaseError::NoCatalog),
            };
            if let Err(e) = found {
                let code = match e {
                    ReleaseError::NoCatalog | ReleaseError::Expired { .. } => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    ReleaseError::NotInCatalog { .. } => StatusCode::NOT_FOUND,
                    ReleaseError::Policy { .. } | ReleaseError::TooLarge(_) => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                };
                return Err(Refused::new(code, e.to_string()));
            }
            AppSource::Catalog {
                version: body.version,
            }
        }
    };
    let owner = source.owner();
    let mut store = node.store.lock().await;
    let holder = store.state.desired.get(id).map(|d| d.source.owner());
    let claim = match app_identity::claim(id, holder.as_ref(), &owner, body.replace) {
        Ok(c) => c,
        Err(taken) => {
            tracing::warn!(app = %id, "{taken}");
            return Err(Refused::new(StatusCode::CONFLICT, taken.to_string()));
        }
    };
    let (generation, requested) = store
        .state
        .desired
        .get(id)
        .map_or((1, 1), |d| (d.generation + 1, d.requested + 1));
    store.state.uninstalling.remove(id);
    if claim != Claim::Same {
        // Nothing of another app carries over: not its last healthy release (a rollback
        // target), not a held-back release, not its failure count.
        store
            .state
            .conditions
            .insert(id.to_string(), Condition::pending());
    }
    store.state.desired.insert(
        id.to_string(),
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
        .entry(id.to_string())
        .or_insert_with(Condition::pending);
    cond.retry_at = 0;
    cond.failures = 0;
    let mut answer = json!({"id": id, "generation": generation, "owner": owner.dir_name()});
    if let Claim::Replace { previous } = &claim {
        tracing::info!(app = %id, "replacing the app from {previous} with the one from {owner}");
        answer["replaced"] = json!({
            "owner": previous.dir_name(),
            "kept_data": app_identity::data_dir(&node.data, previous, id),
        });
    }
    save_and_wake(node, store)?;
    Ok(answer)
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
    accepted(request_uninstall(&node, &id, purge).await)
}

/// Records that `id` goes (and its data too when `purge`).
pub(super) async fn request_uninstall(
    node: &Node,
    id: &str,
    purge: bool,
) -> Result<serde_json::Value, Refused> {
    let mut store = node.store.lock().await;
    if !store.state.desired.contains_key(id) && !store.state.conditions.contains_key(id) {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            format!("{id} is not installed"),
        ));
    }
    store.state.desired.remove(id);
    store.state.uninstalling.insert(id.to_string(), purge);
    if let Some(c) = store.state.conditions.get_mut(id) {
        c.phase = Phase::Uninstalling;
        c.retry_at = 0;
    }
    save_and_wake(node, store)?;
    Ok(json!({"id": id, "purge": purge}))
}

async fn set_running(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    running: bool,
) -> Response {
    accepted(request_running(&node, &id, running).await)
}

/// Records that `id` should run (or be stopped).
pub(super) async fn request_running(
    node: &Node,
    id: &str,
    running: bool,
) -> Result<serde_json::Value, Refused> {
    let mut store = node.store.lock().await;
    let Some(d) = store.state.desired.get_mut(id) else {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            format!("{id} is not installed"),
        ));
    };
    d.running = running;
    d.generation += 1;
    let generation = d.generation;
    save_and_wake(node, store)?;
    Ok(json!({"id": id, "generation": generation, "running": running}))
}

async fn restart(State(node): State<Arc<Node>>, UrlPath(id): UrlPath<String>) -> Response {
    match restart_app(&node, &id).await {
        Ok(answer) => Json(answer).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Stops and starts the app's container now (not through the reconcile loop).
pub(super) async fn restart_app(node: &Node, id: &str) -> Result<serde_json::Value, Refused> {
    if !node.store.lock().await.state.desired.contains_key(id) {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            format!("{id} is not installed"),
        ));
    }
    let rt = node.runtime.clone();
    let app = id.to_string();
    let internal = |e: String| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, e);
    tokio::task::spawn_blocking(move || rt.stop(&app).and_then(|_| rt.start(&app)))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
    Ok(json!({"id": id, "restarted": true}))
}

async fn logs(State(node): State<Arc<Node>>, UrlPath(id): UrlPath<String>) -> Response {
    match app_logs(&node, &id, 200).await {
        Ok(text) => text.into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// The last `lines` lines the app's container wrote.
pub(super) async fn app_logs(node: &Node, id: &str, lines: usize) -> Result<String, Refused> {
    let rt = node.runtime.clone();
    let app = id.to_string();
    match tokio::task::spawn_blocking(move || rt.logs(&app, lines)).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(Refused::new(StatusCode::NOT_FOUND, e.to_string())),
        Err(e) => Err(Refused::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
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
