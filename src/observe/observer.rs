//! The observer: probes every node and service of the desired state, concurrently and bounded,
//! and returns one `Observation`.
//!
//! - **Concurrency.** All nodes and services are in flight at once, but at most
//!   `cluster.probe.concurrency` *attempts* run at a time (a semaphore). A permit is held for
//!   one attempt only, never across the retry delay, so waiting nodes do not starve the others.
//! - **Timeouts.** Every request of a node has the node's timeout
//!   (`DesiredState::probe_timeout`); a node that hangs stops at its first request, so it costs
//!   its own timeout, not the pass's.
//! - **One retry.** An attempt has *failed* when the node is unreachable, or when
//!   `observe::diagnose::node_problems` finds a failure in it (a resident model missing, a failed
//!   canary, ...). A failed attempt is retried once after `cluster.probe.retry_delay`, within the
//!   same observation; the retry's result is what the observation keeps, and
//!   `failed_attempts` says how it went (see `NodeObservation::failed_attempts`: 0 healthy at
//!   the end, 2 failed twice; 1 only from `observe_node_once`).
//! - **Telemetry** is read once per node observation, alongside the first attempt; it is never
//!   a reason to retry.
//!
//! The observer reads no clock itself except through tokio timers: the time stamp of the
//! observation comes from the `now` the caller passes, so the daemon's clock stays in one place.
//! It spawns no tasks: every probe is a future polled by the caller's task, so the caller decides
//! where observing runs (and `observe_node` can be spawned per node by the daemon).

use std::collections::BTreeMap;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Semaphore;

use crate::desired::{DesiredState, NodeSpec, ServiceSpec};
use crate::observe::diagnose::node_problems;
use crate::observe::driver::NodeClient;
use crate::observe::http::{self, Http};
use crate::observe::service::probe_service;
use crate::observe::snapshot::{NodeObservation, Observation, ProbeFailure, ServiceObservation};
use crate::observe::telemetry;
use crate::time::Timestamp;

/// The context length a `(node, model)` is expected to run with when it differs from the
/// manifest (after an out-of-memory retry halved it), so that is not mistaken for drift. The
/// planner passes its remembered overrides; `no_override` when there are none.
pub type ContextOverride<'a> = &'a (dyn Fn(&str, &str) -> Option<u32> + Sync);

/// No context overrides.
pub fn no_override(_node: &str, _model: &str) -> Option<u32> {
    None
}

/// Observes every node and service. Never fails: what could not be reached is in the
/// observation as `Reach::Down` with its cause. `now` stamps the observation when it is done.
pub async fn observe_all(
    desired: &DesiredState,
    http: &Http,
    overrides: ContextOverride<'_>,
    now: &(dyn Fn() -> Timestamp + Sync),
) -> Observation {
    let permits = Semaphore::new(desired.cluster.probe.concurrency.max(1) as usize);
    let permits = &permits;
    enum Done {
        Node(String, Box<NodeObservation>),
        Service(String, ServiceObservation),
    }
    let mut work = FuturesUnordered::new();
    for (name, spec) in &desired.nodes {
        work.push(futures::future::Either::Left(async move {
            let obs = observe_node_gated(desired, name, spec, http, overrides, Some(permits)).await;
            Done::Node(name.clone(), Box::new(obs))
        }));
    }
    for (name, spec) in &desired.services {
        work.push(futures::future::Either::Right(async move {
            let obs = observe_service_gated(desired, spec, http, Some(permits)).await;
            Done::Service(name.clone(), obs)
        }));
    }
    let mut nodes = BTreeMap::new();
    let mut services = BTreeMap::new();
    while let Some(done) = work.next().await {
        match done {
            Done::Node(n, o) => {
                nodes.insert(n, *o);
            }
            Done::Service(n, o) => {
                services.insert(n, o);
            }
        }
    }
    Observation { at: now(), nodes, services }
}

/// Observes one node, with the retry: what the daemon calls per node.
pub async fn observe_node(
    desired: &DesiredState,
    name: &str,
    spec: &NodeSpec,
    http: &Http,
    overrides: ContextOverride<'_>,
) -> NodeObservation {
    observe_node_gated(desired, name, spec, http, overrides, None).await
}

/// Observes one node with a single attempt (no retry): `failed_attempts` is 0 or 1.
pub async fn observe_node_once(
    desired: &DesiredState,
    name: &str,
    spec: &NodeSpec,
    http: &Http,
    overrides: ContextOverride<'_>,
) -> NodeObservation {
    let client = match client_for(desired, spec, http) {
        Ok(c) => c,
        Err(obs) => return *obs,
    };
    let canaries = canary_models(desired, spec);
    let (mut obs, telemetry) =
        tokio::join!(client.observe(&canaries), read_telemetry(desired, spec, http));
    keep_telemetry(&mut obs, spec, telemetry);
    obs.failed_attempts = u32::from(attempt_failed(name, spec, &obs, overrides));
    obs
}

/// Observes one service, with the retry.
pub async fn observe_service(
    desired: &DesiredState,
    spec: &ServiceSpec,
    http: &Http,
) -> ServiceObservation {
    observe_service_gated(desired, spec, http, None).await
}

/// Whether one attempt at `name` failed: unreachable, or a problem that counts as a failure.
pub fn attempt_failed(
    name: &str,
    spec: &NodeSpec,
    obs: &NodeObservation,
    overrides: ContextOverride<'_>,
) -> bool {
    !obs.reach.is_up()
        || node_problems(spec, obs, &|model| overrides(name, model)).iter().any(|p| p.is_failure())
}

