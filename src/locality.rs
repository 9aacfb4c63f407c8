//! Per-layer temporal locality: profiles of step-to-step top-k overlap, and the calibration that
//! turns a target overlap into the query correlation ρ the engine uses.
//!
//! The paper (ESS, Fig. 2, read off a heat map; BRIEF.md §3) measured the intra-layer similarity
//! r = |K_{t−1} ∩ K_t| / |K_t| of DeepSeek-V3.2 on LongBench v2: layer 0 ≈ 0.05, early layers
//! ≈ 0.7–0.9, middle layers ≈ 0.35–0.6, late layers ≈ 0.3–0.8, nearly independent of context.
//! [`paper_profile`] is that shape, stretched over any number of layers. Overlap is what a profile
//! states; which ρ gives it depends on the shapes (heads, dims, k / T), so [`calibrate`] measures
//! it on the engine's own indexer and top-k, and [`rho_for`] interpolates.

use crate::engine::{Engine, EngineOptions, Mode};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// Target overlap per layer, shaped like the paper's measurement.
pub fn paper_profile(layers: u32) -> Vec<f32> {
    (0..layers)
        .map(|l| {
            let depth = l as f32 / layers as f32; // 0 = first layer
            match depth {
                d if l == 0 || d < 0.02 => 0.05,
                d if d <= 0.28 => 0.8,
                // middle layers: from 0.6 down to 0.35
                d if d <= 0.72 => 0.6 - 0.25 * (d - 0.28) / 0.44,
                _ => 0.7,
            }
        })
        .collect()
}

/// A profile from text: a JSON array (`[0.05, 0.8, …]`) or numbers separated by spaces, commas
/// or new lines; `#` starts a comment. Values must lie in 0 ..= 1.
pub fn parse_profile(text: &str, what: &str) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let content = raw.split('#').next().unwrap_or("");
        for tok in content
            .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .filter(|t| !t.is_empty())
        {
            let v: f32 = tok.parse().map_err(|_| Error::Parse {
                what: what.into(),
                line: i + 1,
                offset,
                message: format!("{tok:?} is not a number"),
            })?;
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::Parse {
                    what: what.into(),
                    line: i + 1,
                    offset,
                    message: format!("overlap {v} outside 0 ..= 1"),
                });
            }
            out.push(v);
        }
        offset += raw.len();
    }
    if out.is_empty() {
        return Err(Error::Parse {
            what: what.into(),
            line: 1,
            offset: 0,
            message: "no values".into(),
        });
    }
    Ok(out)
}

/// The ρ grid calibration measures.
pub const CALIBRATION_RHOS: [f32; 10] = [0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0];

/// Measured mean step-to-step overlap for each ρ of `rhos`, at the shapes of `opts` (one layer,
/// up to 4 sequences, resident mode, 6 steps).
pub fn calibrate(ctx: &GpuContext, opts: &EngineOptions, rhos: &[f32]) -> Result<Vec<(f32, f64)>> {
    crate::gpu::block_on("calibrate", calibrate_async(ctx, opts, rhos))
}

/// [`calibrate`] without blocking (a browser page).
pub async fn calibrate_async(
    ctx: &GpuContext,
    opts: &EngineOptions,
    rhos: &[f32],
) -> Result<Vec<(f32, f64)>> {
    let batch = opts.run.batch.min(4);
    let run = crate::RunConfig {
        layers: 1,
        batch,
        ..opts.run.clone()
    };
    let mut table = Vec::new();
    for &rho in rhos {
        let o = EngineOptions {
            run: run.clone(),
            contexts: opts.contexts.iter().copied().take(batch as usize).collect(),
            steps: 6,
            mode: Mode::Resident,
            locality: rho,
            layer_locality: Vec::new(),
            warmup_windows: 0,
            track_overlap: true,
            record_trace: false,
            ..opts.clone()
        };
        let mut e = Engine::new_async(ctx, &o, u64::MAX).await?;
        for _ in 0..o.steps {
            e.step_async(ctx).await?;
        }
        e.finish_async(ctx).await?;
        table.push((rho, e.stats.overlap()[0]));
    }
    Ok(table)
}

/// Calibrate on this adapter and set `opts.layer_locality` to the ρ that gives each layer its
/// target overlap; returns (target, ρ) per layer. `targets` has one value per layer.
pub async fn apply_targets(
    ctx: &GpuContext,
    opts: &mut EngineOptions,
    targets: &[f32],
) -> Result<Vec<(f32, f32)>> {
    if targets.len() != opts.run.layers as usize {
        return Err(Error::config(
            "profile",
            format!("{} values", targets.len()),
            format!("one per layer ({})", opts.run.layers),
        ));
    }
    let table = calibrate_async(ctx, opts, &CALIBRATION_RHOS).await?;
    let pairs: Vec<(f32, f32)> = targets.iter().map(|&t| (t, rho_for(t, &table))).collect();
    opts.layer_locality = pairs.iter().map(|p| p.1).collect();
    Ok(pairs)
}

/// The ρ whose calibrated overlap is `target` (linear between calibration points; clamped).
pub fn rho_for(target: f32, table: &[(f32, f64)]) -> f32 {
    let t = target as f64;
    let mut pts: Vec<(f32, f64)> = table.to_vec();
    pts.sort_by(|a, b| a.1.total_cmp(&b.1));
    if t <= pts[0].1 {
        return pts[0].0;
    }
    for w in pts.windows(2) {
        let ((r0, o0), (r1, o1)) = (w[0], w[1]);
        if t <= o1 {
            let f = if o1 > o0 { (t - o0) / (o1 - o0) } else { 0.0 };
            return r0 + (r1 - r0) * f as f32;
        }
    }
    pts[pts.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_profile_has_the_paper_shape() {
        let p = paper_profile(8);
        assert_eq!(p[0], 0.05);
        assert!(p[1] >= 0.7 && p[2] >= 0.7);
        assert!(p[3..6].iter().all(|&x| (0.35..=0.6).contains(&x)));
        assert_eq!(p[7], 0.7);
    }

    #[test]
    fn profiles_parse_and_errors_say_where() {
        assert_eq!(
            parse_profile("[0.1, 0.5,0.9]", "x").unwrap(),
            vec![0.1, 0.5, 0.9]
        );
        assert_eq!(
            parse_profile("# layers\n0.1\n0.2 # two\n", "x").unwrap(),
            vec![0.1, 0.2]
        );
        let e = parse_profile("0.1\n0.2\nabc\n", "p.txt")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("p.txt: line 3 (byte offset 8)") && e.contains("\"abc\""),
            "{e}"
        );
        let e = parse_profile("1.5", "x").unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("overlap 1.5 outside 0 ..= 1"),
            "{e}"
        );
        let e = parse_profile("", "x").unwrap_err().to_string();
        assert!(e.contains("no values"), "{e}");
    }

    #[test]
    fn rho_interpolates_the_calibration() {
        let t = [(0.0, 0.06), (0.9, 0.62), (0.98, 0.83), (1.0, 1.0)];
        assert_eq!(rho_for(0.01, &t), 0.0);
        assert!((rho_for(0.725, &t) - 0.94).abs() < 0.01);
        assert_eq!(rho_for(1.0, &t), 1.0);
    }
}
