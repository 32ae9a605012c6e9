//! Capabilities: which of root's powers an app keeps.
//!
//! An app runs as uid 0 of its user namespace, and a uid-0 exec is granted every capability
//! left in the bounding set: the bounding set is what really limits the app. [`restrict_to`]
//! cuts it down to podman's default set (plus what the app's manifest asks for, see
//! [`app_set`]) and trims the calling thread's own sets to match, so that nothing regains
//! the rest across an exec.

use std::fs;

use ::caps::{CapSet, Capability, CapsHashSet};

use crate::{error::io_error, ConfineError, Result};

/// Podman's default capabilities (containers.conf `default_capabilities`), without the
/// `CAP_` prefix. Docker also grants MKNOD, NET_RAW and AUDIT_WRITE; podman dropped them.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Parses a capability name in any of the usual spellings: `NET_ADMIN`, `net_admin`,
/// `CAP_NET_ADMIN`.
pub fn parse(name: &str) -> Result<Capability> {
    ::caps::to_canonical(name)
        .parse()
        .map_err(|_| ConfineError::UnknownCapability(name.to_owned()))
}

/// The capabilities of an app: [`DEFAULT_CAPABILITIES`] plus `extra` (names as [`parse`]
/// takes them).
pub fn app_set(extra: &[String]) -> Result<CapsHashSet> {
    DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .map(parse)
        .collect()
}

/// Restricts the calling thread to the capabilities in `keep`.
///
/// Drops every other capability from the bounding set, clears the ambient and inheritable
/// sets, and sets the permitted and effective sets to `keep` (as far as the thread has them).
/// The inheritable set is left empty as podman does since CVE-2022-27651: with it, a
/// non-root process of the app could regain capabilities by executing a file with
/// inheritable file capabilities. A uid-0 exec is granted the bounding set anyway.
///
/// Needs CAP_SETPCAP (to shrink the bounding set). Reads `/proc/thread-self/status` at the
/// end to check that nothing the `caps` crate cannot name is left in the bounding set.
pub fn restrict_to(keep: &CapsHashSet) -> Result<()> {
    let failed = |what: String| move |source| ConfineError::Capability { what, source };
    let bounding =
        ::caps::read(None, CapSet::Bounding).map_err(failed("reading the bounding set".into()))?;
    for &cap in bounding.difference(keep) {
        ::caps::drop(None, CapSet::Bounding, cap)
            .map_err(failed(format!("dropping {cap} from the bounding set")))?;
    }
    ::caps::clear(None, CapSet::Ambient).map_err(failed("clearing the ambient set".into()))?;
    ::caps::clear(None, CapSet::Inheritable)
        .map_err(failed("clearing the inheritable set".into()))?;
    let permitted = ::caps::read(None, CapSet::Permitted)
        .map_err(failed("reading the permitted set".into()))?;
    let kept: CapsHashSet = permitted.intersection(keep).copied().collect();
    // Effective first: it must stay within the permitted set at every step.
    for set in [CapSet::Effective, CapSet::Permitted] {
        ::caps::set(None, set, &kept).map_err(failed(format!("setting the {set:?} set")))?;
    }
    let left = status_mask("CapBnd")? & !mask(keep);
    if left != 0 {
        return Err(ConfineError::BoundingSetLeft(left));
    }
    Ok(())
}

/// The bit mask of `caps`, as `/proc/<pid>/status` prints it.
fn mask(caps: &CapsHashSet) -> u64 {
    caps.iter().map(Capability::bitmask).sum()
}

/// The capability mask in line `field` (`CapBnd`, `CapEff`, ...) of the calling thread's
/// `/proc/thread-self/status`.
fn status_mask(field: &str) -> Result<u64> {
    const STATUS: &str = "/proc/thread-self/status";
    let status = fs::read_to_string(STATUS).map_err(io_error("reading", STATUS))?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim);
    hex.and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| ConfineError::Io {
            what: format!("finding the {field} line in"),
            path: STATUS.into(),
            source: std::io::ErrorKind::InvalidData.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child;
    use std::time::Instant;

    /// The defaults' mask: bits 0,1,3-8 (CHOWN..SETPCAP), 10 (NET_BIND_SERVICE),
    /// 18 (SYS_CHROOT), 31 (SETFCAP). Docker's 0xa80425fb adds 13, 27 and 29.
    const DEFAULT_MASK: u64 = 0x8004_05fb;

    #[test]
    fn parses_every_spelling() {
        for name in ["NET_ADMIN", "net_admin", "CAP_NET_ADMIN", "cap_net_admin"] {
            assert_eq!(parse(name).unwrap(), Capability::CAP_NET_ADMIN, "{name}");
        }
        let err = parse("NET_ADMINS").unwrap_err().to_string();
        assert!(err.contains("NET_ADMINS"), "{err}");
    }

    #[test]
    fn app_set_is_defaults_plus_extras() {
        assert_eq!(mask(&app_set(&[]).unwrap()), DEFAULT_MASK);
        let with_raw = app_set(&["net_raw".into(), "CHOWN".into()]).unwrap();
        assert_eq!(mask(&with_raw), DEFAULT_MASK | 1 << 13);
        let err = app_set(&["FLY".into()]).unwrap_err().to_string();
        assert!(err.contains("\"FLY\""), "{err}");
    }

    #[test]
    fn restrict_to_defaults() {
        if !child::is_child() {
            if child::privileged() {
                child::run("caps::tests::restrict_to_defaults", &[]);
            }
            return;
        }
        let start = Instant::now();
        restrict_to(&app_set(&[]).unwrap()).unwrap();
        println!("timing: restrict_to took {:?}", start.elapsed());
        for field in ["CapBnd", "CapPrm", "CapEff"] {
            assert_eq!(status_mask(field).unwrap(), DEFAULT_MASK, "{field}");
        }
        assert_eq!(status_mask("CapInh").unwrap(), 0);
        assert_eq!(status_mask("CapAmb").unwrap(), 0);
        assert_eq!(
            status_mask("CapBnd").unwrap() & Capability::CAP_SYS_ADMIN.bitmask(),
            0
        );
        // A uid-0 exec gets the bounding set, and no more.
        let out = std::process::Command::new("/bin/grep")
            .args(["^Cap", "/proc/self/status"])
            .output()
            .unwrap();
        let status = String::from_utf8(out.stdout).unwrap();
        assert!(status.contains("CapEff:\t00000000800405fb"), "{status}");
        assert!(status.contains("CapBnd:\t00000000800405fb"), "{status}");
    }
}
