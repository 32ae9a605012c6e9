//! Node operator commands: `archy node run|status` and the app lifecycle
//! (`install`, `uninstall`, `start`, `stop`, `restart`, `list`, `status`, `logs`), which
//! talk to the daemon over its local API and follow its progress events.

use super::swarm::mib;
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use archy_node::{
    client::ApiClient,
    config::NodeConfig,
    daemon,
    executor::{ProgressEvent, Stage},
};
use clap::{Args, Subcommand};
use serde_json::json;

/// The node's data directory.
#[derive(Debug, Clone, Args)]
pub struct DataArg {
    /// The node's data directory (state, secrets, app data, API address and token).
    #[arg(long, env = "ARCHY_DATA", default_value = ".archy")]
    pub data: PathBuf,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum NodeCommand {
    /// Run the node daemon: catalog sync, reconciler, local API. Stops on Ctrl-C/SIGTERM.
    ///
    /// Settings come from <data>/config.toml; flags override them for this run.
    Run {
        #[command(flatten)]
        data: DataArg,
        /// Node name (container names and labels).
        #[arg(long)]
        name: Option<String>,
        /// Local API address (loopback only; port 0 picks one).
        #[arg(long)]
        api: Option<SocketAddr>,
        /// Origin publish dir (root.json, timestamp.json, catalog.json, blobs/).
        #[arg(long)]
        origin_dir: Option<PathBuf>,
        /// Trust anchor: the publisher's root.json (copied into the data dir once).
        #[arg(long)]
        root: Option<PathBuf>,
        /// The origin's swarm address, `<endpoint id>@<ip:port>`.
        #[arg(long)]
        origin: Option<String>,
        /// Another node to fetch from (repeat).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Host address app ports are published on.
        #[arg(long)]
        publish_ip: Option<IpAddr>,
        /// Container runtime: podman (the engine) or process (no engine; root only).
        #[arg(long, value_parser = ["podman", "process"])]
        runtime: Option<String>,
        /// UDP address of the node's swarm endpoint (default 127.0.0.1:0, any port).
        #[arg(long)]
        swarm_listen: Option<SocketAddr>,
        /// Join the DHT on this TCP address: find holders of what it fetches, announce
        /// what it holds.
        #[arg(long)]
        dht_listen: Option<SocketAddr>,
        /// A DHT node to join through, `/ip4/IP/tcp/PORT/p2p/PEER_ID` (repeat).
        #[arg(long)]
        bootstrap: Vec<String>,
    },
    /// Show the node: catalog version and age, swarm address, DHT, origin and peers,
    /// blobs held and bytes fetched by source, apps and phases.
    Status {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub fn node(cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCommand::Run {
            data,
            name,
            api,
            origin_dir,
            root,
            origin,
            peers,
            publish_ip,
            runtime,
            swarm_listen,
            dht_listen,
            bootstrap,
        } => {
            let mut cfg = NodeConfig::load(&data.data)?;
            if let Some(v) = name {
                cfg.name = v;
            }
            if let Some(v) = api {
                cfg.api = v;
            }
            if origin_dir.is_some() {
                cfg.origin_dir = origin_dir;
            }
            if root.is_some() {
                cfg.root = root;
            }
            if origin.is_some() {
                cfg.origin = origin;
            }
            if !peers.is_empty() {
                cfg.peers = peers;
            }
            if let Some(v) = publish_ip {
                cfg.publish_ip = v;
            }
            if let Some(v) = runtime {
                cfg.runtime = v;
            }
            if let Some(v) = swarm_listen {
                cfg.swarm_listen = v;
            }
            if dht_listen.is_some() {
                cfg.dht_listen = dht_listen;
            }
            if !bootstrap.is_empty() {
                cfg.bootstrap = bootstrap;
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(daemon::run(data.data, cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Status { data, json } => {
            let v = ApiClient::from_data_dir(&data.data)?.get_json("/v1/status")?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "node     {}  (runtime {})",
                    v["name"].as_str().unwrap_or("?"),
                    v["runtime"].as_str().unwrap_or("?")
                );
                if let Some(p) = v["protections"].as_array() {
                    let words: Vec<&str> = p.iter().filter_map(|x| x.as_str()).collect();
                    println!("confined {}", words.join("; "));
                }
                match v["catalog"].as_object() {
                    Some(c) => {
                        println!(
                            "catalog  v{} with {} app(s), verified {} s ago, from {}, expires {}",
                            c["version"],
                            c["apps"],
                            c["age_seconds"],
                            c["source"].as_str().unwrap_or("?"),
                            c["expires"].as_str().unwrap_or("?")
                        );
                        if let Some(why) = c["expired"].as_str() {
                            println!("         EXPIRED: {why}");
                        }
                    }
                    None => println!("catalog  none verified yet"),
                }
                let sw = &v["swarm"];
                println!("swarm    {}", sw["addr"].as_str().unwrap_or("?"));
                for d in sw["dht"].as_array().into_iter().flatten() {
                    println!(
                        "dht      {} ({} peers known)",
                        d.as_str().unwrap_or("?"),
                        sw["dht_peers"]
                    );
                }
                if let Some(o) = sw["origin"].as_str() {
                    println!("origin   {o}");
                }
                for p in sw["peers"].as_array().into_iter().flatten() {
                    println!("peer     {}", p.as_str().unwrap_or("?"));
                }
                for p in sw["head_servers"].as_array().into_iter().flatten() {
                    println!(
                        "peer     {} (head server, from the DHT)",
                        p.as_str().unwrap_or("?")
                    );
                }
                let bytes = |v: &serde_json::Value| mib(v.as_u64().unwrap_or(0));
                let fetched = &sw["fetched_bytes"];
                println!(
                    "blobs    {} held (seeded); fetched since start: {} from the origin, {} from peers, {} from the publish dir",
                    sw["blobs_held"],
                    bytes(&fetched["origin"]),
                    bytes(&fetched["peer"]),
                    bytes(&fetched["publish_dir"])
                );
                println!(
                    "served   {} to peers since start",
                    bytes(&sw["served_bytes"])
                );
                for (id, phase) in v["apps"].as_object().into_iter().flatten() {
                    println!("app      {id:<32} {}", phase.as_str().unwrap_or("?"));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Print the event stream as JSON lines instead of a progress display.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting after this many seconds (the daemon carries on).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Whether the daemon's state reflects an accepted request: the app's observed
/// generation has reached the accepted one, or (uninstall, no generation) it is gone.
fn settled(api: &ApiClient, app_id: &str, accepted: &serde_json::Value) -> bool {
    let state = api.get_json(&format!("/v1/apps/{app_id}"));
    match accepted
        .get("generation")
        .and_then(serde_json::Value::as_u64)
    {
        Some(g) => state
            .ok()
            .and_then(|v| v["observed_generation"].as_u64())
            .is_some_and(|o| o >= g),
        None => state.is_err(),
    }
}

/// Sends a request, then follows the app's events until a terminal one.
fn follow(
    args: &FollowArgs,
    app_id: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let api = ApiClient::from_data_dir(&args.data.data)?;
    let events = api.events()?; // subscribe first: no event can be missed
    let accepted = api.post(path, body)?;
    if !args.json {
        eprintln!("{app_id}: accepted ({accepted})");
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut display = StageDisplay::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e: ProgressEvent = events.recv_timeout(left).with_context(|| {
            format!(
                "no result within {} s; see `archy app status {app_id}`",
                args.timeout
            )
        })?;
        if e.app_id != app_id {
            continue;
        }
        if args.json {
            println!("{}", serde_json::to_string(&e)?);
        } else {
            display.show(&e);
        }
        match e.stage {
            // A pass already under way when the request arrived also ends in `done`;
            // only a pass that has seen the request settles it.
            Stage::Done if settled(&api, app_id, &accepted) => return Ok(ExitCode::SUCCESS),
            Stage::Failed => {
                if !args.json {
                    eprintln!("{app_id}: failed: {}", e.message);
                }
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
}

/// The human progress display: one line per stage, and during `fetch` a bar with bytes
/// and rate, redrawn in place on a terminal (one line a second otherwise).
struct StageDisplay {
    tty: bool,
    /// When the first fetch event came (the rate's start).
    fetch_started: Option<Instant>,
    last_bar: Option<Instant>,
}

impl StageDisplay {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            tty: std::io::stderr().is_terminal(),
            fetch_started: None,
            last_bar: None,
        }
    }

    fn show(&mut self, e: &ProgressEvent) {
        let stage = format!("{:?}", e.stage).to_lowercase();
        if e.stage == Stage::Fetch && e.bytes_total > 0 {
            let every = if self.tty {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(1)
            };
            let last = e.bytes_done >= e.bytes_total;
            if self.last_bar.is_some_and(|t| t.elapsed() < every) && !last {
                return;
            }
            self.last_bar = Some(Instant::now());
            let started = *self.fetch_started.get_or_insert_with(Instant::now);
            let in_mib = |b: u64| b as f64 / f64::from(1 << 20);
            let width = 30;
            let filled = (width as f64 * e.bytes_done as f64 / e.bytes_total as f64) as usize;
            let filled = filled.min(width);
            let rate = in_mib(e.bytes_done) / started.elapsed().as_secs_f64().max(0.001);
            let line = format!(
                "  {stage:<8} [{}>{}] {:.1}/{:.1} MiB {rate:.1} MiB/s",
                "=".repeat(filled),
                " ".repeat(width - filled),
                in_mib(e.bytes_done),
                in_mib(e.bytes_total),
            );
            if self.tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
            return;
        }
        if self.tty && self.last_bar.take().is_some() {
            eprintln!();
        }
        let bytes = if e.bytes_total > 0 {
            format!(" {}/{} bytes", e.bytes_done, e.bytes_total)
        } else {
            String::new()
        };
        eprintln!("  {stage:<8}{bytes} {}", e.message);
    }
}

/// How a marketplace app is chosen: where to look, whose trust counts, what to accept.
#[derive(Debug, Clone, Args)]
pub struct MarketChoice {
    /// Relay to resolve PUBKEY/APP_ID on (repeat; default: `relays` in config.toml).
    #[arg(long = "relay")]
    pub relays: Vec<String>,
    /// Your public key, the root of your web of trust (default: `me` in config.toml).
    #[arg(long)]
    pub me: Option<String>,
    /// Install even if the app's trust tier is "unverified".
    #[arg(long)]
    pub allow_unverified: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub fn install(
    id: &str,
    version: Option<String>,
    market: &MarketChoice,
    args: &FollowArgs,
) -> anyhow::Result<ExitCode> {
    if id.contains('/') {
        return install_from_market(id, version, market, args);
    }
    follow(
        args,
        id,
        &format!("/v1/apps/{id}/install"),
        json!({"version": version}),
    )
}

/// `archy app install PUBKEY/APP_ID`: resolve on the marketplace, show the trust score,
/// refuse "unverified" unless allowed, confirm, then hand the announcement to the daemon
/// (which validates the manifest again and verifies the image by its hash).
fn install_from_market(
    handle: &str,
    version: Option<String>,
    choice: &MarketChoice,
    args: &FollowArgs,
) -> anyhow::Result<ExitCode> {
    let cfg = NodeConfig::load(&args.data.data)?;
    let relays = if choice.relays.is_empty() {
        cfg.relays.clone()
    } else {
        choice.relays.clone()
    };
    anyhow::ensure!(
        !relays.is_empty(),
        "no relays: pass --relay URL or set `relays` in config.toml"
    );
    let sync = super::market::SyncArgs {
        relays,
        me: choice.me.clone().or(cfg.me.clone()),
        timeout: 10,
        json: false,
    };
    let (developer, app_id) =
        archy_discovery::market::parse_handle(handle).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(super::market::fetch(&sync))?;
    let app = result
        .view
        .resolve(&developer, &app_id)
        .with_context(|| format!("{handle}: not found on any reachable relay"))?;
    let release = app
        .release(version.as_deref())
        .with_context(|| format!("{handle}: no such release"))?;
    let tier = app.trust.tier;
    eprintln!(
        "{app_id} {} ({}): trust score {}, tier {tier:?}",
        release.manifest.version,
        app.handle(),
        app.trust.score
    );
    for r in &app.trust.reasons {
        eprintln!("  {:>+4}  {}", r.points, r.text);
    }
    if tier == archy_discovery::trust::Tier::Unverified && !choice.allow_unverified {
        anyhow::bail!("{handle} is unverified: nobody you trust vouches for it; pass --allow-unverified to install it anyway");
    }
    if !choice.yes {
        use std::io::IsTerminal;
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "confirmation needed: pass --yes to install without asking"
        );
        eprint!("install it? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("not installed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let body = json!({"market": {"handle": app.handle(), "manifest": release.manifest, "image": release.image}});
    follow(args, &app_id, &format!("/v1/apps/{app_id}/install"), body)
}

pub fn uninstall(id: &str, purge: bool, args: &FollowArgs) -> anyhow::Result<ExitCode> {
    follow(
        args,
        id,
        &format!("/v1/apps/{id}/uninstall"),
        json!({"purge": purge}),
    )
}

pub fn set_running(id: &str, action: &str, args: &FollowArgs) -> anyhow::Result<ExitCode> {
    follow(args, id, &format!("/v1/apps/{id}/{action}"), json!({}))
}

pub fn restart(id: &str, data: &DataArg) -> anyhow::Result<ExitCode> {
    let v =
        ApiClient::from_data_dir(&data.data)?.post(&format!("/v1/apps/{id}/restart"), json!({}))?;
    println!("{v}");
    Ok(ExitCode::SUCCESS)
}

pub fn list(data: &DataArg, json: bool) -> anyhow::Result<ExitCode> {
    let v = ApiClient::from_data_dir(&data.data)?.get_json("/v1/apps")?;
    if json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let apps = v.as_array().cloned().unwrap_or_default();
    if apps.is_empty() {
        println!("no apps installed");
    }
    for a in apps {
        println!(
            "{:<32} {:<12} {:<10} {}",
            a["id"].as_str().unwrap_or("?"),
            a["phase"].as_str().unwrap_or("?"),
            a["version"].as_str().unwrap_or("-"),
            a["last_error"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(id: &str, data: &DataArg, json: bool) -> anyhow::Result<ExitCode> {
    let v = ApiClient::from_data_dir(&data.data)?.get_json(&format!("/v1/apps/{id}"))?;
    if json {
        println!("{v}");
    } else {
        println!(
            "{id}: {} (version {})",
            v["phase"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("-")
        );
        if let Some(e) = v["last_error"].as_str() {
            println!("  last error: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(id: &str, data: &DataArg) -> anyhow::Result<ExitCode> {
    print!(
        "{}",
        ApiClient::from_data_dir(&data.data)?.get_text(&format!("/v1/apps/{id}/logs"))?
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum OriginCommand {
    /// Serve a publish dir to the swarm (the same as `archy-registry serve`): verify the
    /// signed documents, import every referenced image, serve until Ctrl-C. Prints
    /// `origin <endpoint id>@<ip:port> ...`; nodes take that address as `--origin`.
    Serve {
        /// Publish dir: root.json, timestamp.json, catalog.json, blobs/<blake3 hex>.
        #[arg(long)]
        publish: PathBuf,
        /// The origin's data dir (node key, blob store, origin.json).
        #[arg(long)]
        data: PathBuf,
        /// UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Also run a DHT node on this TCP address (prints `dht <multiaddr>` for nodes'
        /// --bootstrap) and announce every image there.
        #[arg(long)]
        dht_listen: Option<SocketAddr>,
        /// A DHT node to join through, `/ip4/IP/tcp/PORT/p2p/PEER_ID` (repeat).
        #[arg(long, requires = "dht_listen")]
        bootstrap: Vec<archy_registry::Multiaddr>,
    },
}

pub fn origin(cmd: OriginCommand) -> anyhow::Result<ExitCode> {
    let OriginCommand::Serve {
        publish,
        data,
        listen,
        dht_listen,
        bootstrap,
    } = cmd;
    let dht = dht_listen.map(|listen| archy_registry::DhtSettings { listen, bootstrap });
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(archy_registry::origin::serve_until_stopped(
        &publish, &data, listen, dht,
    ))?;
    Ok(ExitCode::SUCCESS)
}
