//! The CLI's side of the local API: talks to the daemon over the Unix socket
//! `<data>/api.sock` (mode 0600), authenticated with `<data>/api.token`. Nothing of this
//! goes over TCP: a local user who binds the daemon's old TCP port while it is down gets
//! no request and no token (the TCP listener serves metrics and, later, the dashboard).
//!
//! The exchange is one HTTP/1.0 request per connection, so every answer ends when the
//! daemon closes the connection, the event stream included.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::mpsc,
    time::Duration,
};

use anyhow::Context;

use crate::executor::ProgressEvent;

/// A connection to one node's local API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    token: String,
}

/// An answer's status and the reader positioned at its body.
struct Answer {
    status: u16,
    body: BufReader<UnixStream>,
}

impl ApiClient {
    /// Finds the daemon's socket and token in `data`.
    pub fn from_data_dir(data: &Path) -> anyhow::Result<Self> {
        let socket = data.join("api.sock");
        anyhow::ensure!(
            socket.exists(),
            "no daemon found for {} (is `archy node run --data {}` running?)",
            data.display(),
            data.display()
        );
        let token = std::fs::read_to_string(data.join("api.token"))
            .with_context(|| format!("cannot read {}", data.join("api.token").display()))?;
        Ok(Self {
            socket,
            token: token.trim().to_string(),
        })
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Answer> {
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "cannot reach the daemon at {} (is it running?)",
                self.socket.display()
            )
        })?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        // One write: the daemon reads the request, body included, in one piece, so it
        // never closes the connection with request bytes unread (which resets it).
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: archy\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .with_context(|| format!("the daemon answered {:?}, not HTTP", line.trim()))?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
        }
        Ok(Answer {
            status,
            body: reader,
        })
    }

    /// A request whose whole answer is read; an error status becomes the daemon's
    /// `error` message.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<String> {
        let mut answer = self.send(method, path, body, Some(Duration::from_secs(60)))?;
        let mut text = String::new();
        answer.body.read_to_string(&mut text)?;
        if answer.status >= 400 {
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            anyhow::bail!("{msg} (HTTP {})", answer.status)
        }
        Ok(text)
    }

    pub fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.call("GET", path, None)?)?)
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.call(
            "POST",
            path,
            Some(body),
        )?)?)
    }

    /// Subscribes to the event stream; events arrive on the returned channel.
    pub fn events(&self) -> anyhow::Result<mpsc::Receiver<ProgressEvent>> {
        let answer = self
            .send("GET", "/v1/events", None, None)
            .context("cannot subscribe to events")?;
        anyhow::ensure!(
            answer.status < 400,
            "cannot subscribe to events (HTTP {})",
            answer.status
        );
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in answer.body.lines().map_while(Result::ok) {
                if let Some(data) = line.strip_prefix("data:") {
                    if let Ok(e) = serde_json::from_str::<ProgressEvent>(data.trim()) {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}
