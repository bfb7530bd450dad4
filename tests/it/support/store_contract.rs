//! Store-independent checks (the store contract): each takes a fresh, empty store as
//! `&dyn StateStore` (and its lease side as `&dyn LeaseStore`), so the SQLite and the PostgreSQL
//! store run the same ones (`tests/it/store_sqlite.rs`, `tests/it/store_postgres.rs`), plus the sample
//! data they use.

// Helpers outside #[test] functions unwrap too (clippy.toml allows it only inside them); each
// test binary uses a different part of this module.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use homeostat::bench::history::{Champion, RunKind, RunRecord};
use homeostat::bench::schedule::BenchDue;
use homeostat::bench::score::{RunSummary, Score, Tally};
use homeostat::health::{Breaker, Lifecycle};
use homeostat::plan::memory::{
    ArenaMark, ClusterMemory, CordonReason, HealthMemory, LoadSettings, Memory, ModelConfig,
    NodeMemory, ServiceMemory,
};
use homeostat::store::{
    self, ActionEnd, ActionStatus, EventId, LeaseStore, NewAction, NewEvent, Rejected, Retention,
    StateStore, StoreError, kinds,
};
use homeostat::time::Timestamp;

pub const T0: Timestamp = Timestamp(1_795_478_400_000);

pub fn at(secs: u64) -> Timestamp {
    T0 + Duration::from_secs(secs)
}

pub fn model(name: &str, ctx: u32) -> ModelConfig {
    ModelConfig {
        model: name.to_owned(),
        size: 5 * 1024 * 1024 * 1024,
        settings: LoadSettings {
            context_length: Some(ctx),
            flash_attention: Some(true),
            eval_batch_size: Some(512),
            num_experts: None,
            offload_kv_cache_to_gpu: Some(true),
        },
    }
}

/// Remembered state as it looks mid-incident: one node offline with its breaker open and
/// thermal cordon, one half-open after a rollback with an arena running, a service counting
/// failures, and the mass-failure hold on.
pub fn realistic_memory() -> Memory {
    let m1 = NodeMemory {
        health: HealthMemory {
            lifecycle: Lifecycle::Offline,
            consecutive_failures: 7,
            detected_at: Some(at(10)),
            problem: Some("model qwen/qwen3-8b not loaded; restart failed (exit 1)".into()),
            heal_attempts: 3,
            last_heal_at: Some(at(300)),
            next_heal_at: Some(at(540)),
            breaker: Breaker::Open { since: at(300), until: at(900) },
            last_check: Some(at(310)),
            healthy_since: None,
            verified_heals: 0,
        },
        verify_failures: 1,
        last_known_good: Some(model("qwen/qwen3-8b", 8192)),
        rolled_back: None,
        context_overrides: BTreeMap::from([("qwen/qwen3-32b".to_owned(), 16384)]),
        cordons: BTreeSet::from([CordonReason::Thermal, CordonReason::Offline]),
        manual_cordon: Some(false),
        arena: None,
        degraded: false,
        last_heartbeat: Some(at(309)),
        loading_since: BTreeMap::from([("qwen/qwen3-32b".to_owned(), at(305))]),
        last_temp_c: Some(87.4),
    };
    let m2 = NodeMemory {
        health: HealthMemory {
            lifecycle: Lifecycle::Verifying,
            consecutive_failures: 0,
            detected_at: None,
            problem: None,
            heal_attempts: 2,
            last_heal_at: Some(at(200)),
            next_heal_at: None,
            breaker: Breaker::HalfOpen { since: at(250) },
            last_check: Some(at(311)),
            healthy_since: Some(at(260)),
            verified_heals: 1,
        },
        verify_failures: 2,
        last_known_good: Some(model("llama-3.1-8b", 4096)),
        rolled_back: Some(model("llama-3.3-70b", 32768)),
        context_overrides: BTreeMap::new(),
        cordons: BTreeSet::from([CordonReason::Arena]),
        manual_cordon: None,
        arena: Some(ArenaMark {
            candidate: "gemma-3-12b".into(),
            champion: Some(model("llama-3.1-8b", 4096)),
            started: at(280),
            until: at(880),
        }),
        degraded: true,
        last_heartbeat: None,
        loading_since: BTreeMap::new(),
        last_temp_c: None,
    };
    let gateway = ServiceMemory {
        health: HealthMemory {
            lifecycle: Lifecycle::Suspect,
            consecutive_failures: 2,
            breaker: Breaker::Closed { failures: 2 },
            ..HealthMemory::default()
        },
    };
    Memory {
        nodes: BTreeMap::from([("m1".to_owned(), m1), ("m2".to_owned(), m2)]),
        services: BTreeMap::from([("gateway".to_owned(), gateway)]),
        cluster: ClusterMemory { mass_hold_since: Some(at(299)), ..ClusterMemory::default() },
    }
}

