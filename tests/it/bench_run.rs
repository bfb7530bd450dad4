//! The suite runner (`bench::run`) against in-test implementations of its `ChatTarget` boundary:
//! cycles and warm-ups, request parameters, timeouts, wrong-model replies, error classes,
//! concurrency, cancellation and the aggregation of what came back.
//!
//! No sockets here: time is paused (`start_paused`), so latencies and timeouts are exact and
//! instant. Runs against real HTTP go through the simulator's servers (`tests/sim_*`).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use homeostat::bench::run::{
    ChatAnswer, ChatError, ChatRequest, ChatTarget, Phase, RunOptions, SuiteRun, run_suite,
};
use homeostat::bench::score::{CompiledSuite, ErrorKind, Outcome};
use homeostat::desired::{ArenaPolicy, BUILTIN_SUITE, Dur, SuiteSpec};
use tokio_util::sync::CancellationToken;

/// What the in-test node does with one request.
enum Reply {
    /// Answer `text` as `model` after `after`.
    Answer {
        text: String,
        model: Option<String>,
        after: Duration,
    },
    Fail(ChatError),
    /// Never answer.
    Hang,
}

type Script = dyn Fn(usize, &ChatRequest) -> Reply + Send + Sync;

/// A node whose answers follow a script (call number, request) → reply, recording every request
/// and how many were in flight at once.
struct ScriptedNode {
    script: Box<Script>,
    seen: Mutex<Vec<ChatRequest>>,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
}

impl ScriptedNode {
    fn new(script: impl Fn(usize, &ChatRequest) -> Reply + Send + Sync + 'static) -> Self {
        ScriptedNode {
            script: Box::new(script),
            seen: Mutex::new(Vec::new()),
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
        }
    }

    fn requests(&self) -> Vec<ChatRequest> {
        self.seen.lock().expect("no panic while holding the lock").clone()
    }
}

impl ChatTarget for ScriptedNode {
    fn chat(
        &self,
        request: &ChatRequest,
    ) -> impl Future<Output = Result<ChatAnswer, ChatError>> + Send {
        let call = {
            let mut seen = self.seen.lock().expect("no panic while holding the lock");
            seen.push(request.clone());
            seen.len() - 1
        };
        let reply = (self.script)(call, request);
        async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let result = match reply {
                Reply::Answer { text, model, after } => {
                    tokio::time::sleep(after).await;
                    Ok(ChatAnswer { text, model })
                }
                Reply::Fail(e) => Err(e),
                Reply::Hang => std::future::pending().await,
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        }
    }
}

const MODEL: &str = "qwen/qwen3-8b";

/// The right answer to each built-in prompt.
fn correct(prompt: &str) -> &'static str {
    if prompt.contains("17 + 25") {
        "42"
    } else if prompt.contains("France") {
        "Paris"
    } else {
        "def"
    }
}

/// Index of a built-in task from its prompt.
fn task_of(prompt: &str) -> usize {
    BUILTIN_SUITE.tasks.iter().position(|t| t.prompt == prompt).expect("a built-in prompt")
}

fn answer(text: &str, secs: f64) -> Reply {
    Reply::Answer {
        text: text.into(),
        model: Some(MODEL.into()),
        after: Duration::from_secs_f64(secs),
    }
}

fn builtin() -> CompiledSuite {
    CompiledSuite::compile(&BUILTIN_SUITE).expect("the built-in suite compiles")
}

async fn run(node: &ScriptedNode, suite: &CompiledSuite, options: RunOptions) -> SuiteRun {
    run_suite(node, MODEL, suite, options, &CancellationToken::new(), &mut |_| {}).await
}

/// Warm-ups go first and are not counted; then every task once per cycle, in cycle-then-task
/// order; every request carries the model, the suite's max_tokens and timeout, temperature 0.
#[tokio::test(start_paused = true)]
async fn cycles_and_warmups() {
    let node = ScriptedNode::new(|_, r| answer(correct(&r.prompt), 1.0));
    let options = RunOptions { cycles: 3, warmups: 2, concurrency: 1 };
    let run = run(&node, &builtin(), options).await;

    let requests = node.requests();
    assert_eq!(requests.len(), 2 + 3 * 3);
    for r in &requests {
        assert_eq!(r.model, MODEL);
        assert_eq!(r.max_tokens, BUILTIN_SUITE.max_tokens);
        assert_eq!(r.timeout, BUILTIN_SUITE.timeout.get());
        assert_eq!(r.temperature, 0.0);
    }
    let order: Vec<usize> = requests.iter().map(|r| task_of(&r.prompt)).collect();
    assert_eq!(order, [0, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2]);

    assert_eq!(run.warmups.len(), 2);
    let counted: Vec<(u32, usize)> = run.samples.iter().map(|s| (s.cycle, s.task)).collect();
    assert_eq!(counted, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]);
    assert_eq!(run.summary.total.requests, 9);
    assert_eq!(run.summary.total.passes, 9);
    assert!(!run.cancelled);
}

