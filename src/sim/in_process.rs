//! The simulator's pure node model reached in-process (`observe::in_process`): what the
//! trajectory harness (`crate::scenario`) runs the real observer, executor and pass against.
//!
//! No sockets and no wall clock: time is the registry's [`Clock`] (the harness's virtual clock,
//! tokio's paused time), and a hanging node or a wedged model costs its timeout in that time.
//! Request faults act as the HTTP server applies them (hang → timeout, slow → delay, http-500,
//! malformed/truncated, oversized); the model's own state does the rest (`NodeModel`).
//!
//! Commands: `["homeostat-sim", "restart", NODE]` restarts a node of the registry (a manifest's
//! restart command in a scenario), `["homeostat-sim", "hang", NODE]` never returns; anything
//! else runs as a real process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::answers::AnswerTable;
use super::config::{NodeConfig, SimBackend};
use super::fault::FaultKind;
use super::model::{self, LoadOrigin, LoadRequest, LoadStatus, NodeModel};
use crate::command::CommandOutput;
use crate::desired::Backend;
use crate::observe::driver::{self, ChatReply, DriverError, KeepAlive, LoadOutcome, LoadSettings};
use crate::observe::in_process::{InProcessNode, InProcessNodes};
use crate::observe::snapshot::{Canary, InstanceState, NodeObservation, ProbeFailure};
use crate::time::{Clock, Timestamp};

/// The argv of a simulated restart: `homeostat-sim restart NODE`.
pub const RESTART_COMMAND: &str = "homeostat-sim";

/// Nodes by URL, sharing a clock and an answer table.
#[derive(Debug)]
pub struct ModelNodes {
    by_url: BTreeMap<String, Arc<ModelNode>>,
    by_name: BTreeMap<String, Arc<ModelNode>>,
}

/// One simulated node.
pub struct ModelNode {
    name: String,
    backend: Backend,
    clock: Arc<dyn Clock>,
    answers: Arc<AnswerTable>,
    /// A std mutex: never held across an `.await`.
    model: Mutex<NodeModel>,
}

impl ModelNodes {
    /// A node per `(url, config)`, each starting at the clock's now.
    pub fn new(
        nodes: impl IntoIterator<Item = (String, NodeConfig)>,
        clock: Arc<dyn Clock>,
        answers: AnswerTable,
    ) -> ModelNodes {
        let answers = Arc::new(answers);
        let mut by_url = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for (url, cfg) in nodes {
            let node = Arc::new(ModelNode {
                name: cfg.name.clone(),
                backend: backend_of(cfg.backend),
                clock: clock.clone(),
                answers: answers.clone(),
                model: Mutex::new(NodeModel::new(&cfg, clock.now())),
            });
            by_url.insert(url.trim_end_matches('/').to_owned(), node.clone());
            by_name.insert(cfg.name.clone(), node);
        }
        ModelNodes { by_url, by_name }
    }

    /// The node named `name` (its sim name).
    pub fn get(&self, name: &str) -> Option<&Arc<ModelNode>> {
        self.by_name.get(name)
    }
}

impl InProcessNodes for ModelNodes {
    fn node(&self, url: &str) -> Option<Arc<dyn InProcessNode>> {
        self.by_url.get(url.trim_end_matches('/')).map(|n| n.clone() as Arc<dyn InProcessNode>)
    }

    fn command<'a>(&'a self, argv: &'a [String]) -> Option<BoxFuture<'a, CommandOutput>> {
        let [prog, verb, name] = argv else { return None };
        if prog != RESTART_COMMAND {
            return None;
        }
        if verb == "hang" {
            // A restart command that never returns (the executor's timeout ends it).
            return Some(futures::future::pending().boxed());
        }
        if verb != "restart" {
            return None;
        }
        let node = self.by_name.get(name.as_str())?.clone();
        Some(
            async move {
                node.with(|m, now| m.restart(None, now));
                CommandOutput {
                    code: Some(0),
                    signal: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    took: Duration::ZERO,
                }
            }
            .boxed(),
        )
    }
}

fn backend_of(b: SimBackend) -> Backend {
    match b {
        SimBackend::Lmstudio => Backend::Lmstudio,
        SimBackend::Ollama => Backend::Ollama,
        SimBackend::Vllm => Backend::Vllm,
        SimBackend::Llamacpp => Backend::Llamacpp,
    }
}

impl std::fmt::Debug for ModelNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelNode").field("name", &self.name).finish_non_exhaustive()
    }
}

/// What the request faults do to one request.
enum Mangled {
    /// Answered normally after `delay`.
    Clean { delay: Duration },
    /// Failed with this cause after `delay`.
    Failed { delay: Duration, failure: ProbeFailure },
}

