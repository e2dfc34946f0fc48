//! The contract `ecrl` and `ecrld` share: control-API endpoints and wire types, the
//! control-socket client, configuration and default paths.
//!
//! Nothing here owns state or touches the registry's files; the daemon does that.

pub mod api;
pub mod client;
pub mod config;
pub mod names;
pub mod paths;
pub mod policy;
pub mod taskdef;

/// The crate version both binaries report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
