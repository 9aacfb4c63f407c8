//! A checkpoint folder in the Hugging Face layout: `config.json` and one or more `.safetensors`
//! files (with `model.safetensors.index.json` when sharded), memory-mapped and checked tensor by
//! tensor against what the config implies. A missing, extra, mistyped or misshapen tensor is an
//! error naming the tensor, what was found and what was expected.

use super::config::HfConfig;
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype as StDtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// FP8 weights come in blocks of 128 × 128 with one `weight_scale_inv` each.
pub const FP8_BLOCK: usize = 128;

/// What one tensor of the checkpoint must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// A linear layer's weight: FP8 (with a `weight_scale_inv`) in a quantised checkpoint.
    pub linear: bool,
}

impl TensorSpec {
    fn new(name: String, shape: &[u32], linear: bool) -> Self {
        TensorSpec {
            name,
            shape: shape.iter().map(|&d| d as usize).collect(),
            linear,
        }
    }
}

/// Every tensor the layers `layers` (and the embedding, final norm and head) need, in the real
/// checkpoint's names, with their shapes (`[out, in]` for linear weights).
pub fn expected_tensors(c: &HfConfig, layers: Range<u32>) -> Vec<TensorSpec> {
    let (h, heads) = (c.hidden_size, c.num_attention_heads);
    let mut t = vec![
        TensorSpec::new(
            "model.embed_tokens.weight".into(),
            &[c.vocab_size, h],
            false,
        ),
        TensorSpec::new("model.norm.weight".into(), &[h], false),
    ];
    if !c.tie_word_embeddings {
        t.push(TensorSpec::new(
            "lm_head.weight".into(),
            &[c.vocab_size, h],
            false,
        ));
    }
    for l in layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let mut add = |s: &str, shape: &[u32], linear| t.push(TensorSpec::new(p(s), shape, linear));
        add("input_layernorm.weight", &[h], false);
        add("post_attention_layernorm.weight", &[h], false);
        add("self_attn.q_a_proj.weight", &[c.q_lora_rank, h], true);
        add("self_attn.q_a_layernorm.weight", &[c.q_lora_rank], false);
        let qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
        add(
            "self_attn.q_b_proj.weight",
            &[heads * qk, c.q_lora_rank],
            true,
        );
        let kv_a = c.kv_lora_rank + c.qk_rope_head_dim;
        add("self_attn.kv_a_proj_with_mqa.weight", &[kv_a, h], true);
        add("self_attn.kv_a_layernorm.weight", &[c.kv_lora_rank], false);
        let kv_b = heads * (c.qk_nope_head_dim + c.v_head_dim);
        add("self_attn.kv_b_proj.weight", &[kv_b, c.kv_lora_rank], true);
        add("self_attn.o_proj.weight", &[h, heads * c.v_head_dim], true);
        let (ih, id) = (c.index_n_heads, c.index_head_dim);
        add(
            "self_attn.indexer.wq_b.weight",
            &[ih * id, c.q_lora_rank],
            true,
        );
        add("self_attn.indexer.wk.weight", &[id, h], true);
        add("self_attn.indexer.k_norm.weight", &[id], false);
        add("self_attn.indexer.k_norm.bias", &[id], false);
        add("self_attn.indexer.weights_proj.weight", &[ih, h], false);
        let mlp = |add: &mut dyn FnMut(&str, &[u32], bool), at: &str, inter: u32| {
            add(&format!("{at}.gate_proj.weight"), &[inter, h], true);
            add(&format!("{at}.up_proj.weight"), &[inter, h], true);
            add(&format!("{at}.down_proj.weight"), &[h, inter], true);
        };
        if c.is_moe(l) {
            add("mlp.gate.weight", &[c.n_routed_experts, h], false);
            add(
                "mlp.gate.e_score_correction_bias",
                &[c.n_routed_experts],
                false,
            );
            for e in 0..c.n_routed_experts {
                mlp(
                    &mut add,
                    &format!("mlp.experts.{e}"),
                    c.moe_intermediate_size,
                );
            }
            if c.n_shared_experts > 0 {
                let inter = c.n_shared_experts * c.moe_intermediate_size;
                mlp(&mut add, "mlp.shared_experts", inter);
            }
        } else {
            mlp(&mut add, "mlp", c.intermediate_size);
        }
    }
    t
}

