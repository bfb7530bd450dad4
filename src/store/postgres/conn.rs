//! One PostgreSQL connection with its prepared statements, and the query counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Error, GenericClient, NoTls, Row, Statement};

/// Counts of what a store handle sent to PostgreSQL since it was opened. A benchmark reads them
/// before and after a pass ([`QueryStats::since`]) to report database load per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryStats {
    /// Statements executed (each one round trip), transaction control not included.
    pub statements: u64,
    /// Transactions run (each adds a BEGIN and a COMMIT round trip).
    pub transactions: u64,
    /// Statements prepared (once per statement text and connection).
    pub prepares: u64,
    /// Connections opened (1, plus one per reconnect).
    pub connects: u64,
}

impl QueryStats {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: QueryStats) -> QueryStats {
        QueryStats {
            statements: self.statements.saturating_sub(earlier.statements),
            transactions: self.transactions.saturating_sub(earlier.transactions),
            prepares: self.prepares.saturating_sub(earlier.prepares),
            connects: self.connects.saturating_sub(earlier.connects),
        }
    }

    /// Round trips to the server: statements, prepares, and BEGIN + COMMIT per transaction.
    pub fn round_trips(&self) -> u64 {
        self.statements + self.prepares + 2 * self.transactions
    }
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    statements: AtomicU64,
    transactions: AtomicU64,
    prepares: AtomicU64,
    connects: AtomicU64,
}

impl Stats {
    pub(super) fn snapshot(&self) -> QueryStats {
        QueryStats {
            statements: self.statements.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            prepares: self.prepares.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
        }
    }

    pub(super) fn transaction(&self) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection and the statements prepared on it.
pub(super) struct Conn {
    pub client: Client,
    pub q: Queries,
}

/// Prepared statements by SQL text (prepared on first use, one round trip), and the counters.
/// Separate from the client so a transaction (which borrows the client) can use it.
pub(super) struct Queries {
    prepared: HashMap<&'static str, Statement>,
    stats: Arc<Stats>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Queries {
    async fn statement<C: GenericClient + Sync>(
        &mut self,
        c: &C,
        sql: &'static str,
    ) -> Result<Statement, Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = c.prepare(sql).await?;
        self.stats.prepares.fetch_add(1, Ordering::Relaxed);
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    pub async fn query<C: GenericClient + Sync>(
        &mut self,
        c: &C,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Error> {
        let s = self.statement(c, sql).await?;
        self.stats.statements.fetch_add(1, Ordering::Relaxed);
        c.query(&s, params).await
    }

    pub async fn query_one<C: GenericClient + Sync>(
        &mut self,
        c: &C,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Row, Error> {
        let s = self.statement(c, sql).await?;
        self.stats.statements.fetch_add(1, Ordering::Relaxed);
        c.query_one(&s, params).await
    }

    pub async fn query_opt<C: GenericClient + Sync>(
        &mut self,
        c: &C,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, Error> {
        let s = self.statement(c, sql).await?;
        self.stats.statements.fetch_add(1, Ordering::Relaxed);
        c.query_opt(&s, params).await
    }

    pub async fn execute<C: GenericClient + Sync>(
        &mut self,
        c: &C,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, Error> {
        let s = self.statement(c, sql).await?;
        self.stats.statements.fetch_add(1, Ordering::Relaxed);
        c.execute(&s, params).await
    }

    /// Counts a transaction (call when starting one).
    pub fn transaction(&self) {
        self.stats.transaction();
    }
}

/// Connects, spawning the connection's I/O task on the current runtime. Errors of the task (the
/// server went away) are logged with the target only; the next call reconnects.
pub(super) async fn connect(
    config: &Config,
    target: &str,
    stats: &Arc<Stats>,
) -> Result<Conn, Error> {
    let (client, connection) = config.connect(NoTls).await?;
    stats.connects.fetch_add(1, Ordering::Relaxed);
    let target = target.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(database = %target, error = %crate::store::error_chain(&e),
                "PostgreSQL connection closed");
        }
    });
    Ok(Conn { client, q: Queries { prepared: HashMap::new(), stats: stats.clone() } })
}
