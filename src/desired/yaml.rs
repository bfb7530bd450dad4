//! A YAML file as a tree of documents whose every node knows its line and column.
//!
//! This is the first pass of loading: it finds the documents of a file, reports syntax errors
//! (recovering at the next `---`), duplicate keys and other problems serde would report without
//! a position, and gives later layers a way to turn a JSON path (`spec.models[0].size`) back
//! into `line:column`. Scalars are resolved with the YAML 1.2 core schema when converted to
//! JSON for the JSON Schema layer.
//!
//! Pure: no I/O. Never panics on any input: nesting depth and alias expansion are bounded.

use std::collections::HashMap;
use std::ops::Range;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, ScanError, Span};

use super::diagnostic::{Mark, Seg};

/// Deeper nesting than this is refused (manifests are a few levels deep; the bound keeps the
/// recursive conversions below far from the stack limit).
pub const MAX_DEPTH: usize = 64;
/// At most this many nodes per document, counting alias expansions ("billion laughs").
pub const MAX_NODES: usize = 1_000_000;

/// A node of the tree with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub mark: Mark,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A scalar as written, resolved only on demand.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain (unquoted, not a block scalar): only plain scalars can be numbers, booleans, null.
    pub plain: bool,
    /// The core-schema tag suffix (`str`, `int`, ...) when one was written.
    pub tag: Option<String>,
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_mark: Mark,
    pub value: Node,
}

/// One document of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Index of the document in its file (0-based), counting empty and broken ones.
    pub index: usize,
    /// Where the document starts (its `---`, or its first content).
    pub mark: Mark,
    /// `None` for an empty document (nothing, or a bare null).
    pub root: Option<Node>,
    /// Byte range of the document's own text in the file (whole lines), for the typed pass.
    pub text: Range<usize>,
    /// Line of the file where `text` starts (1-based): line `n` of `text` is line
    /// `first_line + n - 1` of the file.
    pub first_line: usize,
    /// Problems found while building the tree (duplicate keys, ...); the document is still
    /// usable for the JSON Schema layer but not for the typed pass.
    pub problems: Vec<Problem>,
}

/// A problem found by the YAML layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub mark: Mark,
    pub message: String,
    pub hint: Option<String>,
}

/// The documents of one file, and the syntax errors that made some of them unreadable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub docs: Vec<Doc>,
    pub syntax_errors: Vec<Problem>,
}

fn mark_of(span: &Span) -> Mark {
    Mark { line: span.start.line(), column: span.start.col() + 1 }
}

/// Parses every document of `text`.
pub fn parse(text: &str) -> File {
    let mut out = File::default();
    // Byte offsets where a document (or a broken stretch) begins; slices end at the next one.
    let mut boundaries: Vec<usize> = vec![0];
    let mut parser = Parser::new_from_str(text);
    let mut builder: Option<Builder> = None;
    let mut doc_index = 0usize;

    loop {
        let next = parser.next_event();
        let Some(next) = next else { break };
        super::work::add(1);
        match next {
            Err(e) => {
                let at = e.marker().byte_offset().unwrap_or(text.len()).min(text.len());
                boundaries.push(line_start(text, at));
                out.syntax_errors.push(syntax_problem(&e));
                if builder.take().is_some() {
                    doc_index += 1;
                }
                match parser.proceed_next_document() {
                    Ok(true) => continue,
                    _ => break,
                }
            }
            Ok((event, span)) => match event {
                Event::DocumentStart(..) => {
                    let start = if doc_index == 0 && out.docs.is_empty() {
                        0
                    } else {
                        line_start(text, span.start.byte_offset().unwrap_or(0).min(text.len()))
                    };
                    boundaries.push(start);
                    builder = Some(Builder::new(doc_index, mark_of(&span), start));
                }
                Event::DocumentEnd => {
                    if let Some(b) = builder.take() {
                        out.docs.push(b.finish());
                        doc_index += 1;
                    }
                }
                Event::StreamStart | Event::StreamEnd => {}
                other => {
                    let Some(b) = builder.as_mut() else { continue };
                    if let Err(p) = b.event(other, &span) {
                        // The document cannot be built (too deep, too big): report it, skip
                        // to the next document.
                        let mut b = builder.take().expect("checked just above");
                        b.problems.push(p);
                        b.root = None;
                        b.abandoned = true;
                        out.docs.push(b.finish());
                        doc_index += 1;
                        match parser.proceed_next_document() {
                            Ok(true) => continue,
                            _ => break,
                        }
                    }
                }
            },
        }
    }
    if let Some(b) = builder.take() {
        out.docs.push(b.finish());
    }

    boundaries.sort_unstable();
    boundaries.dedup();
    for doc in &mut out.docs {
        let start = doc.text.start;
        // Binary search: a linear scan here made a file of many documents quadratic.
        let next = boundaries.partition_point(|&b| {
            super::work::add(1);
            b <= start
        });
        let end = boundaries.get(next).copied().unwrap_or(text.len());
        doc.text = start..end;
    }
    out
}

