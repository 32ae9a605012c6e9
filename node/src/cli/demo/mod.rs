//! `archy demo`: the whole system on one machine, with no configuration and no network.
//!
//! It plays every user in turn: the publisher (keys, root, catalog, timestamp, all
//! signed), the origin operator, node operators and a third-party developer, and prints a
//! summary table of every step with what it measured. `--once` runs to the summary,
//! cleans up and exits non-zero if any step failed, for scripts and CI.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use archy_catalog::publisher::Publisher;
use archy_harness::{Background, Cmd};
use archy_node::runtime::RuntimeKind;

use market::{install_market_app, publish_market_app, search_market, start_relay};
use operators::{
    check_convergence, choose_runtime, install_catalog_app, start_nodes, start_origin,
};
use publisher::{build_and_sign_catalog, make_example_images, make_keys_and_root, verify_as_node};

mod dashboard;
mod market;
mod operators;
mod publisher;

/// Options of `archy demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run to the summary, clean up and exit (non-zero if any step failed).
    #[arg(long)]
    pub once: bool,
    /// Work directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the work directory for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Stop after the publisher steps, leaving a signed publish dir in <dir>/publish
    /// (no runtime, origin or nodes; what the lifecycle gate needs).
    #[arg(long)]
    pub publish_only: bool,
    /// Container runtime of the nodes (default: podman when it works here, else the
    /// process runtime, which needs root); the demo says which it chose.
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeKind>,
}

/// One line of the summary.
struct StepResult {
    name: &'static str,
    ok: bool,
    detail: String,
    seconds: f64,
}

/// What the steps share: the work directory, the background services (killed when the
/// demo ends, whichever way it ends) and what earlier steps learned.
struct Ctx {
    dir: PathBuf,
    services: Vec<Background>,
    /// The publisher's keys, made by the keys step.
    publisher: Option<Publisher>,
    relay_url: Option<String>,
    operator_npub: Option<String>,
    market_handle: Option<String>,
    /// The demo's node daemons (index 0 is node 1), cleaned up when the demo ends.
    nodes: Vec<DemoNode>,
    /// The origin's swarm address.
    origin_addr: Option<String>,
    /// The origin's DHT address, which the nodes and the developer join through.
    dht_bootstrap: Option<String>,
    /// The market app found by search: its announced manifest and image.
    market_app: Option<serde_json::Value>,
    /// The nodes' runtime, chosen by the runtime step.
    runtime: RuntimeKind,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // Daemons first, so nothing recreates what is removed next; in the reverse
        // order of their start, so clients (nodes) go before their servers (relay,
        // origin) and no connection is cut from under a live client.
        while let Some(service) = self.services.pop() {
            drop(service);
        }
        for node in &self.nodes {
            let Ok(rt) = archy_node::runtime::for_node(
                self.runtime,
                &node.name,
                &node.data,
                Default::default(),
            ) else {
                continue;
            };
            for c in rt.list().unwrap_or_default() {
                let _ = rt.remove(&c.app_id);
                eprintln!("    removed {} from {}", c.app_id, node.name);
            }
        }
    }
}

impl Ctx {
    /// Starts `archy ARGS` in the background, kept (and stopped) with the demo, and
    /// waits (at most 20 s) for its stdout line starting with `ready`; returns that line.
    fn start_service(&mut self, name: &str, args: &[&str], ready: &str) -> anyhow::Result<String> {
        let service = archy()?
            .args(args)
            .background(name, ready, Duration::from_secs(20))?
            .report_stop();
        let line = service.ready.clone();
        self.services.push(service);
        Ok(line)
    }
}

/// One node of the demo: its data dir, engine name and the loopback address its apps
/// publish on (127.0.0.2, .3, .4), so three nodes on one machine can run the same app.
struct DemoNode {
    data: PathBuf,
    name: String,
    ip: std::net::IpAddr,
}

struct Demo {
    ctx: Ctx,
    results: Vec<StepResult>,
}

