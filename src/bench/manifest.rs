//! Writing an arena's new champion into the manifest (`homeostat arena --apply`), or showing the
//! change to make: the primary model entry (`spec.models[0]`) of the node's `Node` document gets
//! the champion's name, size and load settings.
//!
//! A minimal text edit, so the file keeps its comments, order, quoting and layout: each key of
//! the entry that changes has its value replaced in place; a setting the champion has and the
//! entry lacks is added (at the end of a flow mapping `{ ... }`, or as a new line under the
//! entry's other keys); a setting the entry has and the champion lacks is removed (its
//! `key: value`, or its line). Keys other than the name, size and load settings (`residency`) are
//! left alone. Values are written plain when that reads back as the same string, else
//! double-quoted.
//!
//! Pure: text in, text out ([`promote_text`]); finding the file ([`find_node_file`]) reads the
//! manifest directory.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::desired::ModelSpec;
use crate::desired::yaml::{self, Node, Scalar, Value};

/// Why the manifest cannot be edited automatically (the change is then printed for the
/// operator to make by hand).
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("no manifest in {} declares Node `{node}`", dir.display())]
    NotFound { dir: PathBuf, node: String },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Node `{node}` has no `spec.models` list to edit")]
    NoModels { node: String },
    #[error("cannot edit `{key}` of the primary model entry automatically: {why}")]
    Unsupported { key: String, why: &'static str },
}

