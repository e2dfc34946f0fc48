//! Times as ecrl prints them: RFC 3339 in UTC with exactly three fractional digits
//! (`2026-11-27T14:03:12.345Z`), as the AWS CLI prints ECR's and ECS's times. Every time in
//! the control API's answers, and so in every table, JSON and YAML ecrl prints, goes through
//! here: one width, so that times line up in tables and sort as text.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `t` in UTC, to the millisecond.
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch, as printed.
pub fn from_millis(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map(format)
        .unwrap_or_default()
}

/// Now, as printed.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// An RFC 3339 time stored with another precision or offset, as printed; text that is not
/// such a time (including the empty text of a time not yet reached) is left as it is.
pub fn reformat(text: &str) -> String {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(format)
        .unwrap_or_else(|_| text.to_string())
}

/// [`reformat`] in place, for the optional times of a record.
pub fn reformat_in_place(text: &mut String) {
    *text = reformat(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_has_three_fractional_digits_in_utc() {
        assert_eq!(from_millis(1_795_788_192_345), "2026-11-27T14:03:12.345Z");
        assert_eq!(from_millis(1_795_788_192_000), "2026-11-27T14:03:12.000Z");
        assert_eq!(from_millis(1_795_788_192_600), "2026-11-27T14:03:12.600Z");
        assert_eq!(
            reformat("2026-11-27T14:03:12.969640477Z"),
            "2026-11-27T14:03:12.969Z"
        );
        assert_eq!(
            reformat("2026-11-27T14:03:12.6Z"),
            "2026-11-27T14:03:12.600Z"
        );
        assert_eq!(reformat("2026-11-27T14:03:12Z"), "2026-11-27T14:03:12.000Z");
        assert_eq!(
            reformat("2026-11-27T15:03:12.03+01:00"),
            "2026-11-27T14:03:12.030Z"
        );
        assert_eq!(reformat(""), "");
        assert_eq!(reformat("never"), "never");
        let now = now();
        assert_eq!(now.len(), "2026-11-27T14:03:12.345Z".len(), "{now}");
    }
}
