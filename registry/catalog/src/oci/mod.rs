//! OCI image archives: read what the catalog needs from one, and write one from a rootfs.
//!
//! An image travels as one file, an `oci-archive` or `docker-archive` tar as `podman
//! save` writes it. The catalog records the archive's BLAKE3 hash and the image config
//! digest (sha256) read here, which the node checks again after the runtime loads it.
//! [`pack_rootfs`] writes a single-layer `oci-archive` from a directory without any
//! container engine, so developers and tests can make images anywhere. Output is
//! deterministic: the same directory gives the same bytes and so the same hash.
//!
//! By role: what every part shares here (the types, digests, errors, hashing a file),
//! reading an archive's metadata in `read.rs`, streaming and checking its layers in
//! `layers.rs`, writing one in `pack.rs`.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod layers;
mod pack;
mod read;

pub use layers::{verify_layers, LayerStream};
pub use pack::{pack_rootfs, PackOptions, PackedImage};
pub use read::{inspect, inspect_reader, layer_positions, MAX_ARCHIVE_ENTRIES, MAX_METADATA_TOTAL};

/// The two archive layouts `podman save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    OciArchive,
    DockerArchive,
}

impl std::fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchiveFormat::OciArchive => "oci-archive",
            ArchiveFormat::DockerArchive => "docker-archive",
        })
    }
}

/// The runtime part of an image config (`config.config` in OCI terms).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What an archive holds, as far as Archy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ArchiveFormat,
    /// `sha256:<hex>` of the image config blob.
    pub config_digest: String,
    pub config: RuntimeConfig,
    /// The layers, bottom first, each with the digests it must match.
    pub layers: Vec<Layer>,
}

/// One layer of an image: where it is in the archive and the digests that bind it to
/// the config (and so to the config digest the catalog signs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Path of the layer tar (possibly gzip-compressed) inside the archive.
    pub path: String,
    /// `sha256:<hex>` of the layer blob as stored (oci-archive; docker-archive has none).
    pub digest: Option<String>,
    /// `sha256:<hex>` of the uncompressed layer tar: the config's `rootfs.diff_ids` entry.
    pub diff_id: String,
}

/// A string given as an image config or layer digest that is not `sha256:` and 64
/// lowercase hex digits (shortened to 80 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a digest: expected sha256: and 64 lowercase hex digits")]
pub struct NotADigest(pub String);

/// Checks that `digest` is `sha256:` and 64 lowercase hex digits, the only form Archy
/// accepts for an image config digest (it becomes a file name and a podman argument).
pub fn check_digest(digest: &str) -> Result<(), NotADigest> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    match ok {
        true => Ok(()),
        false => Err(NotADigest(digest.chars().take(80).collect())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The archive breaks a rule of its format (what is missing or wrong, and where).
    #[error("not an image archive: {0}")]
    Format(String),
    /// Reading `what` (the tar, an entry, a layer) failed.
    #[error("not an image archive: {what}: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The JSON document `what` (index, manifest, config) does not parse.
    #[error("not an image archive: {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("not an image archive: {0}")]
    Digest(#[from] NotADigest),
}

fn fmt_err(s: impl Into<String>) -> OciError {
    OciError::Format(s.into())
}

/// Reading `what` failed: the I/O error, kept as the source.
fn corrupt(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> OciError {
    move |source| OciError::Corrupt {
        what: what.to_string(),
        source,
    }
}

/// The JSON document `what` does not parse: the parse error, kept as the source.
fn bad_json(what: impl std::fmt::Display) -> impl FnOnce(serde_json::Error) -> OciError {
    move |source| OciError::Json {
        what: what.to_string(),
        source,
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Hashes a file with BLAKE3, streaming. Returns the hash and the size.
pub fn hash_file(path: &Path) -> Result<(crate::ContentHash, u64), OciError> {
    let io = |source| OciError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::open(path).map_err(io)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().into(), size))
}