impl ModelNode {
    fn lock(&self) -> MutexGuard<'_, NodeModel> {
        // A panic while holding the lock leaves the model as it was; keep using it.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the model ticked to now.
    pub fn with<R>(&self, f: impl FnOnce(&mut NodeModel, Timestamp) -> R) -> R {
        let now = self.clock.now();
        let mut m = self.lock();
        m.tick(now);
        f(&mut m, now)
    }

    /// Applies the request faults to a request for `path` (and `model`), as the HTTP server
    /// does; a refused connection when the process does not listen.
    fn request(&self, path: &str, model: Option<&str>, timeout: Duration) -> Mangled {
        self.with(|m, now| {
            if !m.is_listening() {
                return Mangled::Failed { delay: Duration::ZERO, failure: ProbeFailure::Refused };
            }
            let faults = m.take_request_faults(path, model, now);
            let delay: Duration = faults
                .iter()
                .filter_map(|(_, k)| match k {
                    FaultKind::Slow { delay } => Some(delay.get()),
                    _ => None,
                })
                .sum();
            let timed_out = Mangled::Failed { delay: timeout, failure: ProbeFailure::Timeout };
            if delay >= timeout || faults.iter().any(|(_, k)| matches!(k, FaultKind::Hang)) {
                return timed_out;
            }
            let failure = faults.iter().find_map(|(_, k)| match k {
                FaultKind::Http500 => Some(ProbeFailure::Http { status: 500 }),
                FaultKind::Malformed | FaultKind::Truncated => {
                    Some(ProbeFailure::Malformed { detail: "simulated".into() })
                }
                FaultKind::Oversized { .. } => Some(ProbeFailure::TooLarge { cap: 0 }),
                _ => None,
            });
            match failure {
                Some(failure) => Mangled::Failed { delay, failure },
                None => Mangled::Clean { delay },
            }
        })
    }

