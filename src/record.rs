//! What a pass records as it goes: the `Recorder` the executor, the benchmarks and the arena
//! write through (memory rows, events, the action log), and `StoreRecorder`, the one over the
//! state store that `reconcile --once`, the daemon, `bench` and `arena` use. Below `act`, `bench`
//! and `daemon`, so each reaches it without importing another.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::plan::memory::{NodeMemory, ServiceMemory};
use crate::plan::step::{Action, Plan};
use crate::store::{
    ActionEnd, ActionId, ActionStatus, Appended, Fence, NewAction, NewEvent, StateStore, kinds,
};
use crate::time::Clock;

/// The routing table, written atomically after every pass for other tools (R5).
pub const ROUTES_FILE: &str = "routes.json";

/// What the executor needs from the outside world besides the nodes.
pub trait Recorder: Send + Sync {
    /// Persists one node's memory (durable before returning).
    fn save_node(&self, name: &str, memory: &NodeMemory);
    /// Persists one service's memory.
    fn save_service(&self, name: &str, memory: &ServiceMemory);
    /// Records an event (JSONL, store, log). `detail` never holds a secret.
    fn event(&self, node: Option<&str>, kind: &str, detail: serde_json::Value);
    /// Logs an action before it starts (the action log); returns its id, if stored.
    fn begin_action(&self, node: &str, action: &Action) -> Option<i64>;
    /// Records how a logged action ended.
    fn finish_action(&self, id: i64, outcome: &StepOutcome);
    /// Whether an action on `target` (a node, or `service/NAME`) may start now. Several
    /// replicas: only while this one holds the lease (`daemon::lease`).
    fn may_act(&self, _target: &str) -> bool {
        true
    }
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum StepOutcome {
    Done {
        took_ms: u64,
        detail: Option<String>,
    },
    Failed {
        took_ms: u64,
        error: String,
    },
    /// Not started: an earlier step of the node failed, or execution was cancelled.
    Skipped,
}

impl StepOutcome {
    pub fn is_done(&self) -> bool {
        matches!(self, StepOutcome::Done { .. })
    }
}

/// The leases a replica holds (the daemon's `daemon::lease::Leases`): the fence each write
/// carries.
pub trait Fences: Send + Sync {
    /// The fence for writes about `node`, while its lease is held and valid.
    fn fence(&self, node: &str) -> Option<Fence>;
    /// The leader's fence, while this replica is the leader and its lease is valid.
    fn leader(&self) -> Option<Fence>;
}

/// Writes `routes.json` atomically (0600) for other tools.
pub fn write_routes(state_dir: &Path, plan: &Plan, recorder: &StoreRecorder<'_>) {
    let path: PathBuf = state_dir.join(ROUTES_FILE);
    let body = crate::plan::routing::routes_document(plan.at, &plan.routing);
    let text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    if let Err(e) = crate::state_dir::write_private_atomic(&path, &text) {
        recorder.event(
            None,
            "routes.write-failed",
            json!({ "path": path.display().to_string(), "error": e.to_string() }),
        );
    }
}

/// The executor's `Recorder` over the store: memory rows, events and the action log. A store
/// error never stops the pass: it is logged (and the journal failure raised as an event once).
pub struct StoreRecorder<'a> {
    store: Arc<dyn StateStore>,
    clock: &'a dyn Clock,
    correlation: String,
    /// The daemon's leases: every write about a node carries its lease's fence (services and
    /// cluster-wide events the leader's), and a write whose lease is not held is not made.
    leases: Option<Arc<dyn Fences>>,
}

impl<'a> StoreRecorder<'a> {
    pub fn new(store: Arc<dyn StateStore>, clock: &'a dyn Clock, correlation: &str) -> Self {
        StoreRecorder { store, clock, correlation: correlation.to_owned(), leases: None }
    }

    /// Fences every write with the lease it is about (the daemon; see `daemon::lease`).
    pub fn with_leases(mut self, leases: Arc<dyn Fences>) -> Self {
        self.leases = Some(leases);
        self
    }

    /// The fence for a write about `target` (a node, `service/NAME`, or None: cluster-wide).
    /// `Err(())` when the write must not be made (lease not held); `Ok(None)`: unfenced.
    #[allow(clippy::result_unit_err)]
    fn fence_for(&self, target: Option<&str>) -> Result<Option<Fence>, ()> {
        let Some(l) = &self.leases else { return Ok(None) };
        let fence = match target {
            Some(t) if !t.starts_with("service/") => l.fence(t).or_else(|| l.leader()),
            _ => l.leader(),
        };
        match fence {
            Some(f) => Ok(Some(f)),
            None => {
                tracing::warn!(
                    target = target.unwrap_or("cluster"),
                    "lease not held: the write is not made"
                );
                Err(())
            }
        }
    }

