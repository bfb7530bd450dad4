-- Schema version 2 (PostgreSQL): benchmark history (R6), as migrations/sqlite/0002_bench_history.sql.
--
-- Every benchmark or arena run is one row of `bench_runs`; the record itself (`bench::history::
-- RunRecord`) is JSON, with the columns history is queried and pruned by beside it. `champions`
-- holds the model that holds each node and the score that put it there; `bench_due` a benchmark
-- asked for before its schedule (after a regression).

CREATE TABLE bench_runs (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node   TEXT NOT NULL,
    kind   TEXT NOT NULL,                 -- bench | arena
    model  TEXT NOT NULL,
    at     BIGINT NOT NULL,               -- ms since the Unix epoch (when the run finished)
    record JSON NOT NULL
);
CREATE INDEX bench_runs_by_node ON bench_runs (node, id);

CREATE TABLE champions (
    node     TEXT PRIMARY KEY,
    champion JSON NOT NULL
);

CREATE TABLE bench_due (
    node   TEXT PRIMARY KEY,
    due_at BIGINT NOT NULL,               -- ms since the Unix epoch
    reason TEXT NOT NULL
);
