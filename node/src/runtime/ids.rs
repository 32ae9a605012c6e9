//! Each app's own block of host user and group ids, so that root in an app is nobody on
//! the host.
//!
//! Both runtimes run an app in a user namespace whose ids 0..65535 map to a block of
//! 65,536 host ids that belongs to that app alone (podman's `--uidmap`, the process
//! runtime's own namespace). The block is chosen once per app and kept in
//! `<data>/id-ranges.json`, so a reinstalled app finds its files with the owners it left.
//! Blocks come from a pool (by default 65,536 blocks from host id 1,000,000,000 on, as
//! LXD and systemd-nspawn pick theirs), skipping every range `/etc/subuid` and
//! `/etc/subgid` hand to someone else.
//!
//! [`shift_owners`] moves a tree the app owns (a volume, its secrets) into its block:
//! ids below 65,536 become `start + id`; it never follows a symlink.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    fs,
    os::{fd::OwnedFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

use archy_confine::idmap::{self, IdRange};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use super::RuntimeError;

/// Ids per app: a whole 16-bit range, as podman and LXD give a container.
pub const PER_APP: u32 = idmap::APP_RANGE;

/// Where app blocks are taken from unless the node config says otherwise.
pub const DEFAULT_POOL: IdRange = IdRange {
    start: 1_000_000_000,
    count: PER_APP * 16_384,
};

/// The blocks handed out on one node, by app id.
#[derive(Debug, Clone)]
pub struct IdRanges {
    path: PathBuf,
    pool: IdRange,
}

impl IdRanges {
    /// The allocations kept at `path`, taken from `pool`.
    pub fn new(path: impl Into<PathBuf>, pool: IdRange) -> Self {
        Self {
            path: path.into(),
            pool,
        }
    }

    /// The first host id of `app`'s block, allocated now if it has none.
    pub fn for_app(&self, app: &str) -> Result<u32, RuntimeError> {
        let lock_path = self.path.with_extension("lock");
        let _lock = super::process::lock(&lock_path, nix::fcntl::FlockArg::LockExclusive)?;
        let mut table = self.read()?;
        if let Some(start) = table.get(app) {
            return Ok(*start);
        }
        let mut taken: BTreeSet<u32> = table.values().copied().collect();
        // Blocks that overlap a range the host gave someone else are never used.
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(file).unwrap_or_default();
            for r in parse_all(&text) {
                let mut slot = self.pool.start;
                while slot < self.pool.start.saturating_add(self.pool.count) {
                    if overlaps(slot, PER_APP, r) {
                        taken.insert(slot);
                    }
                    slot = slot.saturating_add(PER_APP);
                }
            }
        }
        let start = idmap::allocate(&[self.pool], &taken, PER_APP).ok_or_else(|| {
            RuntimeError::IdPoolFull {
                app: app.to_string(),
                per_app: PER_APP,
                start: self.pool.start,
                end: u64::from(self.pool.start) + u64::from(self.pool.count),
            }
        })?;
        table.insert(app.to_string(), start);
        let bytes = serde_json::to_vec_pretty(&table).map_err(|source| RuntimeError::Json {
            what: self.path.display().to_string(),
            source,
        })?;
        archy_catalog::fsutil::write_atomic_mode(&self.path, &bytes, Some(0o600))?;
        Ok(start)
    }

    fn read(&self) -> Result<BTreeMap<String, u32>, RuntimeError> {
        match fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| RuntimeError::Json {
                what: self.path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Every `name:start:count` range of a subuid/subgid file, whoever it is for.
fn parse_all(text: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (_, start, count) = (f.next()?, f.next()?, f.next()?);
            Some(IdRange {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            })
        })
        .collect()
}

fn overlaps(start: u32, count: u32, r: IdRange) -> bool {
    let (a0, a1) = (u64::from(start), u64::from(start) + u64::from(count));
    let (b0, b1) = (u64::from(r.start), u64::from(r.start) + u64::from(r.count));
    a0 < b1 && b0 < a1
}

/// Moves the owners of everything in `dir` (itself included) below [`PER_APP`] into the
/// block at `start`; owners already in the block stay. Symlinks are changed themselves,
/// never followed. Returns how many entries changed.
pub fn shift_owners(dir: &Path, start: u32) -> Result<u64, RuntimeError> {
    let fd = rfs::openat(
        rfs::CWD,
        dir,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::Io(std::io::Error::from(e)))?;
    let mut changed = 0;
    shift_one(&fd, OsStr::new("."), start, &mut changed)?;
    shift_tree(&fd, start, &mut changed, 0)?;
    Ok(changed)
}

/// Gives a tree the app owns (its writable layer, a volume) to its block: shifted once,
/// the first time (a tree whose top is owned by the block was shifted before; what the
/// app makes in it afterwards is the block's already). Returns how many entries changed.
pub fn give_to_block(dir: &Path, start: u32) -> Result<u64, RuntimeError> {
    use std::os::unix::fs::MetadataExt;
    match fs::symlink_metadata(dir).is_ok_and(|m| m.uid() == start && m.gid() == start) {
        true => Ok(0),
        false => shift_owners(dir, start),
    }
}

fn shift_one(
    dir: &OwnedFd,
    name: &OsStr,
    start: u32,
    changed: &mut u64,
) -> Result<(), RuntimeError> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(std::io::Error::from)?;
    let shift = |id: u32| (id < PER_APP).then(|| start + id);
    let (uid, gid) = (shift(st.st_uid), shift(st.st_gid));
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    rfs::chownat(
        dir,
        name,
        uid.map(rfs::Uid::from_raw),
        gid.map(rfs::Gid::from_raw),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)?;
    // chown clears setuid/setgid; keep the mode otherwise as it was.
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Symlink {
        let _ = rfs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(st.st_mode & 0o1777),
            AtFlags::empty(),
        );
    }
    *changed += 1;
    Ok(())
}

