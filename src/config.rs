//! Model and run configuration: named presets, per-field overrides, and validation that names the
//! field, the value and the allowed range.
//!
//! The dims follow DeepSeek-V3.2 (BRIEF.md §2). Kernel constraints live here as plain ranges so a
//! bad value fails before any GPU work: see [`Config::validate`].

use crate::error::{Error, Result};
use std::fmt;

/// Storage type of the indexer keys and latent rows on the GPU. Math is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Dtype {
    /// IEEE half, packed two per u32 (needs no `SHADER_F16`).
    F16,
    F32,
}

impl Dtype {
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        })
    }
}

/// Dims of one layer of the model plus the size of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Config {
    pub preset: String,
    /// Query heads of MLA (128 in V3.2).
    pub heads: u32,
    /// Latent dims c_kv (512).
    pub kv_lora_rank: u32,
    /// RoPE dims k_pe / q_pe (64).
    pub qk_rope_head_dim: u32,
    /// Non-RoPE query/key head dim; only enters the softmax scale (128).
    pub qk_nope_head_dim: u32,
    /// Indexer heads H_I (64).
    pub index_heads: u32,
    /// Indexer head dim d_I (128).
    pub index_head_dim: u32,
    /// Tokens selected per query (2048).
    pub topk: u32,
    /// Layers simulated (the model has 61; the presets keep a few).
    pub layers: u32,
    /// Context length T of each sequence.
    pub context: u32,
    /// Sequences decoded together.
    pub batch: u32,
    /// Storage of keys and latent rows.
    pub dtype: Dtype,
}

/// Every field `Config::set` accepts, in the order `--help` lists them.
pub const FIELDS: &[&str] = &[
    "heads",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "qk_nope_head_dim",
    "index_heads",
    "index_head_dim",
    "topk",
    "layers",
    "context",
    "batch",
    "dtype",
];

/// Largest k the top-k kernel sorts in workgroup memory.
pub const MAX_TOPK: u32 = 2048;
/// Largest context a sequence may have (top-k and indexer index with u32; 1 Mi tokens).
pub const MAX_CONTEXT: u32 = 1 << 20;

impl Config {
    /// Test-sized: runs in milliseconds on a software adapter.
    pub fn tiny() -> Self {
        Config {
            preset: "tiny".into(),
            heads: 8,
            kv_lora_rank: 64,
            qk_rope_head_dim: 32,
            qk_nope_head_dim: 32,
            index_heads: 8,
            index_head_dim: 32,
            topk: 16,
            layers: 2,
            context: 100,
            batch: 2,
            dtype: Dtype::F16,
        }
    }

    /// A laptop demo: the real latent width, fewer heads, a few thousand tokens.
    pub fn small() -> Self {
        Config {
            preset: "small".into(),
            heads: 16,
            kv_lora_rank: 512,
            qk_rope_head_dim: 64,
            qk_nope_head_dim: 128,
            index_heads: 16,
            index_head_dim: 64,
            topk: 256,
            layers: 4,
            context: 4096,
            batch: 4,
            dtype: Dtype::F16,
        }
    }

    /// DeepSeek-V3.2's per-layer dims.
    pub fn v32() -> Self {
        Config {
            preset: "v32".into(),
            heads: 128,
            kv_lora_rank: 512,
            qk_rope_head_dim: 64,
            qk_nope_head_dim: 128,
            index_heads: 64,
            index_head_dim: 128,
            topk: 2048,
            layers: 4,
            context: 32768,
            batch: 16,
            dtype: Dtype::F16,
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            "v32" => Ok(Self::v32()),
            _ => Err(Error::config("preset", name, "tiny, small, v32")),
        }
    }

    /// Override one field from text, e.g. `set("topk", "512")`. Validates nothing beyond parsing:
    /// call [`Config::validate`] once all overrides are in.
    pub fn set(&mut self, field: &str, value: &str) -> Result<()> {
        if field == "dtype" {
            self.dtype = match value {
                "f16" => Dtype::F16,
                "f32" => Dtype::F32,
                _ => return Err(Error::config("dtype", value, "f16, f32")),
            };
            return Ok(());
        }
        let slot = match field {
            "heads" => &mut self.heads,
            "kv_lora_rank" => &mut self.kv_lora_rank,
            "qk_rope_head_dim" => &mut self.qk_rope_head_dim,
            "qk_nope_head_dim" => &mut self.qk_nope_head_dim,
            "index_heads" => &mut self.index_heads,
            "index_head_dim" => &mut self.index_head_dim,
            "topk" => &mut self.topk,
            "layers" => &mut self.layers,
            "context" => &mut self.context,
            "batch" => &mut self.batch,
            _ => return Err(Error::config("field", field, FIELDS.join(", "))),
        };
        *slot = parse_count(value).ok_or_else(|| {
            Error::config(
                field,
                value,
                "a non-negative integer (suffix K = 1024 allowed)",
            )
        })?;
        Ok(())
    }

