//! Verification: after a heal, the verification suite runs against the healed model; the heal
//! passed when at least `pass_ratio` of the tasks pass. The reply must come from the expected
//! model (LM Studio answers with whatever single model is loaded).

use serde::Serialize;

use crate::desired::SuiteSpec;
use crate::observe::driver::NodeClient;

/// The result of one verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub model: String,
    pub suite: String,
    pub passed_tasks: u32,
    pub total_tasks: u32,
    pub required_ratio: f64,
    pub passed: bool,
    /// Per task: name and what went wrong (empty when it passed).
    pub failures: Vec<(String, String)>,
}

impl VerifyReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}/{} tasks of `{}` passed (need {:.0}%)",
            self.passed_tasks,
            self.total_tasks,
            self.suite,
            self.required_ratio * 100.0
        );
        if let Some((task, why)) = self.failures.first() {
            s.push_str(&format!("; {task}: {why}"));
        }
        s
    }
}

/// Runs every task of `suite` once against `model` and checks the answers.
pub async fn verify_model(
    client: &NodeClient,
    model: &str,
    suite_name: &str,
    suite: &SuiteSpec,
    pass_ratio: f64,
) -> VerifyReport {
    let mut passed = 0u32;
    let mut failures = Vec::new();
    for (i, task) in suite.tasks.iter().enumerate() {
        let task_name = task.name.clone().unwrap_or_else(|| format!("task {}", i + 1));
        match client.chat(model, &task.prompt, suite.max_tokens, suite.timeout.get()).await {
            Ok(reply) => {
                if let Some(answered) = &reply.model_answered
                    && !client.same_model(model, answered)
                {
                    failures.push((task_name, format!("answered by {answered}, not {model}")));
                    continue;
                }
                match check_answer(&task.check, &reply.text) {
                    Ok(true) => passed += 1,
                    Ok(false) => failures
                        .push((task_name, format!("wrong answer {:?}", truncate(&reply.text, 80)))),
                    Err(e) => failures.push((task_name, e.to_string())),
                }
            }
            Err(e) => failures.push((task_name, crate::cli::chain(&e))),
        }
    }
    let total = suite.tasks.len() as u32;
    let ratio = if total == 0 { 1.0 } else { f64::from(passed) / f64::from(total) };
    VerifyReport {
        model: model.to_owned(),
        suite: suite_name.to_owned(),
        passed_tasks: passed,
        total_tasks: total,
        required_ratio: pass_ratio,
        passed: ratio + 1e-9 >= pass_ratio,
        failures,
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Interim answer check until `bench::score` lands (replaced at merge).
fn check_answer(check: &crate::desired::Check, text: &str) -> Result<bool, String> {
    use crate::desired::Check;
    Ok(match check {
        Check::Contains(s) => text.to_lowercase().contains(&s.to_lowercase()),
        Check::Exact(s) => text.trim() == s.trim(),
        Check::Regex(r) => regex::Regex::new(r).map_err(|e| e.to_string())?.is_match(text),
        Check::Number(n) => text
            .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .find_map(|t| t.parse::<f64>().ok())
            .is_some_and(|v| (v - n.value).abs() <= n.tolerance),
    })
}
