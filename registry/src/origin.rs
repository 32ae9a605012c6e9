//! The origin: a [`SwarmNode`] that holds every image the signed catalog references.
//!
//! It reads the publish dir (`root.json`, `timestamp.json`, `catalog.json`, `blobs/<hex>`)
//! that `catalog-signer` writes, verifies the documents exactly as a node would, imports
//! every referenced image (refusing one whose bytes do not hash to its name) and serves
//! them. Its address goes to stdout and to `<data>/origin.json`. Nodes still read the
//! signed head from the publish dir; serving it over its own ALPN comes next.

use std::{net::SocketAddr, path::Path};

use archy_catalog::{Limits, TrustedState};

use crate::{PeerAddr, SwarmError, SwarmNode};

/// A running origin and what it serves.
#[derive(Debug)]
pub struct Origin {
    pub node: SwarmNode,
    pub catalog_version: u64,
    pub blobs: usize,
}

impl Origin {
    /// Verifies the publish dir, imports its images and starts serving.
    pub async fn start(publish: &Path, data: &Path, bind: SocketAddr) -> Result<Self, SwarmError> {
        let read = |f: &str| std::fs::read(publish.join(f));
        let limits = Limits::default();
        let fail = |e: String| SwarmError::Fetch {
            hash: archy_catalog::ContentHash([0; 32]),
            reasons: e,
        };
        let mut trust = TrustedState::bootstrap(&read("root.json")?, &limits)
            .map_err(|e| fail(format!("root.json: {e}")))?;
        let now = chrono::Utc::now();
        let ts = trust
            .verify_timestamp(&read("timestamp.json")?, now, &limits)
            .map_err(|e| fail(format!("timestamp.json: {e}")))?;
        let catalog = trust
            .verify_catalog(&read("catalog.json")?, Some(&ts), now, &limits)
            .map_err(|e| fail(format!("catalog.json: {e}")))?;
        let node = SwarmNode::spawn(data, bind).await?;
        let mut blobs = 0;
        for entry in catalog.apps.values() {
            for release in entry.releases.values() {
                let path = publish.join("blobs").join(release.image.hash.to_hex());
                let got = node.import(&path).await?;
                if got != release.image.hash {
                    return Err(fail(format!("{}: bytes hash to {got}", path.display())));
                }
                blobs += 1;
            }
        }
        let addr = node.addr();
        let info = format!(
            "{{\"addr\": \"{addr}\", \"catalog_version\": {}, \"blobs\": {blobs}}}\n",
            catalog.version
        );
        archy_catalog::fsutil::write_atomic(&data.join("origin.json"), info.as_bytes())?;
        Ok(Self {
            node,
            catalog_version: catalog.version,
            blobs,
        })
    }

    pub fn addr(&self) -> PeerAddr {
        self.node.addr()
    }
}
