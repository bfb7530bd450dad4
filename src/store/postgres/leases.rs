//! [`LeaseStore`] for PostgreSQL: one transaction per lease round. See `store::lease` for what
//! the daemon does with it, and `lease::balance` for the balancing rule.
//!
//! All times are the database's (`now()`): a lease is valid while `expires_at > now()`. The
//! replica keeps only a conservative local deadline per lease (the instant it *sent* the round,
//! plus the lease duration), so a paused or cut-off replica stops relying on a lease before the
//! database lets anyone else claim it.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use super::conn::Conn;
use super::{PostgresStore, lock, pg};
use crate::store::StoreError;
use crate::store::lease::{
    Fence, Lease, LeaseKey, LeaseOptions, LeaseRow, LeaseSet, LeaseStore, LeaseTable, ReplicaId,
    ReplicaRow, balance,
};

/// What a store handle remembers between lease rounds.
#[derive(Debug, Default)]
pub(super) struct Memory {
    /// Node leases held after the last successful round: node → generation.
    held: BTreeMap<String, i64>,
    /// Hash of the desired set whose lease rows were last created (skip re-creating them).
    synced: Option<u64>,
    /// Rounds since the lease rows were last created: they are re-created every
    /// [`RESYNC_EVERY`] rounds anyway, in case a leader with an older desired set forgot some.
    since_sync: u32,
}

/// See [`Memory::since_sync`]: one `INSERT .. ON CONFLICT DO NOTHING` of the desired names every
/// this many rounds (about every 5 minutes with the default 10 s rounds).
const RESYNC_EVERY: u32 = 30;

mod sql {
    /// `$1` replica, `$2` lease duration in ms.
    pub const HEARTBEAT: &str = "INSERT INTO replicas (replica, heartbeat_at, expires_at) \
         VALUES ($1, now(), now() + $2::bigint * interval '1 millisecond') \
         ON CONFLICT (replica) DO UPDATE \
         SET heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at";
    /// `$1` desired nodes (sorted: concurrent rounds insert in the same order, no deadlock).
    pub const ADD_ROWS: &str = "INSERT INTO node_leases (node) \
         SELECT unnest($1::text[]) ON CONFLICT (node) DO NOTHING";
    /// `$1` replica, `$2` desired nodes: give back leases of nodes no longer desired.
    pub const DROP_UNDESIRED: &str = "UPDATE node_leases l \
         SET holder = NULL, expires_at = '-infinity' \
         WHERE l.holder = $1 AND NOT EXISTS \
           (SELECT 1 FROM unnest($2::text[]) AS d(node) WHERE d.node = l.node) \
         RETURNING l.node";
    /// `$1` replica, `$2` ms, `$3` desired: renews the unexpired leases this replica holds.
    pub const RENEW: &str = "UPDATE node_leases l \
         SET expires_at = now() + $2::bigint * interval '1 millisecond' \
         FROM unnest($3::text[]) AS d(node) \
         WHERE l.node = d.node AND l.holder = $1 AND l.expires_at > now() \
         RETURNING l.node, l.generation";
    /// `$1` desired: live replicas and valid leases per holder (holders with no live
    /// heartbeat too, so the free count is right).
    pub const COUNTS: &str = "SELECT coalesce(r.replica, h.holder), r.replica IS NOT NULL, \
           coalesce(h.n, 0) \
         FROM (SELECT replica FROM replicas WHERE expires_at > now()) AS r \
         FULL JOIN (SELECT l.holder, count(*) AS n FROM node_leases l \
             JOIN unnest($1::text[]) AS d(node) ON d.node = l.node \
             WHERE l.holder IS NOT NULL AND l.expires_at > now() GROUP BY l.holder) AS h \
           ON h.holder = r.replica";
    /// `$1` replica, `$2` desired, `$3` busy, `$4` how many: gives back the last-named
    /// non-busy leases.
    pub const GIVE_BACK: &str = "UPDATE node_leases \
         SET holder = NULL, expires_at = '-infinity' \
         WHERE holder = $1 AND node IN (SELECT l.node FROM node_leases l \
           JOIN unnest($2::text[]) AS d(node) ON d.node = l.node \
           WHERE l.holder = $1 AND l.expires_at > now() \
             AND NOT EXISTS (SELECT 1 FROM unnest($3::text[]) AS b(node) WHERE b.node = l.node) \
           ORDER BY l.node DESC LIMIT $4) \
         RETURNING node";
    /// `$1` replica, `$2` ms, `$3` desired, `$4` how many: claims free or expired leases,
    /// skipping rows another replica is claiming or writing under right now.
    pub const CLAIM: &str = "UPDATE node_leases l \
         SET holder = $1, generation = nextval('lease_generation'), acquired_at = now(), \
           expires_at = now() + $2::bigint * interval '1 millisecond' \
         FROM (SELECT c.node FROM node_leases c JOIN unnest($3::text[]) AS d(node) \
             ON d.node = c.node \
           WHERE c.holder IS NULL OR c.expires_at <= now() \
           ORDER BY c.node LIMIT $4 FOR UPDATE OF c SKIP LOCKED) AS free \
         WHERE l.node = free.node \
         RETURNING l.node, l.generation";
    /// `$1` replica, `$2` ms: renews the leader role if this replica holds it unexpired, takes
    /// it (new generation) if it is free or expired; nothing if another replica holds it.
    pub const LEADER: &str = "UPDATE cluster_leases c \
         SET holder = $1, \
           generation = CASE WHEN c.holder = $1 AND c.expires_at > now() \
             THEN c.generation ELSE nextval('lease_generation') END, \
           acquired_at = CASE WHEN c.holder = $1 AND c.expires_at > now() \
             THEN c.acquired_at ELSE now() END, \
           expires_at = now() + $2::bigint * interval '1 millisecond' \
         FROM (SELECT role FROM cluster_leases WHERE role = 'leader' \
             AND (holder = $1 OR holder IS NULL OR expires_at <= now()) \
           FOR UPDATE SKIP LOCKED) AS s \
         WHERE c.role = s.role \
         RETURNING c.generation";
    /// Leader's housekeeping. `$1` desired: forgets free lease rows of nodes not desired, and
    /// heartbeats dead for more than `$2` ms.
    pub const FORGET_UNDESIRED: &str = "DELETE FROM node_leases l \
         WHERE (l.holder IS NULL OR l.expires_at <= now()) AND NOT EXISTS \
           (SELECT 1 FROM unnest($1::text[]) AS d(node) WHERE d.node = l.node)";
    pub const FORGET_DEAD: &str =
        "DELETE FROM replicas WHERE expires_at < now() - $1::bigint * interval '1 millisecond'";

