//! `ess-wgpu generate`: greedy generation with a DeepSeek-V3.2 model through the engine, in
//! resident and/or offload mode, compared bit for bit (issue 15).

use super::model::{GenArgs, layer_range, make_prompt};
use super::{CacheArgs, print_report, time_every_arg};
use ess_wgpu::cache::PoolSize;
use ess_wgpu::config::Dtype;
use ess_wgpu::decode::DecodeReport;
use ess_wgpu::engine::{EngineOptions, MemoryPlan, Mode, ModelRef};
use ess_wgpu::model::generate::{Collect, Generation, PrefillSpec, generate, identical, in_mode};
use ess_wgpu::model::init::{preset, random_weights};
use ess_wgpu::reference::model::ModelWeights;
use ess_wgpu::{Error, GpuContext, Result};
use std::path::PathBuf;

/// Which model: a checkpoint, or a built-in random one (`generate`, and `decode`, `sweep`,
/// `figures`, `trace record`, whose steps then run the model over hashed contexts).
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// A checkpoint folder in the Hugging Face layout.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Without --model: a built-in random model (tiny, small, v32-layers; generate's default:
    /// tiny), its weights drawn with --seed.
    #[arg(long)]
    pub builtin: Option<String>,
    /// Change a field of the built-in model's config.json, e.g. n_routed_experts=32
    /// (repeatable). v32-layers' 256 experts are 45 GB a MoE layer with bf16 weights (held as
    /// f32) and 11 GB with --builtin-dtype fp8 (bound in pieces of a storage binding, as is the
    /// 129,280-token vocabulary): its layers need a large --device-budget.
    #[arg(long = "builtin-set", value_name = "FIELD=VALUE")]
    pub builtin_set: Vec<String>,
    /// How the built-in model's weights are stored: bf16 (held as f32 on the GPU), or fp8 (the
    /// linear weights as e4m3 with 128 × 128 block scales, as DeepSeek ships them, kept FP8 on
    /// the GPU: a quarter of the bytes).
    #[arg(long, default_value = "bf16")]
    pub builtin_dtype: String,
    /// Layers to load and run, e.g. 0..2 (default: all).
    #[arg(long)]
    pub layers: Option<String>,
}

/// The model asked for, its config read and checked but no weight read or drawn yet: what a
/// run's options can be checked against first (a wrong option costs no wait for the weights).
pub enum ModelSpec {
    Checkpoint(ess_wgpu::model::Checkpoint),
    Builtin {
        cfg: ess_wgpu::model::HfConfig,
        layers: std::ops::Range<u32>,
        seed: u64,
        dtype: ess_wgpu::model::init::WeightDtype,
        what: String,
    },
}

impl ModelSpec {
    /// The model's config and how many of its layers run.
    pub fn config(&self) -> (&ess_wgpu::model::HfConfig, u32) {
        match self {
            ModelSpec::Checkpoint(ck) => (&ck.config, ck.layers.len() as u32),
            ModelSpec::Builtin { cfg, layers, .. } => (cfg, layers.len() as u32),
        }
    }

    /// The weights (read from the checkpoint, or drawn) and how to describe them.
    pub fn load(self) -> Result<(ModelWeights, String)> {
        match self {
            ModelSpec::Checkpoint(ck) => {
                Ok((ModelWeights::load(&ck)?, ck.dir.display().to_string()))
            }
            ModelSpec::Builtin {
                cfg,
                layers,
                seed,
                dtype,
                what,
            } => Ok((random_weights(&cfg, layers, seed, dtype)?, what)),
        }
    }
}

impl ModelArgs {
    /// The weights asked for (--model, else --builtin, else the built-in `default`) and how to
    /// describe them; `None` where none is asked for and there is no default.
    pub fn weights(
        &self,
        seed: u64,
        default: Option<&str>,
    ) -> Result<Option<(ModelWeights, String)>> {
        self.spec(seed, default)?.map(ModelSpec::load).transpose()
    }