    /// Apply `field=value` overrides in order.
    pub fn with_overrides<S: AsRef<str>>(mut self, overrides: &[S]) -> Result<Self> {
        for o in overrides {
            let o = o.as_ref();
            let (field, value) = o
                .split_once('=')
                .ok_or_else(|| Error::config("override", o, "field=value"))?;
            self.set(field.trim(), value.trim())?;
        }
        Ok(self)
    }

    /// Check every field against what the kernels can handle.
    pub fn validate(&self) -> Result<()> {
        check(self.heads, "heads", 1, 1024, 1)?;
        check(self.kv_lora_rank, "kv_lora_rank", 64, 512, 64)?;
        check(self.qk_rope_head_dim, "qk_rope_head_dim", 0, 256, 32)?;
        check(self.qk_nope_head_dim, "qk_nope_head_dim", 1, 1024, 1)?;
        check(self.index_heads, "index_heads", 8, 64, 8)?;
        check(self.index_head_dim, "index_head_dim", 32, 1024, 32)?;
        check(self.topk, "topk", 1, MAX_TOPK, 1)?;
        check(self.layers, "layers", 1, 256, 1)?;
        check(self.context, "context", 1, MAX_CONTEXT, 1)?;
        check(self.batch, "batch", 1, 65535, 1)?;
        Ok(())
    }

    /// Dims of one latent row: c_kv ‖ k_pe.
    pub fn row_dim(&self) -> u32 {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// Bytes of one latent row in the configured storage type.
    pub fn row_bytes(&self) -> u64 {
        self.row_dim() as u64 * self.dtype.bytes()
    }

    /// Bytes of one indexer key.
    pub fn key_bytes(&self) -> u64 {
        self.index_head_dim as u64 * self.dtype.bytes()
    }

    /// (qk_nope + qk_rope)^-1/2, the MLA softmax scale without YaRN.
    pub fn softmax_scale(&self) -> f32 {
        1.0 / ((self.qk_nope_head_dim + self.qk_rope_head_dim) as f32).sqrt()
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "preset {}: heads {}, latent {} + rope {} ({}), indexer {} heads x {}, top-k {}, \
             layers {}, context {}, batch {}",
            self.preset,
            self.heads,
            self.kv_lora_rank,
            self.qk_rope_head_dim,
            self.dtype,
            self.index_heads,
            self.index_head_dim,
            self.topk,
            self.layers,
            self.context,
            self.batch
        )
    }
}

fn check(value: u32, field: &str, min: u32, max: u32, multiple: u32) -> Result<()> {
    if value < min || value > max || !value.is_multiple_of(multiple) {
        let allowed = if multiple > 1 {
            format!("{min} ..= {max}, a multiple of {multiple}")
        } else {
            format!("{min} ..= {max}")
        };
        return Err(Error::config(field, value, allowed));
    }
    Ok(())
}

/// "4096" or "4K" (= 4096).
pub fn parse_count(s: &str) -> Option<u32> {
    let s = s.trim();
    let (digits, mul) = match s.strip_suffix(['K', 'k']) {
        Some(d) => (d, 1024u64),
        None => (s, 1),
    };
    let v = digits.parse::<u64>().ok()? * mul;
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for p in ["tiny", "small", "v32"] {
            Config::preset(p).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = Config::tiny()
            .with_overrides(&["topk=0"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("topk = 0"), "{e}");
        let e = Config::tiny()
            .with_overrides(&["kv_lora_rank=100"])
            .unwrap()
            .validate();
        assert!(e.unwrap_err().to_string().contains("multiple of 64"));
        assert!(Config::tiny().with_overrides(&["heads=x"]).is_err());
        assert!(Config::tiny().with_overrides(&["nope=1"]).is_err());
        assert!(Config::tiny().with_overrides(&["heads"]).is_err());
        assert!(Config::preset("huge").is_err());
        let c = Config::tiny()
            .with_overrides(&["context=4K", "dtype=f32"])
            .unwrap();
        assert_eq!((c.context, c.dtype), (4096, Dtype::F32));
    }
}
