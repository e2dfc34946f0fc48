//! Tasks: ECS task definitions as the control API and the runner name them ([`defs`]).
//!
//! Reads the metadata index; must not call the control socket, the registry or storage.

pub mod defs;
