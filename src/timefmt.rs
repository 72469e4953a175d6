//! Time values as users write them: RFC3339 timestamps, integer Unix
//! nanoseconds, and durations like `250us` or `1h30m`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("invalid RFC3339 timestamp {0:?}")]
    Rfc3339(String),
    #[error("invalid timestamp {0:?}: expected Unix nanoseconds or RFC3339")]
    Timestamp(String),
    #[error("invalid duration {0:?}: expected e.g. 250us, 1ms, 30s, 5m, 1h30m")]
    Duration(String),
}

/// Parses a duration such as `1ms`, `250us`, `1h30m` or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, TimeError> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|_| TimeError::Duration(s.to_string()))
}

/// Parses `--start-time`-style values: RFC3339 or integer Unix nanoseconds.
pub fn parse_timestamp_ns(s: &str) -> Result<i64, TimeError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| TimeError::Timestamp(s.to_string()));
    }
    parse_rfc3339_ns(t).map_err(|_| TimeError::Timestamp(s.to_string()))
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Howard Hinnant's algorithm: exact for the proleptic Gregorian calendar.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses RFC3339 (`2024-05-01T12:00:00.123456789Z`, or with `+02:00`)
/// into Unix nanoseconds.
pub fn parse_rfc3339_ns(s: &str) -> Result<i64, TimeError> {
    let err = || TimeError::Rfc3339(s.to_string());
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(err());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, TimeError> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse::<i64>().map_err(|_| err())
        } else {
            Err(err())
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(err()),
    };
    if !(1..=days_in_month).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(err());
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return Err(err());
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return Err(err());
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(err()),
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)
        .and_then(|v| v.checked_add(nanos))
        .ok_or_else(err)
}

/// Formats Unix nanoseconds as RFC3339 UTC with nanoseconds.
pub fn format_rfc3339_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Wall-clock time in Unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_honours_offsets() {
        let ns = parse_rfc3339_ns("2024-02-29T23:59:59.123456789Z").unwrap();
        assert_eq!(format_rfc3339_ns(ns), "2024-02-29T23:59:59.123456789Z");
        assert_eq!(ns, 1_709_251_199_123_456_789);
        assert_eq!(
            parse_rfc3339_ns("2024-03-01T01:59:59.123456789+02:00").unwrap(),
            ns
        );
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T00:00:00.5Z").unwrap(),
            500_000_000
        );
        assert!(parse_rfc3339_ns("2024-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339_ns("2024-02-30T00:00:00Z").is_err());
        assert!(parse_rfc3339_ns("2023-02-29T00:00:00Z").is_err());
        assert!(parse_rfc3339_ns("2000-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339_ns("2024-01-01T00:00:00+99:99").is_err());
        assert!(parse_rfc3339_ns("2024-01-01 00:00:00").is_err());
    }

    #[test]
    fn timestamps_accept_ns_or_rfc3339() {
        assert_eq!(
            parse_timestamp_ns("1700000000000000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert!(parse_timestamp_ns("yesterday").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("fast").is_err());
    }
}
