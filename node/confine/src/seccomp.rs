//! The default seccomp filter: the syscalls that podman's/Docker's default profile denies a
//! container without CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE and the like.
//!
//! Capabilities alone do not close these: an app is root in its own user namespace, and
//! much of the kernel (mounting, new namespaces, keyrings, BPF, io_uring, perf) trusts a
//! namespace's root. Podman's profile is an allow-list with EPERM as the default; this
//! filter is the same in effect written the other way round: allow by default, EPERM for
//! the syscalls podman's profile leaves out. Syscall numbers come from `libc` per target
//! architecture; filters are built for x86_64 and aarch64 only.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule,
};

use crate::{ConfineError, Result};

/// Syscalls that fail with EPERM whatever their arguments, on both architectures.
const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
];

#[cfg(target_arch = "x86_64")]
mod arch {
    /// The architecture the filters check for (any other is killed).
    pub const TARGET: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;
    /// Legacy syscalls that x86_64 has and aarch64 never got. Also in podman's list but
    /// not here: create_module, get_kernel_syms and query_module, which every kernel since
    /// 2.6 answers with ENOSYS (libc has no numbers for them), and vm86/vm86old, which only
    /// i386 has, and i386 calls are killed by the architecture check.
    pub const DENIED: &[i64] = &[
        libc::SYS__sysctl,
        libc::SYS_ioperm,
        libc::SYS_iopl,
        libc::SYS_sysfs,
        libc::SYS_uselib,
        libc::SYS_ustat,
    ];
}

#[cfg(target_arch = "aarch64")]
mod arch {
    /// The architecture the filters check for (any other is killed).
    pub const TARGET: seccompiler::TargetArch = seccompiler::TargetArch::aarch64;
    /// aarch64 has none of x86_64's legacy syscalls.
    pub const DENIED: &[i64] = &[];
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("archy-confine's seccomp filter knows syscall numbers for x86_64 and aarch64 only");

/// The `personality(2)` arguments podman allows: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32 and 0xffffffff (query).
const PERSONALITIES: [u64; 5] = [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The namespace flags that `clone(2)` may not carry (podman allows them only with
/// CAP_SYS_ADMIN). The flags are `clone`'s first argument on both x86_64 and aarch64
/// (only s390 swaps the first two).
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The default filters, in the order to install them:
///
/// 1. EPERM for the denied syscalls, for `personality` with other arguments than podman
///    allows (0, 8, 0x20000, 0x20008 and 0xffffffff), and for `clone` with a namespace flag;
/// 2. ENOSYS for `clone3`, whose flags sit in memory where a filter cannot see them: libc
///    then falls back to `clone`, which filter 1 checks;
/// 3. on x86_64, ENOSYS for x32 syscalls (number with bit 30 set). They share x86_64's
///    architecture tag, so filter 1 would not recognise `mount` called through x32 on a
///    kernel built with CONFIG_X86_X32_ABI.
///
/// Stacked filters combine, the most restrictive answer winning. Filters 1 and 2 kill a
/// process that makes a syscall of another architecture (e.g. i386 through `int 0x80`),
/// where podman would filter it: 32-bit binaries do not run under this filter.
pub fn default_filters() -> Result<Vec<BpfProgram>> {
    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let mut filters = Vec::new();
    for (what, rules, errno) in [
        ("EPERM", eperm_rules(), libc::EPERM),
        ("clone3", Ok(clone3), libc::ENOSYS),
    ] {
        let errno = SeccompAction::Errno(errno as u32);
        let filter = rules
            .and_then(|rules| SeccompFilter::new(rules, SeccompAction::Allow, errno, arch::TARGET))
            .and_then(BpfProgram::try_from)
            .map_err(|source| ConfineError::Seccomp {
                what: format!("building the {what} filter"),
                source: source.into(),
            })?;
        filters.push(filter);
    }
    #[cfg(target_arch = "x86_64")]
    filters.push(deny_x32());
    Ok(filters)
}

/// The rules of filter 1 of [`default_filters`].
fn eperm_rules() -> std::result::Result<BTreeMap<i64, Vec<SeccompRule>>, BackendError> {
    let arg0 = |op, value| SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value);
    let mut rules: BTreeMap<_, _> = DENIED
        .iter()
        .chain(arch::DENIED)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let other_personality = PERSONALITIES
        .iter()
        .map(|&persona| arg0(SeccompCmpOp::Ne, persona))
        .collect::<std::result::Result<_, _>>()?;
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(other_personality)?],
    );
    // One rule per flag: rules are alternatives, the conditions of one rule all must hold.
    let namespace_clone = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| SeccompRule::new(vec![arg0(SeccompCmpOp::MaskedEq(flag), flag)?]))
        .collect::<std::result::Result<_, _>>()?;
    rules.insert(libc::SYS_clone, namespace_clone);
    Ok(rules)
}

