//! Who may use the dashboard, as pure logic: the password file, sessions and their
//! CSRF tokens, one-time login links, the login rate limit and the Host check.
//!
//! Nothing here touches a socket: the web module calls these with the clock and the
//! request's parts, so every rule is tested without a browser (and attacked again
//! through one in `node/tests/dashboard.rs`).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};

/// The file the password hash is kept in, in the data dir (0600).
pub const PASSWORD_FILE: &str = "web.password";
/// Shortest password `archy node web-password` accepts.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password hashed (argon2 takes any length; a megabyte would cost time).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A session ends after this long without a request...
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// ...and after this long in any case.
pub const SESSION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Sessions kept at once; the least recently used goes first.
pub const MAX_SESSIONS: usize = 64;
/// A one-time login link works once, within this time.
pub const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Links not yet used, kept at once.
pub const MAX_LINKS: usize = 16;
/// Failed logins allowed per client address in one [`LOGIN_WINDOW`]...
pub const LOGIN_FAILURES_PER_CLIENT: u32 = 5;
/// ...and from all clients together (a proxy or many addresses).
pub const LOGIN_FAILURES_TOTAL: u32 = 30;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses the limiter remembers at once.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// 32 random bytes, hex: session ids, CSRF tokens, link tokens.
pub fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    Ok(hex::encode(b))
}

/// Compares secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Why a new password is refused.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is {got} characters; use at least {MIN_PASSWORD_CHARS}")]
    TooShort { got: usize },
    #[error("the password is {got} bytes; at most {MAX_PASSWORD_BYTES} are accepted")]
    TooLong { got: usize },
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The argon2id hash (PHC string) of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort { got: chars });
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong {
            got: password.len(),
        });
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Hashes `password` into `<data>/web.password` (0600, atomically): the dashboard's
/// login from then on (a running daemon reads the file at each login).
pub fn set_password(data: &Path, password: &str) -> Result<(), PasswordError> {
    let hash = hash_password(password)?;
    let path = data.join(PASSWORD_FILE);
    archy_catalog::fsutil::write_atomic_mode(&path, hash.as_bytes(), Some(0o600)).map_err(
        |source| PasswordError::Write {
            path: path.display().to_string(),
            source,
        },
    )
}

/// Whether `password` matches the stored hash. A missing or unreadable hash matches
/// nothing.
pub fn password_matches(stored: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(stored.trim()).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Sent with every change (a form field or the `x-csrf-token` header).
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// The logged-in browsers, by the BLAKE3 of their cookie (the cookie itself is not
/// kept). Lost on restart: everyone logs in again.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: HashMap<[u8; 32], Session>,
}

impl Sessions {
    /// A new session: its cookie value and the session.
    pub fn create(&mut self, now: Instant) -> std::io::Result<(String, Session)> {
        self.expire(now);
        if self.by_hash.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .by_hash
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
            {
                self.by_hash.remove(&oldest);
            }
        }
        let id = random_token()?;
        let session = Session {
            csrf: random_token()?,
            created: now,
            last_seen: now,
        };
        self.by_hash
            .insert(*blake3::hash(id.as_bytes()).as_bytes(), session.clone());
        Ok((id, session))
    }

    /// The live session with this cookie value, marked as seen now.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Session> {
        let key = *blake3::hash(id.as_bytes()).as_bytes();
        let s = self.by_hash.get_mut(&key)?;
        if now.duration_since(s.last_seen) > SESSION_IDLE
            || now.duration_since(s.created) > SESSION_MAX
        {
            self.by_hash.remove(&key);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn remove(&mut self, id: &str) {
        self.by_hash.remove(blake3::hash(id.as_bytes()).as_bytes());
    }

    fn expire(&mut self, now: Instant) {
        self.by_hash.retain(|_, s| {
            now.duration_since(s.last_seen) <= SESSION_IDLE
                && now.duration_since(s.created) <= SESSION_MAX
        });
    }
}

/// One-time login links (`archy node web-url`): each token logs one browser in once,
/// within [`LINK_LIFETIME`]. Kept as hashes, like sessions.
#[derive(Debug, Default)]
pub struct OneTimeLinks {
    by_hash: HashMap<[u8; 32], Instant>,
}

