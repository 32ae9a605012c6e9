//! The node's configuration: `<data>/config.toml`, overridable by flags.
//!
//! ```toml
//! name = "node1"               # container names and labels; several nodes may share an engine
//! api = "127.0.0.1:7420"       # local API, loopback only
//! runtime = "podman"          # or "process" (no engine; needs root)
//! publish_ip = "127.0.0.1"     # host address app ports are published on
//! origin_dir = "/srv/publish"  # a publish dir (root.json, timestamp.json, catalog.json, blobs/)
//! root = "/etc/archy/root.json" # trust anchor, copied to <data>/root.json on first start
//! origin = "<endpoint id>@127.0.0.1:4433"  # the origin's swarm address
//! peers = ["<endpoint id>@127.0.0.1:4434"] # other nodes to fetch from
//! dht_listen = "127.0.0.1:0"   # join the DHT (TCP): find holders, announce what it holds
//! bootstrap = ["/ip4/127.0.0.1/tcp/4500/p2p/12D3Koo..."]  # DHT nodes to join through
//! relays = ["ws://127.0.0.1:7447"]  # Nostr relays (the marketplace)
//! iroh_relays = [{ url = "https://relay.example:4434" }]  # swarm relays, for NAT
//! me = "npub1..."              # the operator's key, for marketplace trust scores
//! web = "127.0.0.1:7421"       # the web dashboard (0.0.0.0:7421 for the LAN); none: off
//! web_hosts = ["archy.home.example"]  # host names the dashboard answers besides IPs
//!
//! max_image_bytes = 68719476736 # largest image archive fetched (64 GiB)
//! [unpack]                     # budgets for one image (defaults shown)
//! max_bytes = 34359738368      # uncompressed bytes over all layers (32 GiB)
//! max_entries = 500000
//! max_path_bytes = 4096
//! max_depth = 128
//! ```

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use archy_registry::{Multiaddr, PeerAddr};
use serde::{Deserialize, Serialize};

use crate::runtime::{process::UnpackLimits, RuntimeKind};

/// Default local API address.
pub const DEFAULT_API: &str = "127.0.0.1:7420";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_api")]
    pub api: SocketAddr,
    #[serde(default)]
    pub runtime: RuntimeKind,
    #[serde(default = "default_publish_ip")]
    pub publish_ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// The origin's swarm address, `<endpoint id>@<ip:port>`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text::option"
    )]
    pub origin: Option<PeerAddr>,
    /// Other nodes to fetch from, same syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "text::list")]
    pub peers: Vec<PeerAddr>,
    /// UDP address of this node's swarm endpoint; unset: [`NodeConfig::swarm_listen`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_listen: Option<SocketAddr>,
    /// TCP address of this node's DHT node; none: no DHT (origin and `peers` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dht_listen: Option<SocketAddr>,
    /// `/ip4/IP/tcp/PORT/p2p/PEER_ID` of DHT nodes to join through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<Multiaddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// iroh relays the swarm uses so peers behind NAT reach this node (and it them):
    /// `{ url, quic_port, cert }`, as a join ticket names them. None: no relay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iroh_relays: Vec<archy_registry::relay::RelaySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<String>,
    /// Where the web dashboard listens; none: no dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<SocketAddr>,
    /// Host names the dashboard answers to besides IP addresses and `localhost` (a
    /// reverse proxy's name). Any other name is refused (DNS rebinding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub web_hosts: Vec<String>,
    /// The largest image archive this node fetches, in bytes: a size claimed by a catalog
    /// or an announcement above it is refused before anything is planned or allocated.
    #[serde(default = "default_max_image_bytes")]
    pub max_image_bytes: u64,
    /// Budgets for unpacking one image: `[unpack]` with `max_bytes`, `max_entries`,
    /// `max_path_bytes`, `max_depth` (see docs/security.md for the defaults).
    #[serde(default, skip_serializing_if = "is_default_unpack")]
    pub unpack: UnpackLimits,
}

/// Default [`NodeConfig::max_image_bytes`]: 64 GiB.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 64 << 30;

fn default_max_image_bytes() -> u64 {
    DEFAULT_MAX_IMAGE_BYTES
}

fn is_default_unpack(u: &UnpackLimits) -> bool {
    *u == UnpackLimits::default()
}

fn default_name() -> String {
    "node".into()
}
fn default_api() -> SocketAddr {
    DEFAULT_API
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7420)))
}
/// Where the swarm listens when nothing says: loopback, any port.
pub const DEFAULT_SWARM_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
fn default_publish_ip() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: default_name(),
            api: default_api(),
            runtime: RuntimeKind::default(),
            publish_ip: default_publish_ip(),
            origin_dir: None,
            root: None,
            origin: None,
            peers: Vec::new(),
            swarm_listen: None,
            dht_listen: None,
            bootstrap: Vec::new(),
            relays: Vec::new(),
            iroh_relays: Vec::new(),
            me: None,
            web: None,
            web_hosts: Vec::new(),
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            unpack: UnpackLimits::default(),
        }
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not parse (the message names the key and the line).
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Rule { path: PathBuf, source: ConfigRule },
}

/// A configuration that parses but breaks a rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigRule {
    #[error("api = {0}: the local API only listens on loopback addresses")]
    ApiNotLoopback(SocketAddr),
    #[error("name = {0:?}: letters, digits, '-' and '_' only")]
    BadName(String),
    #[error("bootstrap is set but dht_listen is not: set dht_listen (e.g. \"127.0.0.1:0\") to join the DHT")]
    BootstrapWithoutDht,
}

