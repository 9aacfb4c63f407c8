//! The measured side of the simulator: `ess-wgpu sweep` records (sweep.csv) read into curves of
//! seconds a step against batch, one per stage, mode and context, and the engine's gather rate
//! fitted from offload rows.

use crate::engine::Stage;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Records shipped with the repository, so that the ready-made configs run anywhere: the path
/// a config names them by, and the text.
const BUILT_IN: [(&str, &str); 15] = [
    (
        "configs/sim/miss-profile-paper-locality-32k.txt",
        include_str!("../../configs/sim/miss-profile-paper-locality-32k.txt"),
    ),
    (
        "docs/bench/h200-sim/run-a/none32/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/none32/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/none128/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/none128/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/da32/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/da32/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/da128/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/da128/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/dba32/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/dba32/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/dba128/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/dba128/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/dba4-32/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/dba4-32/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/r01-32/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/r01-32/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/r03-32/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/r03-32/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-a/r005-128/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-a/r005-128/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-b/big32/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-b/big32/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-b/big128/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-b/big128/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-b/none32b/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-b/none32b/sweep.csv"),
    ),
    (
        "docs/bench/h200-sim/run-b/none128b/sweep.csv",
        include_str!("../../docs/bench/h200-sim/run-b/none128b/sweep.csv"),
    ),
];

/// A record's text: a built-in one by its path, or the file.
pub fn read_record(path: &str) -> Result<String> {
    if let Some((_, text)) = BUILT_IN.iter().find(|(p, _)| *p == path) {
        return Ok(text.to_string());
    }
    std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_string(),
        source: e,
    })
}

/// The engine's stages, in the order sweep.csv has their `{stage}_ms_per_step` columns.
pub const STAGES: [Stage; Stage::COUNT] = Stage::ALL;

/// One row of a sweep record.
#[derive(Clone, Debug)]
pub struct SweepRow {
    pub context: u64,
    pub offload: bool,
    pub batch: u32,
    pub largest: bool,
    pub slots: u64,
    pub hit_rate: f64,
    pub device_bytes: f64,
    /// GPU seconds a step (batch / GPU tokens per second).
    pub step: f64,
    /// Seconds a step of each stage in [`STAGES`] order.
    pub stages: [f64; Stage::COUNT],
}

impl SweepRow {
    pub fn stage(&self, name: &str) -> f64 {
        STAGES
            .iter()
            .position(|s| s.name() == name)
            .map_or(0.0, |i| self.stages[i])
    }
}

/// Parses a sweep.csv; `what` names it in errors.
pub fn parse_sweep(what: &str, text: &str) -> Result<Vec<SweepRow>> {
    let bad = |line: usize, message: String| Error::Parse {
        what: what.to_string(),
        line,
        offset: 0,
        message,
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| bad(1, "empty: a sweep.csv header expected".into()))?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| bad(1, format!("no column {name}")))
    };
    let (c_ctx, c_mode, c_batch, c_largest, c_slots, c_tps, c_hit, c_dev) = (
        col("context")?,
        col("mode")?,
        col("batch")?,
        col("largest")?,
        col("slots")?,
        col("tokens_per_s_gpu")?,
        col("hit_rate")?,
        col("device_bytes")?,
    );
    // a record from before a stage existed lacks its column: the stage took no time
    let stage_cols: Vec<Option<usize>> = STAGES
        .iter()
        .map(|s| {
            let col = format!("{}_ms_per_step", s.name());
            header.iter().position(|h| *h == col)
        })
        .collect();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 2;
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != header.len() {
            return Err(bad(
                n,
                format!("{} fields, the header has {}", f.len(), header.len()),
            ));
        }
        let num = |c: usize| -> Result<f64> {
            f[c].trim()
                .parse::<f64>()
                .map_err(|_| bad(n, format!("{}: {:?} is not a number", header[c], f[c])))
        };
        let offload = match f[c_mode] {
            "resident" => false,
            "offload" => true,
            m => return Err(bad(n, format!("mode {m:?}: resident or offload expected"))),
        };
        let batch = num(c_batch)?;
        let tps = num(c_tps)?;
        if batch < 1.0 || tps <= 0.0 {
            return Err(bad(n, "batch ≥ 1 and tokens/s > 0 expected".into()));
        }
        let mut stages = [0.0; Stage::COUNT];
        for (s, c) in stages.iter_mut().zip(&stage_cols) {
            if let Some(c) = c {
                *s = num(*c)? * 1e-3;
            }
        }
        rows.push(SweepRow {
            context: num(c_ctx)? as u64,
            offload,
            batch: batch as u32,
            largest: f[c_largest] == "true",
            slots: num(c_slots)? as u64,
            hit_rate: num(c_hit)?,
            device_bytes: num(c_dev)?,
            step: batch / tps,
            stages,
        });
    }
    Ok(rows)
}

/// Reads and parses every record a config names.
pub fn load(paths: &[String]) -> Result<Vec<SweepRow>> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(parse_sweep(p, &read_record(p)?)?);
    }
    Ok(all)
}

/// Seconds against batch, piecewise linear through measured points; past the last point it
/// goes on along the last segment's slope (the kernels are linear in the batch once it fills
/// the GPU), below the first it scales with the batch.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    points: Vec<(f64, f64)>,
}

