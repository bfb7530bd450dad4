//! Loading a manifest directory: every `*.yaml` / `*.yml` below it, in sorted order, validated
//! as one set (`validate`), with a hash that identifies the set.
//!
//! Which files are read: regular files (or symlinks to them) whose name ends in `.yaml` or
//! `.yml`, in the directory and every subdirectory (sorted by relative path, so the result never
//! depends on the file system's order). Skipped: names starting with `.` (dotfiles and dot
//! directories such as `.git` or a Kubernetes ConfigMap's `..data`), editor leftovers (`*~`,
//! `*.swp`, `.#*`, vim's `4913`), and every other file. A path that is a file is loaded alone.
//!
//! Reported, not skipped: a `*.yaml` that is not a regular file (a FIFO, a device: it is never
//! opened for reading, which could block), a directory deeper than [`MAX_DIR_DEPTH`], a file
//! larger than [`MAX_FILE_BYTES`] and a set larger than [`MAX_SET_BYTES`] (sizes are checked
//! before reading, so an 8 GB sparse file costs nothing). File names are shown with control
//! characters escaped ([`shown`]), so a name with a newline or an escape sequence cannot forge
//! or repaint terminal output.
//!
//! This module does the I/O; everything it calls is pure.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::DesiredState;
use super::diagnostic::{Diagnostic, Diagnostics, Mark};
use super::types::Kind;
use super::validate::{Source, compile};

/// Subdirectories deeper than this are not read (a symlink loop cannot recurse forever); one is
/// reported as an error.
pub const MAX_DIR_DEPTH: usize = 32;
/// Largest manifest file read (a 1,000-node fleet in one file is about 1 MB).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest manifest set read, all files together.
pub const MAX_SET_BYTES: u64 = 64 * 1024 * 1024;

/// A path as diagnostics show it: control characters (a newline, an escape sequence) escaped
/// as `\n`, `\u{1b}`; bytes that are not UTF-8 as U+FFFD.
pub fn shown(p: &Path) -> String {
    let text = p.to_string_lossy();
    if !text.chars().any(char::is_control) {
        return text.into_owned();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() })
        .collect()
}

/// A valid manifest set.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub state: DesiredState,
    pub summary: Summary,
    /// Problems that do not make the set invalid (an empty file, a setting that is ignored).
    pub warnings: Vec<Diagnostic>,
}

/// What a manifest set contains.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Summary {
    /// Manifest files read.
    pub files: usize,
    /// Objects (documents) per kind.
    pub objects: BTreeMap<Kind, usize>,
}

impl Summary {
    /// Number of objects of every kind.
    pub fn total(&self) -> usize {
        self.objects.values().sum()
    }

