//! The helper roles behind `archy process-helper` (a hidden subcommand), which confine
//! an app of the process runtime and keep it reachable.
//!
//! - `supervise <app dir>` (started by [`super::ProcessRuntime`]): detaches with
//!   `setsid`, binds the published ports on the host, starts a `userns` holder and writes
//!   the app's id map into it (ids 0-65535 to the app's block of host ids), creates the
//!   app's cgroup with its limits, enters new network, PID, UTS and IPC namespaces, brings
//!   `lo` up, starts `exec`, writes the `pid` file and answers `ready` (or `error: ...`)
//!   on stdout. It then stays as the port forwarder, from inside the app's network
//!   namespace, on a single-threaded event loop (a process that unshared its PID namespace
//!   cannot create threads), passes SIGTERM on to the app, exits with the app, recording
//!   its status in `exit`, and removes the cgroup. A published TCP port only accepts
//!   connections once the app listens on its container port, so a TCP health check means
//!   what it says. The supervisor keeps the host's mount namespace: it holds no copy of
//!   the host's mounts that could keep them busy.
//! - `userns`: holds a new user namespace open until its stdin closes.
//! - `exec <app dir>`: PID 1 of the new PID namespace, still root on the host. Joins the
//!   app's cgroup, reads the secrets, makes its own mount namespace and mounts the app's
//!   root there (an overlay of the image, shown to the app's user namespace through an
//!   idmapped mount, and the app's writable layer, `nosuid,nodev`; `/dev`, the volumes,
//!   `/run/secrets`), mounts `/proc` with its dangerous paths masked or read-only,
//!   `pivot_root`s into the app's root and unmounts the host's, joins the app's user
//!   namespace as its root, bounds the capabilities, switches to the app's user, sets
//!   `no_new_privs` and the seccomp filter, asks to be killed if the supervisor dies,
//!   and forks the app (PID 2), staying as its init: it passes signals on, reaps
//!   orphans and exits with the app's status (see [`run_init`]). A failure before the
//!   app's exec is reported through its stdin, a close-on-exec pipe from the supervisor.
//!
//! Every path inside the app's root is resolved without leaving it (see
//! [`resolve_in_root`]), and volumes are bound from handles opened without following
//! symlinks: an app's or image's symlinks cannot make the helpers touch the host.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    ffi::OsString,
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::fs::symlink,
    },
    path::{Component, Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
    sys::{
        signal::{kill, Signal},
        socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{Gid, Pid, Uid},
};

use super::{io_at, proc_state, AppSpec, PidRecord, ProcState, ProcessError};
use archy_catalog::manifest::Protocol;

/// Which helper to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Supervise,
    Exec,
    /// Holds a new user namespace open until its stdin closes (see [`hold_userns`]).
    UserNs,
}

/// Entry point of `archy process-helper <role> <app dir>`.
pub fn main(role: Role, app_dir: &Path) -> ExitCode {
    match role {
        Role::Supervise => supervise(app_dir),
        Role::Exec => exec(app_dir),
        Role::UserNs => hold_userns(),
    }
}

/// The environment variable that names the userns holder's PID to the exec helper.
const USERNS_PID: &str = "ARCHY_USERNS_PID";

/// `process-helper userns`: makes a new user namespace, says `ready`, and keeps it alive
/// until stdin closes. The supervisor writes the app's id maps for it; the exec helper
/// mounts the image idmapped through it and joins it; after that nothing needs it.
fn hold_userns() -> ExitCode {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        println!("error: cannot create a user namespace: {e}");
        return ExitCode::from(1);
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    ExitCode::SUCCESS
}

/// The holder of an app's user namespace, until the exec helper has joined it.
struct UserNs {
    holder: std::process::Child,
}

