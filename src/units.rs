//! Sizes and durations as administrators write them (`512M`, `2GiB`, `90s`).
//!
//! Size suffixes are binary, as the container engine reads them: `K`, `KB`
//! and `KiB` all mean 1024 bytes (case-insensitive), and likewise `M`, `G`,
//! `T`. Durations use `humantime` (`90s`, `5m`, `1h 30m`).

use std::time::Duration;

/// Parses a size such as `4096`, `512K`, `16M`, `2GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(size_error(text)),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| size_error(text))
}

fn size_error(text: &str) -> String {
    format!("expected a size like 4096, 512K, 16M or 2G, got '{text}'")
}

/// Parses a duration such as `90s`, `5m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("expected a duration like 30s, 5m or 1h 30m, got '{text}' ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1 gb"), Ok(1 << 30));
        for bad in ["", "lots", "12X", "-1M", "99999999999999999999T", "1.5G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
    }
}
