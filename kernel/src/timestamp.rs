//! Timestamps as text: the one parser and the one formatter every layer uses.
//!
//! A `TIMESTAMP` value is nanoseconds since the Unix epoch, UTC, in an `i64`, which
//! spans the years 1677 to 2262. Accepted input forms:
//!
//! - `2024-01-15 10:30:00` and `2024-01-15T10:30:00`, optionally with a fraction of up
//!   to nine digits (`10:30:00.123`); UTC.
//! - RFC 3339 with an offset: `2024-01-15T10:30:00Z`, `2024-01-15T12:30:00.5+02:00`
//!   (a space instead of the `T` is accepted too).
//! - A date alone, `2024-01-15`: midnight UTC.
//!
//! Output is always `YYYY-MM-DD HH:MM:SS[.fraction]` in UTC, the fraction without
//! trailing zeros, so `format` then `parse` returns the same nanoseconds.

use std::fmt::Write as _;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// Why a text is not a timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error(
        "invalid timestamp '{text}': expected 'YYYY-MM-DD HH:MM:SS[.fraction]' (UTC) or RFC 3339 with an offset"
    )]
    Syntax { text: String },
    #[error(
        "timestamp '{text}' is out of range: TIMESTAMP holds 1677-09-21 00:12:43.145224192 to 2262-04-11 23:47:16.854775807 UTC"
    )]
    OutOfRange { text: String },
}

/// Parses one of the accepted forms (see the module docs) into nanoseconds since the epoch.
pub fn parse(text: &str) -> Result<i64, TimestampError> {
    let trimmed = text.trim();
    let syntax = || TimestampError::Syntax {
        text: text.to_string(),
    };
    let moment = parse_moment(trimmed).ok_or_else(syntax)?;
    i64::try_from(moment.unix_timestamp_nanos()).map_err(|_| TimestampError::OutOfRange {
        text: text.to_string(),
    })
}

fn parse_moment(text: &str) -> Option<OffsetDateTime> {
    if let Ok(moment) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(moment);
    }
    let with_offset = format_description!(
        "[year]-[month]-[day][first [ ][T][t]][hour]:[minute]:[second][optional [.[subsecond]]][first [Z][z][[offset_hour sign:mandatory]:[offset_minute]]]"
    );
    if let Ok(moment) = OffsetDateTime::parse(text, with_offset) {
        return Some(moment);
    }
    let local = format_description!(
        "[year]-[month]-[day][first [ ][T][t]][hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    if let Ok(moment) = PrimitiveDateTime::parse(text, local) {
        return Some(moment.assume_utc());
    }
    let date = format_description!("[year]-[month]-[day]");
    if let Ok(day) = Date::parse(text, date) {
        return Some(day.midnight().assume_utc());
    }
    None
}

/// Formats nanoseconds since the epoch as `YYYY-MM-DD HH:MM:SS[.fraction]`, UTC.
pub fn format(nanos: i64) -> String {
    // Every i64 of nanoseconds lies within the years 1677..=2262, inside `time`'s range.
    let moment = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .expect("an i64 of nanoseconds is always within time's supported range");
    let mut out = String::with_capacity(29);
    write!(
        out,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        moment.year(),
        u8::from(moment.month()),
        moment.day(),
        moment.hour(),
        moment.minute(),
        moment.second()
    )
    .expect("writing to a String cannot fail");
    let fraction = moment.nanosecond();
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    #[allow(clippy::needless_pass_by_value)] // expect-test's idiom passes `Expect` by value.
    fn check(input: &str, expected: Expect) {
        let actual = match parse(input) {
            Ok(nanos) => format!("{nanos} = {}", format(nanos)),
            Err(error) => format!("error: {error}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn parses_the_accepted_forms() {
        check(
            "2024-01-15 10:30:00",
            expect!["1705314600000000000 = 2024-01-15 10:30:00"],
        );
        check(
            "2024-01-15T10:30:00",
            expect!["1705314600000000000 = 2024-01-15 10:30:00"],
        );
        check(
            "2024-01-15T10:30:00Z",
            expect!["1705314600000000000 = 2024-01-15 10:30:00"],
        );
        check(
            "2024-01-15T12:30:00.5+02:00",
            expect!["1705314600500000000 = 2024-01-15 10:30:00.5"],
        );
        check(
            "2024-01-15 12:30:00.000000001+02:00",
            expect!["1705314600000000001 = 2024-01-15 10:30:00.000000001"],
        );
        check(
            " 2024-01-15 ",
            expect!["1705276800000000000 = 2024-01-15 00:00:00"],
        );
        check(
            "1969-12-31 23:59:59.9",
            expect!["-100000000 = 1969-12-31 23:59:59.9"],
        );
        check(
            "yesterday",
            expect![[
                r#"error: invalid timestamp 'yesterday': expected 'YYYY-MM-DD HH:MM:SS[.fraction]' (UTC) or RFC 3339 with an offset"#
            ]],
        );
        check(
            "2024-02-30 00:00:00",
            expect![[
                r#"error: invalid timestamp '2024-02-30 00:00:00': expected 'YYYY-MM-DD HH:MM:SS[.fraction]' (UTC) or RFC 3339 with an offset"#
            ]],
        );
        check(
            "3000-01-01",
            expect![
                "error: timestamp '3000-01-01' is out of range: TIMESTAMP holds 1677-09-21 00:12:43.145224192 to 2262-04-11 23:47:16.854775807 UTC"
            ],
        );
    }

    #[test]
    fn format_then_parse_is_the_identity_at_the_extremes() {
        for nanos in [i64::MIN, -1, 0, 1, 1_705_314_600_123_456_789, i64::MAX] {
            assert_eq!(parse(&format(nanos)), Ok(nanos), "{nanos}");
        }
    }
}
