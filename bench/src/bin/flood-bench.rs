//! Flood benchmark (issue 14): what one hostile DHT peer and one hostile relay cost.
//!
//! - **DHT**: an `archy node run` daemon (process runtime, a few busybox apps running,
//!   DHT on loopback) while a hostile libp2p peer sends it forged address records, records
//!   under foreign keys and provider records without end, for a fixed time and at most a
//!   fixed count. The harness nudges the reconciler every two seconds and samples the
//!   daemon's RSS and the duration of its last reconcile pass
//!   (`archy_reconcile_last_pass_seconds`) twice a second.
//! - **Relay**: `archy market search` against a relay that answers every request with
//!   5,000 new signed events, without end: once with small events (the event budget
//!   stops it) and once with 200 KiB events (the byte budget stops it). Measured: the
//!   client's peak RSS (`VmHWM`, polled), its time, and the reason it gave up on the relay.
//!
//! Targets: daemon RSS under 128 MiB and every reconcile pass under 1 s during the flood.
//! `flood-bench --help` explains the options; run as root (the process runtime).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use archy_catalog::{
    oci,
    publisher::{Publisher, Validity},
    ContentHash,
};
use archy_node::client::ApiClient;
use clap::Parser;
use futures_util::StreamExt;
use libp2p::{
    kad::{Quorum, Record, RecordKey},
    Multiaddr, PeerId,
};
use nostr_sdk::prelude::*;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    about = "Flood a node daemon from a hostile DHT peer and the marketplace client from a hostile relay; report RSS and reconcile pass times (run as root)."
)]
struct Args {
    /// Busybox apps running on the daemon while it is flooded.
    #[arg(long, default_value_t = 5)]
    apps: u16,
    /// How long the DHT flood lasts.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// At most this many records and provider records the hostile peer sends.
    #[arg(long, default_value_t = 1_000_000)]
    max_records: usize,
    /// The `archy` binary (default: next to this one).
    #[arg(long)]
    archy: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also rewrite the flood section of docs/benchmarks.md.
    #[arg(long)]
    write_docs: bool,
}

/// What the DHT flood measured.
#[derive(Debug, Default)]
struct DhtFigures {
    sent: usize,
    refused: u64,
    rss_before_mib: f64,
    rss_max_mib: f64,
    rss_end_mib: f64,
    passes: usize,
    pass_max_s: f64,
    apps_running: usize,
}

