//! Start-up: the data dir (0700, canonical), the trust anchor, the runtime, the API
//! (and dashboard) listeners and the swarm (on the ports of the last run when the system picks them),
//! the head saved before a restart; then the API, the reconcile loop and the seeder
//! until Ctrl-C or SIGTERM.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use archy_catalog::{Limits, TrustedState};
use tokio::sync::{broadcast, Mutex, Notify};

use archy_registry::shutdown_signal;

use super::{api, metrics::Metrics, reconcile, sync, HeldCatalog, Node};
use crate::{
    config::NodeConfig,
    state::{self, StateStore},
};

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
    cfg.check()?;
    let runtime = crate::runtime::for_node(cfg.runtime, &cfg.name, &data, cfg.unpack)?;
    let token = new_token(&data)?;
    let mut store = StateStore::open(&data)?;
    let owned = store
        .state
        .desired
        .iter()
        .map(|(id, d)| (id.clone(), d.source.owner()));
    for dir in crate::app_identity::migrate_unowned(&data, owned)
        .context("cannot move app data to the per-owner layout")?
    {
        tracing::info!(dir = %dir.display(), "app data moved to its owner's dir");
    }
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
    let local = bind_socket(&data.join("api.sock"))?;
    let head = archy_registry::head::HeadServer::default();
    // A port picked by the system (`:0`) is picked again after a restart: the same one
    // as last time when it is free, so peers configured with this node's address (and
    // the DHT's records) stay right.
    let last = LastAddrs::read(&data);
    let listen = (
        reuse_port(cfg.swarm_listen(), last.swarm),
        cfg.dht_listen.map(|d| reuse_port(d, last.dht)),
    );
    let bootstrap = cfg.bootstrap.clone();
    let iroh_relays = cfg.iroh_relays.clone();
    let start_swarm = |(swarm_listen, dht_listen): (SocketAddr, Option<SocketAddr>)| {
        archy_registry::Swarm::start(
            archy_registry::SwarmNode::builder(&data, swarm_listen)
                .accept(archy_registry::head::HEAD_ALPN, head.clone())
                .relays(iroh_relays.clone()),
            dht_listen.map(|listen| archy_registry::DhtSettings {
                listen,
                bootstrap: bootstrap.clone(),
            }),
        )
    };
    let swarm = match start_swarm(listen).await {
        Err(e) if listen != (cfg.swarm_listen(), cfg.dht_listen) => {
            tracing::warn!(error = %e, "last run's ports are taken; new ones are picked");
            start_swarm((cfg.swarm_listen(), cfg.dht_listen)).await
        }
        started => started,
    }
    .context("swarm endpoint")?;
    // The origin's home relay is the first one named (a join ticket names the origin's).
    if let (Some(origin), Some(relay)) = (&cfg.origin, cfg.iroh_relays.first()) {
        swarm.node.learn_peer_relay(&origin.id, &relay.url);
    }
    let mut catalog = None;
    if let (Some(saved), Some(trusted)) = (
        archy_catalog::head::SignedHead::load(&data.join("head")).ok(),
        store.state.trusted.as_ref(),
    ) {
        // The head accepted before the restart: served to peers at once, and the
        // catalog is usable before the first sync if it has not expired meanwhile.
        if let Ok((_, c)) = archy_catalog::head::verify_head(
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
    let web_listener = match cfg.web {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the dashboard"))?,
        ),
        None => None,
    };
    let web = super::web::Web::new(&cfg);
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
        web,
    });
    tracing::info!(%addr, node = %node.cfg.name, "local API listening");
    println!(
        "archy node {} listening on http://{addr} (token in {}), swarm {swarm_addr}",
        node.cfg.name,
        node.data.join("api.token").display()
    );

    let reconciler = tokio::spawn(reconcile::run(node.clone()));
    let seeder = tokio::spawn(sync::announce_held(node.clone()));
    // One API on two listeners: the Unix socket for the CLI, TCP for metrics (and the
    // dashboard); both stop on the same signal.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let router = api::router(node.clone());
    let tcp = axum::serve(listener, router.clone())
        .with_graceful_shutdown(until_stopped(stopped.clone()));
    let unix = axum::serve(local, router).with_graceful_shutdown(until_stopped(stopped.clone()));
    let dashboard = async {
        match web_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                println!(
                    "archy node {} dashboard on http://{addr} (log in: archy node web-url)",
                    node.cfg.name
                );
                super::web::serve(node.clone(), listener, until_stopped(stopped)).await
            }
            None => Ok(()),
        }
    };
    tokio::try_join!(
        std::future::IntoFuture::into_future(tcp),
        std::future::IntoFuture::into_future(unix),
        dashboard
    )?;
    reconciler.abort();
    seeder.abort();
    // Peers see this node's connections close instead of timing out; bounded, so a
    // stuck peer cannot hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(3), node.swarm.clone().shutdown()).await;
    Ok(())
}

/// The CLI's Unix socket, `<data>/api.sock`, for root alone (0600). A socket left by a
/// daemon that was killed is replaced.
fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    Ok(listener)
}

/// A fresh bearer token for the API, written to `<data>/api.token` (0600) on every
/// start: a token read or captured while the daemon was down is worth nothing after it
/// starts again.
fn new_token(data: &Path) -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token = hex::encode(b);
    archy_catalog::fsutil::write_atomic_mode(
        &data.join("api.token"),
        token.as_bytes(),
        Some(0o600),
    )?;
    Ok(token)
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
