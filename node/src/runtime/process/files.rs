//! The files the runtime keeps for an app: private (0700) directories, the app's log
//! (appended, 0600, rotated), a lock per app, and reading the log's tail.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::Path,
};

use super::{io_at, ProcessError};

/// Creates `path` and its missing parents as 0700 directories, and makes `path` itself
/// 0700 if it already existed: what the runtime keeps (unpacked images, app state) is
/// for root alone, whatever the umask or the service unit say.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), ProcessError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_at(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_at(path))
}

pub(crate) fn open_log(path: &Path) -> Result<fs::File, ProcessError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))
}

/// Takes a `flock` on `path` (created 0600), held until the result is dropped.
pub(crate) fn lock(
    path: &Path,
    how: nix::fcntl::FlockArg,
) -> Result<nix::fcntl::Flock<fs::File>, ProcessError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))?;
    nix::fcntl::Flock::lock(f, how).map_err(|(_, e)| ProcessError::Sys(e))
}

/// The last `n` lines of a file, reading at most its last 1 MiB.
pub(crate) fn tail(path: &Path, n: usize) -> Result<String, ProcessError> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(io_at(path)(e)),
    };
    let len = f.metadata().map_err(io_at(path))?.len();
    let from = len.saturating_sub(1 << 20);
    f.seek(SeekFrom::Start(from)).map_err(io_at(path))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(io_at(path))?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}
