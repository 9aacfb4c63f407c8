//! `ess-wgpu model init | info`: random checkpoints in the Hugging Face layout, and what a
//! checkpoint folder holds (checked).

use super::out;
use clap::Subcommand;
use ess_wgpu::Result;
use ess_wgpu::model::init::{WeightDtype, preset, write_random};
use ess_wgpu::model::{Checkpoint, checkpoint::expected_tensors};
use std::path::PathBuf;

/// What a generation is asked: the prompt and how many tokens to add.
#[derive(clap::Args, Clone)]
pub struct GenArgs {
    /// Prompt token ids (comma list; default: for `generate` 200 tokens drawn with --seed, for
    /// the `model` commands 1,2,3).
    #[arg(long, value_delimiter = ',')]
    pub prompt: Vec<u32>,
    /// Or a prompt of N tokens drawn with --seed.
    #[arg(long)]
    pub prompt_len: Option<u32>,
    #[arg(long, default_value_t = 8)]
    pub new_tokens: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

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
    /// Generate greedily with the plain-Rust reference forward (CPU, f64; slow beyond tiny
    /// models) and optionally write the dump the GPU's generate will be compared with.
    Reference {
        /// The checkpoint folder.
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        run: GenArgs,
        /// Layers to run, e.g. 0..4 (default: all).
        #[arg(long)]
        layers: Option<String>,
        /// Write the dump (tokens, logits, per-layer selections, experts, latent, index keys).
        #[arg(long)]
        dump: Option<PathBuf>,
        /// The caches hold their values as the engine's of this dtype do (fp8: k_pe as bf16;
        /// f16: every value rounded; f32: as computed): fp8 is `generate`'s default.
        #[arg(long, default_value = "fp8")]
        cache_dtype: String,
    },
    /// Generate greedily on the GPU (prefill, then decode steps over its caches; naive kernels:
    /// tiny models) and with the CPU reference, and compare the tokens. Without --model: a random tiny
    /// checkpoint (no files needed).
    Generate {
        /// The checkpoint folder (default: a random `tiny` one, written to a temporary folder).
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        run: GenArgs,
    },
    /// Compare two dumps (`model reference --dump`, `generate --dump`, or another
    /// implementation's): the tokens, each logit row, each layer's selections (in order and as
    /// sets), experts, latent and indexer keys, over the rows both ran on the same tokens.
    /// Fails where the tokens differ; a few rows whose selections differ are reported (f32
    /// against f64 may order two positions whose scores are within rounding either way).
    Compare {
        /// The dump under test.
        got: PathBuf,
        /// The dump it is held to.
        want: PathBuf,
        #[arg(long)]
        json: bool,
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
pub fn layer_range(s: &str) -> Result<std::ops::Range<u32>> {
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
        ModelCommand::Reference {
            model,
            run,
            layers,
            dump,
            cache_dtype,
        } => reference(model, run, layers, dump, &cache_dtype),
        ModelCommand::Generate { model, run } => generate_both(model, run),
        ModelCommand::Compare { got, want, json } => {
            use ess_wgpu::model::dump::Dump;
            let c = Dump::read(&got)?.compare(&Dump::read(&want)?)?;
            super::print_report(&c, json)?;
            if !c.same_tokens {
                return Err(ess_wgpu::Error::Gpu(format!(
                    "{} and {} generated different tokens",
                    got.display(),
                    want.display()
                )));
            }
            if !c.discrete_equal() && !json {
                say!(
                    "note: some selections or experts differ (near-ties between f32 and f64 \
                     scores flip a row's last selected position; many rows differing is a bug)"
                )?;
            }
            Ok(())
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

fn reference(
    model: PathBuf,
    run: GenArgs,
    layers: Option<String>,
    dump: Option<PathBuf>,
    cache_dtype: &str,
) -> Result<()> {
    let new_tokens = run.new_tokens;
    use ess_wgpu::model::dump::Dump;
    use ess_wgpu::reference::model::{ModelWeights, generate_stored};
    let stored = ess_wgpu::config::Dtype::parse("cache-dtype", cache_dtype)?;
    let layers = layers.as_deref().map(layer_range).transpose()?;
    ess_wgpu::limits::in_range("new-tokens", new_tokens as u64, 1, 1 << 20)?;
    let ck = Checkpoint::open(&model, layers)?;
    let prompt = make_prompt(&run, ck.config.vocab_size)?;
    let w = ModelWeights::load(&ck)?;
    let (tokens, outs, cache) = generate_stored(&w, &prompt, new_tokens as usize, stored);
    say!(
        "prompt {prompt:?}\ngenerated {tokens:?} (CPU reference, layers {}..{}, {stored} caches)",
        w.layers.start,
        w.layers.end
    )?;
    if let Some(path) = dump {
        Dump::from_reference(&w, &prompt, &tokens, &outs, &cache).write(&path)?;
        say!("wrote {}", path.display())?;
    }
    Ok(())
}

/// The prompt from `--prompt` or `--prompt-len` (drawn with `seed`), its tokens checked.
pub fn make_prompt(a: &GenArgs, vocab: u32) -> Result<Vec<u32>> {
    let prompt = match (a.prompt.is_empty(), a.prompt_len) {
        (false, None) => a.prompt.clone(),
        (true, Some(n)) if n > 0 => {
            let mut rng = ess_wgpu::workload::Rng::new(a.seed);
            (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
        }
        (true, None) => vec![1, 2, 3],
        _ => {
            return Err(ess_wgpu::Error::config(
                "prompt",
                "both --prompt and --prompt-len",
                "--prompt 1,2,3 or --prompt-len N (N ≥ 1)",
            ));
        }
    };
    if let Some(&t) = prompt.iter().find(|&&t| t >= vocab) {
        return Err(ess_wgpu::Error::config(
            "prompt token",
            t,
            format!("0 ..= {} (the vocabulary)", vocab - 1),
        ));
    }
    Ok(prompt)
}

fn generate_both(model: Option<PathBuf>, run: GenArgs) -> Result<()> {
    let (new_tokens, seed) = (run.new_tokens, run.seed);
    use ess_wgpu::reference::model::{ModelWeights, generate};
    ess_wgpu::limits::in_range("new-tokens", new_tokens as u64, 1, 4096)?;
    let (dir, temporary) = match model {
        Some(d) => (d, false),
        None => {
            let d = std::env::temp_dir().join(format!("ess-wgpu-tiny-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            write_random(&d, &preset("tiny")?, seed, WeightDtype::Bf16)?;
            (d, true)
        }
    };
    let compare = || -> Result<()> {
        let ck = Checkpoint::open(&dir, None)?;
        let prompt = make_prompt(&run, ck.config.vocab_size)?;
        let w = ModelWeights::load(&ck)?;
        let ctx = ess_wgpu::GpuContext::new()?;
        let gpu =
            ess_wgpu::model::gpu::generate_by_prefill(&ctx, &w, &prompt, new_tokens as usize)?;
        let (cpu, _, _) = generate(&w, &prompt, new_tokens as usize);
        say!(
            "model    {} ({} layers)",
            dir.display(),
            ck.config.num_hidden_layers
        )?;
        say!("prompt   {prompt:?}")?;
        say!("GPU      {gpu:?}   (prefill, then decode steps over the GPU caches)")?;
        say!("CPU      {cpu:?}   (reference::model, f64)")?;
        if gpu != cpu {
            return Err(ess_wgpu::Error::Gpu(
                "the GPU's tokens differ from the reference's".into(),
            ));
        }
        say!("verdict  identical tokens")
    };
    let result = compare();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
