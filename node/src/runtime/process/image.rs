//! Unpacking an image archive into a root filesystem for the process runtime.
//!
//! There is no engine to hand the archive to, so the layers are applied here, bottom
//! first, the way an engine does: regular entries are unpacked (ownership, modes and
//! mtimes kept; nothing may land outside the rootfs; gzip-compressed layers, as
//! `podman save --format oci-archive` writes them, are decompressed), `.wh.NAME` removes `NAME` from the
//! layers below and `.wh..wh..opq` hides everything below in its directory. A layer
//! stored as `blobs/sha256/<hex>` must hash to that digest. The result appears
//! atomically: everything goes to a temp dir that is renamed into place.

use std::{
    collections::BTreeSet,
    fs,
    io::{self, BufRead, BufReader, Read},
    path::{Component, Path, PathBuf},
};

use archy_catalog::oci::ImageInfo;
use sha2::{Digest, Sha256};

use super::{io_at, ProcessError};

/// Unpacks every layer of `archive` into `<dest>/rootfs` and writes `<dest>/config.json`.
pub(super) fn unpack(archive: &Path, info: &ImageInfo, dest: &Path) -> Result<(), ProcessError> {
    let parent = dest
        .parent()
        .ok_or_else(|| ProcessError::Invalid(format!("bad image dir {}", dest.display())))?;
    fs::create_dir_all(parent).map_err(io_at(parent))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Leftovers of an interrupted unpack of this image.
    if let Ok(entries) = fs::read_dir(parent) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!(".tmp-{name}-"))
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    let result = unpack_into(archive, info, &tmp).and_then(|()| {
        match fs::rename(&tmp, dest) {
            Ok(()) => Ok(()),
            // Someone else finished the same image first: theirs is as good.
            Err(_) if dest.join("rootfs").is_dir() => Ok(()),
            Err(e) => Err(io_at(dest)(e)),
        }
    });
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn unpack_into(archive: &Path, info: &ImageInfo, tmp: &Path) -> Result<(), ProcessError> {
    let rootfs = tmp.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(io_at(&rootfs))?;
    for layer in &info.layers {
        apply_layer(archive, layer, &rootfs).map_err(|e| match e {
            LayerError::Io(e) => ProcessError::Layer {
                layer: layer.clone(),
                message: e.to_string(),
            },
            LayerError::Bad(message) => ProcessError::Layer {
                layer: layer.clone(),
                message,
            },
        })?;
    }
    let config = serde_json::to_vec_pretty(&info.config)
        .map_err(|e| ProcessError::Invalid(format!("image config: {e}")))?;
    let path = tmp.join("config.json");
    fs::write(&path, config).map_err(io_at(&path))?;
    Ok(())
}

#[derive(Debug)]
enum LayerError {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for LayerError {
    fn from(e: io::Error) -> Self {
        LayerError::Io(e)
    }
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// The path inside the archive as relative components; `None` for the archive root.
fn relative(path: &Path) -> Result<Option<PathBuf>, LayerError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(LayerError::Bad(format!(
                    "entry {} leaves the root",
                    path.display()
                )))
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn apply_layer(archive: &Path, layer: &str, rootfs: &Path) -> Result<(), LayerError> {
    let expected = layer
        .strip_prefix("blobs/sha256/")
        .filter(|h| h.len() == 64)
        .map(str::to_ascii_lowercase);
    let mut outer = tar::Archive::new(BufReader::new(fs::File::open(archive)?));
    for entry in outer.entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if path.trim_start_matches("./") != layer {
            continue;
        }
        let mut hashing = Hashing {
            inner: BufReader::new(entry),
            hash: Sha256::new(),
        };
        match hashing.inner.fill_buf()? {
            [0x1f, 0x8b, ..] => {
                let mut gz = flate2::read::MultiGzDecoder::new(&mut hashing);
                extract(&mut gz, rootfs)?;
                io::copy(&mut gz, &mut io::sink())?;
            }
            [0x28, 0xb5, 0x2f, 0xfd, ..] => {
                return Err(LayerError::Bad(
                    "zstd-compressed layers are not supported by the process runtime (use gzip or none)".into(),
                ))
            }
            _ => extract(&mut hashing, rootfs)?,
        }
        io::copy(&mut hashing, &mut io::sink())?;
        let actual = hex::encode(hashing.hash.finalize());
        if let Some(expected) = expected {
            if actual != expected {
                return Err(LayerError::Bad(format!(
                    "content does not match its digest (sha256:{actual})"
                )));
            }
        }
        return Ok(());
    }
    Err(LayerError::Bad("missing from the archive".into()))
}

fn extract(layer: &mut impl Read, rootfs: &Path) -> Result<(), LayerError> {
    let mut ar = tar::Archive::new(layer);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    let mut written: BTreeSet<PathBuf> = BTreeSet::new();
    let mut opaque: Vec<PathBuf> = Vec::new();
    for entry in ar.entries()? {
        let mut entry = entry?;
        let Some(rel) = relative(&entry.path()?)? else {
            continue;
        };
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == ".wh..wh..opq" {
            opaque.push(dir);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_inside(rootfs, &dir.join(hidden))?;
            continue;
        }
        // A path changing kind (file to dir, dir to symlink, ...) replaces the old one.
        let is_dir = entry.header().entry_type().is_dir();
        if let Some(target) = inside(rootfs, &rel)? {
            if let Ok(old) = fs::symlink_metadata(&target) {
                if !(is_dir && old.is_dir()) {
                    remove_path(&target, &old)?;
                }
            }
        }
        if !entry.unpack_in(rootfs)? {
            return Err(LayerError::Bad(format!(
                "entry {} leaves the root",
                rel.display()
            )));
        }
        written.insert(rel);
    }
    for dir in opaque {
        if let Some(abs) = inside(rootfs, &dir)? {
            clear_lower(&abs, &dir, &written)?;
        }
    }
    Ok(())
}

/// `rootfs/rel` when its parent resolves inside `rootfs` (so removing or replacing it
/// cannot touch the host through a symlink); `None` when the parent does not exist.
fn inside(rootfs: &Path, rel: &Path) -> Result<Option<PathBuf>, LayerError> {
    let root = rootfs.canonicalize()?;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(None);
    };
    let parent = match root.join(parent).canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !parent.starts_with(&root) {
        return Err(LayerError::Bad(format!(
            "{} resolves outside the root",
            rel.display()
        )));
    }
    Ok(Some(parent.join(name)))
}

