//! `archy demo`: the whole system on one machine, with no configuration and no network.
//!
//! It plays every user in turn: the publisher (keys, root, catalog, timestamp, all
//! signed), the origin operator, node operators and a third-party developer, and prints a
//! summary table of every step with what it measured. `--once` runs to the summary,
//! cleans up and exits non-zero if any step failed, for scripts and CI.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::mpsc,
    time::Instant,
};

use anyhow::{bail, Context};
use archy_catalog::{
    build::build_catalog,
    documents::{Envelope, Root, Timestamp},
    keys::SecretKey,
    oci, Limits, TrustedState,
};
use archy_node::runtime::{podman::Podman, process::ProcessRuntime, RuntimeKind};
use chrono::{Duration, Utc};

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
    services: Vec<Service>,
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
        // Daemons first, so nothing recreates what is removed next.
        self.services.clear();
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
    }) && demo.step("publisher: keys and root (2-of-2)", |c| {
        make_keys_and_root(&c.dir)
    }) && demo.step("publisher: build + sign catalog", |c| {
        build_and_sign_catalog(&c.dir)
    }) && demo.step("publisher: verify as a node does", |c| {
        verify_as_node(&c.dir)
    }) && !args.publish_only
        && demo.step("runtime: podman, else process", |c| {
            choose_runtime(c, args.runtime)
        })
        && demo.step("origin: serve the images to the swarm", start_origin)
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
        && demo.step("relay: embedded Nostr relay", start_relay)
        && demo.step("developer: publish third-party app", publish_market_app)
        && demo.step("operator: market search", search_market)
        && demo.step("node 1: install the market app", install_market_app);

    let ok = demo.summary();
    if ok && !args.once {
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

const BUSYBOX: &str = "/bin/busybox";

/// The example apps shipped in the repository's `examples/`.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// Packs each example's image (the host's static busybox plus the example's `www/`) and
/// copies its manifest next to it, so no registry and no engine is needed.
fn make_example_images(dir: &Path) -> anyhow::Result<String> {
    if !Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} not found: install it with `apt-get install busybox-static`");
    }
    let examples = Path::new(EXAMPLES);
    let mut made = Vec::new();
    for entry in fs::read_dir(examples)
        .with_context(|| format!("cannot read the examples in {}", examples.display()))?
    {
        let src = entry?.path();
        if !src.join("app.yaml").exists() {
            continue;
        }
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("app")
            .to_string();
        let out = dir.join("apps").join(&name);
        let rootfs = dir.join("rootfs").join(&name);
        fs::create_dir_all(rootfs.join("bin"))?;
        fs::create_dir_all(rootfs.join("www"))?;
        fs::create_dir_all(&out)?;
        fs::copy(BUSYBOX, rootfs.join("bin/busybox")).context("copy busybox")?;
        for f in fs::read_dir(src.join("www"))? {
            let f = f?.path();
            if let Some(n) = f.file_name() {
                fs::copy(&f, rootfs.join("www").join(n))?;
            }
        }
        let packed = oci::pack_rootfs(
            &rootfs,
            &out.join("image.oci.tar"),
            &oci::PackOptions::default(),
        )?;
        fs::copy(src.join("app.yaml"), out.join("app.yaml"))?;
        made.push(format!("{name} ({} KiB)", packed.size / 1024));
    }
    made.sort();
    Ok(made.join(", "))
}

fn write_signed<T: serde::Serialize>(
    path: &Path,
    doc: &T,
    keys: &[&SecretKey],
) -> anyhow::Result<Vec<u8>> {
    let mut env = Envelope::new_unsigned(doc)?;
    for k in keys {
        env.sign(k);
    }
    let bytes = env.to_bytes();
    archy_catalog::fsutil::write_atomic(path, &bytes)?;
    Ok(bytes)
}

fn make_keys_and_root(dir: &Path) -> anyhow::Result<String> {
    let keys_dir = dir.join("keys");
    fs::create_dir_all(&keys_dir)?;
    let mut keys = BTreeMap::new();
    for name in ["root1", "root2", "catalog", "timestamp"] {
        let k = SecretKey::generate()?;
        k.write_pair(&keys_dir.join(name))?;
        keys.insert(name, k);
    }
    let root = Root::for_keys(
        1,
        Utc::now() + Duration::days(365),
        (&[&keys["root1"], &keys["root2"]], 2),
        &keys["catalog"],
        &keys["timestamp"],
    );
    fs::create_dir_all(dir.join("publish"))?;
    write_signed(
        &dir.join("publish/root.json"),
        &root,
        &[&keys["root1"], &keys["root2"]],
    )?;
    Ok(format!(
        "root v1, root key {}",
        keys["root1"].key_id().short()
    ))
}

