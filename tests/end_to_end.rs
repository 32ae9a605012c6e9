//! The main job end to end, with real processes on 127.0.0.1: a publisher's signed
//! catalog served by an origin (`archy origin serve`), three node daemons on the process
//! runtime (`archy node run`), an embedded Nostr relay (`archy relay run`), and the CLI.
//!
//! It does what `archy demo` does and asserts every step, faults included:
//! - every node converges to the same verified catalog version;
//! - node 1 installs a 96 MiB app from the origin; the app answers;
//! - the origin is killed; node 2 is killed in the middle of its download, restarted,
//!   and completes from its peer without fetching the verified part again;
//! - node 3 installs with the origin still down, every byte from peers;
//! - the app answers on every node; nodes 1 and 2 count as served what node 3 got;
//!
//! and, in a second scenario where the daemons know only the origin's DHT address:
//! - the second node finds the first as a holder through the DHT and fetches from it;
//! - a developer seeds a third-party app's image into the DHT and publishes the app to
//!   the relay; `market search` finds it with its trust score, the install is refused
//!   while unverified, and with `--allow-unverified` the node fetches the image from the
//!   developer's seed, found in the DHT;
//! - with the origin down, a new node that knows one node's DHT address gets the catalog
//!   from a head server the DHT names; once every DHT member is gone, a node restarted
//!   on its saved head announces itself at start, and a newcomer gets the catalog from it.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use archy_catalog::oci;
use common::{
    archy, archy_ok, busybox_rootfs, free_port, http_ok, metrics, noise, publish_signed,
    wait_until, Proc, ProcessCleanup,
};

#[path = "../node/tests/common/mod.rs"]
mod common;

