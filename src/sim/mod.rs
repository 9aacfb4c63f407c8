//! The throughput simulator (`ess-wgpu simulate`): a decode step built from component costs,
//! checked against this project's measured engine runs, then carried to the paper's deployment.
//!
//! ESS's headline numbers come from a simulator fed with measured kernel timings; this one is
//! the same idea made checkable. A step is a sum of components (projections, indexer, top-k,
//! resolve, gather, write-back, sparse MLA, experts, dense MLP, dispatch, combine, head), each a
//! cost in seconds for a batch at a context, taken either from `ess-wgpu sweep` records by
//! interpolation ([`records`]) or from a roofline of a named GPU at stated efficiencies. The
//! gather's overlap follows the engine's schedules (none, DA, DBA:N), MTP is a number of query
//! tokens a step with an acceptance, and two-batch overlap runs one half's compute beside the
//! other's dispatch and combine. The largest batch of a mode is what its caches fit in the
//! budget. Pure arithmetic: no GPU.

pub mod config;
pub mod records;
pub mod report;

pub use config::{Costs, Overlap, Scenario, SimConfig};

use crate::error::{Error, Result};
use records::ContextCosts;
use std::collections::BTreeMap;

/// The components of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Projections,
    Indexer,
    TopK,
    Resolve,
    Gather,
    WriteBack,
    SparseMla,
    Experts,
    Dense,
    Head,
    Dispatch,
    Combine,
}

impl Part {
    pub const ALL: [Part; 12] = [
        Part::Projections,
        Part::Indexer,
        Part::TopK,
        Part::Resolve,
        Part::Gather,
        Part::WriteBack,
        Part::SparseMla,
        Part::Experts,
        Part::Dense,
        Part::Head,
        Part::Dispatch,
        Part::Combine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Part::Projections => "projections",
            Part::Indexer => "indexer",
            Part::TopK => "topk",
            Part::Resolve => "resolve",
            Part::Gather => "gather",
            Part::WriteBack => "write_back",
            Part::SparseMla => "sparse_mla",
            Part::Experts => "experts",
            Part::Dense => "dense",
            Part::Head => "head",
            Part::Dispatch => "dispatch",
            Part::Combine => "combine",
        }
    }

    fn communication(self) -> bool {
        matches!(self, Part::Dispatch | Part::Combine)
    }
}

/// One simulated step.
#[derive(Clone, Debug)]
pub struct Step {
    pub batch: u32,
    pub offload: bool,
    /// Seconds of each component (both halves' under two-batch overlap), in [`Part::ALL`] order.
    pub parts: [f64; 12],
    /// Seconds the overlaps hide (gather behind compute, communication behind compute).
    pub hidden: f64,
    /// Seconds a step: the parts less what is hidden.
    pub total: f64,
    /// Tokens a second the GPU produces, and one sequence receives.
    pub tokens_per_s: f64,
    pub per_request: f64,
}

impl Step {
    pub fn part(&self, p: Part) -> f64 {
        self.parts[p as usize]
    }
}

/// A configured simulator.
pub struct Simulator {
    pub cfg: SimConfig,
    pub overlap: Overlap,
    measured: Option<BTreeMap<u64, ContextCosts>>,
    /// Rows a sequence misses a step, per layer (`ess.miss_profile`).
    misses: Option<Vec<f64>>,
}

