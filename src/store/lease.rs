//! Leases: which reconciler replica may act on which node, and which one takes cluster-wide
//! decisions (issue #9, R9).
//!
//! With PostgreSQL several replicas share one database. Each node has a lease row (holder,
//! generation, expiry); a replica acts on a node only while it holds the node's lease, and every
//! write it makes about the node carries a [`Fence`] (the holder and the generation of its
//! lease), which the database checks in the same statement: once another replica has taken the
//! node, the old holder's late writes are rejected with [`StoreError::LeaseLost`]. One more lease
//! row, the `leader` role, is elected the same way.
//!
//! With SQLite there is one process (the [`RunLock`](super::RunLock) proves it): [`SoleHolder`]
//! gives it every node and the leader role, never expiring, and the SQLite store accepts every
//! fence. The daemon's code is the same for both.
//!
//! # What the daemon does
//! 1. Every [`LeaseOptions::renew_every`] (a third of the lease), call [`LeaseStore::refresh`]
//!    with the desired node names and the nodes it is acting on right now. It returns the
//!    [`LeaseSet`]: the leases held after this round (renewed, newly claimed), those lost, those
//!    given back to rebalance, and the leader lease if this replica holds it.
//! 2. Observe, plan and act only on nodes in the set; before starting an action on a node, check
//!    [`Lease::remaining`] (local monotonic time, conservative) covers the action, and pass the
//!    lease's [`Fence`] to every write about the node (`StateStore::*_fenced`). A write that
//!    fails with [`StoreError::LeaseLost`] means: stop acting on that node, drop it until a
//!    later refresh hands it back.
//! 3. On gaining a node (`LeaseSet::gained`), close the previous holder's unfinished actions
//!    (`StateStore::close_interrupted_actions_fenced`) and re-plan from what it observes.
//! 4. Cluster-wide decisions (mass-failure hold, routing table, notifications) only while
//!    `LeaseSet::leader` is `Some`, with its fence.
//! 5. On shutdown, [`LeaseStore::release_all`]: the others take the nodes over at once instead
//!    of after the expiry.
//!
//! If a refresh fails (database unreachable), keep the previous set: its leases expire on their
//! own local deadline, before the database lets another replica take them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The name a replica claims leases under: unique per process run (a restarted process is a new
/// replica, so it never mistakes an old lease for its own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplicaId(String);

impl ReplicaId {
    pub fn new(id: impl Into<String>) -> Self {
        ReplicaId(id.into())
    }

    /// `<host>-<pid>-<8 random hex digits>`.
    pub fn generate() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().chars().filter(|c| c.is_ascii_graphic()).take(40).collect())
            .filter(|h: &String| !h.is_empty())
            .unwrap_or_else(|| "replica".to_owned());
        ReplicaId(format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a lease is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseKey {
    /// Acting on one node.
    Node(String),
    /// Cluster-wide decisions: the mass-failure hold, the routing table, notifications.
    Leader,
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseKey::Node(n) => write!(f, "node {n}"),
            LeaseKey::Leader => f.write_str("the leader role"),
        }
    }
}

/// Proof that a replica held a lease at a generation. Passed with every write the lease covers;
/// the PostgreSQL store rejects the write unless the lease is still held by `holder` at exactly
/// `generation` and has not expired (database time).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub key: LeaseKey,
    pub holder: ReplicaId,
    /// Increases with every claim, across all leases; never repeats.
    pub generation: i64,
}