const ARCHY: &str = env!("CARGO_BIN_EXE_archy");
const BIG_MIB: usize = 96;
const APP: &str = "org.example.big";

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The publisher: an app whose image carries `BIG_MIB` MiB of random data (so a
/// download takes long enough to be interrupted), in a catalog signed with a root of
/// trust, ready for an origin in `<dir>/publish`.
fn publish(dir: &Path, port: u16) -> PathBuf {
    let rootfs = busybox_rootfs(dir, "big app");
    fs::write(rootfs.join("www/payload.bin"), noise(BIG_MIB << 20)).unwrap();
    let apps = dir.join("apps");
    fs::create_dir_all(&apps).unwrap();
    oci::pack_rootfs(
        &rootfs,
        &apps.join("big.oci.tar"),
        &oci::PackOptions::default(),
    )
    .unwrap();
    fs::write(
        apps.join("big.yaml"),
        format!(
            "app:\n  id: {APP}\n  name: Big\n  version: 1.0.0\n  description: {{short: a big image}}\n  container:\n    image: ./big.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n    ports: [{{host: {port}, container: 8080}}]\n  health_check: {{type: http, port: 8080, path: /, interval: 1s, retries: 20}}\n"
        ),
    )
    .unwrap();
    publish_signed(&apps, dir)
}

/// `archy origin serve` for `publish` (data in `<dir>/origin`); its swarm address.
fn start_origin(dir: &Path, publish: &Path, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "origin".to_string(),
        "serve".into(),
        "--publish".into(),
        s(publish),
        "--data".into(),
        s(&dir.join("origin")),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let origin = common::start(&args, "origin ");
    let addr = origin.ready.split_whitespace().nth(1).unwrap().to_string();
    (origin, addr)
}

/// One node daemon's fixed arguments, so it can be restarted as it was.
struct NodeSpec {
    data: PathBuf,
    args: Vec<String>,
    ip: [u8; 4],
}

impl NodeSpec {
    /// `archy node run` on the process runtime with its data in `<dir>/<name>`, apps
    /// published on 127.0.0.`octet`, trusting `publish`'s root, fetching from `origin`;
    /// `extra` adds flags (peers, DHT).
    fn new(
        dir: &Path,
        name: &str,
        octet: u8,
        publish: &Path,
        origin: &str,
        extra: &[&str],
    ) -> Self {
        let data = dir.join(name);
        let mut args: Vec<String> = [
            "node",
            "run",
            "--data",
            &s(&data),
            "--name",
            &format!("{name}-{}", std::process::id()),
            "--api",
            "127.0.0.1:0",
            "--root",
            &s(&publish.join("root.json")),
            "--publish-ip",
            &format!("127.0.0.{octet}"),
            "--runtime",
            "process",
            "--origin",
            origin,
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        Self {
            data,
            args,
            ip: [127, 0, 0, octet],
        }
    }

    fn start(&self) -> Proc {
        common::start(&self.args, "archy node ")
    }

    fn d(&self) -> String {
        s(&self.data)
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&archy_ok(&[
            "node",
            "status",
            "--data",
            &self.d(),
            "--json",
        ]))
        .unwrap()
    }

    fn metric(&self, name: &str) -> u64 {
        let out = metrics(&self.data);
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    }

    /// `archy app install ... --json`: the events, and whether it succeeded.
    fn install(&self, extra: &[&str]) -> (Vec<serde_json::Value>, bool) {
        let mut args = vec!["app", "install", "--data"];
        let d = self.d();
        args.push(&d);
        args.extend_from_slice(extra);
        args.push("--json");
        let out = archy(&args);
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (events, out.status.success())
    }
}

/// Where the install said the image bytes came from (its `verify` event).
fn bytes_from(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .find(|e| e["stage"] == "verify")
        .and_then(|e| e["message"].as_str())
        .unwrap_or_else(|| panic!("no verify event in {events:?}"))
        .to_string()
}

/// A work dir with the signed big app published for `port`, or `None` (the test is
/// skipped) where the process runtime does not work.
fn setup() -> Option<(tempfile::TempDir, u16, PathBuf)> {
    if !common::can_run(common::needs_process_runtime()) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let publish = publish(tmp.path(), port);
    Some((tmp, port, publish))
}

#[test]
fn origin_swarm_and_three_nodes_end_to_end() {
    let Some((tmp, port, publish)) = setup() else {
        return;
    };
    let dir = tmp.path();
    let size = fs::read_dir(publish.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();

    // The origin and three nodes; each node knows the origin and the nodes before it.
    let (origin, origin_addr) = start_origin(dir, &publish, &[]);
    // Declared before the daemons, so it runs after they are gone.
    let _cleanup = ProcessCleanup((1..=3).map(|n| dir.join(format!("node{n}"))).collect());
    let mut specs: Vec<NodeSpec> = Vec::new();
    let mut nodes: Vec<Option<Proc>> = Vec::new();
    let mut swarm_addrs: Vec<String> = Vec::new();
    for n in 1..=3u8 {
        let peers: Vec<&str> = swarm_addrs
            .iter()
            .flat_map(|p| ["--peer", p.as_str()])
            .collect();
        let spec = NodeSpec::new(
            dir,
            &format!("node{n}"),
            n + 1,
            &publish,
            &origin_addr,
            &peers,
        );
        let node = spec.start();
        swarm_addrs.push(node.ready.rsplit("swarm ").next().unwrap().trim().into());
        nodes.push(Some(node));
        specs.push(spec);
    }

    // Every node verifies the same catalog, over the swarm from the origin.
    for spec in &specs {
        wait_until("catalog v1 on every node", Duration::from_secs(30), || {
            spec.status()["catalog"]["version"] == 1
        });
    }

    // Node 1: everything from the origin.
    let (events, ok) = specs[0].install(&[APP]);
    assert!(ok, "{events:?}");
    let from = bytes_from(&events);
    assert!(from.contains("origin") && !from.contains("peer"), "{from}");
    assert!(http_ok(specs[0].ip, port));

    // The origin goes down for good.
    drop(origin);

    // Node 2 is killed in the middle of its download (from node 1), then restarted.
    let mut install = Command::new(ARCHY)
        .args(["app", "install", APP, "--json", "--data", &specs[1].d()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut partial = 0;
    for line in BufReader::new(install.stdout.take().unwrap()).lines() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let done = e["bytes_done"].as_u64().unwrap_or(0);
        // Far enough in that the store has recorded the partial blob (its metadata is
        // committed in batches of up to 500 ms), not so far that it is done.
        if e["stage"] == "fetch" && done >= size / 4 && done < size {
            partial = done;
            break;
        }
        assert_ne!(
            e["stage"], "verify",
            "the download ended before it could be cut"
        );
    }
    assert!(partial > 0, "no progress seen during the download");
    let addr_before = fs::read_to_string(specs[1].data.join("swarm.addr")).unwrap();
    nodes[1] = None; // SIGKILL
    let _ = install.kill();
    let _ = install.wait();
    nodes[1] = Some(specs[1].start());
    assert_eq!(
        fs::read_to_string(specs[1].data.join("swarm.addr")).unwrap(),
        addr_before,
        "a restarted node keeps its swarm address, which node 3 was given"
    );
    wait_until(
        "node 2 running the app after its restart",
        Duration::from_secs(90),
        || {
            let out = archy(&["app", "status", APP, "--json", "--data", &specs[1].d()]);
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["phase"]
                    == "running"
        },
    );
    let resumed = specs[1].metric("archy_fetch_resumed_bytes_total");
    let from_peers = specs[1].metric("archy_fetched_bytes_total{source=\"peer\"}");
    let from_origin = specs[1].metric("archy_fetched_bytes_total{source=\"origin\"}");
    let from_dir = specs[1].metric("archy_fetched_bytes_total{source=\"publish_dir\"}");
    assert!(
        resumed > 0,
        "the restarted node kept what it had verified (killed at {partial} B)"
    );
    assert_eq!(from_origin + from_dir, 0, "the origin is down");
    assert!(
        from_peers + resumed <= size + (1 << 20),
        "verified ranges were fetched again: {from_peers} B from peers + {resumed} B kept, size {size}"
    );
    assert!(http_ok(specs[1].ip, port));

    // Node 3, with the origin still down: every byte from peers.
    // What nodes 1 and 2 have served so far (node 1 served node 2 already).
    let served = || -> u64 {
        specs[..2]
            .iter()
            .map(|s| s.status()["swarm"]["served_bytes"].as_u64().unwrap_or(0))
            .sum()
    };
    let served_before = served();
    let (events, ok) = specs[2].install(&[APP]);
    assert!(ok, "{events:?}");
    let from = bytes_from(&events);
    assert!(from.contains("peer") && !from.contains("origin"), "{from}");

    // The app answers on every node, each on its own address.
    for spec in &specs {
        assert!(http_ok(spec.ip, port), "{:?}", spec.ip);
    }
    let statuses: Vec<_> = specs.iter().map(NodeSpec::status).collect();
    for st in &statuses {
        assert_eq!(st["catalog"]["version"], 1, "{st}");
        assert!(
            st["swarm"]["blobs_held"].as_u64() >= Some(1),
            "seeds what it holds: {st}"
        );
    }
    let node3_from_peers = statuses[2]["swarm"]["fetched_bytes"]["peer"]
        .as_u64()
        .unwrap_or(0);
    assert!(node3_from_peers >= size / 2, "{}", statuses[2]);
    // What node 3 got from peers, nodes 1 and 2 served: their counters grew by at least
    // that much (counted as their transfers end, so allow them a moment).
    wait_until(
        &format!("nodes 1 and 2 count the {node3_from_peers} B node 3 got from peers"),
        Duration::from_secs(10),
        || served() - served_before >= node3_from_peers,
    );
}

/// A third-party developer publishes to a local relay; the operator finds the app with
/// its trust score and installs it on node 1 (refused while unverified unless allowed).
fn marketplace_app_installs_with_its_score(dir: &Path, node: &NodeSpec, bootstrap: &str) {
    let relay = common::start(
        &[
            "relay".into(),
            "run".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data".into(),
            s(&dir.join("relay")),
        ],
        "relay listening on ",
    );
    let url = relay
        .ready
        .trim_start_matches("relay listening on ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let dev = dir.join("developer");
    fs::create_dir_all(dev.join("rootfs/bin")).unwrap();
    fs::create_dir_all(dev.join("rootfs/www")).unwrap();
    fs::copy("/bin/busybox", dev.join("rootfs/bin/busybox")).unwrap();
    fs::write(dev.join("rootfs/www/index.html"), "third party").unwrap();
    oci::pack_rootfs(
        &dev.join("rootfs"),
        &dev.join("notes.oci.tar"),
        &oci::PackOptions::default(),
    )
    .unwrap();
    let (image_hash, _) = oci::hash_file(&dev.join("notes.oci.tar")).unwrap();
    let port = free_port();
    fs::write(
        dev.join("notes.yaml"),
        format!("app:\n  id: net.thirdparty.notes\n  name: Notes\n  version: 0.3.0\n  description: {{short: notes}}\n  container:\n    image: ./notes.oci.tar\n    cmd: [/bin/busybox, httpd, -f, -p, '8081', -h, /www]\n    ports: [{{host: {port}, container: 8081}}]\n  health_check: {{type: http, port: 8081, path: /}}\n"),
    )
    .unwrap();
    // The developer seeds the image into the swarm, announced in the DHT, and names the
    // seed as its provider.
    let seed = common::start(
        &[
            "seed".into(),
            "--data".into(),
            s(&dev.join("seed")),
            "--import".into(),
            s(&dev.join("notes.oci.tar")),
            "--dht-listen".into(),
            "127.0.0.1:0".into(),
            "--bootstrap".into(),
            bootstrap.into(),
            "--json".into(),
        ],
        "{",
    );
    let seeded: serde_json::Value = serde_json::from_str(&seed.ready).unwrap();
    assert_eq!(seeded["blobs"][0], image_hash.to_string(), "{seeded}");
    let provider = seeded["addr"].as_str().unwrap().split('@').next().unwrap();
    let key = s(&dev.join("developer.nsec"));
    archy_ok(&["key", "new", "--out", &key, "--json"]);
    let published: serde_json::Value = serde_json::from_str(&archy_ok(&[
        "app",
        "publish",
        &s(&dev.join("notes.yaml")),
        "--key",
        &key,
        "--relay",
        &url,
        "--provider",
        provider,
        "--json",
    ]))
    .unwrap();
    let handle = published["handle"].as_str().unwrap().to_string();
    let op = s(&dir.join("operator.nsec"));
    let me: serde_json::Value =
        serde_json::from_str(&archy_ok(&["key", "new", "--out", &op, "--json"])).unwrap();
    let me = me["npub"].as_str().unwrap();

    let found: serde_json::Value = serde_json::from_str(&archy_ok(&[
        "market", "search", "notes", "--relay", &url, "--me", me, "--json",
    ]))
    .unwrap();
    let hit = found["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["handle"] == handle.as_str())
        .unwrap_or_else(|| panic!("{handle} not found: {found}"));
    assert!(hit["trust"]["score"].is_number(), "{hit}");
    assert_eq!(hit["trust"]["tier"], "unverified", "{hit}");

    let market = ["--relay", &url, "--me", me, "--yes"];
    let refused = archy(
        &[
            &["app", "install", &handle, "--data", &node.d()][..],
            &market[..],
        ]
        .concat(),
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("trust score") && stderr.contains("--allow-unverified"),
        "{stderr}"
    );
    let (events, ok) =
        node.install(&[&[handle.as_str()][..], &market[..], &["--allow-unverified"]].concat());
    assert!(ok, "{events:?}");
    // The node found the developer's seed in the DHT and got the image from it,
    // verified against the announced hash.
    let from = bytes_from(&events);
    assert!(
        from.contains(&format!("peer {}", &provider[..8])),
        "from the seed: {from}"
    );
    assert!(http_ok(node.ip, port));
}

/// DHT membership in the daemon: two nodes that know only the origin's DHT address (no
/// `--peer`) find each other as holders: the second gets image bytes from the first.
/// Then the marketplace: a third-party app whose image only the developer's seed holds.
/// Last, with the origin gone, a new node that knows one node's DHT address gets the
/// catalog from the head servers the DHT names; and once every DHT member is gone, a
/// node restarted with its saved head announces itself at start, so a newcomer finds it.
#[test]
fn dht_discovery_and_a_marketplace_app_from_its_seed() {
    let Some((tmp, port, publish)) = setup() else {
        return;
    };
    let dir = tmp.path();
    let (origin, origin_addr) = start_origin(dir, &publish, &["--dht-listen", "127.0.0.1:0"]);
    let bootstrap = fs::read_to_string(dir.join("origin/origin.json")).unwrap();
    let bootstrap: serde_json::Value = serde_json::from_str(&bootstrap).unwrap();
    let bootstrap = bootstrap["dht"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no DHT address in origin.json: {bootstrap}"))
        .to_string();
    let _cleanup = ProcessCleanup(["a", "b", "c", "d"].map(|n| dir.join(n)).to_vec());
    let dht = ["--dht-listen", "127.0.0.1:0", "--bootstrap", &bootstrap];
    let specs: Vec<NodeSpec> = [("a", 5u8), ("b", 6)]
        .into_iter()
        .map(|(name, octet)| NodeSpec::new(dir, name, octet, &publish, &origin_addr, &dht))
        .collect();
    let nodes: Vec<Proc> = specs.iter().map(NodeSpec::start).collect();
    for spec in &specs {
        wait_until("catalog v1", Duration::from_secs(30), || {
            spec.status()["catalog"]["version"] == 1
        });
    }
    let (events, ok) = specs[0].install(&[APP]);
    assert!(ok, "{events:?}");
    let (events, ok) = specs[1].install(&[APP]);
    assert!(ok, "{events:?}");
    let from = bytes_from(&events);
    assert!(from.contains("peer"), "b found a through the DHT: {from}");
    assert!(specs[1].metric("archy_fetched_bytes_total{source=\"peer\"}") > 0);
    assert!(http_ok(specs[1].ip, port));

    marketplace_app_installs_with_its_score(dir, &specs[0], &bootstrap);

    let a = specs[0].status();
    assert!(
        a["swarm"]["dht_peers"].as_u64() >= Some(2),
        "a knows the origin, b and the seed in the DHT: {a}"
    );
    drop(origin);
    let a_dht = a["swarm"]["dht"][0].as_str().unwrap().to_string();
    let newcomer = |name: &str, octet: u8, what: &str| {
        let spec = NodeSpec::new(
            dir,
            name,
            octet,
            &publish,
            &origin_addr,
            &["--dht-listen", "127.0.0.1:0", "--bootstrap", &a_dht],
        );
        let proc = spec.start();
        wait_until(what, Duration::from_secs(40), || {
            spec.status()["catalog"]["version"] == 1
        });
        (spec.status(), proc)
    };
    let (status, c_proc) = newcomer("c", 7, "c's catalog from a DHT head server");
    let source = status["catalog"]["source"].as_str().unwrap();
    assert!(source.starts_with("peer "), "the origin is down: {status}");
    let servers = status["swarm"]["head_servers"].as_array().unwrap();
    assert!(
        servers
            .iter()
            .any(|s| source.ends_with(s.as_str().unwrap())),
        "the head came from a server the DHT named: {status}"
    );

    // Every DHT member stops, and their records go with them (the DHT keeps records in
    // memory). a restarts with the origin still down: it serves its saved head, and
    // only its announcement at start can make it a head server.
    drop(c_proc);
    drop(nodes);
    let _a = specs[0].start();
    wait_until("a back on its saved head", Duration::from_secs(30), || {
        specs[0].status()["catalog"]["version"] == 1
    });
    let a_addr = specs[0].status()["swarm"]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _d) = newcomer("d", 8, "d's catalog from a, announced at its start");
    assert_eq!(
        status["catalog"]["source"],
        format!("peer {a_addr}"),
        "{status}"
    );
}
