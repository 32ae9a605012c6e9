//! The origin: a swarm node that holds every image the signed catalog references and
//! answers the head protocol authoritatively.
//!
//! It reads the publish dir that `catalog-signer` writes (`root.json`, optional older
//! roots as `roots/<version>.json`, `timestamp.json`, `catalog.json`, `blobs/<hex>`),
//! verifies the documents exactly as a node would, imports every referenced image
//! (refusing one whose bytes do not hash to its name) and serves them and the head. It
//! is always a provider: it announces every image in the DHT when it runs one. Its
//! address goes to stdout and to `<data>/origin.json`. [`Origin::watch`] reloads the
//! publish dir when it gets a newer signed timestamp; a publish dir that does not
//! verify is refused and the previous head stays served.
//!
//! With the timestamp key ([`TimestampRole`], `--timestamp-key`) the origin is the
//! online timestamp role: it signs a new timestamp when the publisher drops in a new
//! catalog and whenever half of the current one's lifetime has passed
//! ([`archy_catalog::online`]), so the catalog never freezes while the origin runs.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use archy_catalog::{documents::CatalogMeta, head::SignedHead, ContentHash, Limits, TrustedState};

use crate::{
    head::{HeadServer, HEAD_ALPN},
    relay::HomeRelay,
    DhtSettings, PeerAddr, Swarm, SwarmError, SwarmNode,
};

/// A running origin and what it serves.
#[derive(Debug)]
pub struct Origin {
    pub swarm: Swarm,
    pub catalog_version: u64,
    pub blobs: usize,
    head: HeadServer,
    publish: PathBuf,
    data: PathBuf,
    trusted: TrustedState,
    timestamp_role: Option<TimestampRole>,
    relay: Option<HomeRelay>,
    public_ip: Option<IpAddr>,
    /// The source address of the host's default route, when bound to every address.
    route: Option<IpAddr>,
}

/// How an origin runs beyond its publish dir, data dir and address.
#[derive(Debug, Default)]
pub struct OriginOptions {
    /// Join (or start) a DHT and announce every image there.
    pub dht: Option<DhtSettings>,
    /// Be the online timestamp role.
    pub timestamp_role: Option<TimestampRole>,
    /// Run a relay for nodes behind NAT.
    pub relay: Option<RelaySettings>,
    /// The IP nodes reach the origin by, when not its bound one (see
    /// [`advertised_ip`]).
    pub public_ip: Option<IpAddr>,
}

/// Where the origin's relay listens, and the name nodes reach it by.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// TCP (relay, TLS) and UDP (QUIC address discovery) address.
    pub listen: SocketAddr,
    /// The host name or IP in the relay's URL and certificate, when nodes reach it by
    /// another name than `listen`'s IP (always, for 0.0.0.0).
    pub host: Option<String>,
}

/// The online timestamp role: the key, and the lifetime of each timestamp it signs.
#[derive(Debug)]
pub struct TimestampRole {
    key: archy_catalog::keys::SecretKey,
    lifetime: chrono::Duration,
    /// The catalog file last hashed, by (inode, length, modification time), and what
    /// it pins. A catalog is up to 128 MiB; it is read again only when it changed (a
    /// publisher's atomic write makes a new inode).
    seen: std::sync::Mutex<Option<(CatalogStamp, CatalogMeta)>>,
}

/// Inode, length and modification time: when they are the same, so is the file.
type CatalogStamp = (u64, u64, std::time::SystemTime);

