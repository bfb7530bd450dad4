//! Act: the executor that carries out a plan against the nodes (`executor`), post-heal
//! verification (`verify`). Commands run through `crate::command`.

pub mod executor;
/// The mini-benchmark that verifies a heal (`bench::verify`).
pub use crate::bench::verify;

pub use executor::{ExecContext, ExecutionReport, Recorder, execute};
