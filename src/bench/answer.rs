//! What a model answered, made checkable: the reasoning section removed, the first number read,
//! the reply's model name compared with the expected one, the text shortened for storage.
//!
//! Pure: no I/O, no clock. Every function here takes a string and returns a value.
//!
//! # Reasoning sections
//! A reasoning model writes its thinking into the answer text unless the server separates it
//! (LM Studio's native chat returns it as an `output[]` item of type `reasoning`, which the driver
//! drops; vLLM and llama.cpp do the same when started with a reasoning parser). When it is left in
//! the text, numbers and words of the thinking would make checks pass or fail by accident, so it
//! is removed before checking. The formats handled are the ones the servers' own reasoning parsers
//! know (read in vLLM's `vllm/reasoning/`):
//! - `<think>…</think>` (DeepSeek-R1, Qwen3, QwQ), `<seed:think>…</seed:think>` (Seed-OSS),
//!   `[THINK]…[/THINK]` (Mistral Magistral), `<|START_THINKING|>…<|END_THINKING|>` (Cohere
//!   Command). For each pair: every complete block is removed; a closing tag with no opening tag
//!   before it means the opening tag was part of the prompt (DeepSeek-R1's template ends with
//!   `<think>\n`), so everything up to it is thinking; an opening tag never closed means the
//!   answer was cut (by `max_tokens`) while thinking, so everything from it is thinking.
//! - OpenAI's harmony format (gpt-oss) when a server passes it through raw:
//!   `<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>ANSWER`
//!   `<|return|>`. The answer is what follows the last `<|channel|>final` (the `<|message|>` after
//!   it is optional: a leaky template was seen printing `<|channel|>finalHello!`), up to
//!   `<|return|>`, `<|end|>` or `<|call|>`. Channel headers with no `final` channel mean the answer
//!   was cut while thinking: nothing is left.

/// Tag pairs that delimit a reasoning section (opening, closing).
const THINK_TAGS: [(&str, &str); 4] = [
    ("<think>", "</think>"),
    ("<seed:think>", "</seed:think>"),
    ("[THINK]", "[/THINK]"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
];

const HARMONY_CHANNEL: &str = "<|channel|>";
const HARMONY_FINAL: &str = "<|channel|>final";
const HARMONY_MESSAGE: &str = "<|message|>";
const HARMONY_STOPS: [&str; 3] = ["<|return|>", "<|end|>", "<|call|>"];

/// The answer without its reasoning section, trimmed. Text without any reasoning markers comes
/// back unchanged apart from trimming.
pub fn strip_thinking(text: &str) -> String {
    let mut out = strip_harmony(text).to_owned();
    for (open, close) in THINK_TAGS {
        if out.contains(open) || out.contains(close) {
            out = strip_pair(&out, open, close);
        }
    }
    out.trim().to_owned()
}

/// The `final` channel of a harmony-formatted answer; the text itself when it has no channels.
fn strip_harmony(text: &str) -> &str {
    if let Some(at) = text.rfind(HARMONY_FINAL) {
        let rest = &text[at + HARMONY_FINAL.len()..];
        let rest = rest.strip_prefix(HARMONY_MESSAGE).unwrap_or(rest);
        let end = HARMONY_STOPS.iter().filter_map(|s| rest.find(s)).min().unwrap_or(rest.len());
        &rest[..end]
    } else if text.contains(HARMONY_CHANNEL) {
        // Only analysis/commentary channels: cut off before the final answer began.
        ""
    } else {
        text
    }
}

/// Removes `open…close` sections (see the module doc for orphan and unterminated tags).
fn strip_pair(text: &str, open: &str, close: &str) -> String {
    let mut rest = text;
    // A closing tag before any opening tag: the opening tag was in the prompt.
    if let Some(c) = rest.find(close)
        && rest.find(open).is_none_or(|o| c < o)
    {
        rest = &rest[c + close.len()..];
    }
    let mut out = String::with_capacity(rest.len());
    loop {
        let Some(o) = rest.find(open) else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..o]);
        let after_open = &rest[o + open.len()..];
        match after_open.find(close) {
            Some(c) => rest = &after_open[c + close.len()..],
            // Never closed: cut off while thinking.
            None => break,
        }
    }
    out
}

