//! The decode engine: resident and offload modes give bit-identical attention outputs at every
//! layer and step, and batch sizing refuses what does not fit, with the arithmetic.

mod common;

use common::ctx;
use ess_wgpu::cache::{PoolSize, TransferPath};
use ess_wgpu::engine::{Engine, EngineOptions, LayerSchedule, MemoryPlan, Mode, TransferOverlap};
use ess_wgpu::{Dtype, RunConfig};

const BUDGET: u64 = 1 << 30;

fn options(
    run: RunConfig,
    contexts: Vec<u32>,
    pool: PoolSize,
    transfer: TransferPath,
    locality: f32,
    steps: u32,
) -> EngineOptions {
    EngineOptions {
        steps,
        pool,
        transfer,
        locality,
        warmup_windows: 2,
        seed: 7,
        // a mix of timestamped steps (a pass per stage) and untimed ones (one pass per step)
        time_every: 2,
        ..EngineOptions::new(run, contexts)
    }
}

/// The tiny preset with a 30-slot pool on the zero-copy path (resident mode until changed).
fn tiny_options(contexts: Vec<u32>, locality: f32, steps: u32) -> EngineOptions {
    let mut run = RunConfig::tiny();
    run.batch = contexts.len() as u32;
    options(
        run,
        contexts,
        PoolSize::Slots(30),
        TransferPath::ZeroCopy,
        locality,
        steps,
    )
}

/// Run both modes step by step and compare o_lat and lse bits at every layer and step.
fn check_bit_identical(opts: &EngineOptions) {
    let ctx = ctx();
    let mut resident = Engine::new(
        ctx,
        &EngineOptions {
            mode: Mode::Resident,
            ..opts.clone()
        },
        BUDGET,
    )
    .unwrap();
    let mut offload = Engine::new(
        ctx,
        &EngineOptions {
            mode: Mode::Offload,
            ..opts.clone()
        },
        BUDGET,
    )
    .unwrap();
    for step in 1..=opts.steps {
        resident.step(ctx).unwrap();
        offload.step(ctx).unwrap();
        for l in 0..opts.run.layers {
            let (ro, rl) = resident.outputs(ctx, l).unwrap();
            let (oo, ol) = offload.outputs(ctx, l).unwrap();
            let first = ro.iter().zip(&oo).position(|(a, b)| a != b);
            assert!(
                first.is_none(),
                "o_lat differs at step {step}, layer {l}, element {first:?}: {opts:?}"
            );
            assert_eq!(rl, ol, "lse differs at step {step}, layer {l}");
            assert!(
                rl.iter().all(|&x| f32::from_bits(x).is_finite()),
                "lse not finite"
            );
        }
    }
    let c = offload.stats.counters[0];
    assert!(
        c.misses > 0,
        "the offload run never missed: not a test of the pool"
    );
    eprintln!(
        "{} | {} | layer 0 hit rate {:.2}, misses {}",
        opts.run,
        opts.transfer,
        c.hit_rate(),
        c.misses
    );
}

#[test]
fn modes_are_bit_identical_with_a_thrashing_pool() {
    // pool of exactly k + 1 slots: every step evicts
    let run = RunConfig::tiny()
        .with_overrides(&["batch=3", "layers=2"])
        .unwrap();
    let k = run.model.topk;
    check_bit_identical(&options(
        run,
        vec![100, 37, 250],
        PoolSize::Slots(k + 1),
        TransferPath::ZeroCopy,
        0.5,
        5,
    ));
}

/// Contexts long enough that the top-k runs its split kernel (rows of 32K scores and more), one
/// sequence far shorter: the two modes still give the same bits.
#[test]
fn modes_are_bit_identical_with_the_split_top_k() {
    let run = RunConfig::tiny()
        .with_overrides(&["batch=2", "layers=2", "topk=40"])
        .unwrap();
    let opts = options(
        run,
        vec![33_000, 90],
        PoolSize::Ratio(0.3),
        TransferPath::ZeroCopy,
        0.9,
        3,
    );
    assert!(opts.capacity() >= ess_wgpu::kernels::topk::SPLIT_MIN_LEN);
    check_bit_identical(&opts);
}

/// Every transfer path, with f16 caches and with FP8 caches (the tiny model's 144-byte latent
/// rows and 36-byte keys, quantised by the shader that makes them).
#[test]
fn modes_are_bit_identical_on_every_transfer_path() {
    for dtype in ["f16", "fp8"] {
        let run = RunConfig::tiny()
            .with_overrides(&["batch=2", "layers=2", "topk=40", &format!("dtype={dtype}")])
            .unwrap();
        for transfer in [
            TransferPath::ZeroCopy,
            TransferPath::Staging,
            TransferPath::PerRow,
        ] {
            check_bit_identical(&options(
                run.clone(),
                vec![300, 129],
                PoolSize::Ratio(0.3),
                transfer,
                0.9,
                4,
            ));
        }
    }
}

