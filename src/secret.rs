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

pub use crate::bounded_file::{FileReadError, read_regular, read_regular_within};

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
        let text = crate::error::chain(&e);
        assert!(text.contains(&p.display().to_string()) && text.contains("FIFO"), "{text}");
    }

    /// Issue 17, failure 1: `/dev/zero` (endless) and a directory are refused without reading;
    /// a regular file over the cap is refused too.
    #[cfg(unix)]
    #[test]
    fn devices_directories_and_huge_files_are_refused() {
        let e = crate::error::chain(&resolve(&SecretRef::File("/dev/zero".into())).unwrap_err());
        assert!(e.contains("/dev/zero") && e.contains("character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = crate::error::chain(&resolve(&SecretRef::File(dir.path().into())).unwrap_err());
        assert!(e.contains("a directory"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; SECRET_CAP as usize + 1]).unwrap();
        let e = crate::error::chain(&resolve(&SecretRef::File(big)).unwrap_err());
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        // Exactly at the cap is fine.
        let ok = dir.path().join("ok");
        std::fs::write(&ok, vec![b'a'; SECRET_CAP as usize]).unwrap();
        assert_eq!(resolve(&SecretRef::File(ok)).unwrap().expose().len(), SECRET_CAP as usize);
    }
}
