//! Join tickets: one string that is all a new node needs to join a swarm.
//!
//! `archy origin serve` prints one: the origin's address, the DHT nodes to bootstrap
//! from, and the BLAKE3 hash of the publisher's `root.json`. `archy node run --join
//! TICKET` fetches the root from the origin over the head protocol, trusting nothing it
//! says, and accepts it as its trust anchor only if it hashes to the value in the
//! ticket ([`JoinTicket::fetch_pinned_root`]): whoever gave the ticket vouches for the
//! root, not the network it came over. The ticket also names the relays the origin
//! runs ([`crate::relay`]), with the certificate to trust for each, so a node behind
//! NAT is reachable from its first start.
//!
//! ```
//! use archy_registry::ticket::JoinTicket;
//!
//! let t = JoinTicket {
//!     origin: format!("{}@127.0.0.1:4433", "ab".repeat(32)).parse().unwrap(),
//!     dht: vec![],
//!     relays: vec![],
//!     root: archy_catalog::ContentHash::of(b"root.json bytes"),
//! };
//! let text = t.to_string();
//! assert!(text.starts_with("archy-join1:"));
//! assert_eq!(text.parse::<JoinTicket>().unwrap(), t);
//! ```

use std::{fmt, str::FromStr, time::Duration};

use archy_catalog::{ContentHash, Limits};
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};

use crate::{head::HeadError, relay::RelaySpec, Multiaddr, PeerAddr, SwarmNode};

/// What every ticket starts with (the `1` is the format version).
pub const PREFIX: &str = "archy-join1:";
/// The longest ticket accepted, prefix included.
pub const MAX_TICKET: usize = 4096;
/// The most DHT bootstrap addresses a ticket may name.
pub const MAX_DHT: usize = 8;
/// The most relays a ticket may name.
pub const MAX_RELAYS: usize = 4;

/// The origin, the DHT to join through, and the root to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTicket {
    pub origin: PeerAddr,
    pub dht: Vec<Multiaddr>,
    /// Relays the origin runs; the first is the origin's home relay.
    pub relays: Vec<RelaySpec>,
    /// BLAKE3 of the `root.json` the node takes as its trust anchor.
    pub root: ContentHash,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    origin: String,
    #[serde(default)]
    dht: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    relays: Vec<RelaySpec>,
    root: ContentHash,
}

/// Why a ticket does not parse.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error("a join ticket starts with {PREFIX}")]
    NoPrefix,
    #[error("a join ticket is at most {MAX_TICKET} characters")]
    TooLong,
    #[error("the join ticket is damaged (not base64url): {0}")]
    NotBase64(#[source] data_encoding::DecodeError),
    #[error("the join ticket is damaged: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the join ticket's origin: {0}")]
    Origin(#[source] crate::SwarmError),
    #[error("the join ticket names more than {MAX_DHT} DHT nodes")]
    TooManyDht,
    #[error("the join ticket names more than {MAX_RELAYS} relays")]
    TooManyRelays,
    #[error("the join ticket's relay: {0}")]
    Relay(#[source] crate::relay::RelayError),
    #[error("the join ticket's DHT address {addr:?}: {source}")]
    Dht {
        addr: String,
        #[source]
        source: MultiaddrError,
    },
}

/// Why a multiaddr does not parse.
pub type MultiaddrError = <Multiaddr as FromStr>::Err;

impl fmt::Display for JoinTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wire = Wire {
            origin: self.origin.to_string(),
            dht: self.dht.iter().map(|a| a.to_string()).collect(),
            relays: self.relays.clone(),
            root: self.root,
        };
        let json = serde_json::to_vec(&wire).map_err(|_| fmt::Error)?;
        write!(f, "{PREFIX}{}", BASE64URL_NOPAD.encode(&json))
    }
}

impl FromStr for JoinTicket {
    type Err = TicketError;

