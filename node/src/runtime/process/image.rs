//! Unpacking an image archive into a root filesystem for the process runtime.
//!
//! Every image is hostile until it has been unpacked without harm: it comes from a
//! stranger on the marketplace or from a catalog whose key may be stolen, and it is
//! unpacked by root before any sandbox exists. So no path from the image is ever joined
//! to a host path. The rootfs is opened once, and every create, remove and whiteout
//! goes through a directory handle resolved with `openat2(RESOLVE_IN_ROOT)`: a symlink
//! in the image (absolute, relative or full of `..`) resolves inside the rootfs, as it
//! would for the app, never on the host. The last component of an entry is then created
//! or removed in that directory by name (`mkdirat`, `openat(O_EXCL|O_NOFOLLOW)`,
//! `unlinkat`), so it is never followed either.
//!
//! The layers are applied bottom first, the way an engine does: `.wh.NAME` removes
//! `NAME` from the layers below and `.wh..wh..opq` hides everything below in its
//! directory. Ownership and modes are kept, but setuid and setgid bits are cleared,
//! device nodes and fifos are skipped, hardlinks resolve inside the rootfs, and xattrs
//! (file capabilities among them) are not unpacked. Each layer must hash to its blob
//! digest (oci-archive) and, uncompressed, to the config's `rootfs.diff_ids` entry
//! (both formats): the config digest that the catalog signs so names the exact files.
//!
//! Budgets ([`UnpackLimits`]) are checked as the bytes stream, before anything is
//! allocated or written past them: uncompressed bytes and entries per image, path length
//! and depth per entry; a gzip bomb stops at the byte budget. The result appears
//! atomically: everything goes to a temp dir (0700) that is renamed into place.

use std::{
    collections::BTreeSet,
    ffi::{OsStr, OsString},
    fs,
    io::{self, Read},
    os::{fd::OwnedFd, unix::ffi::OsStrExt},
    path::{Component, Path, PathBuf},
};

use archy_catalog::oci::{self, ImageInfo, Layer, LayerStream};

use super::layer_fault::LayerFault;
use super::{io_at, json_at, ProcessError};
use rustix::{
    fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps},
    io::Errno,
};
use serde::{Deserialize, Serialize};

/// How much one image may unpack to. Defaults are generous for real images and stop
/// bombs long before they hurt; `[process.unpack]` in the node config overrides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnpackLimits {
    /// Uncompressed bytes over all layers (tar headers included).
    pub max_bytes: u64,
    /// Entries over all layers.
    pub max_entries: u64,
    /// Bytes in one entry's path or link target.
    pub max_path_bytes: usize,
    /// Components in one entry's path.
    pub max_depth: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 << 30,
            max_entries: 500_000,
            max_path_bytes: 4096,
            max_depth: 128,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unpacked {
    pub entries: u64,
    /// Uncompressed bytes read, over all layers.
    pub bytes: u64,
    /// Device nodes and fifos, which an app never gets from its image.
    pub skipped_special: u64,
    /// Files and directories whose setuid or setgid bit was cleared.
    pub cleared_setid: u64,
}

