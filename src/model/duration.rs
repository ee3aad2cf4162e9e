//! Durations as users type them (flags, messages): `500ms`, `90s`, `15m`, `12h`, `7d`, or combinations such as `1h30m`.

use std::time::Duration;

/// Parses durations such as `90s`, `15m`, `12h`, `30d`, `500ms`, or a combination like `1h30m`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration: use e.g. 30s, 15m, 12h or 7d".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number in {s:?}: use e.g. 30s, 15m, 12h or 7d"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("number too large in {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86400),
            other => return Err(format!("unknown unit {other:?} in {s:?}: use ms, s, m, h or d")),
        };
        rest = &rest[unit_len..];
        let part = unit.checked_mul(u32::try_from(n).map_err(|_| format!("number too large in {s:?}"))?);
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(|| format!("duration too large: {s:?}"))?;
    }
    Ok(total)
}

/// `d` the way a user types it: the largest units first, e.g. `7d`, `1h30m`, `90s` becomes `1m30s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let (mut secs, millis) = (d.as_secs(), d.subsec_millis());
    if secs == 0 {
        return format!("{millis}ms");
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out += &format!("{}{unit}", secs / size);
            secs %= size;
        }
    }
    if millis > 0 {
        out += &format!("{millis}ms");
    }
    out
}

/// A duration flag's value, or an error naming the flag.
pub(crate) fn parse_duration_flag(flag: &str, value: &str) -> Result<Duration, crate::error::Error> {
    parse_duration(value).map_err(|e| crate::error::Error::InvalidArgument(format!("invalid {flag} {value:?}: {e}")))
}

pub(crate) fn nonzero(d: Duration, flag: &str) -> Result<Duration, crate::error::Error> {
    if d.is_zero() {
        return Err(crate::error::Error::InvalidArgument(format!("{flag} must be greater than zero")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_combinations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for (d, text) in [(90, "1m30s"), (604_800, "7d"), (5400, "1h30m"), (60, "1m"), (1, "1s")] {
            assert_eq!(format_duration(Duration::from_secs(d)), text);
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(d)), "round trip");
        }
        for bad in ["", "10", "s", "5x", "1.5h", "-1s", "99999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
