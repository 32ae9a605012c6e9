//! Images from the swarm: the node's own [`Swarm`] fetches an archive from the origin,
//! the configured peers and every holder the DHT names, all at once (every range
//! BLAKE3-verified as it arrives), keeps it in its store, and from then on serves it to
//! others and announces it. Web seeds that serve a hash tree give ranges next to the
//! peers. When the swarm has no verified copy, the origin's publish dir and then the
//! image's web seeds (whole archives, verified before use: a host with no hash tree)
//! are asked.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use archy_catalog::ImageRef;
use archy_registry::{FetchPlan, FetchStatus, PeerAddr, Swarm};

use crate::executor::{DirImageSource, ExecError, FetchError, FetchedImage, ImageSource, Sources};

/// Image bytes this node fetched, by where they came from (the daemon's metrics).
#[derive(Debug, Default)]
pub struct FetchCounters {
    pub origin: AtomicU64,
    pub peers: AtomicU64,
    /// Read from the origin's publish dir because no swarm provider answered.
    pub publish_dir: AtomicU64,
    /// From the image's web seeds: ranges next to the peers, or whole archives when the
    /// swarm had no verified copy.
    pub web_seed: AtomicU64,
    /// Already held when a fetch started (a resumed download), so not fetched again.
    pub resumed: AtomicU64,
}

/// Fetches through the swarm; local files (`<data>/blobs`) and the origin's publish dir
/// are the first and last resort.
#[derive(Debug, Clone)]
pub struct SwarmImageSource {
    pub swarm: Swarm,
    pub origin: Option<PeerAddr>,
    pub peers: Vec<PeerAddr>,
    /// Where fetched archives are exported for the runtime to load.
    pub blobs_dir: PathBuf,
    pub fallback_dirs: Vec<PathBuf>,
    pub handle: tokio::runtime::Handle,
    pub counters: Arc<FetchCounters>,
}

fn short(p: &str) -> String {
    p.split('@').next().unwrap_or(p).chars().take(8).collect()
}

/// Who a provider of a fetch is, as progress and reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Origin,
    WebSeed,
    Peer,
}

impl SwarmImageSource {
    fn source_kind(&self, provider: &str, image: &ImageRef) -> SourceKind {
        if self
            .origin
            .as_ref()
            .is_some_and(|o| o.to_string() == provider)
        {
            SourceKind::Origin
        } else if image.web_seeds.iter().any(|u| u == provider) {
            SourceKind::WebSeed
        } else {
            SourceKind::Peer
        }
    }

    /// Bytes by provider, the providers named as [`Self::source_name`] says.
    fn named(&self, bytes: &std::collections::BTreeMap<String, u64>, image: &ImageRef) -> Sources {
        bytes
            .iter()
            .map(|(p, b)| (self.source_name(p, image), *b))
            .collect()
    }

    /// `origin`, `web seed URL` or `peer 3f2a1b2c`.
    fn source_name(&self, provider: &str, image: &ImageRef) -> String {
        match self.source_kind(provider, image) {
            SourceKind::Origin => "origin".into(),
            SourceKind::WebSeed => format!("web seed {provider}"),
            SourceKind::Peer => format!("peer {}", short(provider)),
        }
    }
}

impl ImageSource for SwarmImageSource {
    fn holds(&self, image: &ImageRef) -> bool {
        self.blobs_dir.join(image.hash.to_hex()).is_file()
    }