/// The models whose canary is run: the resident ones, when `probe.canary` is on.
pub fn canary_models(desired: &DesiredState, spec: &NodeSpec) -> Vec<String> {
    if !desired.cluster.probe.canary {
        return Vec::new();
    }
    spec.models
        .iter()
        .enumerate()
        .filter(|(i, _)| spec.is_resident(*i))
        .map(|(_, m)| m.name.clone())
        .collect()
}

fn client_for(
    desired: &DesiredState,
    spec: &NodeSpec,
    http: &Http,
) -> Result<NodeClient, Box<NodeObservation>> {
    NodeClient::new(spec, http, desired.probe_timeout(spec)).map_err(|e| {
        // The token could not be resolved: the node cannot be probed as configured. The error
        // names the reference (variable or file), never a value.
        Box::new(NodeObservation::down(ProbeFailure::Config { detail: http::error_chain(&e) }, 1))
    })
}

/// The node's telemetry source's reading, when the manifest names one; else what the client
/// itself observed (nothing over HTTP; the model's own gauges for an in-process node).
fn keep_telemetry(
    obs: &mut NodeObservation,
    spec: &NodeSpec,
    telemetry: crate::observe::snapshot::Telemetry,
) {
    if spec.telemetry.is_some() {
        obs.telemetry = telemetry;
    }
}

async fn read_telemetry(
    desired: &DesiredState,
    spec: &NodeSpec,
    http: &Http,
) -> crate::observe::snapshot::Telemetry {
    match &spec.telemetry {
        Some(source) => telemetry::read(source, http, desired.probe_timeout(spec)).await,
        None => Default::default(),
    }
}

async fn observe_node_gated(
    desired: &DesiredState,
    name: &str,
    spec: &NodeSpec,
    http: &Http,
    overrides: ContextOverride<'_>,
    permits: Option<&Semaphore>,
) -> NodeObservation {
    let client = match client_for(desired, spec, http) {
        Ok(c) => c,
        Err(obs) => return *obs,
    };
    let canaries = canary_models(desired, spec);
    let (mut first, telemetry) = {
        let _permit = acquire(permits).await;
        tokio::join!(client.observe(&canaries), read_telemetry(desired, spec, http))
    };
    if !attempt_failed(name, spec, &first, overrides) {
        first.failed_attempts = 0;
        keep_telemetry(&mut first, spec, telemetry);
        return first;
    }
    tracing::debug!(node = name, reach = ?first.reach, "probe failed; retrying once after the retry delay");
    tokio::time::sleep(desired.cluster.probe.retry_delay.get()).await;
    let mut second = {
        let _permit = acquire(permits).await;
        client.observe(&canaries).await
    };
    second.failed_attempts = if attempt_failed(name, spec, &second, overrides) { 2 } else { 0 };
    keep_telemetry(&mut second, spec, telemetry);
    tracing::debug!(node = name, reach = ?second.reach, failed_attempts = second.failed_attempts, "retry done");
    second
}

async fn observe_service_gated(
    desired: &DesiredState,
    spec: &ServiceSpec,
    http: &Http,
    permits: Option<&Semaphore>,
) -> ServiceObservation {
    let timeout = desired.cluster.probe.timeout.get();
    let first = {
        let _permit = acquire(permits).await;
        probe_service(spec, http, timeout).await
    };
    if first.reach.is_up() {
        return first;
    }
    tokio::time::sleep(desired.cluster.probe.retry_delay.get()).await;
    let mut second = {
        let _permit = acquire(permits).await;
        probe_service(spec, http, timeout).await
    };
    second.failed_attempts = if second.reach.is_up() { 0 } else { 2 };
    second
}

async fn acquire(permits: Option<&Semaphore>) -> Option<tokio::sync::SemaphorePermit<'_>> {
    match permits {
        // The semaphore is never closed, so acquiring only fails if it were; then run unbounded.
        Some(s) => s.acquire().await.ok(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The observer's futures are `Send`, so the daemon can spawn `observe_node` per node.
    #[test]
    fn futures_are_send() {
        let desired = DesiredState::default();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = Http::new(&crate::observe::http::HttpConfig::default()).unwrap();
        let now = || Timestamp(0);
        let all = observe_all(&desired, &http, &no_override, &now);
        assert_send(&all);
        let spec: NodeSpec = serde_json::from_value(serde_json::json!({
            "backend": "ollama", "url": "http://127.0.0.1:9", "vram": "1GiB"
        }))
        .unwrap();
        let one = observe_node(&desired, "n", &spec, &http, &no_override);
        assert_send(&one);
    }

    /// Canaries are sent to resident models only, and not at all when disabled.
    #[test]
    fn canaries_for_resident_models() {
        let mut desired = DesiredState::default();
        let spec: NodeSpec = serde_json::from_value(serde_json::json!({
            "backend": "ollama", "url": "http://h", "vram": "24GiB",
            "models": [
                {"name": "a", "size": "1GiB"},
                {"name": "b", "size": "1GiB"},
                {"name": "c", "size": "1GiB", "residency": "resident"}
            ]
        }))
        .unwrap();
        assert_eq!(canary_models(&desired, &spec), ["a", "c"]);
        desired.cluster.probe.canary = false;
        assert!(canary_models(&desired, &spec).is_empty());
    }
}