/// Filter 3 of [`default_filters`], written by hand: seccompiler matches exact syscall
/// numbers only.
#[cfg(target_arch = "x86_64")]
fn deny_x32() -> BpfProgram {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W};
    /// `AUDIT_ARCH_X86_64` from linux/audit.h (not in libc).
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    /// `__X32_SYSCALL_BIT` from asm/unistd.h.
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    /// Offsets of `nr` and `arch` in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let insn = |code: u32, jt, jf, k| seccompiler::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, ARCH),
        // Another architecture: not this filter's business (the others kill it).
        insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, AUDIT_ARCH_X86_64),
        insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, NR),
        insn(BPF_JMP | BPF_JSET | BPF_K, 0, 1, X32_SYSCALL_BIT),
        insn(
            BPF_RET | BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        insn(BPF_RET | BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs [`default_filters`] on the calling thread; threads and processes it creates
/// afterwards inherit them, and they survive exec. Call it last before the app's exec,
/// after [`crate::caps::restrict_to`].
///
/// Installing a filter needs `no_new_privs` or CAP_SYS_ADMIN; seccompiler sets
/// `no_new_privs` itself before each filter, so after this call the thread has it either
/// way (an exec can then gain no privilege through setuid bits or file capabilities).
pub fn apply_default() -> Result<()> {
    let filters = default_filters()?;
    for (i, filter) in filters.iter().enumerate() {
        seccompiler::apply_filter(filter).map_err(|source| ConfineError::Seccomp {
            what: format!("installing filter {} of {}", i + 1, filters.len()),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child;
    use nix::{
        errno::Errno,
        mount::{mount, MsFlags},
        sched::{unshare, CloneFlags},
        sys::{personality, ptrace},
        unistd::getppid,
    };
    use std::{process::Command, time::Instant};

    #[test]
    fn filters_build() {
        let filters = default_filters().unwrap();
        assert_eq!(
            filters.len(),
            if cfg!(target_arch = "x86_64") { 3 } else { 2 }
        );
    }

    #[test]
    fn default_filter_denies() {
        if !child::is_child() {
            child::run("seccomp::tests::default_filter_denies", &[]);
            return;
        }
        let start = Instant::now();
        apply_default().unwrap();
        println!("timing: apply_default took {:?}", start.elapsed());

        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(status.contains("\nSeccomp:\t2\n"), "{status}");
        assert!(status.contains("\nNoNewPrivs:\t1\n"), "{status}");
        // Without the filter this would fail with ENOENT, not EPERM.
        let remount = mount(
            None::<&str>,
            "/nonexistent-archy-confine",
            None::<&str>,
            MsFlags::MS_REMOUNT,
            None::<&str>,
        );
        assert_eq!(remount, Err(Errno::EPERM));
        assert_eq!(unshare(CloneFlags::CLONE_NEWUSER), Err(Errno::EPERM));
        assert_eq!(ptrace::attach(getppid()), Err(Errno::EPERM));
        // Querying and setting the plain Linux personality are allowed, others are not.
        personality::get().unwrap();
        personality::set(personality::Persona::empty()).unwrap();
        assert_eq!(
            personality::set(personality::Persona::READ_IMPLIES_EXEC),
            Err(Errno::EPERM)
        );
        // glibc spawns with clone3 first: this only works if ENOSYS sends it to clone.
        let spawned = Command::new("/bin/true").status().unwrap();
        assert!(spawned.success());
        // A raw clone with any one namespace flag (perl can make raw syscalls; this test
        // binary may not, unsafe being denied): EPERM for each.
        let clone_each = format!(
            "for (@ARGV) {{ exit 1 unless syscall({}, $_ | {}, 0, 0, 0, 0) == -1 && $!{{EPERM}} }}",
            libc::SYS_clone,
            libc::SIGCHLD
        );
        let flags = NAMESPACE_FLAGS.map(|flag| flag.to_string());
        let perl = Command::new("perl")
            .args(["-e", &clone_each])
            .args(flags)
            .status();
        assert!(perl.unwrap().success());
    }
}
