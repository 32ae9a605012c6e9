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

pub fn pack(dir: &Path, out: &Path, cmd: Vec<String>, as_json: bool) -> anyhow::Result<ExitCode> {
    let opts = oci::PackOptions {
        config: oci::RuntimeConfig {
            cmd: (!cmd.is_empty()).then_some(cmd),
            ..Default::default()
        },
        ref_name: None,
    };
    let packed = oci::pack_rootfs(dir, out, &opts)
        .with_context(|| format!("cannot pack {}", dir.display()))?;
    let (hash, size) = oci::hash_file(out)?;
    if as_json {
        println!(
            "{}",
            json!({"out": out, "hash": hash, "size": size, "config_digest": packed.config_digest, "files": packed.files})
        );
    } else {
        println!("{}: {} files, {} bytes", out.display(), packed.files, size);
        println!("  hash          {hash}");
        println!("  config digest {}", packed.config_digest);
    }
    Ok(ExitCode::SUCCESS)
}
