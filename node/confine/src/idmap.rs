//! User-namespace id ranges and idmapped mounts.
//!
//! Each app gets its own block of host uids and gids (like each user of rootless podman
//! gets a block from `/etc/subuid`): root of the app's user namespace is the block's first
//! id, so neither the host nor another app shares an owner with it. The image's files stay
//! owned by 0, 1000, ... on disk; an idmapped mount shows them to the app's namespace
//! shifted into its block, without chowning a copy.

use std::{
    collections::BTreeSet,
    fs,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

use nix::NixPath;

use crate::{
    error::{io_error, syscall_error},
    Result,
};

/// The ids an app gets: those of a full 16-bit range, as podman gives each user.
pub const APP_RANGE: u32 = 65536;

/// `count` consecutive ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// The ranges given to `user` in a `/etc/subuid` or `/etc/subgid` text (`name:start:count`
/// lines). `user` is compared with the first field as is: lines may name a user or give
/// its numeric uid, so look up both if both may occur.
pub fn parse_subid(text: &str, user: &str) -> Vec<IdRange> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (name, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            if name != user || fields.next().is_some() {
                return None;
            }
            Some(IdRange {
                start: start.parse().ok()?,
                count: count.parse().ok()?,
            })
        })
        .collect()
}

/// The lowest start of a free block of `per_app` ids in `pool`, or `None` if there is none.
///
/// Each range of the pool is cut into blocks from its start; a block is free if it does not
/// overlap a block of `per_app` ids starting at an id in `taken` (the starts already given
/// out). Id 4294967295 (-1, "no id" to the kernel) is never part of a block.
pub fn allocate(pool: &[IdRange], taken: &BTreeSet<u32>, per_app: u32) -> Option<u32> {
    if per_app == 0 {
        return None;
    }
    let size = u64::from(per_app);
    let free = |start: u64| {
        // The first taken block that could reach into [start, start + size).
        let lowest = u32::try_from(start.saturating_sub(size - 1)).unwrap_or(u32::MAX);
        taken
            .range(lowest..)
            .next()
            .is_none_or(|&t| u64::from(t) >= start + size)
    };
    pool.iter()
        .filter_map(|range| {
            let end = (u64::from(range.start) + u64::from(range.count)).min(u64::from(u32::MAX));
            (u64::from(range.start)..)
                .step_by(per_app as usize)
                .take_while(|&start| start + size <= end)
                .find(|&start| free(start))
        })
        .min()
        .and_then(|start| u32::try_from(start).ok())
}

/// Maps uid and gid 0.. of the user namespace of process `pid` to `uid` and `gid`, by
/// writing `/proc/<pid>/uid_map` and `gid_map`. The caller must be root of the parent
/// namespace; the maps can be written once.
pub fn write_maps(pid: u32, uid: IdRange, gid: IdRange) -> Result<()> {
    for (file, range) in [("uid_map", uid), ("gid_map", gid)] {
        let path = format!("/proc/{pid}/{file}");
        let map = format!("0 {} {}\n", range.start, range.count);
        fs::write(&path, &map).map_err(io_error(format!("writing {map:?} to"), &path))?;
    }
    Ok(())
}

/// Mounts a copy of the tree at `source` on `target` (both host paths), idmapped through
/// the user namespace `userns` (an open `/proc/<pid>/ns/user` whose maps are written),
/// nosuid and nodev, with everything mounted below `source`. A file owned by id N on disk
/// then shows as owned by whatever N of `userns` is on the host.
///
/// Needs Linux 5.12 and a file system that supports idmapped mounts (ext4, xfs, btrfs,
/// tmpfs since 6.3, ...). The caller must be root of the initial namespaces, and should be
/// in the app's mount namespace with `/` made private: like any mount, this one propagates
/// to the peers of `target`'s parent mount.
pub fn idmapped_mount(source: &Path, target: &Path, userns: BorrowedFd<'_>) -> Result<()> {
    let tree = source
        .with_nix_path(|source| {
            let flags = libc::OPEN_TREE_CLONE
                | libc::OPEN_TREE_CLOEXEC
                | libc::AT_RECURSIVE as libc::c_uint;
            sys::open_tree(libc::AT_FDCWD, source, flags)
        })
        .and_then(|opened| opened)
        .map_err(syscall_error("open_tree", source))?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    sys::mount_setattr(tree.as_fd(), c"", flags, &attr)
        .map_err(syscall_error("mount_setattr", source))?;
    target
        .with_nix_path(|target| {
            let flags = libc::MOVE_MOUNT_F_EMPTY_PATH;
            sys::move_mount(tree.as_fd(), c"", libc::AT_FDCWD, target, flags)
        })
        .and_then(|moved| moved)
        .map_err(syscall_error("move_mount", target))
}

/// The new mount API's syscalls, which neither std nor nix wraps.
#[allow(unsafe_code)]
mod sys {
    use std::{
        ffi::CStr,
        os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    };

    use nix::errno::Errno;