/// Why the online timestamp role could not sign.
#[derive(Debug, thiserror::Error)]
pub enum TimestampRoleError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    NotACatalog {
        path: PathBuf,
        source: archy_catalog::documents::NotACatalog,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TimestampRole {
    pub fn new(key: archy_catalog::keys::SecretKey, lifetime: chrono::Duration) -> Self {
        Self {
            key,
            lifetime,
            seen: std::sync::Mutex::new(None),
        }
    }

    /// What the catalog file pins (version, hash, size), hashed again only when its
    /// length or modification time changed.
    fn catalog_meta(
        &self,
        path: &Path,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<CatalogMeta, TimestampRoleError> {
        let read_err = |source| TimestampRoleError::Read {
            path: path.to_path_buf(),
            source,
        };
        let md = std::fs::metadata(path).map_err(read_err)?;
        let stamp = (
            std::os::unix::fs::MetadataExt::ino(&md),
            md.len(),
            md.modified().map_err(read_err)?,
        );
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, meta)) = seen.as_ref() {
            if *at == stamp {
                return Ok(meta.clone());
            }
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        let meta = archy_catalog::documents::Timestamp::for_catalog(&bytes, 0, now)
            .map_err(|source| TimestampRoleError::NotACatalog {
                path: path.to_path_buf(),
                source,
            })?
            .catalog;
        *seen = Some((stamp, meta.clone()));
        Ok(meta)
    }

    /// Signs and writes `<publish>/timestamp.json` when one is due (see
    /// [`archy_catalog::online::timestamp_due`]); returns why, if it did.
    pub fn refresh(
        &self,
        publish: &Path,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<archy_catalog::online::TimestampDue>, TimestampRoleError> {
        use archy_catalog::{documents::Timestamp, online};
        let catalog_path = publish.join("catalog.json");
        let meta = self.catalog_meta(&catalog_path, now)?;
        let ts_path = publish.join("timestamp.json");
        // The current timestamp, if there is one that parses (whoever signed it).
        let served: Option<Timestamp> = std::fs::read(&ts_path).ok().and_then(|b| {
            archy_catalog::documents::EnvelopeRef::parse(&b)
                .ok()?
                .body()
                .ok()
        });
        let Some(due) = online::timestamp_due(served.as_ref(), &meta, now, self.lifetime) else {
            return Ok(None);
        };
        let catalog = std::fs::read(&catalog_path).map_err(|source| TimestampRoleError::Read {
            path: catalog_path.clone(),
            source,
        })?;
        let not_a_catalog = |source| TimestampRoleError::NotACatalog {
            path: catalog_path.clone(),
            source,
        };
        let (_, bytes) =
            online::next_timestamp(served.as_ref(), &catalog, now, self.lifetime, &self.key)
                .map_err(not_a_catalog)?;
        archy_catalog::fsutil::write_atomic(&ts_path, &bytes).map_err(|source| {
            TimestampRoleError::Write {
                path: ts_path.clone(),
                source,
            }
        })?;
        Ok(Some(due))
    }
}

/// Why a publish dir cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The oldest root does not sign itself, or a document does not verify.
    #[error("{}: {source}", path.display())]
    Refused {
        path: PathBuf,
        #[source]
        source: archy_catalog::TrustError,
    },
    /// An image in `blobs/` is not the one the catalog names.
    #[error("{}: bytes hash to {got}", path.display())]
    WrongImage { path: PathBuf, got: ContentHash },
    /// The online timestamp role could not sign a timestamp.
    #[error("timestamp role: {0}")]
    TimestampRole(#[source] TimestampRoleError),
}

fn fail(e: PublishError) -> SwarmError {
    SwarmError::Publish(Box::new(e))
}

/// Verifies `head` as a node would, from `trusted`.
fn verify(
    publish: &Path,
    trusted: &TrustedState,
    head: &SignedHead,
) -> Result<(TrustedState, archy_catalog::Catalog), SwarmError> {
    archy_catalog::head::verify_head(trusted, head, chrono::Utc::now(), &Limits::default()).map_err(
        |source| {
            fail(PublishError::Refused {
                path: publish.to_path_buf(),
                source,
            })
        },
    )
}

impl Origin {
    /// Verifies the publish dir, imports its images and starts serving them and the
    /// head; with `dht`, also joins the DHT and announces every image.
    pub async fn start(
        publish: &Path,
        data: &Path,
        bind: SocketAddr,
        dht: Option<DhtSettings>,
    ) -> Result<Self, SwarmError> {
        let options = OriginOptions {
            dht,
            ..OriginOptions::default()
        };
        Self::start_with(publish, data, bind, options).await
    }

    /// [`Origin::start`] with every option: as the online timestamp role (a timestamp
    /// is signed first if one is due, or missing) and with a relay for nodes behind NAT
    /// (the origin's own home relay too).
    pub async fn start_with(
        publish: &Path,
        data: &Path,
        bind: SocketAddr,
        options: OriginOptions,
    ) -> Result<Self, SwarmError> {
        let OriginOptions {
            dht,
            timestamp_role,
            relay,
            public_ip,
        } = options;
        if let Some(role) = &timestamp_role {
            role.refresh(publish, chrono::Utc::now())
                .map_err(|e| fail(PublishError::TimestampRole(e)))?;
        }
        let head = SignedHead::read_publish_dir(publish).map_err(|source| {
            fail(PublishError::Read {
                dir: publish.to_path_buf(),
                source,
            })
        })?;
        // Trust starts at the oldest root on hand, which must sign itself; the newer
        // ones are walked from it like a node does.
        let oldest = head
            .roots
            .first()
            .map(|(_, r)| r.as_slice())
            .unwrap_or_default();
        let anchor = TrustedState::bootstrap(oldest, &Limits::default()).map_err(|source| {
            fail(PublishError::Refused {
                path: publish.join("root.json"),
                source,
            })
        })?;
        let (trusted, catalog) = verify(publish, &anchor, &head)?;
        let relay = match relay {
            Some(r) => Some(HomeRelay::spawn(data, r.listen, r.host.as_deref()).await?),
            None => None,
        };
        let server = HeadServer::default();
        let swarm = Swarm::start(
            SwarmNode::builder(data, bind)
                .accept(HEAD_ALPN, server.clone())
                .relays(relay.iter().map(HomeRelay::spec)),
            dht,
        )
        .await?;
        // Bound to every address (and not told its IP): where its default route leaves
        // from, asked once.
        let bound = swarm.node.addr().socket.ip();
        let route = match bound.is_unspecified() && public_ip.is_none() {
            true => default_route_source(bound),
            false => None,
        };
        let mut origin = Self {
            swarm,
            catalog_version: 0,
            blobs: 0,
            head: server,
            publish: publish.to_path_buf(),
            data: data.to_path_buf(),
            trusted,
            timestamp_role,
            relay,
            public_ip,
            route,
        };
        origin.serve(head, &catalog).await?;
        Ok(origin)
    }

    /// Imports the catalog's images, then serves `head`.
    async fn serve(
        &mut self,
        head: SignedHead,
        catalog: &archy_catalog::Catalog,
    ) -> Result<(), SwarmError> {
        let mut blobs = 0;
        for entry in catalog.apps.values() {
            for release in entry.releases.values() {
                let hash = release.image.hash;
                if !self.swarm.node.has(&hash).await? {
                    let path = self.publish.join("blobs").join(hash.to_hex());
                    let got = self.swarm.import(&path).await?;
                    if got != hash {
                        return Err(fail(PublishError::WrongImage { path, got }));
                    }
                } else {
                    self.swarm.announce(hash).await;
                }
                blobs += 1;
            }
        }
        self.head.set(head);
        self.catalog_version = catalog.version;
        self.blobs = blobs;
        let dht: Vec<String> = self.dht_addrs().iter().map(|a| a.to_string()).collect();
        let ticket = self.ticket()?.to_string();
        let info = serde_json::json!({
            "addr": self.addr().to_string(),
            "dht": dht,
            "relay": self.relay.as_ref().map(HomeRelay::spec),
            "catalog_version": catalog.version,
            "blobs": blobs,
            "ticket": ticket,
        });
        archy_catalog::fsutil::write_atomic(
            &self.data.join("origin.json"),
            info.to_string().as_bytes(),
        )?;
        Ok(())
    }

    /// Checks the publish dir every `every`; a newer signed timestamp that verifies is
    /// imported and served; one that does not is logged and the old head stays.
    pub async fn watch(&mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Some(role) = &self.timestamp_role {
                match role.refresh(&self.publish, chrono::Utc::now()) {
                    Ok(Some(due)) => tracing::info!(?due, "signed a new timestamp"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot sign a new timestamp"),
                }
            }
            let Ok(ts) = std::fs::read(self.publish.join("timestamp.json")) else {
                continue;
            };
            if self.head.get().is_some_and(|h| h.timestamp == ts) {
                continue;
            }
            let loaded = SignedHead::read_publish_dir(&self.publish)
                .map_err(|source| {
                    fail(PublishError::Read {
                        dir: self.publish.clone(),
                        source,
                    })
                })
                .and_then(|head| Ok((verify(&self.publish, &self.trusted, &head)?, head)));
            match loaded {
                Ok(((next, catalog), head)) => match self.serve(head, &catalog).await {
                    Ok(()) => {
                        self.trusted = next;
                        tracing::info!(version = catalog.version, "publish dir reloaded");
                        println!(
                            "origin reloaded: catalog v{} ({} image(s))",
                            catalog.version, self.blobs
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "new catalog refused; old head stays"),
                },
                Err(e) => tracing::warn!(error = %e, "publish dir refused; old head stays"),
            }
        }
    }

    /// The swarm address nodes dial: its port, at [`advertised_ip`].
    pub fn addr(&self) -> PeerAddr {
        let mut addr = self.swarm.node.addr();
        let ip = advertised_ip(
            addr.socket.ip(),
            self.public_ip,
            self.route,
            &self.swarm.node.direct_addrs(),
        );
        addr.socket.set_ip(ip);
        addr
    }

    /// The DHT addresses nodes join through: `--public-ip` with the DHT's port, or the
    /// DHT's own, loopback left out unless it has nothing else.
    pub fn dht_addrs(&self) -> Vec<crate::Multiaddr> {
        let all = self.swarm.dht_addrs();
        if let Some(ip) = self.public_ip {
            let first = all.first().and_then(|a| {
                let port = crate::socket_of(a)?.port();
                Some(archy_dht::dial_addr(
                    SocketAddr::new(ip, port),
                    archy_dht::peer_of(a)?,
                ))
            });
            return first.into_iter().collect();
        }
        let wide: Vec<crate::Multiaddr> = all
            .iter()
            .filter(|a| crate::socket_of(a).is_some_and(|s| !s.ip().is_loopback()))
            .cloned()
            .collect();
        match wide.is_empty() {
            true => all,
            false => wide,
        }
    }

    /// The join ticket for this origin: its address, its DHT addresses and the BLAKE3
    /// of the publish dir's `root.json` (the trust anchor nodes take).
    pub fn ticket(&self) -> Result<crate::ticket::JoinTicket, SwarmError> {
        let path = self.publish.join("root.json");
        let root = std::fs::read(&path)
            .map_err(|source| fail(PublishError::Read { dir: path, source }))?;
        Ok(crate::ticket::JoinTicket {
            origin: self.addr(),
            dht: self.dht_addrs(),
            relays: self.relay.iter().map(HomeRelay::spec).collect(),
            root: ContentHash::of(&root),
        })
    }

    /// The head being served.
    pub fn head(&self) -> Option<std::sync::Arc<SignedHead>> {
        self.head.get()
    }

    /// The origin's metrics page (OpenMetrics text), rendered from the head served at
    /// the time of each call: for [`crate::metrics_http::serve`].
    pub fn metrics_page(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let head = self.head.clone();
        move || metrics_text(head.get().as_deref())
    }
}

/// The origin's metrics for the head it serves: the catalog and timestamp versions and
/// when the timestamp expires (Unix seconds), so an alert fires before nodes freeze.
pub fn metrics_text(head: Option<&SignedHead>) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    let timestamp = head.and_then(|h| archy_catalog::head::timestamp_body(&h.timestamp));
    gauge(
        "archy_origin_serving",
        "1 while the origin serves a verified head.",
        u8::from(timestamp.is_some()).to_string(),
    );
    if let Some(t) = timestamp {
        gauge(
            "archy_origin_catalog_version",
            "Version of the catalog the served timestamp pins.",
            t.catalog.version.to_string(),
        );
        gauge(
            "archy_origin_timestamp_version",
            "Version of the served timestamp.",
            t.version.to_string(),
        );
        gauge(
            "archy_origin_timestamp_expires_timestamp_seconds",
            "When the served timestamp expires (Unix seconds).",
            t.expires.timestamp().to_string(),
        );
    }
    out.push_str("# EOF\n");
    out
}

/// The IP an origin names to nodes: `public` when given; else the one it is bound to;
/// bound to every address, among `found` (its interfaces', and what its relay saw) of
/// the bound family: the one its default route leaves from (`route`), else the lowest
/// public one, else the lowest private one (RFC 1918, shared 100.64/10, unique-local),
/// else still the unspecified one. A host with several should say which with
/// `--public-ip`.
pub fn advertised_ip(
    bound: IpAddr,
    public: Option<IpAddr>,
    route: Option<IpAddr>,
    found: &[SocketAddr],
) -> IpAddr {
    if let Some(ip) = public {
        return ip;
    }
    if !bound.is_unspecified() {
        return bound;
    }
    // Carrier-grade NAT's shared space (100.64/10) is no more public than a LAN.
    let private = |ip: &IpAddr| {
        let shared =
            matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64);
        archy_dht::is_lan_ip(*ip) || shared
    };
    let mut candidates: Vec<IpAddr> = found
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| ip.is_ipv4() == bound.is_ipv4())
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback() && !is_v6_link_local(ip))
        .collect();
    candidates.sort_by_key(|ip| (Some(*ip) != route, private(ip), *ip));
    candidates.first().copied().unwrap_or(bound)
}

