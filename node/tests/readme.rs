//! The README as a new user reads it: its first lines are the demo and the test command
//! CI runs, and every `archy`, `archy-registry` and `catalog-signer` command in its
//! shell blocks (and in docs/operations.md's) is accepted by that binary's argument
//! parser as written. Placeholders
//! (`ADDR`, `DHT`, `npub1...`, `blake3:<hex>`) become well-formed values and system
//! paths move into a temporary directory; a command may then fail for want of a daemon
//! or a file, but never with a usage error (clap exits 2 and prints `Usage:`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn readme() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap()
}

/// The command lines of every ```sh block, continuation lines joined, comments and a
/// trailing `&` removed.
fn shell_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in text.lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            _ if in_block => {
                let code = line.split(" #").next().unwrap_or("").trim_end();
                if let Some(head) = code.strip_suffix('\\') {
                    pending.push_str(head);
                    continue;
                }
                pending.push_str(code);
                let command = pending.trim().trim_end_matches('&').trim().to_string();
                pending.clear();
                if !command.is_empty() {
                    commands.push(command);
                }
            }
            _ => {}
        }
    }
    commands
}

/// Well-formed stand-ins for the README's placeholders, and system paths moved under
/// `tmp`. A token `a|b|c` stands for three commands; `[--flag]` is given.
fn concrete(args: &[&str], tmp: &Path, npub: &str) -> Vec<Vec<String>> {
    let peer = archy_registry::PeerAddr {
        id: *iroh::SecretKey::from_bytes(&[7; 32]).public().as_bytes(),
        socket: ([127, 0, 0, 1], 9).into(),
    };
    const DHT: &str =
        "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWCfK5JmuWcm38zw1Q1sQ3o3Y5ZCHmVxwemEV6Mm5Dq1dx";
    let mut variants: Vec<Vec<String>> = vec![Vec::new()];
    for arg in args {
        let arg = match *arg {
            "ADDR" => peer.to_string(),
            "DHT" => DHT.to_string(),
            "TICKET" => archy_registry::ticket::JoinTicket {
                origin: peer.clone(),
                dht: vec![DHT.parse().unwrap()],
                relays: Vec::new(),
                root: archy_catalog::ContentHash::of(b"root.json"),
            }
            .to_string(),
            a if a.starts_with("blake3:<") => format!("blake3:{}", "ab".repeat(32)),
            a if ["/var/", "/srv/", "/etc/"].iter().any(|p| a.starts_with(p)) => {
                tmp.join(a.trim_start_matches('/')).display().to_string()
            }
            // `[--purge]`: an optional part, given.
            a => a.replace("npub1...", npub).replace(['[', ']'], ""),
        };
        let choices: Vec<&str> = if arg.contains('|') && !arg.contains("://") {
            arg.split('|').collect()
        } else {
            vec![arg.as_str()]
        };
        variants = variants
            .into_iter()
            .flat_map(|v| {
                choices.iter().map(move |c| {
                    let mut v = v.clone();
                    v.push(c.to_string());
                    v
                })
            })
            .collect();
    }
    variants
}

/// The binary a README command names, built next to `archy` by `cargo test --workspace`.
fn binary(name: &str) -> PathBuf {
    let archy = PathBuf::from(env!("CARGO_BIN_EXE_archy"));
    let path = archy.with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built; `cargo test --workspace` builds it (or `cargo build -p {name}`)",
        path.display()
    );
    path
}

/// Runs it for at most `limit` (a server keeps running: that is a parsed command too);
/// its exit code, if it exited, and its stderr.
fn run(program: &Path, args: &[String], tmp: &Path, limit: Duration) -> (Option<i32>, String) {
    let err = tmp.join("stderr");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(tmp)
        .env("ARCHY_DATA", tmp.join("var/lib/archy"))
        .env_remove("ARCHY_RELAYS")
        .env_remove("ARCHY_ME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&err).unwrap_or_default())
}

#[test]
fn the_first_lines_are_the_demo_and_the_command_ci_runs() {
    let text = readme();
    let first = shell_commands(&text);
    let (demo, tests) = (&first[0], &first[1]);
    assert!(demo.ends_with("-- demo --once"), "{demo}");
    let test_command = tests.rsplit("&& ").next().unwrap();
    assert!(
        test_command.starts_with("cargo test --workspace"),
        "{tests}"
    );
    let ci = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim().starts_with(test_command)),
        ".ci/run must call the README's test command `{test_command}`"
    );
}

#[test]
fn every_command_in_the_readme_parses_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let npub =
        nostr_sdk::prelude::ToBech32::to_bech32(&nostr_sdk::Keys::generate().public_key()).unwrap();
    let mut checked = 0;
    let operations = std::fs::read_to_string(Path::new(ROOT).join("docs/operations.md")).unwrap();
    for command in shell_commands(&readme())
        .into_iter()
        .chain(shell_commands(&operations))
    {
        let words: Vec<&str> = command.split_whitespace().collect();
        let program = match words[0] {
            "archy" => PathBuf::from(env!("CARGO_BIN_EXE_archy")),
            "archy-registry" => binary("archy-registry"),
            "$S" => binary("catalog-signer"),
            _ => continue, // cargo, apt-get, shell loops and variables
        };
        for args in concrete(&words[1..], tmp.path(), &npub) {
            let (code, stderr) = run(&program, &args, tmp.path(), Duration::from_secs(3));
            assert!(
                !(code == Some(2)
                    && (stderr.contains("Usage:") || stderr.contains("error: invalid value"))),
                "the documented `{command}` is refused by the argument parser:\n{stderr}"
            );
            checked += 1;
        }
    }
    // The tour has about thirty commands: a parser that found none proves nothing.
    assert!(
        checked >= 25,
        "only {checked} documented commands were found"
    );
}

#[test]
fn a_wrong_command_is_caught() {
    // The check itself: the README's old `app pack ... --cmd` form is a usage error.
    let tmp = tempfile::tempdir().unwrap();
    let args: Vec<String> = "app pack rootfs/ --out hello.oci.tar --cmd /bin/busybox httpd -f"
        .split(' ')
        .map(String::from)
        .collect();
    let (code, stderr) = run(
        Path::new(env!("CARGO_BIN_EXE_archy")),
        &args,
        tmp.path(),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("Usage:"), "{stderr}");
}