fn shift_tree(
    dir: &OwnedFd,
    start: u32,
    changed: &mut u64,
    depth: usize,
) -> Result<(), RuntimeError> {
    if depth > 4096 {
        return Err(RuntimeError::TreeTooDeep);
    }
    let mut subdirs = Vec::new();
    for e in rfs::Dir::read_from(dir).map_err(std::io::Error::from)? {
        let e = e.map_err(std::io::Error::from)?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name).to_os_string();
        shift_one(dir, &name, start, changed)?;
        let is_dir = match e.file_type() {
            rfs::FileType::Directory => true,
            rfs::FileType::Unknown => rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| rfs::FileType::from_raw_mode(s.st_mode) == rfs::FileType::Directory),
            _ => false,
        };
        if is_dir {
            subdirs.push(name);
        }
    }
    for name in subdirs {
        let child = rfs::openat(
            dir,
            &name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        shift_tree(&child, start, changed, depth + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_kept_per_app_and_never_shared() {
        let d = tempfile::tempdir().expect("tempdir");
        let ids = IdRanges::new(d.path().join("id-ranges.json"), DEFAULT_POOL);
        let a = ids.for_app("org.example.a").expect("a");
        let b = ids.for_app("org.example.b").expect("b");
        assert_ne!(a, b);
        assert_eq!(
            (a - DEFAULT_POOL.start) % PER_APP,
            0,
            "blocks are aligned in the pool"
        );
        assert!(a >= DEFAULT_POOL.start && b >= DEFAULT_POOL.start);
        // Found again, also by a new handle on the same file (a restarted daemon).
        let again = IdRanges::new(d.path().join("id-ranges.json"), DEFAULT_POOL);
        assert_eq!(again.for_app("org.example.a").expect("a"), a);
    }

    #[test]
    fn a_full_pool_is_a_clear_error() {
        let d = tempfile::tempdir().expect("tempdir");
        let pool = IdRange {
            start: DEFAULT_POOL.start,
            count: PER_APP,
        };
        let ids = IdRanges::new(d.path().join("ids.json"), pool);
        ids.for_app("one").expect("one");
        let e = ids.for_app("two").expect_err("full").to_string();
        assert!(e.contains("no free block") && e.contains("two"), "{e}");
    }

    #[test]
    fn subid_ranges_overlap_by_arithmetic() {
        let r = IdRange {
            start: 100_000,
            count: 65_536,
        };
        assert!(overlaps(100_000, 10, r));
        assert!(overlaps(165_535, 10, r));
        assert!(!overlaps(165_536, 10, r));
        assert!(!overlaps(0, 100_000, r));
        assert_eq!(parse_all("a:100000:65536\n#x\nb:1:2:3\n").len(), 2);
    }
}
