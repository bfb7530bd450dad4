//! Diagnostics: one problem in the manifests, where it is and what was expected, printed like a
//! compiler's (`file:line:column: error: path: message`, then a hint).
//!
//! Pure: no I/O. Nothing here ever holds a secret: the code that builds a diagnostic decides what
//! it may quote, and messages that come from libraries are passed through [`redact_token_like`].

use std::fmt;

use serde::Serialize;

/// How bad a diagnostic is. Only errors make a manifest set invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warning => "warning",
        })
    }
}

/// One problem found in the manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub level: Level,
    /// The file as the user named it (`desired-state/nodes.yaml`), or the directory for problems
    /// of the whole set, or `<inline>` for [`super::from_yaml_str`].
    pub file: String,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Where in the document, as a JSON path such as `spec.models[0].size`; empty for the whole
    /// document or file.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// What is wrong. Never contains a secret.
    pub message: String,
    /// What to write instead, when there is something useful to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error in `file` with no position yet.
    pub fn error(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            level: Level::Error,
            file: file.into(),
            line: None,
            column: None,
            path: String::new(),
            message: message.into(),
            hint: None,
        }
    }

    /// A warning in `file` with no position yet.
    pub fn warning(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { level: Level::Warning, ..Diagnostic::error(file, message) }
    }

    pub fn at(mut self, mark: Option<Mark>) -> Self {
        if let Some(m) = mark {
            self.line = Some(m.line);
            self.column = Some(m.column);
        }
        self
    }

    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }

    fn sort_key(&self) -> (&str, usize, usize, Level, &str, &str) {
        (
            &self.file,
            self.line.unwrap_or(0),
            self.column.unwrap_or(0),
            self.level,
            &self.path,
            &self.message,
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}: ", self.level)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Most problems a [`Diagnostics`] keeps (errors first); the rest are counted, not kept, so a set
/// with 40,000 errors is not a 22 MB event, status entry and terminal dump.
pub const SHOWN_MAX: usize = 100;

/// The problems found in a manifest set (errors and warnings), in file and line order: at most
/// [`SHOWN_MAX`] of them (errors before warnings), with the totals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
    errors: usize,
    warnings: usize,
}

impl Serialize for Diagnostics {
    /// The kept problems, as a list.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.items.serialize(s)
    }
}

impl Diagnostics {
    /// Sorts by file, line and column, drops exact duplicates, and keeps at most [`SHOWN_MAX`]
    /// (errors first).
    pub fn new(mut items: Vec<Diagnostic>) -> Self {
        super::work::add(items.len());
        items.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        items.dedup();
        let errors = items.iter().filter(|d| d.is_error()).count();
        let warnings = items.len() - errors;
        if items.len() > SHOWN_MAX {
            let keep_warnings = SHOWN_MAX.saturating_sub(errors);
            let mut kept_warnings = 0usize;
            let mut kept_errors = 0usize;
            items.retain(|d| {
                if d.is_error() {
                    kept_errors += 1;
                    kept_errors <= SHOWN_MAX
                } else {
                    kept_warnings += 1;
                    kept_warnings <= keep_warnings
                }
            });
        }
        Diagnostics { items, errors, warnings }
    }

    /// The kept problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// The kept errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.is_error())
    }

    /// The kept warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| !d.is_error())
    }

    /// Every error found, kept or not.
    pub fn error_count(&self) -> usize {
        self.errors
    }

    /// Every warning found, kept or not.
    pub fn warning_count(&self) -> usize {
        self.warnings
    }

    /// Problems found but not kept.
    pub fn omitted(&self) -> usize {
        (self.errors + self.warnings).saturating_sub(self.items.len())
    }

    /// Number of kept problems.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl fmt::Display for Diagnostics {
    /// One problem per line (its hint, if any, indented on the next line), then how many more
    /// were found when some are not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        let more = self.omitted();
        if more > 0 {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            write!(
                f,
                "\n… and {more} more problem{} not shown ({} error{}, {} warning{} in all)",
                plural(more),
                self.errors,
                plural(self.errors),
                self.warnings,
                plural(self.warnings)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A position in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_owned())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Renders a path as `spec.models[0].size`; keys that are not identifiers are quoted
/// (`metadata.labels["app.kubernetes.io/name"]`), and a key shaped like a credential is shown as
/// `[redacted]`.
pub fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Seg::Key(k) if looks_like_secret(k) => out.push_str("[redacted]"),
            Seg::Key(k) => {
                let ident = !k.is_empty()
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    && !k.starts_with(|c: char| c.is_ascii_digit() || c == '-');
                if ident {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                } else {
                    out.push_str("[\"");
                    for c in k.chars() {
                        match c {
                            '"' => out.push_str("\\\""),
                            '\\' => out.push_str("\\\\"),
                            c if c.is_control() => out.push('?'),
                            c => out.push(c),
                        }
                    }
                    out.push_str("\"]");
                }
            }
        }
    }
    out
}

