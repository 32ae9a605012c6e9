//! Reading what Archy needs from an archive (format, config digest, runtime config,
//! layer list) without holding its layers, and finding where each layer sits in it.

use std::{collections::BTreeMap, fs, io::Read, path::Path};

use serde::Deserialize;

use super::{
    bad_json, check_digest, corrupt, fmt_err, sha256_digest, ArchiveFormat, ImageInfo, Layer,
    OciError, RuntimeConfig,
};

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
    let entries = ar.entries().map_err(corrupt("the tar"))?;
    for (n, entry) in entries.enumerate() {
        if n as u64 >= MAX_ARCHIVE_ENTRIES {
            return Err(fmt_err(format!(
                "more than {MAX_ARCHIVE_ENTRIES} entries in the archive"
            )));
        }
        let mut entry = entry.map_err(corrupt("a tar entry"))?;
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
        // JSON documents only: docker-archive's manifest.json is an array.
        if entry
            .read(&mut first)
            .map_err(corrupt(format!("tar entry {path}")))?
            == 0
            || !matches!(first[0], b'{' | b'[')
        {
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
        entry
            .read_to_end(&mut buf)
            .map_err(corrupt(format!("tar entry {path}")))?;
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
    serde_json::from_slice(bytes).map_err(bad_json(path))
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
            index = serde_json::from_slice(bytes).map_err(bad_json("nested index"))?;
            continue;
        }
        let manifest_bytes = verified_blob(small, &first.digest)?;
        let manifest: OciManifest =
            serde_json::from_slice(manifest_bytes).map_err(bad_json("image manifest"))?;
        let config_bytes = verified_blob(small, &manifest.config.digest)?;
        let config: ConfigBlob =
            serde_json::from_slice(config_bytes).map_err(bad_json("image config"))?;
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
        serde_json::from_slice(config_bytes).map_err(bad_json("image config"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = inspect(&p).unwrap_err();
        assert!(
            matches!(e, OciError::Format(_) | OciError::Corrupt { .. }),
            "{e:?}"
        );
    }
}