fn syntax_problem(e: &ScanError) -> Problem {
    let mut message = e.info();
    if message.is_empty() {
        message = "invalid YAML".to_owned();
    }
    let hint = if message.contains("tab") {
        Some("YAML indentation must use spaces, not tabs".to_owned())
    } else {
        None
    };
    Problem {
        mark: Mark { line: e.marker().line(), column: e.marker().col() + 1 },
        message: format!("YAML syntax error: {message}"),
        hint,
    }
}

fn line_start(text: &str, byte: usize) -> usize {
    let byte = byte.min(text.len());
    text.as_bytes()[..byte].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1)
}

enum Frame {
    Seq { mark: Mark, anchor: usize, items: Vec<Node> },
    Map { mark: Mark, anchor: usize, entries: Vec<Entry>, key: Option<(String, Mark)>, seen: Seen },
}

/// Keys of one mapping seen so far, to report duplicates with both positions.
#[derive(Default)]
struct Seen {
    small: Vec<(String, Mark)>,
    big: Option<HashMap<String, Mark>>,
}

impl Seen {
    fn insert(&mut self, key: &str, mark: Mark) -> Option<Mark> {
        if let Some(map) = &mut self.big {
            if let Some(m) = map.get(key) {
                return Some(*m);
            }
            map.insert(key.to_owned(), mark);
            return None;
        }
        if let Some((_, m)) = self.small.iter().find(|(k, _)| k == key) {
            return Some(*m);
        }
        self.small.push((key.to_owned(), mark));
        if self.small.len() > 16 {
            self.big = Some(self.small.drain(..).collect());
        }
        None
    }
}

struct Builder {
    index: usize,
    mark: Mark,
    start: usize,
    first_line: usize,
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    problems: Vec<Problem>,
    abandoned: bool,
}

impl Builder {
    fn new(index: usize, mark: Mark, start: usize) -> Self {
        Builder {
            index,
            mark,
            start,
            // The text starts at the beginning of the document's first line (or of the file).
            first_line: if start == 0 { 1 } else { mark.line },
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            nodes: 0,
            problems: Vec::new(),
            abandoned: false,
        }
    }

    fn finish(self) -> Doc {
        let root = match self.root {
            Some(Node { value: Value::Scalar(s), .. }) if s.is_null() => None,
            r => r,
        };
        Doc {
            index: self.index,
            mark: self.mark,
            root: if self.abandoned { None } else { root },
            text: self.start..self.start,
            first_line: self.first_line,
            problems: self.problems,
        }
    }

    fn count(&mut self, n: usize, mark: Mark) -> Result<(), Problem> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Problem {
                mark,
                message: format!(
                    "document too large: more than {MAX_NODES} nodes (after expanding aliases)"
                ),
                hint: None,
            });
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), Problem> {
        let mark = mark_of(span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, mark)?;
                let node = Node {
                    mark,
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                        tag: tag.and_then(|t| t.core_suffix().map(str::to_owned)),
                    }),
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.add(node);
            }
            Event::SequenceStart(_, anchor, _) => {
                self.count(1, mark)?;
                self.push(Frame::Seq { mark, anchor, items: Vec::new() }, mark)?;
            }
            Event::MappingStart(_, anchor, _) => {
                self.count(1, mark)?;
                self.push(
                    Frame::Map {
                        mark,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                        seen: Seen::default(),
                    },
                    mark,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else { return Ok(()) };
                let (node, anchor) = match frame {
                    Frame::Seq { mark, anchor, items } => {
                        (Node { mark, value: Value::Seq(items) }, anchor)
                    }
                    Frame::Map { mark, anchor, entries, .. } => {
                        (Node { mark, value: Value::Map(entries) }, anchor)
                    }
                };
                if anchor != 0 {
                    let size = node.size();
                    self.anchors.insert(anchor, (node.clone(), size));
                }
                self.add(node);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((node, size)) => {
                    let (mut node, size) = (node.clone(), *size);
                    self.count(size, mark)?;
                    node.mark = mark;
                    self.add(node);
                }
                None => {
                    self.problems.push(Problem {
                        mark,
                        message: "alias refers to an unknown anchor".to_owned(),
                        hint: None,
                    });
                    self.add(Node { mark, value: Value::Scalar(Scalar::null()) });
                }
            },
            _ => {}
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame, mark: Mark) -> Result<(), Problem> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Problem {
                mark,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
                hint: None,
            });
        }
        self.stack.push(frame);
        Ok(())
    }

    fn add(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, seen, .. }) => match key.take() {
                None => {
                    let text = match &node.value {
                        Value::Scalar(s) => s.text.clone(),
                        _ => {
                            self.problems.push(Problem {
                                mark: node.mark,
                                message: "mapping keys must be plain strings".to_owned(),
                                hint: None,
                            });
                            "?".to_owned()
                        }
                    };
                    *key = Some((text, node.mark));
                }
                Some((k, key_mark)) => {
                    if let Some(first) = seen.insert(&k, key_mark) {
                        self.problems.push(Problem {
                            mark: key_mark,
                            message: format!(
                                "duplicate key `{}` (first at line {})",
                                printable(&k),
                                first.line
                            ),
                            hint: Some("YAML allows each key once per mapping; remove one".into()),
                        });
                    } else {
                        entries.push(Entry { key: k, key_mark, value: node });
                    }
                }
            },
        }
    }
}