impl OneTimeLinks {
    /// A new token for a link.
    pub fn issue(&mut self, now: Instant) -> std::io::Result<String> {
        self.by_hash
            .retain(|_, issued| now.duration_since(*issued) <= LINK_LIFETIME);
        if self.by_hash.len() >= MAX_LINKS {
            if let Some(oldest) = self
                .by_hash
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| *k)
            {
                self.by_hash.remove(&oldest);
            }
        }
        let token = random_token()?;
        self.by_hash
            .insert(*blake3::hash(token.as_bytes()).as_bytes(), now);
        Ok(token)
    }

    /// Whether `token` is a live link; it is spent either way.
    pub fn redeem(&mut self, token: &str, now: Instant) -> bool {
        self.by_hash
            .remove(blake3::hash(token.as_bytes()).as_bytes())
            .is_some_and(|issued| now.duration_since(issued) <= LINK_LIFETIME)
    }
}

/// Failed logins per client address and in total, per [`LOGIN_WINDOW`].
#[derive(Debug, Default)]
pub struct LoginLimiter {
    clients: HashMap<IpAddr, (Instant, u32)>,
    total: Option<(Instant, u32)>,
}

/// A login is not even checked: too many failures lately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins; try again in {} s", retry_after.as_secs().max(1))]
pub struct TooManyLogins {
    pub retry_after: Duration,
}

impl LoginLimiter {
    /// Whether `client` may try a password now.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Result<(), TooManyLogins> {
        let blocked = |(since, failures): (Instant, u32), limit: u32| {
            let age = now.duration_since(since);
            (age < LOGIN_WINDOW && failures >= limit).then(|| TooManyLogins {
                retry_after: LOGIN_WINDOW - age,
            })
        };
        if let Some(t) = self.total.and_then(|t| blocked(t, LOGIN_FAILURES_TOTAL)) {
            return Err(t);
        }
        if let Some(t) = self
            .clients
            .get(&client)
            .and_then(|c| blocked(*c, LOGIN_FAILURES_PER_CLIENT))
        {
            return Err(t);
        }
        Ok(())
    }

    /// Counts a wrong password from `client`.
    pub fn failed(&mut self, client: IpAddr, now: Instant) {
        let bump = |entry: &mut (Instant, u32)| {
            if now.duration_since(entry.0) >= LOGIN_WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
        };
        bump(self.total.get_or_insert((now, 0)));
        if self.clients.len() >= MAX_TRACKED_CLIENTS && !self.clients.contains_key(&client) {
            self.clients
                .retain(|_, (since, _)| now.duration_since(*since) < LOGIN_WINDOW);
        }
        if self.clients.len() < MAX_TRACKED_CLIENTS || self.clients.contains_key(&client) {
            bump(self.clients.entry(client).or_insert((now, 0)));
        }
    }

    /// A right password: the client starts over.
    pub fn succeeded(&mut self, client: IpAddr) {
        self.clients.remove(&client);
    }
}

/// The `Host` header values the dashboard answers: an IP literal (what a browser sends
/// when the operator types the node's address; a DNS-rebinding page cannot make its
/// browser send one), `localhost`, and the names the operator configured (a reverse
/// proxy's). Anything else is an attacker's name pointing at this node.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        if name.is_empty() {
            return false;
        }
        name.parse::<IpAddr>().is_ok() || name == "localhost" || self.names.contains(&name)
    }
}

