//! The read side of the API and the operator's levers: `/api/v1/status`, `/api/v1/events`
//! paging, `/api/v1/routes` (the same document as `routes.json`), cordon/uncordon changing the
//! routing table at once, heartbeats recorded in the node's state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use std::time::Duration;

use daemon_util::Daemon;
use harness::{FAST_CLUSTER, Harness};
use serde_json::{Value, json};

const SIM: &str = "
nodes:
  - name: a
    backend: ollama
    vram: 24GiB
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
  - name: b
    backend: ollama
    vram: 24GiB
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
";

fn node(name: &str, url: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: {name} }}
spec:
  backend: ollama
  url: {url}
  vram: 24GiB
  models:
    - {{ name: llama3.2:3b, size: 2GiB }}
{extra}"
    )
}

const ROUTING: &str = "---
apiVersion: homeostat.dev/v1
kind: Routing
metadata: { name: routes }
spec:
  categories:
    fast: [{ node: a, weight: 2 }, { node: b, weight: 1 }]
  remotes:
    - { name: cloud, url: 'https://api.example.com/v1', weight: 1.2 }
";

async fn start(h: &Harness) -> Daemon {
    let token = daemon_util::token_file(h.state_dir().parent().unwrap(), "tok");
    let cluster =
        format!("{FAST_CLUSTER}  api: {{ tokenFrom: {{ file: {} }} }}\n", token.display());
    h.write_manifests(&format!(
        "{cluster}{}{}{ROUTING}",
        node("a", &h.url("a"), ""),
        node("b", &h.url("b"), "  heartbeat: { timeout: 1h }\n"),
    ));
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    d
}

