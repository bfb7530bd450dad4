//! The long-running side: one reconcile pass (`pass`), and (issue 6) the daemon loop.

pub mod pass;