/// The paper's batch arithmetic (BRIEF.md §5) from the memory plan: DeepSeek-V3.2's 61 layers
/// at 32K with FP8 caches, 656 + 132 = 788 bytes a token and a layer, hold 52 sequences in
/// 82 × 10⁹ bytes of cache budget; f16 caches (1152 + 256 bytes) hold 29.
#[test]
fn the_memory_plan_gives_the_papers_52_sequences() {
    let mut run = RunConfig::v32();
    run.layers = run.model.layers;
    assert_eq!(
        (run.layers, run.row_bytes(), run.key_bytes()),
        (61, 656, 132)
    );
    let opts = |run: &RunConfig| EngineOptions {
        contexts: vec![32 << 10; run.batch as usize],
        ..options(
            run.clone(),
            Vec::new(),
            PoolSize::Ratio(0.2),
            TransferPath::ZeroCopy,
            0.5,
            1,
        )
    };
    let budget = 82_000_000_000;
    let n = MemoryPlan::sequences_in_cache_budget(&opts(&run), budget).unwrap();
    // 52 · 61 · 32772 · 788 = 81.9 × 10⁹ (the capacity: 32K + 1 step, rounded up to 4)
    assert_eq!(n, 52);
    let plan = MemoryPlan::new(&opts(&run), 52).unwrap();
    assert_eq!(plan.cache_bytes(), 52 * 61 * 32772 * 788);
    let f16 = run.with_overrides(&["dtype=f16"]).unwrap();
    assert_eq!(
        MemoryPlan::sequences_in_cache_budget(&opts(&f16), budget).unwrap(),
        29
    );
}

#[test]
fn modes_are_bit_identical_at_the_real_latent_width() {
    // 512 + 64 latent, 40 heads (one partial head block), k not a multiple of any tile
    let run = RunConfig::small()
        .with_overrides(&[
            "batch=2",
            "layers=1",
            "heads=40",
            "topk=100",
            "index_heads=16",
        ])
        .unwrap();
    check_bit_identical(&options(
        run.clone(),
        vec![700, 333],
        PoolSize::Slots(150),
        TransferPath::ZeroCopy,
        0.8,
        3,
    ));
    // the production caches: 656-byte latent rows, and 132-byte keys of 128 dims
    let fp8 = run
        .with_overrides(&["dtype=fp8", "index_head_dim=128"])
        .unwrap();
    assert_eq!((fp8.row_bytes(), fp8.key_bytes()), (656, 132));
    check_bit_identical(&options(
        fp8,
        vec![700, 333],
        PoolSize::Slots(150),
        TransferPath::ZeroCopy,
        0.8,
        3,
    ));
}

#[test]
fn batches_that_do_not_fit_are_refused_with_the_arithmetic() {
    let run = RunConfig::small().with_overrides(&["batch=8"]).unwrap();
    let mut opts = options(
        run,
        vec![4096; 8],
        PoolSize::Ratio(0.2),
        TransferPath::ZeroCopy,
        0.8,
        4,
    );
    let budget = 64 << 20;
    let e = Engine::new(ctx(), &opts, budget)
        .err()
        .expect("must not fit")
        .to_string();
    assert!(
        e.contains("resident mode needs")
            && e.contains("latent cache")
            && e.contains("> budget 64.0 MiB"),
        "{e}"
    );
    // offload fits a larger batch in the same budget
    let binding = ctx().max_binding();
    let resident = MemoryPlan::largest_batch(&opts, budget, binding).unwrap();
    opts.mode = Mode::Offload;
    let offload = MemoryPlan::largest_batch(&opts, budget, binding).unwrap();
    assert!(
        offload > resident,
        "offload {offload} vs resident {resident}"
    );
    assert!(MemoryPlan::new(&opts, offload).unwrap().total() <= budget);
    assert!(MemoryPlan::new(&opts, offload + 1).unwrap().total() > budget);
    // a layer's staging pool is bound whole: the largest batch keeps it within one binding
    let pool = MemoryPlan::new(&opts, offload).unwrap().bound_whole;
    let capped = MemoryPlan::largest_batch(&opts, budget, pool - 1).unwrap();
    assert_eq!(capped, offload - 1);
    assert!(MemoryPlan::new(&opts, capped).unwrap().bound_whole < pool);
}