fn build_and_sign_catalog(dir: &Path) -> anyhow::Result<String> {
    let load = |n: &str| SecretKey::load(&dir.join(format!("keys/{n}.key")));
    let built = build_catalog(&dir.join("apps"), 1, Utc::now() + Duration::days(30))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let publish = dir.join("publish");
    let blobs = publish.join("blobs");
    fs::create_dir_all(&blobs)?;
    for r in &built.releases {
        fs::copy(&r.image_file, blobs.join(r.image.hash.to_hex()))?;
    }
    let cat = write_signed(
        &publish.join("catalog.json"),
        &built.catalog,
        &[&load("catalog")?],
    )?;
    let ts = Timestamp::for_catalog(&cat, 1, Utc::now() + Duration::days(1))
        .map_err(anyhow::Error::msg)?;
    write_signed(&publish.join("timestamp.json"), &ts, &[&load("timestamp")?])?;
    Ok(format!(
        "catalog v1: {} app(s), {} bytes, signed; timestamp v1 pins it",
        built.catalog.apps.len(),
        cat.len()
    ))
}

fn verify_as_node(dir: &Path) -> anyhow::Result<String> {
    let publish = dir.join("publish");
    let read = |n: &str| fs::read(publish.join(n)).with_context(|| format!("read {n}"));
    let limits = Limits::default();
    let mut state = TrustedState::bootstrap(&read("root.json")?, &limits)?;
    let ts = state.verify_timestamp(&read("timestamp.json")?, Utc::now(), &limits)?;
    let catalog = state.verify_catalog(&read("catalog.json")?, Some(&ts), Utc::now(), &limits)?;
    let problems = catalog.check_releases();
    if let Some((at, why)) = problems.first() {
        bail!("{at}: {why}");
    }
    for entry in catalog.apps.values() {
        for release in entry.releases.values() {
            let (hash, size) =
                oci::hash_file(&publish.join("blobs").join(release.image.hash.to_hex()))?;
            if hash != release.image.hash || size != release.image.size {
                bail!(
                    "image blob of {} does not match the catalog",
                    release.manifest.id
                );
            }
        }
    }
    Ok(format!(
        "timestamp v{}, catalog v{}: {} apps, every image verified",
        ts.version,
        catalog.version,
        catalog.apps.len()
    ))
}

/// A background process of the demo; killed (and reaped) when dropped.
struct Service {
    name: &'static str,
    child: Child,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("    stopped {}", self.name);
    }
}

