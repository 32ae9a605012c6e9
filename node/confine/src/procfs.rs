//! Masked and read-only paths of the app's `/proc` (and `/sys`, where mounted).
//!
//! A fresh procfs in the app's PID namespace still shows kernel-wide files: kernel memory
//! (`/proc/kcore`), keys, timer and scheduler internals, and writable knobs such as
//! `/proc/sysrq-trigger` and `/proc/sys`. Like runc and podman, [`mask`] hides the first
//! kind and makes the second read-only.

use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::{
    error::{io_error, syscall_error},
    ConfineError, Result,
};

/// runc's/podman's default masked paths: an empty read-only directory or `/dev/null` is
/// mounted over each.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/interrupts",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's/podman's default read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Masks [`MASKED_PATHS`] and write-protects [`READONLY_PATHS`] under `root`, the app's root
/// with its `/proc` already mounted (before `pivot_root`), in the app's mount namespace.
/// Paths that do not exist under `root` are skipped; one that goes through a symlink is
/// refused, since it could point out of `root`.
pub fn mask(root: &Path) -> Result<()> {
    for &path in MASKED_PATHS {
        let Some((path, is_dir)) = resolve(root, path)? else {
            continue;
        };
        if is_dir {
            let flags =
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some("tmpfs"), &path, Some("tmpfs"), flags, Some("mode=000"))
        } else {
            mount(
                Some("/dev/null"),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        }
        .map_err(syscall_error("mount (masking)", &path))?;
    }
    for &path in READONLY_PATHS {
        let Some((path, _)) = resolve(root, path)? else {
            continue;
        };
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(syscall_error("mount (bind)", &path))?;
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(None::<&str>, &path, None::<&str>, flags, None::<&str>)
            .map_err(syscall_error("mount (read-only remount)", &path))?;
    }
    Ok(())
}

/// `path` (absolute, inside the app) under `root`, and whether it is a directory; `None` if
/// it does not exist. No component under `root` may be a symlink.
fn resolve(root: &Path, path: &str) -> Result<Option<(PathBuf, bool)>> {
    let mut resolved = root.to_owned();
    let mut is_dir = true;
    for component in Path::new(path).components() {
        let Component::Normal(name) = component else {
            continue;
        };
        resolved.push(name);
        let meta = match resolved.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            meta => meta.map_err(io_error("inspecting", &resolved))?,
        };
        if meta.file_type().is_symlink() {
            return Err(ConfineError::Symlink { path: resolved });
        }
        is_dir = meta.is_dir();
    }
    Ok(Some((resolved, is_dir)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child;
    use nix::sched::{unshare, CloneFlags};
    use std::{fs, os::unix::fs::symlink};

    #[test]
    fn refuses_symlinks_and_skips_missing() {
        let root = tempfile::tempdir().unwrap();
        assert!(resolve(root.path(), "/proc/kcore").unwrap().is_none());
        symlink("/proc", root.path().join("proc")).unwrap();
        let err = resolve(root.path(), "/proc/kcore").unwrap_err();
        assert!(
            matches!(&err, ConfineError::Symlink { path } if path.ends_with("proc")),
            "{err}"
        );
        assert!(mask(root.path()).is_err());
    }

    #[test]
    fn masks_a_fresh_proc() {
        if !child::is_child() {
            if !child::privileged() {
                return;
            }
            let root = tempfile::tempdir().unwrap();
            child::run(
                "procfs::tests::masks_a_fresh_proc",
                &[("ROOT", root.path().as_os_str())],
            );
            let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(
                !mountinfo.contains(root.path().to_str().unwrap()),
                "{mountinfo}"
            );
            return;
        }
        let root = PathBuf::from(std::env::var_os("ROOT").unwrap());
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        let proc = root.join("proc");
        fs::create_dir(&proc).unwrap();
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some("proc"), &proc, Some("proc"), flags, None::<&str>).unwrap();
        // This kernel may lack kcore (CONFIG_PROC_KCORE) and sysrq-trigger (CONFIG_MAGIC_SYSRQ).
        let present = |names: &[&'static str]| -> Vec<&'static str> {
            names
                .iter()
                .copied()
                .filter(|name| proc.join(name).exists())
                .collect()
        };
        let masked_files = present(&["kcore", "keys", "timer_list", "interrupts"]);
        let read_only = present(&["sysrq-trigger", "sys/kernel/hostname"]);
        assert!(!fs::read(proc.join("interrupts")).unwrap().is_empty());

        mask(&root).unwrap();
        for name in masked_files {
            assert_eq!(fs::read(proc.join(name)).unwrap(), b"", "{name}");
        }
        if proc.join("acpi").exists() {
            assert_eq!(fs::read_dir(proc.join("acpi")).unwrap().count(), 0);
        }
        for name in read_only {
            let opened = fs::OpenOptions::new().write(true).open(proc.join(name));
            assert_eq!(
                opened.unwrap_err().raw_os_error(),
                Some(libc::EROFS),
                "{name}"
            );
        }
        // The rest of /proc is as it was.
        assert!(fs::read_to_string(proc.join("self/status"))
            .unwrap()
            .contains("Pid:"));
    }
}