pub fn event(secs: u64, node: Option<&str>, kind: &str, i: u64) -> NewEvent {
    NewEvent::new(at(secs), node, kind, serde_json::json!({ "i": i }), &format!("pass-{secs}"))
}

/// Saving a whole memory and single entries reads back exactly what was saved.
pub fn memory_round_trip(s: &dyn StateStore) {
    assert_eq!(s.load_memory().unwrap(), Memory::default());
    assert_eq!(s.load_node("m1").unwrap(), None);
    let mut m = realistic_memory();
    s.save_memory(&m).unwrap();
    assert_eq!(s.load_memory().unwrap(), m);

    let m1 = m.nodes.get_mut("m1").unwrap();
    m1.health.breaker = Breaker::HalfOpen { since: at(900) };
    m1.health.heal_attempts = 4;
    m1.cordons.remove(&CordonReason::Thermal);
    s.save_node("m1", m1).unwrap();
    assert_eq!(s.load_node("m1").unwrap().as_ref(), Some(&*m1));

    let gw = m.services.get_mut("gateway").unwrap();
    gw.health.breaker = Breaker::Open { since: at(901), until: at(1501) };
    s.save_service("gateway", gw).unwrap();
    m.cluster.mass_hold_since = None;
    s.save_cluster(&m.cluster).unwrap();
    let n3 = NodeMemory::default();
    s.save_node("m3", &n3).unwrap();
    m.nodes.insert("m3".into(), n3);
    assert_eq!(s.load_memory().unwrap(), m);
}

/// Nodes and services no longer desired are forgotten; the rest stay.
pub fn retain(s: &dyn StateStore) {
    s.save_memory(&realistic_memory()).unwrap();
    s.save_node("m3", &NodeMemory::default()).unwrap();
    let keep = BTreeSet::from(["m2".to_owned(), "m9".to_owned()]);
    assert_eq!(s.retain_nodes(&keep).unwrap(), ["m1", "m3"]);
    assert_eq!(s.retain_services(&BTreeSet::new()).unwrap(), ["gateway"]);
    let m = s.load_memory().unwrap();
    assert_eq!(m.nodes.keys().collect::<Vec<_>>(), ["m2"]);
    assert_eq!(m.nodes["m2"], realistic_memory().nodes["m2"]);
    assert!(m.services.is_empty());
    assert!(s.retain_nodes(&keep).unwrap().is_empty(), "idempotent");
}

