//! The byte ranges clients send the registry: `Content-Range` on a chunked upload's PATCH
//! and `Range` on a blob GET, parsed into types where they enter.
//!
//! Pure parsing, no I/O and no HTTP types: the registry reads the header's text and hands it
//! here, then answers 416 (or serves the whole blob) as these results say.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// Why a `Content-Range` or `Range` was refused; the text completes "invalid Content-Range
/// "...": ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(pub String);

fn refuse(why: impl Into<String>) -> RangeError {
    RangeError(why.into())
}

/// The `Content-Range` of an upload chunk: `START-END`, optionally as `bytes START-END/TOTAL`
/// (what docker and the spec's examples send; the total is not checked). Both ends are
/// inclusive and `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    start: u64,
    end: u64,
}

impl ContentRange {
    pub fn new(start: u64, end: u64) -> Result<ContentRange, RangeError> {
        // The length, `end - start + 1`, must be a u64: a range of all 2^64 byte positions is
        // no body anyone can send.
        if start > end || (start == 0 && end == u64::MAX) {
            return Err(refuse("expected start-end with start <= end"));
        }
        Ok(ContentRange { start, end })
    }

    /// The offset of the chunk's first byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The offset of the chunk's last byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// How many bytes the range spans (at least one).
    pub fn len(&self) -> u64 {
        // Cannot overflow: `new` refuses the one range whose length does not fit.
        self.end - self.start + 1
    }

    /// Never: a range holds at least its first byte. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Checks the request's `Content-Length` against the range.
    pub fn check_length(&self, content_length: u64) -> Result<(), RangeError> {
        if content_length == self.len() {
            Ok(())
        } else {
            Err(refuse(format!(
                "it spans {} bytes but the body has {content_length}",
                self.len()
            )))
        }
    }
}

impl FromStr for ContentRange {
    type Err = RangeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let text = text.strip_prefix("bytes ").unwrap_or(text);
        let text = text.split('/').next().unwrap_or(text);
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| refuse("expected start-end"))?;
        match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
            (Ok(a), Ok(b)) => ContentRange::new(a, b),
            _ => Err(refuse("expected start-end with start <= end")),
        }
    }
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One byte range of a `Range: bytes=...` header, before it meets a blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `FIRST-LAST` (`last` inclusive, `first <= last`) or `FIRST-` (to the end).
    From { first: u64, last: Option<u64> },
    /// `-N`: the last N bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The bytes of a blob of `size` bytes that the range selects, clipped to the blob;
    /// `None` when it selects none of them (the request is not satisfiable: 416).
    pub fn resolve(&self, size: u64) -> Option<Range<u64>> {
        let range = match *self {
            ByteRange::Suffix(n) => size.saturating_sub(n)..size,
            ByteRange::From { first, last } => {
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                first..end
            }
        };
        (range.start < range.end && range.start < size).then_some(range)
    }
}

impl FromStr for ByteRange {
    type Err = RangeError;
    /// `a-b`, `a-` or `-n`, what follows `bytes=`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let malformed = || refuse(format!("{spec:?} is not a byte range (a-b, a- or -n)"));
        let (a, b) = spec.split_once('-').ok_or_else(malformed)?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return b.parse().map(ByteRange::Suffix).map_err(|_| malformed());
        }
        let first: u64 = a.parse().map_err(|_| malformed())?;
        let last = if b.is_empty() {
            None
        } else {
            Some(b.parse::<u64>().map_err(|_| malformed())?)
        };
        if last.is_some_and(|l| l < first) {
            return Err(malformed());
        }
        Ok(ByteRange::From { first, last })
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::From { first, last: None } => write!(f, "{first}-"),
            ByteRange::From {
                first,
                last: Some(last),
            } => write!(f, "{first}-{last}"),
            ByteRange::Suffix(n) => write!(f, "-{n}"),
        }
    }
}