/// Starts `archy ARGS` in the background and waits (at most 20 s) for a stdout line
/// starting with `ready`; returns the service and that line.
fn spawn_service(
    name: &'static str,
    args: &[&str],
    ready: &str,
) -> anyhow::Result<(Service, String)> {
    let exe = std::env::current_exe().context("cannot find the archy binary")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let service = Service { name, child };
    let (tx, rx) = mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(&ready) {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .map_err(|_| anyhow::anyhow!("{name} did not become ready within 20 s"))?;
    Ok((service, line))
}

/// Runs `archy ARGS` to completion and parses its JSON output.
fn archy_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("cannot find the archy binary")?;
    let out = Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!(
            "archy {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("archy {}: output is not JSON", args.join(" ")))
}

fn wait_for_ctrl_c() {
    let _ = super::block_on(async {
        archy_node::daemon::shutdown_signal().await;
        Ok(())
    });
}

fn start_relay(c: &mut Ctx) -> anyhow::Result<String> {
    let data = c.dir.join("relay");
    let data_s = data.to_string_lossy().into_owned();
    let (svc, line) = spawn_service(
        "relay",
        &["relay", "run", "--listen", "127.0.0.1:0", "--data", &data_s],
        "relay listening on ",
    )?;
    c.services.push(svc);
    let url = line
        .trim_start_matches("relay listening on ")
        .split_whitespace()
        .next()
        .context("relay printed no URL")?
        .to_string();
    c.relay_url = Some(url.clone());
    Ok(format!("{url}, events stored in {}", data.display()))
}

/// A third-party developer packs their own app and announces it on the relay.
fn publish_market_app(c: &mut Ctx) -> anyhow::Result<String> {
    let relay = c.relay_url.clone().context("no relay")?;
    let dev = c.dir.join("developer");
    let rootfs = dev.join("rootfs");
    fs::create_dir_all(rootfs.join("bin"))?;
    fs::create_dir_all(rootfs.join("www"))?;
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).context("copy busybox")?;
    fs::write(
        rootfs.join("www/index.html"),
        "<h1>Notes, from a third-party developer</h1>\n",
    )?;
    oci::pack_rootfs(
        &rootfs,
        &dev.join("notes.oci.tar"),
        &oci::PackOptions::default(),
    )?;
    fs::write(
        dev.join("notes.yaml"),
        r#"app:
  id: net.thirdparty.notes
  name: Notes
  version: 0.3.0
  category: productivity
  description: { short: "A notes web page from a third-party developer" }
  author: { name: "Third Party" }
  container:
    image: ./notes.oci.tar
    cmd: ["/bin/busybox", "httpd", "-f", "-p", "8081", "-h", "/www"]
    ports: [{ host: 18081, container: 8081 }]
  health_check: { type: http, port: 8081, path: / }
"#,
    )?;
    // The developer seeds the image into the swarm (announced in the DHT) and names
    // that seed as the provider in the announcement.
    let bootstrap = c.dht_bootstrap.clone().context("no DHT to seed into")?;
    let (seed, line) = spawn_service(
        "developer's seed",
        &[
            "seed",
            "--data",
            &path_str(&dev.join("seed")),
            "--import",
            &path_str(&dev.join("notes.oci.tar")),
            "--dht-listen",
            "127.0.0.1:0",
            "--bootstrap",
            &bootstrap,
            "--json",
        ],
        "{",
    )?;
    c.services.push(seed);
    let seed: serde_json::Value = serde_json::from_str(&line)?;
    let provider = seed["addr"]
        .as_str()
        .and_then(|a| a.split('@').next())
        .context("the seed printed no address")?
        .to_string();
    let key = dev.join("developer.nsec");
    let key_s = key.to_string_lossy().into_owned();
    archy_json(&["key", "new", "--out", &key_s, "--json"])?;
    let manifest = dev.join("notes.yaml").to_string_lossy().into_owned();
    let out = archy_json(&[
        "app",
        "publish",
        &manifest,
        "--key",
        &key_s,
        "--relay",
        &relay,
        "--provider",
        &provider,
        "--json",
    ])?;
    let handle = out["handle"]
        .as_str()
        .context("publish printed no handle")?
        .to_string();
    let accepted = out["relays"]
        .as_array()
        .map(|r| r.iter().filter(|x| x["accepted"] == true).count())
        .unwrap_or(0);
    c.market_handle = Some(handle.clone());
    // The operator: a key of their own, the identity their trust scores start from.
    let op = c.dir.join("operator.nsec").to_string_lossy().into_owned();
    let me = archy_json(&["key", "new", "--out", &op, "--json"])?;
    c.operator_npub = me["npub"].as_str().map(str::to_string);
    Ok(format!(
        "{handle} accepted by {accepted} event(s) on the relay; image seeded by {}",
        &provider[..8.min(provider.len())]
    ))
}

