//! The kernel's confinement primitives for Archy's process runtime.
//!
//! The process runtime runs each app as host root in its own namespaces. This crate gives
//! it what it takes to confine such an app at least as tightly as rootless podman does:
//!
//! - [`caps`]: shrink the capability sets to podman's default set plus what the app asks for;
//! - [`seccomp`]: the syscall filter of podman's/Docker's default profile;
//! - [`cgroup`]: memory, CPU and process-count limits (cgroup v2 or v1);
//! - [`idmap`]: a private block of host uids/gids per app, and idmapped mounts that show
//!   the image's files to the app's user namespace without chowning them;
//! - [`procfs`]: hide and write-protect the dangerous parts of the app's `/proc`.
//!
//! Each call names what failed and where in its [`ConfineError`].
//!
//! ```no_run
//! use archy_confine::{caps, cgroup, seccomp};
//! # fn main() -> archy_confine::Result<()> {
//! # let helper_pid = 0;
//! // In the supervisor, on the host: the app's processes share one set of limits.
//! let limits = cgroup::Limits { memory_bytes: Some(256 << 20), cpus: Some(0.5), pids: Some(256) };
//! let group = cgroup::AppCgroup::create(&cgroup::Hierarchy::detect()?, "my-app", &limits)?;
//! group.add(helper_pid)?;
//!
//! // In the exec helper, as uid 0 of the app's user namespace, just before exec:
//! caps::restrict_to(&caps::app_set(&["NET_RAW".to_owned()])?)?;
//! seccomp::apply_default()?;
//! # Ok(())
//! # }
//! ```

pub mod caps;
pub mod cgroup;
mod error;
pub mod idmap;
pub mod procfs;
pub mod seccomp;

pub use error::{ConfineError, Result};

#[cfg(test)]
mod child {
    //! Tests that change process-wide state (capabilities, seccomp, mount namespaces) run
    //! their body in a child: this test binary again, running only that test, with
    //! [`ENV`] set so that the test knows it is the child.

    use std::process::Command;

    /// Set in the child's environment.
    pub const ENV: &str = "ARCHY_CONFINE_CHILD";

    /// Whether this process is the child of a test that re-ran itself.
    pub fn is_child() -> bool {
        std::env::var_os(ENV).is_some()
    }

    /// Whether this process may run a test that needs root. Without root the test is
    /// skipped, or fails under `ARCHY_REQUIRE_PRIVILEGED=1` (CI sets it), as the node's are.
    pub fn privileged() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        let required = std::env::var("ARCHY_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "ARCHY_REQUIRE_PRIVILEGED=1 but this test needs root"
        );
        eprintln!("skipped: this test needs root");
        false
    }

    /// The command that re-runs `test` (its full path, e.g. `caps::tests::restrict`).
    pub fn command(test: &str) -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("path of the test binary"));
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV, "1");
        cmd
    }

    /// Re-runs `test` in a child with `envs` added, asserts that it ran and passed, passes
    /// on its `timing:` lines and returns its stdout.
    pub fn run(test: &str, envs: &[(&str, &std::ffi::OsStr)]) -> String {
        let out = command(test)
            .envs(envs.iter().copied())
            .output()
            .expect("spawning the test child");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child run of {test} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        // libtest prints "test <name> ... " without a newline before the test's own output.
        for timing in stdout.lines().filter_map(|line| line.split_once("timing:")) {
            eprintln!("timing:{}", timing.1);
        }
        stdout
    }
}
