//! Pure state machines that remembered state is made of: the circuit breaker, the crash-loop
//! backoff and the lifecycle of a node or service. `now` is always a parameter; nothing here
//! reads the clock or does I/O.

pub mod backoff;
pub mod breaker;
pub mod lifecycle;

pub use backoff::backoff_delay;
pub use breaker::{Breaker, BreakerView};
pub use lifecycle::Lifecycle;
