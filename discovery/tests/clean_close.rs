//! A client that is done with its relays closes each websocket with a close
//! handshake, on every path, instead of dropping it: a relay logs every dropped
//! connection as an error (`Connection reset without closing handshake`).
//!
//! Each client step runs on its own tokio runtime that is dropped as soon as the step
//! returns, exactly as the `archy` CLI runs a command; the relay (an in-process
//! `LocalRelay` on 127.0.0.1) runs on another runtime and its log is captured.
#![allow(clippy::unwrap_used)]

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use archy_catalog::{
    manifest::{parse_and_validate, ManifestFormat},
    oci::ArchiveFormat,
    ContentHash, ImageRef,
};
use archy_discovery::{
    announcement::{announcement_builders, AnnouncementContent},
    client::{sync_market, RelaySet, SyncOptions},
};
use nostr_relay_builder::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Everything the process logs, kept in memory.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn content() -> AnnouncementContent {
    let hash = ContentHash::of(b"org.example.closing@1.0.0");
    let text = format!(
        "app:\n  id: org.example.closing\n  name: Closing\n  version: 1.0.0\n  \
         description: {{ short: \"Closes cleanly\" }}\n  container:\n    image: \"{hash}\"\n"
    );
    AnnouncementContent {
        manifest: parse_and_validate(&text, ManifestFormat::Yaml).unwrap(),
        image: ImageRef {
            hash,
            size: 42,
            config_digest: format!("sha256:{}", "cd".repeat(32)),
            format: ArchiveFormat::OciArchive,
            web_seeds: Vec::new(),
        },
        providers: vec![],
    }
}

/// Runs one client step the way the CLI does: on a fresh runtime, dropped at once.
fn as_a_command<T>(step: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(step)
}

#[test]
fn publish_and_search_close_their_connections_with_a_handshake() {
    let _watchdog = archy_harness::watchdog(Duration::from_secs(180));
    let log = CapturedLog::default();
    tracing_subscriber::fmt()
        .with_env_filter("nostr_relay_builder=debug")
        .with_writer(log.clone())
        .with_ansi(false)
        .init();
    let relay_runtime = tokio::runtime::Runtime::new().unwrap();
    let relay = relay_runtime.block_on(async {
        let relay = LocalRelay::new(RelayBuilder::default().addr("127.0.0.1".parse().unwrap()));
        relay.run().await.unwrap();
        relay
    });
    let url = relay_runtime.block_on(relay.url()).to_string();
    let urls = vec![url];

    let dev = Keys::generate();
    let events: Vec<Event> = announcement_builders(&content(), None)
        .unwrap()
        .into_iter()
        .map(|b| b.sign_with_keys(&dev).unwrap())
        .collect();
    as_a_command(async {
        let relays = RelaySet::connect(&urls, TIMEOUT).await.unwrap();
        for e in &events {
            assert!(relays.publish(e).await.iter().all(|r| r.accepted()));
        }
        relays.shutdown().await;
    });
    let found = as_a_command(async {
        sync_market(&SyncOptions {
            relays: urls.clone(),
            operator: None,
            timeout: TIMEOUT,
        })
        .await
        .unwrap()
    });
    assert_eq!(found.view.apps().len(), 1);

    // Wait (bounded) until the relay has seen both connections end.
    let count = |what: &str| log.text().matches(what).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("WebSocket connection terminated") < 2
        || count("WebSocket connection established") > count("WebSocket connection terminated")
    {
        assert!(
            Instant::now() < deadline,
            "the relay did not see the connections end:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = log.text();
    assert!(
        !text.contains("without closing handshake"),
        "a client dropped its connection without closing it:\n{text}"
    );
    assert!(!text.contains("ERROR"), "the relay logged errors:\n{text}");
    relay.shutdown();
}
