//! The device memory a batch needs, item by item, before anything is allocated.

use super::{EngineOptions, Mode};
use crate::cache::TransferPath;
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::kernels::sparse_mla::scratch_bytes_for;

/// Every buffer the engine allocates on the device, by name and bytes, for a batch: the single
/// source of the memory arithmetic (batch sizing uses it before allocating anything). A test
/// holds it to what the engine actually allocates ([`super::Engine::allocated_bytes`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemoryPlan {
    pub mode: Mode,
    pub batch: u32,
    pub items: Vec<(String, u64)>,
    /// The largest buffer that shaders bind whole, so that it must fit one storage binding: a
    /// layer's staging pool (the caches and host store are split into sequence groups).
    pub bound_whole: u64,
}

impl MemoryPlan {
    pub fn new(opts: &EngineOptions, batch: u32) -> Result<Self> {
        let m = &opts.run;
        let (b, cap, l) = (batch as u64, opts.capacity() as u64, m.layers as u64);
        let (hi, di, h, k) = (
            m.model.index_heads as u64,
            m.model.index_head_dim as u64,
            m.model.heads as u64,
            m.model.topk as u64,
        );
        let (kv, dq, row) = (
            m.model.kv_lora_rank as u64,
            m.model.row_dim() as u64,
            m.row_bytes(),
        );
        let fp8_queries = match m.key_dtype {
            crate::config::Dtype::Fp8 => {
                let per_batch = RunConfig { batch, ..m.clone() };
                l * super::fp8_query_bytes(&per_batch)
            }
            _ => 0,
        };
        let mut items = vec![
            ("indexer keys".to_string(), l * b * cap * m.key_bytes()),
            (
                "queries, weights, top-k, outputs".to_string(),
                l * b * (hi * di * 4 + hi * 4 + h * dq * 4 + k * 4 + h * kv * 4 + h * 4)
                    + fp8_queries,
            ),
            ("index scores".to_string(), b * cap * 4),
            (
                "top-k scratch".to_string(),
                crate::kernels::topk::scratch_bytes_for(m.model.topk, batch, cap as u32),
            ),
            (
                "sparse MLA scratch".to_string(),
                scratch_bytes_for(m.model.heads, m.model.topk, m.model.kv_lora_rank, batch),
            ),
        ];
        // sequence table and step clock; offload: the pool's sequence table
        let tables = match opts.mode {
            Mode::Resident => b * 8 + 16,
            Mode::Offload => b * 8 + 16 + b * 8,
        };
        items.push(("step tables".to_string(), tables));
        if opts.track_overlap {
            items.push(("overlap marks".to_string(), l * b * (cap * 4 + 4)));
        }
        if opts.digest_outputs {
            items.push(("output digests".to_string(), l * 16));
        }
        if let Some(m) = &opts.model {
            let bytes = crate::model::generate::model_bytes(m.weights, batch);
            items.push(("model weights and activations".to_string(), bytes));
        }
        let mut bound_whole = 0;
        match opts.mode {
            Mode::Resident => items.push(("latent cache".to_string(), l * b * cap * row)),
            Mode::Offload => {
                let p = opts.pool.slots(opts.capacity(), m.model.topk)? as u64;
                bound_whole = b * p * row;
                items.push(("staging pools".to_string(), l * b * p * row));
                items.push((
                    "LRU tables".to_string(),
                    l * b * (p * 8 + cap * 4 + k * 12 + 8),
                ));
                items.push(("new rows".to_string(), b * row));
                if opts.transfer == TransferPath::Staging {
                    items.push(("staging upload".to_string(), b * k * row));
                }
            }
        }
        Ok(MemoryPlan {
            mode: opts.mode,
            batch,
            items,
            bound_whole,
        })
    }

    pub fn total(&self) -> u64 {
        self.items.iter().map(|(_, b)| b).sum()
    }

    /// The items that hold cached tokens: the indexer keys, and the latent cache (resident) or
    /// the staging pools (offload). The paper's batch arithmetic (BRIEF.md §5) budgets these
    /// alone: activations and working space come out of what the weights leave besides.
    pub const CACHE_ITEMS: [&str; 3] = ["indexer keys", "latent cache", "staging pools"];

    /// Bytes of [`MemoryPlan::CACHE_ITEMS`].
    pub fn cache_bytes(&self) -> u64 {
        self.items
            .iter()
            .filter(|(n, _)| Self::CACHE_ITEMS.contains(&n.as_str()))
            .map(|(_, b)| b)
            .sum()
    }

    /// The most sequences whose caches ([`MemoryPlan::cache_bytes`]) fit `budget` bytes: the
    /// paper's arithmetic (at v32 × 61 layers × 32K with FP8 caches, 788 B a token and a layer,
    /// 52 sequences in 82 × 10⁹ bytes).
    pub fn sequences_in_cache_budget(opts: &EngineOptions, budget: u64) -> Result<u32> {
        Self::largest_by(opts, budget, |p| p.cache_bytes())
    }

    /// Host memory of the mode (the offloaded latent cache).
    pub fn host_bytes(opts: &EngineOptions, batch: u32) -> u64 {
        match opts.mode {
            Mode::Resident => 0,
            Mode::Offload => {
                opts.run.layers as u64
                    * batch as u64
                    * opts.capacity() as u64
                    * opts.run.row_bytes()
            }
        }
    }

    /// The largest batch whose plan fits `budget` bytes and whose buffers bound whole fit
    /// `max_binding` bytes, the adapter's storage-binding limit (0 if none).
    pub fn largest_batch(opts: &EngineOptions, budget: u64, max_binding: u64) -> Result<u32> {
        Self::largest_by(opts, budget, |p| {
            if p.bound_whole > max_binding {
                u64::MAX
            } else {
                p.total()
            }
        })
    }

    /// The largest batch whose plan's `bytes` fit `budget` (0 if none).
    fn largest_by(opts: &EngineOptions, budget: u64, bytes: impl Fn(&Self) -> u64) -> Result<u32> {
        let (mut lo, mut hi) = (0u32, 65535u32);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if bytes(&MemoryPlan::new(opts, mid)?) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// An error showing the arithmetic, when this plan does not fit `budget`.
    pub fn check(&self, budget: u64) -> Result<()> {
        if self.total() <= budget {
            return Ok(());
        }
        let lines: Vec<String> = self
            .items
            .iter()
            .map(|(n, b)| format!("{n} {:.1} MiB", *b as f64 / 1048576.0))
            .collect();
        Err(Error::config(
            "batch",
            self.batch,
            format!(
                "a batch whose device memory fits the budget; {} mode needs {} = {:.1} MiB > budget {:.1} MiB",
                self.mode,
                lines.join(" + "),
                self.total() as f64 / 1048576.0,
                budget as f64 / 1048576.0
            ),
        ))
    }
}
