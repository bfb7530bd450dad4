-- Schema version 1 (PostgreSQL): the tables of migrations/sqlite/0001_init.sql with the same
-- meaning, plus the lease tables only PostgreSQL has (several reconciler replicas, issue #9).
--
-- JSON values use the `json` type, not `jsonb`: `json` keeps the text as written and accepts
-- every string serde_json writes, including "\u0000" (an error text quoted from a broken server),
-- which `jsonb` refuses. Times of the remembered state and history are ms since the Unix epoch
-- from the caller's clock, as in SQLite; lease times are the database's own (`now()`).

CREATE TABLE node_memory (
    node   TEXT PRIMARY KEY,
    memory JSON NOT NULL
);

CREATE TABLE service_memory (
    service TEXT PRIMARY KEY,
    memory  JSON NOT NULL
);

-- At most one row.
CREATE TABLE cluster_memory (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    memory JSON NOT NULL
);

-- Identity ids are never reused, even after old rows are pruned, so an id is a cursor. Inserts
-- take a transaction-scoped advisory lock before drawing the id, so ids also commit in order
-- across replicas and a reader tailing by id never skips a late-committing lower id.
CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,             -- ms since the Unix epoch
    node        TEXT,                        -- NULL: cluster-wide
    kind        TEXT NOT NULL,
    detail      JSON NOT NULL,
    correlation TEXT NOT NULL
);
CREATE INDEX events_by_node ON events (node, id);

CREATE TABLE actions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node        TEXT NOT NULL,
    action      JSON NOT NULL,
    correlation TEXT NOT NULL,
    started_at  BIGINT NOT NULL,             -- ms since the Unix epoch
    ended_at    BIGINT,                      -- NULL while running, or interrupted by a crash
    status      TEXT,                        -- succeeded | failed | refused | cancelled | interrupted
    detail      JSON,
    CHECK ((ended_at IS NULL) = (status IS NULL))
);
CREATE INDEX actions_by_node ON actions (node, id);
CREATE INDEX actions_open ON actions (node) WHERE ended_at IS NULL;

-- Leases (PostgreSQL only). Every claim draws a new generation from one sequence, so a
-- generation is never repeated for any lease, even if a lease row is deleted and created again:
-- a fence (holder, generation) can never become valid a second time.
CREATE SEQUENCE lease_generation;

-- One row per running replica, its heartbeat renewed with its leases (same expiry).
CREATE TABLE replicas (
    replica      TEXT PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

-- One row per desired node. Free when holder is NULL or expires_at has passed.
CREATE TABLE node_leases (
    node        TEXT PRIMARY KEY,
    holder      TEXT,
    generation  BIGINT NOT NULL DEFAULT 0,   -- 0: never held
    acquired_at TIMESTAMPTZ,
    expires_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
CREATE INDEX node_leases_by_holder ON node_leases (holder) WHERE holder IS NOT NULL;

-- Cluster-wide roles, elected the same way; one role today: 'leader' (mass-failure hold,
-- routing table, notification dedup).
CREATE TABLE cluster_leases (
    role        TEXT PRIMARY KEY,
    holder      TEXT,
    generation  BIGINT NOT NULL DEFAULT 0,
    acquired_at TIMESTAMPTZ,
    expires_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
INSERT INTO cluster_leases (role) VALUES ('leader');
