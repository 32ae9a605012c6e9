//! A static web host on 127.0.0.1 for web-seed tests: the CDN or bucket a publisher
//! would upload archives to.
//!
//! It serves files from memory by path, honours a single `Range: bytes=A-B` (206), and
//! lets a test replace a file while it runs (a host that starts lying), switch ranges
//! off (a host that always sends the whole file), and see what it was asked.
//!
//! ```no_run
//! let host = archy_harness::web::StaticHost::start();
//! host.put("/blob", b"bytes".to_vec());
//! let url = host.url("/blob");
//! assert!(host.requests().is_empty());
//! # let _ = url;
//! ```

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

/// One request the host answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRequest {
    pub path: String,
    /// The byte range asked for (inclusive end, as HTTP writes it).
    pub range: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct HostState {
    files: Mutex<HashMap<String, Vec<u8>>>,
    requests: Mutex<Vec<HostRequest>>,
    ignore_ranges: AtomicBool,
}

/// The host; its thread lives as long as the test process.
#[derive(Debug)]
pub struct StaticHost {
    addr: SocketAddr,
    state: Arc<HostState>,
}

impl StaticHost {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(HostState::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || answer(stream, &state));
            }
        });
        Self { addr, state }
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `bytes` at `path` from now on.
    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        lock(&self.state.files).insert(path.to_string(), bytes);
    }

    /// Answers 404 at `path` from now on.
    pub fn remove(&self, path: &str) {
        lock(&self.state.files).remove(path);
    }

    /// With `true`, range requests get the whole file (200), as some hosts do.
    pub fn ignore_ranges(&self, ignore: bool) {
        self.state.ignore_ranges.store(ignore, Ordering::SeqCst);
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<HostRequest> {
        lock(&self.state.requests).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers the requests of one connection (keep-alive) until it closes.
fn answer(stream: TcpStream, state: &HostState) {
    let mut reader = BufReader::new(&stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("range") {
                    range = parse_range(value.trim());
                }
            }
        }
        lock(&state.requests).push(HostRequest {
            path: path.clone(),
            range,
        });
        let file = lock(&state.files).get(&path).cloned();
        let mut w = &stream;
        let written = match file {
            None => write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            Some(body) => match range.filter(|_| !state.ignore_ranges.load(Ordering::SeqCst)) {
                Some((a, _)) if a >= body.len() as u64 => write!(
                    w,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n"
                ),
                Some((a, b)) => {
                    let end = b.min(body.len() as u64 - 1);
                    let part = &body[a as usize..=end as usize];
                    write!(
                        w,
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{end}/{}\r\nContent-Length: {}\r\n\r\n",
                        body.len(),
                        part.len()
                    )
                    .and_then(|()| w.write_all(part))
                }
                None => write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .and_then(|()| w.write_all(&body)),
            },
        };
        if written.is_err() {
            return;
        }
    }
}

/// `bytes=A-B` (one range, both ends given).
fn parse_range(value: &str) -> Option<(u64, u64)> {
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}
