//! Images from the swarm: the node's own [`SwarmNode`] fetches an archive from the origin
//! and peers at once (every range BLAKE3-verified as it arrives), keeps it in its store,
//! and from then on serves it to others.

use std::{path::PathBuf, sync::Arc};

use archy_catalog::ImageRef;
use archy_registry::{PeerAddr, SwarmNode};

use crate::executor::{verify_archive, DirImageSource, ExecError, FetchedImage, ImageSource};

/// Fetches through the swarm; local files (`<data>/blobs`) and the origin's publish dir
/// are the first and last resort.
#[derive(Debug, Clone)]
pub struct SwarmImageSource {
    pub node: Arc<SwarmNode>,
    pub origin: Option<PeerAddr>,
    pub peers: Vec<PeerAddr>,
    /// Where fetched archives are exported for the runtime to load.
    pub blobs_dir: PathBuf,
    pub fallback_dirs: Vec<PathBuf>,
    pub handle: tokio::runtime::Handle,
}

fn short(p: &str) -> String {
    p.split('@').next().unwrap_or(p).chars().take(8).collect()
}

impl ImageSource for SwarmImageSource {
    fn holds(&self, image: &ImageRef) -> bool {
        self.blobs_dir.join(image.hash.to_hex()).is_file()
    }

    fn fetch(
        &self,
        image: &ImageRef,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<FetchedImage, ExecError> {
        let local = DirImageSource {
            dirs: vec![self.blobs_dir.clone()],
        };
        if let Ok(found) = local.fetch(image, progress) {
            return Ok(found);
        }
        let fetched = self.handle.block_on(async {
            let report = self
                .node
                .fetch(image.hash)
                .size(image.size)
                .origin(self.origin.clone())
                .peers(self.peers.iter().cloned())
                .run()
                .await?;
            std::fs::create_dir_all(&self.blobs_dir)?;
            let path = self.blobs_dir.join(image.hash.to_hex());
            self.node.export(&image.hash, &path).await?;
            Ok::<_, archy_registry::SwarmError>((report, path))
        });
        match fetched {
            Ok((report, path)) => {
                verify_archive(&path, image)?;
                progress(image.size, image.size);
                let origin = self.origin.as_ref().map(|p| p.to_string());
                let parts: Vec<String> = report
                    .bytes_by_provider
                    .iter()
                    .map(|(p, b)| {
                        let who = if Some(p) == origin.as_ref() {
                            "origin".to_string()
                        } else {
                            format!("peer {}", short(p))
                        };
                        format!("{who} {b} B")
                    })
                    .collect();
                let source = if parts.is_empty() {
                    "swarm (already held)".to_string()
                } else {
                    format!("swarm: {}", parts.join(", "))
                };
                Ok(FetchedImage { path, source })
            }
            Err(e) if !self.fallback_dirs.is_empty() => {
                tracing::warn!(error = %e, "swarm fetch failed; trying the origin's publish dir");
                DirImageSource {
                    dirs: self.fallback_dirs.clone(),
                }
                .fetch(image, progress)
            }
            Err(e) => Err(ExecError::Fetch(e.to_string())),
        }
    }
}