    /// Runs a blocking store call from async code: on a multi-threaded runtime the worker is
    /// handed over (`block_in_place`), elsewhere (tests' current-thread runtime) it runs inline.
    fn call<T>(&self, f: impl FnOnce(&dyn StateStore) -> T) -> T {
        let store = &*self.store;
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| f(store))
            }
            _ => f(store),
        }
    }
}

impl Recorder for StoreRecorder<'_> {
    fn save_node(&self, name: &str, memory: &NodeMemory) {
        let saved = match self.fence_for(Some(name)) {
            Err(()) => return,
            Ok(Some(f)) if f.node() == Some(name) => self.call(|s| s.save_node_fenced(&f, memory)),
            Ok(Some(_)) => return,
            Ok(None) => self.call(|s| s.save_node(name, memory)),
        };
        if let Err(e) = saved {
            tracing::error!(node = name, error = %crate::error::chain(&e), "cannot save the node's state");
        }
    }

    fn save_service(&self, name: &str, memory: &ServiceMemory) {
        let saved = match self.fence_for(None) {
            Err(()) => return,
            Ok(Some(f)) => self.call(|s| s.save_service_fenced(&f, name, memory)),
            Ok(None) => self.call(|s| s.save_service(name, memory)),
        };
        if let Err(e) = saved {
            tracing::error!(service = name, error = %crate::error::chain(&e), "cannot save the service's state");
        }
    }

    fn event(&self, node: Option<&str>, kind: &str, detail: serde_json::Value) {
        let ev = NewEvent::new(self.clock.now(), node, kind, detail, &self.correlation);
        let appended = match self.fence_for(node) {
            Err(()) => return,
            Ok(Some(f)) => self.call(|s| s.append_event_fenced(&f, ev)),
            Ok(None) => self.call(|s| s.append_event(ev)),
        };
        match appended {
            Ok(Appended::Recorded(_)) => {}
            Ok(Appended::JournalFailed { error, newly, .. }) => {
                if newly {
                    let detail = json!({ "error": crate::error::chain(&error) });
                    let ev = NewEvent::new(
                        self.clock.now(),
                        None,
                        kinds::JOURNAL_FAILED,
                        detail,
                        &self.correlation,
                    );
                    let _ = self.call(|s| s.append_event(ev));
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::error::chain(&e), kind, "cannot store an event")
            }
        }
    }

    fn begin_action(&self, node: &str, action: &Action) -> Option<i64> {
        let new = NewAction {
            node: node.to_owned(),
            action: serde_json::to_value(action).unwrap_or_default(),
            correlation: self.correlation.clone(),
            started: self.clock.now(),
        };
        let begun = match self.fence_for(Some(node)) {
            Err(()) => return None,
            Ok(Some(f)) if f.is_leader() && !node.starts_with("service/") => return None,
            Ok(Some(f)) => self.call(|s| s.begin_action_fenced(&f, &new)),
            Ok(None) => self.call(|s| s.begin_action(&new)),
        };
        match begun {
            Ok(id) => Some(id.0),
            Err(e) => {
                tracing::error!(node, error = %crate::error::chain(&e), "cannot log the action");
                None
            }
        }
    }

    fn finish_action(&self, id: i64, outcome: &StepOutcome) {
        let status = match outcome {
            StepOutcome::Done { .. } => ActionStatus::Succeeded,
            StepOutcome::Failed { .. } => ActionStatus::Failed,
            StepOutcome::Skipped => ActionStatus::Cancelled,
        };
        let end = ActionEnd {
            status,
            detail: serde_json::to_value(outcome).unwrap_or_default(),
            ended: self.clock.now(),
        };
        if let Err(e) = self.call(|s| s.finish_action(ActionId(id), &end)) {
            tracing::error!(error = %crate::error::chain(&e), "cannot finish the logged action");
        }
    }

    fn may_act(&self, target: &str) -> bool {
        self.fence_for(Some(target)).is_ok_and(|f| {
            f.is_none_or(|f| f.node() == Some(target) || target.starts_with("service/"))
        })
    }
}
