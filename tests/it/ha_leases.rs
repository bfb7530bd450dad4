//! Per-node leases in PostgreSQL (several reconciler replicas, issue #9): claim, renewal, expiry
//! and takeover, fencing of a stale holder's writes, the leader role, sharding N nodes over R
//! replicas (and rebalancing when one joins or leaves), and a replica that dies losing its nodes
//! to the others once its leases expire.
//!
//! Each test has a database of its own on `scripts/postgres.sh`'s server (see
//! `tests/it/support/pg.rs`). Lease durations are a few hundred milliseconds; a test that needs a
//! lease to expire sleeps just past it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::thread::sleep;
use std::time::{Duration, Instant};

use homeostat::plan::memory::{ClusterMemory, Memory, NodeMemory};
use homeostat::store::{
    ActionEnd, ActionStatus, LeaseSet, LeaseStore, NewAction, NewEvent, PostgresStore, ReplicaId,
    StateStore, StoreError, kinds,
};
use homeostat::time::Timestamp;

use crate::support::pg;

/// Long enough that a round of refreshes by every replica fits well inside it on a busy machine.
const LONG: Duration = Duration::from_secs(20);
/// Short leases for the tests that wait for an expiry.
const SHORT: Duration = Duration::from_millis(600);

fn nodes(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("node-{i:02}")).collect()
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn held(set: &LeaseSet) -> BTreeSet<String> {
    set.nodes.keys().cloned().collect()
}

fn lost(r: Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::LeaseLost { .. }))
}

/// Refreshes every replica in turn until two whole rounds in a row change nothing (a round
/// sees the heartbeats of the round before; at most 12 rounds); returns the last set of each.
fn settle(replicas: &[&PostgresStore], desired: &BTreeSet<String>) -> Vec<LeaseSet> {
    let mut last: Vec<LeaseSet> = Vec::new();
    let mut quiet = 0;
    for _ in 0..12 {
        let sets: Vec<LeaseSet> =
            replicas.iter().map(|r| r.refresh(desired, &none()).unwrap()).collect();
        let changed = sets.iter().any(|s| !s.gained.is_empty() || !s.released.is_empty());
        last = sets;
        quiet = if changed { 0 } else { quiet + 1 };
        if quiet == 2 {
            return last;
        }
    }
    panic!("leases did not settle: {:?}", last.iter().map(|s| s.nodes.len()).collect::<Vec<_>>());
}

/// Every desired node is held by exactly one replica, per the replicas' own sets and per the
/// database's lease table.
fn assert_exactly_one_owner(sets: &[LeaseSet], desired: &BTreeSet<String>, s: &PostgresStore) {
    let mut owners: BTreeMap<&str, Vec<&ReplicaId>> = BTreeMap::new();
    for set in sets {
        for n in set.nodes.keys() {
            owners.entry(n).or_default().push(&set.replica);
        }
    }
    for n in desired {
        let o = owners.get(n.as_str()).map_or(0, Vec::len);
        assert_eq!(o, 1, "node {n} has {o} owners");
    }
    let table = s.lease_table().unwrap();
    for set in sets {
        for n in set.nodes.keys() {
            assert_eq!(table.holder(n), Some(&set.replica), "table disagrees on {n}");
        }
    }
}

/// A lone replica claims every node and the leader role with fresh generations; renewing keeps
/// the same generations and reports nothing gained or lost; the lease table shows it.
#[test]
fn claim_and_renew() {
    let Some(db) = pg::TestDb::create() else { return };
    let a = db.open("a", LONG);
    let first = a.refresh(&nodes(6), &none()).unwrap();
    assert_eq!(held(&first), nodes(6));
    assert_eq!(first.gained.len(), 6);
    assert!(first.is_leader());
    assert!(first.nodes.values().all(|l| l.remaining() > LONG / 2));
    let gens: BTreeSet<i64> = first.nodes.values().map(|l| l.fence.generation).collect();
    assert_eq!(gens.len(), 6, "every claim draws its own generation");

    let second = a.refresh(&nodes(6), &none()).unwrap();
    assert!(second.gained.is_empty() && second.lost.is_empty() && second.released.is_empty());
    for (n, l) in &second.nodes {
        assert_eq!(l.fence, first.nodes[n].fence, "renewal keeps the fence of {n}");
    }
    assert_eq!(second.leader_fence(), first.leader_fence());

    let table = a.lease_table().unwrap();
    assert_eq!(table.held_by()[&ReplicaId::new("a")], 6);
    assert_eq!(table.leader(), Some(&ReplicaId::new("a")));
    assert!(table.nodes.iter().all(|r| r.expires_in_ms > 10_000));
    assert_eq!(table.replicas.len(), 1);
    assert!(table.replicas[0].live);
}

