//! The app's root filesystem, made inside its own mount namespace: the image overlay
//! shown through an idmapped mount, `/dev`, volumes and secrets, a masked `/proc`; and
//! resolving a path inside the root without ever leaving it.

use std::{
    collections::VecDeque,
    ffi::OsString,
    fs,
    os::{fd::AsRawFd, unix::fs::symlink},
    path::{Component, Path, PathBuf},
};

use nix::mount::{mount, MsFlags};

use crate::runtime::process::{io_at, setup, AppSpec, ProcessError};

pub(super) fn mount_err(what: &str, target: &Path) -> impl FnOnce(nix::Error) -> ProcessError {
    setup(format!("cannot mount {what} on {}", target.display()))
}

/// A 64 MiB tmpfs on `target`.
pub(super) fn mount_tmpfs(target: &Path, flags: MsFlags, mode: &str) -> Result<(), ProcessError> {
    let options = format!("{mode},size=65536k");
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags,
        Some(options.as_str()),
    )
    .map_err(mount_err("tmpfs", target))
}

/// Mounts the app's root at `<app dir>/merged`, in the supervisor's private mount
/// namespace (so none of it is visible on the host, and all of it goes with the app).
pub(super) fn prepare_root(
    spec: &AppSpec,
    app_dir: &Path,
    userns: &fs::File,
) -> Result<(), ProcessError> {
    const NONE: Option<&str> = None;
    let merged = app_dir.join("merged");
    let upper = app_dir.join("upper");
    let work = app_dir.join("work");
    let lower = app_dir.join("lower");
    for d in [&merged, &upper, &work, &lower] {
        fs::create_dir_all(d).map_err(io_at(d))?;
    }
    // What the app writes is owned by its block of host ids (root in the app is
    // `id_start` on the host), and so are its volumes and secrets.
    let owned = |e| ProcessError::Host(Box::new(e));
    crate::runtime::ids::give_to_block(&upper, spec.id_start).map_err(owned)?;
    // The image, shared by every app that uses it, is shown to this app's namespace
    // through an idmapped mount (nosuid, nodev): its root-owned files are the app's root's.
    archy_confine::idmap::idmapped_mount(&spec.rootfs, &lower, std::os::fd::AsFd::as_fd(userns))
        .map_err(|source| ProcessError::Confine {
            step: "the image for the app's user namespace",
            source,
        })?;
    for p in [&lower, &upper, &work] {
        if p.to_string_lossy().contains([',', ':', '\\']) {
            return Err(ProcessError::OverlayPath(p.to_path_buf()));
        }
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(mount_err(
        "the overlay root (needs overlayfs on the data dir's filesystem)",
        &merged,
    ))?;

    // /dev: a small tmpfs with the usual character devices bound from the host.
    let dev = resolve_in_root(&merged, "/dev")?;
    fs::create_dir_all(&dev).map_err(io_at(&dev))?;
    mount_tmpfs(&dev, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, "mode=755")?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        fs::File::create(&target).map_err(io_at(&target))?;
        mount(
            Some(&Path::new("/dev").join(name)),
            &target,
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
        .map_err(mount_err(name, &target))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        symlink(to, &path).map_err(io_at(&path))?;
    }
    let shm = dev.join("shm");
    fs::create_dir_all(&shm).map_err(io_at(&shm))?;
    mount_tmpfs(&shm, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=1777")?;

    // Mount points the exec helper fills in, and a hosts file naming the app.
    let proc_dir = resolve_in_root(&merged, "/proc")?;
    fs::create_dir_all(&proc_dir).map_err(io_at(&proc_dir))?;
    let hosts = resolve_in_root(&merged, "/etc/hosts")?;
    if fs::symlink_metadata(&hosts).is_err() {
        if let Some(parent) = hosts.parent() {
            fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        let text = format!("127.0.0.1\tlocalhost {}\n::1\tlocalhost\n", spec.hostname);
        fs::write(&hosts, text).map_err(io_at(&hosts))?;
        std::os::unix::fs::lchown(&hosts, Some(spec.id_start), Some(spec.id_start))
            .map_err(io_at(&hosts))?;
    }
    // Always: a secret generated since the last start is root's.
    if let Some(dir) = spec.secrets_dir.as_deref().filter(|d| d.is_dir()) {
        crate::runtime::ids::shift_owners(dir, spec.id_start).map_err(owned)?;
    }

    for m in &spec.mounts {
        // The volume (and its `source`) resolved again now, without symlinks, and bound
        // from the opened handle, so what is mounted is what was checked.
        let (handle, found) =
            crate::runtime::open_volume(&m.host, m.source.as_deref()).map_err(owned)?;
        crate::runtime::ids::give_to_block(&m.host, spec.id_start).map_err(owned)?;
        let is_dir = rustix::fs::fstat(&handle)
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
            .map_err(|e| io_at(&found)(e.into()))?;
        let target = resolve_in_root(&merged, &m.target)?;
        if is_dir {
            fs::create_dir_all(&target).map_err(io_at(&target))?;
        } else if fs::symlink_metadata(&target).is_err() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io_at(parent))?;
            }
            fs::File::create(&target).map_err(io_at(&target))?;
        }
        let from = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        mount(
            Some(&from),
            &target,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .map_err(mount_err(&found.to_string_lossy(), &target))?;
        let mut flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if m.readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(NONE, &target, NONE, flags, NONE).map_err(mount_err("nosuid,nodev", &target))?;
    }
    if spec.readonly_root {
        remount_readonly(&merged)?;
    }
    Ok(())
}

pub(super) fn remount_readonly(target: &Path) -> Result<(), ProcessError> {
    const NONE: Option<&str> = None;
    mount(
        NONE,
        target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        NONE,
    )
    .map_err(mount_err("read-only", target))
}

/// `path` (absolute, as the app sees it) resolved inside `root`: symlinks are followed
/// as if `root` were `/`, and `..` stops at `root`. Missing components are kept as they
/// are, so the result can be created with `create_dir_all`.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, ProcessError> {
    fn parts(p: &Path) -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    }
    let mut pending: VecDeque<OsString> = parts(Path::new(path)).into();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(ProcessError::SymlinkLoop(path.to_string()));
                }
                let target = fs::read_link(&full).map_err(io_at(&full))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for p in parts(&target).into_iter().rev() {
                    pending.push_front(p);
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        fs::create_dir_all(root.join("usr/lib")).expect("mkdir");
        symlink("/etc", root.join("etc-abs")).expect("symlink");
        symlink("usr/lib", root.join("lib")).expect("symlink");
        symlink("../../../../..", root.join("up")).expect("symlink");
        for (path, want) in [
            ("/etc-abs/hosts", "etc/hosts"),
            ("/lib/x", "usr/lib/x"),
            ("/up/etc/passwd", "etc/passwd"),
            ("/../../data", "data"),
        ] {
            assert_eq!(
                resolve_in_root(root, path).expect("r"),
                root.join(want),
                "{path}"
            );
        }
        symlink("loop", root.join("loop")).expect("symlink");
        assert!(resolve_in_root(root, "/loop/x").is_err());
    }
}
