//! Dashboard benchmark (issue 17): how fast the web dashboard answers on a loaded node.
//!
//! - A node daemon (`archy node run --runtime process --web`) with N apps installed and
//!   running (a signed catalog of N+1 busybox apps, one shared image), and a marketplace
//!   of M announcements (M/2 apps) on `archy relay run`, seeded by `market_bench seed`.
//! - pages: each page fetched R times over one keep-alive connection on loopback, logged
//!   in with a one-time link; the time from sending the request to the last byte of the
//!   answer (the server's time plus loopback), median, p95 and max; the HTML's size, and
//!   the page weight with the stylesheet and script.
//! - click to progress: headless chromium (chromedriver, fantoccini) opens the catalog
//!   page of the app not installed yet and clicks Install; the page records when the
//!   first progress event reached the screen (`data-first-event-ms`, milliseconds since
//!   the navigation the click began). The app is uninstalled between runs.
//!
//! Run as root through `bench/dashboard.sh`, which builds the binaries.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use archy_catalog::{
    oci,
    publisher::{Publisher, Validity},
};
use archy_harness::{poll_until, Cmd};
use archy_node::client::ApiClient;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Dashboard benchmark: page times on a loaded node, click to first progress")]
struct Args {
    /// The `archy` binary.
    #[arg(long)]
    archy: PathBuf,
    /// The `market_bench` example binary (seeds the relay).
    #[arg(long)]
    market_bench: PathBuf,
    /// Apps installed and running on the node.
    #[arg(long, default_value_t = 100)]
    apps: usize,
    /// Marketplace announcements on the relay (half of them apps).
    #[arg(long, default_value_t = 10_000)]
    announcements: usize,
    /// Requests per page (after 3 unmeasured ones).
    #[arg(long, default_value_t = 30)]
    requests: usize,
    /// Install clicks measured in the browser.
    #[arg(long, default_value_t = 5)]
    clicks: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Rewrite the dashboard section of this docs/benchmarks.md.
    #[arg(long)]
    write_docs: Option<PathBuf>,
}

/// Pages measured: (name, path). The marketplace app's page is added once known.
const PAGES: [(&str, &str); 7] = [
    ("Store", "/"),
    ("Store, search \"app 1\"", "/?q=app+1"),
    ("Store, page 100", "/?page=100"),
    ("Catalog app", "/store/catalog/org.bench.app1"),
    ("My apps", "/apps"),
    ("App page (with log tail)", "/apps/org.bench.app1"),
    ("Node", "/node"),
];

