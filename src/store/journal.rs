//! `events.jsonl`: one JSON object per line, appended, rotated at a size limit
//! (`events.jsonl` → `events.jsonl.1` → … → `events.jsonl.<keep>`, the oldest dropped).
//!
//! The journal is for people and log shippers; the database is the durable record. Lines are
//! not fsync-ed (the database commit of the same event is). A write that fails (disk full, a
//! read-only file system) is reported to the caller as a [`JournalError`] and never stops a
//! pass. A line cut short by a crash or a full disk is closed with a newline before the next one,
//! so one bad line never swallows a good one.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::state_dir;

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "events.jsonl";

/// When to rotate and how many old files to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would take the file past this size.
    pub max_bytes: u64,
    /// Old files kept (`events.jsonl.1` … `.keep`); 0 keeps none.
    pub keep: u32,
}

impl Default for Rotation {
    /// 10 MiB × (1 + 5 old files): about 60 MiB at most, some 100,000 events.
    fn default() -> Self {
        Rotation { max_bytes: 10 * 1024 * 1024, keep: 5 }
    }
}

/// A failed journal write. Non-fatal: the caller turns it into an alert.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} the event journal {}", path.display())]
pub struct JournalError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl JournalError {
    /// Whether the cause is a full disk (or quota).
    pub fn is_disk_full(&self) -> bool {
        matches!(self.source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
    }
}

/// The events.jsonl writer. Shared between threads (one mutex around the open file).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    rotation: Rotation,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    file: Option<File>,
    /// The file does not end with a newline (a cut-short line): write one first.
    needs_newline: bool,
    /// The last write failed; the next success is logged as a recovery.
    failing: bool,
}

/// What one append did.
#[derive(Debug)]
pub enum Written {
    Ok,
    /// The write failed. `newly` is true for the first failure after a success (alert once).
    Failed {
        error: JournalError,
        newly: bool,
    },
}

impl Journal {
    pub fn new(path: PathBuf, rotation: Rotation) -> Self {
        Journal { path, rotation, state: Mutex::new(State::default()) }
    }

