//! Health probes run from the node against an app's published port.
//!
//! Plain std sockets with timeouts: an HTTP check is one `GET` expecting a 2xx or 3xx
//! status, a TCP check a successful connect.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Healthy,
    Unhealthy(String),
}

/// Connects to `addr` within `timeout`.
pub fn tcp(addr: SocketAddr, timeout: Duration) -> Probe {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Probe::Healthy,
        Err(e) => Probe::Unhealthy(format!("tcp {addr}: {e}")),
    }
}

/// `GET path` on `addr`; healthy on a 2xx or 3xx status.
pub fn http(addr: SocketAddr, path: &str, timeout: Duration) -> Probe {
    let attempt = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: archy-health\r\n\r\n"
        )?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match attempt() {
        Ok(head) => {
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok());
            match code {
                Some(c) if (200..400).contains(&c) => Probe::Healthy,
                Some(c) => Probe::Unhealthy(format!("http {addr}{path}: status {c}")),
                None => Probe::Unhealthy(format!("http {addr}{path}: not an HTTP response")),
            }
        }
        Err(e) => Probe::Unhealthy(format!("http {addr}{path}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn http_probe_reads_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for body in ["HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.0 500 Oops\r\n\r\n"] {
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
        assert_eq!(http(addr, "/", Duration::from_secs(2)), Probe::Healthy);
        assert!(
            matches!(http(addr, "/", Duration::from_secs(2)), Probe::Unhealthy(m) if m.contains("500"))
        );
        server.join().unwrap();
        // Nobody listens any more.
        assert!(matches!(
            tcp(addr, Duration::from_millis(500)),
            Probe::Unhealthy(_)
        ));
    }
}
