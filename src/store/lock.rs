//! The run lock: at most one homeostat process acts on a state directory at a time (a daemon and
//! a `reconcile --once` from cron, or two overlapping cron runs).
//!
//! An advisory exclusive lock (`File::try_lock`: `flock(2)` on Linux and the BSDs, `LockFileEx`
//! on Windows) on `<state dir>/homeostat.lock`. The kernel releases it when the process exits,
//! however it exits, so a kill -9 never leaves a stale lock behind. The holder writes its pid
//! into the file so that the refused run can say who holds it.
//!
//! Limits: the lock is per host. On NFS, `flock` may be emulated or local-only; keep the state
//! directory on a local file system (several hosts coordinate through PostgreSQL instead).

use std::fs::{File, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::state_dir;

/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "homeostat.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it. `pid` is what the holder wrote into the file (None if it had
    /// not written it yet, or wrote something unreadable).
    #[error("another homeostat run{} holds the lock {}", pid_text(*pid), path.display())]
    Held { pid: Option<u32>, path: PathBuf },
    #[error("cannot use the lock file {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// Proof that this process holds the run lock of a state directory. Released on drop.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    state_dir: PathBuf,
}

impl RunLock {
    /// Takes the lock of `state_dir` (created 0700 if missing) without waiting.
    pub fn try_acquire(state_dir: &Path) -> Result<RunLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io { path: path.clone(), source };
        state_dir::prepare(state_dir).map_err(io_err)?;
        // Never truncate on open: the file may belong to the current holder.
        let mut file = state_dir::private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        state_dir::make_private(&path).map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may be between taking the lock and writing its pid: then None.
                let pid =
                    file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held { pid, path });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let write_pid = |f: &mut File| -> io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            writeln!(f, "{}", std::process::id())?;
            f.flush()
        };
        write_pid(&mut file).map_err(io_err)?;
        Ok(RunLock { file, path, state_dir: state_dir.to_path_buf() })
    }

    /// The state directory this lock guards.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Clear the pid while still holding the lock, so no one reads a stale one; the lock
        // itself is released when `file` is closed. The file stays: removing it would let a
        // second process lock a fresh inode while a third still holds the old one.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second handle in the same process is refused with our pid; after the first is dropped
    /// the lock can be taken again.
    #[test]
    fn second_handle_refused_until_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::try_acquire(dir.path()).unwrap();
        match RunLock::try_acquire(dir.path()) {
            Err(e @ LockError::Held { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()));
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!(
                        "another homeostat run (pid {}) holds the lock",
                        std::process::id()
                    )),
                    "{msg}"
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = RunLock::try_acquire(dir.path()).unwrap();
        assert_eq!(again.state_dir(), dir.path());
    }

    /// The lock file and the directory it creates are private.
    #[cfg(unix)]
    #[test]
    fn lock_file_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new/state");
        let lock = RunLock::try_acquire(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(lock.path()), 0o600);
    }
}
