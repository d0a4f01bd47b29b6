//! Time as a value. The domain never reads a clock: the engine passes `now`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

pub const MS_PER_SEC: u64 = 1_000;
pub const MS_PER_DAY: u64 = 86_400_000;

impl Timestamp {
    pub fn from_secs(secs: u64) -> Timestamp {
        Timestamp(secs.saturating_mul(MS_PER_SEC))
    }

    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// The UTC day number (days since 1970-01-01).
    pub fn day(self) -> u64 {
        self.0 / MS_PER_DAY
    }

    /// RFC 3339 in UTC to the millisecond, trailing zeros of the fraction
    /// left out: `2026-11-24T02:42:00.5Z`, `2026-11-24T02:42:00Z`. A time
    /// past year 9999, which RFC 3339 cannot write, is its number of
    /// milliseconds.
    pub fn to_rfc3339(self) -> String {
        self.rfc3339().as_str().to_owned()
    }

    /// Appends [`to_rfc3339`](Self::to_rfc3339)'s text to `out`, allocating nothing.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.rfc3339().as_bytes());
    }

    /// The text of [`to_rfc3339`](Self::to_rfc3339), on the stack.
    pub fn rfc3339(self) -> Rfc3339 {
        let mut text = Rfc3339 {
            bytes: [0; RFC3339_MAX_LEN],
            len: 0,
        };
        let Some(date) = date_and_time(self.0 / MS_PER_SEC) else {
            text.push_u64(self.0);
            return text;
        };
        text.bytes[..date.len()].copy_from_slice(&date);
        text.len = date.len();
        let ms = self.0 % MS_PER_SEC;
        if ms != 0 {
            text.push(b'.');
            if ms.is_multiple_of(100) {
                text.push_digits(ms / 100, 1);
            } else if ms.is_multiple_of(10) {
                text.push_digits(ms / 10, 2);
            } else {
                text.push_digits(ms, 3);
            }
        }
        text.push(b'Z');
        text
    }

    /// Parses any RFC 3339 time (any offset); `None` if malformed or before 1970.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(ms).ok().map(Timestamp)
    }
}

/// The first instant of year 10000, past what RFC 3339 writes.
const RFC3339_END_MS: u64 = 253_402_300_800_000;
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`; the 20 digits of a `u64` fit too.
const RFC3339_MAX_LEN: usize = 24;

/// A time's RFC 3339 text, kept on the stack (see [`Timestamp::rfc3339`]).
#[derive(Clone, Copy)]
pub struct Rfc3339 {
    bytes: [u8; RFC3339_MAX_LEN],
    len: usize,
}

impl Rfc3339 {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and `-T:.Z` are ever pushed.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// `value`'s last `width` decimal digits, zero-padded.
    fn push_digits(&mut self, value: u64, width: usize) {
        put_digits(&mut self.bytes[self.len..self.len + width], value);
        self.len += width;
    }

    fn push_u64(&mut self, value: u64) {
        let width = value.checked_ilog10().map_or(1, |log| log as usize + 1);
        self.push_digits(value, width);
    }
}

/// `YYYY-MM-DDTHH:MM:SS`: the date and time of day, in UTC, `secs` after
/// the epoch; `None` past year 9999, which RFC 3339 cannot write.
pub fn date_and_time(secs: u64) -> Option<[u8; 19]> {
    if secs >= RFC3339_END_MS / MS_PER_SEC {
        return None;
    }
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    let mut out = [0u8; 19];
    let parts = [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, in_day / 3_600),
        (14, 2, in_day / 60 % 60),
        (17, 2, in_day % 60),
    ];
    for (start, width, value) in parts {
        put_digits(&mut out[start..start + width], value);
    }
    for (i, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[i] = separator;
    }
    Some(out)
}

/// `value`'s last `slots.len()` decimal digits into `slots`, zero-padded.
fn put_digits(slots: &mut [u8], mut value: u64) {
    for slot in slots.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian date (year, month, day) of a day count since
/// 1970-01-01: Howard Hinnant's `civil_from_days`, over unsigned days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01, so that a leap day ends its year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rfc3339().as_str())
    }
}

/// JSON (human readable) carries RFC 3339 strings; bincode carries the u64.
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(self.rfc3339().as_str())
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Timestamp::parse_rfc3339(&text)
                .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
        } else {
            u64::deserialize(d).map(Timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_at_millisecond_precision() {
        let t = Timestamp(1_795_000_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert!(t.to_rfc3339().ends_with('Z'));
    }

    /// What the `time` crate writes (the formatting before this module's own).
    fn time_crate_rfc3339(t: Timestamp) -> String {
        let nanos = i128::from(t.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(at) => at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.0.to_string()),
            Err(_) => t.0.to_string(),
        }
    }

    #[test]
    fn rfc3339_is_the_text_of_the_time_crate_at_every_edge() {
        // proves the fraction's trimming, leap days, year and day ends, and the number past year 9999
        let day = MS_PER_DAY;
        let edges = [
            0,
            1,
            10,
            100,
            120,
            999,
            day - 1,
            day,
            59 * day,         // 1970-03-01
            789 * day,        // 1972-02-29
            11_016 * day + 1, // 2000-02-29
            1_795_000_000_123,
            RFC3339_END_MS - 1,
            RFC3339_END_MS,
            u64::MAX,
        ];
        for ms in edges {
            let t = Timestamp(ms);
            assert_eq!(t.to_rfc3339(), time_crate_rfc3339(t), "{ms}");
            assert_eq!(t.to_string(), t.to_rfc3339());
        }
        assert_eq!(Timestamp(120).to_rfc3339(), "1970-01-01T00:00:00.12Z");
        assert_eq!(Timestamp(u64::MAX).to_rfc3339(), u64::MAX.to_string());
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_matches_the_time_crate(ms in 0..RFC3339_END_MS + 1_000, any_ms: u64) {
            for t in [Timestamp(ms), Timestamp(any_ms)] {
                let mut written = b"x".to_vec();
                t.write_rfc3339(&mut written);
                let expected = time_crate_rfc3339(t);
                proptest::prop_assert_eq!(&written[1..], expected.as_bytes());
                if t.0 < RFC3339_END_MS {
                    proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
                }
            }
        }
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let a = Timestamp::parse_rfc3339("2026-01-01T09:00:00+09:00").unwrap();
        let b = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        assert_eq!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z"), None);
    }
}
