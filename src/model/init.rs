//! `ess-wgpu model init`: a random checkpoint in exactly the Hugging Face layout
//! ([`super::checkpoint::expected_tensors`]), for tests, examples and anyone without real weights.
//! Scales keep activations O(1) over the layers: linear weights uniform in ±√(3 / in) (variance
//! 1 / in), norms near 1, embeddings in ±1, the router's correction bias small.

use super::checkpoint::{FP8_BLOCK, TensorSpec, expected_tensors, scale_name, scale_shape};
use super::config::{HfConfig, RopeScaling};
use crate::error::{Error, Result};
use crate::reference::model::Fp8Tensor;
use crate::workload::Rng;
use safetensors::tensor::{Dtype as StDtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// How the random weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDtype {
    Bf16,
    F16,
    F32,
    /// Linear weights FP8 e4m3 in 128 × 128 blocks with `weight_scale_inv` (as the real
    /// checkpoint ships them), the rest bf16.
    Fp8,
}

impl WeightDtype {
    pub fn parse(s: &str) -> Result<WeightDtype> {
        match s {
            "bf16" => Ok(WeightDtype::Bf16),
            "f16" => Ok(WeightDtype::F16),
            "f32" => Ok(WeightDtype::F32),
            "fp8" => Ok(WeightDtype::Fp8),
            _ => Err(Error::config("dtype", s, "bf16, f16, f32 or fp8")),
        }
    }
}

/// The built-in configs: `tiny` (odd small shapes every kernel path must take), `small`, and
/// `v32-layers` (DeepSeek-V3.2's real per-layer shapes, 4 layers, the first dense).
pub fn preset(name: &str) -> Result<HfConfig> {
    let yarn = |factor: f64, orig: u32| {
        Some(RopeScaling {
            kind: "yarn".into(),
            factor,
            original_max_position_embeddings: orig,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
        })
    };
    let base = HfConfig {
        model_type: "deepseek_v32".into(),
        vocab_size: 512,
        hidden_size: 256,
        num_hidden_layers: 3,
        first_k_dense_replace: 1,
        num_attention_heads: 4,
        q_lora_rank: 96,
        kv_lora_rank: 128,
        qk_nope_head_dim: 32,
        qk_rope_head_dim: 16,
        v_head_dim: 32,
        index_n_heads: 8,
        index_head_dim: 128,
        index_topk: 64,
        n_routed_experts: 8,
        n_shared_experts: 1,
        num_experts_per_tok: 2,
        n_group: 2,
        topk_group: 1,
        routed_scaling_factor: 2.5,
        scoring_func: "sigmoid".into(),
        topk_method: "noaux_tc".into(),
        norm_topk_prob: true,
        moe_intermediate_size: 64,
        intermediate_size: 256,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: yarn(4.0, 1024),
        max_position_embeddings: 4096,
        tie_word_embeddings: false,
        num_nextn_predict_layers: 0,
        quantization_config: None,
    };
    let cfg = match name {
        "tiny" => base,
        "small" => HfConfig {
            vocab_size: 4096,
            hidden_size: 1024,
            num_hidden_layers: 4,
            num_attention_heads: 16,
            q_lora_rank: 384,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            index_n_heads: 16,
            index_topk: 256,
            n_routed_experts: 32,
            num_experts_per_tok: 4,
            n_group: 4,
            topk_group: 2,
            moe_intermediate_size: 256,
            intermediate_size: 2048,
            rope_scaling: yarn(40.0, 4096),
            max_position_embeddings: 163_840,
            ..base
        },
        "v32-layers" => HfConfig {
            vocab_size: 129_280,
            hidden_size: 7168,
            num_hidden_layers: 4,
            num_attention_heads: 128,
            q_lora_rank: 1536,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            index_n_heads: 64,
            index_topk: 2048,
            n_routed_experts: 256,
            num_experts_per_tok: 8,
            n_group: 8,
            topk_group: 4,
            moe_intermediate_size: 2048,
            intermediate_size: 18_432,
            rope_scaling: yarn(40.0, 4096),
            max_position_embeddings: 163_840,
            ..base
        },
        _ => {
            return Err(Error::config(
                "model config",
                name,
                "tiny, small or v32-layers",
            ));
        }
    };
    cfg.validate()?;
    Ok(cfg)
}

/// A shard is closed once it holds this many bytes (the next tensor starts a new one).
pub const SHARD_BYTES: u64 = 2 << 30;

