//! The store across processes: the run lock between processes (and after a kill -9), crash
//! safety under SIGKILL at random moments, and readers in one process while another writes.
//!
//! Child processes are this test binary run again with `HOMEOSTAT_STORE_TEST_ROLE` set: the
//! test function named on the command line sees the role and plays the child instead of the
//! parent. Children report progress on stdout as lines starting with `@@ `.

// Test helpers outside #[test] functions unwrap too (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use homeostat::health::{Breaker, Lifecycle};
use homeostat::plan::memory::{HealthMemory, LoadSettings, ModelConfig, NodeMemory};
use homeostat::store::{
    ActionEnd, ActionStatus, JOURNAL_FILE, LockError, NewAction, NewEvent, RunLock, SqliteStore,
    StateStore, StoreError, kinds,
};
use homeostat::time::Timestamp;
use rand::{Rng, SeedableRng, rngs::StdRng};

const ROLE: &str = "HOMEOSTAT_STORE_TEST_ROLE";
const DIR: &str = "HOMEOSTAT_STORE_TEST_DIR";

/// The role this process plays, if it is a child.
fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE).ok()?;
    let dir = std::env::var_os(DIR).map(PathBuf::from).expect("a child is given its state dir");
    Some((role, dir))
}

/// Runs the test `test` (a function of this module) of this binary as a child playing `role` on
/// `dir`. The test binary names it by its path without the crate (`store_process::NAME`).
fn spawn_child(test: &str, role: &str, dir: &Path) -> Child {
    let module = module_path!().split_once("::").map_or("", |(_, module)| module);
    let test = if module.is_empty() { test.to_owned() } else { format!("{module}::{test}") };
    Command::new(std::env::current_exe().unwrap())
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The child's `@@ ` lines, as they come (the channel closes when the child's stdout does).
fn protocol(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(msg) = line.strip_prefix("@@ ")
                && tx.send(msg.to_owned()).is_err()
            {
                break;
            }
        }
    });
    rx
}

fn say(msg: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {msg}").unwrap();
    out.flush().unwrap();
}

/// Node memory that encodes `n` in every part (counters, breaker, last-known-good, a map whose
/// size varies), so a torn write would show as a memory that is not `memory_for(n)` for any n.
fn memory_for(n: u32) -> NodeMemory {
    let t = Timestamp(1_795_478_400_000 + u64::from(n));
    NodeMemory {
        health: HealthMemory {
            lifecycle: if n.is_multiple_of(2) { Lifecycle::Healing } else { Lifecycle::Unhealthy },
            consecutive_failures: n * 2,
            heal_attempts: n,
            last_heal_at: Some(t),
            breaker: Breaker::Open { since: t, until: t + Duration::from_secs(600) },
            problem: Some(format!("attempt {n} of a reload")),
            ..HealthMemory::default()
        },
        verify_failures: n % 3,
        last_known_good: Some(ModelConfig {
            model: format!("model-{n}"),
            size: u64::from(n) * 1024,
            settings: LoadSettings { context_length: Some(n), ..LoadSettings::default() },
        }),
        context_overrides: (0..n % 40)
            .map(|i| (format!("model-{i}-{}", "x".repeat(60)), n))
            .collect(),
        ..NodeMemory::default()
    }
}

/// The writer child: records heal attempts on two nodes as the executor would (log the action,
/// persist memory, append an event, log the end), forever, reporting each completed round.
fn run_writer(dir: &Path) {
    let lock = RunLock::try_acquire(dir).unwrap();
    let opened = SqliteStore::open(&lock).unwrap();
    assert_eq!(opened.recovered, None);
    let s = opened.store;
    let now = Timestamp(1_795_478_400_000);
    s.close_interrupted_actions(None, now).unwrap();
    let mut n = s.load_node("a").unwrap().map_or(0, |m| m.health.heal_attempts);
    say(format!("start {n}"));
    loop {
        n += 1;
        let id = s
            .begin_action(&NewAction {
                node: "a".into(),
                action: serde_json::json!({ "action": "load", "attempt": n }),
                correlation: format!("pass-{n}"),
                started: now,
            })
            .unwrap();
        s.save_node("a", &memory_for(n)).unwrap();
        s.save_node("b", &memory_for(n)).unwrap();
        let detail = serde_json::json!({ "attempt": n });
        let _ = s
            .append_event(NewEvent::new(now, Some("a"), kinds::STATE_CHANGED, detail, "c"))
            .unwrap();
        let end = ActionEnd {
            status: ActionStatus::Succeeded,
            detail: serde_json::Value::Null,
            ended: now,
        };
        s.finish_action(id, &end).unwrap();
        say(n);
    }
}

