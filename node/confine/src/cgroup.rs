//! Per-app resource limits through cgroups.
//!
//! Namespaces hide the host from an app but do not stop it from eating the host's memory,
//! CPU or process table. Each app gets its own cgroup, `archy/<name>` under the hierarchy's
//! root, with memory (no swap), CPU-quota and process-count limits, on cgroup v2 or on the
//! v1 hierarchies of a hybrid setup.

use std::{
    fs,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{error::io_error, ConfineError, Result};

/// The controllers the limits need.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The directory under each hierarchy's root that holds the apps' cgroups.
const PARENT: &str = "archy";
/// The CPU-quota period, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// Limits for an app's processes together. `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Memory in bytes; swap is not allowed on top of it.
    pub memory_bytes: Option<u64>,
    /// CPU time, in CPUs (0.5 = half of one CPU).
    pub cpus: Option<f64>,
    /// Number of processes and threads.
    pub pids: Option<u64>,
}

/// Where the memory, pids and cpu controllers are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified cgroup v2 hierarchy mounted at `root`.
    V2 {
        /// The mount point, usually `/sys/fs/cgroup`.
        root: PathBuf,
    },
    /// One cgroup v1 hierarchy per controller (the same one if they are mounted together).
    V1 {
        /// Mount point of the memory controller.
        memory: PathBuf,
        /// Mount point of the pids controller.
        pids: PathBuf,
        /// Mount point of the cpu controller.
        cpu: PathBuf,
    },
}

impl Hierarchy {
    /// Finds the hierarchy from `/proc/self/mountinfo`: v1 if the controllers are mounted
    /// as v1 hierarchies (hybrid setups), else the cgroup2 mount. On v2, also enables the
    /// three controllers for the root's children; the error names a controller that cannot
    /// be enabled and says how to make it available.
    pub fn detect() -> Result<Hierarchy> {
        const MOUNTINFO: &str = "/proc/self/mountinfo";
        let text = fs::read_to_string(MOUNTINFO).map_err(io_error("reading", MOUNTINFO))?;
        let hierarchy = parse_mountinfo(&text)?;
        if let Hierarchy::V2 { root } = &hierarchy {
            enable_controllers(root)?;
        }
        Ok(hierarchy)
    }

    /// The same hierarchy with each path replaced by the app's cgroup `archy/<name>` in it.
    fn app(&self, name: &str) -> Result<Hierarchy> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty()
            || name.len() > 255
            || name == "."
            || name == ".."
            || !name.chars().all(valid)
        {
            return Err(ConfineError::InvalidCgroupName(name.to_owned()));
        }
        let app = |root: &PathBuf| root.join(PARENT).join(name);
        Ok(match self {
            Hierarchy::V2 { root } => Hierarchy::V2 { root: app(root) },
            Hierarchy::V1 { memory, pids, cpu } => Hierarchy::V1 {
                memory: app(memory),
                pids: app(pids),
                cpu: app(cpu),
            },
        })
    }
}

/// Picks the hierarchy out of a `/proc/self/mountinfo` text. Mount points are taken as
/// printed (mountinfo octal-escapes spaces, which no cgroup mount point has).
fn parse_mountinfo(text: &str) -> Result<Hierarchy> {
    let mut v2: Option<PathBuf> = None;
    let mut v1: [Option<PathBuf>; 3] = Default::default();
    for line in text.lines() {
        // "<id> <parent> <dev> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(mount_point), mut fs) = (mount.split(' ').nth(4), fs.split(' ')) else {
            continue;
        };
        match (fs.next(), fs.nth(1)) {
            (Some("cgroup2"), _) if v2.is_none() || mount_point == "/sys/fs/cgroup" => {
                v2 = Some(mount_point.into());
            }
            (Some("cgroup"), Some(options)) => {
                for (slot, controller) in v1.iter_mut().zip(CONTROLLERS) {
                    if slot.is_none() && options.split(',').any(|o| o == controller) {
                        *slot = Some(mount_point.into());
                    }
                }
            }
            _ => {}
        }
    }
    match (v1, v2) {
        ([Some(memory), Some(pids), Some(cpu)], _) => Ok(Hierarchy::V1 { memory, pids, cpu }),
        ([None, None, None], Some(root)) => Ok(Hierarchy::V2 { root }),
        ([None, None, None], None) => Err(ConfineError::CgroupController {
            controller: "memory, pids and cpu",
            detail: "no cgroup2 or cgroup v1 file system is mounted (see /proc/self/mountinfo)"
                .into(),
        }),
        (v1, _) => {
            let missing = v1.iter().zip(CONTROLLERS).find(|(slot, _)| slot.is_none());
            let controller = missing.map_or("memory", |(_, controller)| controller);
            Err(ConfineError::CgroupController {
                controller,
                detail: format!(
                    "other controllers are mounted as cgroup v1 hierarchies but {controller} is not: \
                     mount it (mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}) \
                     or boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2"
                ),
            })
        }
    }
}

