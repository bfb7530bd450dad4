//! What simulated models answer: a deterministic table from prompt fragments to answers, so
//! that benchmark and verification prompts are answered correctly (and, under the
//! `wrong-answers` fault, incorrectly).
//!
//! Pure: the same prompt always gets the same answer.

use serde::{Deserialize, Serialize};

/// One rule: a prompt containing `prompt_contains` (case-insensitive) is answered `answer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnswerRule {
    pub prompt_contains: String,
    pub answer: String,
}

/// The answer given under the `wrong-answers` fault: no digits, no capital, no keyword, so every
/// check of the built-in suite fails.
pub const WRONG_ANSWER: &str = "I am not sure about that.";

/// Answers for the built-in verification suite (`desired::BUILTIN_SUITE`); a test checks that
/// they satisfy the suite's checks, so a change of the suite shows up here.
const BUILTIN: [(&str, &str); 3] = [
    ("17 + 25", "42"),
    ("capital of France", "Paris"),
    ("Python keyword defines a function", "def"),
];

/// The answer table of a simulated cluster: rules from sim.yaml first, then the built-ins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerTable {
    rules: Vec<(String, String)>,
}

impl AnswerTable {
    /// The built-in answers plus `extra` rules (which take precedence, in order).
    pub fn new(extra: &[AnswerRule]) -> AnswerTable {
        let mut rules: Vec<(String, String)> =
            extra.iter().map(|r| (r.prompt_contains.to_lowercase(), r.answer.clone())).collect();
        rules.extend(BUILTIN.iter().map(|(p, a)| (p.to_lowercase(), (*a).to_owned())));
        AnswerTable { rules }
    }

    /// The answer of `model` to `prompt` (the last user message). Unknown prompts get a
    /// deterministic generic answer naming the model.
    pub fn answer(&self, model: &str, prompt: &str) -> String {
        let lower = prompt.to_lowercase();
        for (needle, answer) in &self.rules {
            if lower.contains(needle.as_str()) {
                return answer.clone();
            }
        }
        let words = prompt.split_whitespace().count();
        format!("This is {model}, a simulated model. Your message had {words} words.")
    }
}

/// Cuts `text` to at most `max_tokens` simulated tokens (whitespace-separated words); returns
/// the text and whether it was cut.
pub fn truncate_tokens(text: &str, max_tokens: Option<u32>) -> (String, bool) {
    let Some(max) = max_tokens else {
        return (text.to_owned(), false);
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let max = usize::try_from(max).unwrap_or(usize::MAX).max(1);
    if words.len() <= max { (text.to_owned(), false) } else { (words[..max].join(" "), true) }
}

/// Simulated token count of a text (words, at least 1 for non-empty text).
pub fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{BUILTIN_SUITE, Check};

    /// Every task of the built-in verification suite gets an answer that passes its check, and
    /// the wrong answer fails every check.
    #[test]
    fn answers_the_builtin_suite() {
        let table = AnswerTable::new(&[]);
        for task in &BUILTIN_SUITE.tasks {
            let a = table.answer("m", &task.prompt);
            assert!(passes(&task.check, &a), "{:?} answered {a:?}", task.prompt);
            assert!(!passes(&task.check, WRONG_ANSWER), "{:?}", task.prompt);
        }
    }

    fn passes(check: &Check, answer: &str) -> bool {
        match check {
            Check::Contains(s) => answer.to_lowercase().contains(&s.to_lowercase()),
            Check::Exact(s) => answer.trim() == s,
            Check::Regex(r) => regex::Regex::new(r).unwrap().is_match(answer),
            Check::Number(n) => regex::Regex::new(r"-?[0-9]+(\.[0-9]+)?")
                .unwrap()
                .find(answer)
                .and_then(|m| m.as_str().parse::<f64>().ok())
                .is_some_and(|v| (v - n.value).abs() <= n.tolerance),
        }
    }

    /// Rules from sim.yaml win over the built-ins; unknown prompts get a stable generic answer.
    #[test]
    fn extra_rules_and_generic_answers() {
        let table = AnswerTable::new(&[AnswerRule {
            prompt_contains: "CAPITAL of france".into(),
            answer: "Paris, of course".into(),
        }]);
        assert_eq!(table.answer("m", "What is the capital of France?"), "Paris, of course");
        let a = table.answer("qwen", "hello there");
        assert_eq!(a, table.answer("qwen", "hello there"));
        assert!(a.contains("qwen"));
    }

    /// `max_tokens` cuts answers at word boundaries and reports the cut.
    #[test]
    fn truncates_to_max_tokens() {
        assert_eq!(truncate_tokens("a b c", Some(2)), ("a b".into(), true));
        assert_eq!(truncate_tokens("a b c", Some(5)), ("a b c".into(), false));
        assert_eq!(truncate_tokens("42", Some(1)), ("42".into(), false));
        assert_eq!(count_tokens("a b  c"), 3);
    }
}
