//! Web seeds: image archives fetched over plain HTTP(S) from a static host, a CDN or a
//! blob server, next to the swarm.
//!
//! A web seed is as hostile as any peer. Its bytes go to a private temporary file,
//! never more than the size the signed reference gives, hashed with BLAKE3 as they
//! arrive; the file is kept only if it is exactly the signed size and hash. A seed that
//! sends anything else is reported as lying ([`WebSeedError::Lied`]) and dropped, and
//! nothing it sent is used.
//!
//! ```no_run
//! # fn demo(image: &archy_catalog::ImageRef) -> Result<(), archy_node::web_seed::WebSeedError> {
//! let got = archy_node::web_seed::download(&image.web_seeds[0], image, std::path::Path::new("/tmp"))?;
//! println!("verified {} bytes at {}", image.size, got.display());
//! # Ok(()) }
//! ```

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use archy_catalog::{ContentHash, ImageRef};

/// Why a web seed gave no verified archive.
#[derive(Debug, thiserror::Error)]
pub enum WebSeedError {
    /// It could not be asked, or answered with an error status.
    #[error("web seed {url}: {reason}")]
    Unavailable { url: String, reason: String },
    /// It sent bytes that are not the signed archive: a lying seed.
    #[error("web seed {url} sent {got}, not the signed {want}; dropped")]
    Lied {
        url: String,
        got: String,
        want: String,
    },
    #[error("web seed {url}: writing {}: {source}", path.display())]
    Write {
        url: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Downloads `image` from the web seed `url` into a new file in `dir` and returns its
/// path once the bytes are verified (exactly `image.size` bytes hashing to
/// `image.hash`). On any failure nothing is left in `dir`.
pub fn download(url: &str, image: &ImageRef, dir: &Path) -> Result<PathBuf, WebSeedError> {
    let unavailable = |reason: String| WebSeedError::Unavailable {
        url: url.to_string(),
        reason,
    };
    let write_err = |path: &Path| {
        let (url, path) = (url.to_string(), path.to_path_buf());
        move |source| WebSeedError::Write { url, path, source }
    };
    archy_catalog::documents::check_web_seed(url).map_err(|e| unavailable(e.to_string()))?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(30))
        .redirects(3)
        .build();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| unavailable(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let mut file = tempfile::Builder::new()
        .prefix(".web-seed-")
        .tempfile_in(dir)
        .map_err(write_err(dir))?;
    // One byte more than the signed size tells a seed that sends too much.
    let mut body = response.into_reader().take(image.size.saturating_add(1));
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut got: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(unavailable(format!("the download broke: {e}"))),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(write_err(file.path()))?;
        got += n as u64;
    }
    let hash = ContentHash(*hasher.finalize().as_bytes());
    if got != image.size || hash != image.hash {
        let got = match got > image.size {
            true => format!("more than {} bytes", image.size),
            false => format!("{got} bytes hashing to {hash}"),
        };
        return Err(WebSeedError::Lied {
            url: url.to_string(),
            got,
            want: format!("{} ({} bytes)", image.hash, image.size),
        });
    }
    let path = dir.join(format!(".web-seed-{}", image.hash.to_hex()));
    file.persist(&path).map_err(|e| write_err(&path)(e.error))?;
    Ok(path)
}