fn search_market(c: &mut Ctx) -> anyhow::Result<String> {
    let relay = c.relay_url.clone().context("no relay")?;
    let me = c.operator_npub.clone().context("no operator key")?;
    let out = archy_json(&[
        "market", "search", "notes", "--relay", &relay, "--me", &me, "--json",
    ])?;
    let apps = out["apps"].as_array().context("no apps array")?;
    let hit = apps
        .iter()
        .find(|a| a["handle"].as_str() == c.market_handle.as_deref())
        .context("the published app was not found by the search")?;
    c.market_app = Some(hit.clone());
    Ok(format!(
        "found {} {}: score {}, tier {}",
        hit["app_id"].as_str().unwrap_or("?"),
        hit["version"].as_str().unwrap_or("?"),
        hit["trust"]["score"],
        hit["trust"]["tier"].as_str().unwrap_or("?")
    ))
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Three `archy node run` daemons, each with its own data dir, trust anchor copy and
/// loopback address, all pointed at the origin's publish dir.
fn start_nodes(c: &mut Ctx) -> anyhow::Result<String> {
    let publish = c.dir.join("publish");
    let mut seen = Vec::new();
    let mut swarm_addrs: Vec<String> = Vec::new();
    for n in 1..=3u8 {
        let data = c.dir.join(format!("node{n}"));
        let name = format!("demo{}-n{n}", std::process::id());
        let ip = std::net::IpAddr::from([127, 0, 0, n + 1]);
        let mut args = vec![
            "node".to_string(),
            "run".into(),
            "--data".into(),
            path_str(&data),
            "--name".into(),
            name.clone(),
            "--api".into(),
            "127.0.0.1:0".into(),
            "--origin-dir".into(),
            path_str(&publish),
            "--root".into(),
            path_str(&publish.join("root.json")),
            "--publish-ip".into(),
            ip.to_string(),
            "--runtime".into(),
            c.runtime.to_string(),
        ];
        if let Some(o) = &c.origin_addr {
            args.extend(["--origin".to_string(), o.clone()]);
        }
        if let Some(b) = &c.dht_bootstrap {
            args.extend([
                "--dht-listen".to_string(),
                format!("{ip}:0"),
                "--bootstrap".into(),
                b.clone(),
            ]);
        }
        // Each node also fetches from the nodes started before it.
        for peer in &swarm_addrs {
            args.extend(["--peer".to_string(), peer.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let label = ["node 1", "node 2", "node 3"][usize::from(n - 1)];
        let (svc, line) = spawn_service(label, &args, "archy node ")?;
        c.services.push(svc);
        let api = line
            .split(" listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?");
        seen.push(api.to_string());
        swarm_addrs.push(
            line.rsplit("swarm ")
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        );
        c.nodes.push(DemoNode { data, name, ip });
    }
    Ok(format!("APIs on {}", seen.join(", ")))
}

/// `archy app install ID` on a node, following its progress; then the app must answer.
fn install_catalog_app(c: &mut Ctx, n: u8, app_id: &str) -> anyhow::Result<String> {
    let node = c
        .nodes
        .get(usize::from(n - 1))
        .context("node not started")?;
    let data = path_str(&node.data);
    let (events, from) = archy_events(&["app", "install", app_id, "--data", &data, "--json"])?;
    let example = app_id.rsplit('.').next().unwrap_or("");
    let manifest = fs::read_to_string(c.dir.join("apps").join(example).join("app.yaml"))?;
    let m =
        archy_catalog::manifest::parse(&manifest, archy_catalog::manifest::ManifestFormat::Yaml)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let port = m.container.ports.first().context("no port")?.host;
    let addr = std::net::SocketAddr::new(node.ip, port);
    http_get(addr)?;
    let from = from
        .map(|f| format!("; bytes from {f}"))
        .unwrap_or_else(|| "; image already loaded in the engine".into());
    Ok(format!(
        "healthy on http://{addr}/{from}; stages: {}",
        events.join(" > ")
    ))
}

/// Runs an `archy ... --json` command that prints one event per line; returns the stages
/// and where the image bytes came from (the `verify` event), if fetched.
fn archy_events(args: &[&str]) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let exe = std::env::current_exe().context("cannot find the archy binary")?;
    let out = Command::new(exe)
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut stages: Vec<String> = Vec::new();
    let mut from = None;
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not an event: {line}"))?;
        let stage = v["stage"].as_str().unwrap_or("?").to_string();
        if stage == "verify" {
            from = v["message"]
                .as_str()
                .and_then(|m| m.split("bytes from ").nth(1))
                .map(str::to_string);
        }
        if stage == "failed" {
            bail!("{}", v["message"].as_str().unwrap_or("failed"));
        }
        if stages.last() != Some(&stage) {
            stages.push(stage);
        }
    }
    if !out.status.success() {
        bail!("archy {} failed ({})", args.join(" "), out.status);
    }
    Ok((stages, from))
}

fn http_get(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
    write!(s, "GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if !out.starts_with("HTTP/1.0 200") && !out.starts_with("HTTP/1.1 200") {
        bail!("{addr} answered {:?}", out.lines().next().unwrap_or(""));
    }
    Ok(out)
}

/// Every node has verified the same catalog version.
fn check_convergence(c: &mut Ctx) -> anyhow::Result<String> {
    let mut versions = Vec::new();
    for node in &c.nodes {
        let v = archy_json(&["node", "status", "--data", &path_str(&node.data), "--json"])?;
        versions.push(
            v["catalog"]["version"]
                .as_u64()
                .context("a node has no verified catalog")?,
        );
    }
    if versions.windows(2).any(|w| w[0] != w[1]) {
        bail!("nodes disagree on the catalog version: {versions:?}");
    }
    Ok(format!(
        "catalog v{} on all {} nodes",
        versions[0],
        versions.len()
    ))
}

/// The operator installs the app found on the marketplace: `archy app install
/// PUBKEY/APP_ID` shows its trust score and, since it is "unverified", needs
/// `--allow-unverified`. Node 1 finds the developer's seed in the DHT and fetches the
/// image from it over the swarm, verified against the announced BLAKE3 hash.
fn install_market_app(c: &mut Ctx) -> anyhow::Result<String> {
    let app = c.market_app.clone().context("no market app found")?;
    let handle = app["handle"].as_str().context("no handle")?.to_string();
    let node = c.nodes.first().context("node not started")?;
    let data = path_str(&node.data);
    let relay = c.relay_url.clone().context("no relay")?;
    let me = c.operator_npub.clone().context("no operator key")?;
    let refused = Command::new(std::env::current_exe()?)
        .args([
            "app", "install", &handle, "--data", &data, "--relay", &relay, "--me", &me, "--yes",
        ])
        .output()?;
    if refused.status.success() {
        bail!("an unverified app was installed without --allow-unverified");
    }
    let (stages, from) = archy_events(&[
        "app",
        "install",
        &handle,
        "--data",
        &data,
        "--relay",
        &relay,
        "--me",
        &me,
        "--allow-unverified",
        "--yes",
        "--json",
    ])?;
    let addr = std::net::SocketAddr::new(node.ip, 18081);
    http_get(addr)?;
    let from = from
        .map(|f| format!("bytes from {f}"))
        .unwrap_or_else(|| "image already loaded in the engine".into());
    Ok(format!(
        "refused without --allow-unverified (tier {}), then healthy on http://{addr}/; {from}; stages: {}",
        app["trust"]["tier"].as_str().unwrap_or("?"),
        stages.join(" > ")
    ))
}

/// Podman when it works here, otherwise the engine-less process runtime; says which
/// and why.
fn choose_runtime(c: &mut Ctx, wanted: Option<RuntimeKind>) -> anyhow::Result<String> {
    let podman = match wanted {
        Some(RuntimeKind::Process) => Err("not chosen (--runtime process)".to_string()),
        _ => Podman::check().map_err(|e| e.to_string()),
    };
    let chosen = match podman {
        Ok(()) => {
            c.runtime = RuntimeKind::Podman;
            "podman (--runtime runc)".to_string()
        }
        Err(why) if wanted == Some(RuntimeKind::Podman) => {
            bail!("podman does not work here ({why}); install podman and runc")
        }
        Err(why) => {
            ProcessRuntime::check().map_err(|no| {
                anyhow::anyhow!(
                    "no runtime works here: podman: {why}; process runtime: {no} \
                     (install podman and runc, or run as root)"
                )
            })?;
            c.runtime = RuntimeKind::Process;
            format!("process runtime (podman: {why})")
        }
    };
    Ok(format!(
        "{chosen}; each node publishes on its own loopback address"
    ))
}

/// The origin operator serves the signed publish dir to the swarm.
fn start_origin(c: &mut Ctx) -> anyhow::Result<String> {
    let publish = path_str(&c.dir.join("publish"));
    let data = path_str(&c.dir.join("origin"));
    let (svc, line) = spawn_service(
        "origin",
        &[
            "origin",
            "serve",
            "--publish",
            &publish,
            "--data",
            &data,
            "--dht-listen",
            "127.0.0.1:0",
        ],
        "origin ",
    )?;
    c.services.push(svc);
    let addr = line
        .split_whitespace()
        .nth(1)
        .context("origin printed no address")?
        .to_string();
    c.origin_addr = Some(addr.clone());
    // origin.json is written before the ready line.
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(c.dir.join("origin/origin.json"))?)?;
    let dht = info["dht"][0]
        .as_str()
        .context("the origin wrote no DHT address to origin.json")?
        .to_string();
    c.dht_bootstrap = Some(dht.clone());
    Ok(format!("{}, DHT {dht}", line.trim_start_matches("origin ")))
}