impl Curve {
    pub fn new(mut points: Vec<(f64, f64)>) -> Self {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|a, b| a.0 == b.0);
        Curve { points }
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn at(&self, x: f64) -> f64 {
        let p = &self.points;
        match p.len() {
            0 => 0.0,
            1 => p[0].1 * x / p[0].0,
            _ => {
                if x <= p[0].0 {
                    return p[0].1 * x / p[0].0;
                }
                let i = p
                    .iter()
                    .position(|q| q.0 >= x)
                    .unwrap_or(p.len() - 1)
                    .max(1);
                let ((x0, y0), (x1, y1)) = (p[i - 1], p[i]);
                (y0 + (y1 - y0) * (x - x0) / (x1 - x0)).max(0.0)
            }
        }
    }
}

/// A context's measured curves.
#[derive(Clone, Debug, Default)]
pub struct ContextCosts {
    /// Compute stages from resident rows (also offload's: the same kernels on the same shapes).
    pub compute: BTreeMap<&'static str, Curve>,
    /// Offload-only stages from offload rows at the calibration batches.
    pub offload: BTreeMap<&'static str, Curve>,
    /// Gather a layer: fixed seconds and bytes/s, fitted to the calibration rows.
    pub gather_fixed: f64,
    pub gather_rate: f64,
    /// Device bytes: resident and offload, fixed + per sequence (fitted to the rows), and the
    /// pool slots a sequence of the offload rows.
    pub resident_bytes: (f64, f64),
    pub offload_bytes: (f64, f64),
    pub offload_slots: u64,
}

/// Selections a layer and step that can miss, in top-k sets: each sequence's first token's,
/// and of its later (MTP) tokens' the share its first token did not select (`overlap`).
pub fn selection_sets(batch: f64, tokens: u64, overlap: f64) -> f64 {
    batch * (1.0 + (tokens as f64 - 1.0) * (1.0 - overlap))
}

/// Rows missed a layer and step: the [`selection_sets`]' top-k less the hits.
pub fn missed_rows(batch: f64, topk: u64, tokens: u64, hit_rate: f64, overlap: f64) -> f64 {
    selection_sets(batch, tokens, overlap) * topk as f64 * (1.0 - hit_rate)
}

/// Least squares y = a + b·x.
pub fn fit_line(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 2 {
        return (0.0, points.first().map_or(0.0, |p| p.1 / p.0.max(1.0)));
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

/// The curves of every context the records cover. `layers`: how many the records ran (the
/// gather's fit is a layer's); `topk`, `row_bytes`: the model's.
pub fn calibrate(
    resident: &[SweepRow],
    offload: &[SweepRow],
    calibration: &[u32],
    layers: u32,
    topk: u64,
    row_bytes: u64,
) -> Result<BTreeMap<u64, ContextCosts>> {
    let mut out = BTreeMap::new();
    let contexts: std::collections::BTreeSet<u64> = resident
        .iter()
        .filter(|r| !r.offload)
        .map(|r| r.context)
        .collect();
    for ctx in contexts {
        let res: Vec<&SweepRow> = resident
            .iter()
            .filter(|r| !r.offload && r.context == ctx)
            .collect();
        let cal: Vec<&SweepRow> = offload
            .iter()
            .filter(|r| r.offload && r.context == ctx && calibration.contains(&r.batch))
            .collect();
        if cal.len() < 2 {
            return Err(Error::config(
                "costs.measured.calibration_batches",
                format!("{calibration:?} at context {ctx}"),
                "at least two offload rows of the records at each resident context",
            ));
        }
        let mut c = ContextCosts::default();
        for s in ["new_token", "indexer", "topk", "sparse_mla", "ffn"] {
            c.compute.insert(
                s,
                Curve::new(res.iter().map(|r| (r.batch as f64, r.stage(s))).collect()),
            );
        }
        for s in ["resolve", "write_back"] {
            c.offload.insert(
                s,
                Curve::new(cal.iter().map(|r| (r.batch as f64, r.stage(s))).collect()),
            );
        }
        let gathers: Vec<(f64, f64)> = cal
            .iter()
            .map(|r| {
                let bytes =
                    missed_rows(r.batch as f64, topk, 1, r.hit_rate, 1.0) * row_bytes as f64;
                (bytes, r.stage("gather") / layers as f64)
            })
            .collect();
        let (fixed, per_byte) = fit_line(&gathers);
        c.gather_fixed = fixed.max(0.0);
        c.gather_rate = if per_byte > 0.0 {
            1.0 / per_byte
        } else {
            f64::INFINITY
        };
        let bytes = |rows: &[&SweepRow]| {
            fit_line(
                &rows
                    .iter()
                    .map(|r| (r.batch as f64, r.device_bytes))
                    .collect::<Vec<_>>(),
            )
        };
        c.resident_bytes = bytes(&res);
        c.offload_bytes = bytes(&cal);
        c.offload_slots = cal[0].slots;
        if cal.iter().any(|r| r.slots != c.offload_slots) {
            return Err(Error::config(
                "costs.measured.offload",
                format!("rows of different pool sizes at context {ctx}"),
                "one pool size a context in the calibration rows",
            ));
        }
        out.insert(ctx, c);
    }
    if out.is_empty() {
        return Err(Error::config(
            "costs.measured.resident",
            "records without resident rows",
            "sweep records with resident rows",
        ));
    }
    Ok(out)
}
