//! `ess-wgpu model init | info`: random checkpoints in the Hugging Face layout, and what a
//! checkpoint folder holds (checked).

use super::out;
use clap::Subcommand;
use ess_wgpu::Result;
use ess_wgpu::model::init::{WeightDtype, preset, write_random};
use ess_wgpu::model::{Checkpoint, checkpoint::expected_tensors};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a random checkpoint (config.json, one .safetensors shard per layer, the index).
    Init {
        /// tiny (odd small shapes), small, or v32-layers (DeepSeek-V3.2's per-layer shapes, 4
        /// layers; tens of GB).
        #[arg(long, default_value = "tiny")]
        config: String,
        /// The folder to write (new or empty).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// bf16, f16, f32, or fp8 (linear weights e4m3 in 128 × 128 blocks, as the real
        /// checkpoint ships them).
        #[arg(long, default_value = "bf16")]
        dtype: String,
    },
    /// Open a checkpoint folder, check every tensor, and print its config and sizes.
    Info {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Layers to check, e.g. 0..4 (default: all).
        #[arg(long)]
        layers: Option<String>,
    },
}

/// `a..b` (a < b).
fn layer_range(s: &str) -> Result<std::ops::Range<u32>> {
    let bad = || ess_wgpu::Error::config("layers", s, "a range a..b of layer numbers, a < b");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a >= b {
        return Err(bad());
    }
    Ok(a..b)
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Init {
            config,
            out: dir,
            seed,
            dtype,
        } => {
            let cfg = preset(&config)?;
            let dtype = WeightDtype::parse(&dtype)?;
            let bytes = write_random(&dir, &cfg, seed, dtype)?;
            say!(
                "wrote {} ({config}, {} layers, {:.1} MB of weights)",
                dir.display(),
                cfg.num_hidden_layers,
                bytes as f64 / 1e6
            )
        }
        ModelCommand::Info { dir, layers } => {
            let layers = layers.as_deref().map(layer_range).transpose()?;
            let ck = Checkpoint::open(&dir, layers)?;
            let c = &ck.config;
            let tensors = expected_tensors(c, ck.layers.clone());
            let bytes: u64 = tensors
                .iter()
                .filter_map(|t| ck.info(&t.name))
                .map(|(shape, d)| shape.iter().product::<usize>() as u64 * d.bitsize() as u64 / 8)
                .sum();
            out(format_args!(
                "{}: deepseek_v32, hidden {}, {} layers ({} dense), {} heads, q_lora {}, kv_lora {}, \
                 nope/rope/v {}/{}/{}, index {} × {} top-{}, {} experts ({} groups, top {} groups, \
                 {} active, {} shared) of {}, vocab {}\nsoftmax scale {:.6}{}\nlayers {}..{} \
                 checked: {} tensors, {:.1} MB\n",
                dir.display(),
                c.hidden_size,
                c.num_hidden_layers,
                c.first_k_dense_replace,
                c.num_attention_heads,
                c.q_lora_rank,
                c.kv_lora_rank,
                c.qk_nope_head_dim,
                c.qk_rope_head_dim,
                c.v_head_dim,
                c.index_n_heads,
                c.index_head_dim,
                c.index_topk,
                c.n_routed_experts,
                c.n_group,
                c.topk_group,
                c.num_experts_per_tok,
                c.n_shared_experts,
                c.moe_intermediate_size,
                c.vocab_size,
                c.softmax_scale(),
                if c.yarn().is_some() { " (YaRN)" } else { "" },
                ck.layers.start,
                ck.layers.end,
                tensors.len(),
                bytes as f64 / 1e6
            ))
        }
    }
}