impl Fence {
    /// The node this fence covers (None for the leader role).
    pub fn node(&self) -> Option<&str> {
        match &self.key {
            LeaseKey::Node(n) => Some(n),
            LeaseKey::Leader => None,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.key == LeaseKey::Leader
    }

    /// `Ok` if this fence covers writes about `node` (its own node's fence, or the leader's for
    /// a cluster-wide write when `node` is None).
    pub fn check_node(&self, node: Option<&str>) -> Result<(), StoreError> {
        match (&self.key, node) {
            (LeaseKey::Node(n), Some(m)) if n == m => Ok(()),
            (LeaseKey::Leader, None) => Ok(()),
            _ => Err(StoreError::WrongFence {
                fence: self.key.to_string(),
                target: node
                    .map_or_else(|| "cluster-wide state".to_owned(), |n| format!("node {n}")),
            }),
        }
    }

    /// `Ok` if this is the leader's fence.
    pub fn check_leader(&self) -> Result<(), StoreError> {
        self.check_node(None)
    }

    /// The node of a node fence; `WrongFence` for the leader's.
    pub fn require_node(&self) -> Result<&str, StoreError> {
        self.node().ok_or_else(|| StoreError::WrongFence {
            fence: self.key.to_string(),
            target: "a node".to_owned(),
        })
    }

    /// `Ok` if this fence may record an event about `node`: a node's fence for its own node's
    /// events, the leader's for any event (cluster-wide ones, and alerts it sends once for all).
    pub fn check_event(&self, node: Option<&str>) -> Result<(), StoreError> {
        if self.is_leader() { Ok(()) } else { self.check_node(node) }
    }
}

/// What a fenced batch save left unsaved because its lease was lost (or never held).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[must_use = "nodes whose lease was lost must no longer be acted on"]
pub struct Rejected {
    /// Nodes whose memory was not saved.
    pub nodes: Vec<String>,
    /// The services' and the cluster's memory was not saved (no valid leader lease).
    pub cluster: bool,
}

impl Rejected {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && !self.cluster
    }
}

/// A lease held after a refresh: its fence, and until when this replica may rely on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub fence: Fence,
    /// Local monotonic deadline, conservative: the instant the refresh was *sent* plus the lease
    /// duration, so it passes no later than the database's expiry (clock rates being equal).
    /// None: never expires ([`SoleHolder`]).
    pub valid_until: Option<Instant>,
}

impl Lease {
    /// Time left on the local deadline (zero once passed; `Duration::MAX` if it never expires).
    pub fn remaining(&self) -> Duration {
        self.valid_until.map_or(Duration::MAX, |t| t.saturating_duration_since(Instant::now()))
    }

    /// Whether the local deadline is still ahead. Check before starting an action.
    pub fn is_valid(&self) -> bool {
        self.remaining() > Duration::ZERO
    }
}

/// The outcome of one [`LeaseStore::refresh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSet {
    pub replica: ReplicaId,
    /// Node leases held now (renewed or claimed in this round), by node.
    pub nodes: BTreeMap<String, Lease>,
    /// The leader lease, if this replica holds it now.
    pub leader: Option<Lease>,
    /// Nodes claimed in this round (not held before it).
    pub gained: Vec<String>,
    /// Nodes held after the previous round that could not be renewed at the same generation
    /// (expired, taken over). A node that expired and was claimed again in this round is in
    /// both `lost` and `gained`: work under its old fence must stop.
    pub lost: Vec<String>,
    /// Nodes given back in this round: above the fair share, or no longer desired.
    pub released: Vec<String>,
    /// Replicas with a live heartbeat, this one included.
    pub live_replicas: u32,
    /// The fair share this round aimed at: ceil(desired nodes / live replicas).
    pub share: u32,
}

impl LeaseSet {
    /// The fence for writes about `node`, if held.
    pub fn fence(&self, node: &str) -> Option<&Fence> {
        self.nodes.get(node).map(|l| &l.fence)
    }

    /// The leader fence, if this replica is the leader.
    pub fn leader_fence(&self) -> Option<&Fence> {
        self.leader.as_ref().map(|l| &l.fence)
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    /// Whether `node` is held and its local deadline is ahead.
    pub fn holds(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(Lease::is_valid)
    }
}

/// Lease timing and balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a lease (and a replica's heartbeat) lasts after a refresh. A replica that dies
    /// loses its nodes this long after its last refresh.
    pub ttl: Duration,
    /// How many nodes above its fair share a replica may claim when they would otherwise stay
    /// without a holder, and may keep before it gives the surplus back.
    pub slack: u32,
}

impl Default for LeaseOptions {
    /// 30 s leases renewed every 10 s; slack 1.
    fn default() -> Self {
        LeaseOptions { ttl: Duration::from_secs(30), slack: 1 }
    }
}

