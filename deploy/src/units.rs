//! Durations (`500ms`, `10s`, `5m`, `1h`, `1d`, `1h30m`) and sizes (`512M`, `2G`, `10KiB`)
//! as people write them in manifests and configuration, parsed into exact values.

use std::time::Duration;

/// Parses a duration: one or more `<digits><unit>` pairs with unit `ms`, `s`, `m`, `h` or `d`
/// (`1h30m`). A bare number is refused, so that `10` is never silently read as seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(
            "expected a duration like 500ms, 10s, 5m, 1h or 1d, got an empty string".into(),
        );
    }
    let bad = || format!("expected a duration like 500ms, 10s, 5m, 1h or 1d, got {trimmed:?}");
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits_end].parse().map_err(|_| bad())?;
        let after_digits = &rest[digits_end..];
        let unit_end = after_digits
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after_digits.len());
        let unit = &after_digits[..unit_end];
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let millis = number
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("duration {trimmed:?} is too long"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| format!("duration {trimmed:?} is too long"))?;
        rest = &after_digits[unit_end..];
    }
    Ok(total)
}

/// Writes a duration in the form [`parse_duration`] reads back (`1h30m`, `500ms`, `0s`).
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let count = millis / size;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            millis -= count * size;
        }
    }
    out
}

/// Parses a size into bytes: a number (integer or decimal) followed by an optional unit.
/// `K`, `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024 (as in most server
/// configuration); `KB`, `MB`, `GB`, `TB` are powers of 1000; `B` or no unit means bytes.
/// Units are case-insensitive except that `b` alone is not accepted as a unit of bits.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let bad = || format!("expected a size like 512M, 2G, 10KiB or 4096, got {trimmed:?}");
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number_text, unit_text) = trimmed.split_at(number_end);
    if number_text.is_empty() || number_text.chars().filter(|c| *c == '.').count() > 1 {
        return Err(bad());
    }
    let unit = unit_text.trim().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let too_big = || format!("size {trimmed:?} is too large");
    if let Some((whole, fraction)) = number_text.split_once('.') {
        // Decimal sizes (`1.5G`) are computed exactly in integers and rounded down to a byte.
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        if fraction.is_empty() || fraction.len() > 9 {
            return Err(bad());
        }
        let fraction_value: u64 = fraction.parse().map_err(|_| bad())?;
        let scale = 10u64.pow(fraction.len() as u32);
        let whole_bytes = whole.checked_mul(multiplier).ok_or_else(too_big)?;
        let fraction_bytes =
            (u128::from(fraction_value) * u128::from(multiplier) / u128::from(scale)) as u64;
        whole_bytes.checked_add(fraction_bytes).ok_or_else(too_big)
    } else {
        let number: u64 = number_text.parse().map_err(|_| too_big())?;
        number.checked_mul(multiplier).ok_or_else(too_big)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_and_combined() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_without_unit_or_with_unknown_unit_are_refused() {
        for bad in ["", "10", "s", "10x", "1.5h", "-1s", "10 s", "h1"] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(error.contains("expected a duration"), "{bad}: {error}");
        }
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn durations_format_back_to_what_parses() {
        for text in ["500ms", "10s", "5m", "1h30m", "1d", "0s", "1m1s1ms"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
    }

    #[test]
    fn sizes_binary_decimal_and_fractional() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("10KiB"), Ok(10 << 10));
        assert_eq!(parse_size("10kb"), Ok(10_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn sizes_that_are_not_sizes_are_refused() {
        for bad in ["", "M", "12Q", "1.2.3G", "-1K", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
