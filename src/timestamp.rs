//! Times as ecrl prints them: RFC 3339 in UTC with exactly three fractional digits
//! (`2026-11-27T14:03:12.345Z`), as the AWS CLI prints ECR's and ECS's times. Every time in
//! the control API's answers, and so in every table, JSON and YAML ecrl prints, goes through
//! here: one width, so that times line up in tables and sort as text.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `t` in UTC, to the millisecond.
pub fn format(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    if !(0..=9999).contains(&t.year()) {
        return t
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .unwrap_or_default();
    }
    // Written by hand: listings print thousands of these, and the general formatter costs
    // several times more.
    let mut out = String::with_capacity(24);
    let mut push = |n: u32, width: usize, then: char| {
        let mut digits = [b'0'; 4];
        let mut n = n;
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend(digits[..width].iter().map(|&b| b as char));
        out.push(then);
    };
    push(t.year() as u32, 4, '-');
    push(u8::from(t.month()).into(), 2, '-');
    push(t.day().into(), 2, 'T');
    push(t.hour().into(), 2, ':');
    push(t.minute().into(), 2, ':');
    push(t.second().into(), 2, '.');
    push(t.millisecond().into(), 3, 'Z');
    out
}

/// Milliseconds since the Unix epoch, as printed.
pub fn from_millis(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map(format)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch of an RFC 3339 time: the form [`format`] prints read
/// directly, any other through the general parser.
pub fn epoch_seconds(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let fast = (|| {
        if b.len() != 24 || [b[4], b[7], b[10], b[13], b[16], b[19], b[23]] != *b"--T::.Z" {
            return None;
        }
        let month = time::Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
        let date =
            time::Date::from_calendar_date(digits(0..4)? as i32, month, digits(8..10)? as u8)
                .ok()?;
        let clock = time::Time::from_hms_milli(
            digits(11..13)? as u8,
            digits(14..16)? as u8,
            digits(17..19)? as u8,
            digits(20..23)? as u16,
        )
        .ok()?;
        let t = time::PrimitiveDateTime::new(date, clock).assume_utc();
        Some(t.unix_timestamp() as f64 + f64::from(t.millisecond()) / 1e3)
    })();
    fast.or_else(|| {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
    })
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
        assert_eq!(from_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(from_millis(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(from_millis(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        for millis in [0, 951_782_400_007, 1_795_788_192_345, 253_402_300_799_999] {
            let printed = from_millis(millis);
            assert_eq!(
                epoch_seconds(&printed),
                Some(millis as f64 / 1e3),
                "{printed}"
            );
        }
        // Another offset or precision goes through the general parser.
        assert_eq!(
            epoch_seconds("2026-11-27T15:03:12.5+01:00"),
            Some(1_795_788_192.5)
        );
        assert_eq!(epoch_seconds("2026-13-27T14:03:12.345Z"), None);
        assert_eq!(epoch_seconds("not a time"), None);
        // Past year 9999 there is no such time here (as before): nothing is printed.
        assert_eq!(from_millis(253_402_300_800_000), "");
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
