//! A minimal `GET /metrics` endpoint for the origin, so an operator's Prometheus sees
//! the served catalog's version and when its timestamp expires (an origin that stopped
//! re-signing shows up before every node freezes).
//!
//! The origin has no web server otherwise, and this answers one fixed page: requests
//! are read with a bounded header size and time, anything but `GET /metrics` gets 404.
//! The page holds nothing secret (versions and times any node can read from the head).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! archy_registry::metrics_http::serve(listener, || "# EOF\n".to_string()).await;
//! # Ok(()) }
//! ```

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The longest request head read.
const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request.
const REQUEST_TIME: Duration = Duration::from_secs(5);
/// The most requests answered at once.
const MAX_CONCURRENT: usize = 16;

/// Answers `GET /metrics` with `render()` (OpenMetrics text) until the task is dropped.
pub async fn serve<F>(listener: TcpListener, render: F)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // busy: the connection is dropped
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIME, answer(stream, &*render)).await;
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, render: &(dyn Fn() -> String + Send + Sync)) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST {
            let _ = stream
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
            // Close our side, then read (briefly, boundedly) what the client still
            // sends, so the answer is not lost to a reset.
            let _ = stream.shutdown().await;
            let mut drained = 0;
            let drain = async {
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    drained += n;
                    if drained > 64 << 10 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
            return;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let response = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
        let body = render();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn ask(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn only_the_metrics_page_is_served_and_requests_are_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(super::serve(listener, || "x 1\n# EOF\n".to_string()));
        let page = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(
            page.starts_with("HTTP/1.1 200") && page.ends_with("x 1\n# EOF\n"),
            "{page}"
        );
        let other = ask(addr, b"GET /api.token HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 10 << 10));
        let refused = ask(addr, &huge).await;
        assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
        server.abort();
    }
}