/// The first number written in `text`, if any.
///
/// Read as a person would read an answer:
/// - an optional sign directly before the digits (`-`, `+`, or the Unicode minus `−`), only when
///   the sign does not follow a letter or digit (`GPT-4` is 4, `17-25` starts with 17);
/// - digits, optionally grouped by thousands with commas (`1,234,567`; a comma not followed by
///   exactly three digits ends the number, so `3,5` is 3 and `1, 2, 3` is 1);
/// - an optional fraction (`-3.5`, `.5`; `42.` at the end of a sentence is 42);
/// - an optional exponent (`4.2e1` is 42; `2e` is 2).
///
/// Digits glued to the end of a word are part of a name, not a number (`qwen3`, `H2O`, `x86`),
/// and are skipped. Words (`forty-two`), fractions (`1/2`) and spaces as thousands separators are
/// not understood.
pub fn first_number(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts =
            b[i].is_ascii_digit() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !starts {
            i += 1;
            continue;
        }
        let prev = text[..i].chars().next_back();
        if prev.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            // Inside a word such as `qwen3.5`: skip the whole word.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            continue;
        }
        let negative = match prev {
            Some(sign @ ('-' | '−' | '+')) => {
                let before = text[..i - sign.len_utf8()].chars().next_back();
                sign != '+' && !before.is_some_and(|c| c.is_alphanumeric())
            }
            _ => false,
        };
        return Some(read_number(b, i, negative));
    }
    None
}

/// Reads the number starting at `start` (a digit, or a `.` followed by a digit).
fn read_number(b: &[u8], start: usize, negative: bool) -> f64 {
    let digits_from = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    let mut lit = String::new();
    if negative {
        lit.push('-');
    }
    let mut i = digits_from(start);
    lit.push_str(ascii(&b[start..i]));
    // Thousands groups: only after a leading group of 1–3 digits, each exactly 3 digits.
    if (1..=3).contains(&(i - start)) {
        while b.get(i) == Some(&b',') {
            let end = digits_from(i + 1);
            if end - (i + 1) != 3 {
                break;
            }
            lit.push_str(ascii(&b[i + 1..end]));
            i = end;
        }
    }
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        let end = digits_from(i + 1);
        lit.push_str(ascii(&b[i..end]));
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
        let end = digits_from(i + 1 + sign);
        if end > i + 1 + sign {
            lit.push_str(ascii(&b[i..end]));
        }
    }
    if lit.starts_with('.') || lit.starts_with("-.") {
        lit = lit.replacen('.', "0.", 1);
    }
    // The literal is made only of an optional '-', ASCII digits, one '.', and an exponent, all
    // checked above, which `f64::from_str` always accepts.
    lit.parse().expect("a literal of digits, '.', and an exponent parses as f64")
}

fn ascii(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("slices of ASCII digits and punctuation are UTF-8")
}

/// Whether a reply that reports having come from `answered` came from the `expected` model.
///
/// Names are compared ignoring ASCII case, and two server habits are tolerated: Ollama's
/// implicit `:latest` tag (`llama3.2` is `llama3.2:latest`), and LM Studio's instance suffix for
/// a second copy of a model (`qwen/qwen3-8b:2` is an instance of `qwen/qwen3-8b`). Anything else
/// is another model: LM Studio answers with whatever single model is loaded, whatever was asked
/// (lmstudio-bug-tracker#619). A server that reports a file path instead of a name (llama-server
/// in single-model mode) must not report it as the model (its driver leaves the name out).
pub fn model_matches(expected: &str, answered: &str) -> bool {
    fn normal(name: &str) -> String {
        let name = name.trim().to_ascii_lowercase();
        match name.strip_suffix(":latest") {
            Some(base) => base.to_owned(),
            None => name,
        }
    }
    let (e, a) = (normal(expected), normal(answered));
    if e == a {
        return true;
    }
    match a.rsplit_once(':') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => base == e,
        _ => false,
    }
}

