//! Helpers shared by the integration tests, compiled once for the one test binary. Each is a
//! module of its own; a test module imports what it uses (`use crate::support::harness;`).

pub mod arena_util;
pub mod conform_util;
pub mod crash_cluster;
pub mod daemon_util;
pub mod diff_util;
pub mod harness;
pub mod hostile;
pub mod notify;
pub mod observe;
pub mod once_util;
pub mod pg;
pub mod promtool;
pub mod real_llama;
pub mod sim_util;
pub mod store_contract;
