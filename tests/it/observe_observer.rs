//! The observer over raw loopback servers: every node and service is observed, a failed
//! attempt is retried exactly once after the retry delay, `failed_attempts` says how the
//! attempts went, and a failure means "unreachable or a failure problem", not only "down".
//! (Flows against real backend APIs are tested with the simulator, in its own files.)

use crate::support::observe as observe_support;

use std::time::Duration;

use homeostat::desired::{DesiredState, Dur, HttpProbe, NodeSpec, ServiceSpec};
use homeostat::observe::snapshot::{ProbeFailure, Reach};
use homeostat::observe::{no_override, observe_all, observe_node_once};
use homeostat::time::Timestamp;
use observe_support::{Behaviour, RawServer, http, json, refused_addr, serve, serve_always};

/// Probe timeout 300 ms, retry after 20 ms, canaries off (no chat is ever sent).
fn desired() -> DesiredState {
    let mut d = DesiredState::default();
    d.cluster.probe.timeout = Dur::from_millis(300);
    d.cluster.probe.local_timeout = Dur::from_millis(300);
    d.cluster.probe.retry_delay = Dur::from_millis(20);
    d.cluster.probe.concurrency = 4;
    d.cluster.probe.canary = false;
    d
}

fn node(url: &str, models: serde_json::Value) -> NodeSpec {
    serde_json::from_value(serde_json::json!({
        "backend": "openai", "url": url, "vram": "24GiB", "models": models
    }))
    .expect("a valid node spec")
}

fn service(s: &RawServer, expected: u16) -> ServiceSpec {
    ServiceSpec {
        probe: HttpProbe { url: s.url(), expected_status: expected, timeout: None },
        restart: None,
    }
}

/// Nodes and services in one pass: dead and hanging nodes fail twice (one retry each), a
/// healthy node and service are probed once, a flapping service that recovers on the retry
/// ends at 0 failed attempts, an always-failing one at 2, a wrong status is `Http`.
#[tokio::test]
async fn one_pass_retries_each_failure_once() {
    let hung = serve_always(Behaviour::Hang).await;
    let healthy =
        serve_always(json(200, r#"{"object":"list","data":[{"id":"m","max_model_len":4096}]}"#))
            .await;
    let dead = refused_addr().await;
    let ok = serve_always(json(200, "{}")).await;
    let flaky = serve(|i| if i == 0 { json(503, "{}") } else { json(200, "{}") }).await;
    let broken = serve_always(json(500, "{}")).await;
    let wrong = serve_always(json(200, "{}")).await;

    let mut d = desired();
    let mut dead_node = node(&format!("http://{dead}"), serde_json::json!([]));
    dead_node.telemetry = Some(homeostat::desired::TelemetrySource {
        prometheus: vec![],
        command: Some(vec!["printf".into(), "77, 1, 2\\n".into()]),
    });
    d.nodes.insert("dead".into(), dead_node);
    d.nodes.insert("hung".into(), node(&hung.url(), serde_json::json!([])));
    d.nodes.insert(
        "healthy".into(),
        node(&healthy.url(), serde_json::json!([{"name": "m", "size": "1GiB"}])),
    );
    d.services.insert("ok".into(), service(&ok, 200));
    d.services.insert("flaky".into(), service(&flaky, 200));
    d.services.insert("broken".into(), service(&broken, 200));
    d.services.insert("wrong".into(), service(&wrong, 204));

    let obs = observe_all(&d, &http(1 << 20), &no_override, &|| Timestamp(1234)).await;
    assert_eq!(obs.at, Timestamp(1234));

    let n = &obs.nodes["dead"];
    assert_eq!(n.reach, Reach::Down { cause: ProbeFailure::Refused });
    assert_eq!(n.failed_attempts, 2);
    assert_eq!(n.telemetry.gpu_temp_c, Some(77.0), "telemetry is read even when the node is down");

    let n = &obs.nodes["hung"];
    assert_eq!(n.reach, Reach::Down { cause: ProbeFailure::Timeout });
    assert_eq!(n.failed_attempts, 2);
    assert_eq!(hung.connections(), 2, "one attempt and one retry");

    let n = &obs.nodes["healthy"];
    assert_eq!(n.reach, Reach::Up);
    assert_eq!(n.failed_attempts, 0);
    assert_eq!(n.instances.len(), 1);
    assert_eq!(n.instances[0].model, "m");
    assert_eq!(n.instances[0].context_length, Some(4096));
    assert_eq!(healthy.connections(), 1, "a healthy node is not retried");

    let s = &obs.services["ok"];
    assert_eq!((s.reach.clone(), s.failed_attempts), (Reach::Up, 0));
    assert_eq!(ok.connections(), 1);
    let s = &obs.services["flaky"];
    assert_eq!((s.reach.clone(), s.failed_attempts), (Reach::Up, 0));
    assert_eq!(flaky.connections(), 2);
    let s = &obs.services["broken"];
    assert_eq!(
        (s.reach.clone(), s.failed_attempts),
        (Reach::Down { cause: ProbeFailure::Http { status: 500 } }, 2)
    );
    assert_eq!(broken.connections(), 2);
    let s = &obs.services["wrong"];
    assert_eq!(s.reach, Reach::Down { cause: ProbeFailure::Http { status: 200 } });
}

/// A reachable node whose resident model is missing has failed (a problem, not a transport
/// error): it is retried, and stays `Up` with 2 failed attempts.
#[tokio::test]
async fn missing_resident_model_is_a_failed_attempt() {
    let empty = serve_always(json(200, r#"{"object":"list","data":[]}"#)).await;
    let mut d = desired();
    d.nodes
        .insert("n".into(), node(&empty.url(), serde_json::json!([{"name": "m", "size": "1GiB"}])));
    let obs = observe_all(&d, &http(1 << 20), &no_override, &|| Timestamp(0)).await;
    let n = &obs.nodes["n"];
    assert_eq!(n.reach, Reach::Up);
    assert_eq!(n.failed_attempts, 2);
    assert_eq!(empty.connections(), 2);
}

/// A single attempt (what the daemon may run per node) reports 1 failed attempt, no retry.
#[tokio::test]
async fn single_attempt_counts_one() {
    let hung = serve_always(Behaviour::Hang).await;
    let d = desired();
    let spec = node(&hung.url(), serde_json::json!([]));
    let obs = observe_node_once(&d, "n", &spec, &http(1 << 20), &no_override).await;
    assert_eq!(obs.reach, Reach::Down { cause: ProbeFailure::Timeout });
    assert_eq!(obs.failed_attempts, 1);
    assert_eq!(hung.connections(), 1);
}

/// The per-node timeout applies: a node with its own `probeTimeout` is cut at it, whatever the
/// cluster's timeout.
#[tokio::test]
async fn node_timeout_overrides_the_cluster() {
    let hung = serve_always(Behaviour::Hang).await;
    let mut d = desired();
    d.cluster.probe.local_timeout = Dur::from_millis(60_000);
    let mut spec = node(&hung.url(), serde_json::json!([]));
    spec.probe_timeout = Some(Dur(Duration::from_millis(100)));
    // Were the cluster's minute used, this would not finish within the guard.
    let obs = tokio::time::timeout(
        Duration::from_secs(20),
        observe_node_once(&d, "n", &spec, &http(1 << 20), &no_override),
    )
    .await
    .expect("the node's own 100 ms timeout applies");
    assert_eq!(obs.reach, Reach::Down { cause: ProbeFailure::Timeout });
}
