//! PostgreSQL schema migrations: the same version numbers as SQLite's (`schema::SQLITE`), in
//! PostgreSQL's dialect (`migrations/postgres/NNNN_*.sql`), recorded in `homeostat_schema`.
//!
//! Each migration runs in its own transaction (PostgreSQL's DDL is transactional) that first
//! takes a transaction-scoped advisory lock and re-reads the version, so replicas starting at
//! once apply each migration exactly once, and a failure leaves the previous version.

use tokio_postgres::Client;

use super::conn::Queries;
use crate::store::StoreError;
use crate::store::schema::Migration;

/// The PostgreSQL migrations, in order; `version` is the index + 1, as for SQLite.
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "bench_history",
        sql: include_str!("../migrations/postgres/0002_bench_history.sql"),
    },
];

/// Advisory lock key (two int4 halves: "home", 1) serialising migrations.
const LOCK: &str = "SELECT pg_advisory_xact_lock(1752132965, 1)";

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS homeostat_schema (\
     id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)";

const READ_VERSION: &str = "SELECT version FROM homeostat_schema WHERE id = 1";

/// The schema version, 0 for a database homeostat has not written to (no version table).
pub(super) async fn version(client: &Client) -> Result<u32, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('homeostat_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let row = client.query_opt(READ_VERSION, &[]).await?;
    Ok(row
        .map(|r| r.try_get::<_, i32>(0))
        .transpose()?
        .map_or(0, |v| u32::try_from(v).unwrap_or(0)))
}

/// Brings the database to the newest version in `migrations`; returns the versions applied.
pub(super) async fn migrate(
    client: &mut Client,
    q: &Queries,
    migrations: &[Migration],
) -> Result<Vec<u32>, StoreError> {
    let supported = migrations.len() as u32;
    let found = version(client)
        .await
        .map_err(|source| StoreError::Postgres { op: "read the schema version", source })?;
    if found > supported {
        return Err(StoreError::NewerSchema { found, supported });
    }
    let mut applied = Vec::new();
    for m in migrations {
        let fail = |source| StoreError::PgMigrate { version: m.version, source };
        q.transaction();
        let tx = client.transaction().await.map_err(fail)?;
        tx.batch_execute(LOCK).await.map_err(fail)?;
        tx.batch_execute(CREATE_VERSION_TABLE).await.map_err(fail)?;
        let now: i32 = tx
            .query_opt(READ_VERSION, &[])
            .await
            .map_err(fail)?
            .map_or(Ok(0), |r| r.try_get(0))
            .map_err(fail)?;
        // Another replica may have migrated since we looked.
        if u32::try_from(now).unwrap_or(0) >= m.version {
            tx.commit().await.map_err(fail)?;
            continue;
        }
        tx.batch_execute(m.sql).await.map_err(fail)?;
        let v = i32::try_from(m.version).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO homeostat_schema (id, version) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[&v],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version = m.version, name = m.name, "PostgreSQL state database migrated");
        applied.push(m.version);
    }
    Ok(applied)
}
