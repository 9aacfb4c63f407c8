//! The allowed range of every value a user or a file gives, each checked in one place and used by
//! every command and library entry point that takes it. Errors name the field, the value (long
//! values shortened) and the allowed range. Nothing here is silently clamped or defaulted.

use crate::error::{Error, Result};

/// Longest context a sequence may have (top-k and the indexer index with u32; 1 Mi tokens).
pub const MAX_CONTEXT: u32 = 1 << 20;
/// Most decode steps in one run (the context plus the steps must also fit `MAX_CONTEXT`).
pub const MAX_STEPS: u32 = MAX_CONTEXT;
/// Most sequences in a batch (one workgroup row of the grid per sequence: 65,535).
pub const MAX_BATCH: u32 = 65535;
/// Most LRU warm-up windows.
pub const MAX_WARMUP: u32 = 64;
/// Most timed repetitions of a benchmark measurement.
pub const MAX_REPS: u32 = 1000;
/// Largest latent row `bench transfer` moves (bytes; a multiple of 16).
pub const MAX_ROW_BYTES: u64 = 1 << 16;
/// Most rows `bench transfer` moves in one dispatch.
pub const MAX_TRANSFER_ROWS: u32 = 1 << 20;
/// Largest device budget accepted (64 TiB: more than any GPU has).
pub const MAX_BUDGET: u64 = 64 << 40;

/// A value as shown in a message: at most 40 characters (a 50 MB token is not echoed whole).
pub fn shown(value: &str) -> String {
    const MAX: usize = 40;
    match value.char_indices().nth(MAX) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// An integer in `min ..= max`.
pub fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<u64> {
    if value < min || value > max {
        return Err(Error::config(field, value, format!("{min} ..= {max}")));
    }
    Ok(value)
}

/// A finite number in `(0, 1]`: a sparse memory ratio.
pub fn ratio(field: &str, value: f64) -> Result<f64> {
    if !(value.is_finite() && value > 0.0 && value <= 1.0) {
        return Err(Error::config(field, value, "(0, 1]"));
    }
    Ok(value)
}

/// A finite number in `[0, 1]`: a locality ρ or a target overlap.
pub fn unit(field: &str, value: f64) -> Result<f64> {
    if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
        return Err(Error::config(field, value, "0 ..= 1"));
    }
    Ok(value)
}

/// "4096" or "4K" (= 4096); `None` if it is not a count that fits u32.
pub fn parse_count(s: &str) -> Option<u32> {
    let s = s.trim();
    let (digits, mul) = match s.strip_suffix(['K', 'k']) {
        Some(d) => (d, 1024u64),
        None => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let v = digits.parse::<u64>().ok()?.checked_mul(mul)?;
    u32::try_from(v).ok()
}

/// A count (`4096`, `4K`) of `field` in `min ..= max`.
pub fn count(field: &str, text: &str, min: u32, max: u32) -> Result<u32> {
    let v = parse_count(text).ok_or_else(|| {
        Error::config(
            field,
            shown(text),
            format!("a whole number {min} ..= {max} (suffix K = 1024 allowed)"),
        )
    })?;
    Ok(in_range(field, v as u64, min as u64, max as u64)? as u32)
}

/// A size in bytes: `8G`, `512M`, `64K` or a plain number, at least 1 MiB and at most
/// [`MAX_BUDGET`]; negative, fractional below a byte, NaN and infinite values are errors.
pub fn budget(field: &str, text: &str) -> Result<u64> {
    let t = text.trim();
    let allowed = "a size such as 8G, 512M or 1048576: 1M ..= 64T";
    let bad = || Error::config(field, shown(text), allowed);
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        Some((i, 'T' | 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    if num.is_empty() || !num.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return Err(bad());
    }
    let v = num.parse::<f64>().map_err(|_| bad())? * mul as f64;
    if !v.is_finite() || v < (1u64 << 20) as f64 || v > MAX_BUDGET as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_errors_naming_them() {
        for bad in [
            "-1G", "NaN", "inf", "0", "1e3G", "", "G", "100T", "12Q", "1.5.5M",
        ] {
            let e = budget("device-budget", bad).unwrap_err().to_string();
            assert!(
                e.contains("device-budget") && e.contains("1M ..= 64T"),
                "{bad}: {e}"
            );
        }
        assert_eq!(budget("b", "8G").unwrap(), 8 << 30);
        assert_eq!(budget("b", "1.5M").unwrap(), 3 << 19);
        for bad in [f64::NAN, f64::INFINITY, 0.0, -0.1, 1.5] {
            assert!(ratio("r", bad).is_err());
        }
        assert!(unit("locality", f64::NAN).is_err());
        assert_eq!(parse_count("4K"), Some(4096));
        for bad in ["4194304K", "-1", "+5", " ", "1 2", "0x10"] {
            assert_eq!(parse_count(bad), None, "{bad}");
        }
        let e = count("steps", &"9".repeat(1000), 1, 10)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200 && e.contains("(1000 bytes)"), "{e}");
    }
}