    /// `open_tree(2)`.
    pub(super) fn open_tree(
        dirfd: RawFd,
        path: &CStr,
        flags: libc::c_uint,
    ) -> Result<OwnedFd, Errno> {
        // SAFETY: `path` is a NUL-terminated string that outlives the call; the kernel only
        // reads it. The other arguments are plain integers.
        let fd = Errno::result(unsafe {
            libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags)
        })?;
        // SAFETY: on success, open_tree returns a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// `mount_setattr(2)`.
    pub(super) fn mount_setattr(
        fd: BorrowedFd<'_>,
        path: &CStr,
        flags: libc::c_uint,
        attr: &libc::mount_attr,
    ) -> Result<(), Errno> {
        let size = std::mem::size_of::<libc::mount_attr>();
        // SAFETY: `path` is NUL-terminated and `attr` is a valid `mount_attr` of `size`
        // bytes; both outlive the call and the kernel only reads them.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd.as_raw_fd(),
                path.as_ptr(),
                flags,
                attr as *const libc::mount_attr,
                size,
            )
        };
        Errno::result(ret).map(drop)
    }

    /// `move_mount(2)`.
    pub(super) fn move_mount(
        from: BorrowedFd<'_>,
        from_path: &CStr,
        to_dirfd: RawFd,
        to_path: &CStr,
        flags: libc::c_uint,
    ) -> Result<(), Errno> {
        // SAFETY: both paths are NUL-terminated strings that outlive the call; the kernel
        // only reads them. The other arguments are plain integers.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                from.as_raw_fd(),
                from_path.as_ptr(),
                to_dirfd,
                to_path.as_ptr(),
                flags,
            )
        };
        Errno::result(ret).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child;
    use nix::{
        mount::{mount, MsFlags},
        sched::{unshare, CloneFlags},
    };
    use std::{
        io::{BufRead, BufReader},
        os::unix::fs::{chown, MetadataExt},
        path::PathBuf,
        process::{Child, Command, Stdio},
        time::Instant,
    };

    const BLOCK: u32 = APP_RANGE;

    fn range(start: u32, count: u32) -> IdRange {
        IdRange { start, count }
    }

    #[test]
    fn parses_subid() {
        let text = "# comment\nalice:100000:65536\nroot:200000:131072\n0:400000:65536\nbad line\nroot:x:1\nroot:1:2:3\n";
        assert_eq!(parse_subid(text, "root"), [range(200000, 131072)]);
        assert_eq!(parse_subid(text, "0"), [range(400000, 65536)]);
        assert_eq!(parse_subid(text, "alice"), [range(100000, 65536)]);
        assert!(parse_subid(text, "bob").is_empty());
    }

    #[test]
    fn allocates_the_lowest_free_block() {
        let none = BTreeSet::new();
        let taken = |starts: &[u32]| starts.iter().copied().collect::<BTreeSet<_>>();
        let pool = [range(100_000, 3 * BLOCK)];
        assert_eq!(allocate(&pool, &none, BLOCK), Some(100_000));
        // A gap between two taken blocks.
        assert_eq!(
            allocate(&pool, &taken(&[100_000, 100_000 + 2 * BLOCK]), BLOCK),
            Some(100_000 + BLOCK)
        );
        // Full.
        let all = taken(&[100_000, 100_000 + BLOCK, 100_000 + 2 * BLOCK]);
        assert_eq!(allocate(&pool, &all, BLOCK), None);
        // A misaligned taken block (from an older pool) blocks both blocks it overlaps.
        assert_eq!(
            allocate(&pool, &taken(&[100_100]), BLOCK),
            Some(100_000 + 2 * BLOCK)
        );
        // Smaller than a block, empty, or zero-sized blocks.
        assert_eq!(allocate(&[range(100_000, BLOCK - 1)], &none, BLOCK), None);
        assert_eq!(allocate(&[], &none, BLOCK), None);
        assert_eq!(allocate(&pool, &none, 0), None);
        // Several ranges, unsorted: the lowest free block of any.
        let pool = [
            range(900_000, BLOCK),
            range(300_000, BLOCK),
            range(500_000, BLOCK),
        ];
        assert_eq!(allocate(&pool, &taken(&[300_000]), BLOCK), Some(500_000));
        // Near u32::MAX: no overflow, and id u32::MAX is never handed out.
        let top = u32::MAX - 2 * BLOCK + 1;
        assert_eq!(allocate(&[range(top, u32::MAX)], &none, BLOCK), Some(top));
        assert_eq!(
            allocate(&[range(top, u32::MAX)], &taken(&[top]), BLOCK),
            None
        );
        assert_eq!(allocate(&[range(u32::MAX, u32::MAX)], &none, 1), None);
        assert_eq!(
            allocate(&[range(u32::MAX - 1, 5)], &none, 1),
            Some(u32::MAX - 1)
        );
    }

    /// Every small pool, taken set and block size against a brute-force answer.
    #[test]
    fn allocate_matches_brute_force() {
        let brute = |pool: &[IdRange], taken: &BTreeSet<u32>, per_app: u32| {
            let used = |id: u32| taken.iter().any(|&t| id >= t && id < t + per_app);
            pool.iter()
                .flat_map(|r| {
                    (0..)
                        .map(move |k| r.start + k * per_app)
                        .take_while(move |s| s + per_app <= r.start + r.count)
                })
                .filter(|&s| (s..s + per_app).all(|id| !used(id)))
                .min()
        };
        let pools: Vec<Vec<IdRange>> = (0..6)
            .flat_map(|a| (0..9).map(move |n| vec![range(a, n)]))
            .chain([
                vec![range(0, 3), range(7, 5)],
                vec![range(9, 4), range(1, 2)],
            ])
            .collect();
        for per_app in 1..4 {
            for mask in 0u32..1 << 12 {
                let taken: BTreeSet<u32> = (0..12).filter(|bit| mask & 1 << bit != 0).collect();
                for pool in &pools {
                    assert_eq!(
                        allocate(pool, &taken, per_app),
                        brute(pool, &taken, per_app),
                        "{pool:?} {taken:?} {per_app}"
                    );
                }
            }
        }
    }

    #[test]
    fn write_maps_names_the_file() {
        let err = write_maps(u32::MAX, range(200_000, BLOCK), range(200_000, BLOCK)).unwrap_err();
        assert!(
            err.to_string().contains("/proc/4294967295/uid_map"),
            "{err}"
        );
    }

    /// A process in a new user namespace; killed when dropped.
    struct UserNs(Child);

    impl Drop for UserNs {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn idmapped_mount_shifts_owners() {
        if child::is_child() {
            return mount_in_child();
        }
        if !child::privileged() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        for (name, owner) in [
            ("src", 0),
            ("target", 0),
            ("upper", 200_000),
            ("work", 200_000),
            ("merged", 0),
        ] {
            fs::create_dir(path(name)).unwrap();
            chown(path(name), Some(owner), Some(owner)).unwrap();
        }
        fs::write(path("src/root_file"), "root").unwrap();
        fs::write(path("src/user_file"), "user").unwrap();
        chown(path("src/user_file"), Some(1000), Some(1000)).unwrap();

        // util-linux's unshare: a thread of this test binary cannot unshare its user namespace.
        let mut holder = UserNs(
            Command::new("unshare")
                .args(["--user", "sh", "-c", "echo ready; exec cat"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut ready = String::new();
        BufReader::new(holder.0.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n");
        let pid = holder.0.id();
        write_maps(pid, range(200_000, BLOCK), range(200_000, BLOCK)).unwrap();
        let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        assert_eq!(
            uid_map.split_whitespace().collect::<Vec<_>>(),
            ["0", "200000", "65536"]
        );

        let pid = pid.to_string();
        child::run(
            "idmap::tests::idmapped_mount_shifts_owners",
            &[
                ("USERNS_PID", pid.as_ref()),
                ("DIR", dir.path().as_os_str()),
            ],
        );
        // The child's mount namespace went with it.
        assert_eq!(fs::read_dir(path("target")).unwrap().count(), 0);
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(dir.path().to_str().unwrap()),
            "{mountinfo}"
        );
    }

    /// The child of [`idmapped_mount_shifts_owners`], in a private mount namespace.
    fn mount_in_child() {
        let dir = PathBuf::from(std::env::var_os("DIR").unwrap());
        let path = |name: &str| dir.join(name);
        let owner = |name: &str| {
            let meta = fs::metadata(path(name)).unwrap();
            (meta.uid(), meta.gid())
        };
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        let userns = fs::File::open(format!(
            "/proc/{}/ns/user",
            std::env::var("USERNS_PID").unwrap()
        ))
        .unwrap();

        let start = Instant::now();
        idmapped_mount(&path("src"), &path("target"), userns.as_fd()).unwrap();
        println!("timing: idmapped_mount took {:?}", start.elapsed());
        assert_eq!(owner("target/root_file"), (200_000, 200_000));
        assert_eq!(owner("target/user_file"), (201_000, 201_000));
        // The host's view of the source is unchanged.
        assert_eq!(owner("src/user_file"), (1000, 1000));

        // How the runtime uses it: the lower layer of the app's overlay.
        let layers = format!(
            "lowerdir={},upperdir={},workdir={}",
            path("target").display(),
            path("upper").display(),
            path("work").display()
        );
        mount(
            Some("overlay"),
            &path("merged"),
            Some("overlay"),
            MsFlags::empty(),
            Some(layers.as_str()),
        )
        .unwrap_or_else(|e| panic!("overlay with an idmapped lower layer ({layers}): {e}"));
        assert_eq!(owner("merged/root_file"), (200_000, 200_000));
        assert_eq!(owner("merged/user_file"), (201_000, 201_000));
        // A copy-up keeps the shifted owner in the upper layer.
        fs::write(path("merged/user_file"), "changed").unwrap();
        assert_eq!(owner("upper/user_file"), (201_000, 201_000));
        assert_eq!(fs::read_to_string(path("src/user_file")).unwrap(), "user");
    }
}
