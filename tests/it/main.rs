//! The integration tests: one test binary, one module per area (`cargo test --test it FILTER`).
//!
//! One binary links the library and the support code once: 48 binaries of their own each linked
//! both again, which made an edit in the planner cost a minute of linking before a test could run.
//! Tests run as threads of this one process, so none may change process-wide state (environment
//! variables, the current directory, a global tracing subscriber): `tests/notify_logs.rs`, which
//! must install a process-wide subscriber, is the only test binary of its own.
//!
//! Paths: fixtures are `tests/fixtures/`, Python scripts `tests/python/`, both found from
//! `env!("CARGO_MANIFEST_DIR")`; proptest keeps its regression seeds in `tests/proptest-regressions/`
//! (its default for a crate rooted at `tests/it/main.rs`).

/// Shared helpers: simulated clusters, in-process daemons, real servers, PostgreSQL, receivers.
mod support;

// The daemon's HTTP API.
mod api_auth; // bearer tokens, body limits, JSON errors
mod api_metrics; // `GET /metrics` parsed as Prometheus text
mod api_status; // status, events, routes, heartbeats, cordons, reload
mod ui_status_page; // the status page at `/`, also in headless Chromium

// Benchmarks, arena, history.
mod arena_sim; // `homeostat arena` against the simulator
mod bench_history; // `homeostat bench` and `history`: regressions, plots
mod bench_run; // the suite runner against in-test chat targets

// The clock.
mod clock_jumps; // wall-clock jumps between and during runs

// Conformance: the simulator and the official clients against real servers.
mod conform_clients; // Python `ollama` and `openai` clients against the simulator
mod conform_llamacpp; // the simulated llama-server against a real one

// Crash safety: the real binary killed with SIGKILL.
mod crash_daemon; // the daemon killed mid-pass
mod crash_once; // `reconcile --once` killed mid-pass

// The daemon.
mod daemon_bench; // scheduled benchmarks
mod daemon_heal; // per-node tasks heal the simulator
mod daemon_notify; // notifications from the daemon
mod daemon_reload; // hot reload of the manifests
mod daemon_shutdown; // SIGTERM and SIGINT of the real binary

// The operator's command line: logs, machine output, day-2 verbs, init, two labs.
mod cli_ops;

// `homeostat demo`, end to end.
mod demo;

// Manifests.
mod desired_bad; // the table of broken manifests
mod desired_examples; // the manifests that ship with homeostat
mod desired_props; // property tests of the loader
mod editors_schema; // every shipped document against its modeline's schema

// `reconcile diff`.
mod diff_backends; // every simulated backend
mod diff_cluster; // a whole cluster, read-only
mod diff_faults; // every fault kind of the simulator

// Fuzz entry points as proptests.
mod fuzz_api; // the API under arbitrary requests
mod fuzz_parsers; // the parsers of everything read from outside

// High availability: leases in PostgreSQL.
mod ha_daemon; // three daemon replicas share a cluster
mod ha_leases; // claim, renewal, expiry, fencing

// Hostile backends: nested JSON, trickled bodies, lies.
mod hostile_backends;
mod hostile_limits; // token FIFOs, descriptor exhaustion, slow clients (issue 17)
mod hostile_work; // validation work linear in input size (issue 17)

// Notifications.
mod notify_delivery; // de-duplication, rendering, delivery

// Observation.
mod observe_http; // transport failures classified
mod observe_observer; // the observer over raw loopback servers
mod observe_telemetry; // telemetry commands and exporters

// `reconcile --once`.
mod once_heal; // the healing scenarios
mod once_process; // the run lock and other processes

// A real llama.cpp `llama-server`.
mod real_heal; // healed by the real binary
mod real_llama; // its wire format pinned down

// Secrets never leak.
mod security_secrets;

// The simulator.
mod sim_cluster; // the shared listener and the admin API
mod sim_faults; // every fault kind
mod sim_llamacpp; // llama-server
mod sim_lmstudio; // LM Studio
mod sim_ollama; // Ollama
mod sim_vllm; // vLLM

// A small seeded soak run.
mod soak;

// The state store.
mod store_history; // benchmark history
mod store_postgres; // the store contract on PostgreSQL
mod store_process; // across processes: lock, crashes
mod store_sqlite; // the store contract on SQLite, migrations
