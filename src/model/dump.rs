//! A generation's dump (issue 15's format, a batch of one) as a `.safetensors` file, written
//! by the CPU reference (`ess-wgpu model reference --dump`) and by the GPU through the engine
//! (`ess-wgpu generate --dump`), read back and compared (`ess-wgpu model compare`):
//!
//! ```text
//!   tokens                  i64 [P + N]        the prompt, then the new tokens
//!   prompt_len              i64 [1]            P
//!   logits                  f32 [N, vocab]     row 0: the prompt's last position; row i: decode step i
//!   layers.{i}.topk         i32 [N − 1, k]     each decode step's selected positions, best first, −1 padded
//!   layers.{i}.prefill_topk i32 [P, k]         each prompt position's
//!   layers.{i}.experts      i32 [P + N − 1, a] each run token's routed experts, best first (MoE layers)
//!   layers.{i}.latent       f32 [P + N − 1, kv_lora_rank]   the latent as cached (after act_quant)
//!   layers.{i}.index_k      f32 [P + N − 1, index_head_dim] the indexer keys, dequantised
//! ```
//!
//! `i` is the checkpoint's layer number; `k` is `index_topk`, `a` `num_experts_per_tok`.

use crate::error::{Error, Result};
use crate::reference::model::{ModelWeights, SeqCache, TokenOut};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// One generation of one sequence, as dumped.
#[derive(Clone, Debug, PartialEq)]
pub struct Dump {
    pub prompt: Vec<u32>,
    /// The N new tokens.
    pub tokens: Vec<u32>,
    pub vocab: usize,
    /// `[N, vocab]`.
    pub logits: Vec<f32>,
    /// `index_topk`: the width of every selection row.
    pub topk: usize,
    pub layers: Vec<LayerDump>,
}

/// One layer's part of a [`Dump`]: a row per token run (the prompt's P, then N − 1 decode steps).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDump {
    /// The checkpoint's layer number.
    pub layer: u32,
    /// `[P + N − 1][k]`, −1 padded.
    pub selections: Vec<Vec<i32>>,
    /// `[P + N − 1][num_experts_per_tok]` (MoE layers).
    pub experts: Option<Vec<Vec<u32>>>,
    /// `[P + N − 1, kv_lora_rank]`.
    pub latent: Vec<f32>,
    /// `[P + N − 1, index_head_dim]`.
    pub index_k: Vec<f32>,
}

/// `sel` padded with −1 to `k` entries.
pub fn padded(sel: &[i32], k: usize) -> Vec<i32> {
    (0..k).map(|j| sel.get(j).copied().unwrap_or(-1)).collect()
}

impl Dump {
    /// The CPU reference's generation ([`crate::reference::model::generate`]'s outputs).
    pub fn from_reference(
        w: &ModelWeights,
        prompt: &[u32],
        tokens: &[u32],
        outs: &[TokenOut],
        cache: &SeqCache,
    ) -> Dump {
        let c = &w.config;
        let (p, k) = (prompt.len(), c.index_topk as usize);
        let layers = w
            .layers
            .clone()
            .enumerate()
            .map(|(li, l)| LayerDump {
                layer: l,
                selections: outs.iter().map(|o| padded(&o.topk[li], k)).collect(),
                experts: c.is_moe(l).then(|| {
                    outs.iter()
                        .map(|o| o.experts[li].iter().map(|&e| e as u32).collect())
                        .collect()
                }),
                latent: cache.latent[li].concat(),
                index_k: cache.index_k[li].concat(),
            })
            .collect();
        Dump {
            prompt: prompt.to_vec(),
            tokens: tokens.to_vec(),
            vocab: c.vocab_size as usize,
            logits: outs[p - 1..]
                .iter()
                .flat_map(|o| o.logits.clone())
                .collect(),
            topk: k,
            layers,
        }
    }