/// The config's miss profile, checked against its layers. `known`: a simulator that read it
/// already (a what-if on its config), so that a what-if's many simulators read the file once.
fn load_misses(cfg: &SimConfig, known: Option<&Simulator>) -> Result<Option<Vec<f64>>> {
    let Some(path) = &cfg.ess.miss_profile else {
        return Ok(None);
    };
    let read = known
        .filter(|k| k.cfg.ess.miss_profile.as_ref() == Some(path))
        .and_then(|k| k.misses.clone());
    let v = match read {
        Some(v) => v,
        None => crate::engine::chunks::parse_miss_profile(&records::read_record(path)?)?,
    };
    if v.len() != cfg.model.layers as usize {
        return Err(Error::config(
            "ess.miss_profile",
            format!("{path}: {} layers", v.len()),
            format!("one line a layer of model.layers ({})", cfg.model.layers),
        ));
    }
    if let Some(bad) = v.iter().find(|&&m| m > cfg.model.topk as f64) {
        return Err(Error::config(
            "ess.miss_profile",
            format!("{path}: {bad} misses"),
            format!("at most model.topk ({})", cfg.model.topk),
        ));
    }
    Ok(Some(v))
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Result<Self> {
        cfg.validate()?;
        let overlap = Overlap::parse(&cfg.ess.overlap)?;
        let measured = match &cfg.costs {
            Costs::Roofline => None,
            Costs::Measured(m) => Some(records::calibrate(
                &records::load(&m.resident)?,
                &records::load(&m.offload)?,
                &m.calibration_batches,
                m.layers,
                cfg.model.topk,
                cfg.model.latent_row_bytes,
            )?),
        };
        Ok(Simulator {
            misses: load_misses(&cfg, None)?,
            cfg,
            overlap,
            measured,
        })
    }

    /// A simulator for `cfg` that reuses `other`'s calibration (a what-if on its config).
    pub fn new_calibrated(cfg: SimConfig, other: &Simulator) -> Result<Self> {
        cfg.validate()?;
        Ok(Simulator {
            overlap: Overlap::parse(&cfg.ess.overlap)?,
            measured: other.measured.clone(),
            misses: load_misses(&cfg, Some(other))?,
            cfg,
        })
    }

    /// Pool slots of a sequence at `s` (at least top-k + 1, as the engine's).
    pub fn slots(&self, s: &Scenario) -> u64 {
        ((s.ratio * s.context as f64).ceil() as u64).max(self.cfg.model.topk + 1)
    }

    /// Layers that hold a latent cache and run attention each step (MTP modules included).
    fn attention_layers(&self) -> f64 {
        (self.cfg.model.layers + self.cfg.model.mtp_layers) as f64
    }

    /// The measured curves at a context (an error naming the measured ones if it has none).
    fn at_context(&self, context: u64) -> Result<Option<&ContextCosts>> {
        let Some(m) = &self.measured else {
            return Ok(None);
        };
        m.get(&context).map(Some).ok_or_else(|| {
            Error::config(
                "scenarios.context",
                context,
                format!(
                    "a context the records measured: {}",
                    m.keys()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// Device bytes of the caches (and, measured, everything the engine holds) for `batch`.
    pub fn device_bytes(&self, s: &Scenario, batch: u32, offload: bool) -> Result<f64> {
        let m = &self.cfg.model;
        let b = batch as f64;
        if let Some(c) = self.at_context(s.context)? {
            if !offload {
                return Ok(c.resident_bytes.0 + c.resident_bytes.1 * b);
            }
            // the measured sequence's bytes, with its pool resized to this scenario's
            let slot = (m.latent_row_bytes + self.cfg.ess.slot_table_bytes) as f64;
            let resize = m.layers as f64 * (self.slots(s) as f64 - c.offload_slots as f64) * slot;
            return Ok(c.offload_bytes.0 + (c.offload_bytes.1 + resize) * b);
        }
        let (l, t) = (self.attention_layers(), s.context as f64);
        let per_seq = if offload {
            l * (t * m.key_row_bytes as f64
                + self.slots(s) as f64
                    * (m.latent_row_bytes + self.cfg.ess.slot_table_bytes) as f64)
        } else {
            l * t * (m.latent_row_bytes + m.key_row_bytes) as f64
        };
        Ok(per_seq * b)
    }

    /// The largest batch whose device bytes fit the budget (0 if none).
    pub fn largest_batch(&self, s: &Scenario, offload: bool) -> Result<u32> {
        let budget = self.cfg.hardware.cache_budget_bytes;
        let (mut lo, mut hi) = (0u32, 1 << 20);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.device_bytes(s, mid, offload)? <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// Sparse MLA's measured cost at `batch` over a span of `rows` rows a sequence: the curve
    /// of the smallest measured context that spans them (the largest if none does).
    fn span_curve(&self, rows: u64, batch: f64) -> f64 {
        let Some(m) = &self.measured else {
            return 0.0;
        };
        let c = m
            .range(rows..)
            .next()
            .or_else(|| m.iter().next_back())
            .map(|(_, c)| c);
        c.and_then(|c| c.compute.get("sparse_mla"))
            .map_or(0.0, |k| k.at(batch))
    }

    /// Seconds of each part for `batch` sequences (a fraction for half batches), the gather
    /// not yet overlapped. `hit` is the pool's hit rate.
    fn parts(&self, s: &Scenario, batch: f64, offload: bool, hit: f64) -> Result<[f64; 12]> {
        let mut p = [0.0; 12];
        let (m, h) = (&self.cfg.model, &self.cfg.hardware);
        let q = self.cfg.deployment.tokens_per_step as f64;
        let n = batch * q;
        let l = self.attention_layers();
        let t = s.context as f64;
        // rows missed over all layers a step: the profile's per layer, or the hit rate's in
        // every layer, for each sequence's selections (its MTP tokens' counted once where they
        // repeat the first's)
        let sets = records::selection_sets(
            batch,
            self.cfg.deployment.tokens_per_step,
            self.cfg.ess.mtp_overlap,
        );
        let missed = match &self.misses {
            Some(v) => {
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                sets * (v.iter().sum::<f64>() + m.mtp_layers as f64 * mean)
            }
            None => l * sets * m.topk as f64 * (1.0 - hit),
        };
        if let Some(c) = self.at_context(s.context)? {
            let at = |name: &str| c.compute.get(name).map_or(0.0, |k| k.at(batch));
            p[Part::Projections as usize] = at("new_token");
            p[Part::Indexer as usize] = at("indexer");
            p[Part::TopK as usize] = at("topk");
            p[Part::SparseMla as usize] = at("sparse_mla");
            if offload {
                // sparse MLA's rows come from the pool: its cost is that of a span of rows a
                // sequence the size of the pool, not of the context (measured on the H200: at
                // 128K and batch 64, 5.10 ms over the resident cache, 3.62 over the pool, and
                // the 32K resident curve's 3.70)
                p[Part::SparseMla as usize] = self.span_curve(self.slots(s), batch);
            }
            p[Part::Experts as usize] = at("ffn");
            if offload {
                let off = |name: &str| c.offload.get(name).map_or(0.0, |k| k.at(batch));
                p[Part::Resolve as usize] = off("resolve");
                p[Part::WriteBack as usize] = off("write_back");
                p[Part::Gather as usize] = m.layers as f64 * c.gather_fixed
                    + missed * m.latent_row_bytes as f64 / c.gather_rate;
            }
            return Ok(p);
        }
        // the roofline: bytes over bandwidth, FLOPs over rate, the slower of the two, and a
        // kernel's fixed cost
        let bw = h.hbm_bandwidth * h.memory_efficiency;
        let gemm = h.gemm_flops * h.gemm_efficiency;
        let roof = |bytes: f64, flops: f64, rate: f64, kernels: f64| {
            (bytes / bw).max(flops / rate) + kernels * h.launch
        };
        let (d, wb) = (m.hidden as f64, m.weight_bytes);
        let (nope, rope, kv, v) = (
            m.qk_nope_head_dim as f64,
            m.qk_rope_head_dim as f64,
            m.kv_lora_rank as f64,
            m.v_head_dim as f64,
        );
        let (heads, ih, id, k) = (
            m.heads as f64,
            m.index_heads as f64,
            m.index_head_dim as f64,
            m.topk as f64,
        );
        if !m.attention_only {
            // q_a, q_b, kv_a, kv_b, o_proj, and the indexer's wq_b, wk, weights_proj
            let ql = m.q_lora_rank as f64;
            let params = d * ql
                + ql * heads * (nope + rope)
                + d * (kv + rope)
                + kv * heads * (nope + v)
                + heads * v * d
                + ql * ih * id
                + d * id
                + d * ih;
            // the absorbed products: q_nope through W_UK, the output through W_UV
            let absorbed = 2.0 * n * heads * (nope * kv + kv * v);
            p[Part::Projections as usize] =
                l * roof(params * wb, 2.0 * n * params + absorbed, gemm, 8.0);
        }
        p[Part::Indexer as usize] = l * roof(
            batch * t * m.key_row_bytes as f64,
            2.0 * n * ih * id * t,
            h.indexer_flops * h.indexer_efficiency,
            1.0,
        );
        p[Part::TopK as usize] = l * roof(n * t * 4.0 * 2.0, 0.0, 1.0, 1.0);
        p[Part::SparseMla as usize] = l * roof(
            n * k * m.latent_row_bytes as f64,
            2.0 * n * heads * k * (kv + rope + kv),
            h.attention_flops * h.attention_efficiency,
            1.0,
        );
        if !m.attention_only {
            let moe_layers = (m.layers - m.dense_layers + m.mtp_layers) as f64;
            let ep = self.cfg.deployment.expert_parallel as f64;
            let expert = 3.0 * d * m.moe_intermediate as f64;
            let local = m.routed_experts as f64 / ep;
            // balanced routing: a GPU's experts see its own share of every GPU's pairs
            let pairs = n * m.active_experts as f64;
            let touched = local.min(pairs);
            let shared = m.shared_experts as f64;
            p[Part::Experts as usize] = moe_layers
                * roof(
                    (touched + shared) * expert * wb + d * m.routed_experts as f64 * 4.0,
                    2.0 * (pairs + n * shared) * expert,
                    gemm,
                    6.0,
                );
            let dense = 3.0 * d * m.intermediate as f64;
            p[Part::Dense as usize] =
                m.dense_layers as f64 * roof(dense * wb, 2.0 * n * dense, gemm, 3.0);
            let vocab = m.vocab as f64;
            p[Part::Head as usize] =
                roof(vocab * d * m.embed_bytes, 2.0 * n * vocab * d, gemm, 1.0);
            if h.network_bandwidth > 0.0 && ep > 1.0 {
                // the pairs whose expert lives on another GPU: FP8 out (one f32 scale a 128
                // values), bf16 back
                let remote = pairs * (ep - 1.0) / ep;
                p[Part::Dispatch as usize] =
                    moe_layers * remote * d * (1.0 + 4.0 / 128.0) / h.network_bandwidth;
                p[Part::Combine as usize] = moe_layers * remote * d * 2.0 / h.network_bandwidth;
            }
        }
        if offload {
            let row = m.latent_row_bytes as f64;
            p[Part::Gather as usize] = l * h.bus_latency + missed * row / h.bus_h2d;
            p[Part::WriteBack as usize] = l * (h.bus_latency + n * row / h.bus_d2h);
            // the LRU resolve: each selected id looked up, its slot stamped (12 bytes)
            p[Part::Resolve as usize] = l * roof(n * k * 12.0, 0.0, 1.0, 1.0);
        }
        Ok(p)
    }

    /// Seconds the gather's overlap hides of `p` (the parts at `batch`), less what splitting
    /// the work costs.
    fn overlap_saving(
        &self,
        s: &Scenario,
        batch: f64,
        hit: f64,
        p: &[f64; 12],
        overlap: Overlap,
    ) -> Result<f64> {
        let e = &self.cfg.ess;
        let l = self.cfg.model.layers as f64;
        let g = p[Part::Gather as usize];
        Ok(match overlap {
            Overlap::None => 0.0,
            Overlap::Da => {
                // the misses arrive while sparse MLA scores the rows already in the pool: half
                // of its work (scores, then attend) times the hits' share
                let beside = p[Part::SparseMla as usize] * 0.5 * hit;
                g.min(e.da_efficiency * beside) - l * e.da_split_cost
            }
            Overlap::Dba(chunks) => {
                // each chunk's selection chain runs on its share of the batch, and its gather
                // beside the next chunk's indexer; the last chunk's gather is exposed
                let n = (chunks as f64).min(batch.max(1.0));
                let c = self.parts(s, batch / n, true, hit)?;
                let chain = |q: &[f64; 12]| {
                    q[Part::Indexer as usize] + q[Part::TopK as usize] + q[Part::Resolve as usize]
                };
                let exposed_each = (c[Part::Gather as usize]
                    - e.dba_efficiency * c[Part::Indexer as usize])
                    .max(0.0);
                let chunked = n * chain(&c) + (n - 1.0) * exposed_each + c[Part::Gather as usize];
                chain(p) + g - chunked
            }
        })
    }

    /// One step of `batch` sequences at `s`; `hit` overrides the config's hit rate (a
    /// measured run's own).
    pub fn step(&self, s: &Scenario, batch: u32, offload: bool, hit: Option<f64>) -> Result<Step> {
        self.step_with(s, batch, offload, hit, self.overlap)
    }

    pub fn step_with(
        &self,
        s: &Scenario,
        batch: u32,
        offload: bool,
        hit: Option<f64>,
        overlap: Overlap,
    ) -> Result<Step> {
        if batch == 0 {
            return Err(Error::config("batch", 0, "at least 1"));
        }
        // the profile's mean hit rate where it gives the misses (DA's hidden share uses it)
        let profile_hit = self
            .misses
            .as_ref()
            .map(|v| 1.0 - v.iter().sum::<f64>() / v.len() as f64 / self.cfg.model.topk as f64);
        let hit = if offload {
            hit.or(s.hit_rate)
                .or(profile_hit)
                .unwrap_or(self.cfg.ess.hit_rate)
        } else {
            1.0
        };
        let overlap = if offload { overlap } else { Overlap::None };
        let d = &self.cfg.deployment;
        let tbo = d.two_batch_overlap && batch >= 2;
        let halves = if tbo { 2.0 } else { 1.0 };
        let each = batch as f64 / halves;
        let half = self.parts(s, each, offload, hit)?;
        let saving = self.overlap_saving(s, each, hit, &half, overlap)?;
        let compute: f64 = Part::ALL
            .iter()
            .filter(|p| !p.communication())
            .map(|&p| half[p as usize])
            .sum::<f64>()
            - saving;
        let comm = half[Part::Dispatch as usize] + half[Part::Combine as usize];
        // two halves: one's compute beside the other's dispatch and combine, so the step is
        // the longer of the two streams; one batch: the two in turn. With the transfers on a
        // stream of their own, what the schedule leaves of the gather runs beside the other
        // half's compute too.
        let total = if tbo && d.transfers_beside_other_half && offload {
            let gather = (half[Part::Gather as usize] - saving).max(0.0);
            2.0 * (compute - gather).max(comm).max(gather)
        } else if tbo {
            2.0 * compute.max(comm)
        } else {
            compute + comm
        };
        let parts = half.map(|x| x * halves);
        let sum: f64 = parts.iter().sum();
        let per_request = d.acceptance / total;
        Ok(Step {
            batch,
            offload,
            parts,
            hidden: sum - total,
            total,
            tokens_per_s: batch as f64 * per_request,
            per_request,
        })
    }
}