/// The lock holder child: takes the lock, says so, and keeps it until stdin closes.
fn run_lock_holder(dir: &Path) {
    let _lock = RunLock::try_acquire(dir).unwrap();
    say("locked");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

fn play_child() -> bool {
    match child_role() {
        Some((role, dir)) if role == "writer" => run_writer(&dir),
        Some((role, dir)) if role == "hold-lock" => run_lock_holder(&dir),
        Some((role, _)) => panic!("unknown role {role}"),
        None => return false,
    }
    true
}

fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    (root, dir)
}

/// The run lock works between processes: while another process holds it, taking it fails with
/// that process's pid in the message; it is free again when the holder exits normally, and also
/// when the holder is killed with SIGKILL (the kernel releases it: no stale lock).
#[test]
fn lock_excludes_other_processes() {
    if play_child() {
        return;
    }
    let (_root, dir) = state_dir();
    for kill in [false, true] {
        let mut child = spawn_child("lock_excludes_other_processes", "hold-lock", &dir);
        let rx = protocol(&mut child);
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "locked");
        match RunLock::try_acquire(&dir) {
            Err(e @ LockError::Held { pid, .. }) => {
                assert_eq!(pid, Some(child.id()));
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!(
                        "another homeostat run (pid {}) holds the lock",
                        child.id()
                    )),
                    "{msg}"
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        if kill {
            child.kill().unwrap(); // SIGKILL
        } else {
            drop(child.stdin.take());
        }
        let status = child.wait().unwrap();
        assert_eq!(status.success(), !kill);
        let lock = RunLock::try_acquire(&dir).unwrap();
        drop(lock);
    }
}

/// Kill -9 at random moments (seeded, 20 times; a quarter during start-up and opening, the rest
/// while writing) of a process writing memory, actions and events in a loop. After each kill the database opens without being moved aside, passes
/// `integrity_check`, holds a whole (untorn) memory for each node, has every write that
/// returned before the kill (the last reported round or the one after), never goes back, and
/// each new writer continues the counters. Every events.jsonl line is whole JSON.
#[test]
fn crash_safety_under_sigkill() {
    if play_child() {
        return;
    }
    let (_root, dir) = state_dir();
    let mut rng = StdRng::seed_from_u64(0x5EED_0005);
    let started = Instant::now();
    // What the store held after the previous kill.
    let (mut prev_a, mut prev_b) = (0u32, 0u32);
    let mut kills_mid_round = 0;
    let mut writing_rounds = 0;
    for round in 0..20 {
        let mut child = spawn_child("crash_safety_under_sigkill", "writer", &dir);
        let rx = protocol(&mut child);
        let mut lines = Vec::new();
        if rng.random_bool(0.25) {
            // Early: during process start, opening, migrating, closing interrupted actions.
            std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        } else {
            // While writing: some time after the first round of this writer committed.
            for _ in 0..2 {
                lines.push(rx.recv_timeout(Duration::from_secs(30)).unwrap());
            }
            assert!(lines[0].starts_with("start ") && lines[1].parse::<u32>().is_ok(), "{lines:?}");
            writing_rounds += 1;
            std::thread::sleep(Duration::from_millis(rng.random_range(0..80)));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        lines.extend(rx.iter());
        let start: Option<u32> = lines.iter().find_map(|l| l.strip_prefix("start ")?.parse().ok());
        let reported: Option<u32> = lines.iter().rev().find_map(|l| l.parse().ok());
        if let Some(start) = start {
            assert_eq!(start, prev_a, "round {round}: the writer resumes from the stored count");
        }

        // `homeostat status` right after the crash: a read-only open sees whole memories.
        match SqliteStore::open_read_only(&dir) {
            Ok(r) => {
                for m in r.load_memory().unwrap().nodes.values() {
                    assert_eq!(*m, memory_for(m.health.heal_attempts), "round {round}: torn read");
                }
            }
            // Killed before the first migration committed: no state yet.
            Err(StoreError::Missing { .. }) => assert_eq!(prev_a, 0, "round {round}"),
            Err(e) => panic!("round {round}: read-only open after a kill: {e}"),
        }
        let lock = RunLock::try_acquire(&dir).unwrap();
        let s = match SqliteStore::open(&lock) {
            Ok(o) => {
                assert_eq!(o.recovered, None, "round {round}: a kill never corrupts");
                o.store
            }
            Err(e) => panic!("round {round}: reopen failed: {e}"),
        };
        assert!(s.integrity_check().unwrap().is_ok(), "round {round}");
        let count = |node: &str| {
            s.load_node(node).unwrap().map(|m| {
                let n = m.health.heal_attempts;
                assert_eq!(m, memory_for(n), "round {round}: node {node} torn");
                n
            })
        };
        let (a, b) = (count("a").unwrap_or(0), count("b").unwrap_or(0));
        // A round writes a(n) then b(n), then reports n; a writer resumes from a. So b never
        // passes a (a kill between the two saves leaves b behind until b's next save).
        assert!(a >= b, "round {round}: a={a} b={b}");
        assert!(
            a >= prev_a && b >= prev_b,
            "round {round}: went back ({prev_a},{prev_b}) → ({a},{b})"
        );
        if let Some(r) = reported {
            assert!(b >= r, "round {round}: lost a write that returned (b={b}, reported {r})");
        }
        let last_known = reported.unwrap_or(0).max(prev_a);
        assert!(a <= last_known + 1, "round {round}: a={a} beyond what was written ({last_known})");
        if a != b {
            kills_mid_round += 1;
        }
        (prev_a, prev_b) = (a, b);

        // Every action but possibly the one being written when killed has its end.
        let open =
            s.recent_actions("a", 5).unwrap().into_iter().filter(|x| x.end.is_none()).count();
        assert!(open <= 1, "round {round}: {open} open actions");
        let text = std::fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap_or_default();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("round {round}: bad journal line {line:?}: {e}"));
        }
    }
    assert!(prev_a >= writing_rounds, "each writer killed while writing committed a round");
    eprintln!(
        "crash safety: 20 kills, {prev_a} rounds committed, {kills_mid_round} kills between the two saves of a round, {:?}",
        started.elapsed()
    );
}