/// What one relay flood measured.
#[derive(Debug)]
struct RelayFigures {
    mode: &'static str,
    events_sent: usize,
    peak_rss_mib: f64,
    seconds: f64,
    reason: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(nix_is_root(), "run as root (the process runtime needs it)");
    anyhow::ensure!(
        Path::new("/bin/busybox").is_file(),
        "needs /bin/busybox (apt-get install busybox-static)"
    );
    let archy = match &args.archy {
        Some(a) => a.clone(),
        None => std::env::current_exe()?.with_file_name("archy"),
    };
    anyhow::ensure!(
        archy.is_file(),
        "{} missing: cargo build --release -p archy-node",
        archy.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let work = tempfile::tempdir()?;
    let dht = dht_flood(&rt, &args, &archy, work.path())?;
    let mut relays = Vec::new();
    for (mode, count, size) in [("small", 60_000, 64), ("large", 400, 200 << 10)] {
        eprintln!("relay flood: {count} events of {size} bytes...");
        relays.push(relay_flood(&rt, &archy, work.path(), mode, count, size)?);
    }
    report(&args, &dht, &relays)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// A signed publish dir with `apps` busybox httpd apps on ports 19300.. .
fn publish(dir: &Path, apps: u16) -> anyhow::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::create_dir_all(rootfs.join("www"))?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    std::fs::write(rootfs.join("www/index.html"), "flood bench")?;
    let manifests = dir.join("apps");
    std::fs::create_dir_all(&manifests)?;
    oci::pack_rootfs(
        &rootfs,
        &manifests.join("img.oci.tar"),
        &oci::PackOptions::default(),
    )?;
    for i in 0..apps {
        std::fs::write(
            manifests.join(format!("app{i}.yaml")),
            format!("app:\n  id: org.flood.app{i}\n  name: Flood {i}\n  version: 1.0.0\n  description: {{short: flood bench}}\n  container:\n    image: ./img.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{host: {}, container: 8080}}]\n  health_check: {{type: http, port: 8080, path: /, interval: 1s, retries: 20}}\n", 19_300 + i),
        )?;
    }
    let published = Publisher::generate()?.publish(
        &manifests,
        &dir.join("publish"),
        1,
        &Validity::default(),
    )?;
    Ok(published.dir)
}

/// The daemon, killed (and its apps uninstalled) when dropped.
struct Daemon {
    child: Child,
    data: PathBuf,
    apps: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(api) = ApiClient::from_data_dir(&self.data) {
            for i in 0..self.apps {
                let _ = api.post(
                    &format!("/v1/apps/org.flood.app{i}/uninstall"),
                    json!({"purge": true}),
                );
            }
            let _ = archy_harness::poll_until("apps uninstalled", Duration::from_secs(30), || {
                api.get_json("/v1/apps")
                    .ok()
                    .filter(|v| v.as_array().is_some_and(|a| a.is_empty()))
            });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A metric's value from Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn dht_flood(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    archy: &Path,
    work: &Path,
) -> anyhow::Result<DhtFigures> {
    eprintln!("publishing {} apps and starting the daemon...", args.apps);
    let publish = publish(&work.join("publisher"), args.apps)?;
    let data = work.join("node");
    let child = Command::new(archy)
        .args(["node", "run", "--data"])
        .arg(&data)
        .args(["--name", &format!("flood{}", std::process::id())])
        .args(["--api", "127.0.0.1:0", "--runtime", "process"])
        .args(["--dht-listen", "127.0.0.1:0", "--origin-dir"])
        .arg(&publish)
        .arg("--root")
        .arg(publish.join("root.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(work.join("daemon.log"))?))
        .spawn()
        .context("cannot start the daemon")?;
    let daemon = Daemon {
        child,
        data: data.clone(),
        apps: args.apps,
    };
    let pid = daemon.child.id();
    let dht_addr: Multiaddr =
        archy_harness::poll_until("the daemon's DHT address", Duration::from_secs(30), || {
            std::fs::read_to_string(data.join("dht.addr"))
                .ok()?
                .lines()
                .next()?
                .parse()
                .ok()
        })?;
    let api = archy_harness::poll_until("the daemon's API", Duration::from_secs(30), || {
        ApiClient::from_data_dir(&data).ok()
    })?;
    for i in 0..args.apps {
        api.post(&format!("/v1/apps/org.flood.app{i}/install"), json!({}))?;
    }
    let running = |api: &ApiClient| {
        api.get_json("/v1/apps").ok().map_or(0, |v| {
            v.as_array()
                .map_or(0, |a| a.iter().filter(|x| x["phase"] == "running").count())
        })
    };
    archy_harness::poll_until("every app running", Duration::from_secs(300), || {
        (running(&api) == usize::from(args.apps)).then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(5));
    let mut figures = DhtFigures {
        rss_before_mib: rss_mib(pid),
        ..DhtFigures::default()
    };
    let refused_before = metric(
        &api.get_text("/metrics")?,
        "archy_dht_refused_records_total",
    )
    .unwrap_or(0.0);

    eprintln!("DHT flood for {} s...", args.seconds);
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let sent = sent.clone();
        let (addr, limit, max) = (
            dht_addr.clone(),
            Duration::from_secs(args.seconds),
            args.max_records,
        );
        rt.spawn(async move { hostile_dht_peer(addr, limit, max, sent).await })
    };
    let started = Instant::now();
    let mut last_nudge = Instant::now();
    let mut last_passes = 0.0;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(Duration::from_millis(500));
        figures.rss_max_mib = figures.rss_max_mib.max(rss_mib(pid));
        if last_nudge.elapsed() >= Duration::from_secs(2) {
            // A change the operator makes: wakes the reconciler for a pass over all apps.
            api.post("/v1/apps/org.flood.app0/start", json!({}))?;
            last_nudge = Instant::now();
        }
        let m = api.get_text("/metrics")?;
        let passes = metric(&m, "archy_reconcile_passes_total").unwrap_or(0.0);
        if passes > last_passes {
            figures.passes += 1;
            let took = metric(&m, "archy_reconcile_last_pass_seconds").unwrap_or(0.0);
            figures.pass_max_s = figures.pass_max_s.max(took);
            last_passes = passes;
        }
    }
    rt.block_on(flood).context("the hostile peer")??;
    figures.sent = sent.load(Ordering::Relaxed);
    let m = api.get_text("/metrics")?;
    figures.refused =
        (metric(&m, "archy_dht_refused_records_total").unwrap_or(0.0) - refused_before) as u64;
    figures.rss_end_mib = rss_mib(pid);
    figures.apps_running = running(&api);
    drop(daemon);
    Ok(figures)
}

/// Sends forged records and provider records to `victim` for `limit` or until `max`.
async fn hostile_dht_peer(
    victim: Multiaddr,
    limit: Duration,
    max: usize,
    sent: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let victim_id = archy_dht::peer_of(&victim).context("the DHT address names no peer")?;
    let mut evil = archy_harness::hostile::kad_peer(archy_dht::KAD_PROTOCOL)
        .map_err(|e| anyhow::anyhow!("the hostile peer: {e}"))?;
    evil.behaviour_mut().kad.add_address(&victim_id, victim);
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n: usize = 0;
    while tokio::time::Instant::now() < deadline && n < max {
        tokio::select! {
            _ = evil.select_next_some() => {}
            _ = tick.tick() => {
                // 100 a tick (2,000 a second): forged address records, junk keys, and
                // provider records for Archy blob keys.
                for _ in 0..100 {
                    let kad = &mut evil.behaviour_mut().kad;
                    match n % 3 {
                        0 => {
                            let mut k = b"/archy/iroh-addr/".to_vec();
                            k.extend(PeerId::random().to_bytes());
                            kad.put_record_to(Record::new(RecordKey::new(&k), vec![7u8; 1000]), std::iter::once(victim_id), Quorum::One);
                        }
                        1 => {
                            let k = format!("/evil/{n}").into_bytes();
                            kad.put_record_to(Record::new(RecordKey::new(&k), vec![7u8; 1000]), std::iter::once(victim_id), Quorum::One);
                        }
                        _ => {
                            let mut k = b"/archy/blob/".to_vec();
                            k.extend(ContentHash::of(&n.to_le_bytes()).as_bytes());
                            kad.start_providing(RecordKey::new(&k))?;
                        }
                    }
                    n += 1;
                }
                sent.store(n, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Runs `archy market search` against a relay that sends `count` distinct events of
/// about `size` bytes, 5,000 per request, then repeats them.
fn relay_flood(
    rt: &tokio::runtime::Runtime,
    archy: &Path,
    work: &Path,
    mode: &'static str,
    count: usize,
    size: usize,
) -> anyhow::Result<RelayFigures> {
    let keys = Keys::generate();
    let events: Vec<String> = (0..count)
        .map(|i| {
            EventBuilder::new(archy_discovery::announcement::MARKET_KIND, "x".repeat(size))
                .tags([
                    Tag::identifier(format!("archy:app:org.flood.e{i}")),
                    Tag::hashtag("archy"),
                ])
                .sign_with_keys(&keys)
                .map(|e| e.as_json())
        })
        .collect::<Result<_, _>>()?;
    let served = Arc::new(AtomicUsize::new(0));
    let addr = rt.block_on(flooding_relay(Arc::new(events), served.clone()))?;
    let started = Instant::now();
    let child = Command::new(archy)
        .args(["market", "search", "--json", "--timeout", "30", "--relay"])
        .arg(format!("ws://{addr}"))
        .env_remove("ARCHY_RELAYS")
        .env("NO_COLOR", "1")
        .env_remove("ARCHY_ME")
        .current_dir(work)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (output, peak_kib) = wait_with_peak_rss(child)?;
    let stderr = String::from_utf8_lossy(&output.1);
    let line = stderr
        .lines()
        .find(|l| l.contains("budget") || l.contains("limit"))
        .unwrap_or_else(|| stderr.lines().last().unwrap_or(""));
    let reason = line
        .split_once("error=")
        .map_or(line, |(_, e)| e)
        .trim()
        .to_string();
    Ok(RelayFigures {
        mode,
        events_sent: served.load(Ordering::Relaxed),
        peak_rss_mib: peak_kib as f64 / 1024.0,
        seconds: started.elapsed().as_secs_f64(),
        reason,
    })
}

/// A finished child's stdout and stderr.
type Streams = (Vec<u8>, Vec<u8>);

/// Waits for `child` (reading its output) and returns its output and peak RSS in KiB.
/// The peak is the child's `VmHWM`, polled every 5 ms while it runs: `wait4`'s
/// `ru_maxrss` would count the pages it shared with this process before its `exec`.
fn wait_with_peak_rss(mut child: Child) -> anyhow::Result<(Streams, i64)> {
    use std::io::Read;
    let (mut out, mut err) = (
        child.stdout.take().context("stdout")?,
        child.stderr.take().context("stderr")?,
    );
    let readers = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        (b, e)
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0i64;
    while child.try_wait()?.is_none() {
        if let Some(hwm) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
        }) {
            peak = peak.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = readers.join().unwrap_or_default();
    Ok((output, peak))
}

/// A relay that answers every REQ with the next 5,000 of `events` (wrapping around),
/// then EOSE, counting what it sends in `served`.
async fn flooding_relay(
    events: Arc<Vec<String>>,
    served: Arc<AtomicUsize>,
) -> anyhow::Result<SocketAddr> {
    let cursor = Arc::new(AtomicUsize::new(0));
    let addr = archy_harness::hostile::scripted_relay(move |sub| {
        let sub = sub.to_string();
        let (events, served, cursor) = (events.clone(), served.clone(), cursor.clone());
        (0..5_000).map(move |_| {
            let i = cursor.fetch_add(1, Ordering::Relaxed) % events.len();
            served.fetch_add(1, Ordering::Relaxed);
            format!("[\"EVENT\",{sub},{}]", events[i])
        })
    })
    .await?;
    Ok(addr)
}

fn report(args: &Args, dht: &DhtFigures, relays: &[RelayFigures]) -> anyhow::Result<()> {
    let ok = dht.rss_max_mib < 128.0 && dht.pass_max_s < 1.0;
    if args.json {
        println!(
            "{}",
            json!({
                "dht": {
                    "seconds": args.seconds, "apps": args.apps, "records_sent": dht.sent,
                    "refused": dht.refused, "rss_before_mib": dht.rss_before_mib,
                    "rss_max_mib": dht.rss_max_mib, "rss_end_mib": dht.rss_end_mib,
                    "passes": dht.passes, "pass_max_seconds": dht.pass_max_s,
                    "apps_running": dht.apps_running,
                },
                "relays": relays.iter().map(|r| json!({
                    "mode": r.mode, "events_sent": r.events_sent, "peak_rss_mib": r.peak_rss_mib,
                    "seconds": r.seconds, "reason": r.reason,
                })).collect::<Vec<_>>(),
                "within_targets": ok,
            })
        );
    } else {
        println!(
            "DHT flood: {} records sent in {} s, {} refused; daemon RSS {:.1} MiB before, {:.1} MiB max, {:.1} MiB after; {} passes, longest {:.3} s; {} of {} apps running",
            dht.sent, args.seconds, dht.refused, dht.rss_before_mib, dht.rss_max_mib,
            dht.rss_end_mib, dht.passes, dht.pass_max_s, dht.apps_running, args.apps
        );
        for r in relays {
            println!(
                "relay flood ({}): {} events sent; client peak RSS {:.1} MiB, {:.1} s; {}",
                r.mode, r.events_sent, r.peak_rss_mib, r.seconds, r.reason
            );
        }
    }
    if args.write_docs {
        let rows: String = relays
            .iter()
            .map(|r| {
                format!(
                    "| `archy market search` against a relay sending {} events without end | peak RSS **{:.1} MiB**, {:.1} s, {} events sent before the cut; the client said: {} | bounded by the budget |\n",
                    r.mode, r.peak_rss_mib, r.seconds, r.events_sent, r.reason.replace('|', "\\|")
                )
            })
            .collect();
        let body = format!(
            "## Flood: one hostile DHT peer, one hostile relay (issue 14)\n\n\
**What**: an `archy node run --runtime process` daemon with {apps} busybox apps running and its DHT on loopback, while a hostile libp2p peer sends it forged address records, records under foreign keys and provider records (2,000 a second) for {secs} s; the harness wakes the reconciler every 2 s and samples the daemon's RSS and its last pass time (`archy_reconcile_last_pass_seconds`, catalog sync and every app) twice a second. Then `archy market search` against a relay that answers every request with 5,000 new signed events without end: small events (the 50,000-event budget stops it) and 200 KiB events (the 64 MiB byte budget stops it); the client's peak RSS (`VmHWM`, polled). The 10,000 provider records not refused are the per-peer cap (Archy keys, accepted until the cap); what stays in RSS after the flood is mostly them and libp2p's connection state. A relay's events in flight inside nostr-sdk (its notification ring of 2,048 and a 512-event channel) are not under Archy's budget; the byte budget bounds what is kept.\n\n\
**Command**: `cargo build --release -p archy-node -p archy-bench && sudo target/release/flood-bench --seconds {secs} --write-docs`  \n\
Machine: {machine}; release build  \nDate: {date}\n\n\
| figure | result | target |\n|---|---|---|\n\
| records sent by the hostile DHT peer / refused by the daemon | {sent} / {refused} | all foreign ones refused |\n\
| daemon RSS before / max during / after the flood | {b:.1} / **{m:.1}** / {e:.1} MiB | < 128 MiB |\n\
| reconcile passes during the flood, longest | {passes}, **{pass:.3} s** | < 1 s |\n\
| apps running after the flood | {running} of {apps} | all |\n{rows}",
            apps = args.apps,
            secs = args.seconds,
            machine = archy_bench::machine(),
            date = chrono::Utc::now().format("%Y-%m-%d"),
            sent = dht.sent,
            refused = dht.refused,
            b = dht.rss_before_mib,
            m = dht.rss_max_mib,
            e = dht.rss_end_mib,
            passes = dht.passes,
            pass = dht.pass_max_s,
            running = dht.apps_running,
        );
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        archy_bench::write_section(&doc, "flood", &body)?;
        eprintln!("wrote the flood section of docs/benchmarks.md");
    }
    anyhow::ensure!(ok, "outside the targets (RSS < 128 MiB, pass < 1 s)");
    Ok(())
}