    /// Equal bit for bit (floats compared as their bits).
    pub fn same_bits(&self, other: &Dump) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let layer = |a: &LayerDump, b: &LayerDump| {
            (a.layer, &a.selections, &a.experts) == (b.layer, &b.selections, &b.experts)
                && bits(&a.latent) == bits(&b.latent)
                && bits(&a.index_k) == bits(&b.index_k)
        };
        (&self.prompt, &self.tokens, self.topk) == (&other.prompt, &other.tokens, other.topk)
            && bits(&self.logits) == bits(&other.logits)
            && self.layers.len() == other.layers.len()
            && self
                .layers
                .iter()
                .zip(&other.layers)
                .all(|(a, b)| layer(a, b))
    }

    /// Tokens run through the model: the prompt's, then every decode step's.
    pub fn rows(&self) -> usize {
        self.prompt.len() + self.tokens.len() - 1
    }

    /// Write the dump to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let (p, n, k, rows) = (self.prompt.len(), self.tokens.len(), self.topk, self.rows());
        let mut t: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let mut add = |name: String, dtype, shape: Vec<usize>, bytes: &[u8]| {
            t.push((name, dtype, shape, bytes.to_vec()))
        };
        let all: Vec<i64> = self
            .prompt
            .iter()
            .chain(&self.tokens)
            .map(|&x| x as i64)
            .collect();
        add("tokens".into(), Dtype::I64, vec![p + n], cast(&all));
        add("prompt_len".into(), Dtype::I64, vec![1], cast(&[p as i64]));
        let logits = cast(&self.logits);
        add("logits".into(), Dtype::F32, vec![n, self.vocab], logits);
        for l in &self.layers {
            let at = |s: &str| format!("layers.{}.{s}", l.layer);
            let sel = |r: std::ops::Range<usize>| l.selections[r].concat();
            add(at("topk"), Dtype::I32, vec![n - 1, k], cast(&sel(p..rows)));
            add(at("prefill_topk"), Dtype::I32, vec![p, k], cast(&sel(0..p)));
            if let Some(e) = &l.experts {
                let a = e.first().map_or(0, Vec::len);
                let flat: Vec<i32> = e.iter().flatten().map(|&x| x as i32).collect();
                add(at("experts"), Dtype::I32, vec![rows, a], cast(&flat));
            }
            let width = |v: &[f32]| v.len() / rows.max(1);
            let latent = vec![rows, width(&l.latent)];
            add(at("latent"), Dtype::F32, latent, cast(&l.latent));
            let index_k = vec![rows, width(&l.index_k)];
            add(at("index_k"), Dtype::F32, index_k, cast(&l.index_k));
        }
        let views = t.iter().map(|(name, d, s, b)| {
            let v =
                TensorView::new(*d, s.clone(), b).expect("a dump tensor's bytes match its shape");
            (name.clone(), v)
        });
        safetensors::tensor::serialize_to_file(views, None, path).map_err(|e| {
            Error::config(
                &path.display().to_string(),
                e,
                "a writable .safetensors file",
            )
        })
    }

    /// Read a dump written by [`Dump::write`] (or by another implementation of the format),
    /// every tensor's dtype and shape checked.
    pub fn read(path: &Path) -> Result<Dump> {
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: what.clone(),
            source,
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::config(&what, e, "a .safetensors file"))?;
        let get = |name: &str, dtype: Dtype, dims: usize| -> Result<(Vec<usize>, &[u8])> {
            let t = st.tensor(name).map_err(|_| {
                Error::config(&format!("{what}: {name}"), "missing", "a dump tensor")
            })?;
            if t.dtype() != dtype || t.shape().len() != dims {
                return Err(Error::config(
                    &format!("{what}: {name}"),
                    format!("{:?} {:?}", t.dtype(), t.shape()),
                    format!("{dtype:?} of {dims} dimensions"),
                ));
            }
            Ok((t.shape().to_vec(), t.data()))
        };
        let ints = |name: &str| -> Result<Vec<i64>> {
            Ok(bytemuck::pod_collect_to_vec(get(name, Dtype::I64, 1)?.1))
        };
        let (all, p) = (ints("tokens")?, ints("prompt_len")?);
        let p = p.first().copied().unwrap_or(0) as usize;
        let (shape, logits) = get("logits", Dtype::F32, 2)?;
        let n = shape[0];
        if p == 0 || n < 2 || all.len() != p + n {
            return Err(Error::config(
                &format!("{what}: tokens"),
                format!("{} tokens, prompt_len {p}, {n} logit rows", all.len()),
                "prompt_len ≥ 1 and prompt_len + the logit rows (≥ 2) tokens",
            ));
        }
        let rows = p + n - 1;
        let mut numbers: Vec<u32> = st
            .names()
            .iter()
            .filter_map(|s| {
                s.strip_prefix("layers.")?
                    .strip_suffix(".latent")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut topk = 0;
        let mut layers = Vec::new();
        for l in numbers {
            let at = |s: &str| format!("layers.{l}.{s}");
            let rows_of = |name: &str, dtype, want: usize| -> Result<(usize, &[u8])> {
                let (shape, data) = get(name, dtype, 2)?;
                if shape[0] != want {
                    return Err(Error::config(
                        &format!("{what}: {name}"),
                        format!("{shape:?}"),
                        format!("{want} rows"),
                    ));
                }
                Ok((shape[1], data))
            };
            let (k, decode) = rows_of(&at("topk"), Dtype::I32, n - 1)?;
            let (_, prefill) = rows_of(&at("prefill_topk"), Dtype::I32, p)?;
            topk = k;
            let mut sel: Vec<i32> = bytemuck::pod_collect_to_vec(prefill);
            sel.extend(bytemuck::pod_collect_to_vec::<u8, i32>(decode));
            let experts = match st.tensor(&at("experts")) {
                Ok(_) => {
                    let (a, e) = rows_of(&at("experts"), Dtype::I32, rows)?;
                    let e: Vec<i32> = bytemuck::pod_collect_to_vec(e);
                    Some(
                        e.chunks(a.max(1))
                            .map(|r| r.iter().map(|&x| x as u32).collect())
                            .collect(),
                    )
                }
                Err(_) => None,
            };
            layers.push(LayerDump {
                layer: l,
                selections: sel.chunks(k.max(1)).map(<[i32]>::to_vec).collect(),
                experts,
                latent: bytemuck::pod_collect_to_vec(rows_of(&at("latent"), Dtype::F32, rows)?.1),
                index_k: bytemuck::pod_collect_to_vec(rows_of(&at("index_k"), Dtype::F32, rows)?.1),
            });
        }
        Ok(Dump {
            prompt: all[..p].iter().map(|&t| t as u32).collect(),
            tokens: all[p..].iter().map(|&t| t as u32).collect(),
            vocab: shape[1],
            logits: bytemuck::pod_collect_to_vec(logits),
            topk,
            layers,
        })
    }

    /// How far `self` is from `want`, tensor by tensor.
    pub fn compare(&self, want: &Dump) -> Result<Comparison> {
        let names = |d: &Dump| d.layers.iter().map(|l| l.layer).collect::<Vec<_>>();
        if self.prompt != want.prompt || names(self) != names(want) || self.vocab != want.vocab {
            return Err(Error::config(
                "dumps",
                format!("prompt {:?}, layers {:?}", self.prompt.len(), names(self)),
                format!(
                    "the same prompt, vocabulary and layers as the other ({} tokens, layers {:?})",
                    want.prompt.len(),
                    names(want)
                ),
            ));
        }
        let n = self.tokens.len().min(want.tokens.len());
        let same_tokens = self.tokens == want.tokens;
        // compared: what ran on the same tokens (logit row i and run row P + i − 1 read the
        // new tokens before i)
        let same = (0..n)
            .take_while(|&i| self.tokens[i] == want.tokens[i])
            .count();
        let agree = (same + 1).min(n);
        let v = self.vocab;
        let logits = rel_diff(&self.logits[..agree * v], &want.logits[..agree * v], v);
        let rows = self.prompt.len() + agree - 1;
        let layers = self
            .layers
            .iter()
            .zip(&want.layers)
            .map(|(a, b)| {
                let same = |x: &[Vec<i32>], y: &[Vec<i32>]| {
                    x.iter().zip(y).take(rows).filter(|(x, y)| x == y).count()
                };
                let as_sets = |s: &[Vec<i32>]| -> Vec<Vec<i32>> {
                    s.iter()
                        .map(|r| {
                            let mut r = r.clone();
                            r.sort_unstable();
                            r
                        })
                        .collect()
                };
                let experts_same = match (&a.experts, &b.experts) {
                    (Some(x), Some(y)) => {
                        Some(x.iter().zip(y).take(rows).filter(|(x, y)| x == y).count())
                    }
                    _ => None,
                };
                let kv = a.latent.len() / self.rows().max(1);
                let dim = a.index_k.len() / self.rows().max(1);
                LayerComparison {
                    layer: a.layer,
                    rows,
                    selections_same: same(&a.selections, &b.selections),
                    selection_sets_same: same(&as_sets(&a.selections), &as_sets(&b.selections)),
                    experts_same,
                    latent: rel_diff(&a.latent[..rows * kv], &b.latent[..rows * kv], kv),
                    index_k: rel_diff(&a.index_k[..rows * dim], &b.index_k[..rows * dim], dim),
                }
            })
            .collect();
        Ok(Comparison {
            same_tokens,
            logit_rows: agree,
            logits,
            layers,
        })
    }
}

