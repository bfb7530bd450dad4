//! Act: the executor that carries out a plan against the nodes (`executor`), post-heal
//! verification (`verify`), and the argv command runner (`command`).

pub mod command;
pub mod executor;
pub mod verify;

pub use executor::{ExecContext, ExecutionReport, Recorder, execute};
