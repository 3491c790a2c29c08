//! Sizes and durations, parsed and formatted one way everywhere: in pipeline files, on the command
//! line, in logs, plans, summaries and reports.
//!
//! A leaf module: it knows text and numbers only.

use std::time::Duration;

/// Parses `16MiB`, `8 MB`, `512KiB`, `1GB`, `1.5GiB` or a bare number of bytes. Binary units
/// (`KiB`, `MiB`, `GiB`, `TiB`) count in 1024s, decimal ones (`KB`, `MB`, `GB`, `TB`) in 1000s;
/// units are case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let invalid = || format!("invalid size `{text}`: expected e.g. 16MiB, 8MB, 2GiB or 1048576");
    let digits = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    if digits == 0 {
        return Err(invalid());
    }
    let number: f64 = s[..digits].parse().map_err(|_| invalid())?;
    let factor: f64 = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(invalid()),
    };
    Ok((number * factor).round() as u64)
}

/// `1536` -> `1.5 KiB`, `12` -> `12 B`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Parses `250ms`, `30s`, `5m`, `1h30m`, `2d`, `1.5h`, `10 minutes` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let invalid = || format!("invalid duration `{text}`: expected e.g. 250ms, 30s, 5m, 1h30m or 2d");
    if s.is_empty() {
        return Err(invalid());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return if secs >= 0.0 && secs.is_finite() { Ok(Duration::from_secs_f64(secs)) } else { Err(invalid()) };
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let factor = match rest[..unit_len].trim() {
            "ms" | "millis" | "milliseconds" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * factor;
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration the way pipeline files write them: `1h30m`, `45s`, `250ms`, `1.5s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) && ms < 60_000 {
        return if ms < 1000 { format!("{ms}ms") } else { format!("{:.1}s", d.as_secs_f64()) };
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// A measured time for tables, at a width that stays readable: `0.21s`, `4.2s`, `1m05s`, `1h02m`.
pub fn format_elapsed(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2}s")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, (d.as_secs() % 3600) / 60)
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count with its noun, singular for one: `1 task`, `2 tasks`, `1,024 records`. The plural is
/// the noun with an `s`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{} {noun}s", thousands(n)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(count(1, "task"), "1 task");
        assert_eq!(count(0, "record"), "0 records");
        assert_eq!(count(1024, "record"), "1,024 records");
    }

    #[test]
    fn sizes_take_binary_and_decimal_units_in_any_case() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 mib"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert!(parse_size("lots").unwrap_err().starts_with("invalid size `lots`"));
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(12), "12 B");
    }

    #[test]
    fn durations_read_and_print_like_pipeline_files() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10 minutes"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("5x").unwrap_err().contains("invalid duration `5x`"));
        assert_eq!(parse_duration("1 hour 30 min"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(2 * 86400)), "2d");
        assert_eq!(format_elapsed(Duration::from_millis(210)), "0.21s");
        assert_eq!(format_elapsed(Duration::from_secs(65)), "1m05s");
        assert_eq!(format_elapsed(Duration::from_secs(3720)), "1h02m");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
