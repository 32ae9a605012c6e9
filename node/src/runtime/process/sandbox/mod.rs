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
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use nix::{
    sched::{unshare, CloneFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::runtime::process::{
    io_at, json_at, proc_state, setup, AppSpec, PidRecord, ProcState, ProcessError,
};
use archy_catalog::manifest::Protocol;

mod init;
mod ports;
mod root;

use init::exec;
use ports::{bind_tcp, forward_tcp, forward_udp, loopback_up, HostSocket};
pub use root::resolve_in_root;

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
            return Err(ProcessError::HelperReported {
                step: "user namespace",
                message: line.trim().trim_start_matches("error: ").to_string(),
            });
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
                Err(ProcessError::Confine {
                    step: "user namespace id maps",
                    source: e,
                })
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
    serde_json::from_slice(&bytes).map_err(json_at(&path))
}

// ---------------------------------------------------------------------------------------
// supervise

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
    .map_err(|_| ProcessError::SupervisorRunning)?;
    let spec = read_spec(&app_dir)?;
    let mut sockets = Vec::new();
    for p in &spec.ports {
        let s = match p.protocol {
            Protocol::Tcp => HostSocket::Tcp(bind_tcp(p.host)?, p.container),
            Protocol::Udp => HostSocket::Udp(
                std::net::UdpSocket::bind(p.host)
                    .map_err(setup(format!("cannot bind udp {}", p.host)))?,
                p.container,
            ),
        };
        sockets.push(s);
    }
    // Before the PID namespace: the holder must not become the app's PID 1.
    let userns = UserNs::create(spec.id_start)?;
    let cgroup = archy_confine::cgroup::Hierarchy::detect()
        .and_then(|h| archy_confine::cgroup::AppCgroup::create(&h, &spec.cgroup, &spec.limits()))
        .map_err(|source| ProcessError::Confine {
            step: "cgroup",
            source,
        })?;
    // No mount namespace for the supervisor: the exec helper makes its own, mounts the
    // app's root there and pivots into it, leaving no copy of the host's mounts behind
    // (a copy would keep them busy, e.g. podman's per-container shm mounts).
    unshare(
        CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(setup("cannot create namespaces"))?;
    loopback_up().map_err(setup("cannot bring lo up"))?;
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
        return Err(ProcessError::HelperReported {
            step: "the app's init",
            message,
        });
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
    let bytes = serde_json::to_vec(&record).map_err(json_at(&path))?;
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
