//! Model and run configuration: [`ModelConfig`] (the model's dimensions, as a checkpoint's
//! `config.json` gives them) and [`RunConfig`] (a run of it: layers, batch, context, cache
//! storage), named presets, per-field overrides, and validation that names the field, the value
//! and the allowed range.
//!
//! The dims follow DeepSeek-V3.2 (BRIEF.md §2). Each kernel states its own limits in a `Shape`
//! with a `validate()` ([`IndexerShape`], [`TopKShape`], [`SparseMlaShape`], and the cache's
//! `ResolveShape`); [`RunConfig::validate`] asks them, so a bad value fails before any GPU work
//! with the same message wherever it is caught.

use crate::error::{Error, Result};
pub use crate::kernels::indexer::IndexerShape;
pub use crate::kernels::sparse_mla::SparseMlaShape;
pub use crate::kernels::topk::{MAX_TOPK, TopKShape};
use std::fmt;

/// Storage type of a cache (the indexer keys, the latent rows). Math is always f32 (or f16 with
/// f32 sums on the tensor cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Dtype {
    /// DeepSeek-V3.2's production layout ([`crate::reference::fp8`]): values as e4m3 bytes in
    /// blocks of 128 with a power-of-two f32 scale each (ue8m0), a latent row's rope part as
    /// bf16. 656 B a latent row and 132 B an indexer key at v32.
    Fp8,
    /// IEEE half, packed two per u32 (needs no `SHADER_F16`).
    F16,
    F32,
}

impl Dtype {
    /// Every dtype, in the order the messages list them.
    pub const ALL: [Dtype; 3] = [Dtype::Fp8, Dtype::F16, Dtype::F32];

    /// The dtype named `value` (`fp8`, `f16`, `f32`), or the error naming `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.to_string() == value)
            .ok_or_else(|| Error::config(field, shown(value), "fp8, f16, f32"))
    }

    /// Bytes of a latent row of `kv` + `rope` values (FP8: [`crate::reference::fp8::latent_row_bytes`]).
    pub fn row_bytes(self, kv: u32, rope: u32) -> u64 {
        match self {
            Dtype::Fp8 => {
                crate::reference::fp8::latent_row_bytes(kv as usize, rope as usize) as u64
            }
            Dtype::F16 => 2 * (kv + rope) as u64,
            Dtype::F32 => 4 * (kv + rope) as u64,
        }
    }

    /// Bytes of an indexer key of `dim` values (FP8: [`crate::reference::fp8::index_key_bytes`]).
    pub fn key_bytes(self, dim: u32) -> u64 {
        match self {
            Dtype::Fp8 => crate::reference::fp8::index_key_bytes(dim as usize) as u64,
            _ => self.row_bytes(dim, 0),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::Fp8 => "fp8",
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        })
    }
}

/// The model's dimensions: what a checkpoint's `config.json` fixes, nothing about a run. Field
/// names follow DeepSeek's `ModelArgs` (the Hugging Face names differ in places: `n_heads` is
/// `num_attention_heads`, `topk` is `index_topk`, `index_heads` is `index_n_heads`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    /// The preset it came from.
    pub name: String,
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
    /// Decoder layers of the model (61 in V3.2).
    pub layers: u32,
    /// The softmax scale where a checkpoint's config fixes it (YaRN's mscale² folded in:
    /// [`crate::model::HfConfig::softmax_scale`]); `None`: (qk_nope + qk_rope)^-1/2.
    pub checkpoint_softmax_scale: Option<f32>,
}

impl ModelConfig {
    /// Dims of one latent row: c_kv ‖ k_pe.
    pub fn row_dim(&self) -> u32 {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// The MLA softmax scale: the checkpoint's, else (qk_nope + qk_rope)^-1/2.
    pub fn softmax_scale(&self) -> f32 {
        let plain = || 1.0 / ((self.qk_nope_head_dim + self.qk_rope_head_dim) as f32).sqrt();
        self.checkpoint_softmax_scale.unwrap_or_else(plain)
    }
}

/// A run of a model: how many of its layers, how many sequences of what context, and how the
/// caches are stored. Presets are a model and a run's default sizes; `--set FIELD=VALUE` changes
/// either (see [`FIELDS`]). The engine's options ([`crate::engine::EngineOptions`]) add the
/// per-sequence contexts, steps, mode and pool on top.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    /// Layers run (the model's first ones; the presets keep a few).
    pub layers: u32,
    /// Context length T of each sequence.
    pub context: u32,
    /// Sequences decoded together.
    pub batch: u32,
    /// Storage of the latent rows (`fp8`: 656 B a row at v32).
    pub latent_dtype: Dtype,
    /// Storage of the indexer keys (`fp8`: 132 B a key at v32).
    pub key_dtype: Dtype,
}