/// The source address of this host's default route for `family`'s addresses, if it
/// has one: a UDP socket "connected" to a documentation address (nothing is sent;
/// the kernel only picks the route).
fn default_route_source(family: IpAddr) -> Option<IpAddr> {
    let (any, far): (SocketAddr, SocketAddr) = match family {
        IpAddr::V4(_) => (([0, 0, 0, 0], 0).into(), ([192, 0, 2, 1], 9).into()),
        IpAddr::V6(_) => (
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            ("2001:db8::1".parse::<std::net::Ipv6Addr>().ok()?, 9).into(),
        ),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(far).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// A link-local IPv6 address: it needs a scope, which a socket address in a ticket
/// does not carry.
fn is_v6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// How to run an origin: the arguments of `archy-registry serve` and `archy origin
/// serve`, which are one command under two names.
#[derive(Debug, Clone, clap::Args)]
pub struct OriginArgs {
    /// Publish dir: root.json (older roots as roots/<version>.json), timestamp.json,
    /// catalog.json and blobs/<blake3 hex>, as `catalog-signer` writes it.
    #[arg(long)]
    pub publish: PathBuf,
    /// The origin's own data dir (node key, blob store, origin.json).
    #[arg(long)]
    pub data: PathBuf,
    /// UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Also run a DHT node on this TCP address (prints `dht <multiaddr>` for nodes'
    /// --bootstrap) and announce every image there.
    #[arg(long)]
    pub dht_listen: Option<SocketAddr>,
    /// A DHT node to join through, `/ip4/IP/tcp/PORT/p2p/PEER_ID` (repeat).
    #[arg(long, requires = "dht_listen")]
    pub bootstrap: Vec<crate::Multiaddr>,
    /// Be the online timestamp role with this key file (the root's timestamp key, from
    /// `catalog-signer keygen`): sign a new timestamp whenever the publisher drops in a
    /// new catalog.json and when half of the current one's lifetime has passed. The
    /// root and catalog keys stay offline.
    #[arg(long, value_name = "FILE")]
    pub timestamp_key: Option<PathBuf>,
    /// Run a relay for nodes behind NAT on this address (TCP for the relay over TLS,
    /// UDP for QUIC address discovery; open both if nodes reach it through a firewall).
    /// Its URL and self-signed certificate go into the join ticket.
    #[arg(long, value_name = "ADDR")]
    pub relay_listen: Option<SocketAddr>,
    /// The host name or public IP nodes reach the relay by, if not --relay-listen's IP
    /// (needed for 0.0.0.0, or behind port forwarding).
    #[arg(long, value_name = "HOST", requires = "relay_listen")]
    pub relay_host: Option<String>,
    /// The IP nodes reach the origin by (its swarm and DHT addresses in the join
    /// ticket and the lines it prints), when not --listen's: behind port forwarding,
    /// or to choose among its interfaces when --listen is 0.0.0.0 (by default the one
    /// its default route leaves from, else a public one, else a private one).
    #[arg(long, value_name = "IP")]
    pub public_ip: Option<IpAddr>,
    /// Serve `GET /metrics` (OpenMetrics: catalog and timestamp versions, when the
    /// timestamp expires) on this TCP address, for Prometheus.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long each timestamp the origin signs is valid (with --timestamp-key).
    #[arg(long, default_value = "1d", requires = "timestamp_key", value_parser = parse_lifetime)]
    pub timestamp_lifetime: chrono::Duration,
}

/// Why a `--timestamp-lifetime` is refused.
#[derive(Debug, thiserror::Error)]
pub enum LifetimeError {
    #[error(transparent)]
    Duration(#[from] archy_catalog::duration::DurationError),
    #[error("a timestamp lifetime must be positive and below 100 years")]
    OutOfRange,
}

fn parse_lifetime(text: &str) -> Result<chrono::Duration, LifetimeError> {
    let d = archy_catalog::duration::parse(text)?;
    match chrono::Duration::from_std(d) {
        Ok(d) if d > chrono::Duration::zero() && d < chrono::Duration::days(36_500) => Ok(d),
        _ => Err(LifetimeError::OutOfRange),
    }
}

impl OriginArgs {
    /// Runs the origin until Ctrl-C or SIGTERM, reloading the publish dir every 2 s.
    /// Prints the address line nodes take as `--origin` (and the DHT address they take
    /// as `--bootstrap`).
    pub async fn serve_until_stopped(self) -> Result<(), SwarmError> {
        let dht = self.dht_listen.map(|listen| DhtSettings {
            listen,
            bootstrap: self.bootstrap,
        });
        let role = match &self.timestamp_key {
            Some(path) => Some(TimestampRole::new(
                archy_catalog::keys::SecretKey::load(path).map_err(|e| {
                    fail(PublishError::TimestampRole(TimestampRoleError::Read {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    }))
                })?,
                self.timestamp_lifetime,
            )),
            None => None,
        };
        let options = OriginOptions {
            dht,
            timestamp_role: role,
            relay: self.relay_listen.map(|listen| RelaySettings {
                listen,
                host: self.relay_host.clone(),
            }),
            public_ip: self.public_ip,
        };
        let mut origin =
            Origin::start_with(&self.publish, &self.data, self.listen, options).await?;
        println!(
            "origin {} serving catalog v{} ({} image(s))",
            origin.addr(),
            origin.catalog_version,
            origin.blobs
        );
        for a in origin.dht_addrs() {
            println!("dht {a}");
        }
        let metrics = match self.metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                println!("metrics http://{}/metrics", listener.local_addr()?);
                Some(tokio::spawn(crate::metrics_http::serve(
                    listener,
                    origin.metrics_page(),
                )))
            }
            None => None,
        };
        if let Some(relay) = &origin.relay {
            println!("relay {}", relay.spec().url);
        }
        println!("ticket {}", origin.ticket()?);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::select! {
            () = crate::shutdown_signal() => {}
            () = origin.watch(Duration::from_secs(2)) => {}
        }
        if let Some(task) = metrics {
            task.abort();
        }
        origin.swarm.shutdown().await;
        if let Some(relay) = origin.relay.take() {
            relay.shutdown().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::advertised_ip;

    #[test]
    fn the_origin_names_an_address_nodes_can_dial() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let sock = |s: &str| s.parse::<std::net::SocketAddr>().expect("socket");
        let any = ip("0.0.0.0");
        let found = [
            sock("127.0.0.1:4433"),
            sock("[2001:db8::7]:4433"),
            sock("[fe80::1]:4433"),
            sock("192.168.1.5:4433"),
            sock("172.17.0.1:4433"),
            sock("100.64.3.2:4433"),
            sock("203.0.113.7:4433"),
        ];
        // Bound to every IPv4 address: a public IPv4 one (never the IPv6 one: the port
        // is the IPv4 socket's), then the lowest private one, else none.
        assert_eq!(advertised_ip(any, None, None, &found), ip("203.0.113.7"));
        assert_eq!(
            advertised_ip(any, None, None, &found[..6]),
            ip("100.64.3.2")
        );
        assert_eq!(
            advertised_ip(any, None, None, &found[..5]),
            ip("172.17.0.1")
        );
        assert_eq!(
            advertised_ip(any, None, None, &found[..3]),
            any,
            "loopback only"
        );
        assert_eq!(advertised_ip(any, None, None, &[]), any, "nothing found");
        // The address the default route leaves from beats the ranking (a docker bridge
        // at 172.17.0.1 is lower than the LAN's 192.168.1.5).
        let lan = Some(ip("192.168.1.5"));
        assert_eq!(
            advertised_ip(any, None, lan, &found[..5]),
            ip("192.168.1.5")
        );
        assert_eq!(
            advertised_ip(any, None, Some(ip("10.9.9.9")), &found[..5]),
            ip("172.17.0.1"),
            "a route source that is not the host's own is ignored"
        );
        // Bound to one address: that one; told its public IP: that one, always.
        assert_eq!(
            advertised_ip(ip("10.0.0.2"), None, None, &found),
            ip("10.0.0.2")
        );
        for bound in [any, ip("10.0.0.2")] {
            assert_eq!(
                advertised_ip(
                    bound,
                    Some(ip("198.51.100.9")),
                    Some(ip("192.168.1.5")),
                    &found
                ),
                ip("198.51.100.9")
            );
        }
    }
}
