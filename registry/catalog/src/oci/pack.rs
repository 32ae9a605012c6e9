//! Writing a deterministic single-layer `oci-archive` from a directory, with no
//! container engine, so developers and tests can make images anywhere.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{fmt_err, sha256_digest, OciError, RuntimeConfig};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{inspect, ArchiveFormat};

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
}
