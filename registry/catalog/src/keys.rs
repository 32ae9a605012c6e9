//! Signing keys and their files.
//!
//! Keys are ed25519. A key is named by its [`KeyId`]: the BLAKE3 hash of a domain tag and
//! the public key bytes, so a key id can never be confused with a content hash. Secret
//! keys live in `NAME.key` files created with mode 0600; loading refuses a secret file
//! that group or others can read, the way ssh does.

use std::{
    collections::BTreeMap,
    fmt, fs,
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const KEY_ID_TAG: &[u8] = b"archy-key-id-v1:ed25519:";

/// Identifies a public key: 64 hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 32]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(KEY_ID_TAG);
        h.update(key.as_bytes());
        Self(*h.finalize().as_bytes())
    }

    /// The first 8 hex digits, for humans.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

/// Why a string is not a key id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a key id (64 hex digits): {0:?}")]
pub struct ParseKeyIdError(pub String);

impl FromStr for KeyId {
    type Err = ParseKeyIdError;
    fn from_str(s: &str) -> Result<Self, ParseKeyIdError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| ParseKeyIdError(s.chars().take(80).collect()))?;
        Ok(Self(out))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A public key as it appears in root documents and `.pub` files.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKey {
    pub keytype: KeyType,
    /// 32 bytes, hex.
    pub public: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Ed25519,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.public)
    }
}

impl PublicKey {
    pub fn from_verifying(key: &VerifyingKey) -> Self {
        Self {
            keytype: KeyType::Ed25519,
            public: hex::encode(key.as_bytes()),
        }
    }

    /// Decodes the key; `None` if the bytes are not a valid ed25519 point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(&self.public, &mut b).ok()?;
        VerifyingKey::from_bytes(&b).ok()
    }

    pub fn key_id(&self) -> Option<KeyId> {
        self.verifying_key().map(|k| KeyId::of(&k))
    }

    /// Verifies `sig` over `msg` (strict: rejects malleable signatures and weak keys).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let (Some(key), Ok(sig)) = (
            self.verifying_key(),
            ed25519_dalek::Signature::from_slice(sig),
        ) else {
            return false;
        };
        key.verify_strict(msg, &sig).is_ok() && key.verify(msg, &sig).is_ok()
    }
}

/// A secret signing key with its id.
pub struct SecretKey {
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, <redacted>)", self.key_id().short())
    }
}

/// The on-disk form of a secret key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyFile {
    keytype: KeyType,
    keyid: KeyId,
    secret: String,
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an Archy {what} key file: {reason}")]
    Format {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: secret key file is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("cannot get randomness from the operating system: {0}")]
    Random(getrandom::Error),
}

impl SecretKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::Random)?;
        Ok(Self::from_seed(&seed))
    }

    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from_verifying(&self.key.verifying_key())
    }

    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.key.verifying_key())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// Writes `<base>.key` (0600, never overwritten) and `<base>.pub`.
    /// Returns the two paths.
    pub fn write_pair(&self, base: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        let key_path = with_suffix(base, "key");
        let pub_path = with_suffix(base, "pub");
        for p in [&key_path, &pub_path] {
            if p.exists() {
                return Err(KeyError::Exists { path: p.clone() });
            }
        }
        let file = SecretKeyFile {
            keytype: KeyType::Ed25519,
            keyid: self.key_id(),
            secret: hex::encode(self.key.to_bytes()),
        };
        let mut body = serde_json::to_vec_pretty(&file).unwrap_or_default();
        body.push(b'\n');
        write_new_private(&key_path, &body)?;
        let mut pub_body = serde_json::to_vec_pretty(&self.public()).unwrap_or_default();
        pub_body.push(b'\n');
        crate::fsutil::write_atomic(&pub_path, &pub_body).map_err(|source| KeyError::Io {
            path: pub_path.clone(),
            source,
        })?;
        Ok((key_path, pub_path))
    }

    /// Loads a `.key` file, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        let text = fs::read(path).map_err(io)?;
        let fmt_err = |reason: String| KeyError::Format {
            path: path.to_path_buf(),
            what: "secret",
            reason,
        };
        let file: SecretKeyFile =
            serde_json::from_slice(&text).map_err(|e| fmt_err(e.to_string()))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(&file.secret, &mut seed)
            .map_err(|_| fmt_err("secret is not 64 hex digits".into()))?;
        let key = Self::from_seed(&seed);
        if key.key_id() != file.keyid {
            return Err(fmt_err("keyid does not match the secret".into()));
        }
        Ok(key)
    }
}

/// Reads a `.pub` file.
pub fn load_public(path: &Path) -> Result<PublicKey, KeyError> {
    let text = fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let fmt_err = |reason: String| KeyError::Format {
        path: path.to_path_buf(),
        what: "public",
        reason,
    };
    let key: PublicKey = serde_json::from_slice(&text).map_err(|e| fmt_err(e.to_string()))?;
    if key.verifying_key().is_none() {
        return Err(fmt_err("not a valid ed25519 public key".into()));
    }
    Ok(key)
}

/// Keys by id, as a root document lists them.
pub type KeyMap = BTreeMap<KeyId, PublicKey>;

fn with_suffix(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_os_string();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_new_private(path: &Path, body: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io(e)
        }
    })?;
    f.write_all(body).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate().unwrap();
        let (kp, pp) = k.write_pair(&dir.path().join("alice")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&kp).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let loaded = SecretKey::load(&kp).unwrap();
        assert_eq!(loaded.key_id(), k.key_id());
        assert_eq!(load_public(&pp).unwrap(), k.public());
        assert!(matches!(
            k.write_pair(&dir.path().join("alice")),
            Err(KeyError::Exists { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_secret_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (kp, _) = SecretKey::generate()
            .unwrap()
            .write_pair(&dir.path().join("k"))
            .unwrap();
        fs::set_permissions(&kp, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretKey::load(&kp),
            Err(KeyError::Permissions { .. })
        ));
    }

    #[test]
    fn signatures_verify_only_for_the_exact_message() {
        let k = SecretKey::generate().unwrap();
        let sig = k.sign(b"msg");
        assert!(k.public().verify(b"msg", &sig));
        assert!(!k.public().verify(b"msg2", &sig));
        assert!(!k.public().verify(b"msg", &sig[..63]));
    }
}