/// Events get increasing ids, read back whole, in order, by cursor and per node.
pub fn events(s: &dyn StateStore) {
    for i in 0..10u64 {
        let node = if i % 2 == 0 { Some("m1") } else { None };
        let e = s.append_event(event(i, node, kinds::STATE_CHANGED, i)).unwrap();
        assert_eq!(e.event().detail["i"], i);
    }
    let all = s.events_since(EventId(0), 100).unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[3].at, at(3));
    assert_eq!(all[3].node, None);
    assert_eq!(all[4].node.as_deref(), Some("m1"));
    assert_eq!(all[4].correlation, "pass-4");
    assert_eq!(all[4].kind, "state.changed");
    let tail = s.events_since(all[6].id, 2).unwrap();
    assert_eq!(tail.iter().map(|e| e.id).collect::<Vec<_>>(), [all[7].id, all[8].id]);
    let last = s.recent_events(None, 3).unwrap();
    assert_eq!(last.iter().map(|e| e.id).collect::<Vec<_>>(), [all[7].id, all[8].id, all[9].id]);
    let m1 = s.recent_events(Some("m1"), 2).unwrap();
    assert_eq!(m1.iter().map(|e| e.detail["i"].as_u64()).collect::<Vec<_>>(), [Some(6), Some(8)]);
}

/// The action log: begun actions are open, finished ones carry their end, an action can end
/// only once, and unfinished actions are closed as interrupted.
pub fn actions(s: &dyn StateStore) {
    let new = |node: &str, secs, what: &str| NewAction {
        node: node.into(),
        action: serde_json::json!({ "action": what, "model": "qwen/qwen3-8b" }),
        correlation: format!("pass-{secs}"),
        started: at(secs),
    };
    let unload = s.begin_action(&new("m1", 10, "unload")).unwrap();
    let settle = s.begin_action(&new("m1", 11, "settle")).unwrap();
    let other = s.begin_action(&new("m2", 11, "load")).unwrap();
    assert!(unload < settle && settle < other);
    let ok = ActionEnd {
        status: ActionStatus::Succeeded,
        detail: serde_json::json!({ "took_ms": 812 }),
        ended: at(11),
    };
    s.finish_action(unload, &ok).unwrap();
    match s.finish_action(unload, &ok) {
        Err(StoreError::ActionNotOpen { id }) => assert_eq!(id, unload),
        other => panic!("expected ActionNotOpen, got {other:?}"),
    }
    let log = s.recent_actions("m1", 10).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].id, unload);
    assert_eq!(log[0].end.as_ref(), Some(&ok));
    assert_eq!(log[0].action["action"], "unload");
    assert_eq!(log[0].correlation, "pass-10");
    assert_eq!(log[1].end, None, "the settle is still running");

    let closed = s.close_interrupted_actions(Some("m1"), at(60)).unwrap();
    assert_eq!(closed.iter().map(|a| a.id).collect::<Vec<_>>(), [settle]);
    let end = s.recent_actions("m1", 1).unwrap().remove(0).end.unwrap();
    assert_eq!((end.status, end.ended), (ActionStatus::Interrupted, at(60)));
    assert!(s.recent_actions("m2", 5).unwrap()[0].end.is_none(), "other nodes untouched");
    let rest = s.close_interrupted_actions(None, at(61)).unwrap();
    assert_eq!(rest.iter().map(|a| a.id).collect::<Vec<_>>(), [other]);
    assert!(s.close_interrupted_actions(None, at(62)).unwrap().is_empty());
}

