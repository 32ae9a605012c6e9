//! A home relay for nodes behind NAT: iroh's relay server, run by the origin operator.
//!
//! Two home servers behind NAT routers cannot dial each other's IP. iroh solves that
//! with a relay both keep a connection to: it forwards their (end-to-end encrypted)
//! packets, and tells each endpoint its public address (QUIC address discovery), so the
//! two can punch holes and move to a direct path. Archy contacts no relay of a third
//! party: [`HomeRelay`] runs `iroh-relay`'s server next to the origin, and nodes use
//! the relays their join ticket (or `--iroh-relay`) names ([`RelaySpec`]).
//!
//! The relay speaks TLS. An operator with a domain may put a CA-signed certificate in
//! front; otherwise the relay makes a self-signed one (kept in its data dir, so it
//! survives restarts) and the spec carries that certificate for nodes to trust: the
//! ticket that names the relay vouches for it, as it vouches for the trust root.
//!
//! ```no_run
//! # async fn demo() -> Result<(), archy_registry::relay::RelayError> {
//! use archy_registry::relay::HomeRelay;
//! let relay = HomeRelay::spawn("origin-data".as_ref(), "127.0.0.1:0".parse().unwrap(), None).await?;
//! let spec = relay.spec(); // put it in the ticket; nodes pass it to SwarmNode::builder
//! println!("relay at {}", spec.url);
//! # Ok(()) }
//! ```

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use data_encoding::BASE64URL_NOPAD;
use iroh::RelayUrl;
use iroh_relay::server::{
    AllowAll, CertConfig, QuicConfig, RelayConfig, Server, ServerConfig, TlsConfig,
};
use serde::{Deserialize, Serialize};

/// The largest certificate a spec may carry (DER bytes).
pub const MAX_CERT_BYTES: usize = 2048;

/// Why a relay could not start, or a spec is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read or write the relay's certificate in {dir}: {source}")]
    Identity {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the relay's certificate: {0}")]
    Certificate(String),
    #[error("cannot start the relay on {bind}: {source}")]
    Spawn {
        bind: SocketAddr,
        #[source]
        source: Box<iroh_relay::server::SpawnError>,
    },
    #[error("relay URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the relay certificate is damaged or over {MAX_CERT_BYTES} bytes")]
    Cert,
}

/// What a node needs to use a relay: where it is, where its QUIC address discovery
/// listens, and the self-signed certificate to trust (none for a CA-signed relay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic_port: Option<u16>,
    /// The relay's certificate, DER in base64url, when it is self-signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
}

impl RelaySpec {
    /// A relay with a CA-signed certificate, known by URL only.
    pub fn url_only(url: &str) -> Result<Self, RelayError> {
        let spec = Self {
            url: url.to_string(),
            quic_port: None,
            cert: None,
        };
        spec.relay_url()?;
        Ok(spec)
    }

    /// Checks the spec: an `https://` URL (or `http://` for a relay on loopback) and a
    /// certificate of bounded size.
    pub fn relay_url(&self) -> Result<RelayUrl, RelayError> {
        let bad = |reason: &str| RelayError::Url {
            url: self.url.clone(),
            reason: reason.into(),
        };
        let url: RelayUrl = self.url.parse().map_err(|_| bad("not a URL"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(bad("a relay URL is https://HOST:PORT"));
        }
        self.cert_der()?;
        Ok(url)
    }

    /// The certificate to trust, if the relay's is self-signed.
    pub fn cert_der(&self) -> Result<Option<Vec<u8>>, RelayError> {
        let Some(cert) = &self.cert else {
            return Ok(None);
        };
        if cert.len() > MAX_CERT_BYTES * 4 / 3 + 4 {
            return Err(RelayError::Cert);
        }
        BASE64URL_NOPAD
            .decode(cert.as_bytes())
            .map(Some)
            .map_err(|_| RelayError::Cert)
    }

    /// iroh's view of the relay.
    pub fn relay_config(&self) -> Result<iroh_relay::RelayConfig, RelayError> {
        let quic = self.quic_port.map(iroh_relay::RelayQuicConfig::new);
        Ok(iroh_relay::RelayConfig::new(self.relay_url()?, quic))
    }
}

/// A running relay; stops when dropped or [shut down](Self::shutdown).
#[derive(Debug)]
pub struct HomeRelay {
    server: Server,
    spec: RelaySpec,
}

impl HomeRelay {
    /// Starts a relay on `bind` (TCP for the relay, UDP on the same address for QUIC
    /// address discovery; port 0 picks free ones). Its certificate names `bind`'s IP,
    /// `localhost`, and `public_host` (the name or IP nodes reach it by, when it is not
    /// the bind address); it is kept in `data/relay/` and made again only when those
    /// names change.
    pub async fn spawn(
        data: &Path,
        bind: SocketAddr,
        public_host: Option<&str>,
    ) -> Result<Self, RelayError> {
        let mut names = vec!["localhost".to_string()];
        if !bind.ip().is_unspecified() {
            names.push(bind.ip().to_string());
        }
        if let Some(host) = public_host {
            if !names.iter().any(|n| n == host) {
                names.push(host.to_string());
            }
        }
        let identity = Identity::load_or_make(&data.join("relay"), &names)?;
        let server_config = identity.rustls_config()?;
        let mut relay = RelayConfig::new(SocketAddr::new(bind.ip(), 0));
        relay.tls = Some(TlsConfig::new(
            bind,
            CertConfig::Manual {
                server_config: server_config.clone(),
            },
        ));
        relay.key_cache_capacity = Some(4096);
        relay.access = Arc::new(AllowAll);
        let mut config = ServerConfig::default();
        config.relay = Some(relay);
        let mut quic = QuicConfig::new(SocketAddr::new(bind.ip(), bind.port()));
        quic.server_config = Some(server_config);
        config.quic = Some(quic);
        let server = Server::spawn(config)
            .await
            .map_err(|source| RelayError::Spawn {
                bind,
                source: Box::new(source),
            })?;
        let https = server.https_addr().unwrap_or(bind);
        let host = match public_host {
            Some(h) => h.to_string(),
            None if bind.ip().is_unspecified() => "localhost".to_string(),
            None => host_of(bind.ip()),
        };
        let spec = RelaySpec {
            url: format!("https://{host}:{}", https.port()),
            quic_port: server.quic_addr().map(|a| a.port()),
            cert: Some(BASE64URL_NOPAD.encode(&identity.cert)),
        };
        tracing::info!(url = %spec.url, quic = ?spec.quic_port, "relay started");
        Ok(Self { server, spec })
    }

