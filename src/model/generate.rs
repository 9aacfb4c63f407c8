//! Greedy generation through the engine (issue 15): a batch of prompts prefilled, then decode
//! steps of the whole model in resident or offload mode ([`super::step::ModelInputs`]), with the
//! engine's report. `ess-wgpu generate` is its command line.

use super::dump::{Dump, LayerDump, padded};
use super::step::{ModelInputs, Prefill, PromptChoices};
use crate::config::{Dtype, ModelConfig, RunConfig};
use crate::decode::ModeReport;
use crate::engine::{Engine, EngineOptions, Mode, ModelRef};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::reference::model::ModelWeights;

/// The engine's run of model `w` for `batch` sequences, caches in the given dtypes.
pub fn run_config(w: &ModelWeights, batch: u32, latent: Dtype, key: Dtype) -> RunConfig {
    run_config_of(&w.config, w.layers.len() as u32, batch, latent, key)
}

/// [`run_config`] from a config and the number of its layers that run, before any weight is read.
pub fn run_config_of(
    c: &super::HfConfig,
    layers: u32,
    batch: u32,
    latent: Dtype,
    key: Dtype,
) -> RunConfig {
    RunConfig {
        model: ModelConfig {
            name: "checkpoint".into(),
            heads: c.num_attention_heads,
            kv_lora_rank: c.kv_lora_rank,
            qk_rope_head_dim: c.qk_rope_head_dim,
            qk_nope_head_dim: c.qk_nope_head_dim,
            index_heads: c.index_n_heads,
            index_head_dim: c.index_head_dim,
            topk: c.index_topk,
            layers,
            checkpoint_softmax_scale: Some(c.softmax_scale() as f32),
        },
        layers,
        context: 1,
        batch,
        latent_dtype: latent,
        key_dtype: key,
    }
}

/// Device bytes model `w` needs besides the engine for `batch` sequences: every weight (f32, or
/// FP8 bytes and block scales as the checkpoint stores them), the step's activations and the
/// scratch the linear layers and the grouped experts share.
pub fn model_bytes(w: &ModelWeights, batch: u32) -> u64 {
    let c = &w.config;
    let b = batch as u64;
    let (hsz, ql) = (c.hidden_size as u64, c.q_lora_rank as u64);
    let (heads, qs) = (
        c.num_attention_heads as u64,
        (c.qk_nope_head_dim + c.qk_rope_head_dim) as u64,
    );
    let (kv, rd, id) = (
        c.kv_lora_rank as u64,
        c.qk_rope_head_dim as u64,
        c.index_head_dim as u64,
    );
    let inter = (c.intermediate_size as u64)
        .max(c.moe_intermediate_size as u64 * (c.num_experts_per_tok + c.n_shared_experts) as u64);
    let per_layer = 5 * hsz
        + 3 * ql
        + heads * qs
        + 4 * (kv + rd)
        + 2 * id
        + heads * c.v_head_dim as u64
        + c.n_routed_experts as u64
        + 2 * c.num_experts_per_tok as u64
        + 3 * inter;
    let activations = b * 4 * (w.layers.len() as u64 * per_layer + 2 * hsz + c.vocab_size as u64);
    // shared by the layers: the linear layers' split scratch, the experts' outputs a pair
    let split = super::gpu::linear_shapes(c, 1)
        .iter()
        .map(crate::kernels::model_gemm::LinearShape::scratch_bytes)
        .max()
        .unwrap_or(0);
    let pairs = b * c.num_experts_per_tok as u64;
    let shared = b * split + pairs * 4 * (hsz + 3) + 4 * 3 * c.n_routed_experts as u64;
    w.gpu_bytes() + derived_bytes(w) + activations + shared
}

/// Device bytes of what the model derives from its weights beyond [`ModelWeights::gpu_bytes`]:
/// per layer W_UK transposed per head (f32, `LinearShape::mla_uk`'s weight), and kv_b_proj as
/// f32 where the checkpoint stores it as FP8 (MLA's per-head products read it as f32, as
/// DeepSeek's reference dequantises it), in place of its FP8 bytes.
fn derived_bytes(w: &ModelWeights) -> u64 {
    let c = &w.config;
    let (heads, nope, kv) = (
        c.num_attention_heads as u64,
        c.qk_nope_head_dim as u64,
        c.kv_lora_rank as u64,
    );
    w.layers
        .clone()
        .map(|l| {
            let kv_b = format!("model.layers.{l}.self_attn.kv_b_proj.weight");
            let f32_copy = w.fp8_tensor(&kv_b).map_or(0, |f| {
                let held = f.bytes.len() as u64 + 4 * f.scales.len() as u64;
                (4 * f.bytes.len() as u64).saturating_sub(held)
            });
            4 * heads * kv * nope + f32_copy
        })
        .sum()
}