/// Every field `RunConfig::set` accepts, in the order `--help` lists them: the model's dims,
/// then the run's sizes.
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
    "latent_dtype",
    "key_dtype",
    "dtype",
];

pub use crate::limits::{MAX_CONTEXT, parse_count, shown};

impl RunConfig {
    /// Test-sized: runs in milliseconds on a software adapter.
    pub fn tiny() -> Self {
        RunConfig {
            model: ModelConfig {
                name: "tiny".into(),
                heads: 8,
                kv_lora_rank: 64,
                qk_rope_head_dim: 32,
                qk_nope_head_dim: 32,
                index_heads: 8,
                index_head_dim: 32,
                topk: 16,
                layers: 2,
                checkpoint_softmax_scale: None,
            },
            layers: 2,
            context: 100,
            batch: 2,
            latent_dtype: Dtype::F16,
            key_dtype: Dtype::F16,
        }
    }

    /// A laptop demo: the real latent width, fewer heads, a few thousand tokens.
    pub fn small() -> Self {
        RunConfig {
            model: ModelConfig {
                name: "small".into(),
                heads: 16,
                kv_lora_rank: 512,
                qk_rope_head_dim: 64,
                qk_nope_head_dim: 128,
                index_heads: 16,
                index_head_dim: 64,
                topk: 256,
                layers: 4,
                checkpoint_softmax_scale: None,
            },
            layers: 4,
            context: 4096,
            batch: 4,
            latent_dtype: Dtype::F16,
            key_dtype: Dtype::F16,
        }
    }

    /// DeepSeek-V3.2's per-layer dims (61 layers; a run keeps 4), with the production FP8 caches.
    pub fn v32() -> Self {
        RunConfig {
            model: ModelConfig {
                name: "v32".into(),
                heads: 128,
                kv_lora_rank: 512,
                qk_rope_head_dim: 64,
                qk_nope_head_dim: 128,
                index_heads: 64,
                index_head_dim: 128,
                topk: 2048,
                layers: 61,
                checkpoint_softmax_scale: None,
            },
            layers: 4,
            context: 32768,
            batch: 16,
            latent_dtype: Dtype::Fp8,
            key_dtype: Dtype::Fp8,
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            "v32" => Ok(Self::v32()),
            _ => Err(Error::config("preset", shown(name), "tiny, small, v32")),
        }
    }

    /// Override one field from text, e.g. `set("topk", "512")`. Validates nothing beyond parsing:
    /// call [`RunConfig::validate`] once all overrides are in. `layers` sets the layers run (and
    /// the model's, when it asks for more than the model has: the presets are stand-ins).
    /// `dtype` sets both caches' storage.
    pub fn set(&mut self, field: &str, value: &str) -> Result<()> {
        let caches = match field {
            "latent_dtype" => Some((true, false)),
            "key_dtype" => Some((false, true)),
            "dtype" => Some((true, true)),
            _ => None,
        };
        if let Some((latent, keys)) = caches {
            let dtype = Dtype::parse(field, value)?;
            if latent {
                self.latent_dtype = dtype;
            }
            if keys {
                self.key_dtype = dtype;
            }
            return Ok(());
        }
        let m = &mut self.model;
        let slot = match field {
            "heads" => &mut m.heads,
            "kv_lora_rank" => &mut m.kv_lora_rank,
            "qk_rope_head_dim" => &mut m.qk_rope_head_dim,
            "qk_nope_head_dim" => &mut m.qk_nope_head_dim,
            "index_heads" => &mut m.index_heads,
            "index_head_dim" => &mut m.index_head_dim,
            "topk" => &mut m.topk,
            "layers" => &mut self.layers,
            "context" => &mut self.context,
            "batch" => &mut self.batch,
            _ => return Err(Error::config("field", shown(field), FIELDS.join(", "))),
        };
        *slot = parse_count(value).ok_or_else(|| {
            Error::config(
                field,
                shown(value),
                "a non-negative integer (suffix K = 1024 allowed)",
            )
        })?;
        self.model.layers = self.model.layers.max(self.layers);
        Ok(())
    }

    /// Apply `field=value` overrides in order.
    pub fn with_overrides<S: AsRef<str>>(mut self, overrides: &[S]) -> Result<Self> {
        for o in overrides {
            let o = o.as_ref();
            let (field, value) = o
                .split_once('=')
                .ok_or_else(|| Error::config("override", shown(o), "field=value"))?;
            self.set(field.trim(), value.trim())?;
        }
        Ok(self)
    }

