//! Checkpoints in the Hugging Face layout (issue 15, first part): random checkpoints written by
//! `model::init` open and check; their values survive each storage type; every kind of bad
//! checkpoint is an error naming the tensor or field, what was found and what was expected.

use ess_wgpu::model::checkpoint::{FP8_BLOCK, expected_tensors, scale_name};
use ess_wgpu::model::init::{WeightDtype, preset, write_random};
use ess_wgpu::model::{Checkpoint, HfConfig};
use safetensors::tensor::{SafeTensors, TensorView};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ess-model-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny(name: &str, dtype: WeightDtype) -> (PathBuf, HfConfig) {
    let dir = scratch(name);
    let cfg = preset("tiny").unwrap();
    write_random(&dir, &cfg, 7, dtype).unwrap();
    (dir, cfg)
}

/// Every storage type opens and checks, and holds the same random values: f32 exactly, bf16 and
/// f16 rounded to nearest (half an ulp; f16's subnormal quantum near zero), FP8 within its
/// block's quantum (e4m3 keeps 3 mantissa bits: |error| ≤ 2^-4 of
/// the block's largest magnitude).
#[test]
fn random_checkpoints_open_and_hold_their_values() {
    let (d32, cfg) = tiny("f32", WeightDtype::F32);
    let f32_ck = Checkpoint::open(&d32, None).unwrap();
    let names: Vec<String> = expected_tensors(&cfg, 0..cfg.num_hidden_layers)
        .into_iter()
        .map(|t| t.name)
        .collect();
    // (relative half-ulp, absolute quantum below the normal range: f16's subnormals are 2^-24)
    for (tag, dtype, rel, abs) in [
        ("bf16", WeightDtype::Bf16, 2f32.powi(-8), 0.0),
        ("f16", WeightDtype::F16, 2f32.powi(-11), 2f32.powi(-25)),
    ] {
        let (dir, _) = tiny(tag, dtype);
        let ck = Checkpoint::open(&dir, None).unwrap();
        for n in &names {
            let (a, b) = (f32_ck.f32(n).unwrap(), ck.f32(n).unwrap());
            let ok = a
                .iter()
                .zip(&b)
                .all(|(x, y)| (x - y).abs() <= rel * x.abs() + abs);
            assert!(ok, "{tag} {n}");
        }
    }
    let (d8, _) = tiny("fp8", WeightDtype::Fp8);
    let ck = Checkpoint::open(&d8, None).unwrap();
    let linear = "model.layers.2.mlp.experts.3.down_proj.weight";
    assert_eq!(
        ck.info(linear).unwrap().1,
        safetensors::Dtype::F8_E4M3,
        "linear weights are FP8"
    );
    assert!(ck.info(&scale_name(linear)).is_some());
    for t in expected_tensors(&cfg, 0..cfg.num_hidden_layers) {
        let (a, b) = (f32_ck.f32(&t.name).unwrap(), ck.f32(&t.name).unwrap());
        if !t.linear {
            assert!(
                a.iter()
                    .zip(&b)
                    .all(|(x, y)| (x - y).abs() <= 2f32.powi(-8) * x.abs())
            );
            continue;
        }
        let cols = t.shape[1];
        let block_max = |i: usize| {
            let (r0, c0) = (
                i / cols / FP8_BLOCK * FP8_BLOCK,
                i % cols / FP8_BLOCK * FP8_BLOCK,
            );
            (r0..(r0 + FP8_BLOCK).min(t.shape[0]))
                .flat_map(|r| (c0..(c0 + FP8_BLOCK).min(cols)).map(move |c| r * cols + c))
                .map(|j| a[j].abs())
                .fold(0f32, f32::max)
        };
        for (i, (x, y)) in a.iter().zip(&b).enumerate().step_by(97) {
            assert!(
                (x - y).abs() <= block_max(i) / 16.0,
                "{} [{i}]: {x} vs {y}",
                t.name
            );
        }
    }
    // a subset of layers checks only what it needs
    let sub = Checkpoint::open(&d8, Some(1..2)).unwrap();
    assert_eq!(sub.layers, 1..2);
    for d in [d32, d8] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Rewrite `shard` of `dir` with `edit` applied to its tensors (name, dtype, shape, bytes).
fn rewrite(
    dir: &Path,
    shard: &str,
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join(shard);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut ts: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut ts);
    let views: Vec<(String, TensorView<'_>)> = ts
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
}

/// Each kind of bad checkpoint is refused with the tensor or field named, what was found and
/// what was expected.
#[test]
fn bad_checkpoints_name_the_tensor_or_field() {
    let layer = "model-layer-001-00.safetensors";
    let wk = "model.layers.1.self_attn.indexer.wk.weight";
    type Edit = Box<dyn FnOnce(&Path)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "missing",
            Box::new(move |d| rewrite(d, layer, |ts| ts.retain(|t| t.0 != wk))),
            vec![wk, "missing", "[128, 256]"],
        ),
        (
            "misshapen",
            Box::new(move |d| {
                rewrite(d, layer, |ts| {
                    let t = ts.iter_mut().find(|t| t.0 == wk).unwrap();
                    t.2 = vec![256, 128];
                })
            }),
            vec![wk, "shape [256, 128]", "shape [128, 256]"],
        ),
        (
            "mistyped",
            Box::new(move |d| {
                rewrite(d, layer, |ts| {
                    let t = ts.iter_mut().find(|t| t.0 == wk).unwrap();
                    t.1 = safetensors::Dtype::I16;
                })
            }),
            vec![wk, "dtype I16", "BF16, F16, F32, or F8_E4M3"],
        ),
        (
            "extra",
            Box::new(move |d| {
                rewrite(d, layer, |ts| {
                    ts.push((
                        "model.layers.1.self_attn.mystery.weight".into(),
                        safetensors::Dtype::F32,
                        vec![2],
                        vec![0; 8],
                    ))
                })
            }),
            vec!["model.layers.1.self_attn.mystery.weight", "extra tensor"],
        ),
        (
            "config",
            Box::new(|d| {
                let p = d.join("config.json");
                let t = std::fs::read_to_string(&p).unwrap();
                std::fs::write(&p, t.replace("\"n_group\": 2", "\"n_group\": 3")).unwrap();
            }),
            vec!["n_group", "3", "a divisor of n_routed_experts"],
        ),
        (
            "not-json",
            Box::new(|d| std::fs::write(d.join("config.json"), "{ hidden_size: ").unwrap()),
            vec!["config.json", "line 1"],
        ),
        (
            "truncated",
            Box::new(move |d| {
                let p = d.join(layer);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
            vec![layer],
        ),
    ];
    for (name, edit, needles) in cases {
        let (dir, _) = tiny(&format!("bad-{name}"), WeightDtype::Bf16);
        edit(&dir);
        let e = match Checkpoint::open(&dir, None) {
            Ok(_) => panic!("{name}: a bad checkpoint opened"),
            Err(e) => e.to_string(),
        };
        for n in needles {
            assert!(e.contains(n), "{name}: {e:?} does not name {n:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    // FP8 without its scales
    let (dir, _) = tiny("bad-scales", WeightDtype::Fp8);
    rewrite(&dir, layer, |ts| ts.retain(|t| t.0 != scale_name(wk)));
    let e = Checkpoint::open(&dir, None).err().unwrap().to_string();
    assert!(e.contains(&scale_name(wk)) && e.contains("missing"), "{e}");
    // layers past the model
    let e = Checkpoint::open(&dir, Some(2..9))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layers") && e.contains("0..3"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let e = Checkpoint::open(Path::new("/nonexistent/ckpt"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent/ckpt/config.json"), "{e}");
}

/// The built-in configs are valid and round-trip through config.json.
#[test]
fn presets_round_trip_through_config_json() {
    for name in ["tiny", "small", "v32-layers"] {
        let c = preset(name).unwrap();
        let back = HfConfig::parse(&serde_json::to_string(&c).unwrap(), name).unwrap();
        assert_eq!(back, c);
    }
    let v32 = preset("v32-layers").unwrap();
    assert_eq!(
        (v32.hidden_size, v32.num_attention_heads, v32.index_topk),
        (7168, 128, 2048)
    );
    assert_eq!(
        (
            v32.n_routed_experts,
            v32.num_experts_per_tok,
            v32.moe_intermediate_size
        ),
        (256, 8, 2048)
    );
}

/// The CPU reference forward on a tiny random checkpoint: a decode step's logits equal a fresh
/// run over the same prefix bit for bit; with `index_topk ≥ T` the sparse attention equals dense
/// attention (the same rows, summed in another order: within 1e-4); with a small `index_topk`
/// each layer selects min(k, t + 1) positions; MoE layers route to `num_experts_per_tok`
/// experts; activations stay O(1) (bf16 and FP8 weights).
#[test]
fn cpu_forward_decodes_as_it_prefills() {
    use ess_wgpu::reference::model::{Attention, SeqCache, forward_token, generate};
    for (tag, dtype, topk) in [
        ("fwd-bf16", WeightDtype::Bf16, 64u32),
        ("fwd-fp8", WeightDtype::Fp8, 64),
        ("fwd-k4", WeightDtype::Bf16, 4),
    ] {
        let (dir, cfg, w) = tiny_weights(tag, dtype, topk, 11);
        let prompt = [3u32, 141, 59, 26, 500];
        let (tokens, outs, _) = generate(&w, &prompt, 7);
        assert_eq!(outs.len(), 11);
        assert!(tokens.iter().all(|&t| t < cfg.vocab_size));
        let seq: Vec<u32> = prompt
            .iter()
            .copied()
            .chain(tokens.iter().copied())
            .collect();
        for (t, o) in outs.iter().enumerate() {
            assert!(
                o.logits.iter().all(|x| x.is_finite() && x.abs() < 1e3),
                "{tag} step {t}"
            );
            for (l, sel) in o.topk.iter().enumerate() {
                assert_eq!(
                    sel.len(),
                    (topk as usize).min(t + 1),
                    "{tag} step {t} layer {l}"
                );
            }
            assert_eq!(o.experts[0].len(), 0, "layer 0 is dense");
            assert_eq!(o.experts[1].len(), cfg.num_experts_per_tok as usize);
        }
        // a fresh run over the prefix gives the same logits
        for t in [0, 4, 9] {
            let mut cache = SeqCache::default();
            let mut last = None;
            for &tok in &seq[..=t] {
                last = Some(forward_token(&w, &mut cache, tok, Attention::Sparse));
            }
            assert_eq!(
                last.unwrap().logits,
                outs[t].logits,
                "{tag}: step {t} vs a fresh run"
            );
        }
        // dense attention over the same positions
        let mut cache = SeqCache::default();
        let mut worst = 0f32;
        for (t, &tok) in seq.iter().enumerate().take(10) {
            let d = forward_token(&w, &mut cache, tok, Attention::Dense);
            let diff = d
                .logits
                .iter()
                .zip(&outs[t].logits)
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0f32, f32::max);
            if topk >= 11 {
                assert!(diff <= 1e-4, "{tag}: sparse vs dense at step {t}: {diff}");
            }
            worst = worst.max(diff);
        }
        if topk < 11 {
            assert!(worst > 1e-4, "{tag}: a top-4 selection changed nothing");
        }
        eprintln!("{tag}: tokens {tokens:?}, sparse vs dense largest difference {worst:.1e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The dump (issue 15's format) of a CPU-reference generation: every tensor with its shape,
/// the logits of the prompt's last position in row 0, the selections −1 padded past
/// min(k, t + 1), the latent as cached; read back, it is the dump written.
#[test]
fn the_reference_dump_has_the_issues_format() {
    use ess_wgpu::model::dump::Dump;
    use ess_wgpu::reference::model::{ModelWeights, generate};
    let (dir, cfg) = tiny("dump", WeightDtype::Bf16);
    let w = ModelWeights::load(&Checkpoint::open(&dir, None).unwrap()).unwrap();
    let prompt = [7u32, 8, 9];
    let (tokens, outs, cache) = generate(&w, &prompt, 4);
    let path = dir.join("dump.safetensors");
    let dump = Dump::from_reference(&w, &prompt, &tokens, &outs, &cache);
    dump.write(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let shape = |n: &str| st.tensor(n).unwrap().shape().to_vec();
    let (k, v) = (cfg.index_topk as usize, cfg.vocab_size as usize);
    assert_eq!(shape("tokens"), [7]);
    assert_eq!(shape("prompt_len"), [1]);
    assert_eq!(shape("logits"), [4, v]);
    for l in 0..cfg.num_hidden_layers {
        assert_eq!(shape(&format!("layers.{l}.topk")), [3, k]);
        assert_eq!(shape(&format!("layers.{l}.prefill_topk")), [3, k]);
        assert_eq!(shape(&format!("layers.{l}.latent")), [6, 128]);
        assert_eq!(shape(&format!("layers.{l}.index_k")), [6, 128]);
        let has_experts = st.tensor(&format!("layers.{l}.experts")).is_ok();
        assert_eq!(has_experts, cfg.is_moe(l));
    }
    let logits: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("logits").unwrap().data());
    assert_eq!(&logits[..v], &outs[2].logits[..]);
    let pre: Vec<i32> =
        bytemuck::pod_collect_to_vec(st.tensor("layers.1.prefill_topk").unwrap().data());
    // prompt position 1 selected 2 positions, the rest −1
    assert!(pre[k..k + 2].iter().all(|&x| x == 0 || x == 1));
    assert!(pre[k + 2..2 * k].iter().all(|&x| x == -1));
    let lat: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("layers.2.latent").unwrap().data());
    assert_eq!(&lat[..128], &cache.latent[2][0][..]);
    let toks: Vec<i64> = bytemuck::pod_collect_to_vec(st.tensor("tokens").unwrap().data());
    let want: Vec<i64> = prompt.iter().chain(&tokens).map(|&t| t as i64).collect();
    assert_eq!(toks, want);
    assert!(Dump::read(&path).unwrap().same_bits(&dump));
    let _ = std::fs::remove_dir_all(&dir);
}

/// How far a cached latent or indexer-key row of the GPU may be from the reference's, as a
/// share of the row's largest value: both are act_quant's e4m3 values, equal unless the f32
/// input lands on the other side of a rounding boundary than the f64 reference's, which moves
/// one value by one e4m3 step (at most 2^-3 of the row's largest). Measured on lavapipe: 0 in
/// this test; 7e-4 and 1.1e-2 in `ess-wgpu model compare` of a 40-token prompt.
const CACHED_TOL: f32 = 0.125;

/// `ess-wgpu generate --dump` (a batch of one through the engine) against `model reference
/// --dump` on a tiny random checkpoint, in both modes and with caches of every dtype (the
/// reference's caches holding what the engine's do: `reference::model::stored_value`): the
/// same tokens, every prompt position's and decode step's selections and every token's experts
/// equal, the cached latent and indexer keys within `CACHED_TOL`, the logits within `ATTN_TOL`;
/// resident and offload dumps equal bit for bit, and a dump reads back as written.
#[test]
fn the_engine_dump_is_the_references() {
    use ess_wgpu::config::Dtype;
    use ess_wgpu::model::dump::Dump;
    use ess_wgpu::model::generate::{Collect, PrefillSpec, identical};
    use ess_wgpu::reference::model::generate_stored;
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    let (dir, cfg, w) = tiny_weights("engine-dump", WeightDtype::Bf16, 6, 31);
    let w: &'static _ = Box::leak(Box::new(w));
    let prompt: Vec<u32> = (0..17u32).map(|i| (i * 71 + 5) % cfg.vocab_size).collect();
    let n = 6;
    let spec = PrefillSpec::Prompts(vec![prompt.clone()]);
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Fp8] {
        let (tokens, outs, cache) = generate_stored(w, &prompt, n as usize, dtype);
        let want = Dump::from_reference(w, &prompt, &tokens, &outs, &cache);
        let base = generation_options(w, 1, dtype, 7);
        let (res, off) = both_modes(&ctx, w, &base, &spec, n, Collect::Dump);
        assert!(
            identical(&res, &off),
            "{dtype}: resident and offload dumps differ"
        );
        let got = off.dump.expect("a dump was asked for");
        let path = dir.join(format!("gpu-{dtype}.safetensors"));
        got.write(&path).unwrap();
        let read = Dump::read(&path).unwrap();
        assert!(
            read.same_bits(&got),
            "{dtype}: the dump reads back as written"
        );
        let c = read.compare(&want).unwrap();
        eprintln!("{dtype} caches, the GPU's dump against the reference's:\n{c}");
        assert!(c.discrete_equal(), "{dtype}: {c}");
        assert_eq!(c.logit_rows, n as usize);
        assert!(c.logits <= ATTN_TOL, "{dtype}: {c}");
        for l in &c.layers {
            assert!(
                l.latent <= CACHED_TOL && l.index_k <= CACHED_TOL,
                "{dtype}: {c}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A random tiny checkpoint (top-k `topk`, weights stored as `dtype`, values from `seed`),
/// loaded for the reference.
fn tiny_weights(
    tag: &str,
    dtype: WeightDtype,
    topk: u32,
    seed: u64,
) -> (PathBuf, HfConfig, ess_wgpu::reference::model::ModelWeights) {
    let dir = scratch(tag);
    let mut cfg = preset("tiny").unwrap();
    cfg.index_topk = topk;
    write_random(&dir, &cfg, seed, dtype).unwrap();
    let ck = Checkpoint::open(&dir, None).unwrap();
    (
        dir,
        cfg,
        ess_wgpu::reference::model::ModelWeights::load(&ck).unwrap(),
    )
}

/// The reference's output at every position of `prompt`.
fn reference_run(
    w: &ess_wgpu::reference::model::ModelWeights,
    prompt: &[u32],
) -> Vec<ess_wgpu::reference::model::TokenOut> {
    use ess_wgpu::reference::model::{Attention, SeqCache, forward_token};
    let mut cache = SeqCache::default();
    prompt
        .iter()
        .map(|&t| forward_token(w, &mut cache, t, Attention::Sparse))
        .collect()
}

/// The largest |got − want| of a row as a share of the row's largest |want|.
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// How far layer 0's attention on the GPU may be from the reference's, as a share of the row's
/// largest value. f32 sums against f64 give about 1e-6 (lavapipe: 4.6e-7 … 9.7e-7); the bound
/// also admits one latent value whose f32 lands on the other side of an e4m3 rounding boundary
/// than the f64 reference's (a step of 2^-4 of that value, spread over the heads' softmax).
const ATTN_TOL: f32 = 1e-3;

/// Layer 0's lightning indexer and sparse MLA on the GPU from the checkpoint's weights
/// (`model::gpu`: the naive f32 linear, norms, NeoX RoPE, Hadamard, the FP8 round trip, the
/// indexer over f32 keys, the top-k) select, at every prompt position, exactly the positions
/// `reference::model` does,
/// and its attention over them (absorbed MLA, the latent through act_quant, the version-1 sparse
/// MLA) is the reference's within `ATTN_TOL`: bf16 and FP8 weights, top-k 4 and 64.
#[test]
fn the_gpu_layer_follows_the_reference() {
    use ess_wgpu::reference::model::rms_norm;
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    for (tag, dtype, topk) in [
        ("gpu-idx-bf16", WeightDtype::Bf16, 4u32),
        ("gpu-idx-fp8", WeightDtype::Fp8, 4),
        ("gpu-idx-all", WeightDtype::Bf16, 64),
    ] {
        let (dir, cfg, w) = tiny_weights(tag, dtype, topk, 5);
        let prompt: Vec<u32> = (0..23).map(|i| (i * 97 + 13) % cfg.vocab_size).collect();
        let refs = reference_run(&w, &prompt);
        let want: Vec<Vec<i32>> = refs.iter().map(|o| o.topk[0].clone()).collect();
        let h = cfg.hidden_size as usize;
        let emb = w.tensor("model.embed_tokens.weight");
        let norm = w.tensor("model.layers.0.input_layernorm.weight");
        let x: Vec<f32> = prompt
            .iter()
            .flat_map(|&t| rms_norm(&emb[t as usize * h..][..h], norm, cfg.rms_norm_eps))
            .collect();
        let xb = ctx.upload("x", &x).unwrap();
        let m = ess_wgpu::model::gpu::ModelGpu::new(&ctx, &w).unwrap();
        let layer = ess_wgpu::model::gpu::PromptLayer::new(&m, 0, &xb, (23, 0)).unwrap();
        let cache = ess_wgpu::model::gpu::LayerCache::new(&ctx, &w, 23).unwrap();
        let got = layer.indexer_selections(&cache).unwrap();
        assert_eq!(got, want, "{tag}");
        // the attention over those selections against the reference's, row by row
        let attn: Vec<f32> = ctx.read(&layer.attention(&got, &cache).unwrap()).unwrap();
        let mut worst = 0f32;
        for (t, row) in attn.chunks(h).enumerate() {
            let want = &refs[t].attn[0];
            worst = worst.max(rel_diff(row, want));
        }
        assert!(
            worst <= ATTN_TOL,
            "{tag}: attention differs by {worst:e} of its largest value"
        );
        eprintln!(
            "{tag}: 23 positions, the GPU's selections equal the reference's; attention within \
             {worst:.1e} of its largest value"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Every layer's feed-forward block on the GPU (`model::gpu::ffn`: the dense SwiGLU of layer 0;
/// the router, the chosen experts and the shared expert of the MoE layers) against the
/// reference's, on the reference's own inputs at every position of a prompt, within `ATTN_TOL`
/// of each row's largest value (the same f32-against-f64 and FP8-boundary reasoning; the
/// largest seen is printed). bf16 and FP8 weights.
#[test]
fn the_gpu_feed_forward_follows_the_reference() {
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    for (tag, dtype) in [
        ("gpu-ffn-bf16", WeightDtype::Bf16),
        ("gpu-ffn-fp8", WeightDtype::Fp8),
    ] {
        let (dir, cfg, w) = tiny_weights(tag, dtype, 64, 9);
        let prompt: Vec<u32> = (0..11).map(|i| (i * 61 + 5) % cfg.vocab_size).collect();
        let refs = reference_run(&w, &prompt);
        let m = ess_wgpu::model::gpu::ModelGpu::new(&ctx, &w).unwrap();
        let mut worst = 0f32;
        for l in 0..cfg.num_hidden_layers as usize {
            let x: Vec<f32> = refs.iter().flat_map(|o| o.ffn_in[l].clone()).collect();
            let xb = ctx.upload("x", &x).unwrap();
            let y = ess_wgpu::model::gpu::ffn(&m, l as u32, &xb, 11).unwrap();
            let got: Vec<f32> = ctx.read(&y).unwrap();
            for (t, row) in got.chunks(cfg.hidden_size as usize).enumerate() {
                let want = &refs[t].ffn[l];
                worst = worst.max(rel_diff(row, want));
            }
        }
        assert!(
            worst <= ATTN_TOL,
            "{tag}: the feed-forward differs by {worst:e}"
        );
        eprintln!("{tag}: 3 layers × 11 positions within {worst:.1e} of each row's largest value");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The whole prefill forward on the GPU (`model::gpu::prefill_logits`: embedding, every layer's
/// indexer, sparse MLA and feed-forward with their residuals, the final norm and head) gives the
/// reference's logits at every prompt position within `ATTN_TOL` of each row's largest value,
/// and the same greedy token everywhere: bf16 and FP8 weights, top-k 4 and 64.
#[test]
fn the_gpu_prefill_gives_the_reference_logits() {
    use ess_wgpu::reference::model::argmax;
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    for (tag, dtype, topk) in [
        ("gpu-pre-bf16", WeightDtype::Bf16, 4u32),
        ("gpu-pre-fp8", WeightDtype::Fp8, 4),
        ("gpu-pre-all", WeightDtype::Bf16, 64),
    ] {
        let (dir, cfg, w) = tiny_weights(tag, dtype, topk, 13);
        let prompt: Vec<u32> = (0..17).map(|i| (i * 37 + 11) % cfg.vocab_size).collect();
        let refs = reference_run(&w, &prompt);
        let got = ess_wgpu::model::gpu::prefill_logits(&ctx, &w, &prompt).unwrap();
        let mut worst = 0f32;
        for (t, row) in got.chunks(cfg.vocab_size as usize).enumerate() {
            let want = &refs[t].logits;
            worst = worst.max(rel_diff(row, want));
            assert_eq!(argmax(row), argmax(want), "{tag}: greedy token at {t}");
        }
        assert!(worst <= ATTN_TOL, "{tag}: logits differ by {worst:e}");
        eprintln!("{tag}: 17 positions, logits within {worst:.1e} of each row's largest value");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Greedy generation on the GPU, decoding over its caches and by repeated prefill alike, gives
/// the CPU reference's tokens (bf16 and FP8 weights); a decode step's logits equal those of a
/// prefill over the same tokens within `ATTN_TOL`.
#[test]
fn gpu_generation_gives_the_reference_tokens() {
    use ess_wgpu::reference::model::generate;
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    for (tag, dtype) in [
        ("gpu-gen-bf16", WeightDtype::Bf16),
        ("gpu-gen-fp8", WeightDtype::Fp8),
    ] {
        let (dir, _, w) = tiny_weights(tag, dtype, 4, 17);
        let prompt = [5u32, 77, 301, 12, 9, 460];
        let (want, _, _) = generate(&w, &prompt, 6);
        let got = ess_wgpu::model::gpu::generate(&ctx, &w, &prompt, 6).unwrap();
        assert_eq!(got, want, "{tag}: decoding over the caches");
        let by_prefill = ess_wgpu::model::gpu::generate_by_prefill(&ctx, &w, &prompt, 6).unwrap();
        assert_eq!(by_prefill, want, "{tag}: by prefill");
        // prompt, then two decode steps, against one prefill over all of it
        let mut d = ess_wgpu::model::gpu::Decoder::new(&ctx, &w, 8).unwrap();
        d.forward(&prompt).unwrap();
        d.forward(&want[..1]).unwrap();
        let step = d.forward(&want[1..2]).unwrap();
        let all: Vec<u32> = prompt.iter().chain(&want[..2]).copied().collect();
        let pre = ess_wgpu::model::gpu::prefill_logits(&ctx, &w, &all).unwrap();
        let last = &pre[pre.len() - step.len()..];
        let diff = rel_diff(&step, last);
        assert!(diff <= ATTN_TOL, "{tag}: decode vs prefill {diff:e}");
        eprintln!(
            "{tag}: the GPU generated {got:?} (cached and by prefill), as the reference; decode vs prefill {diff:.1e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `n` tokens generated from `spec` in resident, then offload mode (the rest from `base`).
fn both_modes(
    ctx: &ess_wgpu::GpuContext,
    w: &'static ess_wgpu::reference::model::ModelWeights,
    base: &ess_wgpu::engine::EngineOptions,
    spec: &ess_wgpu::model::generate::PrefillSpec,
    n: u32,
    collect: ess_wgpu::model::generate::Collect,
) -> (
    ess_wgpu::model::generate::Generation,
    ess_wgpu::model::generate::Generation,
) {
    use ess_wgpu::engine::Mode;
    use ess_wgpu::model::generate::{generate, in_mode};
    let run = |mode| generate(ctx, w, &in_mode(base, mode), spec, n, 1 << 30, collect).unwrap();
    (run(Mode::Resident), run(Mode::Offload))
}

/// Engine options for generating with a model: `batch` sequences, caches in `dtype`, a pool of
/// `slots` rows a layer and sequence (the rest as `decode`'s defaults).
fn generation_options(
    w: &ess_wgpu::reference::model::ModelWeights,
    batch: u32,
    dtype: ess_wgpu::config::Dtype,
    slots: u32,
) -> ess_wgpu::engine::EngineOptions {
    use ess_wgpu::engine::EngineOptions;
    EngineOptions {
        pool: ess_wgpu::cache::PoolSize::Slots(slots),
        locality: 0.95,
        warmup_windows: 2,
        seed: 1,
        ..EngineOptions::new(
            ess_wgpu::model::generate::run_config(w, batch, dtype, dtype),
            vec![1; batch as usize],
        )
    }
}

/// The model as the engine's step (`model::step`): a batch of three prompts of different
/// lengths generates, in resident and offload mode (a pool smaller than the contexts, so rows
/// miss and are gathered), the same tokens with logits identical bit for bit; with f32 caches
/// every sequence's tokens are the CPU reference's and its logits within `ATTN_TOL` of them.
#[test]
fn the_engine_generates_the_reference_tokens_in_both_modes() {
    use ess_wgpu::model::generate::{Collect, PrefillSpec, identical};
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    let (dir, cfg, w) = tiny_weights("engine-gen", WeightDtype::Bf16, 4, 23);
    let w: &'static _ = Box::leak(Box::new(w));
    let prompts: Vec<Vec<u32>> = [9usize, 5, 13]
        .iter()
        .enumerate()
        .map(|(b, &n)| {
            (0..n as u32)
                .map(|i| (i * 53 + 7 * b as u32 + 3) % cfg.vocab_size)
                .collect()
        })
        .collect();
    let n = 5;
    let base = generation_options(w, 3, ess_wgpu::config::Dtype::F32, 6);
    let spec = PrefillSpec::Prompts(prompts.clone());
    let (res, off) = both_modes(&ctx, w, &base, &spec, n, Collect::Logits);
    assert!(identical(&res, &off), "resident and offload differ");
    let misses: u64 = off.report.stats.counters.iter().map(|c| c.misses).sum();
    assert!(
        misses > 0,
        "the pool is smaller than the contexts: rows must miss"
    );
    let vocab = cfg.vocab_size as usize;
    let mut worst = 0f32;
    for (b, p) in prompts.iter().enumerate() {
        let (want, outs, _) = ess_wgpu::reference::model::generate(w, p, n as usize);
        assert_eq!(res.tokens[b], want, "sequence {b}");
        // logits row 0 is the prompt's last position, row i decode step i
        for (i, row) in res.logits[b].chunks(vocab).enumerate() {
            worst = worst.max(rel_diff(row, &outs[p.len() - 1 + i].logits));
        }
    }
    assert!(
        worst <= ATTN_TOL,
        "logits differ from the reference by {worst:e}"
    );
    eprintln!(
        "engine generation: {:?}, both modes identical ({misses} misses), logits within {worst:.1e}",
        res.tokens
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Weights larger than a storage binding are bound in pieces: a layer's routed experts (whole
/// experts a piece, each piece its own dispatch over its experts' tiles), the embedding and
/// the head (ranges of the vocabulary), any linear layer (ranges of its outputs). With pieces
/// forced down to 96 KiB (one expert, 96 rows of the head), a prefill's logits and the
/// decode step after it equal the whole-weight model's bit for bit: a piece computes the same
/// sums.
#[test]
fn weights_past_a_binding_run_in_pieces() {
    use ess_wgpu::model::gpu::{Decoder, ModelGpu};
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    let (dir, cfg, w) = tiny_weights("pieces", WeightDtype::Bf16, 8, 41);
    let prompt: Vec<u32> = (0..11u32).map(|i| (i * 37 + 3) % cfg.vocab_size).collect();
    let run = |m: ModelGpu| {
        let mut d = Decoder::with_model(m, 12).unwrap();
        let mut logits = d.forward(&prompt).unwrap();
        logits.extend(d.forward(&[5]).unwrap());
        logits
    };
    let whole = run(ModelGpu::new(&ctx, &w).unwrap());
    let pieces = run(ModelGpu::new(&ctx, &w).unwrap().with_binding(96 << 10));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&whole), bits(&pieces), "the pieces change the logits");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The FP8 linear layers on the tensor cores against the FMA units: the same exact products,
/// summed in another f32 order (tests/kernels.rs: within 2.5e-8 of Σ|x·w| a layer), carried
/// through the tiny model's layers and head; relative to the step's largest logit (5.1e-7
/// measured on the H200).
const FP8_CORES_LOGITS_TOL: f32 = 2e-6;

/// FP8 weights stay FP8 on the GPU (e4m3 bytes and 128 × 128 block scales, a quarter of f32's
/// bytes): a prefill's and a decode step's logits, also in pieces past a (forced) binding,
/// against those of the same weights uploaded as f32. On the FMA units they are equal bit for
/// bit (e4m3 · scale is one f32 product either way). On the tensor cores
/// (`model_gemm_coop.wgsl`, the linear layers) the f32 sums run in another order: within
/// [`FP8_CORES_LOGITS_TOL`] of the step's largest logit.
#[test]
fn fp8_weights_on_the_gpu_give_the_f32_weights_logits() {
    use ess_wgpu::model::gpu::{Decoder, ModelGpu};
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    let (dir, cfg, w) = tiny_weights("fp8-gpu", WeightDtype::Fp8, 8, 43);
    assert!(
        w.gpu_bytes() * 2 < w.f32_bytes(),
        "FP8 weights take fewer bytes"
    );
    let prompt: Vec<u32> = (0..13u32).map(|i| (i * 29 + 11) % cfg.vocab_size).collect();
    let run = |m: ModelGpu| {
        let mut d = Decoder::with_model(m, 14).unwrap();
        let mut logits = d.forward(&prompt).unwrap();
        logits.extend(d.forward(&[7]).unwrap());
        logits
    };
    let f32_weights = run(ModelGpu::new(&ctx, &w).unwrap().with_f32_weights());
    let fp8 = run(ModelGpu::new(&ctx, &w).unwrap());
    let pieces = run(ModelGpu::new(&ctx, &w).unwrap().with_binding(40 << 10));
    if ctx.matrix == ess_wgpu::gpu::MatrixPath::Fma {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&fp8),
            bits(&f32_weights),
            "FP8 weights on the GPU differ"
        );
        assert_eq!(
            bits(&pieces),
            bits(&f32_weights),
            "FP8 weights in pieces differ"
        );
    } else {
        let v = cfg.vocab_size as usize;
        for (what, got) in [("whole", &fp8), ("in pieces", &pieces)] {
            let worst = got
                .chunks(v)
                .zip(f32_weights.chunks(v))
                .map(|(g, w)| {
                    let top = w.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let d = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    d / top
                })
                .fold(0f32, f32::max);
            eprintln!("FP8 weights on the tensor cores, {what}: logits within {worst:.1e}");
            assert!(
                worst <= FP8_CORES_LOGITS_TOL,
                "FP8 weights {what}: {worst:e}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// FP8 weights are held as FP8 on the host too: their f32 values are made the first time
/// something asks for them (the CPU reference, an f32 upload), equal to the checkpoint's
/// dequantised values, and only then take host memory.
#[test]
fn fp8_weights_are_dequantised_on_demand() {
    let (dir, _, w) = tiny_weights("fp8-lazy", WeightDtype::Fp8, 8, 53);
    let name = "model.layers.0.self_attn.q_a_proj.weight";
    let f = w.fp8_tensor(name).expect("an FP8 linear weight");
    let before = w.host_bytes();
    assert_eq!(
        before,
        w.gpu_bytes(),
        "no f32 copy held before it is asked for"
    );
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let ck = Checkpoint::open(&dir, None).unwrap();
    assert_eq!(bits(w.tensor(name)), bits(&ck.f32(name).unwrap()));
    assert_eq!(w.elements(name), f.bytes.len());
    assert_eq!(w.host_bytes(), before + 4 * f.bytes.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The memory plan (`generate::model_bytes`) counts at least every buffer the model holds after
/// a prefill of its rows (weights as uploaded, what it derives from them such as W_UK
/// transposed and FP8 kv_b_proj as f32, the split scratch, routes and expert scratch): bf16 and
/// FP8 weights.
#[test]
fn the_memory_plan_counts_what_the_model_holds() {
    use ess_wgpu::model::generate::model_bytes;
    use ess_wgpu::model::gpu::{Decoder, ModelGpu};
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    for (dtype, what) in [(WeightDtype::Bf16, "bf16"), (WeightDtype::Fp8, "fp8")] {
        let (dir, cfg, w) = tiny_weights(&format!("plan-{what}"), dtype, 8, 47);
        let prompt: Vec<u32> = (0..13u32).map(|i| (i * 31 + 5) % cfg.vocab_size).collect();
        let mut d = Decoder::with_model(ModelGpu::new(&ctx, &w).unwrap(), 13).unwrap();
        d.forward(&prompt).unwrap();
        let (held, plan) = (d.held_bytes(), model_bytes(&w, 13));
        eprintln!("{what}: the model holds {held} bytes, the plan counts {plan}");
        assert!(held <= plan, "{what}: {held} held > {plan} planned");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `decode`'s runs with a model (`EngineOptions::model`: `--model` / `--builtin`): the engine
/// builds the model's inputs over hashed contexts itself, counts the weights in its memory
/// plan, and resident and offload give bit-identical attention outputs at every layer and step
/// (the GPU digests `decode` verifies with).
#[test]
fn decode_runs_the_model_in_both_modes() {
    use ess_wgpu::engine::{Mode, ModelRef};
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    let (dir, _, w) = tiny_weights("decode-model", WeightDtype::Bf16, 8, 37);
    let w: &'static _ = Box::leak(Box::new(w));
    let opts = ess_wgpu::engine::EngineOptions {
        contexts: vec![90, 61],
        steps: 3,
        model: Some(ModelRef {
            weights: w,
            what: "tiny".into(),
        }),
        ..generation_options(w, 2, ess_wgpu::config::Dtype::Fp8, 12)
    };
    let plan = ess_wgpu::engine::MemoryPlan::new(&opts, 2).unwrap();
    assert!(plan.total() > w.f32_bytes(), "the plan counts the weights");
    let modes = [Mode::Resident, Mode::Offload];
    let r = ess_wgpu::decode::decode(&ctx, &opts, &modes, true, 1 << 30, |_, _| {}).unwrap();
    assert_eq!(r.identical, Some(true), "resident and offload differ");
    let misses: u64 = r.modes[1].stats.counters.iter().map(|c| c.misses).sum();
    assert!(misses > 0, "a pool of 12 over 90 tokens misses");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The model's offload runs hold what resident holds on every transfer path and with DBA's
/// chunked overlap, in FP8 caches (DeepSeek's format): the same tokens, logits identical bit
/// for bit. (DA needs the tuned sparse MLA, which the tiny model's RoPE 16 does not take.)
#[test]
fn the_engine_generates_alike_on_every_transfer_path_and_overlap() {
    use ess_wgpu::cache::TransferPath;
    use ess_wgpu::engine::{EngineOptions, LayerSchedule, Mode, TransferOverlap};
    use ess_wgpu::model::generate::{Collect, PrefillSpec, generate, identical, in_mode};
    let ctx = ess_wgpu::GpuContext::new().unwrap();
    let (dir, cfg, w) = tiny_weights("engine-paths", WeightDtype::Fp8, 8, 29);
    let w: &'static _ = Box::leak(Box::new(w));
    let prompts: Vec<Vec<u32>> = [12u32, 7, 10]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 97 + n) % cfg.vocab_size).collect())
        .collect();
    let spec = PrefillSpec::Prompts(prompts);
    let base = generation_options(w, 3, ess_wgpu::config::Dtype::Fp8, 9);
    let run = |o: &EngineOptions| generate(&ctx, w, o, &spec, 4, 1 << 30, Collect::Logits).unwrap();
    let resident = run(&in_mode(&base, Mode::Resident));
    for (transfer, overlap) in [
        (TransferPath::ZeroCopy, TransferOverlap::NONE),
        (TransferPath::Staging, TransferOverlap::NONE),
        (TransferPath::PerRow, TransferOverlap::NONE),
        (
            TransferPath::ZeroCopy,
            TransferOverlap::All(LayerSchedule::Dba(2)),
        ),
    ] {
        let o = EngineOptions {
            transfer,
            transfer_overlap: overlap.clone(),
            ..in_mode(&base, Mode::Offload)
        };
        let off = run(&o);
        assert!(identical(&resident, &off), "{transfer:?} {overlap:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