fn targets(routes: &Value, category: &str) -> Vec<String> {
    routes["categories"][category]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn routes_file(h: &Harness) -> Value {
    serde_json::from_slice(&std::fs::read(h.state_dir().join("routes.json")).unwrap()).unwrap()
}

/// Cordoning a node takes it out of the routing table at once (API and routes.json agree, the
/// reason is shown), cordoning both falls back to the remote provider, uncordoning restores
/// the table; each lever is an event with the operator's reason, and the status shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon_change_the_routing_table() {
    let h = Harness::start(SIM, |_| String::new()).await;
    let d = start(&h).await;
    let (code, routes) = d.get("/api/v1/routes").await;
    assert_eq!(code, 200, "{routes}");
    assert_eq!(routes["kind"], "Routes");
    assert_eq!(targets(&routes, "fast"), ["a", "b"]);
    // routes.json is written by a background task: wait for it to catch up.
    let wait_file = |want: Vec<&'static str>| {
        let h = &h;
        async move {
            let start = std::time::Instant::now();
            loop {
                if h.state_dir().join("routes.json").exists()
                    && targets(&routes_file(h), "fast") == want
                {
                    return routes_file(h);
                }
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "routes.json never showed {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_file(vec!["a", "b"]).await;

    let (code, body) =
        d.post("/api/v1/nodes/a/cordon", Some("tok"), Some(json!({"reason": "disk swap"}))).await;
    assert_eq!((code, body), (200, json!({"node": "a", "cordoned": true, "reasons": ["manual"]})));
    let (_, routes) = d.get("/api/v1/routes").await;
    assert_eq!(targets(&routes, "fast"), ["b"], "at once, not at the next pass");
    assert_eq!(
        routes["categories"]["fast"]["excluded"],
        json!([{"node": "a", "why": "cordoned (manual)"}])
    );
    let file = wait_file(vec!["b"]).await;
    assert_eq!(file["categories"], routes["categories"], "routes.json = /api/v1/routes");

    d.post("/api/v1/nodes/b/cordon", Some("tok"), None).await;
    let (_, routes) = d.get("/api/v1/routes").await;
    assert_eq!(targets(&routes, "fast"), ["cloud"]);
    assert_eq!(routes["categories"]["fast"]["fallback"], true);
    let s = d.status().await;
    assert_eq!(s["nodes"]["a"]["cordoned"], true);
    assert_eq!(s["nodes"]["a"]["manualCordon"], true);
    assert!(
        s["alerts"].as_array().unwrap().iter().any(|a| a["key"] == "route/fast/all-local-down"),
        "{s}"
    );

    for n in ["a", "b"] {
        let (code, body) = d.post(&format!("/api/v1/nodes/{n}/uncordon"), Some("tok"), None).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["cordoned"], false);
    }
    let (_, routes) = d.get("/api/v1/routes").await;
    assert_eq!(targets(&routes, "fast"), ["a", "b"]);
    let s = d.status().await;
    assert!(s["nodes"]["a"].get("manualCordon").is_none(), "uncordon clears the override: {s}");
    let cordoned = d.events_of_kind("node.cordoned").await;
    assert_eq!(cordoned[0]["node"], "a");
    assert_eq!(cordoned[0]["detail"], json!({"source": "api", "reason": "disk swap"}));
    assert_eq!(d.events_of_kind("node.uncordoned").await.len(), 2);
    d.stop().await.unwrap();
}

/// A heartbeat is recorded in the node's state and shown in the status with the node's timeout;
/// the status describes the daemon, the manifests and each node's task; events page with
/// `since` and `limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_heartbeats_and_event_paging() {
    let h = Harness::start(SIM, |_| String::new()).await;
    let d = start(&h).await;
    let (code, hb) =
        d.post("/api/v1/nodes/b/heartbeat", Some("tok"), Some(json!({"node": "b"}))).await;
    assert_eq!(code, 200, "{hb}");
    assert_eq!(hb["timeoutMs"], 3_600_000);
    let s = d.status().await;
    assert_eq!(s["apiVersion"], "homeostat.dev/v1");
    assert_eq!(s["daemon"]["phase"], "running");
    assert_eq!(s["daemon"]["ready"], true);
    assert_eq!(s["daemon"]["listen"], d.addr.as_str());
    assert_eq!(s["manifests"]["generation"], 1);
    assert_eq!(s["manifests"]["hash"].as_str().unwrap().len(), 64);
    assert!(s["manifests"]["summary"].as_str().unwrap().contains("2 Node"));
    let b = &s["nodes"]["b"];
    assert_eq!(b["heartbeat"], json!({"timeoutMs": 3_600_000, "last": hb["recordedAt"]}));
    assert!(s["nodes"]["a"].get("heartbeat").is_none());
    assert_eq!(b["backend"], "ollama");
    assert_eq!(b["observed"]["reachable"], true);
    assert_eq!(b["observed"]["loaded"], json!(["llama3.2:3b"]));
    assert!(b["pass"]["iteration"].as_u64().unwrap() >= 1);
    assert!(["startup", "timer"].contains(&b["pass"]["last"]["activation"].as_str().unwrap()));
    assert_eq!(b["pass"]["last"]["outcome"], "in-sync");

    let (code, all) = d.get("/api/v1/events?limit=1000").await;
    assert_eq!(code, 200);
    let all = all["events"].as_array().unwrap().clone();
    assert!(all.len() >= 3, "{all:?}");
    let (_, page) = d.get("/api/v1/events?since=0&limit=2").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["events"][0], all[0]);
    let next = page["next"].as_i64().unwrap();
    assert_eq!(next, all[1]["id"].as_i64().unwrap());
    let (_, rest) = d.get(&format!("/api/v1/events?since={next}&limit=1000")).await;
    assert_eq!(rest["events"][0], all[2]);
    let last = all.last().unwrap()["id"].as_i64().unwrap();
    let (_, none) = d.get(&format!("/api/v1/events?since={}", last + 1000)).await;
    assert_eq!(none, json!({"events": [], "next": last + 1000}));
    assert_eq!(all[0]["kind"], "daemon.started");
    d.stop().await.unwrap();
}
