//! Generated secrets: created once per app, kept as 0600 files, never logged.
//!
//! A secret is generated the first time an app that declares it is installed and then
//! read back on every later install, restart or reinstall, so a database password stays
//! the one the app's data was created with. Uninstall keeps them (they are app data);
//! only a purge removes them.

use std::{collections::BTreeMap, fs, path::Path};

use archy_catalog::manifest::{GeneratedSecret, SecretKind};

/// Returns every declared secret's value, generating and storing the missing ones in
/// `<data_dir>/secrets/<name>` (mode 0600, written atomically).
pub fn ensure(
    data_dir: &Path,
    declared: &[GeneratedSecret],
) -> std::io::Result<BTreeMap<String, String>> {
    let dir = data_dir.join("secrets");
    let mut out = BTreeMap::new();
    if declared.is_empty() {
        return Ok(out);
    }
    fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    }
    for s in declared {
        let path = dir.join(&s.name);
        let value = match fs::read_to_string(&path) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                let v = generate(s.kind)?;
                archy_catalog::fsutil::write_atomic_mode(&path, v.as_bytes(), Some(0o600))?;
                v
            }
        };
        out.insert(s.name.clone(), value);
    }
    Ok(out)
}

fn generate(kind: SecretKind) -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(match kind {
        SecretKind::Hex32 => hex::encode(bytes),
        SecretKind::Base64 => {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for c in bytes.chunks(3) {
                let n = c.iter().fold(0u32, |acc, b| acc << 8 | *b as u32) << (8 * (3 - c.len()));
                for i in 0..=c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            while s.len() % 4 != 0 {
                s.push('=');
            }
            s
        }
        SecretKind::Password => {
            // Unambiguous characters; 24 of them from 256-bit randomness (rejection-free
            // modulo over 56 symbols has negligible bias for a password).
            const A: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
            bytes
                .iter()
                .take(24)
                .map(|b| A[*b as usize % A.len()] as char)
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_0600_and_stable() {
        let d = tempfile::tempdir().unwrap();
        let declared = vec![
            GeneratedSecret {
                name: "DB_PASS".into(),
                kind: SecretKind::Password,
            },
            GeneratedSecret {
                name: "TOKEN".into(),
                kind: SecretKind::Hex32,
            },
            GeneratedSecret {
                name: "KEY".into(),
                kind: SecretKind::Base64,
            },
        ];
        let first = ensure(d.path(), &declared).unwrap();
        assert_eq!(first["DB_PASS"].len(), 24);
        assert_eq!(first["TOKEN"].len(), 64);
        assert_eq!(first["KEY"].len(), 44);
        assert_eq!(ensure(d.path(), &declared).unwrap(), first, "idempotent");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(d.path().join("secrets/DB_PASS"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_ne!(
            ensure(tempfile::tempdir().unwrap().path(), &declared).unwrap()["TOKEN"],
            first["TOKEN"]
        );
    }
}