#[test]
fn bad_engine_options_are_errors() {
    let run = RunConfig::tiny();
    let ok = options(
        run.clone(),
        vec![50, 50],
        PoolSize::Ratio(0.5),
        TransferPath::ZeroCopy,
        0.5,
        2,
    );
    // each bad option, and what its error must name
    let bad = [
        (
            EngineOptions {
                contexts: vec![50],
                ..ok.clone()
            },
            "contexts = 1; allowed: one per sequence (2)",
        ),
        (
            EngineOptions {
                contexts: vec![0, 5],
                ..ok.clone()
            },
            "context = 0",
        ),
        (
            EngineOptions {
                locality: 1.5,
                ..ok.clone()
            },
            "locality = 1.5; allowed: 0 ..= 1",
        ),
        (
            EngineOptions {
                steps: 0,
                ..ok.clone()
            },
            "steps = 0",
        ),
        (
            EngineOptions {
                mode: Mode::Offload,
                pool: PoolSize::Slots(run.model.topk),
                ..ok.clone()
            },
            "pool slots = 16; allowed: 17 ..=",
        ),
        (
            EngineOptions {
                run: run
                    .clone()
                    .with_overrides(&["key_dtype=fp8", "index_head_dim=160"])
                    .unwrap(),
                ..ok.clone()
            },
            "index_head_dim (fp8 keys) = 160",
        ),
        (
            EngineOptions {
                time_every: 0,
                ..ok.clone()
            },
            "time-every = 0",
        ),
    ];
    for (o, names) in bad {
        let e = Engine::new(ctx(), &o, BUDGET).err().unwrap().to_string();
        assert!(e.contains(names), "{e} does not name {names}: {o:?}");
    }
}

/// A trace recorded from a GPU run and replayed through the plain-Rust LRU gives exactly the
/// hits and misses the GPU counted, per layer; the text format round-trips.
#[test]
fn trace_replay_equals_the_gpu_counts() {
    use ess_wgpu::trace::Trace;
    let run = RunConfig::tiny()
        .with_overrides(&["batch=3", "layers=2", "topk=24"])
        .unwrap();
    let mut opts = options(
        run,
        vec![200, 90, 150],
        PoolSize::Slots(40),
        TransferPath::ZeroCopy,
        0.8,
        6,
    );
    opts.mode = Mode::Offload;
    opts.record_trace = true;
    opts.layer_locality = vec![0.3, 0.95];
    let ctx = ctx();
    let mut e = Engine::new(ctx, &opts, BUDGET).unwrap();
    for _ in 0..opts.steps {
        e.step(ctx).unwrap();
    }
    e.finish(ctx).unwrap();
    let trace = e.trace.clone().unwrap();
    let text = trace.to_text();
    let parsed = Trace::parse(&text, "recorded").unwrap();
    assert_eq!(parsed, trace, "the text format does not round-trip");
    let replay = parsed.replay(40, true).unwrap();
    for l in 0..2 {
        let gpu = e.stats.counters[l];
        assert_eq!(replay.misses_per_layer()[l], gpu.misses, "layer {l} misses");
        assert_eq!(replay.hits_per_layer()[l], gpu.hits, "layer {l} hits");
    }
    assert_eq!(replay.steps.len(), 6);
    // without warm-up the first step misses more
    let cold = parsed.replay(40, false).unwrap();
    assert!(
        cold.steps[0].iter().map(|c| c.1).sum::<u64>()
            > replay.steps[0].iter().map(|c| c.1).sum::<u64>()
    );
}

/// Malformed and truncated trace files are errors that say where.
#[test]
fn malformed_traces_are_errors_with_the_offset() {
    use ess_wgpu::trace::Trace;
    let head = "ess-trace 1\nlayers 1 batch 1 topk 3 capacity 10\n";
    let cases = [
        ("ess-trace 2\n", "line 1"),
        ("ess-trace 1\nlayers 1 batch 1\n", "line 2"),
        (
            &*format!("{head}s 0 0 0 5 1 2 3\ns 1 0 0 6 1 2\n"),
            "line 4 (byte offset 64)",
        ),
        (
            &*format!("{head}s 0 0 0 5 1 2 3\ns 1 0 0 6 1 2"),
            "truncated",
        ),
        (&*format!("{head}x 0 0 0 5 1 2 3\n"), "`w` or `s`"),
        (&*format!("{head}s 0 0 0 5 1 2 9\n"), "id 9 outside"),
        (&*format!("{head}s 0 0 0 5 1 1 2\n"), "twice"),
        (&*format!("{head}s 0 1 0 5 1 2 3\n"), "outside the header"),
        (&*format!("{head}s 0 0 0 five 1 2 3\n"), "not a number"),
    ];
    for (text, want) in cases {
        let e = Trace::parse(text, "t.trace").unwrap_err().to_string();
        assert!(
            e.contains(want) && e.starts_with("t.trace: line"),
            "{e:?} should mention {want:?}"
        );
    }
    // a hand-written trace from "another engine" replays
    let t = Trace::parse(
        &format!("{head}# a comment\nw 0 0 0 5 0 1 2\ns 1 0 0 6 0 5 3\n"),
        "x",
    )
    .unwrap();
    let r = t.replay(4, true).unwrap();
    assert_eq!(r.steps, vec![vec![(2, 1)]]); // 0 hit, 5 = newest (reserved slot) hit, 3 missed
}