    /// What nodes need to use this relay.
    pub fn spec(&self) -> RelaySpec {
        self.spec.clone()
    }

    pub async fn shutdown(self) {
        if let Err(e) = self.server.shutdown().await {
            tracing::warn!(error = %e, "the relay did not stop cleanly");
        }
    }
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The relay's TLS key and self-signed certificate, and the names it was made for.
struct Identity {
    cert: Vec<u8>,
    key: Vec<u8>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct IdentityNames {
    names: Vec<String>,
}

impl Identity {
    fn load_or_make(dir: &Path, names: &[String]) -> Result<Self, RelayError> {
        let io = |source| RelayError::Identity {
            dir: dir.to_path_buf(),
            source,
        };
        let (cert_path, key_path, names_path) = (
            dir.join("cert.der"),
            dir.join("key.der"),
            dir.join("names.json"),
        );
        let wanted = IdentityNames {
            names: names.to_vec(),
        };
        let same_names = std::fs::read(&names_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<IdentityNames>(&b).ok())
            .is_some_and(|n| n == wanted);
        if same_names {
            if let (Ok(cert), Ok(key)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
                return Ok(Self { cert, key });
            }
        }
        let made = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| RelayError::Certificate(e.to_string()))?;
        let identity = Self {
            cert: made.cert.der().to_vec(),
            key: made.signing_key.serialize_der(),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        archy_catalog::fsutil::write_atomic_mode(&key_path, &identity.key, Some(0o600))
            .map_err(io)?;
        archy_catalog::fsutil::write_atomic(&cert_path, &identity.cert).map_err(io)?;
        let names_json = serde_json::to_vec(&wanted).unwrap_or_default();
        archy_catalog::fsutil::write_atomic(&names_path, &names_json).map_err(io)?;
        Ok(identity)
    }

    fn rustls_config(&self) -> Result<rustls::ServerConfig, RelayError> {
        let cert = rustls::pki_types::CertificateDer::from(self.cert.clone());
        let key = rustls::pki_types::PrivateKeyDer::from(
            rustls::pki_types::PrivatePkcs8KeyDer::from(self.key.clone()),
        );
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| RelayError::Certificate(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked() {
        assert!(RelaySpec::url_only("https://relay.example:443").is_ok());
        assert!(RelaySpec::url_only("ftp://relay.example").is_err());
        assert!(RelaySpec::url_only("not a url").is_err());
        let damaged = RelaySpec {
            url: "https://127.0.0.1:1".into(),
            quic_port: None,
            cert: Some("!!".into()),
        };
        assert!(matches!(damaged.relay_url(), Err(RelayError::Cert)));
        let huge = RelaySpec {
            cert: Some("A".repeat(MAX_CERT_BYTES * 2)),
            ..damaged
        };
        assert!(matches!(huge.relay_url(), Err(RelayError::Cert)));
    }
}