/// Latencies are measured by the runner: per-task delays of 1, 2 and 3 s give a mean of 2 s,
/// a p95 of 3 s, speed 8 and, with every answer right, composite 6 + 2.4 + 1 = 9.4; per task
/// and per domain too.
#[tokio::test(start_paused = true)]
async fn latency_and_score() {
    let node = ScriptedNode::new(|_, r| {
        let t = task_of(&r.prompt);
        answer(correct(&r.prompt), (t + 1) as f64)
    });
    let run = run(&node, &builtin(), RunOptions { cycles: 2, ..RunOptions::default() }).await;
    let s = &run.summary;
    assert_eq!(s.total.mean_latency, Some(Duration::from_secs(2)));
    assert_eq!(s.total.p95_latency, Some(Duration::from_secs(3)));
    assert!((s.score.speed - 8.0).abs() < 1e-9);
    assert!((s.score.composite - 9.4).abs() < 1e-9, "{:?}", s.score);
    assert_eq!(s.tasks[2].tally.mean_latency, Some(Duration::from_secs(3)));
    assert_eq!(s.by_domain["general"].mean_latency, Some(Duration::from_secs(2)));
    assert_eq!(run.samples[0].latency, Duration::from_secs(1));
}

/// A request that never answers ends at the suite's timeout as a timeout error, counted at the
/// time waited; the run goes on with the next task.
#[tokio::test(start_paused = true)]
async fn hanging_request_times_out() {
    let spec = SuiteSpec { timeout: Dur::from_secs(5), ..BUILTIN_SUITE.clone() };
    let suite = CompiledSuite::compile(&spec).unwrap();
    let node = ScriptedNode::new(|_, r| {
        if task_of(&r.prompt) == 1 { Reply::Hang } else { answer(correct(&r.prompt), 1.0) }
    });
    let run = run(&node, &suite, RunOptions::default()).await;
    let hung = &run.samples[1];
    assert_eq!(hung.error(), Some(ErrorKind::Timeout));
    assert_eq!(hung.latency, Duration::from_secs(5));
    assert!(run.samples[2].passed(), "the run continued after the timeout");
    let s = &run.summary;
    assert_eq!((s.total.passes, s.total.errors), (2, 1));
    // Timed latencies 1, 5, 1 → mean 7/3 s.
    assert_eq!(s.total.mean_latency, Some(Duration::from_secs(7) / 3));
    assert!((s.error_rate - 1.0 / 3.0).abs() < 1e-9);
}