/// The working set is the largest union of a sequence's selections over `window` steps.
#[test]
fn working_set_of_a_trace() {
    use ess_wgpu::trace::Trace;
    let t = Trace::parse(
        "ess-trace 1\nlayers 1 batch 1 topk 3 capacity 20\ns 0 0 0 10 1 2 3\ns 1 0 0 11 2 3 4\ns 2 0 0 12 7 8 9\n",
        "x",
    )
    .unwrap();
    assert_eq!(t.working_set(1), 3);
    assert_eq!(t.working_set(2), 6); // {2,3,4,7,8,9}
    assert_eq!(t.working_set(3), 7); // {1,…,4,7,8,9}
}

/// Working-set-aware admission sizes the pool to the working set: fewer sequences, fewer misses
/// than a thrashing k + 1 pool in the same budget.
#[test]
fn admission_trades_batch_for_hit_rate() {
    let run = RunConfig::tiny().with_overrides(&["layers=2"]).unwrap();
    let k = run.model.topk;
    let mut opts = options(
        run,
        vec![300],
        PoolSize::Slots(k + 1),
        TransferPath::ZeroCopy,
        0.9,
        6,
    );
    opts.warmup_windows = 1;
    let mut seen = Vec::new();
    let points = ess_wgpu::decode::sweep(
        ctx(),
        &opts,
        &[300],
        &[],
        64,
        6 << 20,
        Some(6),
        |_| {},
        |p| {
            seen.push(p.len());
            Ok(())
        },
    )
    .unwrap();
    // every point handed on as it was measured (the CLI's CSV after each)
    assert_eq!(seen, (1..=points.len()).collect::<Vec<_>>());
    // a context the budget cannot hold is refused before anything runs
    let mut ran = 0;
    let err = ess_wgpu::decode::sweep(
        ctx(),
        &opts,
        &[300, 60_000],
        &[],
        64,
        6 << 20,
        None,
        |_| {},
        |_| {
            ran += 1;
            Ok(())
        },
    )
    .unwrap_err()
    .to_string();
    assert_eq!(ran, 0, "{err}");
    assert!(err.contains("context 60000"), "{err}");
    let offload = points
        .iter()
        .find(|p| p.mode == Mode::Offload && !p.admission)
        .unwrap();
    let adm = points.iter().find(|p| p.admission).unwrap();
    assert!(adm.slots > offload.slots, "{adm:?}");
    assert!(adm.batch <= offload.batch);
    assert!(
        adm.hit_rate > offload.hit_rate,
        "admission {:.3} vs thrashing pool {:.3}",
        adm.hit_rate,
        offload.hit_rate
    );
}

/// One layer of a decode step, recomputed on the CPU from what the engine selected: the rows of
/// the selected tokens are read from where the mode keeps them (the resident cache, or the host
/// store), so this checks the cache and the kernel against the reference, not one mode against
/// the other.
#[test]
fn engine_layer_equals_the_cpu_reference() {
    let ctx = ctx();
    for dtype in [Dtype::F16, Dtype::Fp8, Dtype::F32] {
        let mut run = RunConfig::preset("tiny").unwrap();
        (run.batch, run.layers) = (3, 2);
        (run.latent_dtype, run.key_dtype) = (dtype, dtype);
        engine_layer_against_the_reference(ctx, &run);
    }
}

