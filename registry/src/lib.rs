//! # archy-registry
//!
//! The swarm: every node (and the origin) runs a [`SwarmNode`], an iroh endpoint with a
//! persistent iroh-blobs store that serves everything it holds, and fetches a blob from
//! several providers at once by splitting its chunk ranges. Every range is verified
//! against the BLAKE3 hash as it streams in (BAO), so a provider that sends bad bytes is
//! detected and its share goes to the others.
//!
//! The endpoint is offline by construction: no relays, no DNS or pkarr address lookup,
//! no port mapping; peers are dialled by [`PeerAddr`] (`<endpoint id>@<ip:port>`).

mod fetch;
pub mod head;
pub mod metrics_http;
mod node;
pub mod origin;
pub mod relay;
pub mod schedule;
mod served;
mod shutdown;
mod swarm;
pub mod ticket;
pub mod web_seed;

pub use fetch::{Fetch, FetchFailure, FetchOptions, FetchReport, FetchStatus};
pub use node::{node_key, ConnectError, PeerAddr, SwarmError, SwarmNode, SwarmNodeBuilder};
pub use origin::{Origin, PublishError};
pub use served::ServedCounters;
pub use shutdown::shutdown_signal;
pub use swarm::{socket_of, DhtSettings, FetchPlan, Multiaddr, Swarm};