impl LeaseOptions {
    /// How often to refresh: a third of the lease, so two refreshes can fail before it expires.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

/// Who holds what, for `homeostat status` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseTable {
    /// Every registered replica, live or not, by id.
    pub replicas: Vec<ReplicaRow>,
    /// The leader role's row.
    pub leader: Option<LeaseRow>,
    /// One row per node that has a lease row, by node.
    pub nodes: Vec<LeaseRow>,
}

impl LeaseTable {
    /// Valid node leases per holder.
    pub fn held_by(&self) -> BTreeMap<ReplicaId, usize> {
        let mut out = BTreeMap::new();
        for r in &self.nodes {
            if let (Some(h), true) = (&r.holder, r.valid) {
                *out.entry(h.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    /// The holder of `node`'s lease, if valid now.
    pub fn holder(&self, node: &str) -> Option<&ReplicaId> {
        let row = self.nodes.iter().find(|r| r.node.as_deref() == Some(node))?;
        row.valid.then_some(row.holder.as_ref()).flatten()
    }

    /// The current leader, if its lease is valid.
    pub fn leader(&self) -> Option<&ReplicaId> {
        self.leader.as_ref().filter(|r| r.valid).and_then(|r| r.holder.as_ref())
    }
}

/// A replica's heartbeat row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub replica: ReplicaId,
    /// Whether its heartbeat has not expired (database time).
    pub live: bool,
    /// Milliseconds until (positive) or since (negative) its heartbeat expires.
    pub expires_in_ms: i64,
}

/// One lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The node (None for the leader role).
    pub node: Option<String>,
    pub holder: Option<ReplicaId>,
    pub generation: i64,
    /// Held and not expired (database time).
    pub valid: bool,
    /// Milliseconds until (positive) or since (negative) it expires.
    pub expires_in_ms: i64,
}

/// The lease side of a store, used by the daemon. Synchronous like `StateStore` (call it on a
/// blocking thread). Implemented by `PostgresStore` and by [`SoleHolder`].
pub trait LeaseStore: Send + Sync {
    /// This replica's id.
    fn replica(&self) -> &ReplicaId;

    /// Lease timing.
    fn options(&self) -> LeaseOptions;

    /// One lease round, in one transaction: renew this replica's heartbeat and its leases on
    /// `desired` nodes, give back leases of nodes no longer desired and those above the fair
    /// share (never one in `busy`: nodes with an action in progress), claim free or expired
    /// leases up to the fair share (`FOR UPDATE SKIP LOCKED`), and take or renew the leader
    /// role. A lease not renewed before its expiry is lost; it comes back only by a new claim,
    /// with a new generation.
    fn refresh(
        &self,
        desired: &BTreeSet<String>,
        busy: &BTreeSet<String>,
    ) -> Result<LeaseSet, StoreError>;

    /// Gives back the leases of `nodes` held by this replica (e.g. before leaving them).
    fn release(&self, nodes: &[String]) -> Result<Vec<String>, StoreError>;

    /// Gives back every lease and the leader role, and removes the heartbeat (shutdown).
    fn release_all(&self) -> Result<(), StoreError>;

    /// Who holds what.
    fn lease_table(&self) -> Result<LeaseTable, StoreError>;

    /// Whether other replicas may hold leases (PostgreSQL): status shows holders only then.
    fn shared(&self) -> bool {
        true
    }
}

/// How many nodes a replica claims and gives back in one round. Pure: the inputs are counted in
/// the same transaction that then claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// ceil(total / live).
    pub share: u32,
    pub claim: u32,
    pub give_back: u32,
}

/// The balancing rule.
///
/// - `share` = ceil(`total` / `live`).
/// - Below its share, a replica claims free nodes up to its share.
/// - `deficit` is the other live replicas' shortfall below floor(`total` / `live`).
/// - At or above its share, a replica claims free nodes that the others' shortfall would not
///   absorb, up to `share + slack`: nodes nobody else will take this round (e.g. a dead
///   replica's, while its heartbeat has not yet expired) do not stay orphaned.
/// - It gives back whatever it holds above `share + slack` (replicas joined, nodes removed), and
///   above the floor share (`total / live`), what the others' shortfall below that floor
///   (`deficit`) needs beyond the free nodes.
///
/// A replica never claims and gives back in the same round, and it gives back nodes above the
/// rounded-down share only for a shortfall or beyond the slack, so holdings settle instead of
/// oscillating.
pub fn balance(total: u32, live: u32, held: u32, free: u32, deficit: u32, slack: u32) -> Balance {
    let share = total.div_ceil(live.max(1));
    let cap = share.saturating_add(slack);
    let claim = if held < share {
        (share - held).min(free)
    } else if free > deficit && held < cap {
        (cap - held).min(free - deficit)
    } else {
        0
    };
    // The shortfall is counted below the floor share (`total / live`): with an uneven total
    // some replicas hold `share` and some `share - 1`, and neither owes the other a node.
    let floor = total / live.max(1);
    let needed = if deficit > free { held.saturating_sub(floor).min(deficit - free) } else { 0 };
    let give_back = held.saturating_sub(cap).max(needed);
    Balance { share, claim, give_back }
}

/// The single-process lease holder (SQLite): holds every desired node and the leader role, at
/// generation 1, never expiring. Keeps the daemon's code the same with or without PostgreSQL.
#[derive(Debug)]
pub struct SoleHolder {
    replica: ReplicaId,
    held: Mutex<BTreeSet<String>>,
}

impl SoleHolder {
    pub fn new(replica: ReplicaId) -> Self {
        SoleHolder { replica, held: Mutex::new(BTreeSet::new()) }
    }