impl UserNs {
    /// Starts a holder and maps ids 0..65535 in it to the app's block at `start`.
    fn create(start: u32) -> Result<UserNs, ProcessError> {
        let mut holder = Command::new("/proc/self/exe")
            .args(["process-helper", "userns", "/"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| ProcessError::Helper {
                program: "/proc/self/exe".into(),
                source,
            })?;
        let mut line = String::new();
        if let Some(out) = holder.stdout.take() {
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        }
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(ProcessError::Invalid(format!(
                "user namespace: {}",
                line.trim().trim_start_matches("error: ")
            )));
        }
        let range = archy_confine::idmap::IdRange {
            start,
            count: crate::runtime::ids::PER_APP,
        };
        match archy_confine::idmap::write_maps(holder.id(), range, range) {
            Ok(()) => Ok(UserNs { holder }),
            Err(e) => {
                let _ = holder.kill();
                let _ = holder.wait();
                Err(ProcessError::Invalid(e.to_string()))
            }
        }
    }
}

impl Drop for UserNs {
    fn drop(&mut self) {
        drop(self.holder.stdin.take());
        let _ = self.holder.wait();
    }
}

fn read_spec(app_dir: &Path) -> Result<AppSpec, ProcessError> {
    let path = app_dir.join("spec.json");
    let bytes = fs::read(&path).map_err(io_at(&path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ProcessError::Invalid(format!("{}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------
// supervise

/// A published port's host side, bound before leaving the host's network namespace.
enum HostSocket {
    /// Bound, not yet listening (it starts listening once the app does).
    Tcp(OwnedFd, u16),
    Udp(std::net::UdpSocket, u16),
}

struct Started {
    /// Held while the supervisor lives: a second supervisor for the app cannot start.
    _lock: nix::fcntl::Flock<fs::File>,
    child: std::process::Child,
    app_pid: u32,
    sockets: Vec<HostSocket>,
    app_dir: PathBuf,
    cgroup: archy_confine::cgroup::AppCgroup,
}

fn supervise(app_dir: &Path) -> ExitCode {
    match prepare(app_dir) {
        Err(e) => {
            println!("error: {e}");
            ExitCode::from(1)
        }
        Ok(started) => {
            println!("ready");
            let _ = std::io::stdout().flush();
            // Nothing more goes to the runtime; stdout must not keep its pipe open.
            if let Ok(null) = fs::File::open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(&null);
            }
            serve(started)
        }
    }
}

fn prepare(app_dir: &Path) -> Result<Started, ProcessError> {
    nix::unistd::setsid()?;
    if !nix::unistd::geteuid().is_root() {
        return Err(ProcessError::NotRoot);
    }
    let app_dir = app_dir.canonicalize().map_err(io_at(app_dir))?;
    let lock = super::lock(
        &app_dir.join("lock"),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|_| ProcessError::Invalid("the app already has a running supervisor".into()))?;
    let spec = read_spec(&app_dir)?;
    let mut sockets = Vec::new();
    for p in &spec.ports {
        let s = match p.protocol {
            Protocol::Tcp => HostSocket::Tcp(bind_tcp(p.host)?, p.container),
            Protocol::Udp => HostSocket::Udp(
                std::net::UdpSocket::bind(p.host).map_err(|e| {
                    ProcessError::Invalid(format!("cannot bind udp {}: {e}", p.host))
                })?,
                p.container,
            ),
        };
        sockets.push(s);
    }
    // Before the PID namespace: the holder must not become the app's PID 1.
    let userns = UserNs::create(spec.id_start)?;
    let cgroup = archy_confine::cgroup::Hierarchy::detect()
        .and_then(|h| archy_confine::cgroup::AppCgroup::create(&h, &spec.cgroup, &spec.limits()))
        .map_err(|e| ProcessError::Invalid(format!("cgroup: {e}")))?;
    // No mount namespace for the supervisor: the exec helper makes its own, mounts the
    // app's root there and pivots into it, leaving no copy of the host's mounts behind
    // (a copy would keep them busy, e.g. podman's per-container shm mounts).
    unshare(
        CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(|e| ProcessError::Invalid(format!("cannot create namespaces: {e}")))?;
    loopback_up().map_err(|e| ProcessError::Invalid(format!("cannot bring lo up: {e}")))?;
    nix::unistd::sethostname(&spec.hostname)?;

    // The exec helper reports a failure before its exec through this pipe; a successful
    // exec closes it (close-on-exec), so EOF without a message means the app runs.
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let log_path = app_dir.join("app.log");
    let log = super::open_log(&log_path)?;
    let log2 = log.try_clone().map_err(io_at(&log_path))?;
    let child = {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("process-helper")
            .arg("exec")
            .arg(&app_dir)
            .env(USERNS_PID, userns.holder.id().to_string())
            .stdin(Stdio::from(status_w))
            .stdout(log)
            .stderr(log2);
        cmd.spawn().map_err(|source| ProcessError::Helper {
            program: "/proc/self/exe".into(),
            source,
        })?
        // `cmd` (holding the pipe's write end) is dropped here.
    };
    let mut message = String::new();
    let _ = fs::File::from(status_r).read_to_string(&mut message);
    // The exec helper has joined the namespace (or failed): the holder may go.
    drop(userns);
    let mut child = child;
    if !message.is_empty() {
        let _ = cgroup.remove();
        let _ = child.kill();
        let _ = child.wait();
        return Err(ProcessError::Invalid(message));
    }
    let app_pid = child.id();
    let start = |pid: u32| match proc_state(pid) {
        ProcState::Alive { start_time } => start_time,
        _ => 0,
    };
    let me = std::process::id();
    let record = PidRecord {
        pid: me,
        start_time: start(me),
        app_pid,
        app_start_time: start(app_pid),
    };
    let path = app_dir.join("pid");
    let bytes = serde_json::to_vec(&record).map_err(|e| ProcessError::Invalid(e.to_string()))?;
    archy_catalog::fsutil::write_atomic_mode(&path, &bytes, Some(0o600)).map_err(io_at(&path))?;
    Ok(Started {
        _lock: lock,
        child,
        app_pid,
        sockets,
        app_dir,
        cgroup,
    })
}

fn bind_tcp(addr: SocketAddr) -> Result<OwnedFd, ProcessError> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .map_err(|e| ProcessError::Invalid(format!("cannot bind tcp {addr}: {e}")))?;
    Ok(fd)
}

/// `ip link set lo up`, as one rtnetlink request.
fn loopback_up() -> nix::Result<()> {
    let index = nix::net::if_::if_nametoindex("lo")?;
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        socket::SockProtocol::NetlinkRoute,
    )?;
    socket::bind(fd.as_raw_fd(), &socket::NetlinkAddr::new(0, 0))?;
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST_ACK: u16 = 1 | 4;
    const IFF_UP: u32 = 1;
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST_ACK.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    msg.extend_from_slice(&[0, 0]); // ifi_family AF_UNSPEC, pad
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&(index as i32).to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    socket::send(fd.as_raw_fd(), &msg, socket::MsgFlags::empty())?;
    let mut buf = [0u8; 256];
    let n = socket::recv(fd.as_raw_fd(), &mut buf, socket::MsgFlags::empty())?;
    // NLMSG_ERROR (type 2) carries the result: 0 for success, -errno otherwise.
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code != 0 {
            return Err(nix::errno::Errno::from_raw(-code));
        }
    }
    Ok(())
}

fn mount_err(what: &str, target: &Path) -> impl FnOnce(nix::Error) -> ProcessError {
    let what = what.to_string();
    let target = target.to_path_buf();
    move |e| ProcessError::Invalid(format!("cannot mount {what} on {}: {e}", target.display()))
}

/// A 64 MiB tmpfs on `target`.
fn mount_tmpfs(target: &Path, flags: MsFlags, mode: &str) -> Result<(), ProcessError> {
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
fn prepare_root(spec: &AppSpec, app_dir: &Path, userns: &fs::File) -> Result<(), ProcessError> {
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
    let owned = |e: crate::runtime::RuntimeError| ProcessError::Invalid(e.to_string());
    crate::runtime::ids::give_to_block(&upper, spec.id_start).map_err(owned)?;
    // The image, shared by every app that uses it, is shown to this app's namespace
    // through an idmapped mount (nosuid, nodev): its root-owned files are the app's root's.
    archy_confine::idmap::idmapped_mount(&spec.rootfs, &lower, std::os::fd::AsFd::as_fd(userns))
        .map_err(|e| {
            ProcessError::Invalid(format!("the image for the app's user namespace: {e}"))
        })?;
    for p in [&lower, &upper, &work] {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\\']) {
            return Err(ProcessError::Invalid(format!(
                "{s}: overlayfs cannot take paths with ',', ':' or '\\'; use another data dir"
            )));
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
        let (handle, found) = crate::runtime::open_volume(&m.host, m.source.as_deref())
            .map_err(|e| ProcessError::Invalid(e.to_string()))?;
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

fn remount_readonly(target: &Path) -> Result<(), ProcessError> {
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
                    return Err(ProcessError::Invalid(format!(
                        "{path}: too many symlinks in the app's root"
                    )));
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

/// The forwarder and supervisor loop; returns when the app has exited.
fn serve(started: Started) -> ExitCode {
    let Started {
        _lock,
        mut child,
        app_pid,
        sockets,
        app_dir,
        cgroup,
    } = started;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("archy-process: cannot start the forwarder: {e}");
            signal(app_pid, Signal::SIGKILL);
            let _ = child.wait();
            return ExitCode::from(1);
        }
    };
    let status = rt.block_on(async move {
        for s in sockets {
            match s {
                HostSocket::Tcp(fd, port) => {
                    tokio::spawn(forward_tcp(fd, port));
                }
                HostSocket::Udp(sock, port) => {
                    tokio::spawn(forward_udp(sock, port));
                }
            }
        }
        use tokio::signal::unix::{signal as unix_signal, SignalKind};
        let mut term = unix_signal(SignalKind::terminate()).ok();
        let mut int = unix_signal(SignalKind::interrupt()).ok();
        let mut chld = unix_signal(SignalKind::child()).ok();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            tokio::select! {
                Some(()) = async { term.as_mut()?.recv().await } => signal(app_pid, Signal::SIGTERM),
                Some(()) = async { int.as_mut()?.recv().await } => signal(app_pid, Signal::SIGTERM),
                _ = async { chld.as_mut()?.recv().await } => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
    let text = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => format!("exited with code {c}\n"),
        (None, Some(s)) => format!("killed by signal {s}\n"),
        _ => "exited\n".to_string(),
    };
    let _ = fs::write(app_dir.join("exit"), &text);
    if let Err(e) = cgroup.remove() {
        eprintln!("archy-process: {e}");
    }
    eprint!("archy-process: app {text}");
    ExitCode::SUCCESS
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Listens on the host side once the app accepts on `port`, then relays connections.
async fn forward_tcp(fd: OwnedFd, port: u16) {
    let inside = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    loop {
        if tokio::net::TcpStream::connect(inside).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listener = socket::Backlog::new(128)
        .and_then(|b| socket::listen(&fd, b))
        .map_err(std::io::Error::from)
        .and_then(|()| {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        });
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            eprintln!("archy-process: cannot listen for port {port}: {e}");
            return;
        }
    };
    loop {
        let Ok((mut outside, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut app) = tokio::net::TcpStream::connect(inside).await {
                let _ = tokio::io::copy_bidirectional(&mut outside, &mut app).await;
            }
        });
    }
}

/// Relays datagrams: one socket inside per outside peer, dropped after 2 idle minutes.
async fn forward_udp(sock: std::net::UdpSocket, port: u16) {
    let host = match sock
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(sock))
    {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("archy-process: udp port {port}: {e}");
            return;
        }
    };
    let inside = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let peers: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = host.recv_from(&mut buf).await else {
            continue;
        };
        let known = peers.lock().ok().and_then(|p| p.get(&from).cloned());
        let app = match known {
            Some(s) => s,
            None => {
                let Ok(s) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if s.connect(inside).await.is_err() {
                    continue;
                }
                let s = Arc::new(s);
                if let Ok(mut p) = peers.lock() {
                    p.insert(from, s.clone());
                }
                let (s2, host2, peers2) = (s.clone(), host.clone(), peers.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(120), s2.recv(&mut buf)).await
                    {
                        let _ = host2.send_to(&buf[..n], from).await;
                    }
                    if let Ok(mut p) = peers2.lock() {
                        p.remove(&from);
                    }
                });
                s
            }
        };
        let _ = app.send(&buf[..n]).await;
    }
}

