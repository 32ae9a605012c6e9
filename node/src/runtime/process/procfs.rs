//! What /proc and the kernel say about a process: is it alive, is it still the one we
//! started (its start time), and how to signal it and wait for it to go.

use std::{
    fs,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

/// What /proc says about a PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Alive (not a zombie) with this start time.
    Alive { start_time: u64 },
    /// No such process, or a zombie.
    Gone,
    /// /proc could not be read.
    Unknown,
}

/// Reads `/proc/PID/stat`: state (field 3) and start time (field 22).
pub fn proc_state(pid: u32) -> ProcState {
    if pid == 0 {
        return ProcState::Gone;
    }
    let text = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ProcState::Gone,
        Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => return ProcState::Gone,
        Err(_) => return ProcState::Unknown,
    };
    // `comm` (field 2) is in parentheses and may itself contain spaces and ')'.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return ProcState::Unknown;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    match (
        fields.first(),
        fields.get(19).and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(&"Z") | Some(&"X") | Some(&"x"), _) => ProcState::Gone,
        (Some(_), Some(start_time)) => ProcState::Alive { start_time },
        _ => ProcState::Unknown,
    }
}

/// Whether `pid` is still the process that had `start_time`: `Some(false)` when it is
/// gone or the PID now belongs to another process, `None` when it cannot be told.
pub fn same_process(pid: u32, start_time: u64) -> Option<bool> {
    match proc_state(pid) {
        ProcState::Alive { start_time: s } => Some(s == start_time),
        ProcState::Gone => Some(false),
        ProcState::Unknown => None,
    }
}

/// Whether a kernel release such as `6.18.44-fc` is at least `major.minor`.
pub(crate) fn kernel_at_least(release: &str, major: u32, minor: u32) -> Option<bool> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let (a, b) = (
        parts.next()?.parse::<u32>().ok()?,
        parts.next()?.parse::<u32>().ok()?,
    );
    Some((a, b) >= (major, minor))
}

pub(crate) fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// Waits until `pid` no longer is the process with `start_time`; false on timeout.
pub(crate) fn wait_gone(pid: u32, start_time: u64, timeout: Duration) -> bool {
    let started = Instant::now();
    loop {
        if same_process(pid, start_time) == Some(false) {
            return true;
        }
        if started.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
