//! `homeostat demo` runs the real binary end to end: the simulated lab, the real daemon, five
//! faults, each healed in the order detect → plan → act → verify → recover, and a summary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `homeostat demo --fast` and returns (exit code, stdout, stderr); kills it after `limit`.
fn run_demo(limit: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_homeostat"))
        .args(["demo", "--fast"])
        .env_remove("HOMEOSTAT_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not end within {limit:?}:\n{}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code().unwrap_or(-1), reader.join().unwrap(), err_reader.join().unwrap())
}

/// One narrated line: (tag, node, text).
fn parse(line: &str) -> Option<(&str, &str, &str)> {
    // "   1.1s  detect   m1            unhealthy: ..."
    let rest = line.trim_start();
    let (time, rest) = rest.split_once("s  ")?;
    time.parse::<f64>().ok()?;
    let tag = rest.get(..8)?.trim();
    let node = rest.get(9..22)?.trim();
    let text = rest.get(23..).unwrap_or("").trim();
    Some((tag, node, text))
}

/// The first index at or after `from` of a line with `tag` about `node` whose text contains
/// `needle`.
fn find(lines: &[(&str, &str, &str)], from: usize, tag: &str, node: &str, needle: &str) -> usize {
    lines[from..]
        .iter()
        .position(|(t, n, x)| *t == tag && (node.is_empty() || *n == node) && x.contains(needle))
        .map(|i| i + from)
        .unwrap_or_else(|| {
            panic!("no `{tag}` line for {node:?} with {needle:?} after line {from}:\n{lines:#?}")
        })
}

/// The demo ends by itself with exit 0 and `demo: 5 faults injected, 5 healed, 0 escalated`;
/// each fault's section tells the story in order (the node leaves the routing table, the
/// daemon's heal runs the expected actions and passes verification, the node comes back), the
/// overheated GPU is routed around and back without a reload, and the temporary directory is
/// removed at the end.
#[test]
fn the_demo_heals_every_fault_and_says_so() {
    let (code, out, err) = run_demo(Duration::from_secs(120));
    assert_eq!(code, 0, "exit code\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(out.lines().last(), Some("demo: 5 faults injected, 5 healed, 0 escalated"), "{out}");
    assert!(!err.contains("ERROR"), "no error was logged:\n{err}");

    let sections: Vec<&str> = out.split("── Fault ").skip(1).collect();
    assert_eq!(sections.len(), 5, "{out}");

    // Heals: (node, what the daemon must do, in order).
    let heals: [(usize, &str, &[&str]); 4] = [
        (0, "m1", &["loaded qwen/qwen3-32b"]),
        (1, "m2", &["unloaded qwen/qwen3-14b", "waited", "loaded qwen/qwen3-14b"]),
        (3, "ollama-local", &["ran the restart command", "loaded llama3.2:3b"]),
        (4, "m3", &["ran the restart command", "loaded google/gemma-3-12b"]),
    ];
    for (i, node, acts) in heals {
        let lines: Vec<_> = sections[i].lines().filter_map(parse).collect();
        let inject = find(&lines, 0, "inject", node, "");
        let detect = find(&lines, inject, "detect", node, "unhealthy");
        let out_of_routing = find(&lines, inject, "route", "", &format!("({node} out:"));
        let plan = find(&lines, detect, "plan", node, "(attempt 1)");
        let mut at = plan;
        for a in acts {
            at = find(&lines, at, "act", node, a);
        }
        let verify = find(&lines, at, "verify", node, "passed");
        let recover = find(&lines, verify, "recover", node, "recovered");
        assert!(out_of_routing < recover, "section {i}");
        // Back in routing before the recovery line: the last route change names no exclusion.
        let last_route = lines[..recover].iter().rposition(|(t, _, _)| *t == "route").unwrap();
        assert!(!lines[last_route].2.contains(" out:"), "{:?}", lines[last_route]);
    }

    // Heat: routed around, cooled by the script, routed back; nothing touched the node.
    let lines: Vec<_> = sections[2].lines().filter_map(parse).collect();
    let detect = find(&lines, 0, "detect", "m1", "reroute traffic away");
    let cordon = find(&lines, detect, "act", "m1", "taken out of routing (thermal)");
    let cooled = find(&lines, cordon, "inject", "m1", "cools down");
    let back = find(&lines, cooled, "act", "m1", "back in routing");
    find(&lines, back, "recover", "m1", "recovered");
    assert!(!lines.iter().any(|(t, _, _)| *t == "plan"), "no heal for a hot GPU:\n{}", sections[2]);

    // The temporary directory is gone.
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix("Desired state, in "))
        .and_then(|l| l.split(" (removed").next())
        .expect("the demo names its manifest directory");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was removed");
}