// ---------------------------------------------------------------------------------------
// exec

fn exec(app_dir: &Path) -> ExitCode {
    // The status pipe arrives as stdin: keep a close-on-exec copy, give the app /dev/null.
    let mut status = std::io::stdin().as_fd().try_clone_to_owned().ok();
    if let Ok(null) = fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    let e = match exec_app(app_dir, &mut status) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    report_exec_failure(status, &e);
    ExitCode::from(127)
}

fn report_exec_failure(status: Option<OwnedFd>, e: &ProcessError) {
    match status {
        Some(fd) => {
            let _ = fs::File::from(fd).write_all(e.to_string().as_bytes());
        }
        None => eprintln!("archy-process: {e}"),
    }
}

/// The app's PID 1, a minimal init (as `tini` or `catatonit` are for containers). The
/// kernel drops signals to a namespace's init unless it handles them, so an app that is
/// PID 1 itself and sets no handler (busybox httpd, most servers) would ignore SIGTERM
/// and only die by SIGKILL after the stop timeout. As PID 2 the app gets the default
/// actions. The init handles SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 (its
/// handlers are in place before the app starts) and passes them on, reaps orphans on
/// SIGCHLD, and exits with the app's status (128 + signal when it was killed).
fn run_init(
    app: Command,
    program: &str,
    status: &mut Option<OwnedFd>,
) -> Result<std::convert::Infallible, ProcessError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| ProcessError::Invalid(format!("cannot start the init: {e}")))?;
    let code = rt.block_on(init_loop(app, program, status))?;
    std::process::exit(code)
}