/// Nodes removed from the desired set are given back; new ones are claimed.
#[test]
fn desired_set_changes() {
    let Some(db) = pg::TestDb::create() else { return };
    let a = db.open("a", LONG);
    let _ = a.refresh(&nodes(4), &none()).unwrap();
    let mut desired = nodes(3);
    desired.insert("extra".into());
    let r = a.refresh(&desired, &none()).unwrap();
    assert_eq!(r.released, ["node-03"]);
    assert_eq!(r.gained, ["extra"]);
    assert_eq!(held(&r), desired);
    let table = a.lease_table().unwrap();
    assert!(table.holder("node-03").is_none());
}

/// A replica that stops renewing loses its leases after the TTL: before it, another replica
/// can claim none of them; after it, the other takes them all (new generations) and the leader
/// role, and the stale replica's next round reports them lost.
#[test]
fn expiry_and_takeover() {
    let Some(db) = pg::TestDb::create() else { return };
    let (a, b) = (db.open("a", SHORT), db.open("b", SHORT));
    let desired = nodes(4);
    let ra = a.refresh(&desired, &none()).unwrap();
    assert_eq!(held(&ra), desired);
    let rb = b.refresh(&desired, &none()).unwrap();
    assert!(rb.nodes.is_empty(), "a's leases are valid: b claims none");
    assert!(!rb.is_leader());

    sleep(SHORT + Duration::from_millis(100));
    assert!(ra.nodes.values().all(|l| !l.is_valid()), "a's local deadline passed first");
    let started = Instant::now();
    let rb = b.refresh(&desired, &none()).unwrap();
    assert_eq!(held(&rb), desired, "b takes every expired lease");
    assert!(rb.is_leader());
    assert_eq!(rb.live_replicas, 1);
    for (n, l) in &rb.nodes {
        assert!(l.fence.generation > ra.nodes[n].fence.generation);
    }
    eprintln!("takeover round: {:?}", started.elapsed());

    let ra2 = a.refresh(&desired, &none()).unwrap();
    assert!(ra2.nodes.is_empty(), "a gets nothing back while b holds it all");
    assert_eq!(ra2.lost.len(), 4);
    assert!(!ra2.is_leader());
}

