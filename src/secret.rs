//! Secrets by reference. A `Secret` is resolved from an environment variable or a file named in
//! a manifest, and cannot be printed: `Debug` and `Display` show `[redacted]`. Errors name the
//! reference (the variable or the path), never the content.
//!
//! A file is read with [`read_regular`]: opened without blocking (`O_NONBLOCK`, so a FIFO's open
//! returns at once), refused unless it is a regular file (a FIFO, `/dev/zero`, a directory or a
//! socket is an error naming the path), and read up to a cap ([`SECRET_CAP`] for secrets); a
//! secret is read on its own thread and given up after [`READ_DEADLINE`] (a hung network
//! mount), so a bad token file never freezes the daemon's runtime.

use std::fmt;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use crate::desired::SecretRef;

/// A resolved secret. Use `expose()` only where it is sent over the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value obtained elsewhere (tests, the API's own token).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret's value, to put in a request header. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret reference could not be resolved. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {name} is not set (it should hold the secret)")]
    EnvMissing { name: String },
    #[error("environment variable {name} is empty")]
    EnvEmpty { name: String },
    #[error("cannot read secret file {path}")]
    File {
        path: String,
        #[source]
        source: FileReadError,
    },
    #[error("secret file {path} is empty")]
    FileEmpty { path: String },
}

/// Resolves a reference now (environment or file). The value is trimmed of surrounding
/// whitespace, so a trailing newline in a token file does not end up in a header.
pub fn resolve(r: &SecretRef) -> Result<Secret, SecretError> {
    match r {
        SecretRef::Env(name) => match std::env::var(name) {
            Ok(v) if v.trim().is_empty() => Err(SecretError::EnvEmpty { name: name.clone() }),
            Ok(v) => Ok(Secret(v.trim().to_owned())),
            Err(_) => Err(SecretError::EnvMissing { name: name.clone() }),
        },
        SecretRef::File(path) => {
            let shown = path.display().to_string();
            let bytes = read_regular_within(path, SECRET_CAP, READ_DEADLINE)
                .map_err(|source| SecretError::File { path: shown.clone(), source })?;
            let v = String::from_utf8(bytes).map_err(|_| SecretError::File {
                path: shown.clone(),
                source: FileReadError::NotUtf8,
            })?;
            if v.trim().is_empty() {
                return Err(SecretError::FileEmpty { path: shown });
            }
            Ok(Secret(v.trim().to_owned()))
        }
    }
}

/// Largest secret file read (a token or a URL is well under a kilobyte).
pub const SECRET_CAP: u64 = 64 * 1024;
/// How long reading a secret file may take before it is given up.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Why an operator-supplied file could not be read. The path is the caller's to name.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    #[error("it is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    #[error("it is larger than {cap} bytes")]
    TooLarge { cap: u64 },
    #[error("reading it took longer than {}", crate::desired::Dur(*after))]
    TimedOut { after: Duration },
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("the read failed")]
    Io(#[source] std::io::Error),
}

/// What kind of file `ft` is, in words.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() { "a directory" } else { "not a regular file" }
}

/// Reads `path` if it is a regular file of at most `cap` bytes. The open does not block (a FIFO
/// with no writer would wait forever otherwise) and the type is checked on the open file, so a
/// file swapped for a FIFO between a check and the open is still refused.
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, FileReadError> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let f = o.open(path).map_err(FileReadError::Io)?;
    let meta = f.metadata().map_err(FileReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(FileReadError::NotRegular { kind: kind_of(meta.file_type()) });
    }
    if meta.len() > cap {
        return Err(FileReadError::TooLarge { cap });
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.take(cap + 1).read_to_end(&mut buf).map_err(FileReadError::Io)?;
    if buf.len() as u64 > cap {
        return Err(FileReadError::TooLarge { cap });
    }
    Ok(buf)
}

/// [`read_regular`] on a thread of its own, given up after `deadline` (the thread is left to
/// finish or hang on its own: a read stuck in the kernel cannot be cancelled).
pub fn read_regular_within(
    path: &Path,
    cap: u64,
    deadline: Duration,
) -> Result<Vec<u8>, FileReadError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new().name("homeostat-read".into()).spawn(move || {
        let _ = tx.send(read_regular(&owned, cap));
    });
    if spawned.is_err() {
        // No thread to spare (a resource limit): read here; the open still does not block.
        return read_regular(path, cap);
    }
    match rx.recv_timeout(deadline) {
        Ok(r) => r,
        Err(_) => Err(FileReadError::TimedOut { after: deadline }),
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}").contains("sk-live"));
    }

    #[test]
    fn file_secret_is_trimmed_and_errors_hide_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(resolve(&SecretRef::File(p.clone())).unwrap().expose(), "abc");
        std::fs::write(&p, "  \n").unwrap();
        let e = resolve(&SecretRef::File(p)).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    /// Issue 17, failure 1: a FIFO with no writer is refused at once (it used to block the
    /// reading thread forever), naming the path and saying what it is.
    #[cfg(unix)]
    #[test]
    fn fifo_token_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&p).status().unwrap();
        assert!(made.success());
        let started = std::time::Instant::now();
        let e = resolve(&SecretRef::File(p.clone())).unwrap_err();
        assert!(started.elapsed() < READ_DEADLINE, "it waited for the deadline");
        let text = crate::cli::chain(&e);
        assert!(text.contains(&p.display().to_string()) && text.contains("FIFO"), "{text}");
    }

    /// Issue 17, failure 1: `/dev/zero` (endless) and a directory are refused without reading;
    /// a regular file over the cap is refused too.
    #[cfg(unix)]
    #[test]
    fn devices_directories_and_huge_files_are_refused() {
        let e = crate::cli::chain(&resolve(&SecretRef::File("/dev/zero".into())).unwrap_err());
        assert!(e.contains("/dev/zero") && e.contains("character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = crate::cli::chain(&resolve(&SecretRef::File(dir.path().into())).unwrap_err());
        assert!(e.contains("a directory"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; SECRET_CAP as usize + 1]).unwrap();
        let e = crate::cli::chain(&resolve(&SecretRef::File(big)).unwrap_err());
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        // Exactly at the cap is fine.
        let ok = dir.path().join("ok");
        std::fs::write(&ok, vec![b'a'; SECRET_CAP as usize]).unwrap();
        assert_eq!(resolve(&SecretRef::File(ok)).unwrap().expose().len(), SECRET_CAP as usize);
    }
}
