//! Simulated inference nodes that speak the real wire formats of LM Studio, Ollama, vLLM and
//! llama.cpp's llama-server, with fault injection. See README.md (section "The simulator").
//!
//! - `config`: the sim.yaml format; `fault`: fault kinds and their parameters (the contract of
//!   the admin API); `answers`: what simulated models answer.
//! - `model` (pure): one node as a state machine; also a world model for planner tests.
//! - `server` and the backend modules: HTTP on loopback, shared or dedicated listeners.
//! - `cluster`: `SimCluster`, the library entry point used by tests and `homeostat sim`.

pub mod answers;
pub mod config;
pub mod fault;
pub mod model;