fn remove_path(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    match meta.is_dir() {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    }
}

fn remove_inside(rootfs: &Path, rel: &Path) -> Result<(), LayerError> {
    if let Some(target) = inside(rootfs, rel)? {
        if let Ok(meta) = fs::symlink_metadata(&target) {
            remove_path(&target, &meta)?;
        }
    }
    Ok(())
}

/// Removes what lower layers left in an opaque dir, keeping what this layer wrote.
fn clear_lower(abs: &Path, rel: &Path, written: &BTreeSet<PathBuf>) -> Result<(), LayerError> {
    let Ok(entries) = fs::read_dir(abs) else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let child_rel = rel.join(e.file_name());
        let meta = fs::symlink_metadata(e.path())?;
        if !written.contains(&child_rel) {
            remove_path(&e.path(), &meta)?;
        } else if meta.is_dir() {
            clear_lower(&e.path(), &child_rel, written)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match content {
                Some(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(c.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, c.as_bytes()).expect("append");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).expect("append");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        let lower = layer(&[
            ("etc/", None),
            ("etc/keep", Some("k")),
            ("etc/gone", Some("g")),
            ("var/", None),
            ("var/old/", None),
            ("var/old/x", Some("x")),
            ("var/y", Some("y")),
        ]);
        extract(&mut &lower[..], root).expect("lower");
        let upper = layer(&[
            ("etc/.wh.gone", Some("")),
            ("var/", None),
            ("var/new", Some("n")),
            ("var/.wh..wh..opq", Some("")),
            ("etc/keep", Some("k2")),
        ]);
        extract(&mut &upper[..], root).expect("upper");
        assert_eq!(
            fs::read_to_string(root.join("etc/keep")).expect("keep"),
            "k2"
        );
        assert!(!root.join("etc/gone").exists(), "whiteout removes");
        assert!(
            !root.join("var/y").exists() && !root.join("var/old").exists(),
            "opaque hides lower"
        );
        assert_eq!(
            fs::read_to_string(root.join("var/new")).expect("new"),
            "n",
            "opaque keeps this layer"
        );
        assert!(!root.join("var/.wh..wh..opq").exists() && !root.join("etc/.wh.gone").exists());
    }

    #[test]
    fn entries_cannot_leave_the_root() {
        let d = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("victim"), "v").expect("write");
        let root = d.path().join("rootfs");
        fs::create_dir_all(&root).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), root.join("link")).expect("symlink");
        for evil in [
            ("link/victim", Some("pwned")),
            ("link/.wh.victim", Some("")),
        ] {
            let evil = layer(&[evil]);
            let err = extract(&mut &evil[..], &root).unwrap_err();
            assert!(format!("{err:?}").contains("outside"), "{err:?}");
        }
        assert_eq!(
            fs::read_to_string(outside.path().join("victim")).expect("victim"),
            "v"
        );
    }
}