/// Unpacks every layer of `archive` into `<dest>/rootfs` and writes `<dest>/config.json`.
pub(super) fn unpack(
    archive: &Path,
    info: &ImageInfo,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, ProcessError> {
    let parent = dest
        .parent()
        .ok_or_else(|| io_at(dest)(io::Error::other("an image dir needs a parent")))?;
    super::create_private_dir(parent)?;
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
    let result = unpack_into(archive, info, &tmp, limits).and_then(|done| {
        match fs::rename(&tmp, dest) {
            Ok(()) => Ok(done),
            // Someone else finished the same image first: theirs is as good.
            Err(_) if dest.join("rootfs").is_dir() => Ok(done),
            Err(e) => Err(io_at(dest)(e)),
        }
    });
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn unpack_into(
    archive: &Path,
    info: &ImageInfo,
    tmp: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, ProcessError> {
    super::create_private_dir(tmp)?;
    let rootfs_path = tmp.join("rootfs");
    fs::create_dir(&rootfs_path).map_err(io_at(&rootfs_path))?;
    let rootfs = Rootfs::open(&rootfs_path).map_err(io_at(&rootfs_path))?;
    let positions = oci::layer_positions(archive, &info.layers)?;
    let mut state = UnpackState {
        limits: *limits,
        done: Unpacked::default(),
    };
    for layer in &info.layers {
        let at = |fault| ProcessError::Layer {
            layer: layer.path.clone(),
            fault,
        };
        let place = positions
            .get(&layer.path)
            .copied()
            .ok_or_else(|| at(LayerFault::MissingFromArchive))?;
        apply_layer(archive, place, layer, &rootfs, &mut state).map_err(at)?;
    }
    let path = tmp.join("config.json");
    let config = serde_json::to_vec_pretty(&info.config).map_err(json_at(&path))?;
    fs::write(&path, config).map_err(io_at(&path))?;
    Ok(state.done)
}

/// The budgets and what has been spent of them, over all layers of one image.
struct UnpackState {
    limits: UnpackLimits,
    done: Unpacked,
}

fn apply_layer(
    archive: &Path,
    at: (u64, u64),
    layer: &Layer,
    rootfs: &Rootfs,
    state: &mut UnpackState,
) -> Result<(), LayerFault> {
    let left = state.limits.max_bytes.saturating_sub(state.done.bytes);
    let mut stream = LayerStream::open(archive, at, left)?;
    extract(&mut stream, rootfs, state)?;
    state.done.bytes += stream.finish(layer)?;
    Ok(())
}

/// An entry's path as relative components: `None` for the archive root. Absolute paths,
/// `..`, and paths over the length or depth budget are refused.
fn entry_path(raw: &[u8], limits: &UnpackLimits) -> Result<Option<PathBuf>, LayerFault> {
    let refused = |fault| Err(LayerFault::at_entry(raw)(fault));
    if raw.len() > limits.max_path_bytes {
        return refused(LayerFault::PathTooLong(limits.max_path_bytes));
    }
    let path = Path::new(OsStr::from_bytes(raw));
    if path.is_absolute() {
        return refused(LayerFault::AbsolutePath);
    }
    let mut out = PathBuf::new();
    let mut depth = 0;
    for c in path.components() {
        match c {
            Component::Normal(p) => {
                depth += 1;
                out.push(p);
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return refused(LayerFault::LeavesRoot)
            }
        }
    }
    if depth > limits.max_depth {
        return refused(LayerFault::TooDeep(limits.max_depth));
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn extract(
    layer: &mut impl Read,
    rootfs: &Rootfs,
    state: &mut UnpackState,
) -> Result<(), LayerFault> {
    let mut ar = tar::Archive::new(layer);
    let mut written: BTreeSet<PathBuf> = BTreeSet::new();
    let mut opaque: Vec<PathBuf> = Vec::new();
    // The parent of the last entry, resolved: entries of one directory come in a row, and
    // an entry only changes its parent's children, never how the parent resolves (a
    // whiteout may remove the parent itself: it drops the handle).
    let mut parent: Option<(PathBuf, OwnedFd)> = None;
    for entry in ar.entries()? {
        let mut entry = entry?;
        state.done.entries += 1;
        if state.done.entries > state.limits.max_entries {
            return Err(LayerFault::TooManyEntries(state.limits.max_entries));
        }
        let Some(rel) = entry_path(&entry.path_bytes(), &state.limits)? else {
            continue;
        };
        let name = rel.file_name().unwrap_or_default().to_os_string();
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name_bytes = name.as_bytes();
        if name_bytes == b".wh..wh..opq" {
            opaque.push(dir);
            continue;
        }
        if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(LayerFault::at_entry(rel.as_os_str().as_bytes())(
                    LayerFault::WhiteoutOfNothing,
                ));
            }
            // It may remove the directory the cached parent handle points into.
            parent = None;
            if let Some(fd) = rootfs.dir(&dir)? {
                remove_at(&fd, OsStr::from_bytes(hidden)).map_err(|fault| {
                    LayerFault::Whiteout {
                        entry: rel.display().to_string(),
                        fault: Box::new(fault),
                    }
                })?;
            }
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            state.done.skipped_special += 1;
            continue;
        }
        if parent.as_ref().is_none_or(|(p, _)| *p != dir) {
            let fd = rootfs
                .dir_created(&dir)
                .map_err(LayerFault::at_entry(rel.as_os_str().as_bytes()))?;
            parent = Some((dir.clone(), fd));
        }
        if let Some((_, fd)) = &parent {
            apply_entry(&mut entry, &rel, fd, &name, rootfs, state)
                .map_err(LayerFault::at_entry(rel.as_os_str().as_bytes()))?;
        }
        written.insert(rel);
    }
    for dir in opaque {
        if let Some(fd) = rootfs.dir(&dir)? {
            clear_lower(&fd, &dir, &written)?;
        }
    }
    Ok(())
}

/// Applies one entry (not a whiteout, device or fifo) as `name` in `parent`.
fn apply_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    rel: &Path,
    parent: &OwnedFd,
    name: &OsStr,
    rootfs: &Rootfs,
    state: &mut UnpackState,
) -> Result<(), LayerFault> {
    let header = entry.header();
    let kind = header.entry_type();
    let uid = header.uid()?;
    let gid = header.gid()?;
    let owner = (
        Some(rfs::Uid::from_raw(
            u32::try_from(uid).map_err(|_| LayerFault::IdOutOfRange("uid"))?,
        )),
        Some(rfs::Gid::from_raw(
            u32::try_from(gid).map_err(|_| LayerFault::IdOutOfRange("gid"))?,
        )),
    );
    let mode = header.mode()?;
    let kept = mode & 0o1777;
    if mode & 0o6000 != 0 && (kind.is_file() || kind.is_dir()) {
        state.done.cleared_setid += 1;
    }
    let mtime = i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0);
    if kind.is_dir() {
        let existing = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW);
        if !existing
            .is_ok_and(|s| rfs::FileType::from_raw_mode(s.st_mode) == rfs::FileType::Directory)
        {
            remove_at(parent, name)?;
            rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
        }
        let fd = rfs::openat(
            parent,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rfs::fchown(&fd, owner.0, owner.1)?;
        rfs::fchmod(&fd, Mode::from_raw_mode(kept))?;
    } else if kind.is_symlink() {
        let target = entry
            .link_name_bytes()
            .ok_or(LayerFault::LinkWithoutTarget("symlink"))?;
        if target.len() > state.limits.max_path_bytes {
            return Err(LayerFault::LinkTargetTooLong);
        }
        remove_at(parent, name)?;
        rfs::symlinkat(OsStr::from_bytes(&target), parent, name)?;
        rfs::chownat(parent, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)?;
    } else if kind.is_hard_link() {
        let target = entry
            .link_name_bytes()
            .ok_or(LayerFault::LinkWithoutTarget("hardlink"))?;
        let Some(target) = entry_path(&target, &state.limits)? else {
            return Err(LayerFault::HardlinkToRoot);
        };
        if target == rel {
            return Ok(());
        }
        let (Some(tdir), Some(tname)) = (target.parent(), target.file_name()) else {
            return Err(LayerFault::HardlinkToRoot);
        };
        let Some(tparent) = rootfs.dir(tdir)? else {
            return Err(LayerFault::HardlinkOutside(target));
        };
        remove_at(parent, name)?;
        rfs::linkat(&tparent, tname, parent, name, AtFlags::empty()).map_err(|e| {
            LayerFault::Hardlink {
                target: target.clone(),
                source: e.into(),
            }
        })?;
    } else if kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse() {
        remove_at(parent, name)?;
        let fd = rfs::openat(
            parent,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut file = fs::File::from(fd);
        copy_contents(entry, &mut file)?;
        rfs::fchown(&file, owner.0, owner.1)?;
        rfs::fchmod(&file, Mode::from_raw_mode(kept))?;
        let t = Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        };
        rfs::futimens(
            &file,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )?;
    }
    // Other kinds (PAX and GNU metadata are consumed by the tar reader) carry no file.
    Ok(())
}

/// Copies a file's contents in 256 KiB writes (`io::copy` would use 8 KiB ones).
fn copy_contents(from: &mut impl Read, to: &mut fs::File) -> io::Result<()> {
    use std::io::Write;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The image's root directory, held open: every path inside is resolved from it.
struct Rootfs {
    fd: OwnedFd,
}

/// Symlinks resolve as if the rootfs were `/`; `/proc/self/...`-style magic links and
/// other filesystems are never entered.
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

impl Rootfs {
    fn open(path: &Path) -> io::Result<Self> {
        let fd = rfs::openat(
            rfs::CWD,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    /// The directory `rel` resolved inside the root, if there is one.
    fn dir(&self, rel: &Path) -> Result<Option<OwnedFd>, LayerFault> {
        let path = match rel.as_os_str().is_empty() {
            true => Path::new("."),
            false => rel,
        };
        match rfs::openat2(
            &self.fd,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(LayerFault::Resolve {
                path: rel.to_path_buf(),
                source: e.into(),
            }),
        }
    }

    /// The directory `rel`, created (0755, owned by root) where it is missing.
    fn dir_created(&self, rel: &Path) -> Result<OwnedFd, LayerFault> {
        if let Some(fd) = self.dir(rel)? {
            return Ok(fd);
        }
        let mut prefix = PathBuf::new();
        let mut current = self.dir(Path::new(""))?.ok_or(LayerFault::RootfsGone)?;
        for c in rel.components() {
            prefix.push(c);
            if let Some(fd) = self.dir(&prefix)? {
                current = fd;
                continue;
            }
            match rfs::mkdirat(&current, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            current = self
                .dir(&prefix)?
                .ok_or_else(|| LayerFault::NotADirectory(prefix.clone()))?;
        }
        Ok(current)
    }
}

/// Removes `name` from the directory `dir` (recursively for a directory) without
/// following any symlink; nothing there is fine.
fn remove_at(dir: &OwnedFd, name: &OsStr) -> Result<(), LayerFault> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => {
            let child = rfs::openat(
                dir,
                name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            for (n, _) in children(&child)? {
                remove_at(&child, &n)?;
            }
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The entries of a directory (without `.` and `..`), and whether each is a directory.
fn children(dir: &OwnedFd) -> Result<Vec<(OsString, bool)>, LayerFault> {
    let mut out = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name).to_os_string();
        let is_dir = match e.file_type() {
            rfs::FileType::Directory => true,
            rfs::FileType::Unknown => rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| rfs::FileType::from_raw_mode(s.st_mode) == rfs::FileType::Directory),
            _ => false,
        };
        out.push((name, is_dir));
    }
    Ok(out)
}

/// Removes what lower layers left in an opaque dir, keeping what this layer wrote.
fn clear_lower(dir: &OwnedFd, rel: &Path, written: &BTreeSet<PathBuf>) -> Result<(), LayerFault> {
    for (name, is_dir) in children(dir)? {
        let child_rel = rel.join(&name);
        if !written.contains(&child_rel) {
            remove_at(dir, &name)?;
        } else if is_dir {
            let child = rfs::openat(
                dir,
                &name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            clear_lower(&child, &child_rel, written)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tar entry of a test layer.
    enum E<'a> {
        File(&'a str, &'a str),
        Dir(&'a str),
    }

    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match e {
                E::File(path, content) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(content.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, content.as_bytes())
                        .expect("append");
                }
                E::Dir(path) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).expect("append");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    fn extract_into(root: &Path, bytes: &[u8]) -> Result<(), LayerFault> {
        let rootfs = Rootfs::open(root).expect("open rootfs");
        let mut state = UnpackState {
            limits: UnpackLimits::default(),
            done: Unpacked::default(),
        };
        extract(&mut &bytes[..], &rootfs, &mut state)
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        let lower = layer(&[
            E::Dir("etc/"),
            E::File("etc/keep", "k"),
            E::File("etc/gone", "g"),
            E::Dir("var/"),
            E::Dir("var/old/"),
            E::File("var/old/x", "x"),
            E::File("var/y", "y"),
        ]);
        extract_into(root, &lower).expect("lower");
        let upper = layer(&[
            E::File("etc/.wh.gone", ""),
            E::Dir("var/"),
            E::File("var/new", "n"),
            E::File("var/.wh..wh..opq", ""),
            E::File("etc/keep", "k2"),
        ]);
        extract_into(root, &upper).expect("upper");
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
    fn a_whiteout_of_the_directory_being_filled_is_followed() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        extract_into(
            root,
            &layer(&[E::Dir("a/"), E::Dir("a/b/"), E::File("a/b/1", "1")]),
        )
        .expect("lower");
        let upper = layer(&[
            E::File("a/b/2", "2"),
            E::File("a/.wh.b", ""),
            E::File("a/b/3", "3"),
        ]);
        extract_into(root, &upper).expect("upper");
        assert!(!root.join("a/b/1").exists() && !root.join("a/b/2").exists());
        assert_eq!(fs::read_to_string(root.join("a/b/3")).expect("3"), "3");
    }

    #[test]
    fn paths_are_checked_against_the_budgets() {
        let limits = UnpackLimits {
            max_path_bytes: 16,
            max_depth: 3,
            ..UnpackLimits::default()
        };
        assert_eq!(
            entry_path(b"./a/b/", &limits).expect("ok"),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(entry_path(b"./", &limits).expect("ok"), None);
        let refused = |bad: &[u8]| match entry_path(bad, &limits) {
            Err(LayerFault::Entry { entry, fault }) => {
                assert_eq!(entry.as_bytes(), bad);
                *fault
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(bad)),
        };
        assert!(matches!(refused(b"/etc/passwd"), LayerFault::AbsolutePath));
        assert!(matches!(refused(b"a/../../x"), LayerFault::LeavesRoot));
        assert!(matches!(refused(b"a/b/c/d"), LayerFault::TooDeep(3)));
        assert!(matches!(
            refused(b"aaaaaaaaaaaaaaaaaaaaaaa"),
            LayerFault::PathTooLong(16)
        ));
    }
}