    fn fetch(
        &self,
        image: &ImageRef,
        progress: &mut dyn FnMut(u64, u64, &Sources),
    ) -> Result<FetchedImage, ExecError> {
        let local = DirImageSource {
            dirs: vec![self.blobs_dir.clone()],
        };
        if let Ok(found) = local.fetch(image, progress) {
            return Ok(found);
        }
        let fetched = self.handle.block_on(async {
            // Verified bytes are reported as they arrive, not only at the end.
            let (tx, mut rx) = tokio::sync::watch::channel(FetchStatus::default());
            let plan = FetchPlan {
                size: Some(image.size),
                origin: self.origin.clone(),
                peers: self.peers.clone(),
                web_seeds: image.web_seeds.clone(),
                ..FetchPlan::default()
            };
            let run = self.swarm.fetch(image.hash, plan, Some(tx));
            tokio::pin!(run);
            let report = loop {
                tokio::select! {
                    report = &mut run => break report?,
                    Ok(()) = rx.changed() => {
                        let status = rx.borrow_and_update().clone();
                        progress(status.verified, image.size, &self.named(&status.received, image));
                    }
                }
            };
            std::fs::create_dir_all(&self.blobs_dir)?;
            let path = self.blobs_dir.join(image.hash.to_hex());
            self.swarm.node.export(&image.hash, &path).await?;
            Ok::<_, archy_registry::SwarmError>((report, path))
        });
        match fetched {
            Ok((report, path)) => {
                // Every range was BLAKE3-verified against `image.hash` as it arrived; the
                // export is the store's verified copy, so it is not hashed again.
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if size != image.size {
                    return Err(ExecError::Verify {
                        expected: format!("{} ({} bytes)", image.hash, image.size),
                        actual: format!("an export of {size} bytes"),
                    });
                }
                progress(
                    image.size,
                    image.size,
                    &self.named(&report.bytes_by_provider, image),
                );
                let c = &self.counters;
                c.resumed.fetch_add(report.already_held, Ordering::Relaxed);
                let parts: Vec<String> = report
                    .bytes_by_provider
                    .iter()
                    .map(|(p, b)| {
                        let counter = match self.source_kind(p, image) {
                            SourceKind::Origin => &c.origin,
                            SourceKind::WebSeed => &c.web_seed,
                            SourceKind::Peer => &c.peers,
                        };
                        counter.fetch_add(*b, Ordering::Relaxed);
                        format!("{} {b} B", self.source_name(p, image))
                    })
                    .collect();
                let mut source = if parts.is_empty() {
                    "swarm (already held)".to_string()
                } else {
                    format!("swarm: {}", parts.join(", "))
                };
                if report.already_held > 0 && !parts.is_empty() {
                    source.push_str(&format!(
                        " (resumed: {} B already held)",
                        report.already_held
                    ));
                }
                Ok(FetchedImage { path, source })
            }
            Err(e) => self.without_the_swarm(image, e, progress),
        }
    }
}

impl SwarmImageSource {
    /// When the swarm gave no verified archive: the origin's publish dir, then the
    /// image's web seeds, in order; else the swarm's failure.
    fn without_the_swarm(
        &self,
        image: &ImageRef,
        swarm: archy_registry::SwarmError,
        progress: &mut dyn FnMut(u64, u64, &Sources),
    ) -> Result<FetchedImage, ExecError> {
        if !self.fallback_dirs.is_empty() {
            tracing::warn!(error = %swarm, "swarm fetch failed; trying the origin's publish dir");
            match (DirImageSource {
                dirs: self.fallback_dirs.clone(),
            })
            .fetch(image, progress)
            {
                Ok(found) => {
                    let path = self.keep(image, &found.path)?;
                    self.counters
                        .publish_dir
                        .fetch_add(image.size, Ordering::Relaxed);
                    return Ok(FetchedImage {
                        path,
                        source: found.source,
                    });
                }
                // Not there either: what the swarm said is the news.
                Err(ExecError::Fetch(FetchError::NotInDirs { .. })) => {}
                Err(other) => return Err(other),
            }
        }
        if image.web_seeds.is_empty() {
            return Err(FetchError::Swarm(swarm).into());
        }
        tracing::warn!(error = %swarm, "swarm fetch failed; trying the image's web seeds");
        let mut seeds = Vec::new();
        for url in &image.web_seeds {
            match crate::web_seed::download(url, image, &self.blobs_dir) {
                Ok(download) => {
                    let kept = self.keep(image, &download);
                    let _ = std::fs::remove_file(&download);
                    let path = kept?;
                    progress(
                        image.size,
                        image.size,
                        &Sources::from([(format!("web seed {url}"), image.size)]),
                    );
                    self.counters
                        .web_seed
                        .fetch_add(image.size, Ordering::Relaxed);
                    return Ok(FetchedImage {
                        path,
                        source: format!("web seed {url}"),
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "web seed failed");
                    seeds.push(e);
                }
            }
        }
        Err(FetchError::WebSeeds { swarm, seeds }.into())
    }

    /// Holds a verified archive found outside the swarm like a swarm fetch: in the store
    /// (so this node seeds it) and exported for the runtime, so it is not fetched again.
    fn keep(&self, image: &ImageRef, found: &std::path::Path) -> Result<PathBuf, ExecError> {
        let path = self.blobs_dir.join(image.hash.to_hex());
        self.handle
            .block_on(async {
                self.swarm.import(found).await?;
                std::fs::create_dir_all(&self.blobs_dir)?;
                self.swarm.node.export(&image.hash, &path).await
            })
            .map_err(|source| FetchError::Keep {
                hash: image.hash,
                source,
            })?;
        Ok(path)
    }
}
