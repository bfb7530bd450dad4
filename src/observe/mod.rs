//! Observe: turn the answers of the cluster into an `Observation` (see `snapshot`, the pure data
//! the planner reads).
//!
//! Layers, bottom up:
//! - `http`: the one HTTP layer (total deadline per request, body cap, failure classification,
//!   no redirects, tokens only in headers).
//! - `lmstudio`, `ollama`, `openai` (vLLM and any OpenAI-compatible server), `llamacpp`: one full
//!   client per backend, read side (observe) and write side (load, unload, chat, pull) together,
//!   so the executor reuses them; `driver::NodeClient` is the common face.
//! - `prometheus` (text-format parser) and `telemetry` (exporters and `nvidia-smi` commands).
//! - `service`: the HTTP probe of plain services.
//! - `in_process`: the seam through which a node is reached in-process (the trajectory harness
//!   over the simulator's pure model); never attached in production.
//! - `diagnose` (pure): what is wrong with a node, read from one observation; the observer's
//!   retry decision and the planner's first step (`plan::diagnose` is this module).
//! - `observer`: all nodes and services concurrently (bounded), each request with its node's
//!   timeout, a failed attempt retried once after the retry delay.
//!
//! Architecture invariant: only this module (and the executor through `driver`) knows the
//! inference servers' HTTP APIs; the planner sees `snapshot` types only.

// Pure: see clippy.toml.
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod diagnose;
pub mod driver;
pub mod http;
pub mod in_process;
pub mod llamacpp;
pub mod lmstudio;
pub mod observer;
pub mod ollama;
pub mod openai;
pub mod prometheus;
pub mod service;
pub mod snapshot;
pub mod telemetry;

pub use driver::{
    ChatReply, DriverError, Endpoint, KeepAlive, LoadOutcome, LoadSettings, NodeClient,
    PullProgress,
};
pub use http::{Http, HttpConfig};
pub use observer::{
    ContextOverride, no_override, observe_all, observe_node, observe_node_once, observe_service,
};