/// The keys written for a model entry, in manifest order, with the champion's value of each.
fn wanted(m: &ModelSpec) -> [(&'static str, Option<String>); 7] {
    let b = |v: Option<bool>| v.map(|b| b.to_string());
    let n = |v: Option<u32>| v.map(|n| n.to_string());
    [
        ("name", Some(m.name.clone())),
        ("size", Some(m.size.to_string())),
        ("contextLength", n(m.context_length)),
        ("flashAttention", b(m.flash_attention)),
        ("evalBatchSize", n(m.eval_batch_size)),
        ("numExperts", n(m.num_experts)),
        ("offloadKvCacheToGpu", b(m.offload_kv_cache_to_gpu)),
    ]
}

/// `text` (one manifest file) with the primary model entry of Node `node` replaced by `new`.
/// `Ok(None)` when the file does not declare that node.
pub fn promote_text(text: &str, node: &str, new: &ModelSpec) -> Result<Option<String>, EditError> {
    let file = yaml::parse(text);
    let Some(root) = file.docs.iter().filter_map(|d| d.root.as_ref()).find(|r| {
        r.get("kind").and_then(Node::as_str) == Some("Node")
            && r.get("metadata").and_then(|m| m.get("name")).and_then(Node::as_str) == Some(node)
    }) else {
        return Ok(None);
    };
    let entry = root
        .get("spec")
        .and_then(|s| s.get("models"))
        .and_then(|m| m.items().first())
        .filter(|e| e.is_map())
        .ok_or_else(|| EditError::NoModels { node: node.to_owned() })?;
    let Value::Map(entries) = &entry.value else {
        return Err(EditError::NoModels { node: node.to_owned() });
    };
    let lines = LineIndex::new(text);
    let start = lines.offset(entry.mark.line, entry.mark.column);
    let flow = text[start..].starts_with('{');

    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut inserts: Vec<String> = Vec::new();
    for (key, value) in wanted(new) {
        let found = entries.iter().position(|e| e.key == key);
        match (found, value) {
            (Some(i), Some(v)) => {
                let e = &entries[i];
                let Some(scalar) = e.value.scalar() else {
                    return Err(EditError::Unsupported {
                        key: key.into(),
                        why: "not a plain value",
                    });
                };
                if scalar.to_json() == render_json(key, &v) {
                    continue;
                }
                let r = value_range(text, &lines, &e.value, flow)
                    .ok_or(EditError::Unsupported { key: key.into(), why: "a multi-line value" })?;
                edits.push((r, render(key, &v)));
            }
            (Some(i), None) => {
                let e = &entries[i];
                let vr = value_range(text, &lines, &e.value, flow)
                    .ok_or(EditError::Unsupported { key: key.into(), why: "a multi-line value" })?;
                let key_start = lines.offset(e.key_mark.line, e.key_mark.column);
                edits.push((removal(text, key_start, vr.end, flow, i == 0)?, String::new()));
            }
            (None, Some(v)) => inserts.push(format!("{key}: {}", render(key, &v))),
            (None, None) => {}
        }
    }
    if !inserts.is_empty() {
        let last = entries
            .last()
            .ok_or(EditError::Unsupported { key: "models[0]".into(), why: "an empty entry" })?;
        let end = value_range(text, &lines, &last.value, flow)
            .ok_or(EditError::Unsupported { key: last.key.clone(), why: "a multi-line value" })?;
        if flow {
            let text_add: String = inserts.iter().map(|kv| format!(", {kv}")).collect();
            edits.push((end.end..end.end, text_add));
        } else {
            let first = &entries[0];
            let indent = " ".repeat(first.key_mark.column.saturating_sub(1));
            let line_end = text[end.end..].find('\n').map_or(text.len(), |i| end.end + i);
            let mut add = String::new();
            for kv in &inserts {
                add.push('\n');
                add.push_str(&indent);
                add.push_str(kv);
            }
            edits.push((line_end..line_end, add));
        }
    }
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = text.to_owned();
    for (r, with) in edits {
        out.replace_range(r, &with);
    }
    Ok(Some(out))
}

/// The byte range a `key: value` occupies, to remove it: in a flow mapping with its separating
/// comma; in a block mapping its whole line (never the item's first key, which shares the `- `
/// line).
fn removal(
    text: &str,
    key_start: usize,
    value_end: usize,
    flow: bool,
    first: bool,
) -> Result<Range<usize>, EditError> {
    if flow {
        // `, key: value` when it follows another entry; `key: value, ` when it is the first.
        let before = &text[..key_start];
        let comma = before.trim_end().len();
        if !first && before[..comma].ends_with(',') {
            return Ok(comma - 1..value_end);
        }
        let after = &text[value_end..];
        let skip = after.find(|c: char| c != ' ' && c != ',').unwrap_or(after.len());
        return Ok(key_start..value_end + skip);
    }
    if first {
        return Err(EditError::Unsupported {
            key: "models[0]".into(),
            why: "a setting on the `- ` line cannot be removed",
        });
    }
    let line_start = text[..key_start].rfind('\n').map_or(0, |i| i + 1);
    if !text[line_start..key_start].trim().is_empty() {
        return Err(EditError::Unsupported {
            key: "models[0]".into(),
            why: "several keys share a line",
        });
    }
    let line_end = text[value_end..].find('\n').map_or(text.len(), |i| value_end + i + 1);
    Ok(line_start..line_end)
}

/// Where a scalar value's text is: from its mark to its closing quote, or (plain) to the end of
/// the line, a ` #` comment, or (in a flow mapping) the next `,`, `}` or `]`. None for a value
/// that spans lines.
fn value_range(text: &str, lines: &LineIndex, value: &Node, flow: bool) -> Option<Range<usize>> {
    let start = lines.offset(value.mark.line, value.mark.column);
    let rest = &text[start..];
    let end = match rest.chars().next() {
        Some(q @ ('\'' | '"')) => {
            let mut escaped = false;
            let mut close = None;
            for (i, c) in rest.char_indices().skip(1) {
                match c {
                    '\n' => return None,
                    '\\' if q == '"' && !escaped => escaped = true,
                    c if c == q && !escaped => {
                        // `''` inside single quotes is an escaped quote.
                        if q == '\'' && rest[i + 1..].starts_with('\'') {
                            escaped = true;
                            continue;
                        }
                        close = Some(i + 1);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            close?
        }
        _ => {
            let mut end = rest.find('\n').unwrap_or(rest.len());
            if let Some(c) = rest[..end].find(" #") {
                end = c;
            }
            if flow && let Some(c) = rest[..end].find([',', '}', ']']) {
                end = c;
            }
            let plain = rest[..end].trim_end();
            if plain.is_empty() {
                return None;
            }
            plain.len()
        }
    };
    Some(start..start + end)
}

/// A value as YAML. Settings (numbers, booleans) are written as they are; the name and size are
/// written plain when that reads back as the same string, else double-quoted (a JSON string is a
/// valid YAML double-quoted scalar).
fn render(key: &str, v: &str) -> String {
    if !matches!(key, "name" | "size") {
        return v.to_owned();
    }
    let reads_back = Scalar { text: v.to_owned(), plain: true, tag: None }.to_json()
        == serde_json::Value::String(v.to_owned());
    let safe = !v.is_empty()
        && !v.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`~ ".contains(c))
        && !v.ends_with(' ')
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.contains([',', '[', ']', '{', '}', '\n']);
    if safe && reads_back {
        v.to_owned()
    } else {
        serde_json::Value::String(v.to_owned()).to_string()
    }
}

/// What a written value means: numbers and booleans for settings, strings for name and size.
fn render_json(key: &str, v: &str) -> serde_json::Value {
    match key {
        "name" | "size" => serde_json::Value::String(v.to_owned()),
        _ => Scalar { text: v.to_owned(), plain: true, tag: None }.to_json(),
    }
}

/// Byte offsets of line starts, to turn (line, column) marks into offsets.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let starts =
            std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        LineIndex { text, starts }
    }

    /// The byte offset of 1-based `line` and 1-based character `column`.
    fn offset(&self, line: usize, column: usize) -> usize {
        let start = self.starts.get(line.saturating_sub(1)).copied().unwrap_or(self.text.len());
        let line_text = &self.text[start..];
        start
            + line_text
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(line_text.len(), |(i, _)| i)
    }
}

/// The manifest file under `dir` that declares Node `node` (files as `load_dir` reads them:
/// `*.yaml` and `*.yml`, dotfiles and editor leftovers skipped, sorted).
pub fn find_node_file(dir: &Path, node: &str) -> Result<PathBuf, EditError> {
    let mut files = Vec::new();
    collect(dir, &mut files, 0);
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|source| EditError::Read { path: path.clone(), source })?;
        let declares = yaml::parse(&text).docs.iter().filter_map(|d| d.root.as_ref()).any(|r| {
            r.get("kind").and_then(Node::as_str) == Some("Node")
                && r.get("metadata").and_then(|m| m.get("name")).and_then(Node::as_str)
                    == Some(node)
        });
        if declares {
            return Ok(path);
        }
    }
    Err(EditError::NotFound { dir: dir.to_path_buf(), node: node.to_owned() })
}

fn collect(path: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    if depth > 32 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") {
            continue;
        }
        if p.is_dir() {
            collect(&p, out, depth + 1);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(p);
        }
    }
}

/// The lines that differ between two versions of a file, as `-old` / `+new` (for printing the
/// change the operator makes by hand). Lines are compared in order; the edit only ever changes,
/// adds or removes lines inside one entry, so a simple common prefix/suffix diff is exact.
pub fn changed_lines(before: &str, after: &str) -> Vec<String> {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix =
        a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let mut out: Vec<String> =
        a[prefix..a.len() - suffix].iter().map(|l| format!("-{l}")).collect();
    out.extend(b[prefix..b.len() - suffix].iter().map(|l| format!("+{l}")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::ByteSize;

    fn spec(name: &str, gib: u64, ctx: Option<u32>, fa: Option<bool>) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            size: ByteSize::gib(gib),
            residency: None,
            context_length: ctx,
            flash_attention: fa,
            eval_batch_size: None,
            num_experts: None,
            offload_kv_cache_to_gpu: None,
        }
    }

    const FLOW: &str = "\
# the lab's primary
apiVersion: homeostat.dev/v1
kind: Node
metadata: { name: m1 }   # first box
spec:
  backend: lmstudio
  url: http://127.0.0.1:1
  vram: 24GiB
  models:
    - { name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }   # champion
    - { name: coder, size: 4GiB }
---
kind: Node
apiVersion: homeostat.dev/v1
metadata: { name: m2 }
spec: { backend: ollama, url: http://127.0.0.1:2, vram: 8GiB, models: [{ name: x, size: 1GiB }] }
";

    /// A flow entry: name and size replaced in place, a new setting appended, comments and the
    /// other documents untouched.
    #[test]
    fn flow_entry() {
        let out = promote_text(FLOW, "m1", &spec("qwen/qwen3-14b", 10, Some(8192), Some(true)))
            .unwrap()
            .unwrap();
        assert_eq!(
            changed_lines(FLOW, &out),
            [
                "-    - { name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }   # champion",
                "+    - { name: qwen/qwen3-14b, size: 10GiB, contextLength: 8192, flashAttention: true }   # champion",
            ]
        );
        let state = crate::desired::from_yaml_str(&out).unwrap();
        assert_eq!(state.nodes["m1"].models[0].name, "qwen/qwen3-14b");
        assert_eq!(state.nodes["m1"].models[1].name, "coder");
        assert_eq!(promote_text(FLOW, "m9", &spec("a", 1, None, None)).unwrap(), None);
    }

    /// A setting the champion lacks is removed from a flow entry with its comma.
    #[test]
    fn flow_removal() {
        let out = promote_text(FLOW, "m1", &spec("qwen/qwen3-8b", 6, None, None)).unwrap().unwrap();
        assert_eq!(
            changed_lines(FLOW, &out),
            [
                "-    - { name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }   # champion",
                "+    - { name: qwen/qwen3-8b, size: 6GiB }   # champion",
            ]
        );
    }

    const BLOCK: &str = "\
apiVersion: homeostat.dev/v1
kind: Node
metadata:
  name: m1
spec:
  backend: lmstudio
  url: http://127.0.0.1:1
  vram: 24GiB
  models:
    - name: \"qwen/qwen3-8b\"   # the champion
      size: 6GiB
      contextLength: 8192   # long prompts
      residency: resident
    - name: coder
      size: 4GiB
";

    /// A block entry: values replaced in place (quotes dropped only where the value is
    /// rewritten), a removed setting's line deleted, a new one added under the others,
    /// `residency` kept.
    #[test]
    fn block_entry() {
        let out =
            promote_text(BLOCK, "m1", &spec("llama3.2:3b", 3, None, Some(false))).unwrap().unwrap();
        assert_eq!(
            out,
            "\
apiVersion: homeostat.dev/v1
kind: Node
metadata:
  name: m1
spec:
  backend: lmstudio
  url: http://127.0.0.1:1
  vram: 24GiB
  models:
    - name: llama3.2:3b   # the champion
      size: 3GiB
      residency: resident
      flashAttention: false
    - name: coder
      size: 4GiB
"
        );
        let state = crate::desired::from_yaml_str(&out).unwrap();
        assert_eq!(state.nodes["m1"].models[0].name, "llama3.2:3b");
        assert_eq!(state.nodes["m1"].models[0].flash_attention, Some(false));
    }

    /// Values that would read back as something else are quoted.
    #[test]
    fn quoting() {
        assert_eq!(render("name", "qwen/qwen3-8b"), "qwen/qwen3-8b");
        assert_eq!(render("name", "1.5"), "\"1.5\"");
        assert_eq!(render("name", "true"), "\"true\"");
        assert_eq!(render("name", "a: b"), "\"a: b\"");
        assert_eq!(render("name", "x, y"), "\"x, y\"");
        assert_eq!(render("name", "#x"), "\"#x\"");
        assert_eq!(render("contextLength", "8192"), "8192");
    }

    /// Marks turn into byte offsets on multi-byte lines too.
    #[test]
    fn line_index() {
        let t = "ab\nçd: e\n";
        let l = LineIndex::new(t);
        assert_eq!(l.offset(1, 1), 0);
        assert_eq!(&t[l.offset(2, 2)..], "d: e\n");
    }
}
