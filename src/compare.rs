//! The one comparator for GPU-vs-reference checks: the NaN/inf pattern first, then
//! `|got - want| <= atol + rtol·|want|`; on failure, the first mismatches with index and values.

/// Largest absolute difference over finite pairs.
pub fn max_abs_err(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// `Ok(max abs error)` or `Err(report)`.
pub fn compare(name: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Result<f32, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: length {} != reference length {}",
            got.len(),
            want.len()
        ));
    }
    let mut bad = Vec::new();
    let mut count = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let same_class = (g.is_nan() == w.is_nan())
            && (g.is_infinite() == w.is_infinite())
            && (!w.is_infinite() || g == w);
        let ok = if w.is_finite() {
            same_class && (g - w).abs() <= atol + rtol * w.abs()
        } else {
            same_class
        };
        if !ok {
            count += 1;
            if bad.len() < 8 {
                bad.push(format!("  [{i}] got {g:e}, want {w:e}"));
            }
        }
    }
    if count > 0 {
        return Err(format!(
            "{name}: {count} of {} mismatch (atol {atol:e}, rtol {rtol:e}); first:\n{}",
            got.len(),
            bad.join("\n")
        ));
    }
    Ok(max_abs_err(got, want))
}
