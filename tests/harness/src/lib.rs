//! # archy-harness
//!
//! Running Archy's binaries the way an operator does, from the tests of every crate and
//! from `archy demo`: one command builder whose failures name the command and show its
//! output, one background-process type that waits for a ready line and is killed when
//! dropped, one way to poll for a condition with a deadline, and a watchdog that turns
//! a test that hangs into a named failure instead of a CI run that never ends; and, in
//! [`hostile`], the hostile relay and DHT peer that attack tests and benchmarks use;
//! in [`web`], a static web host for web seeds.
//!
//! ```no_run
//! use std::time::Duration;
//! use archy_harness::{poll_until, Cmd};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let relay = Cmd::new("archy")
//!     .args(["relay", "run", "--listen", "127.0.0.1:0"])
//!     .background("relay", "relay ", Duration::from_secs(20))?;
//! println!("{}", relay.ready);
//! let status = Cmd::new("archy").args(["node", "status", "--json"]).json()?;
//! let up = poll_until("the node to answer", Duration::from_secs(10), || {
//!     Cmd::new("archy").args(["node", "status"]).stdout().ok()
//! })?;
//! # Ok(()) }
//! ```

pub mod hostile;
pub mod web;

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// What went wrong running a command; every variant names the command.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("cannot start {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed ({status}): {}{}", stdout.trim(), stderr_part(stderr))]
    Failed {
        cmd: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("{cmd}: output is not JSON: {source}")]
    NotJson {
        cmd: String,
        source: serde_json::Error,
    },
    #[error("{cmd} did not print a line starting with {ready:?} within {within:?}")]
    NotReady {
        cmd: String,
        ready: String,
        within: Duration,
    },
}

fn stderr_part(stderr: &str) -> String {
    match stderr.trim() {
        "" => String::new(),
        s => format!("\n{s}"),
    }
}

/// A command to run: a builder over [`std::process::Command`] that remembers how to
/// show itself in errors.
#[derive(Debug)]
pub struct Cmd {
    command: Command,
    shown: String,
    stderr: StderrTo,
}

/// Where a command's stderr goes.
#[derive(Debug)]
enum StderrTo {
    /// Captured by [`Cmd::output`], dropped by [`Cmd::background`].
    Default,
    /// Ours.
    Inherit,
    /// A file (created or truncated).
    File(PathBuf),
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let shown = Path::new(program.as_ref())
            .file_name()
            .unwrap_or(program.as_ref())
            .to_string_lossy()
            .into_owned();
        Self {
            command: Command::new(program),
            shown,
            stderr: StderrTo::Default,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.shown.push(' ');
        self.shown.push_str(&arg.as_ref().to_string_lossy());
        self.command.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(self, args: I) -> Self {
        args.into_iter().fold(self, Cmd::arg)
    }

    /// Runs it in `dir`.
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Lets its stderr through to ours (the demo shows what its steps log) instead of
    /// capturing it.
    pub fn inherit_stderr(mut self) -> Self {
        self.stderr = StderrTo::Inherit;
        self
    }

    /// Writes its stderr to `path` (what a test reads a daemon's log from).
    pub fn stderr_to_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.stderr = StderrTo::File(path.into());
        self
    }

    /// Where stderr goes when it is not captured.
    fn stderr_stdio(&self) -> Result<Stdio, CmdError> {
        Ok(match &self.stderr {
            StderrTo::Default => Stdio::null(),
            StderrTo::Inherit => Stdio::inherit(),
            StderrTo::File(path) => std::fs::File::create(path)
                .map_err(|source| CmdError::Spawn {
                    cmd: format!("{} (stderr to {})", self.shown, path.display()),
                    source,
                })?
                .into(),
        })
    }

    /// The command line, as errors show it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs it to completion, whatever its exit status.
    pub fn output(mut self) -> Result<Output, CmdError> {
        if !matches!(self.stderr, StderrTo::Default) {
            let stderr = self.stderr_stdio()?;
            self.command.stderr(stderr);
        }
        self.command.output().map_err(|source| CmdError::Spawn {
            cmd: self.shown,
            source,
        })
    }