/// The name part of a Host header: `[::1]:7421` is `::1`, `node.lan:7421` is `node.lan`.
pub fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_are_hashed_with_a_salt_and_checked() {
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort { got: 5 })
        ));
        assert!(matches!(
            hash_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong { .. })
        ));
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert_ne!(a, b, "a fresh salt each time");
        assert!(a.starts_with("$argon2id$"));
        assert!(password_matches(&a, "correct horse battery"));
        assert!(!password_matches(&a, "correct horse batterz"));
        assert!(!password_matches("", "anything"));
        assert!(!password_matches("not a hash", "not a hash"));

        let dir = tempfile::tempdir().unwrap();
        set_password(dir.path(), "correct horse battery").unwrap();
        let path = dir.path().join(PASSWORD_FILE);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(password_matches(&stored, "correct horse battery"));
        assert!(!stored.contains("horse"));
    }

    #[test]
    fn sessions_expire_when_idle_or_old_and_the_oldest_goes_first() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let (id, session) = s.create(t0).unwrap();
        assert_eq!(session.csrf.len(), 64);
        assert!(s.get(&id, t0 + Duration::from_secs(60)).is_some());
        assert!(s.get("not-a-session", t0).is_none());
        // Seen often, it still ends after SESSION_MAX.
        let mut t = t0;
        while t.duration_since(t0) < SESSION_MAX - SESSION_IDLE {
            t += SESSION_IDLE / 2;
            assert!(s.get(&id, t).is_some());
        }
        assert!(s
            .get(&id, t0 + SESSION_MAX + Duration::from_secs(1))
            .is_none());
        // Idle too long: gone.
        let (idle, _) = s.create(t0).unwrap();
        assert!(s
            .get(&idle, t0 + SESSION_IDLE + Duration::from_secs(1))
            .is_none());
        // Logged out: gone.
        let (out, _) = s.create(t0).unwrap();
        s.remove(&out);
        assert!(s.get(&out, t0).is_none());
        // Full: the least recently used session makes room.
        let mut s = Sessions::default();
        let (first, _) = s.create(t0).unwrap();
        let (second, _) = s.create(t0).unwrap();
        assert!(s.get(&first, t0 + Duration::from_secs(2)).is_some());
        for i in 0..MAX_SESSIONS - 1 {
            s.create(t0 + Duration::from_secs(3 + i as u64)).unwrap();
        }
        assert_eq!(s.by_hash.len(), MAX_SESSIONS);
        assert!(s.get(&second, t0 + Duration::from_secs(100)).is_none());
        assert!(s.get(&first, t0 + Duration::from_secs(100)).is_some());
    }

    #[test]
    fn a_link_logs_in_once_and_only_while_fresh() {
        let mut links = OneTimeLinks::default();
        let t0 = Instant::now();
        let token = links.issue(t0).unwrap();
        assert!(!links.redeem("0000", t0));
        assert!(links.redeem(&token, t0 + Duration::from_secs(5)));
        assert!(!links.redeem(&token, t0 + Duration::from_secs(6)), "spent");
        let late = links.issue(t0).unwrap();
        assert!(!links.redeem(&late, t0 + LINK_LIFETIME + Duration::from_secs(1)));
        for _ in 0..MAX_LINKS + 3 {
            links.issue(t0).unwrap();
        }
        assert!(links.by_hash.len() <= MAX_LINKS);
    }

    #[test]
    fn failed_logins_are_limited_per_client_and_in_total() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.168.1.20".parse().unwrap();
        let b: IpAddr = "192.168.1.21".parse().unwrap();
        for _ in 0..LOGIN_FAILURES_PER_CLIENT {
            assert!(l.check(a, t0).is_ok());
            l.failed(a, t0);
        }
        let refused = l.check(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(refused.retry_after, LOGIN_WINDOW - Duration::from_secs(10));
        assert!(l.check(b, t0).is_ok(), "another client may still try");
        assert!(l.check(a, t0 + LOGIN_WINDOW).is_ok(), "the window passed");
        // A success clears the client's count.
        let mut l = LoginLimiter::default();
        l.failed(a, t0);
        l.succeeded(a);
        for _ in 0..LOGIN_FAILURES_PER_CLIENT - 1 {
            l.failed(a, t0);
        }
        assert!(l.check(a, t0).is_ok());
        // Many addresses together hit the total.
        let mut l = LoginLimiter::default();
        for i in 0..LOGIN_FAILURES_TOTAL {
            let c: IpAddr = format!("10.0.{}.{}", i / 250, i % 250).parse().unwrap();
            l.failed(c, t0);
        }
        assert!(l.check("10.9.9.9".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn only_ip_literals_localhost_and_configured_names_are_answered() {
        let hosts = AllowedHosts::new(&["Archy.Home.Example".into()]);
        for ok in [
            "127.0.0.1:7421",
            "192.168.1.5",
            "[::1]:7421",
            "[fe80::1]",
            "localhost:7421",
            "archy.home.example",
            "ARCHY.home.example:443",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7421",
            "127.0.0.1.evil.example",
            "",
            "[]:80",
            "localhost.evil.example",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        assert_eq!(host_name("node.lan:7421"), "node.lan");
        assert_eq!(host_name("[::1]:80"), "::1");
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