/// A user's string as messages may show it: shortened, control characters replaced, and
/// `[redacted]` when it is shaped like a credential (a pasted token can end up anywhere, even
/// in a name).
pub fn printable(s: &str) -> String {
    if super::diagnostic::looks_like_secret(s) {
        return "[redacted]".to_owned();
    }
    let mut out: String =
        s.chars().take(60).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

impl Scalar {
    fn null() -> Self {
        Scalar { text: String::new(), plain: true, tag: None }
    }

    /// Whether the scalar is null under the core schema (`~`, `null`, empty).
    pub fn is_null(&self) -> bool {
        match self.tag.as_deref() {
            Some("null") => true,
            Some(_) => false,
            None => self.plain && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL"),
        }
    }

    /// The scalar as JSON, under the YAML 1.2 core schema.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        let t = self.text.as_str();
        match self.tag.as_deref() {
            Some("str") => return J::String(self.text.clone()),
            Some("null") => return J::Null,
            Some("bool") => return parse_bool(t).map_or_else(|| J::String(t.into()), J::Bool),
            Some("int") => return parse_int(t).unwrap_or_else(|| J::String(t.into())),
            Some("float") => {
                return parse_float(t)
                    .or_else(|| parse_int(t))
                    .unwrap_or_else(|| J::String(t.into()));
            }
            _ => {}
        }
        if !self.plain {
            return J::String(self.text.clone());
        }
        if self.is_null() {
            return J::Null;
        }
        if let Some(b) = parse_bool(t) {
            return J::Bool(b);
        }
        parse_int(t).or_else(|| parse_float(t)).unwrap_or_else(|| J::String(self.text.clone()))
    }

    /// The scalar's text when it resolves to a string.
    pub fn as_str(&self) -> Option<&str> {
        match self.to_json() {
            serde_json::Value::String(_) => Some(&self.text),
            _ => None,
        }
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_int(t: &str) -> Option<serde_json::Value> {
    let unsigned = |digits: &str, radix: u32| {
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        u64::from_str_radix(digits, radix).ok()
    };
    if let Some(hex) = t.strip_prefix("0x") {
        return unsigned(hex, 16).map(serde_json::Value::from);
    }
    if let Some(oct) = t.strip_prefix("0o") {
        return unsigned(oct, 8).map(serde_json::Value::from);
    }
    match t.strip_prefix('-') {
        Some(digits) => {
            let v = i64::try_from(unsigned(digits, 10)?).ok()?.checked_neg()?;
            Some(serde_json::Value::from(v))
        }
        None => unsigned(t.strip_prefix('+').unwrap_or(t), 10).map(serde_json::Value::from),
    }
}

fn parse_float(t: &str) -> Option<serde_json::Value> {
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    // [0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)? | \.[0-9]+([eE][-+]?[0-9]+)?
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    if !mantissa_ok || !exponent_ok {
        return None;
    }
    let v: f64 = t.parse().ok()?;
    serde_json::Number::from_f64(v).map(serde_json::Value::Number)
}

impl Node {
    /// Number of nodes in this subtree (for the alias-expansion budget).
    fn size(&self) -> usize {
        let mut n = 0usize;
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            n += 1;
            match &node.value {
                Value::Scalar(_) => {}
                Value::Seq(items) => stack.extend(items),
                Value::Map(entries) => stack.extend(entries.iter().map(|e| &e.value)),
            }
        }
        n
    }

    /// The tree as JSON (the JSON Schema layer's input).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Scalar(s) => s.to_json(),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect(),
            ),
        }
    }

    /// The value of `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| {
                super::work::add(1);
                e.key == key
            }),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar that resolves to a string.
    pub fn as_str(&self) -> Option<&str> {
        self.scalar().and_then(Scalar::as_str)
    }

    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// What kind of YAML value this is, for messages ("a string", "a list", ...).
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Map(_) => "a mapping",
            Value::Seq(_) => "a list",
            Value::Scalar(s) => match s.to_json() {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(n) if n.is_f64() => "a number",
                serde_json::Value::Number(_) => "an integer",
                _ => "a string",
            },
        }
    }

    /// The node at `path`, if it exists.
    pub fn at(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = match seg {
                Seg::Key(k) => node.get(k)?,
                Seg::Index(i) => node.items().get(*i)?,
            };
        }
        Some(node)
    }

    /// Where to point for `path`: the key of the last segment when it is a key (`url:` rather
    /// than its value), else the node; the deepest existing ancestor when the path does not
    /// exist.
    pub fn key_mark(&self, path: &[Seg]) -> Mark {
        let mut node = self;
        let mut mark = self.mark;
        for seg in path {
            match seg {
                Seg::Key(k) => match node.entry(k) {
                    Some(e) => {
                        mark = e.key_mark;
                        node = &e.value;
                    }
                    None => return mark,
                },
                Seg::Index(i) => match node.items().get(*i) {
                    Some(n) => {
                        mark = n.mark;
                        node = n;
                    }
                    None => return mark,
                },
            }
        }
        mark
    }

    /// Where the value at `path` is (the deepest existing ancestor when it does not exist).
    pub fn value_mark(&self, path: &[Seg]) -> Mark {
        match self.at(path) {
            Some(n) => n.mark,
            None => self.key_mark(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let f = parse(text);
        assert!(f.syntax_errors.is_empty(), "{:?}", f.syntax_errors);
        f.docs.into_iter().find_map(|d| d.root).expect("a document")
    }

    /// Plain scalars resolve like YAML 1.2's core schema; quoted ones are always strings.
    #[test]
    fn scalars_resolve_with_the_core_schema() {
        let n = one(
            "a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: '1'\ng: 46GiB\nh: 0x1f\ni: 1e3\nj: .5\nk: 10.0.0.1\n",
        );
        let j = n.to_json();
        assert_eq!(j["a"], 1);
        assert_eq!(j["b"], -2);
        assert_eq!(j["c"], 1.5);
        assert_eq!(j["d"], true);
        assert!(j["e"].is_null());
        assert_eq!(j["f"], "1");
        assert_eq!(j["g"], "46GiB");
        assert_eq!(j["h"], 31);
        assert_eq!(j["i"], 1000.0);
        assert_eq!(j["j"], 0.5);
        assert_eq!(j["k"], "10.0.0.1");
    }

    /// Documents, their lines, and the byte range of each document's text are found.
    #[test]
    fn documents_and_positions() {
        let text = "# c\na: 1\n---\nb:\n  c: [x, y]\n---\n";
        let f = parse(text);
        assert_eq!(f.docs.len(), 3);
        assert_eq!(&text[f.docs[0].text.clone()], "# c\na: 1\n");
        assert_eq!(&text[f.docs[1].text.clone()], "---\nb:\n  c: [x, y]\n");
        assert_eq!(f.docs[1].first_line, 3);
        assert!(f.docs[2].root.is_none());
        let root = f.docs[1].root.as_ref().unwrap();
        let p = [Seg::from("b"), Seg::from("c"), Seg::from(1)];
        assert_eq!(root.value_mark(&p), Mark { line: 5, column: 10 });
        assert_eq!(root.key_mark(&[Seg::from("b"), Seg::from("c")]), Mark { line: 5, column: 3 });
    }

    /// A syntax error is reported with its position and the next document is still read.
    #[test]
    fn recovers_after_a_syntax_error() {
        let f = parse("a: [1,\n---\nb: 2\n");
        assert_eq!(f.syntax_errors.len(), 1);
        assert_eq!(f.docs.iter().filter_map(|d| d.root.as_ref()).count(), 1);
    }

    /// Duplicate keys are reported at the second key, naming the first's line.
    #[test]
    fn duplicate_keys() {
        let f = parse("a: 1\nb: 2\na: 3\n");
        let p = &f.docs[0].problems;
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].mark, Mark { line: 3, column: 1 });
        assert_eq!(p[0].message, "duplicate key `a` (first at line 1)");
    }

    /// Alias bombs and deep nesting are refused rather than exhausting memory or stack.
    #[test]
    fn bounded() {
        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for i in 0..8 {
            let prev = if i == 0 { "a".to_string() } else { format!("b{}", i - 1) };
            bomb.push_str(&format!("b{i}: &b{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        let f = parse(&bomb);
        assert!(f.docs[0].problems.iter().any(|p| p.message.contains("too large")));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let f = parse(&deep);
        assert!(f.docs[0].problems.iter().any(|p| p.message.contains("nesting")));
    }
}
