//! Running a suite against one model on one node: warm-ups (not counted), then cycles × tasks,
//! one request at a time unless asked otherwise, each with the suite's `max_tokens` and timeout
//! and temperature 0. Produces the samples and their summary (`score::summarize`).
//!
//! The node is reached only through [`ChatTarget`], the boundary between benchmarking and the
//! backend drivers (`observe`): a driver turns one [`ChatRequest`] into its server's chat call
//! and reports the text and the model that answered. The runner never fails as a whole: every
//! request ends as a [`Sample`], an error included.
//!
//! Not pure: it awaits the target and reads tokio's monotonic clock to measure latency (which
//! `tokio::time::pause` controls in tests). It never reads wall-clock time: the caller stamps the
//! run when it records it.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::answer::{model_matches, truncate_chars};
use super::score::{
    CompiledSuite, ErrorKind, Outcome, RunSummary, Sample, check_answer, summarize,
};
use crate::desired::ArenaPolicy;

/// Answers are kept this many characters long in samples (enough to see what went wrong).
pub const ANSWER_KEEP_CHARS: usize = 200;

/// One chat request, fully specified: the target does not choose anything.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model to answer (LM Studio key, Ollama name, served model name).
    pub model: String,
    /// Sent as the single user message.
    pub prompt: String,
    pub max_tokens: u32,
    /// Always 0 from the runner: answers must be comparable between runs.
    pub temperature: f64,
    /// The runner also enforces it; a target should pass it to its HTTP client so the request
    /// is abandoned on the wire too.
    pub timeout: Duration,
}

/// What the node answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAnswer {
    /// The assistant message's text. A driver whose server separates reasoning (LM Studio's
    /// `reasoning` output items, `reasoning_content`) leaves the reasoning out; reasoning left in
    /// the text is stripped by the checks.
    pub text: String,
    /// The model the server says answered (`model`, `model_instance_id`), when it says; `None`
    /// skips the wrong-model check. Not a file path (see `answer::model_matches`).
    pub model: Option<String>,
}

/// Why a chat request gave no answer, as a driver reports it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    /// The driver's own timeout fired (the runner's fires too, whichever comes first).
    #[error("no answer within {}ms", after.as_millis())]
    Timeout { after: Duration },
    /// Refused, reset, unreachable, DNS or TLS failure.
    #[error("cannot reach the node: {detail}")]
    Connect { detail: String },
    /// The server answered with an error status. `body` is shortened by the runner.
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// A 2xx answer that is not a chat answer (bad JSON, no message).
    #[error("not a chat answer: {detail}")]
    BadResponse { detail: String },
}

impl ChatError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ChatError::Timeout { .. } => ErrorKind::Timeout,
            ChatError::Connect { .. } => ErrorKind::Connect,
            ChatError::Status { .. } => ErrorKind::Http,
            ChatError::BadResponse { .. } => ErrorKind::BadResponse,
        }
    }
}

/// Something that answers chat requests for one node: the backend driver's chat, adapted.
///
/// Written as a method returning `impl Future + Send` (rather than `async fn`) so a run can be
/// spawned on the runtime; implementations may still write `async fn chat`.
pub trait ChatTarget: Sync {
    fn chat(
        &self,
        request: &ChatRequest,
    ) -> impl Future<Output = Result<ChatAnswer, ChatError>> + Send;
}

/// How much to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Times the whole suite is run and counted.
    pub cycles: u32,
    /// Requests before counting starts (the suite's tasks in turn), so a cold model's first
    /// answers (loading, compiling kernels, filling caches) do not count.
    pub warmups: u32,
    /// Requests in flight at once; 1 (the default) measures one request's latency alone. 0 is
    /// taken as 1.
    pub concurrency: u32,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { cycles: 1, warmups: 0, concurrency: 1 }
    }
}

impl RunOptions {
    /// A post-heal verification: the suite once, no warm-up (the heal itself warmed the model).
    pub fn verification() -> Self {
        RunOptions::default()
    }

    /// An arena candidate: `arena.warmups` warm-ups, then `cycles` (or `quickCycles`) cycles.
    pub fn arena(policy: &ArenaPolicy, quick: bool) -> Self {
        RunOptions {
            cycles: if quick { policy.quick_cycles } else { policy.cycles },
            warmups: policy.warmups,
            concurrency: 1,
        }
    }
}

/// Whether a request was a warm-up or counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Measure,
}

/// Progress of a run, reported after every request (for a progress bar).
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub phase: Phase,
    /// Requests of this phase finished so far, including this one.
    pub done: u32,
    /// Requests this phase will make.
    pub total: u32,
    pub sample: &'a Sample,
}

