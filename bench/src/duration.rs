//! `--duration`: a whole number with an optional unit, as `bench/run.sh` passes it.

use std::time::Duration;

/// Parses `90`, `90s`, `5m`, `1h` or `1d`; no unit means seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration such as 5s, 90s, 2m or 1h"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use s, m, h or d")),
    };
    value.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_with_a_unit_or_seconds() {
        assert_eq!(parse("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn anything_else_is_refused() {
        for text in ["", "s", "1.5s", "-1s", "10ms", "1 s", "5x", "99999999999999999999"] {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
        assert!(parse(&format!("{}d", u64::MAX)).is_err());
    }
}
