//! The web dashboard, served by the daemon itself (`archy node run --web ADDR`): the
//! Store (signed catalog and marketplace side by side), an app's page with live install
//! progress, My apps, and the Node page.
//!
//! Every page is rendered on the server ([`pages`]) and reads without JavaScript; the one
//! embedded script follows the event stream and the log tail. Changes go through the same
//! request functions as the local API ([`super::api`]), so the browser can do nothing the
//! CLI could not, and is refused the same way.
//!
//! Access ([`auth`]): a password (`archy node web-password`, argon2 in
//! `<data>/web.password`) or a one-time link (`archy node web-url`); a session cookie
//! (HttpOnly, SameSite=Strict); a CSRF token on every change; the Host header checked
//! against DNS rebinding; failed logins rate-limited; and a strict Content-Security-Policy.

pub mod auth;
mod market;
pub mod pages;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Path as UrlPath, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Redirect, Response,
    },
    routing::{get, post},
    Extension, Form, Json, Router,
};
use maud::Markup;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::{api, Node};
use crate::{
    config::NodeConfig,
    executor::{ProgressEvent, Stage},
    state::{AppSource, Phase},
};
use auth::{AllowedHosts, LoginLimiter, OneTimeLinks, Session, Sessions};
use market::MarketCache;
use pages::{CatalogCard, InstalledApp, MarketCard, ReleaseOption};

/// The session cookie's name.
const COOKIE: &str = "archy_session";
/// Largest form body read (a change is a few fields).
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Catalog and marketplace cards per Store page (a page stays under 100 KiB).
const CATALOG_PAGE: usize = 24;
const MARKET_PAGE: usize = 32;
/// Log text sent to a page at most (its tail).
const MAX_LOG_BYTES: usize = 64 * 1024;
/// Failures kept for the Node page.
const RECENT_ERRORS: usize = 20;
/// Event streams open at once (one per open app page).
const MAX_EVENT_STREAMS: usize = 32;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/live.js");

/// The dashboard's own state, kept in [`Node`] whether or not it is served.
pub(super) struct Web {
    sessions: Mutex<Sessions>,
    links: Mutex<OneTimeLinks>,
    limiter: Mutex<LoginLimiter>,
    hosts: AllowedHosts,
    market: Arc<MarketCache>,
    recent: Mutex<Recent>,
    /// Permits for open event streams ([`MAX_EVENT_STREAMS`]).
    streams: Arc<tokio::sync::Semaphore>,
    /// Where the dashboard listens, once it does.
    addr: OnceLock<SocketAddr>,
}

/// The last event of each app (a page opened mid-install shows where it is at once) and
/// the last failures.
#[derive(Default)]
struct Recent {
    last_event: BTreeMap<String, ProgressEvent>,
    errors: VecDeque<String>,
}

impl Web {
    pub(super) fn new(cfg: &NodeConfig) -> Self {
        Self {
            sessions: Default::default(),
            links: Default::default(),
            limiter: Default::default(),
            hosts: AllowedHosts::new(&cfg.web_hosts),
            market: Default::default(),
            recent: Default::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
            addr: OnceLock::new(),
        }
    }
}

/// Serves the dashboard on `listener` until `stop` resolves, keeping the last event of
/// each app meanwhile.
pub(super) async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let _ = node.web.addr.set(addr);
    archy_catalog::fsutil::write_atomic(&node.data.join("web.addr"), addr.to_string().as_bytes())?;
    let recorder = tokio::spawn(record_events(node.clone()));
    tracing::info!(%addr, "dashboard listening");
    let app = router(node).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    recorder.abort();
    served
}

