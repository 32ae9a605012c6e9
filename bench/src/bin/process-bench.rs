//! Process runtime benchmark (issue 13): how much the defences against hostile images and
//! apps cost.
//!
//! - unpack: a generated multi-layer image (default 1 GiB in 8 uncompressed layers of
//!   128 KiB files) loaded with `ProcessRuntime::load_image`, every check on (confined
//!   paths, budgets, layer digests and diff_ids), into a fresh runtime dir each run;
//! - start: a busybox app started and stopped N times; `start` returns when the app has
//!   been exec'd (the supervisor reads EOF on the close-on-exec status pipe), so its
//!   duration is the time to the app's first instruction, all isolation included.
//!
//! The program only uses `ProcessRuntime::{new, load_image, create, start, stop}`, so the
//! same source also builds against an older revision: `bench/process.sh --baseline REV`
//! runs both and, with `--write-docs`, writes the comparison into docs/benchmarks.md.
//! Run as root.

use std::{
    fs,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use archy_catalog::{manifest, oci, ImageRef};
use archy_node::runtime::{process::ProcessRuntime, ContainerSpec, Runtime};
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Process runtime benchmark: image unpack throughput and app start time")]
struct Args {
    /// The `archy` binary (the runtime starts apps through `archy process-helper`).
    #[arg(long)]
    archy: PathBuf,
    /// Work dir (the image and the runtime's dirs); default: a temp dir.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Size of the generated image in MiB.
    #[arg(long, default_value_t = 1024)]
    unpack_mib: u64,
    /// Layers of the generated image.
    #[arg(long, default_value_t = 8)]
    layers: u64,
    /// Unpack runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// App starts measured.
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// A JSON result of another revision (`--json` output) to compare with.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Label of the baseline (e.g. its commit).
    #[arg(long, default_value = "baseline")]
    baseline_label: String,
    /// Label of this build.
    #[arg(long, default_value = "this tree")]
    label: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Rewrite the process-runtime section of this docs/benchmarks.md.
    #[arg(long)]
    write_docs: Option<PathBuf>,
}

const FILE: usize = 128 << 10;

fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    fs::create_dir_all(&work)?;
    let (archive, image) = big_image(&work, args.unpack_mib << 20, args.layers)?;
    let mut unpack_s = Vec::new();
    for run in 0..args.runs {
        let root = work.join(format!("unpack-{run}"));
        let rt = ProcessRuntime::new("bench", &root, &args.archy);
        // Each run starts with no dirty pages of the last one being written back.
        std::process::Command::new("sync").status()?;
        let t = Instant::now();
        rt.load_image(&archive, &image).context("load_image")?;
        unpack_s.push(t.elapsed().as_secs_f64());
        fs::remove_dir_all(&root)?;
    }
    let start_ms = starts(&work, &args)?;
    let result = json!({
        "label": args.label,
        "image_bytes": args.unpack_mib << 20,
        "layers": args.layers,
        "unpack_s": unpack_s,
        "unpack_mib_s": (args.unpack_mib as f64) / median(&unpack_s),
        "start_ms": start_ms,
        "start_median_ms": median(&start_ms),
        "start_p90_ms": percentile(&start_ms, 0.9),
    });
    if args.json {
        println!("{result}");
        return Ok(());
    }
    let baseline: Option<serde_json::Value> = match &args.baseline {
        Some(p) => Some(serde_json::from_slice(&fs::read(p)?).context("baseline JSON")?),
        None => None,
    };
    let table = table(&args, &result, baseline.as_ref());
    println!("{table}");
    if let Some(doc) = &args.write_docs {
        archy_bench::write_section(doc, "process-runtime", &table)?;
    }
    Ok(())
}

/// An oci-archive of `layers` uncompressed layers holding `bytes` in 128 KiB files.
fn big_image(work: &Path, bytes: u64, layers: u64) -> Result<(PathBuf, ImageRef)> {
    use sha2::{Digest, Sha256};
    let files_per_layer = (bytes / layers / FILE as u64).max(1);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = vec![0u8; FILE];
    let mut blobs = Vec::new();
    for l in 0..layers {
        let path = work.join(format!("layer-{l}.tar"));
        let mut b = tar::Builder::new(BufWriter::new(fs::File::create(&path)?));
        for f in 0..files_per_layer {
            for chunk in data.chunks_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(FILE as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, format!("layer{l}/d{}/f{f}", f % 64), &data[..])?;
        }
        b.into_inner()?.flush()?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut fs::File::open(&path)?, &mut hasher)?;
        let digest = format!("sha256:{}", hex(&hasher.finalize()));
        let size = fs::metadata(&path)?.len();
        blobs.push((path, digest, size));
    }
    let sha = |b: &[u8]| format!("sha256:{}", hex(&Sha256::digest(b)));
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": blobs.iter().map(|b| b.1.clone()).collect::<Vec<_>>()},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": blobs.iter().map(|b| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": b.1, "size": b.2})).collect::<Vec<_>>(),
    }))?;
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len()}]}))?;
    let archive = work.join("big.oci.tar");
    let mut ar = tar::Builder::new(BufWriter::new(fs::File::create(&archive)?));
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    for (path, digest, _) in &blobs {
        ar.append_path_with_name(path, blob(digest))?;
        fs::remove_file(path)?;
    }
    for (bytes, name) in [
        (&config, blob(&sha(&config))),
        (&manifest, blob(&sha(&manifest))),
        (&index, "index.json".to_string()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        ar.append_data(&mut h, name, &bytes[..])?;
    }
    ar.into_inner()?.flush()?;
    let info = oci::inspect(&archive)?;
    let (hash, size) = oci::hash_file(&archive)?;
    Ok((
        archive,
        ImageRef {
            hash,
            size,
            config_digest: info.config_digest,
            format: info.format,
            web_seeds: Vec::new(),
        },
    ))
}

