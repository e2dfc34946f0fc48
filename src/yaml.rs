//! A guard in front of serde_yaml for text from outside (policies, task definitions).
//!
//! libyaml's scanner, which serde_yaml runs before any of its own limits apply, spends time
//! proportional to the open flow collections (`[`, `{`) on every token: `[[[[...` or
//! `{a: {a: ...` takes time quadratic in its length (80 KB of it kept the daemon busy for
//! seconds in release builds and over a minute in debug ones). serde_yaml refuses anything
//! nested deeper than 128 levels anyway, so such text is refused here before it is scanned.

/// serde_yaml's own recursion limit.
pub const MAX_DEPTH: usize = 128;

/// Whether `text` opens more than [`MAX_DEPTH`] flow collections at once. Brackets in quoted
/// strings count too: a document needs more than 128 unclosed ones for that to matter.
pub fn too_deep(text: &str) -> bool {
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The message for text [`too_deep`] refuses.
pub fn too_deep_message() -> String {
    format!("the document nests more than {MAX_DEPTH} levels of [ ] or {{ }}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_open_flow_collections() {
        let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(!too_deep(&at_limit));
        assert!(!too_deep(&at_limit.repeat(100)));
        assert!(too_deep(&"{a: ".repeat(MAX_DEPTH + 1)));
        assert!(!too_deep("a: [1, {b: [2]}]\n"));
    }
}