fn main() -> Result<()> {
    let args = Args::parse();
    let work = tempfile::tempdir()?;
    let work = work.path();
    let data = work.join("node");
    let publish = publish_catalog(work, args.apps + 1)?;

    eprintln!(
        "relay and marketplace ({} announcements)...",
        args.announcements
    );
    let relay = Cmd::new(&args.archy)
        .args(["relay", "run", "--listen", "127.0.0.1:0"])
        .background("relay", "relay listening on ", Duration::from_secs(20))?;
    let relay_url = relay
        .ready
        .split_whitespace()
        .nth(3)
        .context("relay printed no URL")?
        .to_string();
    let me = Cmd::new(&args.market_bench)
        .args(["seed", "--relay", &relay_url, "--announcements"])
        .arg(args.announcements.to_string())
        .stdout()?
        .trim()
        .to_string();

    std::fs::create_dir_all(&data)?;
    std::fs::write(
        data.join("config.toml"),
        format!("relays = [{relay_url:?}]\nme = {me:?}\n"),
    )?;
    let node = Cmd::new(&args.archy)
        .args(["node", "run", "--data"])
        .arg(&data)
        .args(["--name", &format!("webbench{}", std::process::id())])
        .args([
            "--api",
            "127.0.0.1:0",
            "--runtime",
            "process",
            "--web",
            "127.0.0.1:0",
        ])
        .arg("--origin-dir")
        .arg(&publish)
        .arg("--root")
        .arg(publish.join("root.json"))
        .background("node", "archy node", Duration::from_secs(30))?;
    let _uninstall = Uninstall {
        data: data.clone(),
        apps: args.apps + 1,
    };

    eprintln!("installing {} apps...", args.apps);
    let api = ApiClient::from_data_dir(&data)?;
    for i in 1..=args.apps {
        api.post(&format!("/v1/apps/org.bench.app{i}/install"), json!({}))?;
    }
    poll_until("every app running", Duration::from_secs(900), || {
        (running(&api) >= args.apps).then_some(())
    })?;

    let link = Cmd::new(&args.archy)
        .args(["node", "web-url", "--json", "--data"])
        .arg(&data)
        .json()?;
    let url = link["url"].as_str().context("no link")?.to_string();
    let base = url.split("/login/").next().unwrap_or_default().to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build();
    let cookie = agent
        .get(&url)
        .call()?
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .context("no session cookie")?
        .to_string();
    let get = |path: &str| -> Result<String> {
        Ok(agent
            .get(&format!("{base}{path}"))
            .set("cookie", &cookie)
            .call()?
            .into_string()?)
    };
    let market_apps = args.announcements / 2;
    eprintln!("waiting for the dashboard's marketplace sync ({market_apps} apps)...");
    let store = poll_until("the marketplace synced", Duration::from_secs(120), || {
        get("/")
            .ok()
            .filter(|p| p.contains(&format!("{market_apps} apps, synced")))
    })?;
    let market_href = store
        .split("href=\"/store/market/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(|r| format!("/store/market/{r}"))
        .context("no marketplace app on the Store")?;
    let assets = get("/assets/style.css")?.len() + get("/assets/live.js")?.len();

    let mut pages: Vec<(String, String)> = PAGES
        .iter()
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    pages.insert(4, ("Marketplace app".into(), market_href));
    let mut rows = Vec::new();
    for (name, path) in &pages {
        for _ in 0..3 {
            get(path)?;
        }
        let mut times = Vec::with_capacity(args.requests);
        let mut bytes = 0;
        for _ in 0..args.requests {
            let t = Instant::now();
            bytes = get(path)?.len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let row = json!({
            "page": name,
            "path": path,
            "median_ms": percentile(&times, 0.5),
            "p95_ms": percentile(&times, 0.95),
            "max_ms": times.last().copied().unwrap_or(0.0),
            "html_bytes": bytes,
            "weight_bytes": bytes + assets,
        });
        eprintln!("{row}");
        rows.push(row);
    }

    eprintln!("install clicks in chromium...");
    // The first link is spent: the browser logs in with a new one.
    let link = Cmd::new(&args.archy)
        .args(["node", "web-url", "--json", "--data"])
        .arg(&data)
        .json()?;
    let browser_url = link["url"].as_str().context("no link")?;
    let clicks = click_to_progress(browser_url, &base, &data, args.apps + 1, args.clicks)?;
    let result = json!({
        "apps": args.apps,
        "market_apps": market_apps,
        "requests": args.requests,
        "pages": rows,
        "assets_bytes": assets,
        "click_to_first_progress_ms": clicks,
        "machine": archy_bench::machine(),
    });
    drop(node);
    drop(relay);
    if args.json {
        println!("{result}");
    } else {
        println!("{}", table(&result));
    }
    if let Some(doc) = &args.write_docs {
        archy_bench::write_section(doc, "dashboard", &section(&result))?;
    }
    Ok(())
}

/// Uninstalls the bench apps (the process runtime's apps outlive a killed daemon).
struct Uninstall {
    data: PathBuf,
    apps: usize,
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let Ok(api) = ApiClient::from_data_dir(&self.data) else {
            return;
        };
        for i in 1..=self.apps {
            let _ = api.post(
                &format!("/v1/apps/org.bench.app{i}/uninstall"),
                json!({"purge": true}),
            );
        }
        let _ = poll_until("every app gone", Duration::from_secs(120), || {
            api.get_json("/v1/apps")
                .ok()
                .filter(|a| a.as_array().is_some_and(Vec::is_empty))
        });
    }
}

/// A child process killed and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn running(api: &ApiClient) -> usize {
    api.get_json("/v1/apps")
        .ok()
        .and_then(|a| a.as_array().cloned())
        .map_or(0, |a| a.iter().filter(|x| x["phase"] == "running").count())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A signed catalog of `n` busybox apps (one image, ports 19100..), as the origin serves it.
fn publish_catalog(work: &Path, n: usize) -> Result<PathBuf> {
    let apps = work.join("apps");
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::create_dir_all(rootfs.join("www"))?;
    std::fs::create_dir_all(&apps)?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("needs /bin/busybox (apt-get install busybox-static)")?;
    std::fs::write(rootfs.join("www/index.html"), "bench app\n")?;
    oci::pack_rootfs(
        &rootfs,
        &apps.join("app.oci.tar"),
        &oci::PackOptions::default(),
    )?;
    for i in 1..=n {
        std::fs::write(
            apps.join(format!("app{i}.yaml")),
            format!(
                "app:\n  id: org.bench.app{i}\n  name: Bench app {i}\n  version: 1.0.0\n  category: bench\n  \
                 description: {{ short: \"benchmark app {i}\" }}\n  container:\n    image: ./app.oci.tar\n    \
                 cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{ host: {}, container: 8080 }}]\n  \
                 health_check: {{ type: http, port: 8080, path: /, interval: 1s, retries: 20 }}\n",
                19100 + i - 1
            ),
        )?;
    }
    Ok(Publisher::generate()?
        .publish(&apps, &work.join("publish"), 1, &Validity::default())?
        .dir)
}

/// Clicks Install on app `n`'s catalog page `clicks` times (uninstalling it between) and
/// returns, per click, the milliseconds until the first progress was on the screen.
fn click_to_progress(
    link: &str,
    base: &str,
    data: &Path,
    n: usize,
    clicks: usize,
) -> Result<Vec<f64>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let driver = KillOnDrop(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("chromedriver (apt-get install chromium chromium-driver)")?,
    );
    poll_until("chromedriver", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })?;
    let api = ApiClient::from_data_dir(data)?;
    let id = format!("org.bench.app{n}");
    let rt = tokio::runtime::Runtime::new()?;
    let times = rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}),
        );
        let browser = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await?;
        browser.goto(link).await?;
        let mut times = Vec::new();
        for _ in 0..clicks {
            browser
                .goto(&format!("{base}/store/catalog/{id}"))
                .await?;
            browser
                .find(fantoccini::Locator::Css("form.install button"))
                .await?
                .click()
                .await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            let first = loop {
                let got: Value = browser
                    .execute(
                        "const p = document.getElementById('progress'); return p ? (p.dataset.firstEventMs || null) : null;",
                        vec![],
                    )
                    .await
                    .unwrap_or(Value::Null);
                if let Some(ms) = got.as_str().and_then(|s| s.parse::<f64>().ok()) {
                    break ms;
                }
                if Instant::now() > deadline {
                    bail!("no progress on the screen within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            times.push(first);
            // Settle, then take the app away for the next click.
            poll_until("the clicked app running", Duration::from_secs(60), || {
                api.get_json(&format!("/v1/apps/{id}"))
                    .ok()
                    .filter(|a| a["phase"] == "running")
            })?;
            api.post(&format!("/v1/apps/{id}/uninstall"), json!({"purge": true}))?;
            poll_until("the clicked app gone", Duration::from_secs(60), || {
                api.get_json(&format!("/v1/apps/{id}")).is_err().then_some(())
            })?;
        }
        browser.close().await?;
        Ok::<_, anyhow::Error>(times)
    })?;
    drop(driver);
    Ok(times)
}

