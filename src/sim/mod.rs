//! Simulated inference nodes that speak the real wire formats of LM Studio, Ollama, vLLM and
//! llama.cpp's llama-server, with fault injection. README.md ("The simulator") documents the
//! sim.yaml format and the admin API.
//!
//! - `config`: the sim.yaml format; `fault`: fault kinds and their parameters (the contract of
//!   the admin API); `answers`: what simulated models answer.
//! - `model` (pure): one node as a state machine; also a world model for planner tests.
//! - `server` (listeners, request pipeline, admin API) and one module per backend (`lmstudio`,
//!   `ollama`, `vllm`, `llamacpp`, plus `openai` for the shared chat-completion shapes);
//!   `telemetry`: the exporter text.
//! - `cluster`: [`SimCluster`], the library entry point used by tests and `homeostat sim`.
//! - `in_process`: the pure model reached in-process (`observe::in_process`), on a given clock:
//!   what the trajectory harness (`crate::scenario`) drives.
//!
//! Architecture invariant: only `server::now` reads the clock; `model` is pure.

pub mod answers;
pub mod cluster;
pub mod config;
pub mod fault;
pub mod in_process;
mod llamacpp;
mod lmstudio;
pub mod model;
mod ollama;
mod openai;
mod server;
pub mod telemetry;
mod vllm;

pub use cluster::{SimCluster, SimError, SimNode};
pub use config::{ModelConfig, NodeConfig, SimBackend, SimConfig};
pub use fault::{Fault, FaultId, FaultKind, WedgeMode};
pub use model::{NodeState, SettingsPatch};