/// Keeps each app's last event and the last failures.
async fn record_events(node: Arc<Node>) {
    let mut rx = node.events.subscribe();
    loop {
        match rx.recv().await {
            Ok(e) => {
                let Ok(mut recent) = node.web.recent.lock() else {
                    return;
                };
                if e.stage == Stage::Failed {
                    if recent.errors.len() >= RECENT_ERRORS {
                        recent.errors.pop_front();
                    }
                    let when = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
                    recent
                        .errors
                        .push_back(format!("{when} {}: {}", e.app_id, e.message));
                }
                recent.last_event.insert(e.app_id.clone(), e);
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn router(node: Arc<Node>) -> Router {
    let private = Router::new()
        .route("/", get(store))
        .route("/store/catalog/{id}", get(catalog_app))
        .route("/store/market/{developer}/{app}", get(market_app))
        .route("/market/sync", post(market_sync))
        .route("/apps", get(my_apps))
        .route("/apps/{id}", get(app_page))
        .route("/apps/{id}/install", post(install))
        .route(
            "/apps/{id}/start",
            post(|s, e, p| set_running(s, e, p, true)),
        )
        .route(
            "/apps/{id}/stop",
            post(|s, e, p| set_running(s, e, p, false)),
        )
        .route("/apps/{id}/restart", post(restart))
        .route("/apps/{id}/uninstall", get(uninstall_page).post(uninstall))
        .route("/apps/{id}/logs", get(logs))
        .route("/node", get(node_page))
        .route("/events", get(events))
        .route("/logout", post(logout))
        .layer(middleware::from_fn_with_state(
            node.clone(),
            require_session,
        ));
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/login/once", get(login_once))
        .route(
            "/assets/style.css",
            get(|| async { asset(STYLE, "text/css") }),
        )
        .route(
            "/assets/live.js",
            get(|| async { asset(SCRIPT, "text/javascript") }),
        )
        .merge(private)
        .layer(middleware::from_fn_with_state(node.clone(), check_host))
        .with_state(node)
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Answers only Host names that cannot be DNS-rebound ([`AllowedHosts`]) and adds the
/// headers every answer carries.
async fn check_host(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut response = if node.web.hosts.allows(&host) {
        next.run(req).await
    } else {
        tracing::warn!(host = %host, "dashboard request for a foreign Host refused");
        (
            StatusCode::MISDIRECTED_REQUEST,
            format!("this node does not answer to the host name {host:?}: open the dashboard by its IP address, or name the host with --web-host"),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: with it a browser sends `Origin: null` on form posts.
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The value of the session cookie, if sent.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
}

/// A change from a page of another site names that site in `Origin`: refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

/// Lets only logged-in browsers through, and only with the session's CSRF token on a
/// change (the `csrf` form field or the `x-csrf-token` header).
async fn require_session(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let session = session_cookie(req.headers()).and_then(|id| {
        node.web
            .sessions
            .lock()
            .ok()
            .and_then(|mut s| s.get(&id, Instant::now()))
    });
    let Some(session) = session else {
        if req.method() == Method::GET && req.uri().path() != "/events" {
            return Redirect::to("/login").into_response();
        }
        return (StatusCode::UNAUTHORIZED, "log in first").into_response();
    };
    let mut req = req;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if !same_origin(req.headers()) {
            return refuse_csrf("the request came from a page of another site");
        }
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a form is at most {MAX_FORM_BYTES} bytes"),
            )
                .into_response();
        };
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                    .ok()?
                    .into_iter()
                    .find_map(|(k, v)| (k == "csrf").then_some(v))
            });
        if !sent.is_some_and(|t| auth::same_secret(&t, &session.csrf)) {
            return refuse_csrf("the change came without this session's CSRF token");
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

fn refuse_csrf(why: &str) -> Response {
    tracing::warn!("dashboard change refused: {why}");
    page_with(
        StatusCode::FORBIDDEN,
        pages::message(
            "Refused",
            None,
            &format!("Refused: {why}. Reload the page and try again."),
            "/",
        ),
    )
}

fn page_with(code: StatusCode, markup: Markup) -> Response {
    (code, markup).into_response()
}

fn password_file(node: &Node) -> Option<String> {
    std::fs::read_to_string(node.data.join(auth::PASSWORD_FILE))
        .ok()
        .filter(|s| !s.trim().is_empty())
}

async fn login_page(State(node): State<Arc<Node>>) -> Markup {
    pages::login(None, password_file(&node).is_some())
}

#[derive(Deserialize)]
struct LoginForm {
    password: String,
}

async fn login(
    State(node): State<Arc<Node>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let stored = password_file(&node);
    let ip = client.ip();
    let now = Instant::now();
    if !same_origin(&headers) {
        return refuse_csrf("the login came from a page of another site");
    }
    let checked = node
        .web
        .limiter
        .lock()
        .map(|mut l| l.check(ip, now))
        .map_err(|_| ());
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(too_many)) => {
            tracing::warn!(client = %ip, "dashboard login refused: {too_many}");
            return page_with(
                StatusCode::TOO_MANY_REQUESTS,
                pages::login(Some(&too_many.to_string()), stored.is_some()),
            );
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
    let Some(stored) = stored else {
        return page_with(StatusCode::FORBIDDEN, pages::login(None, false));
    };
    let password = form.password;
    let right = tokio::task::spawn_blocking(move || auth::password_matches(&stored, &password))
        .await
        .unwrap_or(false);
    if !right {
        if let Ok(mut l) = node.web.limiter.lock() {
            l.failed(ip, Instant::now());
        }
        tracing::warn!(client = %ip, "dashboard login with a wrong password");
        return page_with(
            StatusCode::UNAUTHORIZED,
            pages::login(Some("Wrong password."), true),
        );
    }
    if let Ok(mut l) = node.web.limiter.lock() {
        l.succeeded(ip);
    }
    logged_in(&node, &headers, Redirect::to("/").into_response())
}

/// Starts a session: `response` with the session cookie set.
fn logged_in(node: &Node, headers: &HeaderMap, mut response: Response) -> Response {
    let created = node
        .web
        .sessions
        .lock()
        .map_err(|_| std::io::Error::other("session table poisoned"))
        .and_then(|mut s| s.create(Instant::now()));
    let Ok((id, _)) = created else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // Behind a TLS proxy the cookie only travels over TLS.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        auth::SESSION_MAX.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    tracing::info!("dashboard login");
    response
}

#[derive(Deserialize)]
struct OnceQuery {
    t: String,
}

/// A one-time link: logs in, then leaves the link's URL through a page of this site (a
/// redirect would carry the cross-site start of the visit, and a SameSite=Strict cookie
/// would not be sent on it).
async fn login_once(
    State(node): State<Arc<Node>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<OnceQuery>,
) -> Response {
    let now = Instant::now();
    let ip = client.ip();
    let checked = node.web.limiter.lock().map(|mut l| l.check(ip, now)).ok();
    if let Some(Err(too_many)) = checked {
        return page_with(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(Some(&too_many.to_string()), password_file(&node).is_some()),
        );
    }
    let valid = node.web.links.lock().is_ok_and(|mut l| l.redeem(&q.t, now));
    if !valid {
        if let Ok(mut l) = node.web.limiter.lock() {
            l.failed(ip, now);
        }
        return page_with(
            StatusCode::FORBIDDEN,
            pages::login(
                Some("This login link was used already or has expired: run `archy node web-url` again."),
                password_file(&node).is_some(),
            ),
        );
    }
    let page = maud::html! {
        (maud::DOCTYPE)
        html { head { meta http-equiv="refresh" content="0;url=/"; title { "Logged in" } }
            body { p { "Logged in. " a href="/" { "Continue to the Store" } } } }
    };
    logged_in(&node, &headers, page.into_response())
}

async fn logout(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    if let (Some(id), Ok(mut s)) = (session_cookie(&headers), node.web.sessions.lock()) {
        s.remove(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("archy_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// `POST /v1/web/login-link` on the local API (`archy node web-url`): a one-time login
/// link to the dashboard.
pub(super) async fn new_login_link(State(node): State<Arc<Node>>) -> Response {
    let Some(addr) = node.web.addr.get().copied() else {
        return api::error(
            StatusCode::CONFLICT,
            "the dashboard is not running: start the node with --web ADDR (or web = \"ADDR\" in config.toml)",
        );
    };
    let token = match node.web.links.lock() {
        Ok(mut links) => links.issue(Instant::now()),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match token {
        Ok(token) => Json(json!({
            "addr": addr,
            "path": format!("/login/once?t={token}"),
            "expires_in_seconds": auth::LINK_LIFETIME.as_secs(),
        }))
        .into_response(),
        Err(e) => api::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize, Default)]
struct StoreParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    page: Option<usize>,
}

/// What is installed: app id -> version (or the phase while there is none).
async fn installed_versions(node: &Node) -> BTreeMap<String, String> {
    let store = node.store.lock().await;
    let s = &store.state;
    s.desired
        .keys()
        .map(|id| {
            let c = s.conditions.get(id);
            let shown = c
                .and_then(|c| c.version.clone())
                .or_else(|| c.map(|c| c.phase.as_str().to_string()))
                .unwrap_or_else(|| "pending".into());
            (id.clone(), shown)
        })
        .collect()
}

fn words(q: &str) -> Vec<String> {
    q.split_whitespace().take(16).map(str::to_string).collect()
}

fn catalog_cards(
    catalog: &archy_catalog::Catalog,
    installed: &BTreeMap<String, String>,
) -> Vec<CatalogCard> {
    catalog
        .apps
        .iter()
        .filter_map(|(id, entry)| {
            let latest = catalog.release(id, None)?;
            let m = &latest.manifest;
            Some(CatalogCard {
                id: id.clone(),
                name: m.name.clone(),
                version: m.version.clone(),
                description: m.description.short.clone(),
                category: m.category.clone(),
                image_size: latest.image.size,
                releases: entry.releases.len(),
                installed: installed.get(id).cloned(),
            })
        })
        .collect()
}

fn catalog_matches(c: &CatalogCard, words: &[String], category: &str) -> bool {
    let hay = format!(
        "{} {} {} {}",
        c.id,
        c.name,
        c.description,
        c.category.as_deref().unwrap_or_default()
    )
    .to_lowercase();
    (category.is_empty()
        || c.category
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case(category)))
        && words.iter().all(|w| hay.contains(&w.to_lowercase()))
}

fn market_card(
    app: &archy_discovery::market::ScoredApp,
    installed: &BTreeMap<String, String>,
) -> MarketCard {
    let l = &app.listing;
    let c = &l.current.content;
    MarketCard {
        handle: app.handle().to_string(),
        developer: archy_discovery::index::npub(&l.developer),
        app_id: l.app_id.clone(),
        name: c.manifest.name.clone(),
        version: c.manifest.version.clone(),
        description: c.manifest.description.short.clone(),
        categories: l.current.categories.clone(),
        tier: app.trust.tier.to_string(),
        score: app.trust.score,
        reasons: app
            .trust
            .reasons
            .iter()
            .map(|r| (r.points, r.text.clone()))
            .collect(),
        warnings: l.warnings.clone(),
        reports: l.reports.len(),
        releases: l.releases.iter().map(|r| r.version().to_string()).collect(),
        image_size: c.image.size,
        installed: installed.get(&l.app_id).cloned(),
    }
}

fn market_status(node: &Node, snapshot: Option<&market::MarketSnapshot>) -> pages::MarketStatus {
    pages::MarketStatus {
        configured: node.cfg.relays.clone(),
        relays: snapshot
            .map(|s| {
                s.result
                    .relays
                    .iter()
                    .map(|r| {
                        (
                            r.url.clone(),
                            r.ok,
                            r.events,
                            r.error.as_ref().map(|e| archy_discovery::error_chain(e)),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        synced_ago: snapshot.map(|s| crate::state::now().saturating_sub(s.synced_at)),
        syncing: node.web.market.syncing(),
        error: node.web.market.last_error(),
        total: snapshot.map_or(0, |s| s.result.view.apps().len()),
    }
}

async fn store(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    Query(params): Query<StoreParams>,
) -> Markup {
    let installed = installed_versions(&node).await;
    let words = words(&params.q);
    let category = params.category.trim();
    let mut categories = BTreeSet::new();
    let (catalog, note) = match node.catalog.lock().await.as_ref() {
        Some(held) => {
            let all = catalog_cards(&held.catalog, &installed);
            categories.extend(all.iter().filter_map(|c| c.category.clone()));
            let note = held
                .expired(chrono::Utc::now())
                .map(|e| format!("Installs are paused: {e}"));
            let shown: Vec<CatalogCard> = all
                .into_iter()
                .filter(|c| catalog_matches(c, &words, category))
                .collect();
            (shown, note)
        }
        None => (
            Vec::new(),
            Some("No verified catalog yet: the node has not reached its origin.".to_string()),
        ),
    };
    node.web
        .market
        .refresh_if_stale(&node.cfg.relays, node.cfg.me.as_deref());
    let snapshot = node.web.market.snapshot();
    let market: Vec<&archy_discovery::market::ScoredApp> = match &snapshot {
        Some(s) => {
            for app in s.result.view.apps() {
                categories.extend(app.listing.current.categories.iter().cloned());
            }
            s.result
                .view
                .apps()
                .iter()
                .filter(|a| {
                    a.matches(&words)
                        && (category.is_empty()
                            || a.listing
                                .current
                                .categories
                                .iter()
                                .any(|k| k.eq_ignore_ascii_case(category)))
                })
                .collect()
        }
        None => Vec::new(),
    };
    // One page number for both columns.
    let pages_count = catalog
        .len()
        .div_ceil(CATALOG_PAGE)
        .max(market.len().div_ceil(MARKET_PAGE))
        .max(1);
    let page = params.page.unwrap_or(1).clamp(1, pages_count);
    let catalog: Vec<CatalogCard> = catalog
        .into_iter()
        .skip((page - 1) * CATALOG_PAGE)
        .take(CATALOG_PAGE)
        .collect();
    let market: Vec<MarketCard> = market
        .into_iter()
        .skip((page - 1) * MARKET_PAGE)
        .take(MARKET_PAGE)
        .map(|a| market_card(a, &installed))
        .collect();
    let categories: Vec<String> = categories.into_iter().take(200).collect();
    let status = market_status(&node, snapshot.as_deref());
    pages::store(
        &session.csrf,
        &pages::StoreQuery {
            q: &params.q,
            category,
            categories: &categories,
            page,
            pages: pages_count,
        },
        &catalog,
        note.as_deref(),
        &market,
        &status,
    )
}

fn not_found(csrf: &str, what: String) -> Response {
    page_with(
        StatusCode::NOT_FOUND,
        pages::message("Not found", Some(("Store", csrf)), &what, "/"),
    )
}

async fn catalog_app(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let installed = installed_versions(&node).await;
    let catalog = node.catalog.lock().await;
    let Some(held) = catalog.as_ref() else {
        return not_found(&session.csrf, "No verified catalog yet.".into());
    };
    let (Some(entry), Some(latest)) = (held.catalog.apps.get(&id), held.catalog.release(&id, None))
    else {
        return not_found(
            &session.csrf,
            format!(
                "{id} is not in the signed catalog v{}",
                held.catalog.version
            ),
        );
    };
    let card = CatalogCard {
        id: id.clone(),
        name: latest.manifest.name.clone(),
        version: latest.manifest.version.clone(),
        description: latest.manifest.description.short.clone(),
        category: latest.manifest.category.clone(),
        image_size: latest.image.size,
        releases: entry.releases.len(),
        installed: installed.get(&id).cloned(),
    };
    let mut releases: Vec<(semver::Version, ReleaseOption)> = entry
        .releases
        .iter()
        .filter_map(|(v, r)| {
            Some((
                v.parse().ok()?,
                ReleaseOption {
                    version: v.clone(),
                    image_size: r.image.size,
                },
            ))
        })
        .collect();
    releases.sort_by(|a, b| b.0.cmp(&a.0));
    let releases: Vec<ReleaseOption> = releases.into_iter().map(|(_, r)| r).collect();
    pages::catalog_app(
        &session.csrf,
        &card,
        latest.manifest.description.long.as_deref(),
        &releases,
    )
    .into_response()
}

/// The marketplace app `developer/app` in the last sync.
fn find_market<'a>(
    snapshot: &'a market::MarketSnapshot,
    handle: &str,
) -> Option<&'a archy_discovery::market::ScoredApp> {
    let h: archy_discovery::market::AppHandle = handle.parse().ok()?;
    snapshot.result.view.resolve(&h.developer, &h.app_id)
}

async fn market_app(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    UrlPath((developer, app)): UrlPath<(String, String)>,
) -> Response {
    market_app_page(&node, &session, &format!("{developer}/{app}"), None).await
}

async fn market_app_page(
    node: &Node,
    session: &Session,
    handle: &str,
    problem: Option<&str>,
) -> Response {
    let installed = installed_versions(node).await;
    let Some(snapshot) = node.web.market.snapshot() else {
        return not_found(
            &session.csrf,
            "The marketplace has not been synced yet.".into(),
        );
    };
    let Some(app) = find_market(&snapshot, handle) else {
        return not_found(
            &session.csrf,
            format!("{handle} is on none of the relays that answered"),
        );
    };
    let card = market_card(app, &installed);
    let releases: Vec<ReleaseOption> = app
        .listing
        .releases
        .iter()
        .map(|r| ReleaseOption {
            version: r.version().to_string(),
            image_size: r.content.image.size,
        })
        .collect();
    let releases = if releases.is_empty() {
        vec![ReleaseOption {
            version: card.version.clone(),
            image_size: card.image_size,
        }]
    } else {
        releases
    };
    let relays: Vec<String> = app.listing.relays.iter().cloned().collect();
    pages::market_app(
        &session.csrf,
        &card,
        app.listing
            .current
            .content
            .manifest
            .description
            .long
            .as_deref(),
        &releases,
        &relays,
        app.listing.endorsers.len(),
        problem,
    )
    .into_response()
}

async fn market_sync(State(node): State<Arc<Node>>) -> Response {
    let cache = node.web.market.clone();
    let relays = node.cfg.relays.clone();
    let me = node.cfg.me.clone();
    tokio::spawn(async move { cache.sync(&relays, me.as_deref()).await });
    // Back to the Store, which says "syncing" until the new view is in.
    Redirect::to("/").into_response()
}

#[derive(Deserialize)]
struct InstallForm {
    /// `catalog` or `market`.
    source: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    handle: Option<String>,
    #[serde(default)]
    confirm: Option<String>,
}

/// A refusal from the request functions, as a page that says what was wrong.
fn refused_page(csrf: &str, id: &str, r: api::Refused) -> Response {
    page_with(
        r.code,
        pages::message(
            "Not done",
            Some(("My apps", csrf)),
            &r.message,
            &format!("/apps/{id}"),
        ),
    )
}

async fn install(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    UrlPath(id): UrlPath<String>,
    Form(form): Form<InstallForm>,
) -> Response {
    let version = form.version.filter(|v| !v.trim().is_empty());
    let body = match form.source.as_str() {
        "catalog" => api::InstallBody {
            version,
            market: None,
            replace: false,
        },
        "market" => {
            let Some(handle) = form.handle else {
                return page_with(
                    StatusCode::BAD_REQUEST,
                    pages::message(
                        "Not done",
                        Some(("Store", &session.csrf)),
                        "a marketplace install names the app's handle",
                        "/",
                    ),
                );
            };
            let Some(snapshot) = node.web.market.snapshot() else {
                return not_found(
                    &session.csrf,
                    "The marketplace has not been synced yet.".into(),
                );
            };
            let Some(app) = find_market(&snapshot, &handle).filter(|a| a.listing.app_id == id)
            else {
                return not_found(
                    &session.csrf,
                    format!("{handle} is on none of the relays that answered"),
                );
            };
            let Some(release) = app.release(version.as_deref()) else {
                return market_app_page(
                    &node,
                    &session,
                    &handle,
                    Some(&format!(
                        "{handle} has no live release {}",
                        version.as_deref().unwrap_or_default()
                    )),
                )
                .await;
            };
            // An app nobody the operator trusts vouches for is installed only after the
            // operator read that and said yes.
            if app.trust.tier == archy_discovery::trust::Tier::Unverified
                && form.confirm.as_deref() != Some("yes")
            {
                let card = market_card(app, &BTreeMap::new());
                return pages::confirm_unverified(&session.csrf, &card, &release.manifest.version)
                    .into_response();
            }
            api::InstallBody {
                version: None,
                market: Some(api::MarketInstall {
                    handle: app.handle().to_string(),
                    manifest: release.manifest.clone(),
                    image: release.image.clone(),
                    providers: release.providers.clone(),
                }),
                replace: false,
            }
        }
        other => {
            return page_with(
                StatusCode::BAD_REQUEST,
                pages::message(
                    "Not done",
                    Some(("Store", &session.csrf)),
                    &format!("unknown source {other:?}: catalog or market"),
                    "/",
                ),
            )
        }
    };
    match api::request_install(&node, &id, body).await {
        Ok(_) => Redirect::to(&format!("/apps/{}", pages::encode(&id))).into_response(),
        Err(r) => refused_page(&session.csrf, &id, r),
    }
}

async fn set_running(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    UrlPath(id): UrlPath<String>,
    running: bool,
) -> Response {
    done_or_refused(
        &session,
        &id,
        api::request_running(&node, &id, running).await,
    )
}

async fn restart(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    done_or_refused(&session, &id, api::restart_app(&node, &id).await)
}

fn done_or_refused(
    session: &Session,
    id: &str,
    answer: Result<serde_json::Value, api::Refused>,
) -> Response {
    match answer {
        Ok(_) => Redirect::to(&format!("/apps/{}", pages::encode(id))).into_response(),
        Err(r) => refused_page(&session.csrf, id, r),
    }
}

#[derive(Deserialize, Default)]
struct PurgeParam {
    #[serde(default)]
    purge: Option<String>,
}

async fn uninstall_page(
    Extension(session): Extension<Session>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<PurgeParam>,
) -> Markup {
    pages::uninstall(&session.csrf, &id, q.purge.as_deref() == Some("yes"))
}

async fn uninstall(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    UrlPath(id): UrlPath<String>,
    Form(form): Form<PurgeParam>,
) -> Response {
    let purge = form.purge.as_deref() == Some("yes");
    match api::request_uninstall(&node, &id, purge).await {
        Ok(_) => Redirect::to("/apps").into_response(),
        Err(r) => refused_page(&session.csrf, &id, r),
    }
}

/// Everything My apps and an app's page show about the installed apps.
async fn installed_apps(node: &Node, request_host: &str) -> Vec<InstalledApp> {
    let store = node.store.lock().await;
    let catalog = node.catalog.lock().await;
    let market = node.web.market.snapshot();
    let s = &store.state;
    let ids: BTreeSet<&String> = s.desired.keys().chain(s.conditions.keys()).collect();
    let link_host = match node.cfg.publish_ip {
        ip if ip.is_unspecified() => auth::host_name(request_host).to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    ids.into_iter()
        .map(|id| {
            let desired = s.desired.get(id);
            let cond = s.conditions.get(id);
            let version = cond.and_then(|c| c.version.clone());
            let (source, market_handle, manifest, latest) = match desired.map(|d| &d.source) {
                Some(AppSource::Market {
                    handle, manifest, ..
                }) => {
                    let current = market.as_ref().and_then(|m| {
                        let app = m.result.view.resolve(&handle.developer, &handle.app_id)?;
                        Some(app.listing.current.content.manifest.version.clone())
                    });
                    (
                        format!(
                            "{}/{}",
                            pages::short_npub(&archy_discovery::index::npub(&handle.developer)),
                            handle.app_id
                        ),
                        Some(handle.to_string()),
                        Some((**manifest).clone()),
                        current,
                    )
                }
                Some(AppSource::Catalog { .. }) | None => {
                    let held = catalog.as_ref();
                    let running = version
                        .as_deref()
                        .and_then(|v| held?.catalog.release(id, Some(v)));
                    let latest = held.and_then(|h| h.catalog.release(id, None));
                    (
                        "signed catalog".to_string(),
                        None,
                        running.or(latest).map(|r| r.manifest.clone()),
                        latest.map(|r| r.manifest.version.clone()),
                    )
                }
            };
            let update = match (&version, latest) {
                (Some(have), Some(latest)) if newer(&latest, have) => Some(latest),
                _ => None,
            };
            let phase = cond.map_or(Phase::Pending, |c| c.phase);
            let links = manifest
                .iter()
                .flat_map(|m| &m.container.ports)
                .filter(|p| p.protocol == archy_catalog::manifest::Protocol::Tcp)
                .map(|p| format!("http://{link_host}:{}/", p.host))
                .collect();
            InstalledApp {
                id: id.clone(),
                name: manifest.map_or_else(|| id.clone(), |m| m.name),
                source,
                market_handle,
                phase: phase.as_str().to_string(),
                version,
                wants_running: desired.is_some_and(|d| d.running),
                update,
                held_back: cond
                    .and_then(|c| c.held_back.as_ref())
                    .map(|h| (h.version.clone(), h.reason.clone())),
                last_error: cond.and_then(|c| c.last_error.clone()),
                links,
            }
        })
        .collect()
}

fn newer(candidate: &str, have: &str) -> bool {
    match (
        candidate.parse::<semver::Version>(),
        have.parse::<semver::Version>(),
    ) {
        (Ok(c), Ok(h)) => c > h,
        _ => false,
    }
}

fn request_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string()
}

async fn my_apps(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Markup {
    let apps = installed_apps(&node, &request_host(&headers)).await;
    pages::my_apps(&session.csrf, &apps)
}

async fn app_page(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let apps = installed_apps(&node, &request_host(&headers)).await;
    let Some(app) = apps.into_iter().find(|a| a.id == id) else {
        return page_with(
            StatusCode::NOT_FOUND,
            pages::message(
                "Not installed",
                Some(("My apps", &session.csrf)),
                &format!("{id} is not installed on this node."),
                "/apps",
            ),
        );
    };
    let logs = log_tail(&node, &id).await.unwrap_or_default();
    pages::app_page(&session.csrf, &app, &logs).into_response()
}

async fn log_tail(node: &Node, id: &str) -> Result<String, api::Refused> {
    let mut text = api::app_logs(node, id, 200).await?;
    if text.len() > MAX_LOG_BYTES {
        let mut cut = text.len() - MAX_LOG_BYTES;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text.drain(..cut);
    }
    Ok(text)
}

async fn logs(State(node): State<Arc<Node>>, UrlPath(id): UrlPath<String>) -> Response {
    match log_tail(&node, &id).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(r) => (r.code, r.message).into_response(),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    app: Option<String>,
}

/// Server-sent events for the pages: the app's last event first (a page opened
/// mid-install shows where it is), then each new one. At most [`MAX_EVENT_STREAMS`] at
/// once; the permit goes with the stream.
async fn events(State(node): State<Arc<Node>>, Query(q): Query<EventsQuery>) -> Response {
    let Ok(permit) = node.web.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_EVENT_STREAMS} pages follow this node's progress already"),
        )
            .into_response();
    };
    let rx = node.events.subscribe();
    let first: Vec<ProgressEvent> = node
        .web
        .recent
        .lock()
        .map(|r| match &q.app {
            Some(id) => r.last_event.get(id).cloned().into_iter().collect(),
            None => r.last_event.values().cloned().collect(),
        })
        .unwrap_or_default();
    let to_sse =
        |e: &ProgressEvent| Event::default().data(serde_json::to_string(e).unwrap_or_default());
    let first: Vec<Result<Event, Infallible>> = first.iter().map(|e| Ok(to_sse(e))).collect();
    let live = futures_util::stream::unfold(
        (rx, q.app, permit),
        move |(mut rx, app, permit)| async move {
            loop {
                match rx.recv().await {
                    Ok(e) if app.as_ref().is_none_or(|a| *a == e.app_id) => {
                        return Some((Ok(to_sse(&e)), (rx, app, permit)));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter(first), live);
    // A comment line every 5 s: a browser that went away is noticed (and its permit
    // freed) at the next one.
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(5)))
        .into_response()
}

async fn node_page(
    State(node): State<Arc<Node>>,
    Extension(session): Extension<Session>,
) -> Markup {
    let status = api::status_json(&node).await;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let list = |v: &serde_json::Value| {
        v.as_array()
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "none".into())
    };
    let c = &status["catalog"];
    let catalog_rows = if c.is_null() {
        vec![("Catalog".to_string(), "no verified catalog yet".to_string())]
    } else {
        vec![
            ("Version".into(), text(&c["version"])),
            ("Apps".into(), text(&c["apps"])),
            (
                "Verified".into(),
                c["age_seconds"]
                    .as_u64()
                    .map_or("-".into(), pages::ago_text),
            ),
            (
                "Expires".into(),
                c["expires"]
                    .as_str()
                    .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
                    .map_or_else(
                        || text(&c["expires"]),
                        |e| {
                            e.with_timezone(&chrono::Utc)
                                .format("%Y-%m-%d %H:%M UTC")
                                .to_string()
                        },
                    ),
            ),
            ("From".into(), text(&c["source"])),
            (
                "State".into(),
                c["expired"]
                    .as_str()
                    .map_or("fresh".to_string(), str::to_string),
            ),
        ]
    };
    let s = &status["swarm"];
    let f = &s["fetched_bytes"];
    let bytes = |v: &serde_json::Value| pages::size_text(v.as_u64().unwrap_or(0));
    let paths = s["paths"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{} {}{}",
                        text(&p["id"]).chars().take(8).collect::<String>(),
                        text(&p["kind"]),
                        p["rtt_ms"]
                            .as_u64()
                            .map(|r| format!(" {r} ms"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "none".into());
    let swarm_rows = vec![
        ("Address".into(), text(&s["addr"])),
        ("Dialled at".into(), list(&s["direct_addrs"])),
        ("Origin".into(), text(&s["origin"])),
        ("Peers".into(), list(&s["peers"])),
        ("DHT".into(), list(&s["dht"])),
        ("DHT peers".into(), text(&s["dht_peers"])),
        ("Relays".into(), list(&s["relays"])),
        ("Paths".into(), paths),
        ("Blobs held".into(), text(&s["blobs_held"])),
        (
            "Fetched".into(),
            format!(
                "origin {}, peers {}, publish dir {}, web seeds {}",
                bytes(&f["origin"]),
                bytes(&f["peer"]),
                bytes(&f["publish_dir"]),
                bytes(&f["web_seed"])
            ),
        ),
        ("Served".into(), bytes(&s["served_bytes"])),
    ];
    let runtime_rows = vec![
        ("Node".into(), text(&status["name"])),
        ("Runtime".into(), text(&status["runtime"])),
        ("Protections".into(), list(&status["protections"])),
    ];
    let mut errors: Vec<String> = node
        .web
        .recent
        .lock()
        .map(|r| r.errors.iter().rev().cloned().collect())
        .unwrap_or_default();
    if let Some(e) = node.web.market.last_error() {
        errors.push(format!("marketplace sync: {e}"));
    }
    pages::node(
        &session.csrf,
        &[
            ("Catalog", catalog_rows),
            ("Swarm", swarm_rows),
            ("Runtime", runtime_rows),
        ],
        &errors,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; archy_session=abc123; x=y"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc123"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("archy_sessionx=1"));
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn a_change_from_another_site_is_not_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("192.168.1.5:7421"));
        assert!(same_origin(&h), "no Origin: a form of this page (or curl)");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://192.168.1.5:7421"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn versions_compare_as_semver() {
        assert!(newer("1.10.0", "1.9.0"));
        assert!(!newer("1.0.0", "1.0.0"));
        assert!(!newer("garbage", "1.0.0"));
    }
}
