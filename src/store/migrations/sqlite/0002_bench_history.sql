-- Schema version 2: benchmark history (R6).
--
-- Every benchmark or arena run is one row of `bench_runs`; the record itself (`bench::history::
-- RunRecord`: config, scores, per task and by domain) is JSON, with the columns history is
-- queried and pruned by beside it. `champions` holds the model that holds each node and the score
-- that put it there; `bench_due` a benchmark asked for before its schedule (after a regression).

CREATE TABLE bench_runs (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    node   TEXT NOT NULL,
    kind   TEXT NOT NULL,                 -- bench | arena
    model  TEXT NOT NULL,
    at     INTEGER NOT NULL,              -- ms since the Unix epoch (when the run finished)
    record TEXT NOT NULL CHECK (json_valid(record))
) STRICT;
CREATE INDEX bench_runs_by_node ON bench_runs (node, id);

CREATE TABLE champions (
    node     TEXT PRIMARY KEY NOT NULL,
    champion TEXT NOT NULL CHECK (json_valid(champion))
) STRICT;

CREATE TABLE bench_due (
    node   TEXT PRIMARY KEY NOT NULL,
    due_at INTEGER NOT NULL,              -- ms since the Unix epoch
    reason TEXT NOT NULL
) STRICT;
