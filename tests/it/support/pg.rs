//! A PostgreSQL database per test, on the throwaway server `scripts/postgres.sh` runs.
//!
//! The server's URL (a superuser, password included) comes from `HOMEOSTAT_TEST_PG_URL`, else
//! from the env file the script writes (`.cache/pg/env`, or `$HOMEOSTAT_PG_DIR/env`). Each
//! [`TestDb`] creates a database with a random name and drops it (`WITH (FORCE)`) when dropped.
//!
//! No server: the test skips, printing why, unless `HOMEOSTAT_REQUIRE_REAL=1` (set by
//! `scripts/test`, which starts the server), when it fails: CI never skips silently.
//!

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use homeostat::secret::Secret;
use homeostat::store::{LeaseOptions, PgOptions, PostgresStore, ReplicaId};

const URL_VAR: &str = "HOMEOSTAT_TEST_PG_URL";
const DIR_VAR: &str = "HOMEOSTAT_PG_DIR";
const REQUIRE_REAL_VAR: &str = "HOMEOSTAT_REQUIRE_REAL";

fn pg_dir() -> PathBuf {
    std::env::var_os(DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/pg"))
}

/// The server's URL, or why there is none.
fn server_url() -> Result<String, String> {
    if let Ok(url) = std::env::var(URL_VAR) {
        return Ok(url);
    }
    let dir = pg_dir();
    if let Ok(reason) = std::fs::read_to_string(dir.join("UNAVAILABLE")) {
        return Err(format!("scripts/postgres.sh: {}", reason.trim()));
    }
    let env = std::fs::read_to_string(dir.join("env")).map_err(|_| {
        format!("no {URL_VAR} and no {}; run ./scripts/postgres.sh", dir.join("env").display())
    })?;
    let prefix = format!("export {URL_VAR}=");
    env.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| format!("{} does not set {URL_VAR}", dir.join("env").display()))
}

/// Runs `sql` on a connection to `url`, on a thread of its own (so async tests can call it too);
/// returns the first column of each row as text.
fn run_sql(url: &str, sql: &str, query: bool) -> Result<Vec<String>, tokio_postgres::Error> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let (rt, client) = admin(url);
                rt.block_on(async {
                    if query {
                        let rows = client.query(sql, &[]).await?;
                        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
                    } else {
                        client.batch_execute(sql).await.map(|()| Vec::new())
                    }
                })
            })
            .join()
            .expect("the SQL thread does not panic")
    })
}

/// A connection to the server's maintenance database, for CREATE and DROP DATABASE.
fn admin(url: &str) -> (tokio::runtime::Runtime, tokio_postgres::Client) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                // The URL holds a password: never print it.
                panic!("cannot connect to the test PostgreSQL server ({e}); is scripts/postgres.sh running?")
            });
        tokio::spawn(conn);
        client
    });
    (rt, client)
}

/// A fresh, empty database, dropped with this value.
pub struct TestDb {
    pub name: String,
    url: String,
    server: String,
}

impl TestDb {
    /// A new database, or None when the test must skip (see the module docs).
    pub fn create() -> Option<TestDb> {
        let server = match server_url() {
            Ok(url) => url,
            Err(why) => {
                let required = std::env::var(REQUIRE_REAL_VAR).is_ok_and(|v| v == "1");
                assert!(!required, "{REQUIRE_REAL_VAR}=1 but PostgreSQL is unavailable: {why}");
                eprintln!("SKIP: PostgreSQL unavailable: {why}");
                return None;
            }
        };
        let name = format!("homeostat_test_{:016x}", rand::random::<u64>());
        run_sql(&server, &format!("CREATE DATABASE {name}"), false).unwrap();
        let mut url = url::Url::parse(&server).expect("the test server URL is a URL");
        url.set_path(&name);
        Some(TestDb { name, url: url.to_string(), server })
    }

    /// The database's URL (holds the password: never print it).
    pub fn url(&self) -> Secret {
        Secret::new(self.url.clone())
    }

    /// Options for replica `id` with `ttl` leases, short call deadlines.
    pub fn options(&self, id: &str, ttl: Duration) -> PgOptions {
        let mut o = PgOptions::new(ReplicaId::new(id));
        o.leases = LeaseOptions { ttl, ..LeaseOptions::default() };
        o.op_timeout = Duration::from_secs(10);
        o
    }

    /// A store handle as replica `id` with `ttl` leases.
    pub fn open(&self, id: &str, ttl: Duration) -> PostgresStore {
        PostgresStore::open(&self.url(), self.options(id, ttl)).unwrap()
    }

    /// The PostgreSQL store for an in-process daemon (`DaemonOptions::postgres`): the URL by
    /// reference, from a 0600 file `pg.url` in `dir`; leases of `ttl`.
    pub fn daemon_store(&self, dir: &std::path::Path, ttl: Duration) -> homeostat::daemon::PgStore {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = dir.join("pg.url");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(&mut f, self.url.as_bytes()).unwrap();
        homeostat::daemon::PgStore {
            url: homeostat::daemon::PgUrl::Ref(homeostat::desired::SecretRef::File(file)),
            leases: LeaseOptions { ttl, ..LeaseOptions::default() },
            replica: None,
        }
    }

    /// Runs one SQL batch as the superuser in this database (to inspect or break things).
    pub fn sql(&self, sql: &str) {
        run_sql(&self.url, sql, false).unwrap();
    }

    /// The first column of each row of `sql`, as text.
    pub fn query_texts(&self, sql: &str) -> Vec<String> {
        run_sql(&self.url, sql, true).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let dropped =
            run_sql(&self.server, &format!("DROP DATABASE {} WITH (FORCE)", self.name), false);
        if let Err(e) = dropped {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}