/// One tensor's bytes and how they are stored.
struct Owned {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A random model in memory, no files: layers `layers` of `cfg` (all: `0..num_hidden_layers`),
/// drawn as [`write_random`] draws them and stored as its checkpoint of `dtype` would store
/// them (bf16 rounding by default; FP8: the linear weights as e4m3 and block scales, kept so,
/// the rest bf16). What `generate` runs without `--model`.
pub fn random_weights(
    cfg: &HfConfig,
    layers: std::ops::Range<u32>,
    seed: u64,
    dtype: WeightDtype,
) -> Result<crate::reference::model::ModelWeights> {
    cfg.validate()?;
    // one stream of draws in tensor order, as `write_random` draws it; each tensor's piece of
    // the stream is found by skipping the draws before it, so tensors are drawn in parallel
    // (the 256 experts of a v32 layer are 11 G values)
    let specs = expected_tensors(cfg, layers.clone());
    let starts: Vec<u64> = specs
        .iter()
        .scan(0u64, |at, t| {
            let first = *at;
            *at += t.shape.iter().product::<usize>() as u64;
            Some(first)
        })
        .collect();
    let rng = Rng::new(seed);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new((HashMap::new(), HashMap::new()));
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(spec) = specs.get(i) else { break };
            let v = values(spec, &mut rng.skip(starts[i]));
            let held = || done.lock().expect("no thread panics holding it");
            if dtype == WeightDtype::Fp8 && spec.linear {
                // no f32 copy: `ModelWeights` makes the FP8 weight's values on demand
                let f = quantize_fp8(&v, &spec.shape);
                held().1.insert(spec.name.clone(), f);
                continue;
            }
            let stored = match dtype {
                WeightDtype::F32 => v,
                WeightDtype::F16 => crate::workload::round_f16(&v),
                _ => v
                    .iter()
                    .map(|&x| half::bf16::from_f32(x).to_f32())
                    .collect(),
            };
            held().0.insert(spec.name.clone(), stored);
        }
    };
    // one thread where there are no others (a browser page: spawning would fail there)
    match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => work(),
        threads => std::thread::scope(|scope| {
            for _ in 0..threads.min(specs.len()) {
                scope.spawn(work);
            }
        }),
    }
    let (t, fp8) = done.into_inner().expect("no thread panics holding it");
    Ok(crate::reference::model::ModelWeights::from_tensors(
        cfg.clone(),
        layers,
        t,
        fp8,
    ))
}

/// A linear weight `[rows, cols]` quantised as the checkpoint stores FP8: a scale a 128 × 128
/// block (its largest |value| / 448; 1 for an all-zero block), e4m3 of value / scale.
pub fn quantize_fp8(v: &[f32], shape: &[usize]) -> Fp8Tensor {
    let (rows, cols) = (shape[0], shape[1]);
    let ss = scale_shape(shape);
    let block = |i: usize| (i / cols / FP8_BLOCK) * ss[1] + (i % cols) / FP8_BLOCK;
    let mut scales = vec![0f32; ss[0] * ss[1]];
    for (i, &x) in v.iter().enumerate() {
        let s = &mut scales[block(i)];
        *s = s.max(x.abs());
    }
    for s in &mut scales {
        *s = if *s > 0.0 { *s / 448.0 } else { 1.0 };
    }
    let bytes = (0..rows * cols)
        .map(|i| crate::reference::fp8::e4m3_encode(v[i] / scales[block(i)]))
        .collect();
    Fp8Tensor {
        bytes,
        scales,
        rows,
        cols,
    }
}

/// The random values of `t` (see the module doc).
fn values(t: &TensorSpec, rng: &mut Rng) -> Vec<f32> {
    let n: usize = t.shape.iter().product();
    let (lo, hi) = if t.linear {
        let a = (3.0 / t.shape[1] as f32).sqrt();
        (-a, a)
    } else if t.name.ends_with("norm.weight") || t.name.ends_with("layernorm.weight") {
        (0.9, 1.1)
    } else if t.name.ends_with(".bias") {
        (-0.1, 0.1)
    } else if t.name.ends_with("weights_proj.weight") || t.name.ends_with("gate.weight") {
        let a = (3.0 / t.shape[1] as f32).sqrt();
        (-a, a)
    } else {
        (-1.0, 1.0) // embeddings, lm_head
    };
    (0..n).map(|_| rng.range(lo, hi)).collect()
}

fn encode(v: &[f32], dtype: StDtype) -> Vec<u8> {
    match dtype {
        StDtype::F32 => bytemuck::cast_slice(v).to_vec(),
        StDtype::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        _ => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
    }
}