/// The bytes of `v`, little-endian as safetensors stores them.
fn cast<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// The largest |a − b| of a row of `width` as a share of that row's largest |b|, over the rows.
fn rel_diff(a: &[f32], b: &[f32], width: usize) -> f32 {
    a.chunks(width.max(1))
        .zip(b.chunks(width.max(1)))
        .map(|(x, y)| {
            let scale = y
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
                .max(f32::MIN_POSITIVE);
            x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale
        })
        .fold(0f32, f32::max)
}

/// What [`Dump::compare`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    pub same_tokens: bool,
    /// Logit rows compared: those whose inputs (the tokens before them) agree; the layers'
    /// rows likewise.
    pub logit_rows: usize,
    /// The largest difference of a logit row, as a share of the row's largest |logit|.
    pub logits: f32,
    pub layers: Vec<LayerComparison>,
}

/// One layer of a [`Comparison`]; rows are the tokens run (prompt and decode steps).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerComparison {
    pub layer: u32,
    pub rows: usize,
    /// Rows whose selections are equal in order, and as sets.
    pub selections_same: usize,
    pub selection_sets_same: usize,
    /// Rows whose experts are equal (MoE layers).
    pub experts_same: Option<usize>,
    /// The largest difference of a row, as a share of the row's largest |value|.
    pub latent: f32,
    pub index_k: f32,
}

impl Comparison {
    /// Everything discrete is equal (tokens, selections as sets, experts).
    pub fn discrete_equal(&self) -> bool {
        self.same_tokens
            && self.layers.iter().all(|l| {
                l.selection_sets_same == l.rows && l.experts_same.is_none_or(|e| e == l.rows)
            })
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "tokens {}; logits (first {} rows) within {:.2e} of the row's largest",
            if self.same_tokens { "equal" } else { "DIFFER" },
            self.logit_rows,
            self.logits
        )?;
        writeln!(
            f,
            "{:>6} {:>6} {:>14} {:>14} {:>10} {:>10} {:>10}",
            "layer", "rows", "top-k equal", "top-k sets", "experts", "latent", "index_k"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:>6} {:>6} {:>14} {:>14} {:>10} {:>10.2e} {:>10.2e}",
                l.layer,
                l.rows,
                l.selections_same,
                l.selection_sets_same,
                l.experts_same.map_or("-".into(), |e| e.to_string()),
                l.latent,
                l.index_k
            )?;
        }
        Ok(())
    }
}