/// Milliseconds of each `start` of a busybox app that sleeps.
fn starts(work: &Path, args: &Args) -> Result<Vec<f64>> {
    let dir = work.join("start");
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin"))?;
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("needs /bin/busybox")?;
    let archive = dir.join("img.oci.tar");
    oci::pack_rootfs(&rootfs, &archive, &oci::PackOptions::default())?;
    let info = oci::inspect(&archive)?;
    let (hash, size) = oci::hash_file(&archive)?;
    let image = ImageRef {
        hash,
        size,
        config_digest: info.config_digest,
        format: info.format,
        web_seeds: Vec::new(),
    };
    let text = format!(
        "app:\n  id: org.example.startbench\n  name: B\n  version: 1.0.0\n  description: {{short: b}}\n  container:\n    image: {hash}\n    cmd: [/bin/busybox, sleep, '1000']\n"
    );
    let m = manifest::parse_and_validate(&text, manifest::ManifestFormat::Yaml)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .normalized();
    let rt = ProcessRuntime::new("bench", dir.join("node"), &args.archy);
    rt.load_image(&archive, &image)?;
    let spec = ContainerSpec {
        manifest_hash: m.manifest_hash(),
        manifest: m,
        image,
        publish_ip: "127.0.0.1".parse()?,
        data_dir: dir.join("appdata"),
        secrets: Default::default(),
        owner: archy_node::app_identity::AppOwner::Catalog,
    };
    rt.create(&spec)?;
    let mut out = Vec::new();
    for _ in 0..args.starts {
        let t = Instant::now();
        rt.start("org.example.startbench")?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        rt.stop("org.example.startbench")?;
    }
    rt.remove("org.example.startbench")?;
    Ok(out)
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn table(args: &Args, r: &serde_json::Value, base: Option<&serde_json::Value>) -> String {
    let row = |v: &serde_json::Value| {
        let runs: Vec<String> = v["unpack_s"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| format!("{:.2}", x.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "| {} | {:.0} MiB/s ({} s) | {:.1} ms | {:.1} ms |",
            v["label"].as_str().unwrap_or("?"),
            v["unpack_mib_s"].as_f64().unwrap_or(0.0),
            runs.join(", "),
            v["start_median_ms"].as_f64().unwrap_or(0.0),
            v["start_p90_ms"].as_f64().unwrap_or(0.0),
        )
    };
    let mut t = format!(
        "## Process runtime: unpack and start (issue 13)\n\n\
         `bench/process.sh --baseline {} --write-docs` (as root, release builds), on {}.\n\
         Unpack: `ProcessRuntime::load_image` of a generated {} MiB image in {} uncompressed layers \
         of 128 KiB files, into a fresh dir on the work dir's filesystem after a `sync`, {} runs \
         (median; each run listed). Start: a busybox \
         app started {} times; `start` returns once the app has been exec'd, so this is the time \
         to its first instruction with every protection applied (user namespace, idmapped \
         overlay, pivot_root, masked /proc, capabilities, seccomp, cgroup).\n\n\
         | build | unpack throughput (runs) | start, median | start, p90 |\n|---|---|---|---|\n",
        args.baseline_label,
        archy_bench::machine(),
        args.unpack_mib,
        args.layers,
        args.runs,
        args.starts
    );
    if let Some(b) = base {
        t.push_str(&row(b));
        t.push('\n');
    }
    t.push_str(&row(r));
    t.push('\n');
    if let Some(b) = base {
        let (old, new) = (
            b["unpack_mib_s"].as_f64().unwrap_or(0.0),
            r["unpack_mib_s"].as_f64().unwrap_or(0.0),
        );
        t.push_str(&format!(
            "\nUnpack with every check on runs at {:.0} % of the baseline's throughput (target: at least 90 %). \
             Start to the first instruction: {:.0} ms median (target: under 300 ms).\n",
            100.0 * new / old,
            r["start_median_ms"].as_f64().unwrap_or(0.0)
        ));
    }
    t
}
