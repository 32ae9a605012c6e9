//! The operators' steps of the demo: the origin operator serves the signed publish dir,
//! node operators start three daemons and install apps through them, and every node
//! must end on the same catalog.

use std::fs;

use anyhow::{bail, Context};
use archy_node::runtime::{podman::Podman, process::ProcessRuntime, RuntimeKind};

use super::{archy, archy_json, path_str, Ctx, DemoNode};

/// Podman when it works here, otherwise the engine-less process runtime; says which
/// and why.
pub(super) fn choose_runtime(c: &mut Ctx, wanted: Option<RuntimeKind>) -> anyhow::Result<String> {
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
pub(super) fn start_origin(c: &mut Ctx) -> anyhow::Result<String> {
    let publish = path_str(&c.dir.join("publish"));
    let data = path_str(&c.dir.join("origin"));
    let line = c.start_service(
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

/// Three `archy node run` daemons, each with its own data dir, trust anchor copy and
/// loopback address, all pointed at the origin's publish dir.
pub(super) fn start_nodes(c: &mut Ctx) -> anyhow::Result<String> {
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
        // Node 1 serves the web dashboard, with the demo's relay as its marketplace.
        if n == 1 {
            args.extend(["--web".to_string(), "127.0.0.1:0".into()]);
            if let Some(relay) = &c.relay_url {
                fs::create_dir_all(&data)?;
                fs::write(data.join("config.toml"), format!("relays = [{relay:?}]\n"))?;
            }
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
        let line = c.start_service(label, &args, "archy node ")?;
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
pub(super) fn install_catalog_app(c: &mut Ctx, n: u8, app_id: &str) -> anyhow::Result<String> {
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
pub(super) fn archy_events(args: &[&str]) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let out = archy()?.args(args).output()?;
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

pub(super) fn http_get(addr: std::net::SocketAddr) -> anyhow::Result<String> {
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
pub(super) fn check_convergence(c: &mut Ctx) -> anyhow::Result<String> {
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