/// Starts the app and serves as its init until it exits; returns its exit code.
async fn init_loop(
    mut app: Command,
    program: &str,
    status: &mut Option<OwnedFd>,
) -> Result<i32, ProcessError> {
    use tokio::signal::unix::{signal as handle, SignalKind};
    let handled = |kind| {
        handle(kind).map_err(|e| ProcessError::Invalid(format!("cannot handle signals: {e}")))
    };
    let mut term = handled(SignalKind::terminate())?;
    let mut int = handled(SignalKind::interrupt())?;
    let mut hup = handled(SignalKind::hangup())?;
    let mut quit = handled(SignalKind::quit())?;
    let mut usr1 = handled(SignalKind::user_defined1())?;
    let mut usr2 = handled(SignalKind::user_defined2())?;
    let mut chld = handled(SignalKind::child())?;
    let child = app
        .spawn()
        .map_err(|e| ProcessError::Invalid(format!("cannot run {program}: {e}")))?;
    // The app runs: close the status pipe, so the supervisor reads EOF.
    drop(status.take());
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    loop {
        let pass = tokio::select! {
            _ = term.recv() => Signal::SIGTERM,
            _ = int.recv() => Signal::SIGINT,
            _ = hup.recv() => Signal::SIGHUP,
            _ = quit.recv() => Signal::SIGQUIT,
            _ = usr1.recv() => Signal::SIGUSR1,
            _ = usr2.recv() => Signal::SIGUSR2,
            _ = chld.recv() => Signal::SIGCHLD,
        };
        if pass != Signal::SIGCHLD {
            let _ = kill(pid, pass);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(code),
                Ok(WaitStatus::Signaled(p, s, _)) if p == pid => return Ok(128 + s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {} // an orphan reaped
            }
        }
    }
}

