//! Secrets by reference. A `Secret` is resolved from an environment variable or a file named in
//! a manifest, and cannot be printed: `Debug` and `Display` show `[redacted]`. Errors name the
//! reference (the variable or the path), never the content.

use std::fmt;

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
        source: std::io::Error,
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
            let v = std::fs::read_to_string(path)
                .map_err(|source| SecretError::File { path: shown.clone(), source })?;
            if v.trim().is_empty() {
                return Err(SecretError::FileEmpty { path: shown });
            }
            Ok(Secret(v.trim().to_owned()))
        }
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
}