    /// `1 Cluster, 4 Node, 1 Routing, 1 BenchmarkSuite` (kinds in their canonical order).
    pub fn counts(&self) -> String {
        Kind::ALL
            .iter()
            .filter_map(|k| self.objects.get(k).map(|n| format!("{n} {k}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Summary {
    /// `7 objects (1 Cluster, 4 Node, 1 Routing, 1 BenchmarkSuite)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.total();
        write!(f, "{n} object{}", if n == 1 { "" } else { "s" })?;
        if n > 0 {
            write!(f, " ({})", self.counts())?;
        }
        Ok(())
    }
}

/// Loads and validates every manifest below `dir` (or the single file `dir`). On failure, every
/// problem found (errors and warnings) is returned at once.
pub fn load_dir(dir: &Path) -> Result<Loaded, Diagnostics> {
    let set = shown(dir);
    let mut problems: Vec<Diagnostic> = Vec::new();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    match std::fs::metadata(dir) {
        Err(e) => {
            return Err(Diagnostics::new(vec![
                Diagnostic::error(&set, format!("cannot read the manifests: {e}"))
                    .hint("give the manifest directory with -f DIR (or HOMEOSTAT_MANIFESTS)"),
            ]));
        }
        Ok(m) if !m.is_dir() => {
            let name =
                dir.file_name().map_or_else(|| set.clone(), |n| n.to_string_lossy().into_owned());
            files.push((name, dir.to_path_buf()));
        }
        Ok(_) => {
            let mut visited = HashSet::new();
            if let Ok(c) = dir.canonicalize() {
                visited.insert(c);
            }
            collect(dir, "", 0, &mut files, &mut problems, &mut visited);
            files.sort();
        }
    }

    let mut raw: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut total = 0u64;
    for (rel, path) in files {
        let display = shown(&path);
        let left = MAX_SET_BYTES.saturating_sub(total);
        match crate::bounded_file::read_regular(&path, MAX_FILE_BYTES) {
            Ok(bytes) if bytes.len() as u64 > left => {
                problems.push(
                    Diagnostic::error(
                        display,
                        format!("the manifest set is larger than {MAX_SET_BYTES} bytes; not read"),
                    )
                    .hint("split the fleet across fewer, smaller files, or check for a stray file"),
                );
                break;
            }
            Ok(bytes) => {
                total += bytes.len() as u64;
                raw.push((rel, display, bytes));
            }
            Err(crate::bounded_file::FileReadError::TooLarge { cap }) => problems.push(
                Diagnostic::error(
                    display,
                    format!("the file is larger than {cap} bytes; not read"),
                )
                .hint("a manifest file is a few kilobytes; is this the right file?"),
            ),
            Err(e) => problems.push(Diagnostic::error(
                display,
                format!("cannot read: {}", crate::error::chain(&e)),
            )),
        }
    }
    let mut texts: Vec<(&str, String)> = Vec::new();
    for (_, display, bytes) in &raw {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        match std::str::from_utf8(bytes) {
            Ok(t) => texts.push((display, t.to_owned())),
            Err(e) => {
                let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                let line = valid.matches('\n').count() + 1;
                let column = valid.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
                problems.push(
                    Diagnostic::error(display.as_str(), "not valid UTF-8")
                        .at(Some(Mark { line, column }))
                        .hint("save the file as UTF-8"),
                );
            }
        }
    }
    let sources: Vec<Source<'_>> =
        texts.iter().map(|(d, t)| Source { display: d, text: t }).collect();
    let hash = hash(raw.iter().map(|(rel, _, bytes)| (rel.as_str(), bytes.as_slice())));
    let unreadable = problems.iter().filter(|d| d.is_error()).count();
    finish(compile(&sources, &set, unreadable), problems, raw.len(), hash)
}

/// Validates one in-memory file named `<inline>` (tests and tools build a `DesiredState` from a
/// YAML string this way).
pub fn from_yaml_str(text: &str) -> Result<DesiredState, Diagnostics> {
    const NAME: &str = "<inline>";
    let sources = [Source { display: NAME, text }];
    let hash = hash([(NAME, text.as_bytes())]);
    finish(compile(&sources, NAME, 0), Vec::new(), 1, hash).map(|l| l.state)
}

fn finish(
    compiled: Result<super::validate::Compiled, Vec<Diagnostic>>,
    mut problems: Vec<Diagnostic>,
    files: usize,
    hash: String,
) -> Result<Loaded, Diagnostics> {
    match compiled {
        Ok(c) if !problems.iter().any(Diagnostic::is_error) => {
            let mut state = c.state;
            state.hash = hash;
            problems.extend(c.warnings);
            let warnings = Diagnostics::new(problems).into_vec();
            Ok(Loaded { state, summary: Summary { files, objects: c.objects }, warnings })
        }
        Ok(c) => {
            problems.extend(c.warnings);
            Err(Diagnostics::new(problems))
        }
        Err(d) => {
            problems.extend(d);
            Err(Diagnostics::new(problems))
        }
    }
}

/// sha256 over each file's relative path and content, in path order.
fn hash<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut files: Vec<(&str, &[u8])> = files.into_iter().collect();
    files.sort();
    let mut h = Sha256::new();
    for (rel, bytes) in files {
        h.update(rel.as_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// Whether a directory entry's name is skipped (dotfiles, editor leftovers).
fn ignored(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") || name == "4913"
}

fn is_manifest(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn collect(
    dir: &Path,
    rel: &str,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
    problems: &mut Vec<Diagnostic>,
    visited: &mut HashSet<PathBuf>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Diagnostic::error(shown(dir), format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ignored(&name) {
            continue;
        }
        let path = entry.path();
        let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        // Follows symlinks (a ConfigMap mount links each file into `..data/`).
        let Ok(meta) = std::fs::metadata(&path) else {
            if is_manifest(&name) {
                problems.push(Diagnostic::error(shown(&path), "cannot read: broken link"));
            }
            continue;
        };
        if meta.is_dir() {
            let fresh = path.canonicalize().map(|c| visited.insert(c)).unwrap_or(false);
            if !fresh {
                // Already read (a symlink to a directory of the set, or a loop).
                continue;
            }
            if depth >= MAX_DIR_DEPTH {
                problems.push(
                    Diagnostic::error(
                        shown(&path),
                        format!("directory nested deeper than {MAX_DIR_DEPTH} levels; not read"),
                    )
                    .hint("keep manifests in a shallow tree"),
                );
                continue;
            }
            collect(&path, &child_rel, depth + 1, out, problems, visited);
        } else if is_manifest(&name) {
            // A FIFO or a device named *.yaml is refused when read (without blocking).
            out.push((child_rel, path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Editor leftovers, dotfiles and non-YAML files are skipped; subdirectories are read in
    /// sorted order.
    #[test]
    fn file_selection() {
        for (name, skip) in [
            ("a.yaml", false),
            ("b.yml", false),
            (".a.yaml", true),
            ("a.yaml~", true),
            (".a.yaml.swp", true),
            (".#a.yaml", true),
            ("4913", true),
        ] {
            assert_eq!(ignored(name) || !is_manifest(name), skip, "{name}");
        }
    }

    /// The hash depends on paths and contents, not on the order files were found in.
    #[test]
    fn hash_is_order_independent() {
        let a = hash([("a.yaml", &b"x"[..]), ("b.yaml", &b"y"[..])]);
        let b = hash([("b.yaml", &b"y"[..]), ("a.yaml", &b"x"[..])]);
        let c = hash([("a.yaml", &b"y"[..]), ("b.yaml", &b"x"[..])]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 64);
    }
}