/// Fencing: once a lease has expired (even before anyone takes it) the old holder's writes
/// are rejected; after another replica took the node over, every kind of write under the old
/// fence is rejected and leaves the new holder's data as it was.
#[test]
fn stale_holder_is_fenced() {
    let Some(db) = pg::TestDb::create() else { return };
    let (a, b) = (db.open("a", SHORT), db.open("b", SHORT));
    let desired = nodes(2);
    let ra = a.refresh(&desired, &none()).unwrap();
    let old = ra.fence("node-00").unwrap().clone();
    let old_leader = ra.leader_fence().unwrap().clone();
    let action = |secs: u64| NewAction {
        node: "node-00".into(),
        action: serde_json::json!({ "action": "restart" }),
        correlation: "c".into(),
        started: Timestamp(1_000 * secs),
    };
    let open_action = a.begin_action_fenced(&old, &action(1)).unwrap();
    let mine = NodeMemory { verify_failures: 1, ..NodeMemory::default() };
    a.save_node_fenced(&old, &mine).unwrap();

    sleep(SHORT + Duration::from_millis(100));
    // Expired, nobody has claimed it yet: already refused.
    assert!(lost(a.save_node_fenced(&old, &NodeMemory::default())));

    let rb = b.refresh(&desired, &none()).unwrap();
    let new = rb.fence("node-00").unwrap().clone();
    let theirs = NodeMemory { verify_failures: 7, ..NodeMemory::default() };
    b.save_node_fenced(&new, &theirs).unwrap();
    let closed = b.close_interrupted_actions_fenced(&new, Timestamp(5_000)).unwrap();
    assert_eq!(closed.iter().map(|c| c.id).collect::<Vec<_>>(), [open_action]);

    // Every write under a's old fences fails and changes nothing.
    assert!(lost(a.save_node_fenced(&old, &NodeMemory::default())));
    assert!(matches!(a.begin_action_fenced(&old, &action(2)), Err(StoreError::LeaseLost { .. })));
    let end = ActionEnd {
        status: ActionStatus::Succeeded,
        detail: serde_json::json!({}),
        ended: Timestamp(6_000),
    };
    assert!(lost(a.finish_action_fenced(&old, open_action, &end)));
    let ev =
        NewEvent::new(Timestamp(6_000), Some("node-00"), kinds::ALERT, serde_json::json!({}), "c");
    assert!(matches!(a.append_event_fenced(&old, ev.clone()), Err(StoreError::LeaseLost { .. })));
    assert!(matches!(a.append_event_fenced(&old_leader, ev), Err(StoreError::LeaseLost { .. })));
    assert!(lost(a.save_cluster_fenced(&old_leader, &ClusterMemory::default())));
    assert!(matches!(
        a.close_interrupted_actions_fenced(&old, Timestamp(7_000)),
        Err(StoreError::LeaseLost { .. })
    ));
    let batch = Memory {
        nodes: BTreeMap::from([("node-00".to_owned(), NodeMemory::default())]),
        ..Memory::default()
    };
    let rejected = a.save_memory_fenced(&ra, &batch).unwrap();
    assert_eq!(rejected.nodes, ["node-00"]);
    assert!(rejected.cluster);

    assert_eq!(a.load_node("node-00").unwrap(), Some(theirs), "b's state stands");
    let log = a.recent_actions("node-00", 10).unwrap();
    assert_eq!(log.len(), 1, "the refused action was never logged");
    assert_eq!(log[0].end.as_ref().map(|e| e.status), Some(ActionStatus::Interrupted));
    assert!(a.events_since(homeostat::store::EventId(0), 10).unwrap().is_empty());
}

/// 60 nodes over 3 replicas settle 20/20/20 with every node owned exactly once; a fourth
/// replica joining gets a share (nobody above share + slack), and after one leaves cleanly
/// (release_all) the other three take its nodes at once.
#[test]
fn sharding_and_rebalancing() {
    let Some(db) = pg::TestDb::create() else { return };
    let desired = nodes(60);
    let rs: Vec<PostgresStore> = (0..4).map(|i| db.open(&format!("r{i}"), LONG)).collect();
    let three: Vec<&PostgresStore> = rs.iter().take(3).collect();
    let sets = settle(&three, &desired);
    assert_eq!(sets.iter().map(|s| s.nodes.len()).collect::<Vec<_>>(), [20, 20, 20]);
    assert_exactly_one_owner(&sets, &desired, &rs[0]);
    assert_eq!(sets.iter().filter(|s| s.is_leader()).count(), 1, "one leader");

    let four: Vec<&PostgresStore> = rs.iter().collect();
    let sets = settle(&four, &desired);
    assert_exactly_one_owner(&sets, &desired, &rs[0]);
    let counts: Vec<usize> = sets.iter().map(|s| s.nodes.len()).collect();
    assert!(counts.iter().all(|&c| (14..=16).contains(&c)), "{counts:?}");
    assert_eq!(sets.iter().filter(|s| s.is_leader()).count(), 1, "one leader");

    rs[3].release_all().unwrap();
    let sets = settle(&three, &desired);
    assert_exactly_one_owner(&sets, &desired, &rs[0]);
    let counts: Vec<usize> = sets.iter().map(|s| s.nodes.len()).collect();
    assert!(counts.iter().all(|&c| (19..=21).contains(&c)), "{counts:?}");
    assert_eq!(rs[0].lease_table().unwrap().replicas.len(), 3, "r3 unregistered");
}

