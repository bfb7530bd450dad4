//! The PostgreSQL store runs the same store contract as SQLite (`tests/it/support/store_contract.rs`),
//! each test in a database of its own, plus what only PostgreSQL has: migrations shared by
//! replicas starting at once, read-only opens, the health check, and the connection URL kept out
//! of errors.
//!
//! Needs the test server of `scripts/postgres.sh` (see `tests/it/support/pg.rs`: skips with a
//! message without it, fails under `HOMEOSTAT_REQUIRE_REAL=1`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use homeostat::secret::Secret;
use homeostat::store::{PgOptions, PostgresStore, StateStore, StoreError};

use crate::support::pg;
use crate::support::store_contract as contract;

const TTL: Duration = Duration::from_secs(30);

/// A fresh database and a store handle on it (None: skip).
fn fresh() -> Option<(pg::TestDb, PostgresStore)> {
    let db = pg::TestDb::create()?;
    let s = db.open("r1", TTL);
    Some((db, s))
}

/// A realistic memory round-trips through PostgreSQL, and survives reopening.
#[test]
fn pg_memory_round_trip() {
    let Some((db, s)) = fresh() else { return };
    contract::memory_round_trip(&s);
    let saved = s.load_memory().unwrap();
    drop(s);
    assert_eq!(db.open("r2", TTL).load_memory().unwrap(), saved);
}

/// Memory of nodes and services no longer desired is removed (PostgreSQL).
#[test]
fn pg_retain() {
    let Some((_db, s)) = fresh() else { return };
    contract::retain(&s);
}

/// Events by id, cursor and node (PostgreSQL).
#[test]
fn pg_events() {
    let Some((_db, s)) = fresh() else { return };
    contract::events(&s);
}

/// The action log (PostgreSQL).
#[test]
fn pg_actions() {
    let Some((_db, s)) = fresh() else { return };
    contract::actions(&s);
}

/// History pruning (PostgreSQL).
#[test]
fn pg_prune() {
    let Some((_db, s)) = fresh() else { return };
    contract::prune(&s);
}

/// The default retention prunes nothing from a small history (PostgreSQL).
#[test]
fn pg_retention_default() {
    let Some((_db, s)) = fresh() else { return };
    contract::retention_default_keeps_small_history(&s);
}

/// Fenced writes by the only replica, which holds every lease (PostgreSQL).
#[test]
fn pg_fenced_writes() {
    let Some((_db, s)) = fresh() else { return };
    contract::fenced_writes(&s, &s);
}

/// Benchmark history: runs kept per node, last run per kind, champions, benchmarks asked for
/// (each check on an empty database of its own).
#[test]
fn pg_bench_history() {
    let checks: [fn(&dyn StateStore); 4] = [
        contract::runs_kept_per_node,
        contract::last_run_of_a_kind,
        contract::champions_per_node,
        contract::benchmarks_asked_for,
    ];
    for check in checks {
        let Some((_db, s)) = fresh() else { return };
        check(&s);
    }
}

/// Replicas starting at once migrate the database exactly once; all reach the newest version
/// and the health check passes.
#[test]
fn pg_concurrent_migration() {
    let Some(db) = pg::TestDb::create() else { return };
    let stores: Vec<PostgresStore> = std::thread::scope(|scope| {
        let db = &db;
        let handles: Vec<_> =
            (0..4).map(|i| scope.spawn(move || db.open(&format!("r{i}"), TTL))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for s in &stores {
        assert_eq!(s.schema_version().unwrap(), 2);
        assert!(s.integrity_check().unwrap().is_ok());
    }
    let versions = db.query_texts("SELECT version::text FROM homeostat_schema");
    assert_eq!(versions, ["2"]);
}

/// A read-only handle reads and refuses writes; one on a database never migrated says so.
#[test]
fn pg_read_only() {
    let Some(db) = pg::TestDb::create() else { return };
    let ro_opts = |db: &pg::TestDb| PgOptions { read_only: true, ..db.options("status", TTL) };
    match PostgresStore::open(&db.url(), ro_opts(&db)) {
        Err(StoreError::OlderSchema { found: 0, expected: 2 }) => {}
        other => panic!("expected OlderSchema, got {other:?}"),
    }
    let w = db.open("r1", TTL);
    w.save_memory(&contract::realistic_memory()).unwrap();
    let ro = PostgresStore::open(&db.url(), ro_opts(&db)).unwrap();
    assert_eq!(ro.load_memory().unwrap(), contract::realistic_memory());
    assert!(matches!(ro.save_cluster(&Default::default()), Err(StoreError::ReadOnly)));
    assert!(ro.integrity_check().unwrap().is_ok());
}

/// The health check names a missing table; a database of a newer homeostat is refused.
#[test]
fn pg_health_and_newer_schema() {
    let Some((db, s)) = fresh() else { return };
    db.sql("DROP TABLE champions");
    let problems = match s.integrity_check().unwrap() {
        homeostat::store::Integrity::Problems(p) => p,
        ok => panic!("expected problems, got {ok:?}"),
    };
    assert!(problems.iter().any(|p| p.contains("champions")), "{problems:?}");
    db.sql("UPDATE homeostat_schema SET version = 99");
    match PostgresStore::open(&db.url(), db.options("r2", TTL)) {
        Err(StoreError::NewerSchema { found: 99, supported: 2 }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

/// A wrong password fails with an error naming host, port and database, never the URL's
/// password.
#[test]
fn pg_password_never_in_errors() {
    let Some(db) = pg::TestDb::create() else { return };
    let mut url = url::Url::parse(db.url().expose()).unwrap();
    url.set_password(Some("wrong-pw-5f1c9a")).unwrap();
    let opts = PgOptions { connect_timeout: Duration::from_secs(5), ..db.options("r", TTL) };
    let err = PostgresStore::open(&Secret::new(url.to_string()), opts).unwrap_err();
    let text = format!("{err} {:?} {}", err, homeostat_chain(&err));
    assert!(text.contains(&db.name), "{text}");
    assert!(!text.contains("wrong-pw-5f1c9a"), "{text}");
    let real = url::Url::parse(db.url().expose()).unwrap();
    assert!(!text.contains(real.password().unwrap()), "the server's password leaked");
}

fn homeostat_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
