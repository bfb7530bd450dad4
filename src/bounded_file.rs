//! Reading a file an operator points homeostat at (a token, a URL, a manifest): bounded in size,
//! opened without blocking (a FIFO with no writer would wait forever), refused unless regular,
//! and, from async code, read on a thread of its own with a deadline. At the bottom of the
//! crate: it imports nothing of homeostat, so `secret` and `desired` can both use it.

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

/// Why an operator-supplied file could not be read. The path is the caller's to name.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    #[error("it is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    #[error("it is larger than {cap} bytes")]
    TooLarge { cap: u64 },
    #[error("reading it took longer than {} ms", after.as_millis())]
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
