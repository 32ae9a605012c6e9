//! `archy node run`: the node daemon, one module per role.
//!
//! - [`start`]: opens the data dir, the trust anchor, the runtime and the swarm, then
//!   runs the roles below until Ctrl-C or SIGTERM.
//! - [`api`]: the local HTTP API and its bearer-token auth.
//! - [`metrics`]: the Prometheus exposition (`/metrics`); [`refusals`] counts what was
//!   refused from outside and logs each source once.
//! - [`sync`]: keeps the verified catalog fresh (origin, peers, DHT head servers, a
//!   publish dir) and announces what the node holds.
//! - [`web`]: the web dashboard (`--web`), on the same request functions as the API.
//! - [`reconcile`]: the level-triggered loop that reads the state, asks
//!   [`crate::policy`] and [`crate::planner`] what to do, and has the executor do it.
//!
//! The roles share one [`Node`]: the state store, the held catalog, the runtime, the
//! swarm and the event channel progress goes out on.

mod api;
mod metrics;
mod reconcile;
mod refusals;
mod start;
mod sync;
mod web;

use std::{path::PathBuf, sync::Arc};

use archy_catalog::{Catalog, Release};
use tokio::sync::{broadcast, Mutex, Notify};

use crate::{config::NodeConfig, executor::ProgressEvent, runtime::Runtime, state::StateStore};

pub use reconcile::RESYNC;
pub use start::run;
pub use web::auth::{set_password as set_web_password, PasswordError, MIN_PASSWORD_CHARS};

/// Everything the daemon's roles share.
struct Node {
    data: PathBuf,
    /// The node's iroh endpoint and, when configured, its DHT membership.
    swarm: archy_registry::Swarm,
    /// The head this node last accepted, served to peers (ALPN archy/head/1).
    head: archy_registry::head::HeadServer,
    cfg: NodeConfig,
    store: Mutex<StateStore>,
    runtime: Arc<dyn Runtime>,
    catalog: Mutex<Option<HeldCatalog>>,
    /// Head servers the DHT named when the origin and configured peers had no head.
    head_servers: std::sync::Mutex<Vec<archy_registry::PeerAddr>>,
    events: broadcast::Sender<ProgressEvent>,
    /// Wakes the reconcile loop before its next [`RESYNC`].
    wake: Notify,
    token: String,
    metrics: metrics::Metrics,
    /// The dashboard's sessions, links and caches (served only with `--web`).
    web: web::Web,
}

/// The catalog the reconciler installs from: verified, when, where it came from, and
/// until when it may be used (its timestamp's expiry, or the catalog's if earlier).
struct HeldCatalog {
    catalog: Catalog,
    verified_at: u64,
    source: String,
    expires: chrono::DateTime<chrono::Utc>,
}

impl HeldCatalog {
    /// Why nothing may be installed or updated from it any more, once it has expired: a
    /// node cut off from its origin must not keep installing what may since have been
    /// revoked (a freeze attack).
    fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> Option<CatalogExpired> {
        (now >= self.expires).then_some(CatalogExpired {
            version: self.catalog.version,
            expires: self.expires,
            verified_at: self.verified_at,
        })
    }
}

/// The held catalog has expired: installs and updates wait for a fresh head.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "catalog v{version} expired at {}; no fresh head since {} (origin and peers unreachable?): installs and updates are refused until one arrives",
    expires.to_rfc3339(),
    since(*verified_at)
)]
struct CatalogExpired {
    version: u64,
    expires: chrono::DateTime<chrono::Utc>,
    verified_at: u64,
}

fn since(verified_at: u64) -> String {
    chrono::DateTime::from_timestamp(verified_at as i64, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| verified_at.to_string())
}

impl HeldCatalog {
    /// The release of `id` (`version`, or the latest) if it may be installed at `now`:
    /// the catalog has not expired, lists it, and the release passes the policy.
    fn release(
        &self,
        id: &str,
        version: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<&Release, ReleaseError> {
        if let Some(why) = self.expired(now) {
            return Err(ReleaseError::Expired { id: id.into(), why });
        }
        let release =
            self.catalog
                .release(id, version)
                .ok_or_else(|| ReleaseError::NotInCatalog {
                    id: id.into(),
                    version: version.map(String::from),
                    catalog: self.catalog.version,
                })?;
        release
            .check()
            .map_err(|why| ReleaseError::Policy { id: id.into(), why })?;
        Ok(release)
    }
}

/// Why the release an app asks for cannot be deployed.
#[derive(Debug, thiserror::Error)]
enum ReleaseError {
    #[error("no verified catalog yet (is an origin or origin_dir configured and reachable?)")]
    NoCatalog,
    #[error("{id}: {why}")]
    Expired { id: String, why: CatalogExpired },
    #[error("{id}{} is not in the signed catalog v{catalog}", version.as_ref().map(|v| format!("@{v}")).unwrap_or_default())]
    NotInCatalog {
        id: String,
        version: Option<String>,
        catalog: u64,
    },
    #[error("{id}: refused by policy: {why}")]
    Policy {
        id: String,
        why: archy_catalog::documents::InvalidRelease,
    },
    #[error(transparent)]
    TooLarge(#[from] crate::policy::ImageTooLarge),
}