fn engine_layer_against_the_reference(ctx: &ess_wgpu::GpuContext, run: &RunConfig) {
    use ess_wgpu::compare::compare;
    use ess_wgpu::gpu::MatrixPath;
    use ess_wgpu::kernels::SparseMla;
    use ess_wgpu::problems::{SPARSE_MLA_LSE_TOL, sparse_mla_o_lat_tol};
    // the engine's sparse MLA kernel (on a coop adapter, the tensor cores': the reference of its
    // f16-rounded q, and its o_lat tolerance)
    let path = SparseMla::new(ctx, &run.sparse_mla_shape()).unwrap().path;
    let (b, h, k) = (3usize, run.model.heads as usize, run.model.topk as usize);
    let (kv, rope) = (
        run.model.kv_lora_rank as usize,
        run.model.qk_rope_head_dim as usize,
    );
    for mode in [Mode::Resident, Mode::Offload] {
        let mut opts = options(
            run.clone(),
            vec![130, 9, 61],
            PoolSize::Slots(40),
            TransferPath::ZeroCopy,
            0.5,
            3,
        );
        opts.mode = mode;
        let mut e = Engine::new(ctx, &opts, BUDGET).unwrap();
        for _ in 0..opts.steps {
            e.step(ctx).unwrap();
        }
        let snap = e.layer_snapshot(ctx, 1).unwrap();
        // the contract of the selection: min(k, T_b) distinct valid ids < T_b, then −1
        for (s, len) in [133usize, 12, 64].into_iter().enumerate() {
            let ids = &snap.topk_indices[s * k..][..k];
            let valid: Vec<i32> = ids.iter().copied().filter(|&t| t >= 0).collect();
            assert_eq!(valid.len(), k.min(len), "{mode}: sequence {s}");
            assert!(valid.iter().all(|&t| (t as usize) < len));
            let distinct: std::collections::HashSet<_> = valid.iter().collect();
            assert_eq!(distinct.len(), valid.len(), "{mode}: repeated ids");
        }
        // the selection is a top-k of the reference indexer's scores on the same keys and
        // queries (FP8 keys: queries quantised per head, as the engine's quantiser does; f16 keys
        // on the tensor cores: q rounded to f16): every selected token scores at least the k-th
        // best, within the indexer's tolerance (a near-tie may go either way)
        let (hi, di) = (
            run.model.index_heads as usize,
            run.model.index_head_dim as usize,
        );
        let indexer = ess_wgpu::kernels::Indexer::new(ctx, &run.indexer_shape()).unwrap();
        let q_used = match (run.key_dtype, indexer.path) {
            (Dtype::Fp8, _) => {
                use ess_wgpu::reference::fp8::{ScaleRule, round_rows};
                round_rows(&snap.q_i, di, ScaleRule::Ue8m0)
            }
            (_, MatrixPath::Coop) => ess_wgpu::workload::round_f16(&snap.q_i),
            _ => snap.q_i.clone(),
        };
        for (s, keys) in snap.keys.iter().enumerate() {
            let len = keys.len() / di;
            let seqs = [ess_wgpu::reference::SeqRows { first_row: 0, len }];
            let q = &q_used[s * hi * di..][..hi * di];
            let w = &snap.w[s * hi..][..hi];
            let scores = ess_wgpu::reference::indexer(q, w, keys, &seqs, hi, di, len);
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k.min(len) - 1];
            let (atol, rtol) = ess_wgpu::problems::INDEXER_TOL;
            for &t in snap.topk_indices[s * k..][..k].iter().filter(|&&t| t >= 0) {
                let got = scores[t as usize];
                assert!(
                    got >= kth - 2.0 * (atol + rtol * kth.abs()),
                    "{mode} {}: sequence {s} selected token {t} scoring {got}, the k-th best {kth}",
                    run.key_dtype
                );
            }
        }
        let layout = ess_wgpu::workload::RowLayout::Latent { kv, rope };
        let rows = ess_wgpu::workload::values_of(&snap.rows, run.latent_dtype, layout);
        let ids: Vec<i32> = snap
            .topk_indices
            .iter()
            .enumerate()
            .map(|(i, &t)| if t >= 0 { (i % k) as i32 } else { -1 })
            .collect();
        let first_rows: Vec<usize> = (0..b).map(|s| s * k).collect();
        let q = match path {
            MatrixPath::Fma => snap.q.clone(),
            MatrixPath::Coop => ess_wgpu::workload::round_f16(&snap.q),
        };
        let (want_o, want_lse) = ess_wgpu::reference::sparse_mla(
            &q,
            &ids,
            &first_rows,
            &rows,
            b,
            h,
            kv,
            rope,
            k,
            run.model.softmax_scale(),
        );
        let (oa, or) = sparse_mla_o_lat_tol(path, k);
        let (la, lr) = SPARSE_MLA_LSE_TOL;
        let eo = compare("o_lat", &snap.o_lat, &want_o, oa, or)
            .unwrap_or_else(|err| panic!("{mode}: {err}"));
        let el = compare("lse", &snap.lse, &want_lse, la, lr)
            .unwrap_or_else(|err| panic!("{mode}: {err}"));
        eprintln!(
            "engine {mode} {} ({path:?}): max err o_lat {eo:e}, lse {el:e}",
            run.latent_dtype
        );
    }
}

