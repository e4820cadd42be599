//! Durations in configuration files: an integer followed by a unit, optionally repeated
//! (`"250ms"`, `"30s"`, `"1m30s"`, `"2h"`). Units: `ns`, `us`, `ms`, `s`, `m`, `h`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

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

/// `#[serde(with = "duration::required")]` for `Duration` fields.
pub mod required {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "duration::optional")]` for `Option<Duration>` fields (absent = `None`;
/// pair with `#[serde(default)]`).
pub mod optional {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map(Some).map_err(serde::de::Error::custom)
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
}
