//! Schema migrations, embedded in the binary and keyed by `PRAGMA user_version`.
//!
//! Forward-only: migration N takes a database from version N-1 to N, each in its own
//! `BEGIN IMMEDIATE` transaction that re-reads the version first, so two processes opening the
//! same file at once never apply one twice, and a crash mid-migration leaves the previous version.
//! A database newer than this binary is refused rather than guessed at (a downgrade).
//!
//! The PostgreSQL store keeps the same version numbers with its own SQL dialect
//! (`migrations/postgres/NNNN_*.sql`), so both stores mean the same thing by "version N".

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// One migration: its version and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The SQLite migrations, in order; `version` is the index + 1.
pub const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("migrations/sqlite/0001_init.sql") },
    Migration {
        version: 2,
        name: "bench_history",
        sql: include_str!("migrations/sqlite/0002_bench_history.sql"),
    },
];

/// The schema version this binary writes.
pub const VERSION: u32 = SQLITE.len() as u32;

/// Reads `PRAGMA user_version`.
pub fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

/// Brings the database to the newest version in `migrations`; returns the versions applied.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<Vec<u32>, StoreError> {
    let supported = migrations.len() as u32;
    let found = user_version(conn).map_err(StoreError::sqlite("read the schema version"))?;
    if found > supported {
        return Err(StoreError::NewerSchema { found, supported });
    }
    let mut applied = Vec::new();
    for m in migrations {
        let fail = |source| StoreError::Migrate { version: m.version, source };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        // Another process may have migrated since we looked.
        if user_version(&tx).map_err(fail)? >= m.version {
            continue;
        }
        tx.execute_batch(m.sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", m.version).map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::info!(version = m.version, name = m.name, "state database migrated");
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions are consecutive from 1, so `user_version` indexes the list.
    #[test]
    fn versions_are_consecutive() {
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
    }

    /// From an empty database every migration applies once; running again applies none.
    #[test]
    fn migrates_once() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut c, SQLITE).unwrap(), (1..=VERSION).collect::<Vec<_>>());
        assert_eq!(user_version(&c).unwrap(), VERSION);
        assert!(migrate(&mut c, SQLITE).unwrap().is_empty());
    }

    /// A failing migration leaves the previous version and none of its tables (it is one
    /// transaction); the next migration is not attempted.
    #[test]
    fn failed_migration_rolls_back() {
        const BROKEN: &[Migration] = &[
            Migration { version: 1, name: "a", sql: "CREATE TABLE a (x INTEGER);" },
            Migration {
                version: 2,
                name: "b",
                sql: "CREATE TABLE b (x INTEGER); THIS IS NOT SQL;",
            },
            Migration { version: 3, name: "c", sql: "CREATE TABLE c (x INTEGER);" },
        ];
        let mut c = Connection::open_in_memory().unwrap();
        match migrate(&mut c, BROKEN) {
            Err(StoreError::Migrate { version: 2, .. }) => {}
            other => panic!("expected Migrate {{ version: 2 }}, got {other:?}"),
        }
        assert_eq!(user_version(&c).unwrap(), 1);
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tables, ["a"]);
    }

    /// A database from a newer homeostat is refused, not downgraded.
    #[test]
    fn newer_schema_refused() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", VERSION + 1).unwrap();
        match migrate(&mut c, SQLITE) {
            Err(StoreError::NewerSchema { found, supported }) => {
                assert_eq!((found, supported), (VERSION + 1, VERSION));
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }
}