    fn from_str(text: &str) -> Result<Self, TicketError> {
        let text = text.trim();
        if text.len() > MAX_TICKET {
            return Err(TicketError::TooLong);
        }
        let body = text.strip_prefix(PREFIX).ok_or(TicketError::NoPrefix)?;
        let json = BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(TicketError::NotBase64)?;
        let wire: Wire = serde_json::from_slice(&json).map_err(TicketError::Json)?;
        if wire.dht.len() > MAX_DHT {
            return Err(TicketError::TooManyDht);
        }
        if wire.relays.len() > MAX_RELAYS {
            return Err(TicketError::TooManyRelays);
        }
        for relay in &wire.relays {
            relay.relay_url().map_err(TicketError::Relay)?;
        }
        let dht = wire
            .dht
            .iter()
            .map(|a| {
                a.parse().map_err(|source| TicketError::Dht {
                    addr: a.chars().take(120).collect(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(JoinTicket {
            origin: wire.origin.parse().map_err(TicketError::Origin)?,
            dht,
            relays: wire.relays,
            root: wire.root,
        })
    }
}

/// Why the root a ticket pins could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot get the root from the origin: {0}")]
    Head(#[source] HeadError),
    #[error(
        "the origin offers no root that hashes to {pinned}, the one the ticket pins; \
         refusing to trust it (ask whoever gave you the ticket for a new one)"
    )]
    NotPinned { pinned: ContentHash },
}

impl JoinTicket {
    /// Asks the origin for its roots over the head protocol and returns the one whose
    /// bytes hash to [`JoinTicket::root`]; nothing else the origin says is trusted.
    pub async fn fetch_pinned_root(
        &self,
        node: &SwarmNode,
        timeout: Duration,
    ) -> Result<Vec<u8>, JoinError> {
        let head =
            crate::head::fetch_head(node, &self.origin, 0, None, &Limits::default(), timeout)
                .await
                .map_err(JoinError::Head)?;
        head.roots
            .into_iter()
            .map(|(_, bytes)| bytes)
            .find(|bytes| ContentHash::of(bytes) == self.root)
            .ok_or(JoinError::NotPinned { pinned: self.root })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_tickets_are_refused_with_the_reason() {
        let t = JoinTicket {
            origin: format!("{}@127.0.0.1:4433", "ab".repeat(32))
                .parse()
                .unwrap(),
            dht: vec!["/ip4/127.0.0.1/tcp/4500".parse().unwrap()],
            relays: vec![RelaySpec {
                url: "https://127.0.0.1:4434".into(),
                quic_port: Some(4434),
                cert: Some(BASE64URL_NOPAD.encode(&[7u8; 400])),
            }],
            root: ContentHash::of(b"root"),
        };
        assert!(t.to_string().len() < MAX_TICKET / 2, "room for more");
        let text = t.to_string();
        assert_eq!(text.parse::<JoinTicket>().unwrap(), t);
        assert!(matches!(
            "nope".parse::<JoinTicket>(),
            Err(TicketError::NoPrefix)
        ));
        assert!(matches!(
            format!("{PREFIX}!!").parse::<JoinTicket>(),
            Err(TicketError::NotBase64(_))
        ));
        let long = format!("{PREFIX}{}", "A".repeat(MAX_TICKET));
        assert!(matches!(
            long.parse::<JoinTicket>(),
            Err(TicketError::TooLong)
        ));
        let bad_origin = BASE64URL_NOPAD.encode(
            serde_json::json!({"origin": "x", "root": t.root})
                .to_string()
                .as_bytes(),
        );
        assert!(matches!(
            format!("{PREFIX}{bad_origin}").parse::<JoinTicket>(),
            Err(TicketError::Origin(_))
        ));
        let with_relays = |relays: serde_json::Value| {
            let wire = serde_json::json!({
                "origin": t.origin.to_string(), "root": t.root, "relays": relays,
            });
            format!(
                "{PREFIX}{}",
                BASE64URL_NOPAD.encode(wire.to_string().as_bytes())
            )
            .parse::<JoinTicket>()
        };
        let relay = serde_json::json!({"url": "https://127.0.0.1:1"});
        assert!(matches!(
            with_relays(serde_json::Value::Array(vec![relay; 5])),
            Err(TicketError::TooManyRelays)
        ));
        assert!(matches!(
            with_relays(serde_json::json!([{"url": "ftp://x"}])),
            Err(TicketError::Relay(_))
        ));
    }
}
