//! Hostile peers for the tests and benchmarks that attack Archy's network inputs: a
//! Nostr relay that answers every subscription with whatever frames a script gives it
//! (forged events, garbage, floods), and a libp2p Kademlia peer that can put any record
//! or provider record to a victim. Both bind to 127.0.0.1 only.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! // A relay that sends one frame that is not JSON to every REQ, then EOSE.
//! let relay = archy_harness::hostile::scripted_relay(|_sub| vec!["not json".into()]).await?;
//! println!("ws://{relay}");
//! # Ok(()) }
//! ```

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use libp2p::{
    kad::{self, store::MemoryStore, Mode},
    noise,
    swarm::NetworkBehaviour,
    tcp, yamux, StreamProtocol, Swarm, SwarmBuilder,
};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// The frame `["EVENT", sub, event]`.
pub fn event_frame(sub: &serde_json::Value, event: impl serde::Serialize) -> String {
    serde_json::json!(["EVENT", sub, event]).to_string()
}

/// A websocket "relay" on 127.0.0.1: for every `REQ` it sends the frames `answer`
/// gives for the subscription id (made one at a time, as they are sent), then `EOSE`.
/// Anything else a client sends is ignored.
pub async fn scripted_relay<F, I>(answer: F) -> std::io::Result<SocketAddr>
where
    F: Fn(&serde_json::Value) -> I + Send + Sync + 'static,
    I: IntoIterator<Item = String>,
    I::IntoIter: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    if v[0] != "REQ" {
                        continue;
                    }
                    let eose = serde_json::json!(["EOSE", v[1]]).to_string();
                    for frame in answer(&v[1]).into_iter().chain([eose]) {
                        if ws.send(Message::text(frame)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The behaviour of a [`kad_peer`]: Kademlia only.
#[derive(NetworkBehaviour)]
pub struct HostileKad {
    pub kad: kad::Behaviour<MemoryStore>,
}

impl std::fmt::Debug for HostileKad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostileKad")
    }
}

/// A Kademlia peer speaking `protocol` (Archy's is `archy_dht::KAD_PROTOCOL`) in server
/// mode, listening on 127.0.0.1, whose own store has room for everything it provides.
/// Drive it by polling the swarm (`select_next_some`) while it sends.
pub fn kad_peer(protocol: &'static str) -> Result<Swarm<HostileKad>, Box<dyn std::error::Error>> {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let store = MemoryStore::with_config(
                id,
                kad::store::MemoryStoreConfig {
                    max_provided_keys: usize::MAX,
                    ..Default::default()
                },
            );
            let mut kad = kad::Behaviour::with_config(
                id,
                store,
                kad::Config::new(StreamProtocol::new(protocol)),
            );
            kad.set_mode(Some(Mode::Server));
            HostileKad { kad }
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    Ok(swarm)
}

/// A websocket "relay" on 127.0.0.1 that accepts connections and never answers.
pub async fn silent_relay() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    Ok(addr)
}
