//! The status page at `/` (issue 20): served from the binary with a strict CSP, read-only without
//! the token, fed by the JSON API and the server-sent event stream; and in a real browser
//! (headless Chromium driven by playwright-core, `tests/browser/status_page.cjs`): every node
//! shown, a fault injected through the simulator changes the node's state and shows its event
//! without a reload. The browser part skips when Chromium or playwright-core is missing
//! (`scripts/test-deps-ops.sh` installs them), unless `HOMEOSTAT_REQUIRE_REAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::support::harness;

use crate::support::daemon_util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon_util::Daemon;
use futures::StreamExt as _;
use harness::Harness;

const SIM: &str = "
nodes:
  - name: m1
    backend: lmstudio
    vram: 24GiB
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
  - name: o1
    backend: ollama
    vram: 16GiB
    models:
      - { name: llama3.2:3b, size: 2GiB, loaded: true }
  - name: v1
    backend: vllm
    vram: 24GiB
    models:
      - { name: org/served, size: 6GiB, loaded: true }
";

const TOKEN: &str = "ui-token-5678";

fn manifests(sim: &homeostat::sim::SimCluster, token_file: &Path) -> String {
    let node = |name: &str, backend: &str, model: &str| {
        format!(
            "---\napiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {name} }}\nspec:\n  \
             backend: {backend}\n  url: {}\n  vram: 24GiB\n  models:\n    - {{ name: {model}, size: 6GiB }}\n",
            sim.node(name).unwrap().url()
        )
    };
    format!(
        "{}  api: {{ tokenFrom: {{ file: {} }} }}\n{}{}{}---
apiVersion: homeostat.dev/v1
kind: Routing
metadata: {{ name: r }}
spec:
  categories:
    chat:
      - {{ node: m1, weight: 2.0 }}
      - {{ node: o1, weight: 1.0 }}
    batch:
      - {{ node: v1, weight: 1.0 }}
",
        harness::FAST_CLUSTER,
        token_file.display(),
        node("m1", "lmstudio", "qwen/qwen3-8b"),
        node("o1", "ollama", "llama3.2:3b"),
        node("v1", "vllm", "org/served"),
    )
}

/// The page and its assets come from the binary, with a CSP allowing only the daemon itself;
/// reads need no token, a change without it is refused; the event stream sends an event that
/// happens after it was opened; the history endpoint answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_assets_and_event_stream() {
    let tokens = tempfile::tempdir().unwrap();
    let token = daemon_util::token_file(tokens.path(), TOKEN);
    let h = Harness::start(SIM, |sim| manifests(sim, &token)).await;
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;

    let c = daemon_util::client();
    let r = c.get(d.url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains("<html lang=\"en\">") && html.contains("<h1>homeostat</h1>"), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://"), "no external asset: {html}");
    for (path, ctype) in [("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")] {
        let r = c.get(d.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(ctype), "{path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("https://"), "{path} loads nothing from elsewhere");
    }
    let (code, body) = d.post("/api/v1/nodes/m1/cordon", None, None).await;
    assert_eq!(code, 401, "a change needs the token: {body}");

    let (code, history) = d.get("/api/v1/history").await;
    assert_eq!(code, 200);
    assert!(history["runs"].is_array(), "{history}");

    // The stream: opened now, it sends what happens after.
    let r = c.get(d.url("/api/v1/events/stream")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut stream = r.bytes_stream();
    let (code, body) = d.post("/api/v1/nodes/m1/cordon", Some(TOKEN), None).await;
    assert_eq!(code, 200, "{body}");
    let mut text = String::new();
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("\"kind\":\"node.cordoned\"") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the cordon event was streamed: {text}");
    assert!(text.contains("event: homeostat\n") && text.contains("\nid: "), "{text}");
    assert!(!text.contains("daemon.started"), "only events after the stream opened: {text}");
    d.stop().await.unwrap();
}

/// Chromium and playwright-core, or None (SKIP printed) when they are missing and not required.
fn browser_deps() -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deps = std::env::var_os("HOMEOSTAT_TEST_DEPS_DIR")
        .map_or_else(|| root.join(".cache/test-deps"), PathBuf::from);
    let chromium = std::env::var_os("HOMEOSTAT_CHROMIUM").map(PathBuf::from).or_else(|| {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    });
    let playwright = std::env::var_os("HOMEOSTAT_PLAYWRIGHT_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(deps.join("node/node_modules")))
        .filter(|p| p.join("playwright-core/package.json").exists());
    let node_ok = std::process::Command::new("node").arg("--version").output().is_ok();
    match (chromium, playwright, node_ok) {
        (Some(c), Some(p), true) => Some((c, p)),
        missing => {
            let required = std::env::var("HOMEOSTAT_REQUIRE_REAL").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "the browser test needs chromium, playwright-core and node ({missing:?}); run \
                 scripts/test-deps-ops.sh"
            );
            eprintln!(
                "SKIP: the browser test needs chromium, playwright-core and node: {missing:?}"
            );
            None
        }
    }
}

/// In headless Chromium: every node, then a fault injected through the simulator's admin API
/// changes m1's state and its event appears, without a reload; a screenshot is saved (its path
/// printed; `HOMEOSTAT_SCREENSHOT` chooses where).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_a_browser_follows_a_fault() {
    let Some((chromium, playwright)) = browser_deps() else { return };
    let tokens = tempfile::tempdir().unwrap();
    let token = daemon_util::token_file(tokens.path(), TOKEN);
    let h = Harness::start(SIM, |sim| manifests(sim, &token)).await;
    // A benchmark run first, for the history chart.
    let (code, out, err) = harness::split(h.run(&["bench", "--node", "o1"]).await);
    eprintln!("bench: {code}\n{out}{err}");
    let d = Daemon::start(&h.manifests(), &h.state_dir()).await;
    d.wait_ready().await;
    let shot = std::env::var_os("HOMEOSTAT_SCREENSHOT")
        .map_or_else(|| tokens.path().join("status-page.png"), PathBuf::from);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/status_page.cjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .env("HOMEOSTAT_PAGE", d.url("/"))
        .env("HOMEOSTAT_NODES", "m1,o1,v1")
        .env("HOMEOSTAT_FAULT_NODE", "m1")
        .env("HOMEOSTAT_FAULT_URL", h.url("m1"))
        .env("HOMEOSTAT_CHROMIUM", &chromium)
        .env("HOMEOSTAT_PLAYWRIGHT_DIR", &playwright)
        .env("HOMEOSTAT_SCREENSHOT", &shot)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the browser test ends within 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert_ne!(report["state"], "healthy", "{report}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a screenshot");
    println!("screenshot: {} (m1 {}, events {})", shot.display(), report["state"], report["kinds"]);
    d.stop().await.unwrap();
}
