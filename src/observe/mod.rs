//! Observe: one driver per backend, telemetry and service probes, turning the answers of the
//! cluster into an `Observation` (see `snapshot`).

pub mod snapshot;