/// Reads a `Range` header's value. `None` when the registry serves the whole blob anyway:
/// the unit is not `bytes`, or several ranges are asked for (a registry may ignore a
/// `Range`, and a multipart answer is not worth its cost here). Otherwise the one range, or
/// why it is malformed (the request is then answered 416).
pub fn single_byte_range(value: &str) -> Option<Result<ByteRange, RangeError>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    Some(spec.parse())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_as_clients_send_them() {
        for (text, start, end) in [
            ("0-99", 0, 99),
            ("bytes 100-199/1000", 100, 199),
            ("bytes 100-199/*", 100, 199),
            (" 5 - 5 ", 5, 5),
            ("0-18446744073709551614", 0, u64::MAX - 1),
            ("1-18446744073709551615", 1, u64::MAX),
        ] {
            let r: ContentRange = text.parse().unwrap();
            assert_eq!((r.start(), r.end()), (start, end), "{text}");
        }
        for text in ["", "5", "a-b", "5-4", "-5", "5-", "bytes=0-1", "0--1"] {
            assert!(text.parse::<ContentRange>().is_err(), "{text}");
        }
    }

    /// The whole u64 space as one chunk made the registry's old check, `end - start + 1`,
    /// overflow (a panic in debug builds, a length of 0 in release ones).
    #[test]
    fn a_range_as_long_as_u64_is_refused_not_overflowed() {
        assert!("0-18446744073709551615".parse::<ContentRange>().is_err());
        let r: ContentRange = "0-18446744073709551614".parse().unwrap();
        assert_eq!(r.len(), u64::MAX);
    }

    #[test]
    fn content_length_must_match_the_range() {
        let r: ContentRange = "10-19".parse().unwrap();
        assert_eq!(r.len(), 10);
        assert!(r.check_length(10).is_ok());
        assert_eq!(
            r.check_length(9).unwrap_err().to_string(),
            "it spans 10 bytes but the body has 9"
        );
    }

    #[test]
    fn byte_ranges_resolve_against_the_blob() {
        let resolve = |spec: &str, size| spec.parse::<ByteRange>().ok()?.resolve(size);
        assert_eq!(resolve("0-9", 100), Some(0..10));
        assert_eq!(resolve("90-", 100), Some(90..100));
        assert_eq!(resolve("90-1000", 100), Some(90..100));
        assert_eq!(resolve("-10", 100), Some(90..100));
        assert_eq!(resolve("-1000", 100), Some(0..100));
        assert_eq!(resolve(" 1 - 2 ", 100), Some(1..3));
        assert_eq!(resolve("0-18446744073709551615", 100), Some(0..100));
        for (spec, size) in [
            ("100-", 100),
            ("100-200", 100),
            ("-0", 100),
            ("0-", 0),
            ("-5", 0),
            ("5-4", 100),
            ("-", 100),
            ("a-b", 100),
            ("5", 100),
            ("--5", 100),
        ] {
            assert_eq!(resolve(spec, size), None, "{spec} of {size}");
        }
    }

    #[test]
    fn range_headers_other_than_one_byte_range_are_ignored() {
        assert_eq!(single_byte_range("items=0-1"), None);
        assert_eq!(single_byte_range("bytes=0-1,5-6"), None);
        assert_eq!(
            single_byte_range(" bytes=0-1 "),
            Some(Ok(ByteRange::From {
                first: 0,
                last: Some(1)
            }))
        );
        assert!(matches!(single_byte_range("bytes=x"), Some(Err(_))));
    }

    /// The old parser in the registry, kept here to show the typed one answers alike.
    fn old_parse_range(spec: &str, size: u64) -> Option<Range<u64>> {
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let range = if a.is_empty() {
            let n: u64 = b.parse().ok()?;
            if n == 0 {
                return None;
            }
            size.saturating_sub(n)..size
        } else {
            let start: u64 = a.parse().ok()?;
            let end = if b.is_empty() {
                size
            } else {
                b.parse::<u64>().ok()?.saturating_add(1).min(size)
            };
            start..end
        };
        (range.start < range.end && range.start < size).then_some(range)
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn spec() -> impl Strategy<Value = String> {
            prop_oneof![
                "[ 0-9+-]{0,12}",
                (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}-{b}")),
                (0u64..300, 0u64..300).prop_map(|(a, b)| format!("{a}-{b}")),
                (0u64..300).prop_map(|a| format!("{a}-")),
                any::<u64>().prop_map(|n| format!("-{n}")),
                any::<String>(),
            ]
        }

        proptest! {
            #[test]
            fn byte_ranges_answer_as_the_old_parser_did(spec in spec(), size in prop_oneof![0u64..300, any::<u64>()]) {
                let new = spec.parse::<ByteRange>().ok().and_then(|r| r.resolve(size));
                prop_assert_eq!(new.clone(), old_parse_range(&spec, size));
                if let Some(r) = new {
                    prop_assert!(r.start < r.end && r.end <= size);
                }
            }

            #[test]
            fn byte_ranges_display_back_to_themselves(spec in spec()) {
                if let Ok(r) = spec.parse::<ByteRange>() {
                    prop_assert_eq!(r.to_string().parse::<ByteRange>(), Ok(r));
                }
            }

            #[test]
            fn content_ranges_round_trip(a in any::<u64>(), b in any::<u64>(), text in spec()) {
                let text_with = format!("bytes {a}-{b}/*");
                match text_with.parse::<ContentRange>() {
                    Ok(r) => {
                        prop_assert!(a <= b);
                        prop_assert_eq!((r.start(), r.end()), (a, b));
                        prop_assert_eq!(r.to_string().parse::<ContentRange>(), Ok(r));
                        prop_assert!(r.check_length(r.len()).is_ok());
                    }
                    Err(_) => prop_assert!(a > b || (a == 0 && b == u64::MAX)),
                }
                if let Ok(r) = text.parse::<ContentRange>() {
                    prop_assert!(r.start() <= r.end());
                    prop_assert_eq!(r.to_string().parse::<ContentRange>(), Ok(r));
                }
            }
        }
    }
}