    /// Waits `d` on the registry's clock (tokio's time: paused in the harness).
    async fn wait(d: Duration) {
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// One chat, the canary's or a benchmark's.
    async fn answer(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<ChatReply, DriverError> {
        let op = "chat";
        match self.request("/v1/chat/completions", Some(model), timeout) {
            Mangled::Failed { delay, failure } => {
                Self::wait(delay).await;
                return Err(DriverError::Request { op, failure });
            }
            Mangled::Clean { delay } => Self::wait(delay).await,
        }
        let answered = self.with(|m, now| {
            let id = m.loaded_instance(model).map(|i| i.id.clone())?;
            let a = m.answer(&id, prompt, Some(max_tokens), &self.answers, now);
            if let Some(a) = &a {
                m.touch(&a.instance_id, None, now);
            }
            a
        });
        let Some(a) = answered else {
            return Err(DriverError::Rejected {
                op,
                status: 404,
                message: format!("model {model} is not loaded"),
            });
        };
        match a.wedged {
            Some(super::WedgeMode::Hang) => {
                Self::wait(timeout).await;
                Err(DriverError::Request { op, failure: ProbeFailure::Timeout })
            }
            Some(super::WedgeMode::Error) => {
                Err(DriverError::Rejected { op, status: 500, message: "model wedged".into() })
            }
            None => {
                let latency = a.total();
                Self::wait(latency.min(timeout)).await;
                if latency > timeout {
                    return Err(DriverError::Request { op, failure: ProbeFailure::Timeout });
                }
                Ok(ChatReply {
                    text: a.text,
                    model_answered: Some(a.model),
                    latency,
                    completion_tokens: Some(a.completion_tokens),
                    tokens_per_second: None,
                })
            }
        }
    }
}

impl InProcessNode for ModelNode {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn observe<'a>(
        &'a self,
        canaries: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, NodeObservation> {
        async move {
            match self.request("/", None, timeout) {
                Mangled::Failed { delay, failure } => {
                    Self::wait(delay).await;
                    return NodeObservation::down(failure, 1);
                }
                Mangled::Clean { delay } => Self::wait(delay).await,
            }
            let mut obs = self.with(|m, _| m.to_observation());
            if !obs.reach.is_up() {
                return obs;
            }
            let loaded: Vec<String> = canaries
                .iter()
                .filter(|c| {
                    obs.instances.iter().any(|i| &i.model == *c && i.state == InstanceState::Loaded)
                })
                .cloned()
                .collect();
            for model in loaded {
                let canary = match self.answer(&model, driver::CANARY_PROMPT, 1, timeout).await {
                    Ok(r) => Canary::Ok { latency_ms: driver::millis(r.latency) },
                    Err(e) => Canary::Failed { cause: e.to_probe_failure() },
                };
                obs.canaries.insert(model, canary);
            }
            obs
        }
        .boxed()
    }

    fn load<'a>(
        &'a self,
        settings: &'a LoadSettings,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<LoadOutcome, DriverError>> {
        async move {
            let op = "load";
            let name = settings.model.clone();
            match self.request("/load", Some(&name), timeout) {
                Mangled::Failed { delay, failure } => {
                    Self::wait(delay).await;
                    return Err(DriverError::Request { op, failure });
                }
                Mangled::Clean { delay } => Self::wait(delay).await,
            }
            let started = self.clock.now();
            let req = LoadRequest {
                model: name.clone(),
                settings: model::LoadSettings {
                    context_length: settings.context_length,
                    eval_batch_size: settings.eval_batch_size,
                    flash_attention: settings.flash_attention,
                    num_experts: settings.num_experts,
                    offload_kv_cache_to_gpu: settings.offload_kv_cache_to_gpu,
                },
                origin: LoadOrigin::Explicit,
                keep_alive: match settings.keep_alive {
                    KeepAlive::Pinned => Some(model::KeepAlive::Forever),
                    _ => None,
                },
            };
            let begun = self.with(|m, now| {
                if let Some(i) = m.loaded_instance(&name) {
                    return Ok(Err(i.clone()));
                }
                m.begin_load(req, now).map(Ok)
            });
            let seq = match begun {
                Ok(Ok(seq)) => seq,
                Ok(Err(already)) => {
                    return Ok(LoadOutcome {
                        instance_id: already.id,
                        context_length: Some(already.context_length),
                        took: Duration::ZERO,
                        ignored: Vec::new(),
                    });
                }
                Err(model::LoadError::NotFound(model)) => {
                    return Err(DriverError::ModelNotFound { model });
                }
                Err(e) => {
                    return Err(DriverError::Rejected { op, status: 400, message: e.to_string() });
                }
            };
            loop {
                let (status, next) = self.with(|m, _| (m.load_status(seq), m.next_change()));
                let now = self.clock.now();
                match status {
                    LoadStatus::Loaded(i) => {
                        return Ok(LoadOutcome {
                            instance_id: i.id,
                            context_length: Some(i.context_length),
                            took: now.since(started),
                            ignored: Vec::new(),
                        });
                    }
                    LoadStatus::Failed(f) => {
                        return Err(match f.reason {
                            model::FailureReason::OutOfMemory { need, free } => {
                                DriverError::OutOfMemory {
                                    model: name,
                                    message: format!("out of memory: need {need}, free {free}"),
                                }
                            }
                            _ => DriverError::LoadFailed {
                                model: name,
                                message: "load failed".into(),
                            },
                        });
                    }
                    LoadStatus::Gone => {
                        return Err(DriverError::LoadFailed {
                            model: name,
                            message: "the instance went away while loading".into(),
                        });
                    }
                    LoadStatus::Loading => {}
                }
                let waited = now.since(started);
                if waited >= timeout {
                    return Err(DriverError::LoadTimedOut { model: name, after: waited });
                }
                let left = timeout - waited;
                // Until the model changes (load done), at most the time left, at least 1 ms.
                let step = next
                    .filter(|t| *t > now)
                    .map_or(left, |t| t.since(now))
                    .min(left)
                    .max(Duration::from_millis(1));
                Self::wait(step).await;
            }
        }
        .boxed()
    }

    fn unload<'a>(
        &'a self,
        model: &'a str,
        instance_id: &'a str,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            let op = "unload";
            match self.request("/unload", Some(model), Duration::from_secs(30)) {
                Mangled::Failed { delay, failure } => {
                    Self::wait(delay).await;
                    return Err(DriverError::Request { op, failure });
                }
                Mangled::Clean { delay } => Self::wait(delay).await,
            }
            let id = if instance_id.is_empty() { model } else { instance_id };
            self.with(|m, now| m.unload(id, now)).map(|_| ()).map_err(|e| DriverError::Rejected {
                op,
                status: 404,
                message: e.to_string(),
            })
        }
        .boxed()
    }

    fn chat<'a>(
        &'a self,
        model: &'a str,
        prompt: &'a str,
        max_tokens: u32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ChatReply, DriverError>> {
        self.answer(model, prompt, max_tokens, timeout).boxed()
    }

    fn pull<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<(), DriverError>> {
        async move {
            if self.with(|m, _| m.finish_pull(model)) {
                Ok(())
            } else {
                Err(DriverError::PullFailed {
                    model: model.to_owned(),
                    message: "not in the registry".into(),
                })
            }
        }
        .boxed()
    }

    fn same_model(&self, a: &str, b: &str) -> bool {
        model::same_model(a, b)
    }
}