/// Makes sure the v2 cgroup `dir` passes the three controllers on to its children.
fn enable_controllers(dir: &Path) -> Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).map_err(io_error("reading", &control))?;
    for controller in CONTROLLERS {
        if enabled.split_whitespace().any(|c| c == controller) {
            continue;
        }
        if let Err(error) = fs::write(&control, format!("+{controller}")) {
            let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let detail = if available.split_whitespace().any(|c| c == controller) {
                format!(
                    "writing +{controller} to {} failed: {error}",
                    control.display()
                )
            } else {
                format!(
                    "not in {}/cgroup.controllers: the kernel lacks it, a cgroup v1 hierarchy \
                     holds it (boot with systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all), \
                     or, in a container, the runtime did not delegate it",
                    dir.display()
                )
            };
            return Err(ConfineError::CgroupController { controller, detail });
        }
    }
    Ok(())
}

/// One app's cgroup: `archy/<name>` in each hierarchy that holds a needed controller.
#[derive(Debug)]
pub struct AppCgroup {
    /// The cgroup's directories, in the shape of the hierarchy.
    dirs: Hierarchy,
}

impl AppCgroup {
    /// Creates the cgroup `archy/<name>` (replacing a leftover one of that name, whose
    /// processes are killed) and writes `limits` into it. `name` must be 1 to 255 of
    /// `A-Za-z0-9._-`.
    pub fn create(hierarchy: &Hierarchy, name: &str, limits: &Limits) -> Result<AppCgroup> {
        let group = AppCgroup {
            dirs: hierarchy.app(name)?,
        };
        let cpu_quota = match limits.cpus {
            Some(cpus) if !(cpus.is_finite() && cpus > 0.0) => {
                return Err(ConfineError::InvalidCpus(cpus))
            }
            // The kernel's minimum quota is 1 ms.
            Some(cpus) => Some(((cpus * CPU_PERIOD as f64).round() as u64).max(1000)),
            None => None,
        };
        group.remove()?;
        for dir in group.paths() {
            let parent = dir.parent().unwrap_or(&dir);
            let mkdir = |dir: &Path, recursive| {
                fs::DirBuilder::new()
                    .recursive(recursive)
                    .mode(0o755)
                    .create(dir)
                    .map_err(io_error("creating cgroup", dir))
            };
            mkdir(parent, true)?;
            if matches!(group.dirs, Hierarchy::V2 { .. }) {
                enable_controllers(parent)?;
            }
            mkdir(&dir, false)?;
        }
        let written = group.write_limits(limits, cpu_quota);
        if written.is_err() {
            // Best effort: the write error is the one to report.
            let _ = group.remove();
        }
        written.map(|()| group)
    }

    /// The existing cgroup `archy/<name>`, as [`AppCgroup::create`] made it.
    pub fn open(hierarchy: &Hierarchy, name: &str) -> Result<AppCgroup> {
        let group = AppCgroup {
            dirs: hierarchy.app(name)?,
        };
        for dir in group.paths() {
            fs::read_dir(&dir).map_err(io_error("opening cgroup", &dir))?;
        }
        Ok(group)
    }