/// A finished (or cancelled) run.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteRun {
    pub model: String,
    pub options: RunOptions,
    /// The warm-up requests (not counted in `summary`; cycle 0; all failed = the model does not
    /// answer).
    pub warmups: Vec<Sample>,
    /// The counted requests, in cycle then task order.
    pub samples: Vec<Sample>,
    pub summary: RunSummary,
    /// Cancelled before every request ran: `samples` holds those that finished.
    pub cancelled: bool,
}

/// Runs `suite` against `model` through `target`: `options.warmups` warm-ups, then
/// `options.cycles` cycles of every task. Stops early when `cancel` fires (requests in flight
/// are dropped). `on_progress` is called after every request.
pub async fn run_suite<T: ChatTarget>(
    target: &T,
    model: &str,
    suite: &CompiledSuite,
    options: RunOptions,
    cancel: &CancellationToken,
    on_progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> SuiteRun {
    let n_tasks = suite.tasks.len();
    let mut warmups = Vec::new();
    let mut samples = Vec::new();
    let mut cancelled = false;

    // Warm-ups one at a time: they exist to wake the model, not to load it harder.
    for i in 0..options.warmups {
        if n_tasks == 0 {
            break;
        }
        let task = i as usize % n_tasks;
        let sample = tokio::select! {
            biased;
            () = cancel.cancelled() => { cancelled = true; break; }
            s = ask(target, model, suite, task, 0) => s,
        };
        warmups.push(sample);
        let sample = warmups.last().expect("just pushed");
        on_progress(Progress { phase: Phase::Warmup, done: i + 1, total: options.warmups, sample });
    }

    if !cancelled {
        let jobs: Vec<(u32, usize)> =
            (0..options.cycles).flat_map(|c| (0..n_tasks).map(move |t| (c, t))).collect();
        let total = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
        // `buffered` keeps the order of the jobs whatever order they finish in.
        let mut answers = futures::stream::iter(jobs)
            .map(|(cycle, task)| ask(target, model, suite, task, cycle))
            .buffered(options.concurrency.max(1) as usize);
        loop {
            let sample = tokio::select! {
                biased;
                () = cancel.cancelled() => { cancelled = true; break; }
                next = answers.next() => match next {
                    Some(s) => s,
                    None => break,
                },
            };
            samples.push(sample);
            let done = u32::try_from(samples.len()).unwrap_or(u32::MAX);
            let sample = samples.last().expect("just pushed");
            on_progress(Progress { phase: Phase::Measure, done, total, sample });
        }
    }

    let summary = summarize(suite, &samples);
    SuiteRun { model: model.to_owned(), options, warmups, samples, summary, cancelled }
}

/// One request for task `task`, classified.
async fn ask<T: ChatTarget>(
    target: &T,
    model: &str,
    suite: &CompiledSuite,
    task: usize,
    cycle: u32,
) -> Sample {
    let spec = &suite.tasks[task];
    let request = ChatRequest {
        model: model.to_owned(),
        prompt: spec.prompt.clone(),
        max_tokens: suite.max_tokens,
        temperature: 0.0,
        timeout: suite.timeout,
    };
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(suite.timeout, target.chat(&request)).await;
    let mut latency = started.elapsed();
    let failed = |error: ErrorKind, detail: String| Outcome::Failed {
        error,
        detail: truncate_chars(&detail, ANSWER_KEEP_CHARS),
    };
    let outcome = match result {
        Err(_) => {
            failed(ErrorKind::Timeout, format!("no answer within {}ms", suite.timeout.as_millis()))
        }
        Ok(Err(e)) => failed(e.kind(), e.to_string()),
        Ok(Ok(ChatAnswer { model: Some(answered), .. })) if !model_matches(model, &answered) => {
            failed(ErrorKind::WrongModel, format!("answered by {answered}, not {model}"))
        }
        Ok(Ok(answer)) => {
            let (passed, checked) = check_answer(&spec.check, &answer.text);
            Outcome::Answered { passed, answer: truncate_chars(&checked, ANSWER_KEEP_CHARS) }
        }
    };
    if matches!(outcome, Outcome::Failed { error: ErrorKind::Timeout, .. }) {
        // A timeout costs the whole timeout in the latency statistics, even when a driver gave
        // up earlier: a request that did not answer in time must never look fast.
        latency = latency.max(suite.timeout);
    }
    Sample { cycle, task, latency, outcome }
}