/// At most `max_chars` characters of `text`, with `…` appended when something was cut.
pub fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => {
            let mut s = text[..cut].to_owned();
            s.push('…');
            s
        }
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain answers pass through, trimmed.
    #[test]
    fn strip_leaves_plain_answers_alone() {
        assert_eq!(strip_thinking("  Paris\n"), "Paris");
        assert_eq!(strip_thinking(""), "");
    }

    /// A complete `<think>` block is removed, including numbers inside it.
    #[test]
    fn strip_removes_think_block() {
        assert_eq!(strip_thinking("<think>\n17+25, maybe 41?\n</think>\n\n42"), "42");
        assert_eq!(first_number(&strip_thinking("<think>41</think>42")), Some(42.0));
    }

    /// Several blocks are all removed; text between them is kept.
    #[test]
    fn strip_removes_every_block() {
        assert_eq!(strip_thinking("<think>a</think>one <think>b</think>two"), "one two");
    }

    /// An opening tag that is never closed (cut by max_tokens) leaves only what came before it.
    #[test]
    fn strip_unterminated_think() {
        assert_eq!(strip_thinking("<think>Let me compute 17 + 25 = 4"), "");
        assert_eq!(strip_thinking("Paris <think>or Lyon"), "Paris");
    }

    /// A closing tag without an opening tag (the template put `<think>` in the prompt): the
    /// text before it is thinking.
    #[test]
    fn strip_orphan_close() {
        assert_eq!(strip_thinking("hmm, 41 or 42?\n</think>\n42"), "42");
        assert_eq!(strip_thinking("x</think>y<think>z</think>w"), "yw");
    }

    /// The other documented tag pairs are handled the same way.
    #[test]
    fn strip_other_tag_formats() {
        assert_eq!(
            strip_thinking("[THINK]sum is 42[/THINK]The answer is 42."),
            "The answer is 42."
        );
        assert_eq!(strip_thinking("<seed:think>x</seed:think>def"), "def");
        assert_eq!(strip_thinking("<|START_THINKING|>x<|END_THINKING|>Paris"), "Paris");
        assert_eq!(strip_thinking("[THINK]never finished"), "");
    }

    /// Harmony (gpt-oss) answers keep only the final channel.
    #[test]
    fn strip_harmony_channels() {
        let raw = "<|channel|>analysis<|message|>User asks 17+25. That's 42.<|end|>\
                   <|start|>assistant<|channel|>final<|message|>42<|return|>";
        assert_eq!(strip_thinking(raw), "42");
        let leaky = "<|channel|>analysis<|message|>Greeting.<|end|><|start|>assistant\
                     <|channel|>finalHello! How can I help?";
        assert_eq!(strip_thinking(leaky), "Hello! How can I help?");
        assert_eq!(strip_thinking("<|channel|>analysis<|message|>The user wants 4"), "");
    }

    /// The first number, in the forms the doc comment promises.
    #[test]
    fn first_number_forms() {
        let cases: &[(&str, Option<f64>)] = &[
            ("42", Some(42.0)),
            ("The answer is 42.", Some(42.0)),
            ("-3.5", Some(-3.5)),
            ("x = -7", Some(-7.0)),
            ("(−3)", Some(-3.0)),
            ("+5", Some(5.0)),
            ("1,234", Some(1234.0)),
            ("1,234,567.5 units", Some(1_234_567.5)),
            ("1, 2, 3", Some(1.0)),
            ("3,5", Some(3.0)),
            ("1234,567", Some(1234.0)),
            ("4.2e1", Some(42.0)),
            ("1E-2", Some(0.01)),
            ("2e", Some(2.0)),
            (".5", Some(0.5)),
            ("is -.5", Some(-0.5)),
            ("**42**", Some(42.0)),
            ("42nd", Some(42.0)),
            ("2.5.1", Some(2.5)),
            ("17-25", Some(17.0)),
            ("GPT-4 says 42", Some(4.0)),
            ("I am qwen3, the sum is 42", Some(42.0)),
            ("H2O and x86 then 7", Some(7.0)),
            ("qwen3.5 says 9", Some(9.0)),
            ("forty-two", None),
            ("", None),
            ("e5", None),
        ];
        for (text, want) in cases {
            assert_eq!(first_number(text), *want, "first_number({text:?})");
        }
    }

    /// Model names: case, Ollama's `:latest`, LM Studio's `:N` instance suffix; anything else is
    /// another model.
    #[test]
    fn model_names_match() {
        assert!(model_matches("qwen/qwen3-8b", "qwen/qwen3-8b"));
        assert!(model_matches("Qwen/Qwen3-8B", "qwen/qwen3-8b"));
        assert!(model_matches("llama3.2", "llama3.2:latest"));
        assert!(model_matches("llama3.2:latest", "llama3.2"));
        assert!(model_matches("qwen/qwen3-8b", "qwen/qwen3-8b:2"));
        assert!(!model_matches("qwen/qwen3-8b", "openai/gpt-oss-20b"));
        assert!(!model_matches("llama3:8b", "llama3:70b"));
        assert!(!model_matches("llama3", "llama3:8b"));
        assert!(!model_matches("qwen/qwen3-8b:2", "qwen/qwen3-8b"));
    }

    /// Truncation counts characters, not bytes, and marks the cut.
    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars("", 0), "");
        assert_eq!(truncate_chars("ab", 0), "…");
    }
}
