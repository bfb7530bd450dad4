//! Hot reload: manifests edited on disk while the daemon runs take effect (written in place,
//! or by write-temp-then-rename as many editors save); a broken edit is refused and the last
//! good set keeps running, with the error visible in `/api/v1/status` and the events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use std::time::Duration;

use daemon_util::{Daemon, write_by_rename};
use harness::Harness;
use serde_json::json;

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    jit: false
    vram: 24GiB
    load-time: 20ms
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: m2
    backend: ollama
    vram: 24GiB
    load-time: 20ms
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
";

fn m1(sim: &homeostat::sim::SimCluster) -> String {
    format!(
        "apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m1 }}
spec:
  backend: lmstudio
  url: {}
  vram: 24GiB
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
",
        sim.url("m1").unwrap()
    )
}

fn m2(sim: &homeostat::sim::SimCluster) -> String {
    format!(
        "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: m2 }}
spec:
  backend: ollama
  url: {}
  vram: 24GiB
  models:
    - {{ name: llama3.2:3b, size: 2GiB }}
",
        sim.url("m2").unwrap()
    )
}

const LIMIT: Duration = Duration::from_secs(10);

/// A node added by editing the manifest file in place starts being reconciled; one removed by
/// replacing the file through a rename stops (no more requests reach it) and is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_in_place_and_by_rename_take_effect() {
    let h = Harness::start(SIM, m1).await;
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    let before = d.status().await;
    assert!(before["nodes"].get("m2").is_none());
    let hash0 = before["manifests"]["hash"].as_str().unwrap().to_owned();

    // In place: the same file, truncated and rewritten.
    let file = h.manifests().join("all.yaml");
    std::fs::write(&file, format!("{}{}", m1(&h.sim), m2(&h.sim))).unwrap();
    let s = d
        .wait_status(LIMIT, |s| {
            s["manifests"]["generation"] == 2 && s["nodes"]["m2"]["lifecycle"] == "healthy"
        })
        .await;
    assert_ne!(s["manifests"]["hash"], hash0.as_str());
    assert!(s["manifests"].get("lastError").is_none(), "{s}");
    let reloaded = d.events_of_kind("manifest.reloaded").await;
    assert_eq!(reloaded.len(), 1, "{reloaded:?}");
    assert_eq!(reloaded[0]["detail"]["nodes"]["added"], json!(["m2"]));
    assert_eq!(reloaded[0]["detail"]["trigger"], "files");

    // By rename: a temporary dotfile written, then renamed over the manifest.
    write_by_rename(&file, &m1(&h.sim));
    let s = d
        .wait_status(LIMIT, |s| s["manifests"]["generation"] == 3 && s["nodes"].get("m2").is_none())
        .await;
    assert_eq!(s["manifests"]["hash"], hash0.as_str(), "back to the first set");
    let reloaded = d.events_of_kind("manifest.reloaded").await;
    assert_eq!(reloaded.last().unwrap()["detail"]["nodes"]["removed"], json!(["m2"]));
    // m2's task stopped: nothing reaches it any more (a few intervals later).
    h.node("m2").clear_log();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(h.node("m2").log().is_empty(), "{:?}", h.node("m2").log());
    // m1 kept being reconciled throughout.
    let iter = |s: &serde_json::Value| s["nodes"]["m1"]["pass"]["iteration"].as_u64().unwrap();
    let now = iter(&d.status().await);
    d.wait_status(LIMIT, |s| iter(s) > now).await;
    d.stop().await.unwrap();
}

/// An invalid edit is refused: the full validation report is in `/api/v1/status` and in a
/// `manifest.rejected` event, the set in effect (hash, generation) is unchanged and keeps
/// healing; fixing the file clears the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_is_refused_and_the_last_good_set_keeps_running() {
    let h = Harness::start(SIM, m1).await;
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    let good = d.status().await;
    let file = h.manifests().join("all.yaml");
    let broken = m1(&h.sim).replace("backend: lmstudio", "backend: lmstudoi");
    std::fs::write(&file, broken).unwrap();

    let s = d.wait_status(LIMIT, |s| s["manifests"]["lastError"].is_object()).await;
    let err = &s["manifests"]["lastError"];
    let report = err["report"].as_str().unwrap();
    assert!(report.contains("all.yaml"), "the report names the file: {report}");
    assert!(report.contains("lmstudoi"), "the report names the bad value: {report}");
    assert!(err["errors"].as_u64().unwrap() >= 1);
    assert!(err["diagnostics"][0]["line"].is_u64(), "{err}");
    assert_eq!(s["manifests"]["hash"], good["manifests"]["hash"]);
    assert_eq!(s["manifests"]["generation"], 1);
    let rejected = d.events_of_kind("manifest.rejected").await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0]["detail"]["report"].as_str().unwrap().contains("lmstudoi"));

    // The last good set still heals: a crash on m1 is repaired.
    h.node("m1").inject(
        serde_json::from_value::<homeostat::sim::Fault>(json!({"kind": "model-crash"})).unwrap(),
    );
    d.wait_event(LIMIT, "heal.succeeded", "m1").await;
    let (_, metrics) = d.get_text("/metrics").await;
    assert!(
        metrics.contains("homeostat_manifest_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("homeostat_manifest_last_reload_success 0"), "{metrics}");

    // Fixed: the error goes away; the set is the same as before, so nothing else changes.
    std::fs::write(&file, m1(&h.sim)).unwrap();
    let s = d.wait_status(LIMIT, |s| s["manifests"].get("lastError").is_none()).await;
    assert_eq!(s["manifests"]["generation"], 1);
    assert_eq!(d.events_of_kind("manifest.rejected").await.len(), 1, "reported once");
    d.stop().await.unwrap();
}

/// `POST /api/v1/reload` reloads at once (as SIGHUP does), without waiting for file events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_can_ask_for_a_reload() {
    let h = Harness::start(SIM, m1).await;
    let token = daemon_util::token_file(h.state_dir().parent().unwrap(), "tok");
    let cluster = format!(
        "{}  api: {{ tokenFrom: {{ file: {} }} }}\n",
        harness::FAST_CLUSTER,
        token.display()
    );
    h.write_manifests(&format!("{cluster}---\n{}", m1(&h.sim)));
    let mut opts = daemon_util::fast_options();
    // No file events within the test: only the API triggers the reload.
    opts.debounce = Duration::from_secs(3600);
    let d = Daemon::start_with(&h.manifests(), &h.state_dir(), opts, "127.0.0.1:0").await;
    d.wait_ready().await;
    std::fs::write(
        h.manifests().join("all.yaml"),
        format!("{cluster}---\n{}{}", m1(&h.sim), m2(&h.sim)),
    )
    .unwrap();
    let (code, body) = d.post("/api/v1/reload", Some("tok"), None).await;
    assert_eq!(code, 202, "{body}");
    let s = d.wait_status(LIMIT, |s| s["nodes"].get("m2").is_some()).await;
    assert_eq!(s["manifests"]["generation"], 2);
    let reloaded = d.events_of_kind("manifest.reloaded").await;
    assert_eq!(reloaded[0]["detail"]["trigger"], "api");
    d.stop().await.unwrap();
}