/// A reply from another model is a wrong-model error, not a pass, even with the right text,
/// and its latency does not count; an unnamed reply and Ollama's `:latest` are accepted.
#[tokio::test(start_paused = true)]
async fn wrong_model_is_an_error() {
    let node = ScriptedNode::new(|_, r| {
        let model = match task_of(&r.prompt) {
            0 => Some("openai/gpt-oss-20b".to_owned()),
            1 => None,
            _ => Some(format!("{MODEL}:latest")),
        };
        Reply::Answer { text: correct(&r.prompt).into(), model, after: Duration::from_secs(1) }
    });
    let run = run(&node, &builtin(), RunOptions::default()).await;
    let wrong = &run.samples[0];
    assert_eq!(wrong.error(), Some(ErrorKind::WrongModel));
    match &wrong.outcome {
        Outcome::Failed { detail, .. } => {
            assert_eq!(detail, "answered by openai/gpt-oss-20b, not qwen/qwen3-8b")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(run.samples[1].passed() && run.samples[2].passed());
    assert_eq!(run.summary.tasks[0].tally.mean_latency, None);
    assert_eq!(run.summary.total.error_kinds.get(&ErrorKind::WrongModel), Some(&1));
}

/// Driver errors keep their class (connect, HTTP, bad response, the driver's own timeout), long
/// details are shortened for storage, and a timeout never looks fast.
#[tokio::test(start_paused = true)]
async fn driver_errors_are_classified() {
    let node = ScriptedNode::new(|call, _| {
        Reply::Fail(match call {
            0 => ChatError::Connect { detail: "connection refused".into() },
            1 => ChatError::Status { status: 503, body: "x".repeat(1000) },
            2 => ChatError::BadResponse { detail: "no choices".into() },
            _ => ChatError::Timeout { after: Duration::from_secs(60) },
        })
    });
    let run = run(&node, &builtin(), RunOptions { cycles: 2, ..RunOptions::default() }).await;
    let kinds: Vec<_> = run.samples.iter().map(|s| s.error().unwrap()).collect();
    use ErrorKind::*;
    assert_eq!(kinds, [Connect, Http, BadResponse, Timeout, Timeout, Timeout]);
    match &run.samples[1].outcome {
        Outcome::Failed { detail, .. } => {
            assert!(detail.starts_with("HTTP 503: xxx"));
            assert_eq!(detail.chars().count(), 201, "200 characters and the ellipsis");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // The driver's timeouts came back at once, yet count as the suite's whole timeout (60 s).
    assert_eq!(run.samples[3].latency, BUILTIN_SUITE.timeout.get());
    let s = &run.summary;
    assert_eq!(s.total.mean_latency, Some(Duration::from_secs(60)));
    assert_eq!((s.total.errors, s.error_rate, s.score.reliability), (6, 1.0, 0.0));
    assert_eq!(s.score.composite, 0.0);
}

/// A reasoning model's thinking is stripped before checking: the number in `<think>` does not
/// count, and the stored answer is the checked text.
#[tokio::test(start_paused = true)]
async fn thinking_is_stripped() {
    let node = ScriptedNode::new(|_, r| {
        answer(&format!("<think>\nmaybe 41? no.\n</think>\n\n{}", correct(&r.prompt)), 0.5)
    });
    let run = run(&node, &builtin(), RunOptions::default()).await;
    assert_eq!(run.summary.total.passes, 3);
    match &run.samples[0].outcome {
        Outcome::Answered { passed: true, answer } => assert_eq!(answer, "42"),
        other => panic!("expected a pass, got {other:?}"),
    }
}

/// Warm-ups that fail (a model still loading) do not count against the run.
#[tokio::test(start_paused = true)]
async fn failed_warmups_do_not_count() {
    let node = ScriptedNode::new(|call, r| {
        if call < 3 {
            Reply::Fail(ChatError::Status { status: 503, body: "Loading model".into() })
        } else {
            answer(correct(&r.prompt), 1.0)
        }
    });
    let options = RunOptions::arena(&ArenaPolicy::default(), true);
    assert_eq!((options.warmups, options.cycles, options.concurrency), (3, 2, 1));
    let run = run(&node, &builtin(), options).await;
    assert!(run.warmups.iter().all(|s| s.error() == Some(ErrorKind::Http)));
    assert_eq!(run.samples.len(), 6);
    assert_eq!((run.summary.total.passes, run.summary.total.errors), (6, 0));
}

/// With concurrency 1 requests never overlap; with 3 they do (three at a time), and samples
/// still come back in cycle-then-task order.
#[tokio::test(start_paused = true)]
async fn concurrency() {
    // Later tasks answer faster, so with overlap they finish out of order.
    let script =
        |_: usize, r: &ChatRequest| answer(correct(&r.prompt), 3.0 - task_of(&r.prompt) as f64);
    let serial = ScriptedNode::new(script);
    run(&serial, &builtin(), RunOptions { cycles: 2, ..RunOptions::default() }).await;
    assert_eq!(serial.max_in_flight.load(Ordering::SeqCst), 1);

    let parallel = ScriptedNode::new(script);
    let options = RunOptions { cycles: 2, warmups: 0, concurrency: 3 };
    let started = tokio::time::Instant::now();
    let run = run(&parallel, &builtin(), options).await;
    assert_eq!(parallel.max_in_flight.load(Ordering::SeqCst), 3);
    let counted: Vec<(u32, usize)> = run.samples.iter().map(|s| (s.cycle, s.task)).collect();
    assert_eq!(counted, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
    assert!(started.elapsed() < Duration::from_secs(12), "serial would take 12 s");
    assert_eq!(run.summary.total.passes, 6);
}

/// Cancelling stops the run: the samples finished so far are kept and summarized, no more
/// requests are sent, and the run says it was cancelled. Progress is reported per request.
#[tokio::test(start_paused = true)]
async fn cancellation_keeps_partial_results() {
    let node = ScriptedNode::new(|_, r| answer(correct(&r.prompt), 1.0));
    let cancel = CancellationToken::new();
    let mut events = Vec::new();
    let options = RunOptions { cycles: 5, warmups: 1, concurrency: 1 };
    let run = run_suite(&node, MODEL, &builtin(), options, &cancel, &mut |p| {
        events.push((p.phase, p.done, p.total));
        if p.phase == Phase::Measure && p.done == 2 {
            cancel.cancel();
        }
    })
    .await;
    assert!(run.cancelled);
    assert_eq!(run.samples.len(), 2);
    assert_eq!(run.summary.total.requests, 2);
    assert_eq!(node.requests().len(), 1 + 2, "nothing sent after the cancel");
    assert_eq!(events, [(Phase::Warmup, 1, 1), (Phase::Measure, 1, 15), (Phase::Measure, 2, 15)]);
}

/// A token cancelled before the run starts sends nothing.
#[tokio::test(start_paused = true)]
async fn cancelled_before_start() {
    let node = ScriptedNode::new(|_, r| answer(correct(&r.prompt), 1.0));
    let cancel = CancellationToken::new();
    cancel.cancel();
    let options = RunOptions { cycles: 1, warmups: 3, concurrency: 1 };
    let run = run_suite(&node, MODEL, &builtin(), options, &cancel, &mut |_| {}).await;
    assert!(run.cancelled);
    assert!(node.requests().is_empty());
    assert_eq!(run.summary.total.requests, 0);
    assert_eq!(run.summary.score.composite, 0.0);
}