/// Pruning keeps the newest events and the newest actions of each node; ids keep growing.
pub fn prune(s: &dyn StateStore) {
    for i in 0..20 {
        let _ = s.append_event(event(i, Some("m1"), kinds::ALERT, i)).unwrap();
    }
    for (node, n) in [("m1", 6), ("m2", 2)] {
        for i in 0..n {
            let a = NewAction {
                node: node.into(),
                action: serde_json::json!({ "i": i }),
                correlation: "c".into(),
                started: at(i),
            };
            s.begin_action(&a).unwrap();
        }
    }
    let pruned = s.prune(&Retention { events: 5, actions_per_node: 3 }).unwrap();
    assert_eq!((pruned.events, pruned.actions), (15, 3));
    let left = s.events_since(EventId(0), 100).unwrap();
    assert_eq!(
        left.iter().map(|e| e.detail["i"].as_u64().unwrap()).collect::<Vec<_>>(),
        [15, 16, 17, 18, 19]
    );
    let m1 = s.recent_actions("m1", 100).unwrap();
    assert_eq!(m1.iter().map(|a| a.action["i"].as_u64().unwrap()).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(s.recent_actions("m2", 100).unwrap().len(), 2);
    let next = s.append_event(event(99, None, kinds::ALERT, 99)).unwrap();
    assert!(next.event().id > left[4].id, "ids are never reused");
    assert_eq!(s.prune(&Retention::default()).unwrap(), store::Pruned::default());
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn new_action(node: &str, secs: u64, what: &str) -> NewAction {
    NewAction {
        node: node.into(),
        action: serde_json::json!({ "action": what }),
        correlation: format!("pass-{secs}"),
        started: at(secs),
    }
}

/// Fenced writes under the leases a store's lease side hands out to its only replica (SQLite:
/// `SoleHolder`; PostgreSQL: the store itself): each lands like its unfenced twin, a fence used
/// for a write it does not cover is refused with `WrongFence` and writes nothing, and a batch save
/// saves only what its leases cover, returning the rest.
pub fn fenced_writes(s: &dyn StateStore, leases: &dyn LeaseStore) {
    let leased = leases.refresh(&set(&["m1", "m2"]), &BTreeSet::new()).unwrap();
    assert!(leased.holds("m1") && leased.holds("m2"), "a lone replica holds every node");
    assert!(leased.is_leader(), "a lone replica is the leader");
    assert_eq!(leased.gained, ["m1", "m2"]);
    assert!(leased.lost.is_empty() && leased.released.is_empty());
    assert_eq!((leased.live_replicas, leased.share), (1, 2));
    let (f1, f2) = (leased.fence("m1").unwrap().clone(), leased.fence("m2").unwrap().clone());
    let leader = leased.leader_fence().unwrap().clone();
    let table = leases.lease_table().unwrap();
    assert_eq!(table.holder("m1"), Some(leases.replica()));
    assert_eq!(table.leader(), Some(leases.replica()));

    let mem = realistic_memory();
    s.save_node_fenced(&f1, &mem.nodes["m1"]).unwrap();
    assert_eq!(s.load_node("m1").unwrap().as_ref(), Some(&mem.nodes["m1"]));
    s.save_service_fenced(&leader, "gateway", &mem.services["gateway"]).unwrap();
    s.save_cluster_fenced(&leader, &mem.cluster).unwrap();
    let wrong = |r: Result<(), StoreError>| matches!(r, Err(StoreError::WrongFence { .. }));
    assert!(wrong(s.save_node_fenced(&leader, &NodeMemory::default())));
    assert!(wrong(s.save_service_fenced(&f1, "gateway", &ServiceMemory::default())));
    assert!(wrong(s.save_cluster_fenced(&f2, &ClusterMemory::default())));
    let loaded = s.load_memory().unwrap();
    assert_eq!(loaded.nodes.keys().collect::<Vec<_>>(), ["m1"]);
    assert_eq!(loaded.services, mem.services);
    assert_eq!(loaded.cluster, mem.cluster, "the refused writes changed nothing");

    // The action log: a node's fence covers its own node's actions only.
    let a = s.begin_action_fenced(&f1, &new_action("m1", 10, "unload")).unwrap();
    assert!(matches!(
        s.begin_action_fenced(&f1, &new_action("m2", 10, "load")),
        Err(StoreError::WrongFence { .. })
    ));
    let ok =
        ActionEnd { status: ActionStatus::Succeeded, detail: serde_json::json!({}), ended: at(11) };
    s.finish_action_fenced(&f1, a, &ok).unwrap();
    assert!(matches!(s.finish_action_fenced(&f1, a, &ok), Err(StoreError::ActionNotOpen { .. })));
    let b = s.begin_action_fenced(&f2, &new_action("m2", 12, "load")).unwrap();
    let closed = s.close_interrupted_actions_fenced(&f2, at(70)).unwrap();
    assert_eq!(closed.iter().map(|a| a.id).collect::<Vec<_>>(), [b]);
    assert_eq!(s.recent_actions("m1", 5).unwrap()[0].end.as_ref(), Some(&ok));
    assert!(s.recent_actions("m2", 5).unwrap().iter().all(|a| a.node == "m2"));

    // Events: a node's fence for its node's events, the leader's for any.
    let e = s.append_event_fenced(&f1, event(20, Some("m1"), kinds::STATE_CHANGED, 1)).unwrap();
    assert_eq!(e.event().node.as_deref(), Some("m1"));
    for ev in [event(21, Some("m2"), kinds::ALERT, 2), event(21, None, kinds::ALERT, 3)] {
        assert!(matches!(s.append_event_fenced(&f1, ev), Err(StoreError::WrongFence { .. })));
    }
    let _ = s.append_event_fenced(&leader, event(22, Some("m2"), kinds::ALERT, 4)).unwrap();
    let _ = s.append_event_fenced(&leader, event(23, None, kinds::ALERT, 5)).unwrap();
    let details: Vec<_> = s
        .events_since(EventId(0), 100)
        .unwrap()
        .iter()
        .filter_map(|e| e.detail["i"].as_u64())
        .collect();
    assert_eq!(details, [1, 4, 5]);

    // A batch save: m3 has no lease, so it is returned and not saved.
    let mut batch = realistic_memory();
    batch.nodes.insert("m3".into(), NodeMemory::default());
    batch.cluster.mass_hold_since = None;
    let rejected = s.save_memory_fenced(&leased, &batch).unwrap();
    assert_eq!(rejected, Rejected { nodes: vec!["m3".into()], cluster: false });
    let loaded = s.load_memory().unwrap();
    assert_eq!(loaded.nodes.keys().collect::<Vec<_>>(), ["m1", "m2"]);
    assert_eq!(loaded.cluster, batch.cluster);
    // Without the leader lease the services and the cluster are not saved.
    let follower = store::LeaseSet { leader: None, ..leased.clone() };
    let mut changed = batch.clone();
    changed.cluster.mass_hold_since = Some(at(500));
    changed.nodes.get_mut("m2").unwrap().verify_failures = 9;
    let rejected = s.save_memory_fenced(&follower, &changed).unwrap();
    assert_eq!(rejected, Rejected { nodes: vec!["m3".into()], cluster: true });
    let loaded = s.load_memory().unwrap();
    assert_eq!(loaded.cluster, batch.cluster, "no leader lease: the cluster row is unchanged");
    assert_eq!(loaded.nodes["m2"].verify_failures, 9, "nodes under their leases are saved");

    assert_eq!(leases.release(&["m2".to_owned(), "m9".to_owned()]).unwrap(), ["m2"]);
    leases.release_all().unwrap();
}

pub fn record(node: &str, kind: RunKind, model: &str, composite: f64, secs: u64) -> RunRecord {
    RunRecord {
        kind,
        node: node.into(),
        model: model.into(),
        suite: "builtin-mini".into(),
        config: serde_json::json!({ "model": model, "size": 0, "settings": {} }),
        at: at(secs),
        cycles: 1,
        warmups: 0,
        summary: RunSummary {
            total: Tally::default(),
            pass_rate: 1.0,
            error_rate: 0.0,
            score: Score { composite, ..Score::default() },
            tasks: vec![],
            by_domain: BTreeMap::new(),
        },
    }
}

/// Benchmark runs come back oldest first, whole; each node keeps exactly its newest `keep` runs
/// whatever the other nodes do; `limit` takes the newest.
pub fn runs_kept_per_node(s: &dyn StateStore) {
    for i in 0..7u64 {
        let node = if i % 2 == 0 { "a" } else { "b" };
        s.append_run(&record(node, RunKind::Bench, "m", i as f64, i), 2).unwrap();
    }
    let a: Vec<u64> = s.runs(Some("a"), 100).unwrap().iter().map(|r| r.at.0).collect();
    assert_eq!(a, [at(4).0, at(6).0]);
    let all = s.runs(None, 100).unwrap();
    assert_eq!(all.iter().map(|r| r.composite()).collect::<Vec<_>>(), [3.0, 4.0, 5.0, 6.0]);
    assert_eq!(all[3], record("a", RunKind::Bench, "m", 6.0, 6), "a run round-trips whole");
    let newest: Vec<f64> = s.runs(None, 1).unwrap().iter().map(|r| r.composite()).collect();
    assert_eq!(newest, [6.0]);
    s.append_run(&record("a", RunKind::Bench, "m", 9.0, 9), 1).unwrap();
    assert_eq!(s.runs(Some("a"), 100).unwrap().len(), 1, "a smaller keep prunes at once");
}

/// The last run of each kind per node, for the benchmark schedule.
pub fn last_run_of_a_kind(s: &dyn StateStore) {
    assert_eq!(s.last_run_at("a", RunKind::Bench).unwrap(), None);
    s.append_run(&record("a", RunKind::Bench, "m", 1.0, 1), 500).unwrap();
    s.append_run(&record("a", RunKind::Arena, "m", 1.0, 5), 500).unwrap();
    s.append_run(&record("b", RunKind::Bench, "m", 1.0, 9), 500).unwrap();
    assert_eq!(s.last_run_at("a", RunKind::Bench).unwrap(), Some(at(1)));
    assert_eq!(s.last_run_at("a", RunKind::Arena).unwrap(), Some(at(5)));
}

/// One champion per node, replaced by the next; listed by node.
pub fn champions_per_node(s: &dyn StateStore) {
    assert_eq!(s.champion("a").unwrap(), None);
    let first = Champion::from_run(&record("a", RunKind::Arena, "m1", 7.0, 1));
    s.save_champion(&first).unwrap();
    let second = Champion::from_run(&record("a", RunKind::Arena, "m2", 8.0, 2));
    s.save_champion(&second).unwrap();
    s.save_champion(&Champion::from_run(&record("b", RunKind::Arena, "x", 5.0, 3))).unwrap();
    assert_eq!(s.champion("a").unwrap(), Some(second));
    let nodes: Vec<String> = s.champions().unwrap().into_iter().map(|c| c.node).collect();
    assert_eq!(nodes, ["a", "b"]);
}

/// A benchmark asked for is stored per node, replaced, and withdrawn.
pub fn benchmarks_asked_for(s: &dyn StateStore) {
    let d = BenchDue { at: at(600), reason: "regression".into() };
    s.set_bench_due("a", Some(&d)).unwrap();
    let later = BenchDue { at: at(900), reason: "again".into() };
    s.set_bench_due("a", Some(&later)).unwrap();
    s.set_bench_due("b", Some(&d)).unwrap();
    let due = s.bench_due().unwrap();
    assert_eq!(due["a"], later);
    assert_eq!(due.len(), 2);
    s.set_bench_due("a", None).unwrap();
    assert_eq!(s.bench_due().unwrap().keys().collect::<Vec<_>>(), ["b"]);
}

/// Retention defaults survive: `Retention::default()` prunes nothing from a small store.
pub fn retention_default_keeps_small_history(s: &dyn StateStore) {
    for i in 0..3 {
        let _ = s.append_event(event(i, None, kinds::ALERT, i)).unwrap();
    }
    assert_eq!(s.prune(&Retention::default()).unwrap(), store::Pruned::default());
    assert_eq!(s.events_since(EventId(0), 10).unwrap().len(), 3);
}
