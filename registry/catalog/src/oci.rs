//! OCI image archives: read what the catalog needs from one, and write one from a rootfs.
//!
//! An image travels as one file, an `oci-archive` or `docker-archive` tar as `podman
//! save` writes it. The catalog records the archive's BLAKE3 hash and the image config
//! digest (sha256) read here, which the node checks again after the runtime loads it.
//! [`pack_rootfs`] writes a single-layer `oci-archive` from a directory without any
//! container engine, so developers and tests can make images anywhere. Output is
//! deterministic: the same directory gives the same bytes and so the same hash.

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    #[error("not an image archive: {0}")]
    Format(String),
    #[error("not an image archive: {0}")]
    Digest(#[from] NotADigest),
}

fn fmt_err(s: impl Into<String>) -> OciError {
    OciError::Format(s.into())
}

/// Largest single metadata document (index, manifest, config) kept while scanning.
const MAX_METADATA_ENTRY: u64 = 4 << 20;
/// Most metadata bytes kept from one archive, all documents together.
pub const MAX_METADATA_TOTAL: u64 = 16 << 20;
/// Most entries one archive may have (its layers are single entries).
pub const MAX_ARCHIVE_ENTRIES: u64 = 100_000;

/// Reads the format, config digest, runtime config and layer list of an archive file.
pub fn inspect(path: &Path) -> Result<ImageInfo, OciError> {
    let f = fs::File::open(path).map_err(|source| OciError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    inspect_reader(std::io::BufReader::new(f))
}

/// Like [`inspect`], from any reader of the archive bytes. Only JSON documents (an entry
/// whose first byte is `{` or `[`) are kept, each up to 4 MiB and [`MAX_METADATA_TOTAL`] in all;
/// layers (tar or gzip) are skipped without being held, and an archive of more than
/// [`MAX_ARCHIVE_ENTRIES`] entries is refused.
pub fn inspect_reader(r: impl Read) -> Result<ImageInfo, OciError> {
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut kept = 0u64;
    let mut ar = tar::Archive::new(r);
    let entries = ar
        .entries()
        .map_err(|e| fmt_err(format!("not a tar archive: {e}")))?;
    for (n, entry) in entries.enumerate() {
        if n as u64 >= MAX_ARCHIVE_ENTRIES {
            return Err(fmt_err(format!(
                "more than {MAX_ARCHIVE_ENTRIES} entries in the archive"
            )));
        }
        let mut entry = entry.map_err(|e| fmt_err(format!("corrupt tar: {e}")))?;
        let Ok(path) = entry
            .path()
            .map(|p| p.to_string_lossy().trim_start_matches("./").to_string())
        else {
            continue;
        };
        if !entry.header().entry_type().is_file() || entry.size() > MAX_METADATA_ENTRY {
            continue;
        }
        let mut first = [0u8; 1];
        let corrupt = |e: std::io::Error| fmt_err(format!("corrupt tar entry {path}: {e}"));
        // JSON documents only: docker-archive's manifest.json is an array.
        if entry.read(&mut first).map_err(corrupt)? == 0 || !matches!(first[0], b'{' | b'[') {
            continue;
        }
        kept += entry.size();
        if kept > MAX_METADATA_TOTAL {
            return Err(fmt_err(format!(
                "more than {MAX_METADATA_TOTAL} bytes of JSON documents in the archive"
            )));
        }
        let mut buf = Vec::with_capacity(entry.size() as usize);
        buf.push(first[0]);
        entry.read_to_end(&mut buf).map_err(corrupt)?;
        small.insert(path, buf);
    }
    if small.contains_key("index.json") {
        inspect_oci(&small)
    } else if small.contains_key("manifest.json") {
        inspect_docker(&small)
    } else {
        Err(fmt_err(
            "neither index.json (oci-archive) nor manifest.json (docker-archive) found",
        ))
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn blob_path(digest: &str) -> Result<String, OciError> {
    check_digest(digest)?;
    Ok(format!("blobs/sha256/{}", &digest["sha256:".len()..]))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: RuntimeConfig,
    #[serde(default)]
    rootfs: RootfsSection,
}

#[derive(Deserialize, Default)]
struct RootfsSection {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Pairs the layer paths (and blob digests) with the config's `diff_ids`, one each.
fn layers_of(
    found: Vec<(String, Option<String>)>,
    diff_ids: Vec<String>,
) -> Result<Vec<Layer>, OciError> {
    if found.len() != diff_ids.len() {
        return Err(fmt_err(format!(
            "the image has {} layers but its config lists {} diff_ids",
            found.len(),
            diff_ids.len()
        )));
    }
    found
        .into_iter()
        .zip(diff_ids)
        .map(|((path, digest), diff_id)| {
            check_digest(&diff_id).map_err(|e| fmt_err(format!("config rootfs.diff_ids: {e}")))?;
            Ok(Layer {
                path,
                digest,
                diff_id,
            })
        })
        .collect()
}

fn json<T: for<'de> Deserialize<'de>>(
    small: &BTreeMap<String, Vec<u8>>,
    path: &str,
) -> Result<T, OciError> {
    let bytes = small
        .get(path)
        .ok_or_else(|| fmt_err(format!("{path} is missing")))?;
    serde_json::from_slice(bytes).map_err(|e| fmt_err(format!("{path}: {e}")))
}

fn verified_blob<'a>(
    small: &'a BTreeMap<String, Vec<u8>>,
    digest: &str,
) -> Result<&'a [u8], OciError> {
    let path = blob_path(digest)?;
    let bytes = small
        .get(&path)
        .ok_or_else(|| fmt_err(format!("{path} is missing")))?;
    if sha256_digest(bytes) != digest {
        return Err(fmt_err(format!("{path} does not match its digest")));
    }
    Ok(bytes)
}

fn inspect_oci(small: &BTreeMap<String, Vec<u8>>) -> Result<ImageInfo, OciError> {
    let mut index: OciIndex = json(small, "index.json")?;
    // Follow nested indexes (at most a few levels) to the first image manifest.
    for _ in 0..4 {
        let first = index
            .manifests
            .first()
            .ok_or_else(|| fmt_err("index.json lists no manifests"))?;
        if first.media_type.contains("index") {
            let bytes = verified_blob(small, &first.digest)?;
            index =
                serde_json::from_slice(bytes).map_err(|e| fmt_err(format!("nested index: {e}")))?;
            continue;
        }
        let manifest_bytes = verified_blob(small, &first.digest)?;
        let manifest: OciManifest = serde_json::from_slice(manifest_bytes)
            .map_err(|e| fmt_err(format!("image manifest: {e}")))?;
        let config_bytes = verified_blob(small, &manifest.config.digest)?;
        let config: ConfigBlob = serde_json::from_slice(config_bytes)
            .map_err(|e| fmt_err(format!("image config: {e}")))?;
        let found = manifest
            .layers
            .iter()
            .map(|l| Ok((blob_path(&l.digest)?, Some(l.digest.clone()))))
            .collect::<Result<_, OciError>>()?;
        check_digest(&manifest.config.digest)?;
        return Ok(ImageInfo {
            format: ArchiveFormat::OciArchive,
            config_digest: manifest.config.digest,
            config: config.config,
            layers: layers_of(found, config.rootfs.diff_ids)?,
        });
    }
    Err(fmt_err("index.json nests too deeply"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    layers: Vec<String>,
}

fn inspect_docker(small: &BTreeMap<String, Vec<u8>>) -> Result<ImageInfo, OciError> {
    let entries: Vec<DockerManifestEntry> = json(small, "manifest.json")?;
    let first = entries
        .first()
        .ok_or_else(|| fmt_err("manifest.json lists no images"))?;
    let config_bytes = small
        .get(first.config.trim_start_matches("./"))
        .ok_or_else(|| fmt_err(format!("config {} is missing", first.config)))?;
    let config: ConfigBlob =
        serde_json::from_slice(config_bytes).map_err(|e| fmt_err(format!("image config: {e}")))?;
    let found = first
        .layers
        .iter()
        .map(|l| (l.trim_start_matches("./").to_string(), None))
        .collect();
    Ok(ImageInfo {
        format: ArchiveFormat::DockerArchive,
        config_digest: sha256_digest(config_bytes),
        config: config.config,
        layers: layers_of(found, config.rootfs.diff_ids)?,
    })
}

/// Where each of `layers` is in the archive: `(offset, size)` of its bytes, by path.
pub fn layer_positions(
    archive: &Path,
    layers: &[Layer],
) -> Result<BTreeMap<String, (u64, u64)>, OciError> {
    let io = |source| OciError::Io {
        path: archive.to_path_buf(),
        source,
    };
    let wanted: std::collections::BTreeSet<&str> = layers.iter().map(|l| l.path.as_str()).collect();
    let mut ar = tar::Archive::new(fs::File::open(archive).map_err(io)?);
    let mut found = BTreeMap::new();
    for entry in ar.entries_with_seek().map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?;
        let path = path.to_string_lossy();
        let path = path.trim_start_matches("./");
        if wanted.contains(path) && entry.header().entry_type().is_file() {
            found.insert(path.to_string(), (entry.raw_file_position(), entry.size()));
        }
    }
    match layers.iter().find(|l| !found.contains_key(&l.path)) {
        Some(missing) => Err(fmt_err(format!(
            "layer {} is missing from the archive",
            missing.path
        ))),
        None => Ok(found),
    }
}

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
            .map_err(|e| fmt_err(format!("layer {}: {e}", layer.path)))?;
        let diff_id = format!("sha256:{}", hex::encode(self.plain_hash.finalize()));
        let stored_digest = match self.plain {
            Plain::Gzip(gz) => {
                let mut stored = gz.into_inner();
                std::io::copy(&mut stored, &mut std::io::sink())
                    .map_err(|e| fmt_err(format!("layer {}: {e}", layer.path)))?;
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

/// Options for [`pack_rootfs`]: the image's default command and environment.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    pub config: RuntimeConfig,
    /// Name recorded as `org.opencontainers.image.ref.name` (default `latest`).
    pub ref_name: Option<String>,
}

/// Summary of a packed archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackedImage {
    pub config_digest: String,
    pub layer_digest: String,
    pub files: u64,
    pub size: u64,
}

/// Writes a deterministic single-layer `oci-archive` of `rootfs` to `out` (atomically).
/// Symlinks are stored as symlinks; owners are root; times are zero.
pub fn pack_rootfs(rootfs: &Path, out: &Path, opts: &PackOptions) -> Result<PackedImage, OciError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OciError::Io {
            path: path.clone(),
            source,
        }
    };
    if !rootfs.is_dir() {
        return Err(fmt_err(format!("{} is not a directory", rootfs.display())));
    }
    // 1. The layer tar, in memory (images packed this way are small by design).
    let mut files = 0u64;
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    let mut paths = Vec::new();
    while let Some(rel) = stack.pop() {
        let dir = rootfs.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        names.sort();
        for name in names.into_iter().rev() {
            let r = rel.join(name);
            let meta = fs::symlink_metadata(rootfs.join(&r)).map_err(io(&rootfs.join(&r)))?;
            if meta.is_dir() {
                stack.push(r.clone());
            }
            paths.push(r);
        }
    }
    paths.sort();
    for rel in &paths {
        let full = rootfs.join(rel);
        let meta = fs::symlink_metadata(&full).map_err(io(&full))?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            h.set_mode(meta.permissions().mode() & 0o7777);
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(io(&full))?;
            h.set_size(0);
            layer.append_link(&mut h, rel, &target).map_err(io(&full))?;
        } else if meta.is_dir() {
            h.set_size(0);
            layer
                .append_data(&mut h, rel, std::io::empty())
                .map_err(io(&full))?;
        } else if meta.is_file() {
            files += 1;
            let f = fs::File::open(&full).map_err(io(&full))?;
            layer.append_data(&mut h, rel, f).map_err(io(&full))?;
        }
    }
    let layer = layer.into_inner().map_err(io(rootfs))?;
    let layer_digest = sha256_digest(&layer);

    // 2. Config, manifest, index.
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": opts.config,
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
    }))
    .unwrap_or_default();
    let manifest_digest = sha256_digest(&manifest);
    let ref_name = opts.ref_name.clone().unwrap_or_else(|| "latest".into());
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": ref_name },
        }],
    }))
    .unwrap_or_default();

    // 3. The archive.
    let mut ar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8], dir: bool| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if dir {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
        }
        ar.append_data(&mut h, path, bytes)
    };
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    (|| -> std::io::Result<()> {
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, false)?;
        add("blobs/", &[], true)?;
        add("blobs/sha256/", &[], true)?;
        add(&blob(&layer_digest), &layer, false)?;
        add(&blob(&config_digest), &config, false)?;
        add(&blob(&manifest_digest), &manifest, false)?;
        add("index.json", &index, false)
    })()
    .map_err(io(out))?;
    let bytes = ar.into_inner().map_err(io(out))?;
    crate::fsutil::write_atomic(out, &bytes).map_err(io(out))?;
    Ok(PackedImage {
        config_digest,
        layer_digest,
        files,
        size: bytes.len() as u64,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("bin")).unwrap();
        fs::write(d.path().join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::create_dir_all(d.path().join("www")).unwrap();
        fs::write(d.path().join("www/index.html"), b"<h1>hi</h1>").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("hello", d.path().join("bin/hi")).unwrap();
        d
    }

    #[test]
    fn packed_archive_inspects_and_is_deterministic() {
        let root = rootfs();
        let out = tempfile::tempdir().unwrap();
        let opts = PackOptions {
            config: RuntimeConfig {
                cmd: Some(vec!["/bin/hello".into()]),
                ..Default::default()
            },
            ref_name: None,
        };
        let a = pack_rootfs(root.path(), &out.path().join("a.tar"), &opts).unwrap();
        let b = pack_rootfs(root.path(), &out.path().join("b.tar"), &opts).unwrap();
        assert_eq!(
            fs::read(out.path().join("a.tar")).unwrap(),
            fs::read(out.path().join("b.tar")).unwrap()
        );
        assert_eq!(a, b);
        assert_eq!(a.files, 2);
        let info = inspect(&out.path().join("a.tar")).unwrap();
        assert_eq!(info.format, ArchiveFormat::OciArchive);
        assert_eq!(info.config_digest, a.config_digest);
        assert_eq!(info.config.cmd, Some(vec!["/bin/hello".to_string()]));
        assert_eq!(info.layers.len(), 1);
    }

    #[test]
    fn an_archive_of_many_json_documents_is_refused_at_the_metadata_budget() {
        let mut b = tar::Builder::new(Vec::new());
        let doc = format!("{{\"pad\": \"{}\"}}", "x".repeat(1 << 20));
        for i in 0..(MAX_METADATA_TOTAL >> 20) + 2 {
            let mut h = tar::Header::new_ustar();
            h.set_size(doc.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("blobs/sha256/{i}"), doc.as_bytes())
                .unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let e = inspect_reader(&bytes[..]).unwrap_err().to_string();
        assert!(e.contains("bytes of JSON documents"), "{e}");
    }

    #[test]
    fn garbage_is_not_an_image() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.tar");
        fs::write(&p, b"definitely not a tar archive at all, not even close").unwrap();
        assert!(matches!(inspect(&p), Err(OciError::Format(_))));
    }
}