/// The memory plan is what the engine allocates, byte for byte, in every configuration.
#[test]
fn memory_plan_is_what_the_engine_allocates() {
    let ctx = ctx();
    let mut run = RunConfig::preset("tiny").unwrap();
    run.batch = 3;
    let fp8 = run.clone().with_overrides(&["dtype=fp8"]).unwrap();
    for (run, mode, transfer, overlap, digest) in [
        (&run, Mode::Resident, TransferPath::ZeroCopy, false, false),
        (&run, Mode::Resident, TransferPath::ZeroCopy, true, true),
        (&run, Mode::Offload, TransferPath::ZeroCopy, true, true),
        (&run, Mode::Offload, TransferPath::Staging, false, false),
        (&run, Mode::Offload, TransferPath::PerRow, true, false),
        (&fp8, Mode::Resident, TransferPath::ZeroCopy, false, true),
        (&fp8, Mode::Offload, TransferPath::ZeroCopy, true, false),
        (&fp8, Mode::Offload, TransferPath::Staging, false, false),
    ] {
        let mut opts = options(
            run.clone(),
            vec![50, 70, 20],
            PoolSize::Slots(30),
            transfer,
            0.5,
            2,
        );
        (opts.mode, opts.track_overlap, opts.digest_outputs) = (mode, overlap, digest);
        let e = Engine::new(ctx, &opts, BUDGET).unwrap();
        assert_eq!(
            e.allocated_bytes(),
            e.plan.total(),
            "{} {mode} {transfer} overlap {overlap} digest {digest}: {:?}",
            run.latent_dtype,
            e.plan.items
        );
    }
    // a context long enough for the split top-k, whose working space the plan must count
    let opts = options(
        run.clone(),
        vec![33_000, 70, 20],
        PoolSize::Slots(30),
        TransferPath::ZeroCopy,
        0.5,
        2,
    );
    let e = Engine::new(ctx, &opts, BUDGET).unwrap();
    let split = e
        .plan
        .items
        .iter()
        .find(|(what, _)| what == "top-k scratch");
    assert!(
        split.is_some_and(|(_, bytes)| *bytes > 0),
        "{:?}",
        e.plan.items
    );
    assert_eq!(e.allocated_bytes(), e.plan.total(), "{:?}", e.plan.items);
}

/// The overlap the GPU measures equals the one computed on the CPU from the recorded trace.
#[test]
fn gpu_overlap_equals_the_trace() {
    let ctx = ctx();
    let mut opts = tiny_options(vec![100; 2], 0.7, 5);
    (opts.mode, opts.record_trace, opts.track_overlap) = (Mode::Offload, true, true);
    let mut e = Engine::new(ctx, &opts, BUDGET).unwrap();
    for _ in 0..opts.steps {
        e.step(ctx).unwrap();
    }
    e.finish(ctx).unwrap();
    let trace = e.trace.clone().unwrap();
    let gpu = e.stats.overlap();
    for (l, got) in gpu.iter().enumerate() {
        let sel = |step: u32, seq: u32| {
            trace
                .entries
                .iter()
                .find(|x| {
                    x.kind == ess_wgpu::trace::Kind::Step
                        && (x.step, x.layer, x.seq) == (step, l as u32, seq)
                })
                .unwrap()
                .ids
                .clone()
        };
        let mut sum = 0.0;
        for step in 2..=opts.steps {
            let mean: f64 = (0..2)
                .map(|s| ess_wgpu::reference::topk_overlap(&sel(step - 1, s), &sel(step, s)))
                .sum::<f64>()
                / 2.0;
            sum += mean;
        }
        let want = sum / (opts.steps - 1) as f64;
        assert!(
            (got - want).abs() < 1e-6,
            "layer {l}: GPU {got} vs trace {want}"
        );
        assert!(
            want > 0.05 && want < 0.999,
            "layer {l}: overlap {want} tests nothing"
        );
    }
}

