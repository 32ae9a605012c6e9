//! Developer tools: `archy app validate`, `render` and `pack`.
//!
//! They run the very validator the catalog and the node use, so "valid here" means
//! "accepted everywhere".

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use archy_catalog::{
    manifest::{self, ManifestFormat},
    oci,
};
use serde_json::json;

fn load(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

pub fn validate(file: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let text = load(file)?;
    let result = manifest::parse_and_validate(&text, ManifestFormat::from_path(file));
    match (result, as_json) {
        (Ok(m), true) => println!(
            "{}",
            json!({"valid": true, "file": file, "id": m.id, "version": m.version})
        ),
        (Ok(m), false) => println!("{}: valid ({} {})", file.display(), m.id, m.version),
        (Err(e), true) => {
            println!(
                "{}",
                json!({"valid": false, "file": file, "errors": e.errors})
            );
            return Ok(ExitCode::FAILURE);
        }
        (Err(e), false) => {
            eprintln!("{}", e.with_source(file.display().to_string()));
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn render(file: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let text = load(file)?;
    let m = manifest::parse_and_validate(&text, ManifestFormat::from_path(file))
        .map_err(|e| anyhow::anyhow!("{}", e.with_source(file.display().to_string())))?;
    let normalized = m.normalized();
    let runtime = runtime_view(&normalized);
    let out = json!({
        "manifest": { "app": normalized },
        "manifest_hash": m.manifest_hash(),
        "runtime": runtime,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", serde_yaml_ng::to_string(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// How the manifest maps onto a container: the settings every runtime applies.
fn runtime_view(m: &archy_catalog::AppManifest) -> serde_json::Value {
    let c = &m.container;
    let secrets: Vec<_> = m
        .generated_secrets
        .iter()
        .map(|s| json!({"env": s.name, "file": format!("/run/secrets/{}", s.name), "kind": s.kind}))
        .collect();
    let volumes: Vec<_> = c
        .volumes
        .iter()
        .map(|v| {
            let host = match &v.source {
                Some(src) => format!("<data>/apps/{}/volumes/{}/{}", m.id, v.name, src),
                None => format!("<data>/apps/{}/volumes/{}", m.id, v.name),
            };
            json!({"host": host, "container": v.target, "readonly": v.readonly.unwrap_or(false)})
        })
        .collect();
    json!({
        "container_name": format!("archy-{}", m.id),
        "labels": {"io.archy.app": m.id, "io.archy.manifest-hash": m.manifest_hash().to_string()},
        "image": c.image,
        "entrypoint": c.entrypoint,
        "cmd": c.cmd,
        "env": c.env,
        "secrets": secrets,
        "ports": c.ports.iter().map(|p| format!("127.0.0.1:{}:{}/{}", p.host, p.container, p.protocol)).collect::<Vec<_>>(),
        "volumes": volumes,
        "user": c.user,
        "capabilities": {"drop": "ALL except the runtime default set", "add": c.capabilities_add},
        "readonly_root": c.readonly_root,
        "privileged": false,
        "network": "private (bridge)",
        "no_new_privileges": true,
        "memory_limit": m.resources.as_ref().and_then(|r| r.memory_limit.clone()),
        "cpu_limit": m.resources.as_ref().and_then(|r| r.cpu_limit),
    })
}

/// The image name an archive written to `out` gets by default: its file name without
/// `.oci.tar` (or `.tar`).
fn default_ref_name(out: &Path) -> Option<String> {
    let file = out.file_name()?.to_string_lossy();
    let name = file
        .strip_suffix(".oci.tar")
        .or_else(|| file.strip_suffix(".tar"))
        .unwrap_or(&file);
    (!name.is_empty()).then(|| name.to_string())
}

pub fn pack(
    dir: &Path,
    out: &Path,
    name: Option<String>,
    cmd: Vec<String>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let opts = oci::PackOptions {
        config: oci::RuntimeConfig {
            cmd: (!cmd.is_empty()).then_some(cmd),
            ..Default::default()
        },
        ref_name: name.or_else(|| default_ref_name(out)),
    };
    let packed = oci::pack_rootfs(dir, out, &opts)
        .with_context(|| format!("cannot pack {}", dir.display()))?;
    let (hash, size) = oci::hash_file(out)?;
    let summary = json!({"out": out, "hash": hash, "size": size, "config_digest": packed.config_digest, "format": oci::ArchiveFormat::OciArchive.to_string(), "files": packed.files, "name": opts.ref_name});
    report_packed(&summary, as_json);
    Ok(ExitCode::SUCCESS)
}

fn report_packed(summary: &serde_json::Value, as_json: bool) {
    if as_json {
        println!("{summary}");
        return;
    }
    let files = match summary["files"].as_u64() {
        Some(n) => format!("{n} files, "),
        None => String::new(),
    };
    println!(
        "{}: {}, {files}{} bytes",
        summary["out"].as_str().unwrap_or_default(),
        summary["format"].as_str().unwrap_or_default(),
        summary["size"]
    );
    println!(
        "  hash          {}",
        summary["hash"].as_str().unwrap_or_default()
    );
    println!(
        "  config digest {}",
        summary["config_digest"].as_str().unwrap_or_default()
    );
}

/// `archy app pack --from SOURCE`: an image built with podman or docker (saved by the
/// engine) or an archive they wrote, checked as a node checks an image and written to
/// `out` unchanged (atomically).
pub fn pack_from(source: &str, out: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".archy-pack-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let engine_save = |engine: &str, image: &str, extra: &[&str]| -> anyhow::Result<()> {
        let saved = std::process::Command::new(engine)
            .arg("save")
            .args(extra)
            .arg("-o")
            .arg(tmp.path())
            .arg(image)
            .output()
            .with_context(|| format!("cannot run {engine}"))?;
        anyhow::ensure!(
            saved.status.success(),
            "{engine} save {image} failed: {}",
            String::from_utf8_lossy(&saved.stderr).trim()
        );
        Ok(())
    };
    match source.split_once(':') {
        Some(("podman", image)) => engine_save("podman", image, &["--format", "oci-archive"])?,
        Some(("docker", image)) => engine_save("docker", image, &[])?,
        _ => {
            std::fs::copy(source, tmp.path())
                .with_context(|| format!("--from {source}: cannot read it (podman:IMAGE, docker:IMAGE or an archive file)"))?;
        }
    }
    let info = oci::inspect(tmp.path())
        .with_context(|| format!("--from {source}: not an image Archy can run"))?;
    let (hash, size) = oci::hash_file(tmp.path())?;
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let summary = json!({"out": out, "hash": hash, "size": size, "config_digest": info.config_digest, "format": info.format.to_string(), "layers": info.layers.len(), "from": source});
    report_packed(&summary, as_json);
    Ok(ExitCode::SUCCESS)
}
