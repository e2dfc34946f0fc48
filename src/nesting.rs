//! How deeply a JSON or YAML document may nest its lists and objects, for both binaries.
//!
//! The daemon reads every control request with serde_json, whose recursion limit refuses
//! the 128th nested list or object in a few milliseconds. The CLI reads task definitions
//! before they reach the daemon, and a YAML parser (tried when the text is not JSON) takes
//! time that grows with the square of the depth of flow collections (`{"a":{"a":...}}`):
//! so the CLI looks at the depth first, with this module's linear scan and the daemon's
//! limit. It does no I/O.

/// The most lists and objects a document may nest, one inside the other: what the daemon
/// accepts (serde_json refuses one level more; a test below holds the two together).
pub const MAX_NESTING_DEPTH: usize = 127;

/// Where a document first opens a list or object deeper than [`MAX_NESTING_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "lists and objects are nested more than {MAX_NESTING_DEPTH} deep (at line {line}, column \
     {column}); ecrl reads at most {MAX_NESTING_DEPTH} levels"
)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// A JSON or YAML document (JSON tried first) as a JSON value; its nesting is checked first.
/// The error says what is wrong, for the document as a whole.
pub fn json_or_yaml(text: &str) -> Result<serde_json::Value, String> {
    check_depth(text).map_err(|e| e.to_string())?;
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(json) => serde_yaml::from_str(text).map_err(|yaml| {
            let e = if text.trim_start().starts_with('{') {
                json.to_string()
            } else {
                yaml.to_string()
            };
            format!("not valid JSON or YAML: {e}")
        }),
    }
}

/// Scans `text` (JSON, or YAML's flow style) for `[` and `{` outside quoted strings and
/// comments, in one pass. A quote opens a string only where a value can start (after
/// whitespace, `[`, `{`, `,` or `:`), so a YAML plain scalar such as `it's` does not hide the
/// brackets after it. Block-style YAML nests by indentation, which costs its file size
/// rather than parse time, and serde_yaml's own limit refuses it.
pub fn check_depth(text: &str) -> Result<(), TooDeep> {
    enum State {
        Plain,
        Double,
        Single,
        Comment,
    }
    let mut state = State::Plain;
    let mut depth = 0usize;
    let (mut line, mut column) = (1usize, 0usize);
    let mut previous = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
        let value_start = previous.is_whitespace() || matches!(previous, '[' | '{' | ',' | ':');
        match state {
            State::Plain => match c {
                '"' if value_start => state = State::Double,
                '\'' if value_start => state = State::Single,
                '#' if previous.is_whitespace() => state = State::Comment,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING_DEPTH {
                        return Err(TooDeep { line, column });
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
            State::Double => match c {
                '\\' => {
                    // The escaped character is part of the string, whatever it is.
                    if let Some(next) = chars.next() {
                        if next == '\n' {
                            line += 1;
                            column = 0;
                        } else {
                            column += 1;
                        }
                    }
                }
                '"' => state = State::Plain,
                _ => {}
            },
            State::Single => {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        // '' is a quote inside a single-quoted YAML string.
                        chars.next();
                        column += 1;
                    } else {
                        state = State::Plain;
                    }
                }
            }
            State::Comment => {
                if c == '\n' {
                    state = State::Plain;
                }
            }
        }
        previous = c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(depth: usize) -> String {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn the_limit_is_the_daemons() {
        let ok = objects(MAX_NESTING_DEPTH);
        assert!(serde_json::from_str::<serde_json::Value>(&ok).is_ok());
        assert_eq!(check_depth(&ok), Ok(()));
        let deep = objects(MAX_NESTING_DEPTH + 1);
        let refused = serde_json::from_str::<serde_json::Value>(&deep).unwrap_err();
        assert!(refused.to_string().contains("recursion limit"), "{refused}");
        let err = check_depth(&deep).unwrap_err();
        assert_eq!(
            err,
            TooDeep {
                line: 1,
                column: 5 * MAX_NESTING_DEPTH + 1
            }
        );
        assert!(err.to_string().contains("more than 127 deep"), "{err}");
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let many = "[".repeat(MAX_NESTING_DEPTH + 1);
        for text in [
            format!(r#"{{"a": "{many}"}}"#),
            format!(r#"{{"a": "\"{many}"}}"#),
            format!("a: '{many}'\n"),
            format!("a: 'it''s {many}'\n"),
            format!("a: 1 # {many}\nb: [1]\n"),
            format!("command: [\"sh\", \"-c\", \"echo '{many}'\"]\n"),
        ] {
            assert_eq!(check_depth(&text), Ok(()), "{text}");
        }
        // A quote inside a plain scalar does not start a string.
        let text = format!("a: it's {}\n", "[".repeat(MAX_NESTING_DEPTH + 1));
        assert_eq!(check_depth(&text).unwrap_err().line, 1);
        let text = format!("a: 1\nb: {}", "[".repeat(MAX_NESTING_DEPTH + 1));
        assert_eq!(
            check_depth(&text),
            Err(TooDeep {
                line: 2,
                column: 3 + MAX_NESTING_DEPTH + 1
            })
        );
    }

    #[test]
    fn a_deep_document_is_refused_in_linear_time() {
        let text = objects(200_000);
        let started = std::time::Instant::now();
        assert!(check_depth(&text).is_err());
        let balanced = format!("[{}]", "[1],".repeat(200_000) + "[1]");
        assert_eq!(check_depth(&balanced), Ok(()));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
