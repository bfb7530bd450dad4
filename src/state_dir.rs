//! The state directory on disk: created private (0700 on unix), every file in it private (0600),
//! and small files written atomically. Symlinks are never chmod-ed (their target may not be
//! ours). Used by the store, the clock's anchor (`time`), the daemon and the CLI; it depends on
//! nothing else of homeostat.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Mode of the state directory: only its owner may list or enter it.
#[cfg(unix)]
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file homeostat writes there (the database, its WAL, events.jsonl, the lock).
#[cfg(unix)]
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700; an existing directory loses its group
/// and other permission bits. Idempotent.
pub fn prepare(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            let tightened = mode & 0o7700;
            fs::set_permissions(dir, fs::Permissions::from_mode(tightened))?;
            tracing::info!(dir = %dir.display(), from = format!("{:o}", mode & 0o7777),
                to = format!("{tightened:o}"), "state directory made private");
        }
    }
    Ok(())
}

/// Removes group and other permission bits from `path` if it is a regular file (never follows
/// a symlink). A missing file is fine.
pub fn make_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if meta.file_type().is_file() {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7700))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Open options that create a missing file with mode 0600.
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o
}

/// Writes `contents` to `path` atomically and privately: a 0600 temporary file beside it,
/// fsync, rename over `path`, fsync of the directory. A reader sees the old or the new content,
/// never a mix, even after a kill -9 or a power loss. For small files (routes.json).
pub fn write_private_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = private_options().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync of a directory, so a rename or a new file in it survives a power loss. A no-op where
/// directories cannot be opened as files.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A name beside `path` that does not exist yet: `<path><suffix>`, else `<path><suffix>-1`, …
pub fn free_name(path: &Path, suffix: &str) -> PathBuf {
    let mut base = path.as_os_str().to_os_string();
    base.push(suffix);
    let first = PathBuf::from(&base);
    if fs::symlink_metadata(&first).is_err() {
        return first;
    }
    (1u32..)
        .map(|n| {
            let mut s = base.clone();
            s.push(format!("-{n}"));
            PathBuf::from(s)
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .expect("some numbered name is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An atomic write replaces the content and leaves no temporary file behind.
    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("routes.json");
        write_private_atomic(&p, b"one").unwrap();
        write_private_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    /// `free_name` skips names that exist.
    #[test]
    fn free_name_counts_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        assert_eq!(free_name(&p, ".x"), dir.path().join("db.x"));
        fs::write(dir.path().join("db.x"), b"").unwrap();
        fs::write(dir.path().join("db.x-1"), b"").unwrap();
        assert_eq!(free_name(&p, ".x"), dir.path().join("db.x-2"));
    }

    /// An existing world-readable directory and file are tightened to 0700 / 0600; a symlink is
    /// left alone.
    #[cfg(unix)]
    #[test]
    fn tightens_existing() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let f = dir.join("f");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        make_private(&f).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        let target = root.path().join("target");
        fs::write(&target, b"x").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        make_private(&dir.join("link")).unwrap();
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644);
    }
}
