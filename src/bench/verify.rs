//! Verification: after a heal, the verification suite runs against the healed model; the heal
//! passed when at least `pass_ratio` of the tasks pass. The reply must come from the expected
//! model (LM Studio answers with whatever single model is loaded).
//!
//! Also the bridge between the benchmark runner (`bench::run::ChatTarget`) and the backend
//! drivers (`NodeClient::chat`), used by verification, `bench` and the arena.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bench::run::{
    ChatAnswer, ChatError, ChatRequest, ChatTarget, RunOptions, SuiteRun, run_suite,
};
use crate::bench::score::{CompiledSuite, Outcome, verdict};
use crate::desired::SuiteSpec;
use crate::observe::driver::{DriverError, NodeClient};
use crate::observe::snapshot::ProbeFailure;

/// A node's chat endpoint as the benchmark runner sees it.
pub struct NodeTarget<'a>(pub &'a NodeClient);

impl ChatTarget for NodeTarget<'_> {
    async fn chat(&self, req: &ChatRequest) -> Result<ChatAnswer, ChatError> {
        let client = self.0;
        match client.chat(&req.model, &req.prompt, req.max_tokens, req.timeout).await {
            Ok(reply) => {
                // The backend's own notion of "the same model" (a GGUF path and its stem, a
                // `:latest` tag) first; anything else is reported as the model that answered.
                let model = reply.model_answered.map(|answered| {
                    if client.same_model(&req.model, &answered) {
                        req.model.clone()
                    } else {
                        answered
                    }
                });
                Ok(ChatAnswer { text: reply.text, model })
            }
            Err(e) => Err(chat_error(&e, req)),
        }
    }
}

fn chat_error(e: &DriverError, req: &ChatRequest) -> ChatError {
    match e {
        DriverError::Request { failure: ProbeFailure::Timeout, .. } => {
            ChatError::Timeout { after: req.timeout }
        }
        DriverError::Request {
            failure: ProbeFailure::Refused | ProbeFailure::Dns | ProbeFailure::Tls,
            ..
        } => ChatError::Connect { detail: e.to_string() },
        DriverError::Rejected { status, message, .. } => {
            ChatError::Status { status: *status, body: message.clone() }
        }
        other => ChatError::BadResponse { detail: crate::error::chain(other) },
    }
}

/// The result of one verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub model: String,
    pub suite: String,
    pub passed_tasks: u32,
    pub total_tasks: u32,
    pub required_ratio: f64,
    pub passed: bool,
    /// Per failed task: its name and what went wrong.
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

    fn from_run(
        model: &str,
        suite: &str,
        compiled: &CompiledSuite,
        run: &SuiteRun,
        required: f64,
    ) -> Self {
        let v = verdict(&run.summary, required);
        let name = |i: usize| {
            compiled.tasks.get(i).map(|t| t.name.clone()).unwrap_or_else(|| i.to_string())
        };
        let failures = run
            .samples
            .iter()
            .filter_map(|s| match &s.outcome {
                Outcome::Answered { passed: true, .. } => None,
                Outcome::Answered { passed: false, answer } => {
                    Some((name(s.task), format!("wrong answer {answer:?}")))
                }
                Outcome::Failed { error, detail } => {
                    Some((name(s.task), format!("{error:?}: {detail}")))
                }
            })
            .collect();
        VerifyReport {
            model: model.to_owned(),
            suite: suite.to_owned(),
            passed_tasks: run.summary.total.passes,
            total_tasks: run.summary.total.requests,
            required_ratio: required,
            passed: v.passed,
            failures,
        }
    }
}

/// Runs every task of `suite` once against `model` and judges the heal.
pub async fn verify_model(
    client: &NodeClient,
    model: &str,
    suite_name: &str,
    suite: &SuiteSpec,
    pass_ratio: f64,
) -> VerifyReport {
    let compiled = match CompiledSuite::compile(suite) {
        Ok(c) => c,
        Err(e) => {
            return VerifyReport {
                model: model.to_owned(),
                suite: suite_name.to_owned(),
                passed_tasks: 0,
                total_tasks: suite.tasks.len() as u32,
                required_ratio: pass_ratio,
                passed: false,
                failures: vec![("suite".into(), e.to_string())],
            };
        }
    };
    let run = run_suite(
        &NodeTarget(client),
        model,
        &compiled,
        RunOptions::verification(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await;
    VerifyReport::from_run(model, suite_name, &compiled, &run, pass_ratio)
}