    /// Runs it to completion; its stdout if it succeeded.
    pub fn stdout(self) -> Result<String, CmdError> {
        let cmd = self.shown.clone();
        let out = self.output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        match out.status.success() {
            true => Ok(stdout),
            false => Err(CmdError::Failed {
                cmd,
                status: out.status,
                stdout,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }

    /// Runs it to completion; its stdout parsed as JSON if it succeeded.
    pub fn json(self) -> Result<serde_json::Value, CmdError> {
        let cmd = self.shown.clone();
        serde_json::from_str(&self.stdout()?).map_err(|source| CmdError::NotJson { cmd, source })
    }

    /// Starts it in the background and waits (at most `within`) for a stdout line
    /// starting with `ready`. The process is killed when the [`Background`] is dropped.
    pub fn background(
        mut self,
        name: &str,
        ready: &str,
        within: Duration,
    ) -> Result<Background, CmdError> {
        let stderr = self.stderr_stdio()?;
        self.command.stdout(Stdio::piped()).stderr(stderr);
        let mut child = self.command.spawn().map_err(|source| CmdError::Spawn {
            cmd: self.shown.clone(),
            source,
        })?;
        let stdout = child.stdout.take();
        let mut bg = Background {
            name: name.to_string(),
            child,
            ready: String::new(),
            report_stop: false,
        };
        let (tx, rx) = mpsc::channel();
        let prefix = ready.to_string();
        std::thread::spawn(move || {
            for line in stdout
                .into_iter()
                .flat_map(|s| BufReader::new(s).lines().map_while(Result::ok))
            {
                if line.starts_with(&prefix) {
                    let _ = tx.send(line);
                }
            }
        });
        bg.ready = rx.recv_timeout(within).map_err(|_| CmdError::NotReady {
            cmd: self.shown,
            ready: ready.to_string(),
            within,
        })?;
        Ok(bg)
    }
}

/// A process running in the background; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Background {
    name: String,
    pub child: Child,
    /// The line it printed when it was ready.
    pub ready: String,
    report_stop: bool,
}

impl Background {
    /// Says `stopped NAME` on stderr when it is stopped (the demo's cleanup does).
    pub fn report_stop(mut self) -> Self {
        self.report_stop = true;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.report_stop {
            eprintln!("    stopped {}", self.name);
        }
    }
}

/// A condition that did not hold in time.
#[derive(Debug, thiserror::Error)]
#[error("{what}: not within {limit:?}")]
pub struct TimedOut {
    pub what: String,
    pub limit: Duration,
}

/// Calls `check` every 200 ms until it gives a value; gives up after `limit`.
pub fn poll_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() >= limit {
            return Err(TimedOut {
                what: what.to_string(),
                limit,
            });
        }
        std::thread::sleep(Duration::from_millis(200).min(limit.saturating_sub(start.elapsed())));
    }
}

/// [`poll_until`] for async checks, on tokio's clock (it does not block a worker).
pub async fn poll_until_async<T, F, Fut>(
    what: &str,
    limit: Duration,
    mut check: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() >= limit {
            return Err(TimedOut {
                what: what.to_string(),
                limit,
            });
        }
        tokio::time::sleep(Duration::from_millis(200).min(limit.saturating_sub(start.elapsed())))
            .await;
    }
}

/// Ends the whole test process, naming the test, if it is still running after a limit:
/// a hang becomes a red run with a name instead of a CI job that never finishes. Keep
/// the guard for the test's length; dropping it disarms the watchdog.
///
/// ```
/// let _watchdog = archy_harness::watchdog(std::time::Duration::from_secs(120));
/// ```
#[must_use = "the watchdog is disarmed when the guard is dropped"]
pub fn watchdog(limit: Duration) -> Watchdog {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    Watchdog::arm(limit, move || {
        eprintln!("watchdog: {test} still running after {limit:?}; ending the test process");
        std::process::exit(101);
    })
}

/// The guard of a [`watchdog`].
#[derive(Debug)]
pub struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
}

impl Watchdog {
    fn arm(limit: Duration, fire: impl FnOnce() + Send + 'static) -> Self {
        let (disarm, disarmed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
                fire();
            }
        });
        Watchdog {
            disarm: Some(disarm),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.disarm.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_failure_names_the_command_and_shows_its_output() {
        let e = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .stdout()
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("sh -c echo out; echo err >&2; exit 3 failed"),
            "{text}"
        );
        assert!(text.contains("out") && text.contains("err"), "{text}");
        assert!(matches!(
            Cmd::new("/nonexistent/x").output(),
            Err(CmdError::Spawn { .. })
        ));
        let json = Cmd::new("echo").arg("{\"a\": 1}").json().unwrap();
        assert_eq!(json["a"], 1);
        assert!(matches!(
            Cmd::new("echo").arg("nope").json(),
            Err(CmdError::NotJson { .. })
        ));
    }

    #[test]
    fn a_background_process_waits_for_its_ready_line_and_dies_with_its_handle() {
        let bg = Cmd::new("sh")
            .args(["-c", "echo starting; echo ready at 1; sleep 30"])
            .background("sleeper", "ready ", Duration::from_secs(10))
            .unwrap();
        assert_eq!(bg.ready, "ready at 1");
        let pid = bg.child.id();
        drop(bg);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        let e = Cmd::new("sh")
            .args(["-c", "echo never; sleep 30"])
            .background("quiet", "ready", Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(e, CmdError::NotReady { .. }), "{e}");
    }

    #[test]
    fn polling_returns_the_value_or_times_out() {
        let mut n = 0;
        assert_eq!(
            poll_until("n to reach 3", Duration::from_secs(5), || {
                n += 1;
                (n >= 3).then_some(n)
            })
            .unwrap(),
            3
        );
        let e = poll_until("never", Duration::from_millis(300), || None::<()>).unwrap_err();
        assert_eq!(e.to_string(), "never: not within 300ms");
    }

    #[test]
    fn a_watchdog_fires_only_when_its_guard_outlives_the_limit() {
        let (tx, fired) = mpsc::channel();
        let tx2 = tx.clone();
        let disarmed = Watchdog::arm(Duration::from_millis(100), move || {
            tx.send("disarmed").unwrap()
        });
        drop(disarmed);
        let _armed = Watchdog::arm(Duration::from_millis(300), move || {
            tx2.send("late").unwrap()
        });
        assert_eq!(fired.recv_timeout(Duration::from_secs(10)).unwrap(), "late");
        assert!(fired.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