/// One mode's generation: its report, and each sequence's new tokens (and, with `logits`,
/// their logits: row 0 from the prefill, row i from decode step i).
pub struct Generation {
    pub report: ModeReport,
    pub tokens: Vec<Vec<u32>>,
    /// `[B][N · vocab]` where collected.
    pub logits: Vec<Vec<f32>>,
    /// The engine's recorded selections, where asked for (`opts.record_trace`).
    pub trace: Option<crate::trace::Trace>,
    /// The generation's dump, where asked for ([`Collect::Dump`]).
    pub dump: Option<Dump>,
}

/// What a generation reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collect {
    /// Only the last step's tokens: the steps run back to back (throughput).
    Tokens,
    /// Every step's tokens and logits, each step waited for (comparisons).
    Logits,
    /// Also the dump ([`super::dump`]) of a batch of one prompt: its selections (the engine's
    /// trace), each step's routed experts, and at the end the rows as cached, read where the
    /// mode keeps them.
    Dump,
}

/// What to prefill: each sequence's prompt, or a hashed context of `opts.contexts` with `token`
/// as every sequence's first token.
#[derive(Clone)]
pub enum PrefillSpec {
    Prompts(Vec<Vec<u32>>),
    Synthetic { token: u32 },
}

/// Generate `new_tokens` (≥ 2: the first comes from the prefill, each further one from a
/// decode step) per sequence in `opts.mode`. `opts.contexts` are the prompts' lengths for
/// [`PrefillSpec::Prompts`]; `opts.steps` is set here; `collect` says what is read back.
pub fn generate(
    ctx: &GpuContext,
    w: &'static ModelWeights,
    opts: &EngineOptions,
    prefill: &PrefillSpec,
    new_tokens: u32,
    budget: u64,
    collect: Collect,
) -> Result<Generation> {
    crate::limits::in_range(
        "new-tokens",
        new_tokens as u64,
        2,
        crate::limits::MAX_STEPS as u64,
    )?;
    let what = opts
        .model
        .as_ref()
        .map_or("the generation's model", |m| &m.what);
    let mut opts = EngineOptions {
        steps: new_tokens - 1,
        model: Some(ModelRef {
            weights: w,
            what: what.to_string(),
        }),
        ..opts.clone()
    };
    if let PrefillSpec::Prompts(p) = prefill {
        opts.contexts = p.iter().map(|p| p.len() as u32).collect();
    }
    let dump = collect == Collect::Dump;
    if dump {
        if opts.run.batch != 1 || !matches!(prefill, PrefillSpec::Prompts(_)) {
            return Err(Error::config(
                "dump",
                format!("a batch of {}", opts.run.batch),
                "a batch of one prompt (--batch 1, no --context)",
            ));
        }
        opts.record_trace = true;
    }
    let collect_logits = collect != Collect::Tokens;
    opts.validate()?;
    let vocab = w.config.vocab_size;
    if let PrefillSpec::Prompts(p) = prefill {
        if let Some(&t) = p.iter().flatten().find(|&&t| t >= vocab) {
            return Err(Error::config(
                "prompt token",
                t,
                format!("0 ..= {} (the vocabulary)", vocab - 1),
            ));
        }
    }
    let mut inputs = ModelInputs::new(
        ctx,
        w,
        &opts.run,
        opts.capacity(),
        match prefill {
            PrefillSpec::Prompts(p) => Prefill::Prompts(p.clone()),
            PrefillSpec::Synthetic { token } => Prefill::Synthetic {
                token: *token,
                seed: opts.seed,
            },
        },
    )?;
    let (tokens_buf, logits_buf) = (inputs.tokens.clone(), inputs.logits.clone());
    // a hashed context has no prefill logits: rows from the decode steps only
    let mut logits = match collect_logits && !inputs.first_logits.is_empty() {
        true => std::mem::take(&mut inputs.first_logits),
        false => vec![Vec::new(); opts.run.batch as usize],
    };
    // what a dump needs that the engine does not keep
    let (probe, choices) = (
        inputs.probe(),
        dump.then(|| inputs.prompt_choices(0)).flatten(),
    );
    let first: Vec<u32> = ctx.read(&tokens_buf)?;
    let mut tokens: Vec<Vec<u32>> = first.iter().map(|&t| vec![t]).collect();
    let mut e = Engine::with_inputs(ctx, &opts, budget, Box::new(inputs))?;
    let mut step_experts = Vec::new();
    for step in 1..=opts.steps {
        e.step(ctx)?;
        if !collect_logits && step < opts.steps {
            continue;
        }
        e.finish(ctx)?;
        let t: Vec<u32> = ctx.read(&tokens_buf)?;
        for (seq, &t) in tokens.iter_mut().zip(&t) {
            seq.push(t);
        }
        if collect_logits {
            let l: Vec<f32> = ctx.read(&logits_buf)?;
            for (seq, row) in logits.iter_mut().zip(l.chunks(vocab as usize)) {
                seq.extend_from_slice(row);
            }
        }
        if dump {
            step_experts.push(probe.step_experts(ctx)?);
        }
    }
    let dump = match (dump, prefill, choices) {
        (true, PrefillSpec::Prompts(p), Some(choices)) => {
            let made = Made {
                prompt: &p[0],
                tokens: &tokens[0],
                logits: &logits[0],
                choices,
                step_experts,
            };
            Some(made.dump(ctx, w, &mut e)?)
        }
        _ => None,
    };
    Ok(Generation {
        report: ModeReport::new(&e),
        tokens,
        logits,
        trace: e.trace.take(),
        dump,
    })
}