/// `t` stored as `dtype`; FP8 linear weights with their block scales (amax / 448 per block, as
/// DeepSeek's checkpoint conversion does).
fn stored(t: &TensorSpec, v: Vec<f32>, dtype: WeightDtype) -> Vec<(String, Owned)> {
    let plain = |d| {
        vec![(
            t.name.clone(),
            Owned {
                dtype: d,
                shape: t.shape.clone(),
                data: encode(&v, d),
            },
        )]
    };
    match dtype {
        WeightDtype::F32 => plain(StDtype::F32),
        WeightDtype::F16 => plain(StDtype::F16),
        WeightDtype::Bf16 => plain(StDtype::BF16),
        WeightDtype::Fp8 if !t.linear => plain(StDtype::BF16),
        WeightDtype::Fp8 => {
            let f = quantize_fp8(&v, &t.shape);
            vec![
                (
                    t.name.clone(),
                    Owned {
                        dtype: StDtype::F8_E4M3,
                        shape: t.shape.clone(),
                        data: f.bytes,
                    },
                ),
                (
                    scale_name(&t.name),
                    Owned {
                        dtype: StDtype::F32,
                        shape: scale_shape(&t.shape),
                        data: bytemuck::cast_slice(&f.scales).to_vec(),
                    },
                ),
            ]
        }
    }
}

fn write_shard(path: &Path, tensors: &[(String, Owned)]) -> Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, o)| {
            let v = TensorView::new(o.dtype, o.shape.clone(), &o.data)
                .expect("a tensor's bytes match its shape");
            (n.clone(), v)
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).map_err(|e| {
        Error::config(
            &path.display().to_string(),
            e,
            "a writable .safetensors file",
        )
    })
}

/// Write `cfg` with random weights into `dir` (created; it must be empty or absent): config.json,
/// shards (the embedding, norm and head; then each layer, cut at [`SHARD_BYTES`]), and the index.
/// Returns the bytes of weights written.
pub fn write_random(dir: &Path, cfg: &HfConfig, seed: u64, dtype: WeightDtype) -> Result<u64> {
    cfg.validate()?;
    let io = |e: std::io::Error| Error::Io {
        path: dir.display().to_string(),
        source: e,
    };
    if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
        return Err(Error::config(
            "out",
            dir.display(),
            "an empty or new folder",
        ));
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut cfg = cfg.clone();
    if dtype == WeightDtype::Fp8 {
        cfg.quantization_config = Some(serde_json::json!({
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [FP8_BLOCK, FP8_BLOCK],
        }));
    }
    let json = serde_json::to_string_pretty(&cfg).expect("a config serialises");
    std::fs::write(dir.join("config.json"), json).map_err(io)?;
    let mut rng = Rng::new(seed);
    let mut weight_map = serde_json::Map::new();
    let mut bytes = 0u64;
    let all = expected_tensors(&cfg, 0..cfg.num_hidden_layers);
    // a shard per layer (and one for the embedding, norm and head), cut again past
    // SHARD_BYTES so that a layer of v32-layers (tens of GB) is never whole in memory
    let part_of = |name: &str| -> String {
        match name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split('.').next())
        {
            Some(l) => format!("model-layer-{l:0>3}"),
            None => "model-embed-head".to_string(),
        }
    };
    let (mut part, mut piece, mut held) = (String::new(), 0u32, 0u64);
    let mut shard: Vec<(String, Owned)> = Vec::new();
    let file = |part: &str, piece: u32| format!("{part}-{piece:0>2}.safetensors");
    for t in &all {
        let p = part_of(&t.name);
        if p != part || held >= SHARD_BYTES {
            if !shard.is_empty() {
                write_shard(&dir.join(file(&part, piece)), &shard)?;
                shard.clear();
            }
            piece = if p == part { piece + 1 } else { 0 };
            (part, held) = (p, 0);
        }
        let v = values(t, &mut rng);
        for (name, o) in stored(t, v, dtype) {
            bytes += o.data.len() as u64;
            held += o.data.len() as u64;
            weight_map.insert(name.clone(), serde_json::Value::String(file(&part, piece)));
            shard.push((name, o));
        }
    }
    if !shard.is_empty() {
        write_shard(&dir.join(file(&part, piece)), &shard)?;
    }
    let index = serde_json::json!({
        "metadata": { "total_size": bytes },
        "weight_map": weight_map,
    });
    let text = serde_json::to_string_pretty(&index).expect("an index serialises");
    std::fs::write(dir.join("model.safetensors.index.json"), text).map_err(io)?;
    Ok(bytes)
}
