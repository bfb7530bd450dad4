-- Schema version 1: remembered state, events, action log.
--
-- Remembered state is one row per node / per service (the PostgreSQL store leases these rows
-- per node), with the Rust value as JSON: the memory types evolve with serde defaults, so adding
-- a field needs no migration. The history tables (events, actions) use real columns: they are
-- queried by node, id and time.

CREATE TABLE node_memory (
    node   TEXT PRIMARY KEY NOT NULL,
    memory TEXT NOT NULL CHECK (json_valid(memory))
) STRICT;

CREATE TABLE service_memory (
    service TEXT PRIMARY KEY NOT NULL,
    memory  TEXT NOT NULL CHECK (json_valid(memory))
) STRICT;

-- At most one row.
CREATE TABLE cluster_memory (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    memory TEXT NOT NULL CHECK (json_valid(memory))
) STRICT;

-- AUTOINCREMENT: ids are never reused, even after old rows are pruned, so an id is a cursor.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,            -- ms since the Unix epoch
    node        TEXT,                        -- NULL: cluster-wide
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL CHECK (json_valid(detail)),
    correlation TEXT NOT NULL
) STRICT;
CREATE INDEX events_by_node ON events (node, id);

CREATE TABLE actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node        TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (json_valid(action)),
    correlation TEXT NOT NULL,
    started_at  INTEGER NOT NULL,            -- ms since the Unix epoch
    ended_at    INTEGER,                     -- NULL while running, or interrupted by a crash
    status      TEXT,                        -- succeeded | failed | refused | cancelled | interrupted
    detail      TEXT CHECK (detail IS NULL OR json_valid(detail)),
    CHECK ((ended_at IS NULL) = (status IS NULL))
) STRICT;
CREATE INDEX actions_by_node ON actions (node, id);
CREATE INDEX actions_open ON actions (node) WHERE ended_at IS NULL;
