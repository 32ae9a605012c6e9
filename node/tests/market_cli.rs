//! The marketplace commands as a developer and an operator run them: the built `archy`
//! binary, `archy relay run` relay processes on 127.0.0.1, a real OCI archive.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use archy_discovery::client::RelaySet;
use common::{archy, Proc};
use nostr_sdk::prelude::*;
use serde_json::Value;

mod common;

/// An `archy relay run` process, killed on drop.
struct RelayProcess {
    _proc: Proc,
    url: String,
}

impl RelayProcess {
    fn start(data: Option<&Path>) -> Self {
        let mut args: Vec<String> = ["relay", "run", "--listen", "127.0.0.1:0"]
            .map(String::from)
            .into();
        if let Some(d) = data {
            args.extend(["--data".into(), d.to_string_lossy().into_owned()]);
        }
        let proc = common::start(&args, "relay listening on ws://127.0.0.1:");
        let url = proc.ready.split_whitespace().nth(3).unwrap().to_string();
        Self { _proc: proc, url }
    }
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "archy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An endpoint id that no node has.
const UNSERVED: &str = "abababababababababababababababababababababababababababababababab";

/// A developer's working directory: a packed image, a manifest, a key.
struct Project {
    /// Kept so the directory lives as long as the project.
    _dir: tempfile::TempDir,
    npub: String,
    key: PathBuf,
    manifest: PathBuf,
}

impl Project {
    fn new(app_id: &str, name: &str, version: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("{app_id} {version}")).unwrap();
        let image = dir.path().join("image.oci.tar");
        let packed = archy(&[
            "app",
            "pack",
            root.to_str().unwrap(),
            "--out",
            image.to_str().unwrap(),
        ]);
        assert!(packed.status.success());
        let manifest = dir.path().join("app.yaml");
        std::fs::write(
            &manifest,
            format!(
                "app:\n  id: {app_id}\n  name: {name}\n  version: {version}\n  category: tools\n  \
                 description: {{ short: \"Demo app\" }}\n  container:\n    image: ./image.oci.tar\n"
            ),
        )
        .unwrap();
        let key = dir.path().join("dev.nsec");
        let out = archy(&["key", "new", "--out", key.to_str().unwrap(), "--json"]);
        let npub = json_of(&out)["npub"].as_str().unwrap().to_string();
        Self {
            _dir: dir,
            npub,
            key,
            manifest,
        }
    }

    fn publish(&self, relays: &[&str]) -> Output {
        self.publish_with(&self.key, relays)
    }

    /// Publishes naming a provider no node is (these tests read the marketplace only).
    fn publish_with(&self, key: &Path, relays: &[&str]) -> Output {
        let mut args = vec![
            "app",
            "publish",
            self.manifest.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--provider",
            UNSERVED,
            "--timeout",
            "3",
            "--json",
        ];
        for r in relays {
            args.extend(["--relay", r]);
        }
        archy(&args)
    }
}

fn search(relays: &[&str], me: Option<&str>, words: &[&str]) -> Value {
    let mut args = vec!["market", "search", "--json", "--timeout", "3"];
    args.extend(words);
    for r in relays {
        args.extend(["--relay", r]);
    }
    if let Some(me) = me {
        args.extend(["--me", me]);
    }
    json_of(&archy(&args))
}

