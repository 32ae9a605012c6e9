//! `archy node run|status`: run the node daemon, or ask it how it is.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use archy_node::{client::ApiClient, config::NodeConfig, daemon, runtime::RuntimeKind};
use archy_registry::{Multiaddr, PeerAddr};
use clap::{Args, Subcommand};

use super::progress::mib;

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
        origin: Option<PeerAddr>,
        /// Another node to fetch from (repeat).
        #[arg(long = "peer")]
        peers: Vec<PeerAddr>,
        /// Host address app ports are published on.
        #[arg(long)]
        publish_ip: Option<IpAddr>,
        /// Container runtime: podman (the engine) or process (no engine; root only).
        #[arg(long, value_enum)]
        runtime: Option<RuntimeKind>,
        /// UDP address of the node's swarm endpoint (default 127.0.0.1:0, any port; every
        /// address, 0.0.0.0, when a join ticket's origin is not on loopback).
        #[arg(long)]
        swarm_listen: Option<SocketAddr>,
        /// Join the DHT on this TCP address: find holders of what it fetches, announce
        /// what it holds.
        #[arg(long)]
        dht_listen: Option<SocketAddr>,
        /// A DHT node to join through, `/ip4/IP/tcp/PORT/p2p/PEER_ID` (repeat).
        #[arg(long)]
        bootstrap: Vec<Multiaddr>,
        /// An iroh relay for the swarm (repeat): peers behind NAT reach this node through
        /// it. `https://HOST:PORT` for a CA-signed relay, or a relay spec file. A join
        /// ticket names the origin's relay (with its certificate) by itself; no relay is
        /// used unless named.
        #[arg(long = "iroh-relay", value_name = "URL|FILE", value_parser = super::fetch::parse_relay)]
        iroh_relays: Vec<archy_registry::relay::RelaySpec>,
        /// Join with the ticket `archy origin serve` prints (`archy-join1:...`): the
        /// origin, the DHT to join through, and the hash of the root to trust. The root
        /// is fetched from the origin and accepted only if it has that hash. Kept in
        /// <data>/join.ticket for later runs; flags and config.toml still win.
        #[arg(long, value_name = "TICKET")]
        join: Option<archy_registry::ticket::JoinTicket>,
        /// Serve the web dashboard on this address (default 127.0.0.1:7421 when given
        /// without a value; 0.0.0.0:7421 for the LAN). Log in with a password
        /// (`archy node web-password`) or a one-time link (`archy node web-url`).
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:7421")]
        web: Option<SocketAddr>,
        /// A host name the dashboard answers to besides IP addresses and localhost, such
        /// as a reverse proxy's (repeat). Requests naming any other host are refused.
        #[arg(long = "web-host", value_name = "NAME")]
        web_hosts: Vec<String>,
    },
    /// Set the dashboard's password (argon2 hash in <data>/web.password, 0600). Asks
    /// on the terminal, or reads one line from stdin. A running daemon uses it at the
    /// next login.
    WebPassword {
        #[command(flatten)]
        data: DataArg,
    },
    /// Print a one-time login link to the dashboard: it logs one browser in, once,
    /// within 10 minutes. The daemon must run with --web.
    WebUrl {
        #[command(flatten)]
        data: DataArg,
        /// The host to put in the link (default: the address the dashboard listens on;
        /// give the node's LAN address when it listens on 0.0.0.0).
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the node: catalog version and age, swarm address, DHT, origin and peers,
    /// blobs held and bytes fetched by source, apps and phases.
    Status {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
        /// Wait up to this many seconds for the daemon to answer (a node just started in
        /// the background, in a script).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
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
            iroh_relays,
            join,
            web,
            web_hosts,
        } => {
            let mut cfg = NodeConfig::load(&data.data)?;
            let ticket = super::join::remembered(&data.data, join)?;
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
            if swarm_listen.is_some() {
                cfg.swarm_listen = swarm_listen;
            }
            if dht_listen.is_some() {
                cfg.dht_listen = dht_listen;
            }
            if !bootstrap.is_empty() {
                cfg.bootstrap = bootstrap;
            }
            if !iroh_relays.is_empty() {
                cfg.iroh_relays = iroh_relays;
            }
            if web.is_some() {
                cfg.web = web;
            }
            if !web_hosts.is_empty() {
                cfg.web_hosts = web_hosts;
            }
            if let Some(ticket) = &ticket {
                super::block_on(super::join::apply(ticket, &data.data, &mut cfg))?;
            }
            super::block_on(daemon::run(data.data, cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::WebPassword { data } => {
            let password = read_password()?;
            std::fs::create_dir_all(&data.data)
                .with_context(|| format!("cannot create {}", data.data.display()))?;
            daemon::set_web_password(&data.data, &password)?;
            eprintln!(
                "dashboard password set ({})",
                data.data.join("web.password").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::WebUrl { data, host, json } => {
            let link = ApiClient::from_data_dir(&data.data)?
                .post("/v1/web/login-link", serde_json::json!({}))?;
            let addr: SocketAddr = link["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .context("the daemon's answer names no dashboard address")?;
            let url = login_url(addr, host.as_deref(), link["path"].as_str().unwrap_or("/"));
            if json {
                println!(
                    "{}",
                    serde_json::json!({"url": url, "expires_in_seconds": link["expires_in_seconds"]})
                );
            } else {
                println!("{url}");
                eprintln!("one browser, once, within {} s", link["expires_in_seconds"]);
            }
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Status { data, json, wait } => {
            let ask = || ApiClient::from_data_dir(&data.data)?.get_json("/v1/status");
            let v = match wait {
                0 => ask()?,
                s => archy_harness::poll_until(
                    "the node to answer",
                    std::time::Duration::from_secs(s),
                    || ask().ok(),
                )?,
            };
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
                let addr = sw["addr"].as_str().unwrap_or("?");
                println!("swarm    {addr}");
                let direct: Vec<&str> = sw["direct_addrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                    .collect();
                // Bound to every address: where peers dial it.
                if !direct.is_empty() && !direct.iter().all(|d| addr.ends_with(&format!("@{d}"))) {
                    println!("         dialled at {}", direct.join(", "));
                }
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
                for r in sw["relays"].as_array().into_iter().flatten() {
                    let r = r.as_str().unwrap_or("?");
                    let home = sw["home_relay"].as_str() == Some(r);
                    println!(
                        "relay    {r}{}",
                        if home {
                            " (home: peers behind NAT reach this node through it)"
                        } else {
                            ""
                        }
                    );
                }
                for p in sw["paths"].as_array().into_iter().flatten() {
                    println!(
                        "path     {} {} via {} ({:.1} ms)",
                        p["id"].as_str().unwrap_or("?"),
                        p["kind"].as_str().unwrap_or("?"),
                        p["via"].as_str().unwrap_or("?"),
                        p["rtt_ms"].as_f64().unwrap_or(0.0)
                    );
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
                    "blobs    {} held (seeded); fetched since start: {} from the origin, {} from peers, {} from web seeds, {} from the publish dir",
                    sw["blobs_held"],
                    bytes(&fetched["origin"]),
                    bytes(&fetched["peer"]),
                    bytes(&fetched["web_seed"]),
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

/// The link for `path` on the dashboard at `addr`: `host` when given, else the address
/// (loopback for an unspecified one).
fn login_url(addr: SocketAddr, host: Option<&str>, path: &str) -> String {
    let host = match host {
        Some(h) => h.to_string(),
        None => {
            let ip = match addr.ip() {
                ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::from([127, 0, 0, 1]),
                ip if ip.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                ip => ip,
            };
            SocketAddr::new(ip, addr.port()).to_string()
        }
    };
    let host = if host.contains(':') && !host.starts_with('[') && host.parse::<IpAddr>().is_ok() {
        format!("[{host}]:{}", addr.port())
    } else if host.contains(':') {
        host
    } else {
        format!("{host}:{}", addr.port())
    };
    format!("http://{host}{path}")
}

/// The new password: asked twice on a terminal (not echoed), else one line of stdin.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let ask = |prompt: &str| -> anyhow::Result<String> {
        eprint!("{prompt}");
        let echo = Echo::off()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        drop(echo);
        eprintln!();
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let first = ask(&format!(
        "new dashboard password (at least {} characters): ",
        daemon::MIN_PASSWORD_CHARS
    ))?;
    let again = ask("again: ")?;
    anyhow::ensure!(
        first == again,
        "the two passwords differ; nothing was changed"
    );
    Ok(first)
}

/// Terminal echo off until dropped.
struct Echo(nix::sys::termios::Termios);

impl Echo {
    fn off() -> anyhow::Result<Self> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn echo off")?;
        Ok(Self(saved))
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn login_links_name_a_host_a_browser_can_reach() {
        let any: SocketAddr = "0.0.0.0:7421".parse().unwrap();
        assert_eq!(login_url(any, None, "/x"), "http://127.0.0.1:7421/x");
        assert_eq!(
            login_url(any, Some("192.168.1.5"), "/x"),
            "http://192.168.1.5:7421/x"
        );
        assert_eq!(
            login_url(any, Some("fe80::1"), "/x"),
            "http://[fe80::1]:7421/x"
        );
        assert_eq!(
            login_url(any, Some("node.lan:8443"), "/x"),
            "http://node.lan:8443/x"
        );
    }
}
