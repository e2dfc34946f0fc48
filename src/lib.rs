//! The contract `ecrl` and `ecrld` share: control-API endpoints and wire types, the
//! control-socket client, configuration and default paths.
//!
//! Nothing here owns state or touches the registry's files; the daemon does that.

pub mod api;
pub mod client;
pub mod config;
pub mod docker_config;
pub mod http_range;
pub mod lifecycle;
pub mod manifest;
pub mod mirror;
pub mod mutability;
pub mod names;
pub mod nesting;
pub mod paths;
pub mod policy;
pub mod remote;
pub mod taskdef;
pub mod timestamp;

/// The crate version both binaries report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error and its causes as one line, `outer: inner: ...`, each cause once: a message that
/// already holds its cause's words (as many do, to be complete on their own) is not followed
/// by them again.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read config file /x: {source}")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let e = Outer {
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(
            super::error_text(&e),
            "cannot read config file /x: no such file"
        );
        let wrapped = std::io::Error::other(e);
        assert_eq!(
            super::error_text(&wrapped),
            "cannot read config file /x: no such file"
        );
    }
}