/// The main job reports both clocks: GPU time from timestamps (where the adapter has them) and
/// wall time from the first step to the last readback, and the modes' digests agree.
#[test]
fn decode_reports_wall_and_gpu_time_and_agrees() {
    let ctx = ctx();
    let mut opts = tiny_options(vec![100; 2], 0.9, 4);
    opts.track_overlap = true;
    let r = ess_wgpu::decode::decode(
        ctx,
        &opts,
        &[Mode::Resident, Mode::Offload],
        true,
        BUDGET,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(r.identical, Some(true));
    for m in &r.modes {
        assert_eq!(m.steps, 4);
        assert!(m.tokens_per_s_wall.is_finite() && m.tokens_per_s_wall > 0.0);
        if ctx.timestamps {
            assert!(m.tokens_per_s_gpu.is_finite() && m.tokens_per_s_gpu > 0.0);
        }
    }
    let text = r.to_string();
    assert!(text.contains("tokens/s (GPU)") && text.contains("tokens/s (wall)"));
}

/// Digests tell different outputs apart: two runs with different seeds disagree.
#[test]
fn digests_tell_different_runs_apart() {
    let ctx = ctx();
    let mut opts = tiny_options(vec![100; 2], 0.9, 2);
    opts.digest_outputs = true;
    let mut digests = Vec::new();
    for seed in [7, 8] {
        opts.seed = seed;
        let mut e = Engine::new(ctx, &opts, BUDGET).unwrap();
        for _ in 0..opts.steps {
            e.step(ctx).unwrap();
        }
        digests.push(e.digests(ctx).unwrap().unwrap());
    }
    assert_ne!(digests[0], digests[1]);
}

/// A step recorded in one pass (untimed) and pass by pass (timestamped) computes the same bits.
#[test]
fn one_pass_and_staged_steps_agree() {
    let ctx = ctx();
    let mut opts = tiny_options(vec![100, 37], 0.8, 5);
    (opts.mode, opts.digest_outputs, opts.track_overlap) = (Mode::Offload, true, true);
    let mut runs = Vec::new();
    for every in [1, 100] {
        opts.time_every = every;
        let mut e = Engine::new(ctx, &opts, BUDGET).unwrap();
        for _ in 0..opts.steps {
            e.step(ctx).unwrap();
        }
        let digests = e.digests(ctx).unwrap().unwrap();
        runs.push((digests, e.stats.counters.clone(), e.stats.overlap()));
        assert_eq!(e.stats.timed_steps, if every == 1 { 5 } else { 1 });
    }
    assert_eq!(runs[0], runs[1]);
}

/// The overlap tests' runs (offload): the tiny model with k = 40 and f16 or FP8 rows, a ragged
/// batch of 5 (one sequence shorter than k, so its ids are mostly −1), locality from all-miss to
/// all-hit on the zero-copy path and 0.9 on each of `cpu_paths`.
fn overlap_cases(cpu_paths: &[TransferPath]) -> Vec<EngineOptions> {
    let mut cases = Vec::new();
    for dtype in ["f16", "fp8"] {
        let run = RunConfig::tiny()
            .with_overrides(&["batch=5", "layers=2", "topk=40", &format!("dtype={dtype}")])
            .unwrap();
        let zero_copy = [0.0, 0.9, 1.0].map(|rho| (TransferPath::ZeroCopy, rho));
        let cpu = cpu_paths.iter().map(|&t| (t, 0.9));
        for (transfer, locality) in zero_copy.into_iter().chain(cpu) {
            let mut opts = options(
                run.clone(),
                vec![300, 1, 129, 77, 200],
                PoolSize::Ratio(0.3),
                transfer,
                locality,
                4,
            );
            opts.mode = Mode::Offload;
            cases.push(opts);
        }
    }
    cases
}

/// Every `--overlap dba` schedule gives the outputs of the serial one bit for bit, and the same hits
/// and misses: chunks of 1, 2, 3 and 5 sequences of a ragged batch (one sequence shorter than
/// k, so its ids are mostly −1), a layer-wise mix, locality from all-miss to all-hit, f16 and
/// FP8 caches, every transfer path (the CPU paths run the serial schedule: they wait between
/// resolve and transfer). Where the adapter has the coop indexer (the H200) the gathers run
/// inside the next chunk's indexer dispatch; elsewhere beside it.
#[test]
fn overlap_schedules_equal_serial_bit_for_bit() {
    let ctx = ctx();
    let cpu_paths = [TransferPath::Staging, TransferPath::PerRow];
    for mut opts in overlap_cases(&cpu_paths) {
        let (dtype, transfer, locality) = (opts.run.latent_dtype, opts.transfer, opts.locality);
        opts.digest_outputs = true;
        let mut serial = None;
        for overlap in [
            TransferOverlap::NONE,
            TransferOverlap::All(LayerSchedule::Dba(2)),
            TransferOverlap::All(LayerSchedule::Dba(3)),
            TransferOverlap::All(LayerSchedule::Dba(5)),
            TransferOverlap::Layerwise(vec![LayerSchedule::Serial, LayerSchedule::Dba(2)]),
        ] {
            opts.transfer_overlap = overlap.clone();
            let mut e = Engine::new(ctx, &opts, BUDGET).unwrap();
            for _ in 0..opts.steps {
                e.step(ctx).unwrap();
            }
            let got = (e.digests(ctx).unwrap().unwrap(), e.stats.counters.clone());
            match &serial {
                None => serial = Some(got),
                Some(want) => assert_eq!(
                    &got, want,
                    "{dtype}, {transfer}, locality {locality}: {overlap} differs from none"
                ),
            }
            if transfer == TransferPath::ZeroCopy && overlap != TransferOverlap::NONE {
                // the chunked schedule ran (timed steps put it in a stage of its own)
                let overlapped = e.stats.stage_s[ess_wgpu::engine::Stage::Overlapped];
                assert!(
                    !ctx.timestamps || overlapped > 0.0,
                    "{overlap}: never chunked"
                );
            }
        }
        let c = &serial.unwrap().1[0];
        eprintln!(
            "overlap {dtype} {transfer} locality {locality}: identical, layer 0 misses {} hits {}",
            c.misses, c.hits
        );
    }
}

/// `--overlap da` against serial: the same hits and misses, and outputs within twice the sparse
/// MLA kernel's tolerance against the f64 reference (`problems::sparse_mla_o_lat_tol` of its
/// path, `SPARSE_MLA_LSE_TOL`): DA attends over the same rows in another order (hits first), so
/// both runs are within the tolerance of the exact result and within twice it of each other.
/// Locality from all-miss to all-hit, a ragged batch with a sequence shorter than k, f16 and
/// FP8 rows, a layer-wise mix; the CPU paths keep the serial schedule (bit for bit). On the
/// H200 the misses are gathered inside sparse MLA's first dispatch; on lavapipe before it.
#[test]
fn da_equals_serial_within_the_kernel_tolerance() {
    use ess_wgpu::compare::compare;
    use ess_wgpu::kernels::SparseMla;
    use ess_wgpu::problems::{SPARSE_MLA_LSE_TOL, sparse_mla_o_lat_tol};
    let ctx = ctx();
    for mut opts in overlap_cases(&[TransferPath::Staging]) {
        let (dtype, transfer, locality) = (opts.run.latent_dtype, opts.transfer, opts.locality);
        let path = SparseMla::new(ctx, &opts.run.sparse_mla_shape())
            .unwrap()
            .path;
        let (o_tol, l_tol) = (sparse_mla_o_lat_tol(path, 40), SPARSE_MLA_LSE_TOL);
        let mut outs = Vec::new();
        for overlap in [
            TransferOverlap::NONE,
            TransferOverlap::All(LayerSchedule::Da),
            TransferOverlap::Layerwise(vec![LayerSchedule::Da, LayerSchedule::Dba(2)]),
        ] {
            opts.transfer_overlap = overlap;
            let mut e = Engine::new(ctx, &opts, BUDGET).unwrap();
            for _ in 0..opts.steps {
                e.step(ctx).unwrap();
            }
            let f = |v: Vec<u32>| -> Vec<f32> { v.into_iter().map(f32::from_bits).collect() };
            let layers: Vec<_> = (0..2)
                .map(|l| e.outputs(ctx, l).unwrap())
                .map(|(o, lse)| (f(o), f(lse)))
                .collect();
            outs.push((layers, e.stats.counters.clone()));
        }
        let (serial, counts) = &outs[0];
        let mut worst = (0f32, 0f32);
        for (run_outs, run_counts) in &outs[1..] {
            assert_eq!(run_counts, counts, "DA changed the hits and misses");
            for (l, ((o, lse), (so, slse))) in run_outs.iter().zip(serial).enumerate() {
                let what = format!("{dtype} {transfer} ρ {locality} layer {l}");
                let e = compare(
                    &format!("o_lat {what}"),
                    o,
                    so,
                    2.0 * o_tol.0,
                    2.0 * o_tol.1,
                )
                .unwrap();
                let el = compare(
                    &format!("lse {what}"),
                    lse,
                    slse,
                    2.0 * l_tol.0,
                    2.0 * l_tol.1,
                )
                .unwrap();
                worst = (worst.0.max(e), worst.1.max(el));
            }
        }
        eprintln!(
            "da {dtype} {transfer} ρ {locality} ({path:?}): largest |Δ| against serial o_lat \
                 {:.1e}, lse {:.1e}; layer 0 misses {}",
            worst.0, worst.1, counts[0].misses
        );
    }
}