    /// The cgroup's directories, one per hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = match &self.dirs {
            Hierarchy::V2 { root } => vec![root.clone()],
            Hierarchy::V1 { memory, pids, cpu } => vec![memory.clone(), pids.clone(), cpu.clone()],
        };
        paths.sort();
        paths.dedup();
        paths
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        self.paths()
            .iter()
            .try_for_each(|dir| write(&dir.join("cgroup.procs"), &pid.to_string()))
    }

    /// Moves the calling process into the cgroup.
    pub fn add_self(&self) -> Result<()> {
        self.add(std::process::id())
    }

    /// Kills the processes left in the cgroup and removes it; removing one that is gone is
    /// not an error. Must not be called from a process inside the cgroup.
    pub fn remove(&self) -> Result<()> {
        /// How often to kill and retry while the dying processes still hold the cgroup.
        const ATTEMPTS: u32 = 50;
        for dir in self.paths() {
            for attempt in 1.. {
                kill_all(&dir)?;
                match fs::remove_dir(&dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < ATTEMPTS => {
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_error("removing cgroup", &dir)(e))
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Writes the limits into the cgroup's files.
    fn write_limits(&self, limits: &Limits, cpu_quota: Option<u64>) -> Result<()> {
        let or =
            |limit: Option<u64>, unlimited: &str| limit.map_or(unlimited.into(), |l| l.to_string());
        match &self.dirs {
            Hierarchy::V2 { root: dir } => {
                write(&dir.join("memory.max"), &or(limits.memory_bytes, "max"))?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    let swap_max = if limits.memory_bytes.is_some() {
                        "0"
                    } else {
                        "max"
                    };
                    write(&swap, swap_max)?;
                }
                write(&dir.join("pids.max"), &or(limits.pids, "max"))?;
                write(
                    &dir.join("cpu.max"),
                    &format!("{} {CPU_PERIOD}", or(cpu_quota, "max")),
                )
            }
            Hierarchy::V1 { memory, pids, cpu } => {
                let memory_limit = or(limits.memory_bytes, "-1");
                write(&memory.join("memory.limit_in_bytes"), &memory_limit)?;
                // Memory plus swap: the same limit means no swap. The file is absent without
                // swap accounting; the kernel may refuse the value when swap is off.
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    match write(&memsw, &memory_limit) {
                        Err(ConfineError::Io { source, .. })
                            if matches!(
                                source.raw_os_error(),
                                Some(libc::EINVAL | libc::EBUSY)
                            ) => {}
                        other => other?,
                    }
                }
                write(&pids.join("pids.max"), &or(limits.pids, "max"))?;
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &or(cpu_quota, "-1"))
            }
        }
    }
}

/// Writes `value` to the cgroup file `path`.
fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_error(format!("writing {value:?} to"), path))
}

