//! The marketplace steps of the demo: an embedded Nostr relay, a third-party developer
//! who packs, seeds and announces an app, and an operator who finds it and installs it
//! from the developer's seed, with its trust tier shown and enforced.

use std::fs;

use anyhow::{bail, Context};
use archy_catalog::oci;

use super::{
    archy, archy_json,
    operators::{archy_events, http_get},
    path_str,
    publisher::BUSYBOX,
    Ctx,
};

/// The operator's embedded relay, where developers announce apps.
pub(super) fn start_relay(c: &mut Ctx) -> anyhow::Result<String> {
    let data = c.dir.join("relay");
    let data_s = data.to_string_lossy().into_owned();
    let line = c.start_service(
        "relay",
        &["relay", "run", "--listen", "127.0.0.1:0", "--data", &data_s],
        "relay listening on ",
    )?;
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
pub(super) fn publish_market_app(c: &mut Ctx) -> anyhow::Result<String> {
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
    let line = c.start_service(
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

pub(super) fn search_market(c: &mut Ctx) -> anyhow::Result<String> {
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

/// The operator installs the app found on the marketplace: `archy app install
/// PUBKEY/APP_ID` shows its trust score and, since it is "unverified", needs
/// `--allow-unverified`. Node 1 finds the developer's seed in the DHT and fetches the
/// image from it over the swarm, verified against the announced BLAKE3 hash.
pub(super) fn install_market_app(c: &mut Ctx) -> anyhow::Result<String> {
    let app = c.market_app.clone().context("no market app found")?;
    let handle = app["handle"].as_str().context("no handle")?.to_string();
    let node = c.nodes.first().context("node not started")?;
    let data = path_str(&node.data);
    let relay = c.relay_url.clone().context("no relay")?;
    let me = c.operator_npub.clone().context("no operator key")?;
    let refused = archy()?
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
