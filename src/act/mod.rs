//! Act: the executor that carries out a plan against the nodes, and the command runner.

pub mod command;