/// Kills every process in the cgroup `dir`: through `cgroup.kill` where the kernel has it
/// (v2, Linux 5.14), else with SIGKILL to each pid listed in `cgroup.procs`.
fn kill_all(dir: &Path) -> Result<()> {
    let cgroup_kill = dir.join("cgroup.kill");
    if cgroup_kill.exists() {
        return write(&cgroup_kill, "1");
    }
    let procs = dir.join("cgroup.procs");
    let listed = match fs::read_to_string(&procs) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        listed => listed.map_err(io_error("reading", &procs))?,
    };
    for pid in listed.lines().filter_map(|line| line.trim().parse().ok()) {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(ConfineError::Kill {
                    pid,
                    cgroup: dir.to_owned(),
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child;
    use std::{
        io::{BufRead, BufReader, Write},
        os::unix::process::ExitStatusExt,
        process::{Child, Command, Stdio},
    };

    /// This machine's layout: v1 controllers plus an empty cgroup2 at .../unified.
    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd host on cgroup v2.
    const UNIFIED: &str = "\
22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
26 23 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
";

    #[test]
    fn parses_hybrid_mountinfo_as_v1() {
        assert_eq!(
            parse_mountinfo(HYBRID).unwrap(),
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: "/sys/fs/cgroup/cpu".into(),
            }
        );
        // Debian-style co-mounted cpu,cpuacct.
        let comounted = HYBRID.replace(
            "/cpu rw,relatime - cgroup cgroup rw,cpu",
            "/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
        );
        let Hierarchy::V1 { cpu, .. } = parse_mountinfo(&comounted).unwrap() else {
            panic!("not v1")
        };
        assert_eq!(cpu, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
    }

    #[test]
    fn parses_unified_mountinfo_as_v2() {
        assert_eq!(
            parse_mountinfo(UNIFIED).unwrap(),
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
    }

    #[test]
    fn names_a_missing_controller() {
        let no_pids: String = HYBRID
            .lines()
            .filter(|l| !l.contains("rw,pids"))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = parse_mountinfo(&no_pids).unwrap_err();
        assert!(
            matches!(
                err,
                ConfineError::CgroupController {
                    controller: "pids",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse_mountinfo("28 1 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap_err();
        assert!(err.to_string().contains("no cgroup2 or cgroup v1"), "{err}");
    }

    /// On a hybrid machine like this one, the cgroup2 mount has no controllers to enable.
    #[test]
    fn names_a_controller_v2_cannot_enable() {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let controllers = fs::read_to_string(unified.join("cgroup.controllers"));
        if !controllers.is_ok_and(|c| c.trim().is_empty()) {
            return;
        }
        let err = enable_controllers(unified).unwrap_err();
        assert!(
            matches!(
                err,
                ConfineError::CgroupController {
                    controller: "memory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("systemd.unified_cgroup_hierarchy=1"),
            "{err}"
        );
    }

    #[test]
    fn refuses_names_that_are_not_simple() {
        let h = Hierarchy::V2 {
            root: "/nonexistent".into(),
        };
        for name in ["", ".", "..", "a/b", "../x", "a b", "ä", &"x".repeat(256)] {
            assert!(
                matches!(h.app(name), Err(ConfineError::InvalidCgroupName(_))),
                "{name:?}"
            );
        }
        let app = h.app("web-1.2_x").unwrap();
        assert_eq!(
            app,
            Hierarchy::V2 {
                root: "/nonexistent/archy/web-1.2_x".into()
            }
        );
    }

    /// Removes the cgroup even when an assertion fails.
    struct Cleanup(AppCgroup);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Err(e) = self.0.remove() {
                eprintln!("cleanup: {e}");
            }
        }
    }

    /// Spawns `cmd` waiting on its stdin, moves it into `group`, then lets it go on.
    fn start_in(group: &AppCgroup, cmd: &mut Command) -> Child {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        group.add(child.id()).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        child
    }

    #[test]
    fn limits_are_enforced() {
        if child::is_child() {
            return fork_sleepers();
        }
        if !child::privileged() {
            return;
        }
        let hierarchy = Hierarchy::detect().unwrap();
        let name = format!("confine-test-{}", std::process::id());
        let limits = Limits {
            memory_bytes: Some(32 << 20),
            cpus: Some(0.5),
            pids: Some(16),
        };
        let _first = Cleanup(AppCgroup::create(&hierarchy, &name, &limits).unwrap());
        // Creating it again replaces it.
        let guard = Cleanup(AppCgroup::create(&hierarchy, &name, &limits).unwrap());
        let group = &guard.0;
        let paths = group.paths();
        assert!(paths.iter().all(|p| p.is_dir()), "{paths:?}");
        let read = |path: PathBuf| fs::read_to_string(path).unwrap().trim().to_owned();
        match &group.dirs {
            Hierarchy::V2 { root } => assert_eq!(read(root.join("cpu.max")), "50000 100000"),
            Hierarchy::V1 { cpu, .. } => assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000"),
        }

        // pids: this test binary again (2 threads), trying to start 40 sleeps.
        let mut cmd = child::command("cgroup::tests::limits_are_enforced");
        let out = start_in(group, &mut cmd).wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!("/archy/{name}\n")),
            "not in the cgroup: {stdout}"
        );
        let line = stdout.lines().find(|l| l.starts_with("spawned=")).unwrap();
        let (spawned, failed) = line["spawned=".len()..].split_once(" failed=").unwrap();
        let (spawned, failed): (u32, u32) = (spawned.parse().unwrap(), failed.parse().unwrap());
        assert!(spawned <= 14 && failed >= 26, "{line}");
        eprintln!("pids.max 16: {line}");

        // memory: tail keeps the whole 100 MB line (no newline) and is OOM-killed.
        let script = "read go; head -c 100000000 /dev/zero | tail";
        let mut oom = Command::new("/bin/sh");
        oom.args(["-c", script]).stderr(Stdio::null());
        let status = start_in(group, &mut oom).wait().unwrap();
        assert!(
            status.code() == Some(128 + 9) || status.signal() == Some(9),
            "{status}"
        );

        // remove() kills what is left.
        let mut sleeper = start_in(
            group,
            Command::new("/bin/sh").args(["-c", "read go; exec sleep 60"]),
        );
        assert_eq!(AppCgroup::open(&hierarchy, &name).unwrap().paths(), paths);
        group.remove().unwrap();
        assert_eq!(sleeper.wait().unwrap().signal(), Some(9));
        assert!(paths.iter().all(|p| !p.exists()), "{paths:?}");
        assert!(AppCgroup::open(&hierarchy, &name).is_err());
    }

    /// The child of [`limits_are_enforced`]: once moved, starts 40 sleeps, counting failures.
    fn fork_sleepers() {
        let mut line = String::new();
        BufReader::new(std::io::stdin())
            .read_line(&mut line)
            .unwrap();
        print!("{}", fs::read_to_string("/proc/self/cgroup").unwrap());
        let spawns: Vec<_> = (0..40)
            .map(|_| Command::new("/bin/sleep").arg("5").spawn())
            .collect();
        let failed = spawns.iter().filter(|s| s.is_err()).count();
        println!("spawned={} failed={failed}", spawns.len() - failed);
        for mut sleeper in spawns.into_iter().flatten() {
            sleeper.kill().unwrap();
            sleeper.wait().unwrap();
        }
    }
}
