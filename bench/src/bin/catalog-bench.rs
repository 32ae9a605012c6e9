//! Catalog benchmark: build, sign and verify a catalog of N apps (default 10,000).
//!
//! `cargo run --release -p archy-bench --bin catalog-bench -- --write-docs`
//!
//! Builds through the real path (`build_catalog` over N manifest files on disk, each
//! image hashed and inspected), signs the catalog and a timestamp, then verifies and
//! parses them the way a node does (`TrustedState::verify_timestamp` + `verify_catalog`)
//! and reports time and peak memory of that verification: peak heap bytes (counted by
//! the allocator) and the process's peak RSS.

use std::{fs, path::PathBuf, time::Instant};

use anyhow::Context;
use archy_bench::{machine, max_rss, peak_heap, reset_peak, write_section, PeakAlloc};
use archy_catalog::{build::build_catalog, oci, publisher::Publisher, Limits, TrustedState};
use chrono::{Duration, Utc};
use clap::Parser;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

#[derive(Debug, Parser)]
struct Args {
    /// Number of apps in the catalog.
    #[arg(long, default_value_t = 10_000)]
    apps: usize,
    /// Verification runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Write the figures into docs/benchmarks.md.
    #[arg(long)]
    write_docs: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Internal: only verify the documents in DIR and print figures (run as a child
    /// process so its peak RSS is the verification's alone).
    #[arg(long, hide = true)]
    verify_only: Option<PathBuf>,
}

/// Verifies root.json/timestamp.json/catalog.json in `dir` `runs` times, the way a node
/// does; returns (median seconds, peak heap bytes, apps).
fn verify_dir(dir: &std::path::Path, runs: usize) -> anyhow::Result<(f64, usize, usize)> {
    let root_bytes = fs::read(dir.join("root.json"))?;
    let ts_bytes = fs::read(dir.join("timestamp.json"))?;
    let mut times = Vec::new();
    let mut peak = 0usize;
    let mut apps = 0;
    for _ in 0..runs.max(1) {
        reset_peak();
        let base = peak_heap();
        let t = Instant::now();
        let cat_bytes = fs::read(dir.join("catalog.json")).context("read catalog")?;
        let mut state = TrustedState::bootstrap(&root_bytes, &Limits::default())?;
        let head = state.verify_timestamp(&ts_bytes, Utc::now(), &Limits::default())?;
        let catalog =
            state.verify_catalog(&cat_bytes, Some(&head), Utc::now(), &Limits::default())?;
        apps = catalog.apps.len();
        drop(catalog);
        drop(cat_bytes);
        times.push(t.elapsed().as_secs_f64());
        peak = peak.max(peak_heap() - base);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], peak, apps))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.verify_only {
        let (median, peak, apps) = verify_dir(dir, args.runs)?;
        let rss = max_rss();
        println!(
            "{}",
            serde_json::json!({"median": median, "peak_heap": peak, "apps": apps, "max_rss": rss})
        );
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let apps_dir = tmp.path().join("apps");
    fs::create_dir_all(apps_dir.join("rootfs/www"))?;
    fs::write(apps_dir.join("rootfs/www/index.html"), "hello")?;
    oci::pack_rootfs(
        &apps_dir.join("rootfs"),
        &apps_dir.join("image.oci.tar"),
        &oci::PackOptions::default(),
    )?;
    for i in 0..args.apps {
        let m = format!(
            "app:\n  id: org.bench.app{i}\n  name: App {i}\n  version: 1.{}.0\n  category: bench\n  description: {{ short: \"Benchmark app number {i}\" }}\n  container:\n    image: ./image.oci.tar\n    cmd: [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\"]\n    env: {{ MODE: production }}\n    ports: [{{ host: {}, container: 8080 }}]\n    volumes: [{{ name: data, target: /data }}]\n  health_check: {{ type: http, port: 8080, path: / }}\n",
            i % 7,
            10_000 + (i % 50_000)
        );
        fs::write(apps_dir.join(format!("app{i:05}.yaml")), m)?;
    }

    let publisher = Publisher::generate()?;
    let root_bytes = publisher.signed_root(1, Utc::now() + Duration::days(365));

    let t = Instant::now();
    let built = build_catalog(&apps_dir, 1, Utc::now() + Duration::days(30))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let build_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let catalog_bytes = publisher.signed_catalog(&built.catalog);
    let ts_bytes = publisher.signed_timestamp(&catalog_bytes, 1, Utc::now() + Duration::days(1))?;
    let sign_s = t.elapsed().as_secs_f64();
    drop(built);

    let docs = tmp.path().join("docs");
    fs::create_dir_all(&docs)?;
    fs::write(docs.join("root.json"), &root_bytes)?;
    fs::write(docs.join("timestamp.json"), &ts_bytes)?;
    fs::write(docs.join("catalog.json"), &catalog_bytes)?;
    let size = catalog_bytes.len() as u64;
    drop(catalog_bytes);

    // Verification runs in a fresh child process: its peak RSS is the verification's.
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--verify-only")
        .arg(&docs)
        .args(["--runs", &args.runs.to_string()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "verify child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    anyhow::ensure!(
        child["apps"] == args.apps,
        "child verified {} apps",
        child["apps"]
    );
    let verify_s = child["median"].as_f64().unwrap_or(f64::NAN);
    let peak = child["peak_heap"].as_u64().unwrap_or(0);
    let rss = child["max_rss"].as_u64().unwrap_or(0);
    let runs = args.runs.max(1);

    let json = serde_json::json!({
        "apps": args.apps, "catalog_bytes": size, "build_seconds": build_s, "sign_seconds": sign_s,
        "verify_parse_seconds_median": verify_s, "verify_peak_heap_bytes": peak, "verify_process_max_rss_bytes": rss,
    });
    if args.json {
        println!("{json}");
    } else {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    if args.write_docs {
        let mib = |b: f64| b / (1024.0 * 1024.0);
        let body = format!(
            "## Catalog: build, sign, verify {apps} apps\n\n\
             Command: `cargo run --release -p archy-bench --bin catalog-bench -- --write-docs`  \n\
             Machine: {machine}  \nDate: {date}\n\n\
             | step | figure | target |\n|---|---|---|\n\
             | catalog size | {size_mib:.1} MiB | |\n\
             | build ({apps} manifest files validated, images hashed + inspected) | {build_s:.2} s | |\n\
             | sign catalog + timestamp | {sign_ms:.1} ms | |\n\
             | verify + parse (timestamp, catalog hash, signature, full parse, structural check of every release), median of {runs} | **{verify_ms:.1} ms** | < 100 ms |\n\
             | peak heap during verify + parse | **{peak_mib:.1} MiB** | < 64 MiB |\n\
             | peak RSS of the verifying process (a fresh process doing only this) | {rss_mib:.1} MiB | |\n\n\
             The heap figure counts every byte allocated (a counting global allocator); the RSS is \
             higher because glibc malloc keeps freed and fragmented memory. The catalog file itself \
             is {size_mib:.1} MiB of that; the rest is the parsed catalog (every manifest of every release).\n",
            apps = args.apps,
            machine = machine(),
            date = Utc::now().format("%Y-%m-%d"),
            size_mib = mib(size as f64),
            sign_ms = sign_s * 1000.0,
            runs = runs,
            verify_ms = verify_s * 1000.0,
            peak_mib = mib(peak as f64),
            rss_mib = mib(rss as f64),
        );
        let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        write_section(&doc, "catalog", &body)?;
        eprintln!("wrote {}", doc.display());
    }
    Ok(())
}
