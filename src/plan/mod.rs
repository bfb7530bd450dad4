//! The planner: decides what to change. Pure: no I/O, no clock, no randomness; the caller
//! supplies `now`. When something cannot be done yet, the reason is recorded as a held step
//! rather than returned as an error.

/// What is wrong with a node (`observe::diagnose`, where the observer's retry decision reads it
/// without climbing up to the planner).
pub use crate::observe::diagnose;
pub mod memory;
pub mod routing;
pub mod step;

pub use memory::{Memory, NodeMemory, ServiceMemory};
pub use step::{Action, Alert, Held, HoldReason, Intent, NodePlan, Plan, Step};
pub mod planner;

pub use planner::{Focus, PlanInput, PlanOutput, plan, routing_after_execution};
pub mod render;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
