//! Nodes reached in-process instead of over HTTP: the seam through which the trajectory harness
//! (`crate::scenario`) drives the real observer, executor and pass over the simulator's pure node
//! model on a virtual clock, with no sockets and no real waiting.
//!
//! An [`InProcessNodes`] registry is attached to the shared [`Http`](super::http::Http) handle;
//! `NodeClient::new` asks it first, so every caller (observer, executor, verification, arena,
//! benchmark) reaches the same node the same way without knowing it is in-process. Production
//! never attaches a registry: the HTTP drivers are then the only way to a node.
//!
//! The trait speaks the observation's language (desired names, `NodeObservation`,
//! `DriverError`), like the HTTP drivers; it lives here, beside them, so the simulator
//! implements it without `observe` depending on the simulator.

use std::fmt::Debug;
use std::time::Duration;

use futures::future::BoxFuture;

use super::driver::{ChatReply, DriverError, LoadOutcome, LoadSettings};
use super::snapshot::NodeObservation;
use crate::command::CommandOutput;
use crate::desired::Backend;

/// One node reached in-process. Names are desired names (the implementation maps them).
pub trait InProcessNode: Send + Sync + Debug {
    fn backend(&self) -> Backend;
    /// One observation attempt (listing, instances, telemetry) with a canary chat for each of
    /// `canaries` that is loaded; `timeout` is what a hanging node costs.
    fn observe<'a>(
        &'a self,
        canaries: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, NodeObservation>;
    /// Loads and waits until loaded, failed, or `timeout`.
    fn load<'a>(
        &'a self,
        settings: &'a LoadSettings,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<LoadOutcome, DriverError>>;
    fn unload<'a>(
        &'a self,
        model: &'a str,
        instance_id: &'a str,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
    fn chat<'a>(
        &'a self,
        model: &'a str,
        prompt: &'a str,
        max_tokens: u32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ChatReply, DriverError>>;
    fn pull<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<(), DriverError>>;
    fn same_model(&self, a: &str, b: &str) -> bool;
}

/// The registry: which URLs are in-process nodes, and the commands they answer.
pub trait InProcessNodes: Send + Sync + Debug {
    /// The node served at `url` (a node's `spec.url`), if it is in-process.
    fn node(&self, url: &str) -> Option<std::sync::Arc<dyn InProcessNode>>;
    /// Runs `argv` in-process if it is one of the registry's commands (a simulated restart),
    /// else `None`: the command runs as a real process.
    fn command<'a>(&'a self, argv: &'a [String]) -> Option<BoxFuture<'a, CommandOutput>>;
}