    /// Check every field against what the kernels can handle: each kernel's shape says its own
    /// limits ([`IndexerShape`], [`TopKShape`], [`SparseMlaShape`]); the run's sizes are checked
    /// here.
    pub fn validate(&self) -> Result<()> {
        self.indexer_shape().validate()?;
        self.topk_shape().validate()?;
        self.sparse_mla_shape().validate_naive()?;
        check(self.model.qk_nope_head_dim, "qk_nope_head_dim", 1, 1024, 1)?;
        check(self.layers, "layers", 1, self.model.layers.min(256), 1)?;
        check(self.context, "context", 1, MAX_CONTEXT, 1)?;
        check(self.batch, "batch", 1, crate::limits::MAX_BATCH, 1)?;
        Ok(())
    }

    /// The lightning indexer's shape for this run.
    pub fn indexer_shape(&self) -> IndexerShape {
        IndexerShape {
            heads: self.model.index_heads,
            dim: self.model.index_head_dim,
            dtype: self.key_dtype,
        }
    }

    /// The top-k's shape for this run.
    pub fn topk_shape(&self) -> TopKShape {
        TopKShape { k: self.model.topk }
    }

    /// Sparse MLA's shape for this run.
    pub fn sparse_mla_shape(&self) -> SparseMlaShape {
        SparseMlaShape {
            heads: self.model.heads,
            kv: self.model.kv_lora_rank,
            rope: self.model.qk_rope_head_dim,
            topk: self.model.topk,
            dtype: self.latent_dtype,
            softmax_scale: self.model.softmax_scale(),
        }
    }

    /// Bytes of one latent row in the configured storage type.
    pub fn row_bytes(&self) -> u64 {
        let m = &self.model;
        self.latent_dtype
            .row_bytes(m.kv_lora_rank, m.qk_rope_head_dim)
    }

    /// Bytes of one indexer key.
    pub fn key_bytes(&self) -> u64 {
        self.key_dtype.key_bytes(self.model.index_head_dim)
    }

    /// Bytes a token adds to one layer's caches: its latent row and its indexer key (788 at v32
    /// with FP8 caches, 1408 with f16).
    pub fn token_bytes(&self) -> u64 {
        self.row_bytes() + self.key_bytes()
    }
}

impl fmt::Display for RunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.model;
        write!(
            f,
            "preset {}: heads {}, latent {} + rope {} ({}, {} B a row), indexer {} heads x {} \
             ({}, {} B a key), {} B a token a layer, top-k {}, layers {} of {}, context {}, \
             batch {}",
            m.name,
            m.heads,
            m.kv_lora_rank,
            m.qk_rope_head_dim,
            self.latent_dtype,
            self.row_bytes(),
            m.index_heads,
            m.index_head_dim,
            self.key_dtype,
            self.key_bytes(),
            self.token_bytes(),
            m.topk,
            self.layers,
            m.layers,
            self.context,
            self.batch
        )
    }
}

/// `value` of `field` in `min ..= max` and a multiple of `multiple`, or the error that says so.
pub(crate) fn check(value: u32, field: &str, min: u32, max: u32, multiple: u32) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for p in ["tiny", "small", "v32"] {
            RunConfig::preset(p).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = RunConfig::tiny()
            .with_overrides(&["topk=0"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("topk = 0"), "{e}");
        let e = RunConfig::tiny()
            .with_overrides(&["kv_lora_rank=100"])
            .unwrap()
            .validate();
        assert!(e.unwrap_err().to_string().contains("multiple of 64"));
        let names = |r: Result<RunConfig>, what: &str| {
            let e = r.unwrap_err().to_string();
            assert!(e.contains(what), "{e} does not name {what}");
        };
        names(RunConfig::tiny().with_overrides(&["heads=x"]), "heads = x");
        names(
            RunConfig::tiny().with_overrides(&["nope=1"]),
            "field = nope",
        );
        names(
            RunConfig::tiny().with_overrides(&["heads"]),
            "override = heads",
        );
        names(
            RunConfig::preset("huge"),
            "preset = huge; allowed: tiny, small, v32",
        );
        let c = RunConfig::tiny()
            .with_overrides(&["context=4K", "dtype=f32"])
            .unwrap();
        assert_eq!(
            (c.context, c.latent_dtype, c.key_dtype),
            (4096, Dtype::F32, Dtype::F32)
        );
        let c = c.with_overrides(&["key_dtype=fp8"]).unwrap();
        assert_eq!((c.latent_dtype, c.key_dtype), (Dtype::F32, Dtype::Fp8));
        names(
            RunConfig::tiny().with_overrides(&["latent_dtype=bf16"]),
            "latent_dtype = bf16; allowed: fp8, f16, f32",
        );
    }

    #[test]
    fn v32_caches_are_the_production_sizes() {
        let v = RunConfig::v32();
        assert_eq!((v.row_bytes(), v.key_bytes()), (656, 132));
        let f = v.with_overrides(&["dtype=f16"]).unwrap();
        assert_eq!((f.row_bytes(), f.key_bytes()), (1152, 256));
    }
}