    fn lease(&self, key: LeaseKey) -> Lease {
        Lease {
            fence: Fence { key, holder: self.replica.clone(), generation: 1 },
            valid_until: None,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LeaseStore for SoleHolder {
    fn replica(&self) -> &ReplicaId {
        &self.replica
    }

    fn shared(&self) -> bool {
        false
    }

    fn options(&self) -> LeaseOptions {
        LeaseOptions::default()
    }

    fn refresh(
        &self,
        desired: &BTreeSet<String>,
        _busy: &BTreeSet<String>,
    ) -> Result<LeaseSet, StoreError> {
        let mut held = self.held();
        let gained = desired.difference(&held).cloned().collect();
        let released = held.difference(desired).cloned().collect();
        held.clone_from(desired);
        Ok(LeaseSet {
            replica: self.replica.clone(),
            nodes: desired
                .iter()
                .map(|n| (n.clone(), self.lease(LeaseKey::Node(n.clone()))))
                .collect(),
            leader: Some(self.lease(LeaseKey::Leader)),
            gained,
            lost: Vec::new(),
            released,
            live_replicas: 1,
            share: u32::try_from(desired.len()).unwrap_or(u32::MAX),
        })
    }

    fn release(&self, nodes: &[String]) -> Result<Vec<String>, StoreError> {
        let mut held = self.held();
        Ok(nodes.iter().filter(|n| held.remove(*n)).cloned().collect())
    }

    fn release_all(&self) -> Result<(), StoreError> {
        self.held().clear();
        Ok(())
    }

    fn lease_table(&self) -> Result<LeaseTable, StoreError> {
        let row = |node: Option<String>| LeaseRow {
            node,
            holder: Some(self.replica.clone()),
            generation: 1,
            valid: true,
            expires_in_ms: i64::MAX,
        };
        Ok(LeaseTable {
            replicas: vec![ReplicaRow {
                replica: self.replica.clone(),
                live: true,
                expires_in_ms: i64::MAX,
            }],
            leader: Some(row(None)),
            nodes: self.held().iter().map(|n| row(Some(n.clone()))).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates rounds of the balancing rule for replicas that each see the counts left by the
    /// previous ones, until nothing changes; returns the holdings.
    fn settle(total: u32, mut held: Vec<u32>, slack: u32) -> Vec<u32> {
        for _ in 0..20 {
            let mut changed = false;
            for i in 0..held.len() {
                let live = held.len() as u32;
                let free = total - held.iter().sum::<u32>();
                let floor = total / live;
                let deficit = held
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &h)| floor.saturating_sub(h))
                    .sum();
                let b = balance(total, live, held[i], free, deficit, slack);
                if b.claim > 0 || b.give_back > 0 {
                    changed = true;
                }
                held[i] = held[i] + b.claim - b.give_back;
            }
            if !changed {
                return held;
            }
        }
        panic!("did not settle: {held:?}");
    }

    /// Three replicas starting empty split 60 nodes 20/20/20.
    #[test]
    fn even_split_from_empty() {
        assert_eq!(settle(60, vec![0, 0, 0], 1), [20, 20, 20]);
    }

    /// A replica joining two that hold everything gets a share; nobody ends above it.
    #[test]
    fn joining_replica_gets_a_share() {
        let out = settle(60, vec![30, 30, 0], 1);
        assert_eq!(out.iter().sum::<u32>(), 60);
        assert!(out.iter().all(|&h| h == 20), "{out:?}");
    }

    /// When a replica leaves, the survivors take all its nodes.
    #[test]
    fn survivors_take_over() {
        let out = settle(60, vec![20, 20], 1);
        assert_eq!(out, [30, 30]);
    }

    /// With an uneven count every node is still owned and shares differ by at most one.
    #[test]
    fn uneven_total() {
        let out = settle(61, vec![0, 0, 0], 0);
        assert_eq!(out.iter().sum::<u32>(), 61);
        assert!(out.iter().max().unwrap() - out.iter().min().unwrap() <= 1, "{out:?}");
    }

    /// Orphans nobody else needs are claimed beyond the share (up to the slack), and a replica
    /// never gives back nodes a newcomer does not need.
    #[test]
    fn slack_claims_and_no_needless_give_back() {
        // 3 live, 60 nodes, others full: 5 free nodes and no deficit → claim slack 2 of them.
        let b = balance(60, 3, 20, 5, 0, 2);
        assert_eq!((b.share, b.claim, b.give_back), (20, 2, 0));
        // Above share but within slack and nobody short: keep.
        assert_eq!(balance(60, 3, 22, 0, 0, 2).give_back, 0);
        // Above share + slack: give the rest back.
        assert_eq!(balance(60, 3, 25, 0, 0, 2).give_back, 3);
        // A newcomer short of 20 with nothing free: give back down to the share.
        assert_eq!(balance(60, 3, 22, 0, 20, 2).give_back, 2);
    }

    /// The sole holder holds every desired node and the leader role, never expiring, and
    /// reports gained and released nodes between rounds.
    #[test]
    fn sole_holder_holds_everything() {
        let s = SoleHolder::new(ReplicaId::new("only"));
        let set = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        let r = s.refresh(&set(&["a", "b"]), &BTreeSet::new()).unwrap();
        assert!(r.holds("a") && r.holds("b") && r.is_leader());
        assert_eq!(r.gained, ["a", "b"]);
        assert_eq!(r.nodes["a"].remaining(), Duration::MAX);
        let r = s.refresh(&set(&["b", "c"]), &BTreeSet::new()).unwrap();
        assert_eq!((r.gained, r.released), (vec!["c".to_owned()], vec!["a".to_owned()]));
        let t = s.lease_table().unwrap();
        assert_eq!(t.holder("c"), Some(&ReplicaId::new("only")));
        assert_eq!(t.leader(), Some(&ReplicaId::new("only")));
    }

    /// A node's fence covers writes about that node only; the leader's covers cluster-wide ones.
    #[test]
    fn fence_scope() {
        let f =
            Fence { key: LeaseKey::Node("m1".into()), holder: ReplicaId::new("r"), generation: 3 };
        assert!(f.check_node(Some("m1")).is_ok());
        assert!(matches!(f.check_node(Some("m2")), Err(StoreError::WrongFence { .. })));
        assert!(f.check_leader().is_err());
        let l = Fence { key: LeaseKey::Leader, ..f };
        assert!(l.check_leader().is_ok());
        assert!(l.check_node(Some("m1")).is_err());
    }
}