impl Demo {
    /// Runs one step, printing it as it starts and ends; a failed step fails the demo.
    fn step(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Ctx) -> anyhow::Result<String>,
    ) -> bool {
        eprintln!("==> {name}");
        let t = Instant::now();
        let r = f(&mut self.ctx);
        let seconds = t.elapsed().as_secs_f64();
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, format!("{e:#}")),
        };
        eprintln!("    {} {detail}", if ok { "ok" } else { "FAILED" });
        self.results.push(StepResult {
            name,
            ok,
            detail,
            seconds,
        });
        ok
    }

    fn summary(&self) -> bool {
        println!();
        println!("{:<34} {:>7}  {:<6} detail", "step", "seconds", "result");
        for r in &self.results {
            println!(
                "{:<34} {:>7.2}  {:<6} {}",
                r.name,
                r.seconds,
                if r.ok { "ok" } else { "FAILED" },
                r.detail.lines().next().unwrap_or("")
            );
        }
        let failed = self.results.iter().filter(|r| !r.ok).count();
        println!();
        println!("{} passed, {} failed", self.results.len() - failed, failed);
        failed == 0
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut tmp = None;
    let dir = match &args.dir {
        Some(d) => {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => tmp
            .insert(tempfile::Builder::new().prefix("archy-demo-").tempdir()?)
            .path()
            .to_path_buf(),
    };
    eprintln!("archy demo in {}", dir.display());
    let ctx = Ctx {
        dir: dir.clone(),
        services: Vec::new(),
        publisher: None,
        relay_url: None,
        operator_npub: None,
        market_handle: None,
        nodes: Vec::new(),
        origin_addr: None,
        market_app: None,
        dht_bootstrap: None,
        runtime: RuntimeKind::Podman,
    };
    let mut demo = Demo {
        ctx,
        results: Vec::new(),
    };

    let _ = demo.step("publisher: example app images", |c| {
        make_example_images(&c.dir)
    }) && demo.step("publisher: keys and root (2-of-2)", make_keys_and_root)
        && demo.step("publisher: build + sign catalog", build_and_sign_catalog)
        && demo.step("publisher: verify as a node does", |c| {
            verify_as_node(&c.dir)
        })
        && !args.publish_only
        && demo.step("runtime: podman, else process", |c| {
            choose_runtime(c, args.runtime)
        })
        && demo.step("origin: serve the images to the swarm", start_origin)
        && demo.step("relay: embedded Nostr relay", start_relay)
        && demo.step("nodes: start 3 daemons", start_nodes)
        && demo.step("node 1: install org.example.hello", |c| {
            install_catalog_app(c, 1, "org.example.hello")
        })
        && demo.step("node 2: install org.example.hello", |c| {
            install_catalog_app(c, 2, "org.example.hello")
        })
        && demo.step("node 3: install org.example.hello", |c| {
            install_catalog_app(c, 3, "org.example.hello")
        })
        && demo.step("node 1: install org.example.notes", |c| {
            install_catalog_app(c, 1, "org.example.notes")
        })
        && demo.step("node 1: install org.example.status", |c| {
            install_catalog_app(c, 1, "org.example.status")
        })
        && demo.step("nodes: same catalog everywhere", check_convergence)
        && demo.step("developer: publish third-party app", publish_market_app)
        && demo.step("operator: market search", search_market)
        && demo.step("node 1: install the market app", install_market_app)
        && demo.step("node 1: web dashboard pages", dashboard::check_pages);

    let ok = demo.summary();
    if ok && !args.once {
        match dashboard::login_link(&demo.ctx) {
            Ok(url) => println!("\nnode 1's dashboard: open {url}\n(a one-time login link: one browser, once, within 10 minutes; `archy node web-url --data {}` makes another)", demo.ctx.nodes.first().map(|n| path_str(&n.data)).unwrap_or_default()),
            Err(e) => eprintln!("no dashboard link: {e:#}"),
        }
        eprintln!(
            "services are running (relay {}); press Ctrl-C to stop and clean up",
            demo.ctx.relay_url.as_deref().unwrap_or("-")
        );
        wait_for_ctrl_c();
    }
    drop(demo); // stops every service before the directory goes
    if args.keep {
        if let Some(t) = tmp.take() {
            let _ = t.keep();
        }
        eprintln!("kept {}", dir.display());
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `archy` (this very binary), its stderr shown: the demo's steps log there.
fn archy() -> anyhow::Result<Cmd> {
    let exe = std::env::current_exe().context("cannot find the archy binary")?;
    Ok(Cmd::new(exe).inherit_stderr())
}

/// Runs `archy ARGS` to completion and parses its JSON output.
fn archy_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    Ok(archy()?.args(args).json()?)
}

fn wait_for_ctrl_c() {
    let _ = super::block_on(async {
        archy_registry::shutdown_signal().await;
        Ok(())
    });
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