    pub const RELEASE: &str = "UPDATE node_leases l \
         SET holder = NULL, expires_at = '-infinity' \
         FROM unnest($2::text[]) AS d(node) WHERE l.node = d.node AND l.holder = $1 \
         RETURNING l.node";
    pub const RELEASE_ALL_NODES: &str =
        "UPDATE node_leases SET holder = NULL, expires_at = '-infinity' WHERE holder = $1";
    pub const RELEASE_LEADER: &str =
        "UPDATE cluster_leases SET holder = NULL, expires_at = '-infinity' WHERE holder = $1";
    pub const UNREGISTER: &str = "DELETE FROM replicas WHERE replica = $1";

    /// Milliseconds from now to `expires_at` (clamped for '-infinity').
    macro_rules! expires_in {
        () => {
            "CASE WHEN isfinite(expires_at) \
               THEN (extract(epoch FROM expires_at - now()) * 1000)::bigint \
               ELSE -9223372036854775807 END"
        };
    }
    pub const TABLE_REPLICAS: &str = concat!(
        "SELECT replica, expires_at > now(), ",
        expires_in!(),
        " FROM replicas ORDER BY replica"
    );
    pub const TABLE_LEADER: &str = concat!(
        "SELECT holder, generation, holder IS NOT NULL AND expires_at > now(), ",
        expires_in!(),
        " FROM cluster_leases WHERE role = 'leader'"
    );
    pub const TABLE_NODES: &str = concat!(
        "SELECT node, holder, generation, holder IS NOT NULL AND expires_at > now(), ",
        expires_in!(),
        " FROM node_leases ORDER BY node"
    );
}

/// The database's answer to one round.
struct Round {
    renewed: Vec<(String, i64)>,
    claimed: Vec<(String, i64)>,
    released: Vec<String>,
    leader: Option<i64>,
    live: u32,
    share: u32,
}

