//! The decode engine: resident and offload modes give bit-identical attention outputs at every
//! layer and step, and batch sizing refuses what does not fit, with the arithmetic.

mod common;

use common::ctx;
use ess_wgpu::Config;
use ess_wgpu::cache::{PoolSize, TransferPath};
use ess_wgpu::engine::{Engine, EngineOptions, MemoryPlan, Mode};

const BUDGET: u64 = 1 << 30;

fn options(
    model: Config,
    contexts: Vec<u32>,
    pool: PoolSize,
    transfer: TransferPath,
    locality: f32,
    steps: u32,
) -> EngineOptions {
    EngineOptions {
        model,
        contexts,
        steps,
        mode: Mode::Resident,
        pool,
        transfer,
        locality,
        layer_locality: Vec::new(),
        record_trace: false,
        warmup_windows: 2,
        seed: 7,
        track_overlap: false,
        digest_outputs: false,
    }
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
        for l in 0..opts.model.layers {
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
        opts.model,
        opts.transfer,
        c.hit_rate(),
        c.misses
    );
}

#[test]
fn modes_are_bit_identical_with_a_thrashing_pool() {
    // pool of exactly k + 1 slots: every step evicts
    let model = Config::tiny()
        .with_overrides(&["batch=3", "layers=2"])
        .unwrap();
    let k = model.topk;
    check_bit_identical(&options(
        model,
        vec![100, 37, 250],
        PoolSize::Slots(k + 1),
        TransferPath::ZeroCopy,
        0.5,
        5,
    ));
}

#[test]
fn modes_are_bit_identical_on_every_transfer_path() {
    let model = Config::tiny()
        .with_overrides(&["batch=2", "layers=2", "topk=40"])
        .unwrap();
    for transfer in [
        TransferPath::ZeroCopy,
        TransferPath::Staging,
        TransferPath::PerRow,
    ] {
        check_bit_identical(&options(
            model.clone(),
            vec![300, 129],
            PoolSize::Ratio(0.3),
            transfer,
            0.9,
            4,
        ));
    }
}

#[test]
fn modes_are_bit_identical_at_the_real_latent_width() {
    // 512 + 64 latent, 40 heads (one partial head block), k not a multiple of any tile
    let model = Config::small()
        .with_overrides(&[
            "batch=2",
            "layers=1",
            "heads=40",
            "topk=100",
            "index_heads=16",
        ])
        .unwrap();
    check_bit_identical(&options(
        model,
        vec![700, 333],
        PoolSize::Slots(150),
        TransferPath::ZeroCopy,
        0.8,
        3,
    ));
}

#[test]
fn batches_that_do_not_fit_are_refused_with_the_arithmetic() {
    let model = Config::small().with_overrides(&["batch=8"]).unwrap();
    let mut opts = options(
        model,
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
    let resident = MemoryPlan::largest_batch(&opts, budget).unwrap();
    opts.mode = Mode::Offload;
    let offload = MemoryPlan::largest_batch(&opts, budget).unwrap();
    assert!(
        offload > resident,
        "offload {offload} vs resident {resident}"
    );
    assert!(MemoryPlan::new(&opts, offload).unwrap().total() <= budget);
    assert!(MemoryPlan::new(&opts, offload + 1).unwrap().total() > budget);
}

#[test]
fn bad_engine_options_are_errors() {
    let model = Config::tiny();
    let ok = options(
        model.clone(),
        vec![50, 50],
        PoolSize::Ratio(0.5),
        TransferPath::ZeroCopy,
        0.5,
        2,
    );
    let bad = [
        EngineOptions {
            contexts: vec![50],
            ..ok.clone()
        },
        EngineOptions {
            contexts: vec![0, 5],
            ..ok.clone()
        },
        EngineOptions {
            locality: 1.5,
            ..ok.clone()
        },
        EngineOptions {
            steps: 0,
            ..ok.clone()
        },
        EngineOptions {
            mode: Mode::Offload,
            pool: PoolSize::Slots(model.topk),
            ..ok.clone()
        },
        EngineOptions {
            model: Config {
                dtype: ess_wgpu::Dtype::F32,
                ..model.clone()
            },
            ..ok.clone()
        },
    ];
    for o in bad {
        assert!(Engine::new(ctx(), &o, BUDGET).is_err(), "{o:?}");
    }
}

/// A trace recorded from a GPU run and replayed through the plain-Rust LRU gives exactly the
/// hits and misses the GPU counted, per layer; the text format round-trips.
#[test]
fn trace_replay_equals_the_gpu_counts() {
    use ess_wgpu::trace::Trace;
    let model = Config::tiny()
        .with_overrides(&["batch=3", "layers=2", "topk=24"])
        .unwrap();
    let mut opts = options(
        model,
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
    let model = Config::tiny().with_overrides(&["layers=2"]).unwrap();
    let k = model.topk;
    let mut opts = options(
        model,
        vec![300],
        PoolSize::Slots(k + 1),
        TransferPath::ZeroCopy,
        0.9,
        6,
    );
    opts.warmup_windows = 1;
    let points =
        ess_wgpu::decode::sweep(ctx(), &opts, &[300], &[], 64, 6 << 20, Some(6), |_| {}).unwrap();
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
