//! Streaming one layer out of an archive while checking it: its stored digest, its
//! uncompressed digest (the config's diff_id) and an unpack budget, so a runtime can
//! unpack it and know afterwards that it was exactly the signed content.

use std::{fs, io::Read, path::Path};

use sha2::{Digest, Sha256};

use super::{corrupt, fmt_err, layer_positions, ImageInfo, Layer, OciError};

/// Hashes what is read through it.
#[derive(Debug)]
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

type Bytes = std::io::BufReader<std::io::Take<fs::File>>;

/// A layer's uncompressed tar: decompressed from the stored bytes (hashed on the way for
/// the blob digest), or the stored bytes themselves (one hash serves both digests).
#[derive(Debug)]
enum Plain {
    Gzip(Box<flate2::read::MultiGzDecoder<Hashing<Bytes>>>),
    Raw(Bytes),
}

/// One layer's uncompressed tar, read from the archive while both of its digests are
/// computed and the uncompressed bytes are counted against a budget (a gzip bomb stops
/// there). Read the tar from it, then [`LayerStream::finish`] checks the digests.
#[derive(Debug)]
pub struct LayerStream {
    plain: Plain,
    plain_hash: Sha256,
    read: u64,
    max_bytes: u64,
}

impl LayerStream {
    /// Opens `layer` at `(offset, size)` in `archive`; at most `max_bytes` uncompressed
    /// bytes may come out of it. gzip and uncompressed layers are read; zstd is refused.
    pub fn open(archive: &Path, at: (u64, u64), max_bytes: u64) -> Result<Self, OciError> {
        use std::io::{BufRead, Seek};
        let io = |source| OciError::Io {
            path: archive.to_path_buf(),
            source,
        };
        let mut file = fs::File::open(archive).map_err(io)?;
        file.seek(std::io::SeekFrom::Start(at.0)).map_err(io)?;
        // Large reads: the layer streams through two hashes and a tar reader.
        let mut stored = std::io::BufReader::with_capacity(1 << 20, file.take(at.1));
        let plain = match stored.fill_buf().map_err(io)? {
            [0x1f, 0x8b, ..] => Plain::Gzip(Box::new(flate2::read::MultiGzDecoder::new(Hashing {
                inner: stored,
                hash: Sha256::new(),
            }))),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => {
                return Err(fmt_err(
                    "zstd-compressed layers are not supported (use gzip or none)",
                ))
            }
            _ => Plain::Raw(stored),
        };
        Ok(Self {
            plain,
            plain_hash: Sha256::new(),
            read: 0,
            max_bytes,
        })
    }

    /// Reads what is left, then checks the stored bytes against `layer.digest` and the
    /// uncompressed ones against `layer.diff_id`. Returns the uncompressed size.
    pub fn finish(mut self, layer: &Layer) -> Result<u64, OciError> {
        std::io::copy(&mut self, &mut std::io::sink())
            .map_err(corrupt(format!("layer {}", layer.path)))?;
        let diff_id = format!("sha256:{}", hex::encode(self.plain_hash.finalize()));
        let stored_digest = match self.plain {
            Plain::Gzip(gz) => {
                let mut stored = gz.into_inner();
                std::io::copy(&mut stored, &mut std::io::sink())
                    .map_err(corrupt(format!("layer {}", layer.path)))?;
                format!("sha256:{}", hex::encode(stored.hash.finalize()))
            }
            Plain::Raw(_) => diff_id.clone(),
        };
        if let Some(digest) = &layer.digest {
            let actual = stored_digest;
            if &actual != digest {
                return Err(fmt_err(format!(
                    "layer {}: content does not match its digest {digest} ({actual})",
                    layer.path
                )));
            }
        }
        if diff_id != layer.diff_id {
            return Err(fmt_err(format!(
                "layer {}: uncompressed content {diff_id} is not the config's diff_id {}",
                layer.path, layer.diff_id
            )));
        }
        Ok(self.read)
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match &mut self.plain {
            Plain::Gzip(gz) => gz.read(buf)?,
            Plain::Raw(raw) => raw.read(buf)?,
        };
        self.read += n as u64;
        if self.read > self.max_bytes {
            return Err(std::io::Error::other(format!(
                "the image unpacks to more than {} bytes (unpack budget max_bytes)",
                self.max_bytes
            )));
        }
        self.plain_hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Checks every layer of an archive against its digest and the config's diff_ids,
/// reading at most `max_bytes` uncompressed bytes in all: after this, the config digest
/// names exactly the files the archive holds. (A runtime that unpacks layers itself
/// checks them while unpacking instead.)
pub fn verify_layers(archive: &Path, info: &ImageInfo, max_bytes: u64) -> Result<u64, OciError> {
    let positions = layer_positions(archive, &info.layers)?;
    let mut total = 0u64;
    for layer in &info.layers {
        let at = positions[&layer.path];
        total += LayerStream::open(archive, at, max_bytes.saturating_sub(total))?.finish(layer)?;
    }
    Ok(total)
}
