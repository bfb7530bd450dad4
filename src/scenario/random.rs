//! Random fault timelines over a small cluster: the same properties as the written scenarios,
//! on timelines nobody wrote. `tests.rs` drives it with proptest (shrinking to the smallest
//! failing timeline); `examples/trajectories.rs` runs it long.

use std::time::Duration;

use serde_json::json;

use super::{Scenario, restart_command, url};

/// The nodes of a random scenario.
pub const NODES: [&str; 3] = ["r1", "r2", "r3"];

/// The faults a random timeline draws from (kind index → fault).
pub fn fault(kind: usize) -> serde_json::Value {
    match kind % 14 {
        0 => json!({"kind": "model-crash"}),
        1 => json!({"kind": "down", "for": "40s"}),
        2 => json!({"kind": "down", "for": "6m", "survives-restart": true}),
        3 => json!({"kind": "wedged"}),
        4 => json!({"kind": "http-500", "times": 3}),
        5 => json!({"kind": "hang", "for": "30s"}),
        6 => json!({"kind": "hot", "celsius": 88, "for": "2m"}),
        7 => json!({"kind": "hot", "celsius": 95, "for": "2m"}),
        8 => json!({"kind": "swap", "bytes": "9GiB", "for": "2m"}),
        9 => json!({"kind": "oom", "context-above": 4096}),
        10 => json!({"kind": "load-fails", "times": 2}),
        11 => json!({"kind": "restart"}),
        12 => json!({"kind": "wrong-answers", "times": 3}),
        _ => json!({"kind": "model-crash", "on-load": true, "times": 2}),
    }
}

/// The lab's policy with the mass-failure rule set for three nodes, and a notifier of every
/// severity.
const CLUSTER: &str = concat!(
    lab_policy!(),
    "  massFailure: { fraction: 0.5, minFailing: 3 }
---
apiVersion: homeostat.dev/v1
kind: Notifier
metadata: { name: ops }
spec:
  type: webhook
  urlFrom: { file: $HOOK_FILE }
  severities: [critical, warning, info]
"
);

/// The scenario of a timeline: `(second, node index, fault kind)` each; every fault cleared at
/// `clear_at`, then `settle` more to recover.
pub fn scenario(
    name: &str,
    timeline: &[(u64, usize, usize)],
    clear_at: u64,
    settle: u64,
) -> Scenario {
    let mut sim = String::from("nodes:\n");
    let mut manifests = CLUSTER.to_owned();
    for n in NODES {
        sim.push_str(&format!(
            "  - name: {n}\n    backend: lmstudio\n    vram: 16GiB\n    load-time: 5s\n    restart-time: 10s\n    models:\n      - {{ name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }}\n      - {{ name: qwen/qwen3-4b, size: 3GiB, loaded: true, context-length: 8192 }}\n"
        ));
        manifests.push_str(&format!(
            "---
apiVersion: homeostat.dev/v1
kind: Node
metadata: {{ name: {n} }}
spec:
  backend: lmstudio
  url: {url}
  vram: 16GiB
  restart: {{ command: {restart} }}
  models:
    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}
    - {{ name: qwen/qwen3-4b, size: 3GiB, contextLength: 8192, residency: onDemand }}
",
            url = url(n),
            restart = restart_command(n),
        ));
    }
    manifests.push_str(
        "---
apiVersion: homeostat.dev/v1
kind: Routing
metadata: { name: random }
spec:
  categories:
    chat:
      - { node: r1, weight: 2.0 }
      - { node: r2, weight: 1.4 }
      - { node: r3, weight: 1.0 }
",
    );
    let mut s =
        Scenario::new(name, &sim, &manifests).run_for(Duration::from_secs(clear_at + settle));
    for &(at, node, kind) in timeline {
        s = s.fault(Duration::from_secs(at.min(clear_at)), NODES[node % NODES.len()], fault(kind));
    }
    for n in NODES {
        s = s.clear(Duration::from_secs(clear_at), n);
    }
    s
}
