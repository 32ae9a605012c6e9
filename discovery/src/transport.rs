//! A websocket transport that counts its open connections, so a client can wait for
//! their close handshakes before it lets go of the runtime.
//!
//! nostr-sdk's `Client::shutdown` only asks each relay's connection task to stop; the
//! task sends the websocket close frame a moment later. A command that returns at
//! once drops its runtime first, the task dies with it, and the relay sees the TCP
//! connection reset without a closing handshake (and logs it as an error). With this
//! transport, [`RelaySet::shutdown`](crate::client::RelaySet::shutdown) waits,
//! bounded, until every connection's sink has been closed and dropped.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use nostr_sdk::{
    async_utility::futures_util::Sink,
    nostr::{util::BoxedFuture, Url},
    pool::{
        transport::{
            error::TransportError,
            websocket::{
                DefaultWebsocketTransport, WebSocketSink, WebSocketStream, WebSocketTransport,
            },
        },
        ConnectionMode,
    },
};
use tokio::sync::watch;

/// The default websocket transport, plus a count of the connections still open.
#[derive(Debug, Clone)]
pub(crate) struct CountingTransport {
    open: watch::Sender<usize>,
}

impl CountingTransport {
    pub(crate) fn new() -> Self {
        Self {
            open: watch::Sender::new(0),
        }
    }

    /// Waits until no connection is open, at most `within`; says whether they all
    /// closed in time.
    pub(crate) async fn all_closed(&self, within: Duration) -> bool {
        let mut open = self.open.subscribe();
        let closed = tokio::time::timeout(within, open.wait_for(|n| *n == 0)).await;
        matches!(closed, Ok(Ok(_)))
    }
}

impl WebSocketTransport for CountingTransport {
    fn support_ping(&self) -> bool {
        DefaultWebsocketTransport.support_ping()
    }

    fn connect<'a>(
        &'a self,
        url: &'a Url,
        mode: &'a ConnectionMode,
        timeout: Duration,
    ) -> BoxedFuture<'a, Result<(WebSocketSink, WebSocketStream), TransportError>> {
        Box::pin(async move {
            let (sink, stream) = DefaultWebsocketTransport
                .connect(url, mode, timeout)
                .await?;
            self.open.send_modify(|n| *n += 1);
            let sink: WebSocketSink = Box::new(CountedSink {
                inner: sink,
                open: self.open.clone(),
            });
            Ok((sink, stream))
        })
    }
}

/// The sending half of one connection; the relay's connection task closes it (the
/// close frame) and then drops it, which is when the connection counts as closed.
/// Generic over the boxed sink so it delegates to the trait object itself.
struct CountedSink<S: ?Sized> {
    inner: Box<S>,
    open: watch::Sender<usize>,
}

impl<S: ?Sized> Drop for CountedSink<S> {
    fn drop(&mut self) {
        self.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl<S, M> Sink<M> for CountedSink<S>
where
    S: Sink<M, Error = TransportError> + Unpin + ?Sized,
{
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut *self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: M) -> Result<(), Self::Error> {
        Pin::new(&mut *self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut *self.inner).poll_close(cx)
    }
}
