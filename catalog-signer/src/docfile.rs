//! Document files as the signer reads and writes them: parsing an envelope, writing one
//! atomically, turning `--expires` into a date, and warning when a document being
//! signed expires within a day (a node refuses it from then on).

use std::{fs, path::Path};

use anyhow::{anyhow, Context};
use archy_catalog::{documents::Envelope, duration, fsutil::write_atomic};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// How close an expiry may come before the signer warns.
const WARN_WITHIN: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The expiry date of a document written now with validity `validity` (`--expires`).
pub fn expiry(validity: &str) -> anyhow::Result<DateTime<Utc>> {
    // The error's message already carries its source; context would repeat it.
    duration::expiry_after(Utc::now(), validity).map_err(|e| anyhow!("--expires: {e}"))
}

/// Reads a signed (or not yet signed) document file.
pub fn read(path: &Path) -> anyhow::Result<Envelope> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Envelope::from_slice(&bytes)
        .with_context(|| format!("{}: not a signed document", path.display()))
}

/// Writes `body` as an unsigned document to `out`; returns the bytes written.
pub fn write_unsigned<T: Serialize>(body: &T, out: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = Envelope::new_unsigned(body)?.to_bytes();
    write(out, &bytes)?;
    Ok(bytes)
}

/// Writes a document file atomically.
pub fn write(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomic(out, bytes).with_context(|| format!("cannot write {}", out.display()))
}

/// Warns on stderr when the document in `file` expires within a day (or has expired).
pub fn warn_if_expiring(file: &Path, expires: DateTime<Utc>) {
    if let Some(warning) = expiry_warning(file, expires, Utc::now()) {
        eprintln!("{warning}");
    }
}

fn expiry_warning(file: &Path, expires: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    let at = rfc3339(expires);
    let file = file.display();
    if expires <= now {
        Some(format!("warning: {file} expired at {at}; nodes refuse it"))
    } else if expires - now <= WARN_WITHIN {
        Some(format!(
            "warning: {file} expires at {at} (within a day); nodes will refuse it after that"
        ))
    } else {
        None
    }
}

/// A date for people: RFC 3339 to the second.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_within_a_day_and_after_expiry_only() {
        let now = Utc::now();
        let file = Path::new("timestamp.json");
        let soon = expiry_warning(file, now + chrono::TimeDelta::hours(12), now).unwrap();
        assert!(
            soon.starts_with("warning: timestamp.json expires at "),
            "{soon}"
        );
        assert!(soon.contains("(within a day)"), "{soon}");
        let past = expiry_warning(file, now - chrono::TimeDelta::hours(1), now).unwrap();
        assert!(past.contains("expired at"), "{past}");
        assert_eq!(
            expiry_warning(file, now + chrono::TimeDelta::days(7), now),
            None
        );
    }
}
