//! A simulation's description, read from JSON: the model's shapes, the GPU, the deployment, the
//! ESS settings, and where each component's cost comes from. Every field is named as below and
//! an unknown or missing one is an error naming it; `configs/sim/*.json` are the ready-made
//! configs (`SimConfig::preset`), each with its assumptions and sources in `about`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The ready-made configs: name, JSON.
pub const PRESETS: [(&str, &str); 2] = [
    (
        "h200-measured",
        include_str!("../../configs/sim/h200-measured.json"),
    ),
    ("paper", include_str!("../../configs/sim/paper.json")),
];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub name: String,
    /// The assumptions behind the numbers, with their sources (printed with every report).
    #[serde(default)]
    pub about: Vec<String>,
    pub model: SimModel,
    pub hardware: Hardware,
    pub deployment: Deployment,
    pub ess: Ess,
    pub costs: Costs,
    /// The (context, sparse memory ratio) settings to simulate.
    pub scenarios: Vec<Scenario>,
    /// Batches reported besides each mode's largest.
    #[serde(default)]
    pub batches: Vec<u32>,
    /// Sparse memory ratios of the ratio sweep.
    #[serde(default)]
    pub ratios: Vec<f64>,
}

/// DeepSeek-V3.2's shapes (config.json's meaning), and the cache's bytes a token and a layer.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimModel {
    /// Decoder layers with a latent cache.
    pub layers: u32,
    /// `first_k_dense_replace`: the first layers' MLP is dense.
    pub dense_layers: u32,
    /// MTP modules (each one more MoE decoder layer a step).
    pub mtp_layers: u32,
    pub hidden: u64,
    pub heads: u64,
    pub q_lora_rank: u64,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
    pub index_heads: u64,
    pub index_head_dim: u64,
    pub topk: u64,
    pub routed_experts: u64,
    pub active_experts: u64,
    pub shared_experts: u64,
    pub moe_intermediate: u64,
    pub intermediate: u64,
    pub vocab: u64,
    /// Bytes a token and a layer of the latent cache (656 with DeepSeek's FP8 layout).
    pub latent_row_bytes: u64,
    /// Bytes a token and a layer of the indexer-key cache (132 in FP8).
    pub key_row_bytes: u64,
    /// Bytes a weight of the linear layers (1 for FP8) and of the embedding and head (2: bf16).
    pub weight_bytes: f64,
    pub embed_bytes: f64,
    /// The engine's attention path only (no projections' weights, MLP, MoE or head): the
    /// `ess-wgpu sweep` runs this simulator is checked against.
    #[serde(default)]
    pub attention_only: bool,
}

/// One GPU's rates, and the efficiencies at which the kernels reach them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub name: String,
    /// Device memory for the caches of the batch: what the weights, activations and workspace
    /// leave (bytes).
    pub cache_budget_bytes: f64,
    pub hbm_bandwidth: f64,
    pub memory_efficiency: f64,
    /// The linear layers' and experts' tensor-core rate (FLOP/s) and efficiency.
    pub gemm_flops: f64,
    pub gemm_efficiency: f64,
    /// Sparse MLA's rate (FLOP/s) and efficiency.
    pub attention_flops: f64,
    pub attention_efficiency: f64,
    /// The indexer's scores: rate and efficiency.
    pub indexer_flops: f64,
    pub indexer_efficiency: f64,
    /// The bus, host → device and device → host (bytes/s, as zero-copy kernels reach it), and
    /// a transfer's fixed latency (s).
    pub bus_h2d: f64,
    pub bus_d2h: f64,
    pub bus_latency: f64,
    /// Expert-parallel dispatch and combine: bytes/s a GPU reaches (0: no expert parallelism).
    pub network_bandwidth: f64,
    /// Fixed cost of one kernel (s).
    pub launch: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// GPUs the experts are spread over (1: every expert local).
    pub expert_parallel: u64,
    /// Query tokens a sequence runs each step (MTP: 2), and tokens it keeps on average.
    pub tokens_per_step: u64,
    pub acceptance: f64,
    /// Two-batch overlap: the batch in two halves, one's compute beside the other's dispatch
    /// and combine.
    pub two_batch_overlap: bool,
    /// With two-batch overlap: the gather on a stream of its own, beside the other half's
    /// compute (a CUDA deployment can; this project's engine, one queue, cannot).
    #[serde(default)]
    pub transfers_beside_other_half: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ess {
    /// none, da, or dba / dba:N (as the engine's --overlap).
    pub overlap: String,
    /// Fraction of the selected rows found in the pool (roofline costs; measured costs take
    /// each scenario's from its records).
    pub hit_rate: f64,
    /// DA: the fraction of the compute beside the gather (the scoring of the hits) that hides
    /// it (1 = ideal), and the extra cost a layer of splitting sparse MLA (s).
    pub da_efficiency: f64,
    pub da_split_cost: f64,
    /// DBA: the fraction of the next chunk's indexer that hides a chunk's gather (1 = ideal);
    /// its split costs follow from the stages' costs at the chunk's batch.
    pub dba_efficiency: f64,
    /// Rows each sequence misses a step, per layer, instead of one hit rate for the gather: a
    /// file in `decode --miss-profile`'s format (`ess-miss-profile 1`), one line a layer of
    /// `model.layers` (MTP layers take the mean).
    #[serde(default)]
    pub miss_profile: Option<String>,
    /// MTP: the fraction of a step's later tokens' selections that its first token already
    /// selected (their rows then hit); 1 counts a sequence's misses once a step.
    pub mtp_overlap: f64,
    /// Per pool slot: device bytes of the LRU tables besides the row.
    pub slot_table_bytes: u64,
}