/// The name of a linear weight's FP8 block scales.
pub fn scale_name(weight: &str) -> String {
    format!("{}_scale_inv", weight)
}

/// The shape of the block scales of a `[out, in]` FP8 weight.
pub fn scale_shape(shape: &[usize]) -> Vec<usize> {
    shape.iter().map(|d| d.div_ceil(FP8_BLOCK)).collect()
}

/// One memory-mapped `.safetensors` file.
struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
}

/// A checked checkpoint: its config and every tensor the loaded layers need, memory-mapped.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: HfConfig,
    pub layers: Range<u32>,
    shards: Vec<Shard>,
    /// Tensor name → where it is.
    index: HashMap<String, Stored>,
}

/// Where a tensor's bytes are: its shard, dtype, shape and byte range in the shard's map.
struct Stored {
    shard: usize,
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn dtype_name(d: StDtype) -> String {
    format!("{d:?}")
}

impl Checkpoint {
    /// Open `dir` for layers `layers` (default: all): read and check `config.json`, map the
    /// shards, and check every tensor those layers need, and that no tensor is unexplained.
    pub fn open(dir: &Path, layers: Option<Range<u32>>) -> Result<Checkpoint> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| io(&cfg_path, e))?;
        let config = HfConfig::parse(&text, &cfg_path.display().to_string())?;
        let layers = layers.unwrap_or(0..config.num_hidden_layers);
        if layers.start >= layers.end || layers.end > config.num_hidden_layers {
            return Err(Error::config(
                "layers",
                format!("{}..{}", layers.start, layers.end),
                format!("a non-empty range inside 0..{}", config.num_hidden_layers),
            ));
        }
        let files = shard_files(dir)?;
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
            // SAFETY: the map is read-only and lives as long as the checkpoint; a file changed
            // underneath while it runs is outside what this reads correctly (as for any mmap).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io(path, e))?;
            // the header once (it checks every tensor's range against the file)
            SafeTensors::deserialize(&map).map_err(|e| {
                Error::config(&path.display().to_string(), e, "a .safetensors file")
            })?;
            let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
                Error::config(&path.display().to_string(), e, "a .safetensors file")
            })?;
            let start = 8 + n;
            for (name, t) in meta.tensors() {
                let stored = Stored {
                    shard: i,
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    bytes: start + t.data_offsets.0..start + t.data_offsets.1,
                };
                if let Some(other) = index.insert(name.clone(), stored) {
                    return Err(Error::config(
                        &format!("tensor {name}"),
                        format!("in {} and {}", files[other.shard].display(), path.display()),
                        "one file",
                    ));
                }
            }
            shards.push(Shard {
                path: path.clone(),
                map,
            });
        }
        let ckpt = Checkpoint {
            dir: dir.to_path_buf(),
            config,
            layers,
            shards,
            index,
        };
        ckpt.check()?;
        Ok(ckpt)
    }

    /// Tensor `name`: (dtype, shape, bytes, its file).
    fn view(&self, name: &str) -> Option<(StDtype, &[usize], &[u8], &Path)> {
        let t = self.index.get(name)?;
        let shard = &self.shards[t.shard];
        Some((t.dtype, &t.shape, &shard.map[t.bytes.clone()], &shard.path))
    }

    /// Every expected tensor present with its shape and a dtype the code reads; no tensor
    /// unexplained (tensors of layers not loaded, and of MTP layers, are allowed).
    fn check(&self) -> Result<()> {
        let c = &self.config;
        let all = expected_tensors(c, 0..c.num_hidden_layers);
        let mut known: BTreeMap<&str, ()> = all.iter().map(|t| (t.name.as_str(), ())).collect();
        let scales: Vec<String> = all
            .iter()
            .filter(|t| t.linear)
            .map(|t| scale_name(&t.name))
            .collect();
        known.extend(scales.iter().map(|s| (s.as_str(), ())));
        for name in self.index.keys() {
            let mtp = name
                .strip_prefix("model.layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|l| l.parse::<u32>().ok())
                .is_some_and(|l| {
                    l >= c.num_hidden_layers && l < c.num_hidden_layers + c.num_nextn_predict_layers
                });
            if !known.contains_key(name.as_str()) && !mtp {
                return Err(Error::config(
                    &format!("tensor {name}"),
                    "in the checkpoint",
                    "only the tensors a DeepSeek-V3.2 config implies (an extra tensor)",
                ));
            }
        }
        for t in expected_tensors(c, self.layers.clone()) {
            let (dtype, shape, _, path) = self.view(&t.name).ok_or_else(|| {
                Error::config(
                    &format!("tensor {}", t.name),
                    "missing",
                    format!("shape {:?} in {}", t.shape, self.dir.display()),
                )
            })?;
            if shape != t.shape.as_slice() {
                return Err(Error::config(
                    &format!("tensor {}", t.name),
                    format!("shape {:?} in {}", shape, path.display()),
                    format!("shape {:?}", t.shape),
                ));
            }
            match dtype {
                StDtype::BF16 | StDtype::F16 | StDtype::F32 => {}
                StDtype::F8_E4M3 if t.linear => {
                    let s = scale_name(&t.name);
                    let (sd, ss, _, _) = self.view(&s).ok_or_else(|| {
                        Error::config(
                            &format!("tensor {s}"),
                            "missing",
                            "the FP8 weight's block scales",
                        )
                    })?;
                    let want = scale_shape(&t.shape);
                    if sd != StDtype::F32 || ss != want.as_slice() {
                        return Err(Error::config(
                            &format!("tensor {s}"),
                            format!("{} {:?}", dtype_name(sd), ss),
                            format!("F32 {want:?}"),
                        ));
                    }
                }
                d => {
                    let allowed = match t.linear {
                        true => "BF16, F16, F32, or F8_E4M3 with weight_scale_inv",
                        false => "BF16, F16 or F32",
                    };
                    return Err(Error::config(
                        &format!("tensor {}", t.name),
                        format!("dtype {} in {}", dtype_name(d), path.display()),
                        allowed,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Tensor `name` as FP8 bytes and block scales, where it is stored as FP8.
    pub fn fp8(&self, name: &str) -> Result<Option<crate::reference::model::Fp8Tensor>> {
        match self.view(name) {
            Some((StDtype::F8_E4M3, shape, bytes, _)) => {
                Ok(Some(crate::reference::model::Fp8Tensor {
                    bytes: bytes.to_vec(),
                    scales: self.f32(&scale_name(name))?,
                    rows: shape[0],
                    cols: shape.get(1).copied().unwrap_or(1),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Tensor `name` as f32 values (bf16, f16 and f32 widened; FP8 times its block scale).
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let (dtype, shape, bytes, _) = self.view(name).ok_or_else(|| {
            Error::config(
                &format!("tensor {name}"),
                "missing",
                "a tensor of the checkpoint",
            )
        })?;
        Ok(match dtype {
            StDtype::F32 => bytemuck::pod_collect_to_vec(bytes),
            StDtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            StDtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            StDtype::F8_E4M3 => {
                let scales = self.f32(&scale_name(name))?;
                let (rows, cols) = (shape[0], shape.get(1).copied().unwrap_or(1));
                let sc = cols.div_ceil(FP8_BLOCK);
                bytes
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| {
                        let (r, k) = (i / cols, i % cols);
                        debug_assert!(r < rows);
                        crate::reference::fp8::e4m3_decode(b)
                            * scales[(r / FP8_BLOCK) * sc + k / FP8_BLOCK]
                    })
                    .collect()
            }
            d => {
                return Err(Error::config(
                    &format!("tensor {name}"),
                    dtype_name(d),
                    "BF16, F16, F32 or F8_E4M3",
                ));
            }
        })
    }

    /// Shape and dtype of tensor `name`.
    pub fn info(&self, name: &str) -> Option<(Vec<usize>, StDtype)> {
        self.view(name).map(|(d, s, _, _)| (s.to_vec(), d))
    }
}

/// The `.safetensors` files of `dir`: the index's shards when there is one, else every
/// `.safetensors` file (sorted).
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::config(
                &index.display().to_string(),
                e,
                "a safetensors index (weight_map)",
            )
        })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                Error::config(
                    &index.display().to_string(),
                    "no weight_map",
                    "a weight_map object",
                )
            })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|f| f.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::config(
            "checkpoint",
            dir.display(),
            "a folder with config.json and .safetensors files",
        ));
    }
    Ok(files)
}