#[test]
fn key_files_are_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.nsec");
    let out = archy(&["key", "new", "--out", key.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("npub1"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&key).unwrap();
    let again = archy(&["key", "new", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn publish_search_show_across_relay_processes() {
    let (r1, r2) = (RelayProcess::start(None), RelayProcess::start(None));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("ws://{dead}");
    let friend = Project::new("org.example.pad", "Pad", "1.0.0");
    let stranger = Project::new("org.example.pad", "Pad", "6.6.6");

    // Publish to two live relays and a dead one: reported per relay, still a success.
    let out = json_of(&friend.publish(&[&r1.url, &r2.url, &dead]));
    assert_eq!(out["accepted_by"].as_array().unwrap().len(), 2, "{out}");
    let failed: Vec<&Value> = out["relays"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["accepted"] == false)
        .collect();
    assert_eq!(failed.len(), 2, "app + release refused by the dead relay");
    assert!(failed
        .iter()
        .all(|r| r["url"].as_str().unwrap().starts_with(&dead)));
    assert!(out["image"]["hash"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));
    json_of(&stranger.publish(&[&r1.url]));

    // The operator follows `friend`.
    let me = Keys::generate();
    let friend_key = PublicKey::parse(&friend.npub).unwrap();
    follow(&r1.url, &me, &[friend_key]);
    follow(&r2.url, &me, &[friend_key]);
    let me_npub = me.public_key().to_bech32().unwrap();

    let found = search(&[&r1.url, &r2.url], Some(&me_npub), &["pad"]);
    let apps = found["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 2, "same id, two developers, two apps: {found}");
    assert_eq!(
        apps[0]["developer"],
        friend.npub.as_str(),
        "followed developer first"
    );
    assert_eq!(apps[0]["trust"]["tier"], "verified");
    assert_eq!(apps[0]["trust"]["score"], 54, "{}", apps[0]["trust"]);
    assert_eq!(apps[1]["developer"], stranger.npub.as_str());
    assert_eq!(apps[1]["trust"]["tier"], "unverified");
    for a in apps {
        assert!(a["warnings"][0]
            .as_str()
            .unwrap()
            .contains("also announced by another developer"));
    }

    // Installing the stranger's app shows the collision before anything is decided
    // (here it is then refused as unverified; no daemon is needed to get that far).
    let data = tempfile::tempdir().unwrap();
    let stranger_handle = format!("{}/org.example.pad", stranger.npub);
    let install = archy(&[
        "app",
        "install",
        &stranger_handle,
        "--relay",
        &r1.url,
        "--me",
        &me_npub,
        "--data",
        data.path().to_str().unwrap(),
        "--yes",
    ]);
    let said = String::from_utf8_lossy(&install.stderr);
    assert!(!install.status.success(), "{said}");
    assert!(
        said.contains("warning: app id org.example.pad is also announced by another developer"),
        "{said}"
    );
    assert!(said.contains("unverified"), "{said}");

    // `show` by handle; a wrong handle exits 1.
    let handle = format!("{}/org.example.pad", friend.npub);
    let shown = json_of(&archy(&[
        "market",
        "show",
        &handle,
        "--relay",
        &r2.url,
        "--json",
        "--timeout",
        "3",
    ]));
    assert_eq!(shown["apps"][0]["version"], "1.0.0");
    let missing = archy(&[
        "market",
        "show",
        &format!("{}/org.example.nope", friend.npub),
        "--relay",
        &r2.url,
        "--timeout",
        "3",
    ]);
    assert_eq!(missing.status.code(), Some(1));

    // One relay down: results from the other, and the failure reported.
    drop(r2);
    let partial = search(&[&r1.url, &dead], Some(&me_npub), &[]);
    assert_eq!(partial["apps"].as_array().unwrap().len(), 2);
    let reports = partial["relays"].as_array().unwrap();
    assert!(reports
        .iter()
        .any(|r| r["ok"] == false && r["url"].as_str().unwrap().starts_with(&dead)));
}

/// Publishes a contact list: `who` follows `whom`.
fn follow(relay: &str, who: &Keys, whom: &[PublicKey]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let relays = RelaySet::connect(&[relay.to_string()], Duration::from_secs(3))
            .await
            .unwrap();
        let list = EventBuilder::contact_list(whom.iter().map(|k| Contact::new(*k)))
            .sign_with_keys(who)
            .unwrap();
        assert!(relays.publish(&list).await.iter().all(|r| r.accepted()));
        relays.shutdown().await;
    });
}

fn new_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = archy(&["key", "new", "--out", path.to_str().unwrap(), "--json"]);
    (path, json_of(&out)["npub"].as_str().unwrap().to_string())
}

#[test]
fn endorse_report_and_retract_from_the_command_line() {
    let relay = RelayProcess::start(None);
    let dev = Project::new("org.example.opinions", "Opinions", "1.0.0");
    json_of(&dev.publish(&[&relay.url]));
    let dir = tempfile::tempdir().unwrap();
    let (op_key, op) = new_key(dir.path(), "op.nsec");
    let handle = format!("{}/org.example.opinions", dev.npub);
    let trust = || search(&[&relay.url], Some(&op), &[])["apps"][0]["trust"].clone();
    assert_eq!(
        (trust()["score"].clone(), trust()["tier"].clone()),
        (2.into(), "unverified".into())
    );

    let say = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--key",
            op_key.to_str().unwrap(),
            "--relay",
            &relay.url,
            "--json",
        ]);
        json_of(&archy(&all))
    };
    // The operator's own endorsement counts: +15, community.
    say(&["market", "endorse", &handle]);
    let t = trust();
    assert_eq!(
        (t["score"].clone(), t["tier"].clone()),
        (17.into(), "community".into()),
        "{t}"
    );
    // The operator's report: -40, unverified, with the reason shown.
    say(&["market", "report", &handle, "--reason", "malware"]);
    let t = trust();
    assert_eq!(
        (t["score"].clone(), t["tier"].clone()),
        ((-23).into(), "unverified".into()),
        "{t}"
    );
    assert!(t["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["text"] == "reported by 1 person you trust (malware)"));

    // The developer withdraws the app: it disappears; a second retract finds nothing.
    let retract = |key: &Path| {
        archy(&[
            "app",
            "retract",
            "org.example.opinions",
            "--key",
            key.to_str().unwrap(),
            "--relay",
            &relay.url,
            "--json",
        ])
    };
    let out = json_of(&retract(&dev.key));
    assert_eq!(out["accepted_by"].as_array().unwrap().len(), 1, "{out}");
    assert!(search(&[&relay.url], Some(&op), &[])["apps"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(retract(&dev.key).status.code(), Some(1));
}

#[test]
fn key_rotation_carries_the_developers_standing() {
    let relay = RelayProcess::start(None);
    let dev = Project::new("org.example.rotated", "Rotated", "1.0.0");
    json_of(&dev.publish(&[&relay.url]));
    let me = Keys::generate();
    follow(&relay.url, &me, &[PublicKey::parse(&dev.npub).unwrap()]);
    let me_npub = me.public_key().to_bech32().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (new_secret, new_npub) = new_key(dir.path(), "new.nsec");
    let out = archy(&[
        "key",
        "rotate",
        "--to",
        &new_npub,
        "--key",
        dev.key.to_str().unwrap(),
        "--relay",
        &relay.url,
        "--json",
    ]);
    assert_eq!(json_of(&out)["new"], new_npub.as_str());
    let text = std::fs::read_to_string(&dev.manifest).unwrap();
    std::fs::write(
        &dev.manifest,
        text.replace("version: 1.0.0", "version: 2.0.0"),
    )
    .unwrap();
    json_of(&dev.publish_with(&new_secret, &[&relay.url]));

    let found = search(&[&relay.url], Some(&me_npub), &["rotated"]);
    let apps = found["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1, "one app, not a collision: {found}");
    let app = &apps[0];
    assert_eq!(app["developer"], new_npub.as_str());
    assert_eq!(app["continues"], dev.npub.as_str());
    assert_eq!(app["version"], "2.0.0");
    assert_eq!(app["trust"]["tier"], "verified", "{}", app["trust"]);
    assert!(app["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn relay_with_data_dir_keeps_events_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let dev = Project::new("org.example.kept", "Kept", "1.0.0");
    {
        let relay = RelayProcess::start(Some(data.path()));
        json_of(&dev.publish(&[&relay.url]));
    }
    let relay = RelayProcess::start(Some(data.path()));
    let found = search(&[&relay.url], None, &["kept"]);
    assert_eq!(found["apps"].as_array().unwrap().len(), 1, "{found}");
}

#[test]
fn bad_input_is_refused_with_reasons() {
    let relay = RelayProcess::start(None);
    let dev = Project::new("org.example.bad", "Bad", "1.0.0");

    // A manifest that breaks the security policy names the field.
    let text = std::fs::read_to_string(&dev.manifest).unwrap();
    std::fs::write(
        &dev.manifest,
        text.replace("container:\n", "container:\n    privileged: true\n"),
    )
    .unwrap();
    let out = dev.publish(&[&relay.url]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("privileged"), "{err}");

    // A manifest naming another author key cannot be signed with this one.
    let someone = Keys::generate().public_key().to_bech32().unwrap();
    std::fs::write(
        &dev.manifest,
        text.replace(
            "  version: 1.0.0\n",
            &format!("  version: 1.0.0\n  author: {{ name: Someone, nostr_pubkey: {someone} }}\n"),
        ),
    )
    .unwrap();
    let out = dev.publish(&[&relay.url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nostr_pubkey"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A key file others can read is refused.
    std::fs::write(&dev.manifest, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dev.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dev.publish(&[&relay.url]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    // A bad provider id and a bad --me are refused before anything is sent.
    std::fs::set_permissions(&dev.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = archy(&[
        "app",
        "publish",
        dev.manifest.to_str().unwrap(),
        "--key",
        dev.key.to_str().unwrap(),
        "--relay",
        &relay.url,
        "--provider",
        "not-an-endpoint",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--provider"));
    let out = archy(&[
        "market",
        "search",
        "--relay",
        &relay.url,
        "--me",
        "npub1bogus",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--me"));
    // Nothing was published by the refused attempts.
    assert!(search(&[&relay.url], None, &[])["apps"]
        .as_array()
        .unwrap()
        .is_empty());
}