fn exec_app(
    app_dir: &Path,
    status: &mut Option<OwnedFd>,
) -> Result<std::convert::Infallible, ProcessError> {
    let spec = read_spec(app_dir)?;
    let merged = app_dir.join("merged");
    let confine = |what: &'static str| {
        move |e: archy_confine::ConfineError| ProcessError::Invalid(format!("{what}: {e}"))
    };
    // Into the app's cgroup first: everything the app starts is counted from here on.
    archy_confine::cgroup::Hierarchy::detect()
        .and_then(|h| archy_confine::cgroup::AppCgroup::open(&h, &spec.cgroup))
        .and_then(|c| c.add_self())
        .map_err(confine("cgroup"))?;
    let userns = std::env::var(USERNS_PID)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| ProcessError::Invalid(format!("{USERNS_PID} is not set")))
        .and_then(|pid| {
            let path = PathBuf::from(format!("/proc/{pid}/ns/user"));
            fs::File::open(&path).map_err(io_at(&path))
        })?;
    // Secret values are read now, from their 0600 files, and only ever given to the app.
    let mut env: BTreeMap<String, String> = spec.env.clone();
    if let Some(dir) = &spec.secrets_dir {
        for name in &spec.secret_names {
            let path = dir.join(name);
            let value = fs::read_to_string(&path).map_err(io_at(&path))?;
            env.insert(name.clone(), value);
        }
    }
    // A mount namespace of its own, so pivoting the root does not move the supervisor's.
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| ProcessError::Invalid(format!("cannot create a mount namespace: {e}")))?;
    const NONE: Option<&str> = None;
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(mount_err("private propagation", Path::new("/")))?;
    prepare_root(&spec, app_dir, &userns)?;
    let proc_dir = resolve_in_root(&merged, "/proc")?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .map_err(mount_err("proc", &proc_dir))?;
    archy_confine::procfs::mask(&merged).map_err(confine("masking /proc"))?;
    // pivot_root, and the host's tree unmounted: no path leads back to it.
    nix::unistd::chdir(&merged)?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| ProcessError::Invalid(format!("pivot_root into the app's root: {e}")))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| ProcessError::Invalid(format!("unmounting the host's root: {e}")))?;
    nix::unistd::chdir("/")?;
    let user = resolve_user(spec.user.as_deref())?;
    // Root of the app's own user namespace from here: host ids id_start.. and no
    // capability over the host, its mounts, devices or network.
    nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| ProcessError::Invalid(format!("joining the app's user namespace: {e}")))?;
    drop(userns);
    nix::unistd::setgroups(&[])?;
    let root = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setresgid(root.1, root.1, root.1)?;
    nix::unistd::setresuid(root.0, root.0, root.0)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 1024, 1024)?;
    if fs::create_dir_all(&spec.workdir).is_err()
        || nix::unistd::chdir(spec.workdir.as_str()).is_err()
    {
        return Err(ProcessError::Invalid(format!(
            "cannot use working dir {}",
            spec.workdir
        )));
    }
    // The bounding set shrinks while this process may still shrink it; a user switch
    // then clears the rest, as it does for a non-root user in podman.
    let keep = archy_confine::caps::app_set(&spec.capabilities).map_err(confine("capabilities"))?;
    archy_confine::caps::restrict_to(&keep).map_err(confine("capabilities"))?;
    if let Some(u) = &user {
        nix::unistd::setgroups(&[u.gid])?;
        nix::unistd::setgid(u.gid)?;
        nix::unistd::setuid(u.uid)?;
        env.entry("HOME".into()).or_insert_with(|| u.home.clone());
    }
    env.entry("HOME".into()).or_insert_with(|| "/root".into());
    nix::sys::prctl::set_no_new_privs()?;
    archy_confine::seccomp::apply_default().map_err(confine("seccomp"))?;
    // After the credential change, which would clear it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    let (program, args) = spec.argv.split_first().ok_or(ProcessError::NoCommand)?;
    let mut app = Command::new(program);
    app.args(args).env_clear().envs(&env);
    run_init(app, program, status)
}

