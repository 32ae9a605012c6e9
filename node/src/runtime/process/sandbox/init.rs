//! `exec`: PID 1 of the app's PID namespace. It makes the app's root, drops into the
//! app's user namespace and user with bounded capabilities, `no_new_privs` and the
//! seccomp filter, forks the app and stays as its init (signals, orphans, exit status).

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use nix::{
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{Gid, Pid, Uid},
};

use super::{
    read_spec,
    root::{mount_err, prepare_root, resolve_in_root},
    USERNS_PID,
};
use crate::runtime::process::{io_at, setup, ProcessError};

pub(super) fn exec(app_dir: &Path) -> ExitCode {
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

pub(super) fn report_exec_failure(status: Option<OwnedFd>, e: &ProcessError) {
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
pub(super) fn run_init(
    app: Command,
    program: &str,
    status: &mut Option<OwnedFd>,
) -> Result<std::convert::Infallible, ProcessError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(setup("cannot start the init"))?;
    let code = rt.block_on(init_loop(app, program, status))?;
    std::process::exit(code)
}

/// Starts the app and serves as its init until it exits; returns its exit code.
pub(super) async fn init_loop(
    mut app: Command,
    program: &str,
    status: &mut Option<OwnedFd>,
) -> Result<i32, ProcessError> {
    use tokio::signal::unix::{signal as handle, SignalKind};
    let handled = |kind| handle(kind).map_err(setup("cannot handle signals"));
    let mut term = handled(SignalKind::terminate())?;
    let mut int = handled(SignalKind::interrupt())?;
    let mut hup = handled(SignalKind::hangup())?;
    let mut quit = handled(SignalKind::quit())?;
    let mut usr1 = handled(SignalKind::user_defined1())?;
    let mut usr2 = handled(SignalKind::user_defined2())?;
    let mut chld = handled(SignalKind::child())?;
    let child = app
        .spawn()
        .map_err(setup(format!("cannot run {program}")))?;
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

pub(super) fn exec_app(
    app_dir: &Path,
    status: &mut Option<OwnedFd>,
) -> Result<std::convert::Infallible, ProcessError> {
    let spec = read_spec(app_dir)?;
    let merged = app_dir.join("merged");
    let confine = |what: &'static str| move |source| ProcessError::Confine { step: what, source };
    // Into the app's cgroup first: everything the app starts is counted from here on.
    archy_confine::cgroup::Hierarchy::detect()
        .and_then(|h| archy_confine::cgroup::AppCgroup::open(&h, &spec.cgroup))
        .and_then(|c| c.add_self())
        .map_err(confine("cgroup"))?;
    let userns = std::env::var(USERNS_PID)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or(ProcessError::MissingEnv(USERNS_PID))
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
    unshare(CloneFlags::CLONE_NEWNS).map_err(setup("cannot create a mount namespace"))?;
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
    nix::unistd::pivot_root(".", ".").map_err(setup("pivot_root into the app's root"))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(setup("unmounting the host's root"))?;
    nix::unistd::chdir("/")?;
    let user = resolve_user(spec.user.as_deref())?;
    // Root of the app's own user namespace from here: host ids id_start.. and no
    // capability over the host, its mounts, devices or network.
    nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER)
        .map_err(setup("joining the app's user namespace"))?;
    drop(userns);
    nix::unistd::setgroups(&[])?;
    let root = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setresgid(root.1, root.1, root.1)?;
    nix::unistd::setresuid(root.0, root.0, root.0)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 1024, 1024)?;
    if fs::create_dir_all(&spec.workdir).is_err()
        || nix::unistd::chdir(spec.workdir.as_str()).is_err()
    {
        return Err(ProcessError::WorkDir(spec.workdir.clone()));
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

pub(super) struct User {
    uid: Uid,
    gid: Gid,
    home: String,
}

/// `uid[:gid]` or `name[:group]`, names looked up in the app's `/etc/passwd` and
/// `/etc/group` (call after chroot).
pub(super) fn resolve_user(user: Option<&str>) -> Result<Option<User>, ProcessError> {
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
        .ok_or_else(|| ProcessError::UnknownUser(u.to_string()))?;
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
                .ok_or_else(|| ProcessError::UnknownGroup(g.to_string()))?,
        },
        None => entry.as_ref().and_then(|e| e.1).unwrap_or(0),
    };
    Ok(Some(User {
        uid: Uid::from_raw(uid),
        gid: Gid::from_raw(gid),
        home: entry.map(|e| e.2).unwrap_or_else(|| "/".into()),
    }))
}