/// Readers in this process open the database read-only, again and again, while another process
/// writes in a loop (WAL): no read fails (a read that waited out the busy timeout would fail
/// with SQLITE_BUSY), every read sees whole
/// memories, and what a reader sees never goes back. A second writer cannot start (the lock).
#[test]
fn readers_while_another_process_writes() {
    if play_child() {
        return;
    }
    let (_root, dir) = state_dir();
    let mut child = spawn_child("readers_while_another_process_writes", "writer", &dir);
    let rx = protocol(&mut child);
    let first_round = loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        if let Ok(n) = line.parse::<u32>() {
            break n;
        }
    };
    assert!(matches!(RunLock::try_acquire(&dir), Err(LockError::Held { .. })));

    let readers: Vec<_> = (0..2)
        .map(|r| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut seen = 0u32;
                let mut reads = 0;
                let mut slowest = Duration::ZERO;
                let shared = SqliteStore::open_read_only(&dir).unwrap();
                while reads < 150 {
                    // Alternate a fresh connection (a new `status` process) and a long-lived one.
                    let fresh;
                    let s: &dyn StateStore = if reads % 2 == 0 {
                        fresh = SqliteStore::open_read_only(&dir).unwrap();
                        &fresh
                    } else {
                        &shared
                    };
                    let t = Instant::now();
                    let nodes: BTreeMap<String, NodeMemory> = match s.load_memory() {
                        Ok(m) => m.nodes,
                        Err(e) => panic!("reader {r}: {e}"),
                    };
                    slowest = slowest.max(t.elapsed());
                    let a = nodes["a"].health.heal_attempts;
                    assert_eq!(nodes["a"], memory_for(a));
                    assert_eq!(nodes["b"], memory_for(nodes["b"].health.heal_attempts));
                    assert!(a >= seen, "reader {r} went back from {seen} to {a}");
                    seen = a;
                    reads += 1;
                }
                (seen, slowest)
            })
        })
        .collect();
    let results: Vec<(u32, Duration)> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    child.kill().unwrap();
    child.wait().unwrap();
    let last_round = rx.iter().filter_map(|l| l.parse::<u32>().ok()).last().unwrap_or(first_round);
    assert!(last_round > first_round, "the writer kept writing during the reads");
    for (seen, slowest) in &results {
        assert!(*seen >= first_round);
        eprintln!("reader: last round seen {seen}, slowest read {slowest:?}");
    }
    let lock = RunLock::try_acquire(&dir).unwrap();
    let s = SqliteStore::open(&lock).unwrap();
    assert_eq!(s.recovered, None);
    assert!(s.store.integrity_check().unwrap().is_ok());
    // A read-only handle can't take part in writing.
    let r = SqliteStore::open_read_only(&dir).unwrap();
    assert!(matches!(r.save_node("a", &NodeMemory::default()), Err(StoreError::ReadOnly)));
}