struct User {
    uid: Uid,
    gid: Gid,
    home: String,
}

/// `uid[:gid]` or `name[:group]`, names looked up in the app's `/etc/passwd` and
/// `/etc/group` (call after chroot).
fn resolve_user(user: Option<&str>) -> Result<Option<User>, ProcessError> {
    let Some(user) = user else {
        return Ok(None);
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && (f[0] == u || f[2] == u)).then(|| {
            (
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5].to_string(),
            )
        })
    });
    let uid = u
        .parse::<u32>()
        .ok()
        .or(entry.as_ref().and_then(|e| e.0))
        .ok_or_else(|| {
            ProcessError::Invalid(format!("user {u:?} is not in the image's /etc/passwd"))
        })?;
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => fs::read_to_string("/etc/group")
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 3 && f[0] == g).then(|| f[2].parse::<u32>().ok())?
                })
                .ok_or_else(|| {
                    ProcessError::Invalid(format!("group {g:?} is not in the image's /etc/group"))
                })?,
        },
        None => entry.as_ref().and_then(|e| e.1).unwrap_or(0),
    };
    Ok(Some(User {
        uid: Uid::from_raw(uid),
        gid: Gid::from_raw(gid),
        home: entry.map(|e| e.2).unwrap_or_else(|| "/".into()),
    }))
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