    /// The journal in a state directory, with the default rotation.
    pub fn in_dir(state_dir: &Path, rotation: Rotation) -> Self {
        Journal::new(state_dir.join(JOURNAL_FILE), rotation)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of the `n`-th old file (`events.jsonl.n`).
    pub fn rotated_path(&self, n: u32) -> PathBuf {
        let mut s = self.path.as_os_str().to_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    /// Appends one line (which must end with a newline), rotating first if needed.
    pub fn append(&self, line: &str) -> Written {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match self.append_locked(&mut st, line.as_bytes()) {
            Ok(()) => {
                if std::mem::take(&mut st.failing) {
                    tracing::info!(path = %self.path.display(), "event journal writable again");
                }
                Written::Ok
            }
            Err(error) => {
                // Reopen next time: the handle may point at a file we failed to rotate.
                st.file = None;
                let newly = !std::mem::replace(&mut st.failing, true);
                if newly {
                    tracing::warn!(error = %super::error_chain(&error),
                        "event journal write failed; events are still stored in the database");
                }
                Written::Failed { error, newly }
            }
        }
    }

    fn append_locked(&self, st: &mut State, line: &[u8]) -> Result<(), JournalError> {
        let err = |op: &'static str| {
            let path = self.path.clone();
            move |source| JournalError { op, path, source }
        };
        if st.file.is_none() {
            let (file, needs_newline) = self.open().map_err(err("open"))?;
            st.file = Some(file);
            st.needs_newline = needs_newline;
        }
        let size = st.file.as_ref().map_or(Ok(0), |f| f.metadata().map(|m| m.len()));
        let size = size.map_err(err("stat"))?;
        let extra = u64::from(st.needs_newline);
        if size > 0 && size + extra + line.len() as u64 > self.rotation.max_bytes {
            st.file = None;
            self.rotate().map_err(err("rotate"))?;
            let (file, _) = self.open().map_err(err("open"))?;
            st.file = Some(file);
            st.needs_newline = false;
        }
        let file = st.file.as_mut().expect("opened above");
        let result = if st.needs_newline {
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.push(b'\n');
            buf.extend_from_slice(line);
            file.write_all(&buf)
        } else {
            file.write_all(line)
        };
        match result {
            Ok(()) => {
                st.needs_newline = false;
                Ok(())
            }
            Err(e) => {
                // Part of the line may be on disk: close it before the next one.
                st.needs_newline = true;
                Err(err("write")(e))
            }
        }
    }

    /// Opens for appending (created 0600); reports whether the file ends mid-line.
    fn open(&self) -> io::Result<(File, bool)> {
        let mut file =
            state_dir::private_options().read(true).append(true).create(true).open(&self.path)?;
        state_dir::make_private(&self.path)?;
        let len = file.metadata()?.len();
        let mut needs_newline = false;
        if len > 0 && file.metadata()?.is_file() {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            needs_newline = last[0] != b'\n';
        }
        Ok((file, needs_newline))
    }

    /// events.jsonl.(k-1) → .k, …, events.jsonl → .1; the oldest beyond `keep` is removed.
    fn rotate(&self) -> io::Result<()> {
        if self.rotation.keep == 0 {
            return fs::remove_file(&self.path);
        }
        for n in (1..self.rotation.keep).rev() {
            match fs::rename(self.rotated_path(n), self.rotated_path(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, self.rotated_path(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> String {
        format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40))
    }

    /// Rotation at the size limit keeps `keep` old files, each under the limit, newest in `.1`,
    /// and drops the oldest.
    #[test]
    fn rotates_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path(), Rotation { max_bytes: 200, keep: 2 });
        for i in 0..40 {
            assert!(matches!(j.append(&line(i)), Written::Ok));
        }
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        let cur = read(j.path());
        let one = read(&j.rotated_path(1));
        let two = read(&j.rotated_path(2));
        assert!(!j.rotated_path(3).exists());
        for text in [&cur, &one, &two] {
            assert!(text.len() <= 200);
            for l in text.lines() {
                serde_json::from_str::<serde_json::Value>(l).unwrap();
            }
        }
        assert!(cur.ends_with(&line(39)));
        let last_of = |t: &str| {
            let v: serde_json::Value = serde_json::from_str(t.lines().last().unwrap()).unwrap();
            v["i"].as_u64().unwrap()
        };
        let first_of = |t: &str| {
            let v: serde_json::Value = serde_json::from_str(t.lines().next().unwrap()).unwrap();
            v["i"].as_u64().unwrap()
        };
        assert_eq!(last_of(&one) + 1, first_of(&cur));
        assert_eq!(last_of(&two) + 1, first_of(&one));
    }

    /// A file cut mid-line (a crash during a write) gets a newline before the next line.
    #[test]
    fn closes_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path(), Rotation::default());
        fs::write(j.path(), "{\"i\":1}\n{\"i\":2,\"cut").unwrap();
        assert!(matches!(j.append("{\"i\":3}\n"), Written::Ok));
        let text = fs::read_to_string(j.path()).unwrap();
        assert_eq!(text, "{\"i\":1}\n{\"i\":2,\"cut\n{\"i\":3}\n");
    }

    /// Writing to a full device (/dev/full) fails with a disk-full error, reported as newly
    /// failing once, and the journal works again once the file is writable.
    #[cfg(target_os = "linux")]
    #[test]
    fn disk_full_reported_once_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::in_dir(dir.path(), Rotation::default());
        std::os::unix::fs::symlink("/dev/full", j.path()).unwrap();
        match j.append("{}\n") {
            Written::Failed { error, newly } => {
                assert!(newly);
                assert!(error.is_disk_full(), "{error:?}");
            }
            Written::Ok => panic!("writing to /dev/full succeeded"),
        }
        assert!(matches!(j.append("{}\n"), Written::Failed { newly: false, .. }));
        fs::remove_file(j.path()).unwrap();
        assert!(matches!(j.append("{\"ok\":1}\n"), Written::Ok));
        assert_eq!(fs::read_to_string(j.path()).unwrap(), "{\"ok\":1}\n");
    }
}
