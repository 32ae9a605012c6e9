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
        .route("/metrics", get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(node.clone(), auth))
        .with_state(node)
}

/// Saves an operator's change, wakes the reconcile loop, and answers 202 with `body`.
fn accepted(
    node: &Node,
    store: tokio::sync::MutexGuard<'_, crate::state::StateStore>,
    body: serde_json::Value,
) -> Response {
    if let Err(e) = store.save() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot save state: {e}"),
        );
    }
    drop(store);
    node.wake.notify_one();
    (StatusCode::ACCEPTED, Json(body)).into_response()
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
    let catalog = node.catalog.lock().await.as_ref().map(|h| json!({"version": h.catalog.version, "apps": h.catalog.apps.len(), "age_seconds": state::now().saturating_sub(h.verified_at), "source": h.source, "expires": h.expires.to_rfc3339(), "expired": h.expired(chrono::Utc::now()).map(|e| e.to_string())}));
    let held = node.swarm.node.list_complete().await.unwrap_or_default();
    let f = &node.metrics.fetched;
    let swarm = json!({
        "addr": node.swarm.node.addr().to_string(),
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
struct InstallBody {
    version: Option<String>,
    market: Option<MarketInstall>,
    /// Replace an app of the same id from another source (see [`app_identity::claim`]).
    #[serde(default)]
    replace: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarketInstall {
    /// Read as text and parsed here, so a bad handle gets its own message.
    handle: String,
    manifest: archy_catalog::AppManifest,
    image: archy_catalog::ImageRef,
    /// The endpoint ids the announcement names as serving the image.
    #[serde(default)]
    providers: Vec<String>,
}

async fn install(
    State(node): State<Arc<Node>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<InstallBody>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let source = match body.market {
        Some(m) => {
            let handle = match m.handle.parse::<archy_discovery::market::AppHandle>() {
                Ok(h) if h.app_id == id => h,
                Ok(h) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("the handle {h} names {}, not {id}", h.app_id),
                    )
                }
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
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
            if m.providers.len() > archy_discovery::announcement::MAX_PROVIDERS
                || !m
                    .providers
                    .iter()
                    .all(|p| archy_discovery::announcement::is_endpoint_id(p))
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "providers must be at most {} endpoint ids (64 lowercase hex digits)",
                        archy_discovery::announcement::MAX_PROVIDERS
                    ),
                );
            }
            if m.manifest.image_hash() != Some(m.image.hash) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the manifest does not name the announced image",
                );
            }
            if let Err(e) = policy::check_image_size(&m.image, node.cfg.max_image_bytes) {
                node.metrics
                    .refused
                    .refuse(refusals::Input::ImageSize, &handle.to_string(), &e);
                return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
            }
            AppSource::Market {
                handle,
                manifest: Box::new(m.manifest),
                image: m.image,
                providers: m.providers,
            }
        }
        None => {
            if let Err(e) = sync_catalog(&node).await {
                tracing::warn!(error = %e, "catalog sync failed; using the last verified catalog");
            }
            let catalog = node.catalog.lock().await;
            let found = match catalog.as_ref() {
                Some(held) => held.release(&id, body.version.as_deref(), chrono::Utc::now()),
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
                return error(code, e.to_string());
            }
            AppSource::Catalog {
                version: body.version,
            }
        }
    };
    let owner = source.owner();
    let mut store = node.store.lock().await;
    let holder = store.state.desired.get(&id).map(|d| d.source.owner());
    let claim = match app_identity::claim(&id, holder.as_ref(), &owner, body.replace) {
        Ok(c) => c,
        Err(taken) => {
            tracing::warn!(app = %id, "{taken}");
            return error(StatusCode::CONFLICT, taken.to_string());
        }
    };
    let (generation, requested) = store
        .state
        .desired
        .get(&id)
        .map_or((1, 1), |d| (d.generation + 1, d.requested + 1));
    store.state.uninstalling.remove(&id);
    if claim != Claim::Same {
        // Nothing of another app carries over: not its last healthy release (a rollback
        // target), not a held-back release, not its failure count.
        store
            .state
            .conditions
            .insert(id.clone(), Condition::pending());
    }
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
    let mut answer = json!({"id": id, "generation": generation, "owner": owner.dir_name()});
    if let Claim::Replace { previous } = &claim {
        tracing::info!(app = %id, "replacing the app from {previous} with the one from {owner}");
        answer["replaced"] = json!({
            "owner": previous.dir_name(),
            "kept_data": app_identity::data_dir(&node.data, previous, &id),
        });
    }
    accepted(&node, store, answer)
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
    accepted(&node, store, json!({"id": id, "purge": purge}))
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
    accepted(
        &node,
        store,
        json!({"id": id, "generation": generation, "running": running}),
    )
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