impl NodeConfig {
    /// The swarm endpoint's UDP address: as set, else [`DEFAULT_SWARM_LISTEN`].
    pub fn swarm_listen(&self) -> SocketAddr {
        self.swarm_listen.unwrap_or(DEFAULT_SWARM_LISTEN)
    }

    /// Reads `<data>/config.toml`, or the defaults if there is none.
    pub fn load(data: &Path) -> Result<Self, ConfigError> {
        let path = data.join("config.toml");
        let cfg: NodeConfig = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeConfig::default(),
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        cfg.check()
            .map_err(|source| ConfigError::Rule { path, source })?;
        Ok(cfg)
    }

    /// Writes `<data>/config.toml` atomically.
    pub fn save(&self, data: &Path) -> Result<(), ConfigError> {
        let path = data.join("config.toml");
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        archy_catalog::fsutil::write_atomic(&path, text.as_bytes())
            .map_err(|source| ConfigError::Io { path, source })
    }

    /// The API must stay on loopback; names must be usable in container names; a DHT
    /// bootstrap needs a DHT to join. (Addresses and the runtime are checked by their
    /// types when the file is parsed.)
    pub fn check(&self) -> Result<(), ConfigRule> {
        if !self.api.ip().is_loopback() {
            return Err(ConfigRule::ApiNotLoopback(self.api));
        }
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigRule::BadName(self.name.clone()));
        }
        if !self.bootstrap.is_empty() && self.dht_listen.is_none() {
            return Err(ConfigRule::BootstrapWithoutDht);
        }
        Ok(())
    }
}

/// Serde for fields kept in config.toml as text: any type with `FromStr` and `Display`
/// (such as [`PeerAddr`]), so a bad value is refused when the file is parsed, with the
/// type's own error.
mod text {
    use std::{fmt::Display, str::FromStr};

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    fn parse<T: FromStr, E: Error>(s: &str) -> Result<T, E>
    where
        T::Err: Display,
    {
        s.parse().map_err(|e| E::custom(format!("{s:?}: {e}")))
    }

    pub mod option {
        use super::*;

        pub fn serialize<T: Display, S: Serializer>(
            v: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.collect_str(v),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: FromStr,
            T::Err: Display,
            D: Deserializer<'de>,
        {
            Option::<String>::deserialize(d)?
                .map(|s| parse(&s))
                .transpose()
        }
    }

    pub mod list {
        use super::*;

        pub fn serialize<T: Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|v| v.to_string()))
        }

        pub fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
        where
            T: FromStr,
            T::Err: Display,
            D: Deserializer<'de>,
        {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|s| parse(s))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_bad_values_are_named() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(NodeConfig::load(d.path()).unwrap(), NodeConfig::default());
        let c = NodeConfig {
            name: "n1".into(),
            relays: vec!["ws://127.0.0.1:7447".into()],
            ..NodeConfig::default()
        };
        c.save(d.path()).unwrap();
        assert_eq!(NodeConfig::load(d.path()).unwrap(), c);
        std::fs::write(d.path().join("config.toml"), "api = \"0.0.0.0:7420\"\n").unwrap();
        let e = NodeConfig::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("loopback"), "{e}");
        std::fs::write(d.path().join("config.toml"), "runtime = \"process\"\n").unwrap();
        assert_eq!(
            NodeConfig::load(d.path()).unwrap().runtime,
            RuntimeKind::Process
        );
        std::fs::write(
            d.path().join("config.toml"),
            "[unpack]\nmax_entries = 1000\n",
        )
        .unwrap();
        let u = NodeConfig::load(d.path()).unwrap().unpack;
        assert_eq!(
            (u.max_entries, u.max_depth),
            (1000, UnpackLimits::default().max_depth)
        );
        std::fs::write(
            d.path().join("config.toml"),
            "[unpack]\nmax_entrys = 1000\n",
        )
        .unwrap();
        let e = NodeConfig::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("max_entrys"), "{e}");
        std::fs::write(d.path().join("config.toml"), "runtime = \"docker\"\n").unwrap();
        let e = NodeConfig::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("podman") && e.contains("process"), "{e}");
        std::fs::write(d.path().join("config.toml"), "bootstrap = [\"nope\"]\n").unwrap();
        let e = NodeConfig::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("bootstrap") && e.contains("nope"), "{e}");
        std::fs::write(
            d.path().join("config.toml"),
            "peers = [\"nope@1.2.3.4:5\"]\n",
        )
        .unwrap();
        let e = NodeConfig::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("peers") && e.contains("nope@1.2.3.4:5"), "{e}");
        let c = NodeConfig {
            origin: Some(
                format!(
                    "{}@127.0.0.1:4433",
                    "7a19ddf08533f66004148316cfd540004a614c3435d7d7f8b9310798cc6a4912"
                )
                .parse()
                .unwrap(),
            ),
            bootstrap: vec!["/ip4/127.0.0.1/tcp/4500".parse().unwrap()],
            dht_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..NodeConfig::default()
        };
        c.save(d.path()).unwrap();
        assert_eq!(NodeConfig::load(d.path()).unwrap(), c);
        std::fs::write(
            d.path().join("config.toml"),
            "bootstrap = [\"/ip4/127.0.0.1/tcp/1\"]\n",
        )
        .unwrap();
        let e = NodeConfig::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("dht_listen"), "{e}");
        std::fs::write(d.path().join("config.toml"), "colour = 1\n").unwrap();
        assert!(NodeConfig::load(d.path())
            .unwrap_err()
            .to_string()
            .contains("colour"));
    }
}