fn fmt_ms(v: &Value) -> String {
    format!("{:.1}", v.as_f64().unwrap_or(0.0))
}

fn table(r: &Value) -> String {
    let mut out = format!(
        "{:<30} {:>9} {:>8} {:>8} {:>10} {:>11}\n",
        "page", "median ms", "p95 ms", "max ms", "HTML KiB", "weight KiB"
    );
    for p in r["pages"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<30} {:>9} {:>8} {:>8} {:>10.1} {:>11.1}\n",
            p["page"].as_str().unwrap_or("?"),
            fmt_ms(&p["median_ms"]),
            fmt_ms(&p["p95_ms"]),
            fmt_ms(&p["max_ms"]),
            p["html_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            p["weight_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
        ));
    }
    let clicks: Vec<String> = r["click_to_first_progress_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(fmt_ms)
        .collect();
    out.push_str(&format!(
        "click Install -> first progress on screen (ms): {}\n",
        clicks.join(", ")
    ));
    out
}

fn section(r: &Value) -> String {
    let mut rows = String::new();
    let mut worst_p95 = 0.0f64;
    let mut heaviest = 0u64;
    for p in r["pages"].as_array().into_iter().flatten() {
        worst_p95 = worst_p95.max(p["p95_ms"].as_f64().unwrap_or(0.0));
        heaviest = heaviest.max(p["weight_bytes"].as_u64().unwrap_or(0));
        rows.push_str(&format!(
            "| {} | `{}` | {} | {} | {} | {:.1} | {:.1} |\n",
            p["page"].as_str().unwrap_or("?"),
            p["path"].as_str().unwrap_or("?"),
            fmt_ms(&p["median_ms"]),
            fmt_ms(&p["p95_ms"]),
            fmt_ms(&p["max_ms"]),
            p["html_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            p["weight_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
        ));
    }
    let clicks: Vec<f64> = r["click_to_first_progress_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    let worst_click = clicks.iter().copied().fold(0.0, f64::max);
    format!(
        "## Web dashboard: page times on a loaded node (issue 17)\n\n\
         **What**: one `archy node run --runtime process --web` daemon with {apps} apps installed and \
         running, its marketplace view synced from `archy relay run` holding {market} apps \
         ({ann} announcements from `market_bench seed`, scored against the operator's key). \
         Each page is fetched {req} times (after 3 unmeasured) over one keep-alive connection on \
         loopback with a logged-in session: the time from sending the request to the last byte \
         (the server's time plus loopback). Weight = the HTML plus the stylesheet and the script \
         ({assets:.1} KiB together; no images). Click to progress: headless chromium opens a \
         catalog app's page and clicks Install; the page records when the first progress event \
         reached the screen, in ms since the navigation the click began (POST, redirect, page, \
         event stream); the app is uninstalled between clicks.\n\n\
         **Command**: `bench/dashboard.sh --write-docs` (as root)  \n\
         Machine: {machine}; release build  \n\
         Date: {date}\n\n\
         | page | path | median ms | p95 ms | max ms | HTML KiB | weight KiB |\n\
         |---|---|---|---|---|---|---|\n{rows}\n\
         | figure | result | target |\n|---|---|---|\n\
         | slowest page, p95 | **{worst_p95:.1} ms** | < 50 ms |\n\
         | click Install to first progress on screen | **{clicks}** ms (worst {worst_click:.0}) | < 300 ms |\n\
         | heaviest page with its assets | **{heaviest_kib:.1} KiB** | < 100 KiB |\n",
        apps = r["apps"],
        market = r["market_apps"],
        ann = r["market_apps"].as_u64().unwrap_or(0) * 2,
        req = r["requests"],
        assets = r["assets_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
        machine = r["machine"].as_str().unwrap_or("?"),
        date = chrono::Utc::now().format("%Y-%m-%d"),
        clicks = clicks
            .iter()
            .map(|c| format!("{c:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        heaviest_kib = heaviest as f64 / 1024.0,
    )
}
