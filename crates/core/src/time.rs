//! UTC timestamps with .NET's 100 ns resolution, rendered and parsed as RFC 3339 the way IoT Hub does.
//!
//! Hand-rolled so the crate needs no date library: only the proleptic Gregorian calendar in UTC is
//! needed.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const TICKS_PER_SECOND: i64 = 10_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// Unix seconds of 0001-01-01T00:00:00Z, the first instant that can be rendered (.NET `DateTime.MinValue`).
const MIN_UNIX_SECONDS: i64 = -62_135_596_800;
/// Unix seconds of 10000-01-01T00:00:00Z, one past the last instant that can be rendered.
const END_UNIX_SECONDS: i64 = 253_402_300_800;
const MIN_TICKS: i64 = MIN_UNIX_SECONDS * TICKS_PER_SECOND;
const MAX_TICKS: i64 = END_UNIX_SECONDS * TICKS_PER_SECOND - 1;

/// An instant in UTC, counted in 100 ns ticks since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(i64);

impl Timestamp {
    /// "Never happened": 0001-01-01T00:00:00Z, which IoT Hub reports for times that were never set.
    pub const NEVER: Timestamp = Timestamp(MIN_TICKS);

    /// Reads the system clock.
    pub fn now() -> Timestamp {
        let ticks = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_nanos() / 100).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_nanos() / 100).unwrap_or(i64::MAX),
        };
        Timestamp(ticks)
    }

    /// The instant `s` whole seconds after the Unix epoch (saturating).
    pub fn from_unix_seconds(s: i64) -> Timestamp {
        Timestamp(s.saturating_mul(TICKS_PER_SECOND))
    }

    /// The instant `ticks` × 100 ns after the Unix epoch.
    pub fn from_ticks(ticks: i64) -> Timestamp {
        Timestamp(ticks)
    }

    /// 100 ns ticks since the Unix epoch.
    pub fn ticks(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded down.
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(TICKS_PER_SECOND)
    }

    /// This instant moved by `s` seconds (saturating).
    pub fn plus_seconds(self, s: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(s.saturating_mul(TICKS_PER_SECOND)))
    }

    /// Renders as `2020-07-17T06:12:26.8402249Z`: UTC, always seven fractional digits.
    ///
    /// [`Timestamp::NEVER`] renders as `0001-01-01T00:00:00Z`, as IoT Hub does. Instants outside
    /// years 0001..=9999 are clamped to that range, which is all RFC 3339 can express.
    pub fn to_rfc3339(self) -> String {
        self.rfc3339().as_str().to_owned()
    }

    /// The same text as [`Timestamp::to_rfc3339`], without allocating: twin documents render one
    /// per property.
    pub fn rfc3339(self) -> Rfc3339 {
        let ticks = self.0.clamp(MIN_TICKS, MAX_TICKS);
        let seconds = ticks.div_euclid(TICKS_PER_SECOND);
        let fraction = ticks.rem_euclid(TICKS_PER_SECOND);
        let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
        let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let mut text = Rfc3339 {
            bytes: *b"0000-00-00T00:00:00.0000000Z",
            len: RFC3339_LEN,
        };
        let bytes = &mut text.bytes;
        put_digits(&mut bytes[0..4], year);
        put_digits(&mut bytes[5..7], month);
        put_digits(&mut bytes[8..10], day);
        put_digits(&mut bytes[11..13], second_of_day / 3600);
        put_digits(&mut bytes[14..16], second_of_day / 60 % 60);
        put_digits(&mut bytes[17..19], second_of_day % 60);
        if ticks == MIN_TICKS {
            bytes[19] = b'Z';
            text.len = 20;
        } else {
            put_digits(&mut bytes[20..27], fraction);
        }
        text
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}][Z|±hh:mm]`; a missing zone means UTC.
    ///
    /// Digits beyond the seventh fractional one are truncated. Returns `None` for anything else,
    /// including instants outside years 0001..=9999 once converted to UTC.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() < 19
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let year = decimal(&b[0..4])?;
        let month = decimal(&b[5..7])?;
        let day = decimal(&b[8..10])?;
        let hour = decimal(&b[11..13])?;
        let minute = decimal(&b[14..16])?;
        let second = decimal(&b[17..19])?;
        if !(1..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }

        let mut rest = &b[19..];
        let mut fraction_ticks = 0;
        if let Some(after_dot) = rest.strip_prefix(b".") {
            let digits = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&digits) {
                return None;
            }
            let kept = &after_dot[..digits.min(7)];
            let padding = u32::try_from(7 - kept.len()).ok()?;
            fraction_ticks = decimal(kept)? * 10_i64.pow(padding);
            rest = &after_dot[digits..];
        }

        let offset_seconds = match rest {
            [] | [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let offset_hours = decimal(&[*h1, *h2])?;
                let offset_minutes = decimal(&[*m1, *m2])?;
                if offset_hours > 23 || offset_minutes > 59 {
                    return None;
                }
                let magnitude = offset_hours * 3600 + offset_minutes * 60;
                if *sign == b'-' { -magnitude } else { magnitude }
            }
            _ => return None,
        };

        let seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY
            + hour * 3600
            + minute * 60
            + second
            - offset_seconds;
        let ticks = seconds * TICKS_PER_SECOND + fraction_ticks;
        (MIN_TICKS..=MAX_TICKS)
            .contains(&ticks)
            .then_some(Timestamp(ticks))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rfc3339().as_str())
    }
}

const RFC3339_LEN: usize = "2020-07-17T06:12:26.8402249Z".len();

/// A timestamp rendered by [`Timestamp::rfc3339`], held on the stack.
#[derive(Clone, Copy)]
pub struct Rfc3339 {
    bytes: [u8; RFC3339_LEN],
    len: usize,
}

impl Rfc3339 {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Writes `value` as decimal digits filling `out`, zero-padded (`value` is non-negative and fits).
fn put_digits(out: &mut [u8], mut value: i64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The value of a short run of ASCII digits; `None` if any byte is not a digit.
fn decimal(digits: &[u8]) -> Option<i64> {
    digits.iter().try_fold(0_i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400;
    (if month <= 2 { year + 1 } else { year }, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn never_renders_as_dotnet_min_value() {
        assert_eq!(Timestamp::NEVER.to_rfc3339(), "0001-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::parse_rfc3339("0001-01-01T00:00:00Z"),
            Some(Timestamp::NEVER)
        );
    }

    #[test]
    fn renders_seven_fractional_digits() {
        let t = Timestamp::from_unix_seconds(1_594_966_346);
        assert_eq!(t.to_rfc3339(), "2020-07-17T06:12:26.0000000Z");
        let t = Timestamp::from_ticks(1_594_966_346 * TICKS_PER_SECOND + 8_402_249);
        assert_eq!(t.to_rfc3339(), "2020-07-17T06:12:26.8402249Z");
        assert_eq!(t.to_string(), "2020-07-17T06:12:26.8402249Z");
        assert_eq!(
            Timestamp::from_unix_seconds(0).to_rfc3339(),
            "1970-01-01T00:00:00.0000000Z"
        );
    }

    #[test]
    fn renders_leap_days_and_pre_epoch_instants() {
        let leap_day = Timestamp::parse_rfc3339("2024-02-29T23:59:59.9999999Z");
        assert_eq!(
            leap_day.map(Timestamp::to_rfc3339).as_deref(),
            Some("2024-02-29T23:59:59.9999999Z")
        );
        assert_eq!(
            Timestamp::from_ticks(-1).to_rfc3339(),
            "1969-12-31T23:59:59.9999999Z"
        );
    }

    #[test]
    fn out_of_range_instants_are_clamped_when_rendered() {
        assert_eq!(
            Timestamp::from_ticks(i64::MIN).to_rfc3339(),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_ticks(i64::MAX).to_rfc3339(),
            "9999-12-31T23:59:59.9999999Z"
        );
    }

    #[test]
    fn parses_zones_and_fractions() {
        let utc = Timestamp::parse_rfc3339("2016-09-29T18:18:52.7418462Z");
        assert_eq!(Timestamp::parse_rfc3339("2016-09-29T18:18:52.7418462"), utc);
        assert_eq!(
            Timestamp::parse_rfc3339("2016-09-29T20:18:52.7418462+02:00"),
            utc
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2016-09-29T17:48:52.741846299-00:30"),
            utc
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2016-09-29t18:18:52.7418462z"),
            utc
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2016-09-29T18:18:52.5Z").map(Timestamp::ticks),
            utc.map(|t| t.unix_seconds() * TICKS_PER_SECOND + 5_000_000)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-26T08:21:01.442764Z").map(Timestamp::to_rfc3339),
            Some("2026-11-26T08:21:01.4427640Z".to_owned())
        );
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "",
            "2016-09-29",
            "2016-09-29T18:18",
            "2016-13-01T00:00:00Z",
            "2016-00-01T00:00:00Z",
            "2015-02-29T00:00:00Z",
            "2016-04-31T00:00:00Z",
            "2016-09-29T24:00:00Z",
            "2016-09-29T23:60:00Z",
            "2016-09-29T23:59:60Z",
            "0000-12-31T23:59:59Z",
            "2016-09-29T18:18:52.Z",
            "2016-09-29T18:18:52.1234567890Z",
            "2016-09-29T18:18:52ZZ",
            "2016-09-29T18:18:52+0100",
            "2016-09-29T18:18:52+24:00",
            "2016-09-29T18:18:52+01:60",
            "2016-09-29X18:18:52Z",
            "+016-09-29T18:18:52Z",
            "2016-09-29T18:18:5éZ",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unix_seconds_round_down_and_plus_seconds_moves() {
        let t = Timestamp::from_ticks(-1);
        assert_eq!(t.unix_seconds(), -1);
        let t = Timestamp::from_unix_seconds(100).plus_seconds(-40);
        assert_eq!(t.unix_seconds(), 60);
        assert_eq!(
            Timestamp::from_unix_seconds(i64::MAX).plus_seconds(1),
            Timestamp::from_ticks(i64::MAX)
        );
    }

    #[test]
    fn now_is_after_2020() {
        assert!(Timestamp::now() > Timestamp::from_unix_seconds(1_577_836_800));
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(ticks in MIN_TICKS..=MAX_TICKS) {
            let t = Timestamp::from_ticks(ticks);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        }

        #[test]
        fn offsets_shift_the_instant(
            seconds in 0_i64..4_000_000_000,
            offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59_i64),
        ) {
            let utc = Timestamp::from_unix_seconds(seconds);
            let rendered = utc.plus_seconds(offset_minutes * 60).to_rfc3339();
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let magnitude = offset_minutes.abs();
            let local = format!(
                "{}{sign}{:02}:{:02}",
                rendered.trim_end_matches('Z'),
                magnitude / 60,
                magnitude % 60
            );
            prop_assert_eq!(Timestamp::parse_rfc3339(&local), Some(utc));
        }

        #[test]
        fn whatever_parses_renders_and_parses_back(s in "[0-9T:.Z+-]{0,40}|\\PC{0,40}") {
            if let Some(t) = Timestamp::parse_rfc3339(&s) {
                prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
            }
        }
    }
}