    /// What [`Self::weights`] would load, before loading it.
    pub fn spec(&self, seed: u64, default: Option<&str>) -> Result<Option<ModelSpec>> {
        let layers = self.layers.as_deref().map(layer_range).transpose()?;
        if let Some(dir) = &self.model {
            let ck = ess_wgpu::model::Checkpoint::open(dir, layers)?;
            return Ok(Some(ModelSpec::Checkpoint(ck)));
        }
        let Some(name) = self.builtin.as_deref().or(default) else {
            let given = (!self.builtin_set.is_empty(), layers.is_some());
            return match given {
                (false, false) => Ok(None),
                _ => Err(Error::config(
                    "builtin-set / layers",
                    "without a model",
                    "--model DIR or --builtin NAME",
                )),
            };
        };
        let mut cfg = preset(name)?;
        for kv in &self.builtin_set {
            cfg = with_field(&cfg, kv)?;
        }
        let layers = layers.unwrap_or(0..cfg.num_hidden_layers);
        if layers.end > cfg.num_hidden_layers {
            return Err(Error::config(
                "layers",
                format!("{}..{}", layers.start, layers.end),
                format!("within 0..{}", cfg.num_hidden_layers),
            ));
        }
        let what = format!(
            "built-in random {name}{}, seed {seed}",
            match self.builtin_set.is_empty() {
                true => String::new(),
                false => format!(" ({})", self.builtin_set.join(", ")),
            },
        );
        let dtype = ess_wgpu::model::init::WeightDtype::parse(&self.builtin_dtype)?;
        let what = format!("{what}, {} weights", self.builtin_dtype);
        Ok(Some(ModelSpec::Builtin {
            cfg,
            layers,
            seed,
            dtype,
            what,
        }))
    }
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    run: GenArgs,
    /// Sequences generated together (sequence b > 0: a prompt of its own, one token shorter
    /// than the one before, drawn with --seed + b; at least one token). Default 4, or 1 with
    /// --dump.
    #[arg(long)]
    batch: Option<u32>,
    /// A hashed context of N tokens per sequence instead of a prompt: a real decode step over a
    /// context the model did not compute (long contexts; the tokens mean nothing).
    #[arg(long)]
    context: Option<u32>,
    /// Use the largest batch whose memory plan (weights included) fits --device-budget.
    #[arg(long)]
    largest_batch: bool,
    #[arg(long, value_enum, default_value_t = GenMode::Both)]
    mode: GenMode,
    /// Storage of the latent and indexer-key caches: fp8 (DeepSeek's: the latent's FP8 values
    /// and scales, k_pe as bf16), f16, or f32 (exactly what the reference caches).
    #[arg(long, default_value = "fp8")]
    cache_dtype: String,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    overlap: super::OverlapArgs,
    /// Timestamp every N-th step's stages, 1 ..= 1024K.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = time_every_arg)]
    time_every: u32,
    /// Throughput run: steps back to back, only the last tokens read (no logits compared).
    #[arg(long)]
    no_verify: bool,
    /// Write the generation's dump (a batch of one prompt): tokens, logits, and per layer each
    /// decode step's and prompt position's selections, the routed experts, and the latent and
    /// indexer keys as cached (read back from the resident cache or the host store). With
    /// both modes, their dumps must be equal bit for bit; the offload run's is written.
    #[arg(long, value_name = "FILE.safetensors")]
    dump: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum GenMode {
    Both,
    Resident,
    Offload,
}

/// Prompt tokens when none are asked for: long enough that the tiny model's top-64 selects and
/// its pools miss.
const DEFAULT_PROMPT_LEN: u32 = 200;

/// `cfg` with `FIELD=VALUE` set (a number or a word, as config.json spells it), checked.
pub(super) fn with_field(
    cfg: &ess_wgpu::model::HfConfig,
    kv: &str,
) -> Result<ess_wgpu::model::HfConfig> {
    let out: ess_wgpu::model::HfConfig =
        super::with_json_field(cfg, kv, "builtin-set", "config.json")?;
    out.validate()?;
    Ok(out)
}

pub fn run(mut a: GenerateArgs) -> Result<()> {
    if a.run.prompt.is_empty() && a.run.prompt_len.is_none() && a.context.is_none() {
        a.run.prompt_len = Some(DEFAULT_PROMPT_LEN);
    }
    let dtype = Dtype::parse("cache-dtype", &a.cache_dtype)?;
    let batch = a.batch.unwrap_or(if a.dump.is_some() { 1 } else { 4 });
    ess_wgpu::limits::in_range("batch", batch as u64, 1, ess_wgpu::limits::MAX_BATCH as u64)?;
    if a.dump.is_some() && (batch != 1 || a.context.is_some() || a.no_verify || a.largest_batch) {
        return Err(Error::config(
            "dump",
            "with --batch > 1, --context, --largest-batch or --no-verify",
            "a batch of one prompt, every step read back (--batch 1, a prompt)",
        ));
    }
    // the adapter first: its absence is reported before the weights are drawn or read
    let ctx = GpuContext::new()?;
    let spec = a
        .model
        .spec(a.run.seed, Some("tiny"))?
        .expect("a default model");
    let modes = match a.mode {
        GenMode::Both => vec![Mode::Resident, Mode::Offload],
        GenMode::Resident => vec![Mode::Resident],
        GenMode::Offload => vec![Mode::Offload],
    };
    // the run's options (all but the weights) from the config alone
    let options = |cfg: &ess_wgpu::model::HfConfig, layers: u32| -> Result<EngineOptions> {
        let run = ess_wgpu::model::generate::run_config_of(cfg, layers, batch, dtype, dtype);
        Ok(EngineOptions {
            steps: a.run.new_tokens.saturating_sub(1).max(1),
            // a prompt may be shorter than the top-k: the smallest pool then (the whole context)
            pool: match a.cache.pool() {
                PoolSize::Ratio(r) => PoolSize::RatioOrSmallest(r),
                slots => slots,
            },
            transfer: a.cache.transfer.into(),
            warmup_windows: a.cache.warmup,
            seed: a.run.seed,
            time_every: a.time_every,
            transfer_overlap: a.overlap.transfer_overlap((layers, batch))?,
            ..EngineOptions::new(run, vec![a.context.unwrap_or(1); batch as usize])
        })
    };
    // checked before the weights are read or drawn (a v32 layer takes half a minute): the
    // prompt, the options, and the offload pool of the longest sequence (the context, or the
    // prompt)
    let (cfg, layers) = spec.config();
    let first = make_prompt(&a.run, cfg.vocab_size)?;
    {
        let mut pre = options(cfg, layers)?;
        let longest = a.context.unwrap_or(first.len() as u32);
        pre.contexts = vec![longest; batch as usize];
        pre.validate()?;
        if modes.contains(&Mode::Offload) {
            pre.pool.slots(pre.capacity(), pre.run.model.topk)?;
        }
    }
    let (w, what) = spec.load()?;
    let w: &'static ModelWeights = Box::leak(Box::new(w));
    let vocab = w.config.vocab_size;
    let budget = a.cache.budget();
    let mut opts = EngineOptions {
        model: Some(ModelRef {
            weights: w,
            what: what.clone(),
        }),
        ..options(&w.config, w.layers.len() as u32)?
    };
    if a.largest_batch {
        if a.context.is_none() {
            return Err(Error::config(
                "largest-batch",
                "prompts",
                "with --context N (every sequence the same length)",
            ));
        }
        // the plan counts the model's weights and activations at each batch, and keeps each
        // staging pool within one storage binding
        let fits = modes
            .iter()
            .map(|&m| MemoryPlan::largest_batch(&in_mode(&opts, m), budget, ctx.max_binding()))
            .collect::<Result<Vec<_>>>()?;
        let b = fits.into_iter().min().unwrap_or(0);
        if b == 0 {
            return Err(Error::config(
                "device-budget",
                budget,
                "room for the weights and one sequence",
            ));
        }
        opts.run.batch = b;
        opts.contexts = vec![opts.contexts[0]; b as usize];
    }
    let b = opts.run.batch;
    let spec = match a.context {
        Some(_) => PrefillSpec::Synthetic { token: first[0] },
        None => {
            // sequence i > 0: its own prompt, i tokens shorter than the first (one at least)
            let len = first.len() as u32;
            let other = |i: u32| {
                let g = GenArgs {
                    prompt: Vec::new(),
                    prompt_len: Some(len.saturating_sub(i).max(1)),
                    seed: a.run.seed + i as u64,
                    ..a.run.clone()
                };
                make_prompt(&g, vocab)
            };
            let mut prompts = vec![first];
            for i in 1..b {
                prompts.push(other(i)?);
            }
            PrefillSpec::Prompts(prompts)
        }
    };
    if let PrefillSpec::Prompts(p) = &spec {
        opts.contexts = p.iter().map(|p| p.len() as u32).collect();
    }
    for &m in &modes {
        in_mode(&opts, m).validate()?;
    }
    let verify = !a.no_verify;
    let collect = match (&a.dump, verify) {
        (Some(_), _) => Collect::Dump,
        (None, true) => Collect::Logits,
        (None, false) => Collect::Tokens,
    };
    let gens: Vec<Generation> = modes
        .iter()
        .map(|&m| {
            generate(
                &ctx,
                w,
                &in_mode(&opts, m),
                &spec,
                a.run.new_tokens,
                budget,
                collect,
            )
        })
        .collect::<Result<_>>()?;
    let same = (gens.len() == 2 && verify).then(|| identical(&gens[0], &gens[1]));
    let c = &w.config;
    let report = DecodeReport {
        adapter: ctx.report.clone(),
        config: format!(
            "{what}: hidden {}, layers {}..{} of {}, {} heads, index {} × {} top-{}, {} experts \
             ({} active, {} shared); {} caches; {} new tokens a sequence{}",
            c.hidden_size,
            w.layers.start,
            w.layers.end,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.index_n_heads,
            c.index_head_dim,
            c.index_topk,
            c.n_routed_experts,
            c.num_experts_per_tok,
            c.n_shared_experts,
            dtype,
            a.run.new_tokens,
            match a.context {
                Some(n) => format!(", hashed contexts of {n}"),
                None => String::new(),
            }
        ),
        budget,
        modes: gens.iter().map(|g| g.report.clone()).collect(),
        // `decode`'s digests are not taken: the verdict is on the tokens and logits
        identical: None,
        profile: Vec::new(),
    };
    let prompts = match &spec {
        PrefillSpec::Prompts(p) => p.clone(),
        PrefillSpec::Synthetic { .. } => Vec::new(),
    };
    let report = GenerateReport {
        run: report,
        prompts,
        tokens: gens[0].tokens.clone(),
        identical: same,
    };
    print_report(&report, a.json)?;
    if let (Some(path), Some(d)) = (&a.dump, gens.last().and_then(|g| g.dump.as_ref())) {
        d.write(path)?;
        if !a.json {
            say!("wrote the dump {}", path.display())?;
        }
    }
    if same == Some(false) {
        return Err(Error::Gpu("resident and offload generations differ".into()));
    }
    Ok(())
}

/// `decode`'s report of each mode, the tokens, and the verdict on tokens and logits.
#[derive(serde::Serialize)]
struct GenerateReport {
    #[serde(flatten)]
    run: DecodeReport,
    prompts: Vec<Vec<u32>>,
    /// Each sequence's new tokens (the first mode's).
    tokens: Vec<Vec<u32>>,
    /// Both modes: the same tokens and logits identical bit for bit.
    identical: Option<bool>,
}

impl std::fmt::Display for GenerateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.run)?;
        writeln!(f)?;
        for (i, t) in self.tokens.iter().enumerate().take(8) {
            match self.prompts.get(i) {
                Some(p) if p.len() > 8 => writeln!(
                    f,
                    "sequence {i}: prompt of {} tokens {:?} … {:?} → {t:?}",
                    p.len(),
                    &p[..4],
                    &p[p.len() - 2..]
                )?,
                Some(p) => writeln!(f, "sequence {i}: prompt {p:?} → {t:?}")?,
                None => writeln!(f, "sequence {i}: → {t:?}")?,
            }
        }
        if self.tokens.len() > 8 {
            writeln!(f, "… {} sequences in all", self.tokens.len())?;
        }
        match self.identical {
            Some(true) => writeln!(
                f,
                "\nverdict: resident and offload generated the same tokens, their logits identical bit for bit"
            ),
            Some(false) => writeln!(f, "\nverdict: MODES DISAGREE: the generations differ"),
            None => writeln!(f, "\nverdict: not compared (one mode, or --no-verify)"),
        }
    }
}