/// The closest candidate to `word` when it is close enough to be a typo: a small edit distance
/// (a transposition counts as one edit), case-insensitive.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let w = word.to_lowercase();
    let wlen = w.chars().count();
    let limit = (wlen / 3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let d = edit_distance(&w, &c.to_lowercase());
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Inputs are field and kind names; bound the work for pathological keys.
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// Whether a string is almost certainly a credential: a well-known token prefix (`sk-`,
/// `ghp_`, `xoxb-`, ...) or an `Authorization` value (`Bearer ...`).
pub fn looks_like_secret(s: &str) -> bool {
    let t = s.trim();
    const PREFIXES: [&str; 14] = [
        "sk-",
        "sk_",
        "pk_live_",
        "rk_live_",
        "ghp_",
        "gho_",
        "ghs_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "xoxp-",
        "xapp-",
        "hf_",
        "AKIA",
    ];
    // A token is one word...
    let one_word = |w: &str| !w.is_empty() && !w.contains(char::is_whitespace);
    // ... whose random part is a long run of letters and digits, with digits or mixed case: a
    // name that merely starts like one (`hf_inference`, `sk-learn-demo`) is not a token.
    let random = |w: &str| {
        w.split(|c: char| !c.is_ascii_alphanumeric()).any(|run| {
            run.len() >= 12
                && (run.chars().any(|c| c.is_ascii_digit())
                    || (run.chars().any(|c| c.is_ascii_lowercase())
                        && run.chars().any(|c| c.is_ascii_uppercase())))
        })
    };
    if one_word(t)
        && let Some(p) = PREFIXES.iter().find(|p| t.starts_with(*p))
    {
        return random(&t[p.len()..]);
    }
    t.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
        && t.get(7..).is_some_and(|w| one_word(w) && w.len() >= 8)
}

/// Whether a word is shaped like a token: a credential by [`looks_like_secret`], or a run of
/// 20+ letters and digits (both present) with no separator, as hex keys, base64 secrets and
/// JWT parts are. Model names (`qwen2.5-coder-32b-instruct`) have short segments and pass.
fn looks_token_shaped(s: &str) -> bool {
    looks_like_secret(s)
        || s.split(['-', '_', '.', '/', '=', '+']).any(|seg| {
            seg.len() >= 20
                && seg.chars().all(|c| c.is_ascii_alphanumeric())
                && seg.chars().any(|c| c.is_ascii_digit())
                && seg.chars().any(|c| c.is_ascii_alphabetic())
        })
}

/// Replaces every token-looking word of a library's message with `[redacted]`, so a parser
/// error that quotes input can never print a credential.
pub fn redact_token_like(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_token_shaped(word) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in message.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ':' | '(' | ')' | '[' | ']') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Typos within a few edits get a suggestion; unrelated words do not.
    #[test]
    fn suggestions_for_typos_only() {
        let fields = ["replicas", "models", "backend", "url"];
        assert_eq!(did_you_mean("replcas", fields), Some("replicas"));
        assert_eq!(did_you_mean("modles", fields), Some("models"));
        assert_eq!(did_you_mean("Backend", fields), Some("backend"));
        assert_eq!(did_you_mean("colour", fields), None);
        assert_eq!(did_you_mean("node", ["Node", "Cluster"]), Some("Node"));
    }

    /// Paths render like JSONPath without the `$`, quoting keys that are not identifiers.
    #[test]
    fn paths_render_readably() {
        let p = [Seg::from("spec"), Seg::from("models"), Seg::from(0), Seg::from("size")];
        assert_eq!(render_path(&p), "spec.models[0].size");
        let p = [Seg::from("metadata"), Seg::from("labels"), Seg::from("app.io/name")];
        assert_eq!(render_path(&p), "metadata.labels[\"app.io/name\"]");
    }

    /// Token-looking words are redacted from library messages; ordinary words are kept.
    #[test]
    fn redacts_tokens_from_messages() {
        let m = redact_token_like("invalid value: string \"sk-live-abcdef123456\", expected x");
        assert_eq!(m, "invalid value: string \"[redacted]\", expected x");
        assert_eq!(redact_token_like("unknown field `replcas`"), "unknown field `replcas`");
        assert!(looks_like_secret("ghp_0123456789abcdefABCDEF"));
        assert!(!looks_like_secret("qwen/qwen3-8b"));
        assert!(!looks_like_secret("http://10.5.0.2:1234"));
        assert!(looks_like_secret("Bearer abcdef123456"));
        assert!(!looks_like_secret("Bearer tokens go in a header. Why?"));
        assert!(!looks_like_secret("sk-learn is a Python library"));
        assert!(!looks_like_secret("hf_inference_server_v2"));
        assert!(looks_like_secret("hf_AbCdEfGhIjKlMnOpQrStUvWxYz"));
        assert!(looks_like_secret("xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"));
        assert!(looks_token_shaped("a3f9c2e7b1d04f6a9e8c7b6a5d4c3b2a"));
        assert!(!looks_token_shaped("qwen2.5-coder-32b-instruct-q4_k_m"));
    }
}
