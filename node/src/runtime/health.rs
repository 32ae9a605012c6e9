//! Health probes run from the node against an app's published port: an HTTP check is
//! one `GET` (on the HTTP client the CLI already uses) expecting a 2xx or 3xx status,
//! redirects not followed; a TCP check is a successful connect. A failed probe says
//! which of the two failed and how.

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    #[error("tcp {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("http {url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("http {url}: {reason}")]
    Transport { url: String, reason: String },
}

/// Connects to `addr` within `timeout`.
pub fn tcp(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeFailure> {
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| ProbeFailure::Connect {
            addr,
            reason: e.to_string(),
        })
}

/// `GET path` on `addr`; healthy on a 2xx or 3xx status.
pub fn http(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeFailure> {
    let url = format!("http://{addr}{path}");
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout(timeout)
        .redirects(0)
        .user_agent("archy-health")
        .build();
    match agent.get(&url).call() {
        Ok(response) if response.status() < 400 => Ok(()),
        Ok(response) => Err(ProbeFailure::Status {
            url,
            status: response.status(),
        }),
        Err(ureq::Error::Status(status, _)) => Err(ProbeFailure::Status { url, status }),
        Err(ureq::Error::Transport(t)) => Err(ProbeFailure::Transport {
            url,
            reason: t.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        io::{Read, Write},
        net::TcpListener,
    };

    #[test]
    fn http_probe_reads_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let answers = [
            "HTTP/1.0 200 OK\r\n\r\n",
            "HTTP/1.0 301 Moved\r\nLocation: /elsewhere\r\n\r\n",
            "HTTP/1.0 500 Oops\r\n\r\n",
            "garbage\r\n\r\n",
        ];
        let server = std::thread::spawn(move || {
            for body in answers {
                let (mut s, _) = l.accept().unwrap();
                // Read the whole request first: closing with unread bytes resets the
                // connection before the client sees the status.
                let mut req = Vec::new();
                let mut buf = [0u8; 256];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                s.write_all(body.as_bytes()).unwrap();
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(http(addr, "/", t), Ok(()));
        assert_eq!(http(addr, "/", t), Ok(()), "a redirect is an answer");
        let url = format!("http://{addr}/");
        assert_eq!(
            http(addr, "/", t),
            Err(ProbeFailure::Status { url, status: 500 })
        );
        assert!(matches!(
            http(addr, "/", t),
            Err(ProbeFailure::Transport { .. })
        ));
        server.join().unwrap();
        // Nobody listens any more.
        assert!(matches!(
            tcp(addr, Duration::from_millis(500)),
            Err(ProbeFailure::Connect { .. })
        ));
    }
}
