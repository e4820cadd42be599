//! Durations in configuration files: an integer followed by a unit, optionally repeated
//! (`"250ms"`, `"30s"`, `"1m30s"`, `"2h"`). Units: `ns`, `us`, `ms`, `s`, `m`, `h`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Parses a duration such as `"1m30s"`. Returns a message suitable for a config error.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; expected a number and a unit, such as \"30s\"".into());
    }
    let mut total_nanos: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 {
            return Err(format!("invalid duration {text:?}: expected a number at {rest:?}"));
        }
        let (digits, after_digits) = rest.split_at(digits_len);
        let unit_len = after_digits.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after_unit) = after_digits.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit after {digits} (use ns, us, ms, s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        let value: u128 =
            digits.parse().map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        total_nanos = value
            .checked_mul(nanos_per_unit)
            .and_then(|nanos| total_nanos.checked_add(nanos))
            .filter(|nanos| *nanos <= u128::from(u64::MAX))
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        rest = after_unit;
    }
    // The filter above keeps the total within u64 nanoseconds (about 584 years).
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// Formats a duration in the syntax [`parse`] reads, largest unit first, without zero parts:
/// 90 seconds is `"1m30s"`, 1.5 milliseconds `"1ms500us"`, zero `"0s"`. `parse(&format(d))`
/// gives `d` back for every duration `parse` can produce.
pub fn format(duration: Duration) -> String {
    const UNITS: [(&str, u128); 6] = [
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let mut remaining_nanos = duration.as_nanos();
    if remaining_nanos == 0 {
        return "0s".into();
    }
    let mut text = String::new();
    for (unit, nanos_per_unit) in UNITS {
        let count = remaining_nanos / nanos_per_unit;
        if count > 0 {
            text.push_str(&count.to_string());
            text.push_str(unit);
            remaining_nanos %= nanos_per_unit;
        }
    }
    text
}

/// Reads a duration string. A visitor rather than `String::deserialize` so that a number
/// where a duration belongs (`front = 30`) is reported as "expected a duration such as
/// \"30s\"", not as "expected a string".
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a duration such as \"30s\" or \"1m30s\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text).map_err(E::custom)
    }
}

/// `#[serde(with = "duration::required")]` for `Duration` fields.
pub mod required {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*duration))
    }
}

/// `#[serde(with = "duration::optional")]` for `Option<Duration>` fields (absent = `None`;
/// pair with `#[serde(default)]`).
pub mod optional {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_str(DurationVisitor).map(Some)
    }

    pub fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_str(&format(*duration)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("15us"), Ok(Duration::from_micros(15)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn rejects_missing_or_unknown_units_and_overflow() {
        assert!(parse("30").unwrap_err().contains("missing unit"));
        assert!(parse("30sec").unwrap_err().contains("unknown unit"));
        assert!(parse("s").unwrap_err().contains("expected a number"));
        assert!(parse("").is_err());
        assert!(parse("99999999999999999999999h").is_err());
    }

    #[test]
    fn formats_largest_unit_first_without_zero_parts() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_micros(1_500)), "1ms500us");
        assert_eq!(format(Duration::from_nanos(3_600_000_000_001)), "1h1ns");
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_gives_the_same_duration(nanos in proptest::prelude::any::<u64>()) {
            let duration = Duration::from_nanos(nanos);
            proptest::prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }
    }
}