/// Where component costs come from.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Costs {
    /// Bytes over bandwidth and FLOPs over rate, at the stated efficiencies.
    Roofline,
    /// Interpolated from this project's benchmark records.
    Measured(Measured),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// `ess-wgpu sweep` records (sweep.csv) whose resident rows give the compute stages.
    pub resident: Vec<String>,
    /// Sweep records whose offload rows at `calibration_batches` give resolve, write-back and
    /// the engine's gather rate (each context's own).
    pub offload: Vec<String>,
    pub calibration_batches: Vec<u32>,
    /// Layers the records ran.
    pub layers: u32,
    /// Records to check the simulator against, with the overlap schedule each ran.
    #[serde(default)]
    pub validation: Vec<ValidationRecord>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationRecord {
    pub record: String,
    pub overlap: String,
    /// Batches of its offload rows that calibrated a knob of the schedule (listed, not checks).
    #[serde(default)]
    pub calibration_batches: Vec<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub context: u64,
    pub ratio: f64,
    /// This scenario's hit rate, in place of `ess.hit_rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<f64>,
}

fn positive(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(field, v, "a positive number"))
    }
}

fn fraction(field: &str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::config(field, v, "0 ..= 1"))
    }
}

impl SimConfig {
    /// A ready-made config by name.
    pub fn preset(name: &str) -> Result<Self> {
        let (_, json) = PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| Error::config("preset", name, "h200-measured, paper"))?;
        Self::parse(name, json)
    }

    /// Parses and checks a config; `what` names it in errors.
    pub fn parse(what: &str, json: &str) -> Result<Self> {
        let c: SimConfig = serde_json::from_str(json).map_err(|e| Error::Parse {
            what: format!("simulator config {what}"),
            line: e.line(),
            offset: e.column(),
            message: e.to_string(),
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        for (f, v) in [
            ("model.layers", m.layers as u64),
            ("model.hidden", m.hidden),
            ("model.heads", m.heads),
            ("model.kv_lora_rank", m.kv_lora_rank),
            ("model.index_heads", m.index_heads),
            ("model.index_head_dim", m.index_head_dim),
            ("model.topk", m.topk),
            ("model.latent_row_bytes", m.latent_row_bytes),
            ("model.key_row_bytes", m.key_row_bytes),
            (
                "deployment.tokens_per_step",
                self.deployment.tokens_per_step,
            ),
            (
                "deployment.expert_parallel",
                self.deployment.expert_parallel,
            ),
        ] {
            if v == 0 {
                return Err(Error::config(f, v, "at least 1"));
            }
        }
        if m.dense_layers > m.layers {
            return Err(Error::config(
                "model.dense_layers",
                m.dense_layers,
                format!("at most model.layers ({})", m.layers),
            ));
        }
        if !m.attention_only
            && !m
                .routed_experts
                .is_multiple_of(self.deployment.expert_parallel)
        {
            return Err(Error::config(
                "deployment.expert_parallel",
                self.deployment.expert_parallel,
                format!("a divisor of model.routed_experts ({})", m.routed_experts),
            ));
        }
        let h = &self.hardware;
        for (f, v) in [
            ("hardware.cache_budget_bytes", h.cache_budget_bytes),
            ("hardware.hbm_bandwidth", h.hbm_bandwidth),
            ("hardware.gemm_flops", h.gemm_flops),
            ("hardware.attention_flops", h.attention_flops),
            ("hardware.indexer_flops", h.indexer_flops),
            ("hardware.bus_h2d", h.bus_h2d),
            ("hardware.bus_d2h", h.bus_d2h),
            ("deployment.acceptance", self.deployment.acceptance),
            ("model.weight_bytes", m.weight_bytes),
            ("model.embed_bytes", m.embed_bytes),
        ] {
            positive(f, v)?;
        }
        for (f, v) in [
            ("hardware.memory_efficiency", h.memory_efficiency),
            ("hardware.gemm_efficiency", h.gemm_efficiency),
            ("hardware.attention_efficiency", h.attention_efficiency),
            ("hardware.indexer_efficiency", h.indexer_efficiency),
            ("ess.hit_rate", self.ess.hit_rate),
            ("ess.da_efficiency", self.ess.da_efficiency),
            ("ess.dba_efficiency", self.ess.dba_efficiency),
            ("ess.mtp_overlap", self.ess.mtp_overlap),
        ] {
            fraction(f, v)?;
            if f.ends_with("efficiency") && f.starts_with("hardware") && v == 0.0 {
                return Err(Error::config(f, v, "0 < efficiency ≤ 1"));
            }
        }
        for (f, v) in [
            ("hardware.bus_latency", h.bus_latency),
            ("hardware.launch", h.launch),
            ("hardware.network_bandwidth", h.network_bandwidth),
            ("ess.da_split_cost", self.ess.da_split_cost),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(f, v, "a number ≥ 0"));
            }
        }
        if self.deployment.acceptance > self.deployment.tokens_per_step as f64 {
            return Err(Error::config(
                "deployment.acceptance",
                self.deployment.acceptance,
                format!(
                    "at most deployment.tokens_per_step ({})",
                    self.deployment.tokens_per_step
                ),
            ));
        }
        Overlap::parse(&self.ess.overlap)?;
        if self.scenarios.is_empty() {
            return Err(Error::config("scenarios", "[]", "at least one scenario"));
        }
        for s in &self.scenarios {
            if s.context < m.topk {
                return Err(Error::config(
                    "scenarios.context",
                    s.context,
                    format!("at least model.topk ({})", m.topk),
                ));
            }
            ratio_ok(s.ratio)?;
            if let Some(h) = s.hit_rate {
                fraction("scenarios.hit_rate", h)?;
            }
        }
        for &r in &self.ratios {
            ratio_ok(r)?;
        }
        for &b in &self.batches {
            if b == 0 {
                return Err(Error::config("batches", b, "at least 1"));
            }
        }
        if let Costs::Measured(r) = &self.costs {
            if r.resident.is_empty() || r.offload.is_empty() || r.calibration_batches.is_empty() {
                return Err(Error::config(
                    "costs.measured",
                    "an empty list",
                    "resident, offload and calibration_batches each non-empty",
                ));
            }
            if r.layers == 0 {
                return Err(Error::config("costs.measured.layers", 0, "at least 1"));
            }
            for v in &r.validation {
                Overlap::parse(&v.overlap)?;
            }
        }
        Ok(())
    }
}

fn ratio_ok(r: f64) -> Result<()> {
    if r > 0.0 && r <= 1.0 {
        Ok(())
    } else {
        Err(Error::config("ratio", r, "0 < ratio ≤ 1"))
    }
}

/// How the gather overlaps compute, as the engine's `--overlap`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Overlap {
    None,
    /// Dual attention: the misses gathered beside the scoring of the hits.
    Da,
    /// The batch in N chunks, each chunk's gather beside the next chunk's indexer.
    Dba(u32),
}

impl Overlap {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::config("ess.overlap", s, "none, da, dba or dba:N (N in 1 ..= 64)");
        match s {
            "none" => Ok(Overlap::None),
            "da" => Ok(Overlap::Da),
            "dba" => Ok(Overlap::Dba(2)),
            _ => {
                let n: u32 = s
                    .strip_prefix("dba:")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?;
                if (1..=64).contains(&n) {
                    Ok(Overlap::Dba(n))
                } else {
                    Err(bad())
                }
            }
        }
    }
}