/// Nodes with an action in progress are never given back to rebalance.
#[test]
fn busy_nodes_are_kept() {
    let Some(db) = pg::TestDb::create() else { return };
    let desired = nodes(10);
    let (a, b) = (db.open("a", LONG), db.open("b", LONG));
    let _ = a.refresh(&desired, &none()).unwrap();
    let _ = b.refresh(&desired, &none()).unwrap(); // b is live now: a's share is 5
    let busy: BTreeSet<String> = nodes(10).into_iter().skip(4).collect();
    let ra = a.refresh(&desired, &busy).unwrap();
    assert!(!ra.released.is_empty(), "a gives some back");
    assert!(busy.iter().all(|n| ra.holds(n)), "but never a busy node: {:?}", ra.released);
}

/// Three replicas share 30 nodes; one dies (stops renewing, never releases). Within its lease
/// TTL (plus one round) the survivors own every node, each exactly once, and the dead
/// replica's fences are refused.
#[test]
fn dead_replica_nodes_taken_over_after_ttl() {
    let Some(db) = pg::TestDb::create() else { return };
    let ttl = Duration::from_millis(1500);
    let desired = nodes(30);
    let rs: Vec<PostgresStore> = (0..3).map(|i| db.open(&format!("r{i}"), ttl)).collect();
    let all: Vec<&PostgresStore> = rs.iter().collect();
    let sets = settle(&all, &desired);
    assert_exactly_one_owner(&sets, &desired, &rs[0]);
    // r2's last round: its leases expire `ttl` after the database began it, which is after
    // `last_round`.
    let last_round = Instant::now();
    let dead = rs[2].refresh(&desired, &none()).unwrap();
    assert_eq!(dead.nodes.len(), 10);

    // The survivors keep refreshing every ttl/3, as the daemon does.
    let survivors = &all[..2];
    let mut taken_over = None;
    while last_round.elapsed() < ttl * 3 {
        let sets: Vec<LeaseSet> =
            survivors.iter().map(|r| r.refresh(&desired, &none()).unwrap()).collect();
        let owned: usize = sets.iter().map(|s| s.nodes.len()).sum();
        if owned == desired.len() {
            assert_exactly_one_owner(&sets, &desired, &rs[0]);
            taken_over = Some(last_round.elapsed());
            break;
        }
        if last_round.elapsed() < ttl {
            assert_eq!(owned, 20, "before r2's leases expire nobody takes its nodes");
        }
        sleep(ttl / 3);
    }
    let took = taken_over.expect("the survivors took the dead replica's nodes over");
    assert!(took >= ttl, "not before the dead replica's leases expired ({took:?})");
    eprintln!("takeover after {took:?} (ttl {ttl:?})");
    for (n, l) in &dead.nodes {
        assert!(lost(rs[2].save_node_fenced(&l.fence, &NodeMemory::default())), "{n}");
    }
}

/// Three replicas refreshing at the same time, from three threads, for many rounds: no round
/// fails (no deadlock, no serialization error), the sets they end with are disjoint, and after
/// settling every node has exactly one owner.
#[test]
fn concurrent_rounds_never_double_own() {
    let Some(db) = pg::TestDb::create() else { return };
    let desired = nodes(60);
    let rs: Vec<PostgresStore> = (0..3).map(|i| db.open(&format!("r{i}"), LONG)).collect();
    let finals: Vec<LeaseSet> = std::thread::scope(|scope| {
        let handles: Vec<_> = rs
            .iter()
            .map(|r| {
                let desired = &desired;
                scope.spawn(move || {
                    let mut last = r.refresh(desired, &none()).unwrap();
                    for _ in 0..15 {
                        last = r.refresh(desired, &none()).unwrap();
                    }
                    last
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = BTreeSet::new();
    for set in &finals {
        for n in set.nodes.keys() {
            assert!(seen.insert(n.clone()), "{n} is in two replicas' sets");
        }
    }
    let all: Vec<&PostgresStore> = rs.iter().collect();
    let sets = settle(&all, &desired);
    assert_exactly_one_owner(&sets, &desired, &rs[0]);
    assert_eq!(sets.iter().filter(|s| s.is_leader()).count(), 1);
}