/// What a generation of one prompt made, for its [`Dump`].
struct Made<'a> {
    prompt: &'a [u32],
    tokens: &'a [u32],
    logits: &'a [f32],
    choices: PromptChoices,
    /// `[step][layer]` each step's routed experts of its one row.
    step_experts: Vec<Vec<Option<Vec<Vec<u32>>>>>,
}

impl Made<'_> {
    /// The dump: the prefill's choices, each decode step's selections (the engine's trace) and
    /// experts, and the rows as the engine cached them (resident cache or host store).
    fn dump(self, ctx: &GpuContext, w: &ModelWeights, e: &mut Engine) -> Result<Dump> {
        let c = &w.config;
        let (k, kv) = (c.index_topk as usize, c.kv_lora_rank as usize);
        let width = kv + c.qk_rope_head_dim as usize;
        // each step's selections of every layer, in step order (the trace's)
        let mut steps = e.trace.as_ref().map_or(Vec::new(), |t| t.entries.clone());
        steps.retain(|t| t.kind == crate::trace::Kind::Step);
        steps.sort_by_key(|t| t.step);
        let mut layers = Vec::new();
        for (li, l) in w.layers.clone().enumerate() {
            let mut selections: Vec<Vec<i32>> = self.choices.selections[li]
                .iter()
                .map(|s| padded(s, k))
                .collect();
            let of_layer = steps.iter().filter(|t| t.layer == li as u32);
            selections.extend(of_layer.map(|t| t.ids.clone()));
            let experts = c.is_moe(l).then(|| {
                let mut ex = self.choices.experts[li].clone();
                ex.extend(
                    self.step_experts
                        .iter()
                        .filter_map(|s| s[li].as_ref()?.first().cloned()),
                );
                ex
            });
            let (rows, index_k) = e.cached_rows(ctx, li as u32, 0)?;
            let latent = rows.chunks(width).flat_map(|r| r[..kv].to_vec()).collect();
            layers.push(LayerDump {
                layer: l,
                selections,
                experts,
                latent,
                index_k,
            });
        }
        Ok(Dump {
            prompt: self.prompt.to_vec(),
            tokens: self.tokens.to_vec(),
            vocab: c.vocab_size as usize,
            logits: self.logits.to_vec(),
            topk: k,
            layers,
        })
    }
}

/// Resident and offload generations agree: the same tokens, logits identical bit for bit (and
/// where both dumped, dumps equal bit for bit: the same selections, experts and cached rows).
pub fn identical(a: &Generation, b: &Generation) -> bool {
    let bits = |g: &Generation| -> Vec<Vec<u32>> {
        g.logits
            .iter()
            .map(|l| l.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    let dumps = match (&a.dump, &b.dump) {
        (Some(x), Some(y)) => x.same_bits(y),
        _ => true,
    };
    a.tokens == b.tokens && bits(a) == bits(b) && dumps
}

/// The engine options of a generation in `mode` (the rest from `base`).
pub fn in_mode(base: &EngineOptions, mode: Mode) -> EngineOptions {
    EngineOptions {
        mode,
        ..base.clone()
    }
}
