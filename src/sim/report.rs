//! What `ess-wgpu simulate` reports: throughput against batch per mode (the paper's Fig. 1),
//! the gain at each mode's largest batch, the gain against the sparse memory ratio, a what-if
//! on the bus bandwidth with the break-even point, and the check against measured runs.

use super::config::{Costs, Overlap, Scenario};
use super::records::{self, SweepRow};
use super::{Part, Simulator, Step};
use crate::error::Result;

/// One simulated point of a throughput sweep.
#[derive(Clone, Debug)]
pub struct Point {
    pub context: u64,
    pub ratio: f64,
    pub largest: bool,
    pub step: Step,
}

/// Each mode at `batches` below its largest, and at its largest.
pub fn batch_sweep(sim: &Simulator) -> Result<Vec<Point>> {
    let mut out = Vec::new();
    for s in &sim.cfg.scenarios {
        for offload in [false, true] {
            let largest = sim.largest_batch(s, offload)?;
            let mut list: Vec<u32> = sim
                .cfg
                .batches
                .iter()
                .copied()
                .filter(|&b| b < largest)
                .collect();
            list.push(largest);
            for b in list.into_iter().filter(|&b| b > 0) {
                out.push(Point {
                    context: s.context,
                    ratio: s.ratio,
                    largest: b == largest,
                    step: sim.step(s, b, offload, None)?,
                });
            }
        }
    }
    Ok(out)
}

/// Resident's and offload's largest batches at a scenario and what offload gains.
#[derive(Clone, Debug)]
pub struct Gain {
    pub context: u64,
    pub ratio: f64,
    pub resident: Step,
    pub offload: Step,
}

impl Gain {
    pub fn gain(&self) -> f64 {
        self.offload.tokens_per_s / self.resident.tokens_per_s - 1.0
    }
}

pub fn gain(sim: &Simulator, s: &Scenario) -> Result<Option<Gain>> {
    let (r, o) = (sim.largest_batch(s, false)?, sim.largest_batch(s, true)?);
    if r == 0 || o == 0 {
        return Ok(None);
    }
    Ok(Some(Gain {
        context: s.context,
        ratio: s.ratio,
        resident: sim.step(s, r, false, None)?,
        offload: sim.step(s, o, true, None)?,
    }))
}

/// The gain at every configured ratio, per scenario's context.
pub fn ratio_sweep(sim: &Simulator) -> Result<Vec<Gain>> {
    let mut out = Vec::new();
    for s in &sim.cfg.scenarios {
        for &ratio in &sim.cfg.ratios {
            let at = Scenario {
                context: s.context,
                ratio,
                hit_rate: s.hit_rate,
            };
            // a pool must hold a top-k: smaller ratios are not runnable at this context
            if (ratio * s.context as f64) < sim.cfg.model.topk as f64 {
                continue;
            }
            if let Some(g) = gain(sim, &at)? {
                out.push(g);
            }
        }
    }
    Ok(out)
}

/// The gain at a scenario with one knob of the config changed.
pub fn gain_with(
    sim: &Simulator,
    s: &Scenario,
    change: impl Fn(&mut super::SimConfig),
) -> Result<Option<f64>> {
    let mut cfg = sim.cfg.clone();
    change(&mut cfg);
    let changed = Simulator::new_calibrated(cfg, sim)?;
    Ok(gain(&changed, s)?.map(|g| g.gain()))
}

/// The gain at a scenario with the host → device bus at `bw` bytes/s.
fn gain_at_bus(sim: &Simulator, s: &Scenario, bw: f64) -> Result<Option<f64>> {
    gain_with(sim, s, |c| c.hardware.bus_h2d = bw)
}

/// Gain against the expert-parallel network's bandwidth (GB/s a GPU).
pub fn network_what_if(sim: &Simulator, s: &Scenario) -> Result<Curve> {
    let mut curve = Vec::new();
    for gbps in [20.0, 30.0, 36.0, 41.0, 46.0, 50.0, 60.0, 80.0, 120.0, 160.0] {
        if let Some(g) = gain_with(sim, s, |c| c.hardware.network_bandwidth = gbps * 1e9)? {
            curve.push((gbps, g));
        }
    }
    Ok(curve)
}

/// Gain against a knob's value: (value, gain) points.
pub type Curve = Vec<(f64, f64)>;

/// Gain against the bus bandwidth (GB/s), and the bandwidth (bytes/s) below which offload
/// loses (None where it wins or loses at every bandwidth tried). Roofline costs only: measured
/// gathers have the engine's own rate.
pub fn bus_what_if(sim: &Simulator, s: &Scenario) -> Result<(Curve, Option<f64>)> {
    let mut curve = Vec::new();
    for gbps in [
        2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 37.0, 48.0, 64.0, 96.0, 128.0,
    ] {
        if let Some(g) = gain_at_bus(sim, s, gbps * 1e9)? {
            curve.push((gbps, g));
        }
    }
    let (lo, hi) = (0.25e9, 1024e9);
    let at = |bw: f64| gain_at_bus(sim, s, bw).map(|g| g.unwrap_or(f64::NAN));
    let (glo, ghi) = (at(lo)?, at(hi)?);
    if !(glo < 0.0 && ghi > 0.0) {
        return Ok((curve, None));
    }
    let (mut a, mut b) = (lo, hi);
    for _ in 0..60 {
        let m = (a * b).sqrt();
        if at(m)? < 0.0 {
            a = m;
        } else {
            b = m;
        }
    }
    Ok((curve, Some(b)))
}

/// One measured run against the simulator.
#[derive(Clone, Debug)]
pub struct Pair {
    pub record: String,
    pub overlap: String,
    pub row: SweepRow,
    pub predicted: f64,
    /// Whether the row fed the calibration (then it is listed but not a check).
    pub calibration: bool,
}

impl Pair {
    pub fn error(&self) -> f64 {
        self.predicted / self.row.step - 1.0
    }
}

/// Every row of the config's validation records beside the simulator's step.
pub fn validate(sim: &Simulator) -> Result<Vec<Pair>> {
    let Costs::Measured(m) = &sim.cfg.costs else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in &m.validation {
        let overlap = Overlap::parse(&v.overlap)?;
        let rows = records::parse_sweep(&v.record, &records::read_record(&v.record)?)?;
        for row in rows {
            let s = Scenario {
                context: row.context,
                ratio: row.slots as f64 / row.context as f64,
                hit_rate: Some(row.hit_rate),
            };
            let step = sim.step_with(&s, row.batch, row.offload, Some(row.hit_rate), overlap)?;
            let calibration = if row.offload {
                (m.offload.contains(&v.record) && m.calibration_batches.contains(&row.batch))
                    || v.calibration_batches.contains(&row.batch)
            } else {
                m.resident.contains(&v.record)
            };
            out.push(Pair {
                record: v.record.clone(),
                overlap: v.overlap.clone(),
                row,
                predicted: step.total,
                calibration,
            });
        }
    }
    Ok(out)
}

/// A step's parts as CSV fields (milliseconds), in [`Part::ALL`] order.
pub fn parts_csv(step: &Step) -> String {
    Part::ALL
        .iter()
        .map(|&p| format!("{:.4}", step.part(p) * 1e3))
        .collect::<Vec<_>>()
        .join(",")
}
