//! The vault directory in the file system: the OS lock that marks a vault as open, and
//! the permissions that keep other users out.
//!
//! Invariants: the lock is taken before anything else is read and never through a symbolic
//! link; it is released only after the storage engine let go of its files; the directory
//! is 0700 and every file below it 0600 (Unix).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::lock;
use crate::backend::LocalStorage;
use crate::Error;

/// The lock file every open vault holds.
pub(super) const LOCK_FILE: &str = "tokenvault.lock";

/// The exclusive OS lock on `tokenvault.lock` that marks a vault as open.
pub(super) struct VaultLock {
    file: File,
    /// The live generation's directory, whose database must be released before this lock.
    db_dir: Mutex<PathBuf>,
}

impl VaultLock {
    /// Makes `dir` the database this lock waits for on release.
    pub(super) fn watch(&self, dir: &Path) {
        *lock(&self.db_dir) = dir.to_path_buf();
    }
}

impl Drop for VaultLock {
    fn drop(&mut self) {
        // The engine may hold its files a moment after it is dropped: release our lock only
        // once it let go, so that a reopen right after the drop succeeds.
        LocalStorage::wait_until_released(&lock(&self.db_dir), Duration::from_secs(5));
        let _ = self.file.unlock();
    }
}

pub(super) fn lock_vault(dir: &Path) -> Result<VaultLock, Error> {
    let path = dir.join(LOCK_FILE);
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    // A symbolic link planted as the lock file would have us create, lock or write a file
    // elsewhere: the link is never followed.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    let file = options
        .open(&path)
        .map_err(|e| match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is a symbolic link; refusing to follow it", path.display()),
            )),
            _ => Error::Io(e),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(VaultLock {
            file,
            db_dir: Mutex::new(dir.to_path_buf()),
        }),
        Err(fs::TryLockError::WouldBlock) => Err(Error::VaultLocked),
        Err(fs::TryLockError::Error(e)) => Err(Error::Io(e)),
    }
}

#[cfg(unix)]
pub(super) fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn create_private_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir)?;
    Ok(())
}

#[cfg(unix)]
pub(super) fn restrict_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn restrict_dir(_dir: &Path) -> Result<(), Error> {
    Ok(())
}

/// Makes every file below `dir` 0600 and every directory 0700 (Unix).
#[cfg(unix)]
pub(super) fn restrict_files(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700))?;
            restrict_files(&entry.path())?;
        } else if ty.is_file() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn restrict_files(_dir: &Path) -> Result<(), Error> {
    Ok(())
}