fn hash_of(desired: &BTreeSet<String>) -> u64 {
    let mut h = DefaultHasher::new();
    desired.hash(&mut h);
    h.finish()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl LeaseStore for PostgresStore {
    fn replica(&self) -> &ReplicaId {
        &self.opts.replica
    }

    fn options(&self) -> LeaseOptions {
        self.opts.leases
    }

    fn refresh(
        &self,
        desired: &BTreeSet<String>,
        busy: &BTreeSet<String>,
    ) -> Result<LeaseSet, StoreError> {
        self.writable()?;
        let digest = hash_of(desired);
        let sync_rows = {
            let mem = lock(&self.leases);
            mem.synced != Some(digest) || mem.since_sync >= RESYNC_EVERY
        };
        let replica = self.opts.replica.as_str().to_owned();
        let ttl_ms = i64::try_from(self.opts.leases.ttl.as_millis()).unwrap_or(i64::MAX);
        let slack = self.opts.leases.slack;
        let names: Vec<String> = desired.iter().cloned().collect();
        let busy: Vec<String> = busy.iter().cloned().collect();
        // Before the transaction starts, so the local deadline is no later than the database's.
        let sent = Instant::now();
        let round = self.run("renew leases", move |sh| async move {
            let fail = pg("renew leases");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.transaction();
            let tx = client.transaction().await.map_err(fail)?;
            q.execute(&tx, sql::HEARTBEAT, &[&replica, &ttl_ms]).await.map_err(fail)?;
            let mut released = Vec::new();
            if sync_rows {
                q.execute(&tx, sql::ADD_ROWS, &[&names]).await.map_err(fail)?;
                for r in
                    q.query(&tx, sql::DROP_UNDESIRED, &[&replica, &names]).await.map_err(fail)?
                {
                    released.push(r.try_get::<_, String>(0).map_err(fail)?);
                }
            }
            let pairs = |rows: Vec<tokio_postgres::Row>| -> Result<Vec<(String, i64)>, StoreError> {
                rows.iter()
                    .map(|r| Ok((r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?)))
                    .collect()
            };
            let renewed =
                pairs(q.query(&tx, sql::RENEW, &[&replica, &ttl_ms, &names]).await.map_err(fail)?)?;

            let mut live = 0u32;
            let mut held_by: Vec<(bool, u32)> = Vec::new(); // (live, held) of other replicas
            let mut valid_total = 0u32;
            for r in q.query(&tx, sql::COUNTS, &[&names]).await.map_err(fail)? {
                let who: String = r.try_get(0).map_err(fail)?;
                let is_live: bool = r.try_get(1).map_err(fail)?;
                let n = u32::try_from(r.try_get::<_, i64>(2).map_err(fail)?).unwrap_or(u32::MAX);
                valid_total = valid_total.saturating_add(n);
                live += u32::from(is_live);
                if who != replica {
                    held_by.push((is_live, n));
                }
            }
            let total = count(names.len());
            let free = total.saturating_sub(valid_total);
            let held = count(renewed.len());
            // The other live replicas' shortfall below the floor share (see `balance`).
            let floor = total / live.max(1);
            let deficit: u32 =
                held_by.iter().filter(|(l, _)| *l).map(|(_, n)| floor.saturating_sub(*n)).sum();
            let plan = balance(total, live, held, free, deficit, slack);

            if plan.give_back > 0 {
                let n = i64::from(plan.give_back);
                for r in q
                    .query(&tx, sql::GIVE_BACK, &[&replica, &names, &busy, &n])
                    .await
                    .map_err(fail)?
                {
                    released.push(r.try_get::<_, String>(0).map_err(fail)?);
                }
            }
            let claimed = if plan.claim > 0 {
                let n = i64::from(plan.claim);
                pairs(
                    q.query(&tx, sql::CLAIM, &[&replica, &ttl_ms, &names, &n])
                        .await
                        .map_err(fail)?,
                )?
            } else {
                Vec::new()
            };
            let leader = q
                .query_opt(&tx, sql::LEADER, &[&replica, &ttl_ms])
                .await
                .map_err(fail)?
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()
                .map_err(fail)?;
            if leader.is_some() {
                if sync_rows {
                    q.execute(&tx, sql::FORGET_UNDESIRED, &[&names]).await.map_err(fail)?;
                }
                let keep_dead_ms = ttl_ms.saturating_mul(10);
                q.execute(&tx, sql::FORGET_DEAD, &[&keep_dead_ms]).await.map_err(fail)?;
            }
            tx.commit().await.map_err(fail)?;
            Ok(Round { renewed, claimed, released, leader, live, share: plan.share })
        })?;

        let valid_until = sent.checked_add(self.opts.leases.ttl);
        let lease = |key: LeaseKey, generation: i64| Lease {
            fence: Fence { key, holder: self.opts.replica.clone(), generation },
            valid_until,
        };
        let mut mem = lock(&self.leases);
        if sync_rows {
            mem.synced = Some(digest);
            mem.since_sync = 0;
        } else {
            mem.since_sync += 1;
        }
        let mut nodes = BTreeMap::new();
        for (node, generation) in round.renewed.iter().chain(&round.claimed) {
            nodes.insert(node.clone(), lease(LeaseKey::Node(node.clone()), *generation));
        }
        let released_set: BTreeSet<&String> = round.released.iter().collect();
        for n in &round.released {
            nodes.remove(n);
        }
        // Lost: held before and not renewed at the same generation. A node that expired and was
        // claimed again in this round is both lost (work under the old fence must stop) and
        // gained (a new fence).
        let lost = mem
            .held
            .iter()
            .filter(|(n, g)| {
                !released_set.contains(n)
                    && nodes.get(*n).is_none_or(|l: &Lease| l.fence.generation != **g)
            })
            .map(|(n, _)| n.clone())
            .collect();
        let gained = round.claimed.iter().map(|(n, _)| n.clone()).collect();
        mem.held = nodes.iter().map(|(n, l)| (n.clone(), l.fence.generation)).collect();
        Ok(LeaseSet {
            replica: self.opts.replica.clone(),
            nodes,
            leader: round.leader.map(|g| lease(LeaseKey::Leader, g)),
            gained,
            lost,
            released: round.released,
            live_replicas: round.live,
            share: round.share,
        })
    }

    fn release(&self, nodes: &[String]) -> Result<Vec<String>, StoreError> {
        self.writable()?;
        let replica = self.opts.replica.as_str().to_owned();
        let names = nodes.to_vec();
        let mut released = self.run("release leases", move |sh| async move {
            let fail = pg("release leases");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            let rows = q.query(&*client, sql::RELEASE, &[&replica, &names]).await.map_err(fail)?;
            rows.iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)
        })?;
        released.sort();
        let mut mem = lock(&self.leases);
        for n in &released {
            mem.held.remove(n);
        }
        Ok(released)
    }

    fn release_all(&self) -> Result<(), StoreError> {
        self.writable()?;
        let replica = self.opts.replica.as_str().to_owned();
        self.run("release leases", move |sh| async move {
            let fail = pg("release leases");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.transaction();
            let tx = client.transaction().await.map_err(fail)?;
            q.execute(&tx, sql::RELEASE_ALL_NODES, &[&replica]).await.map_err(fail)?;
            q.execute(&tx, sql::RELEASE_LEADER, &[&replica]).await.map_err(fail)?;
            q.execute(&tx, sql::UNREGISTER, &[&replica]).await.map_err(fail)?;
            tx.commit().await.map_err(fail)
        })?;
        let mut mem = lock(&self.leases);
        mem.held.clear();
        Ok(())
    }

    fn lease_table(&self) -> Result<LeaseTable, StoreError> {
        self.run("read the lease table", |sh| async move {
            let fail = pg("read the lease table");
            let mut c = sh.conn().await?;
            let Conn { client, q } = &mut *c;
            q.transaction();
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(fail)?;
            let replicas = q.query(&tx, sql::TABLE_REPLICAS, &[]).await.map_err(fail)?;
            let leader = q.query_opt(&tx, sql::TABLE_LEADER, &[]).await.map_err(fail)?;
            let nodes = q.query(&tx, sql::TABLE_NODES, &[]).await.map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            let mut table = LeaseTable::default();
            for r in &replicas {
                table.replicas.push(ReplicaRow {
                    replica: ReplicaId::new(r.try_get::<_, String>(0).map_err(fail)?),
                    live: r.try_get(1).map_err(fail)?,
                    expires_in_ms: r.try_get(2).map_err(fail)?,
                });
            }
            if let Some(r) = leader {
                table.leader = Some(LeaseRow {
                    node: None,
                    holder: r.try_get::<_, Option<String>>(0).map_err(fail)?.map(ReplicaId::new),
                    generation: r.try_get(1).map_err(fail)?,
                    valid: r.try_get(2).map_err(fail)?,
                    expires_in_ms: r.try_get(3).map_err(fail)?,
                });
            }
            for r in &nodes {
                table.nodes.push(LeaseRow {
                    node: Some(r.try_get(0).map_err(fail)?),
                    holder: r.try_get::<_, Option<String>>(1).map_err(fail)?.map(ReplicaId::new),
                    generation: r.try_get(2).map_err(fail)?,
                    valid: r.try_get(3).map_err(fail)?,
                    expires_in_ms: r.try_get(4).map_err(fail)?,
                });
            }
            Ok(table)
        })
    }
}
