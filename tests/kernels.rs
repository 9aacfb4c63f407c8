//! Every kernel against its CPU reference on random inputs: several seeds, sizes that are not
//! multiples of the workgroup size, the edge cases of the contract, outputs poisoned first.

mod common;

use common::{ctx, seed as fresh_seed};
use ess_wgpu::compare::compare;
use ess_wgpu::gpu::MatrixPath;
use ess_wgpu::kernels::indexer::IndexerShape;
use ess_wgpu::kernels::sparse_mla::ScoresTile;
use ess_wgpu::kernels::topk::{TopKShape, TopKSplit};
use ess_wgpu::kernels::{Indexer, IndexerNaive, LseMerge, SparseMla, SparseMlaNaive, TopK, paths};
use ess_wgpu::problems::{
    INDEXER_TOL, IndexerProblem, LseMergeProblem, SPARSE_MLA_LSE_TOL, SPARSE_MLA_O_LAT_TOL,
    SparseMlaProblem, TopKProblem, sparse_mla_coop_o_lat_tol,
};
use ess_wgpu::{Dtype, RunConfig};

/// Every indexer kernel the adapter has (lavapipe: fma; a coop GPU: fma and, for f16 and FP8
/// keys, coop), each against the reference of what it computes (FP8 keys: DeepSeek's
/// `fp8_index`, q quantised per head), and version 1 (f16, f32).
#[test]
fn indexer_matches_reference() {
    let ctx = ctx();
    let shapes = [
        (8, 32, Dtype::F16),
        (16, 64, Dtype::F32),
        (64, 128, Dtype::F16),
        (24, 96, Dtype::F32),
        (40, 160, Dtype::F16),
        (64, 128, Dtype::Fp8),
        (8, 32, Dtype::Fp8),
        (40, 96, Dtype::Fp8),
    ];
    for (i, &(heads, dim, dtype)) in shapes.iter().enumerate() {
        let shape = IndexerShape {
            heads: heads as u32,
            dim: dim as u32,
            dtype,
        };
        // ragged: empty, single key, around the 256-key tile, and a long one
        let lens = [0usize, 1, 255, 257, 700, 33];
        let p = IndexerProblem::random(heads, dim, dtype, &lens, fresh_seed(i as u64));
        let (atol, rtol) = INDEXER_TOL;
        for path in paths(ctx, dtype) {
            let kernel = Indexer::with(ctx, &shape, path).unwrap();
            let got = p.run(ctx, &kernel, None).unwrap();
            let err = compare("index_score", &got, &p.reference_for(path), atol, rtol)
                .unwrap_or_else(|e| panic!("{path} {heads}x{dim} {dtype}: {e}"));
            // what the coop kernel's f16 q (FP8: q's quantisation) costs against the reference
            // of the f32 q (reported)
            let exact = compare("index_score", &got, &p.reference(), 1.0, 1.0).unwrap();
            eprintln!("indexer {path} {heads}x{dim} {dtype}: max err {err:e} ({exact:e} vs f32 q)");
        }
        // version 1, the same problem and tolerance
        let naive = IndexerNaive::new(ctx, &shape).unwrap();
        let got = p.run_naive(ctx, &naive, None).unwrap();
        let want = p.reference_for(MatrixPath::Fma);
        let err = compare("index_score (naive)", &got, &want, atol, rtol)
            .unwrap_or_else(|e| panic!("naive {heads}x{dim} {dtype}: {e}"));
        eprintln!("indexer_naive {heads}x{dim} {dtype}: max err {err:e}");
    }
}

/// Both top-k kernels (a row a workgroup; split over 3 or 7 workgroups, segments that are not
/// multiples of the 256-thread workgroup) against the reference, ties included.
#[test]
fn topk_matches_reference_on_edge_lengths_and_ties() {
    let ctx = ctx();
    for (i, &k) in [1usize, 16, 100, 2048].iter().enumerate() {
        let mut kernel = TopK::new(ctx, &TopKShape { k: k as u32 }).unwrap();
        let lens = [0, 1, k.saturating_sub(1), k, k + 1, 1000, 5003];
        for distinct in [0u64, 3, 1] {
            let p = TopKProblem::random(k, &lens, distinct, fresh_seed(i as u64 * 10 + distinct));
            let want = p.reference();
            for split in [
                TopKSplit::Never,
                TopKSplit::Segments(3),
                TopKSplit::Segments(7),
            ] {
                kernel.split = split;
                let got = p.run(ctx, &kernel, None).unwrap();
                if got != want {
                    let first = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
                    panic!(
                        "k {k}, distinct {distinct}, {split:?}: first mismatch at {first}: got {} \
                         want {}",
                        got[first], want[first]
                    );
                }
            }
        }
    }
}

/// Rows long enough for `Auto` to split them, and the same rows in one workgroup each.
#[test]
fn topk_handles_long_rows() {
    let ctx = ctx();
    let mut kernel = TopK::new(ctx, &TopKShape { k: 2048 }).unwrap();
    let p = TopKProblem::random(2048, &[262_144, 131_071], 0, fresh_seed(99));
    let ties = TopKProblem::random(2048, &[200_000], 50, fresh_seed(98));
    assert!(kernel.segments(2, 262_144) > 1, "Auto splits rows of 256K");
    for split in [TopKSplit::Auto, TopKSplit::Never] {
        kernel.split = split;
        assert_eq!(
            p.run(ctx, &kernel, None).unwrap(),
            p.reference(),
            "{split:?}"
        );
        assert_eq!(
            ties.run(ctx, &kernel, None).unwrap(),
            ties.reference(),
            "{split:?} ties"
        );
    }
}

fn check_sparse_mla(cfg: &RunConfig, n_rows: usize, invalid: f32, empty: &[usize], seed: u64) {
    let ctx = ctx();
    let p = SparseMlaProblem::random(cfg, n_rows, invalid, empty, seed);
    let (want_o, want_lse) = p.reference();
    // the fma kernel with both `scores` tiles, whatever the grid size would pick; the coop
    // kernel (f16 rows on a coop adapter) against the reference of its f16-rounded q
    let shape = cfg.sparse_mla_shape();
    let mut runs = vec![
        (MatrixPath::Fma, ScoresTile::Wide),
        (MatrixPath::Fma, ScoresTile::Narrow),
    ];
    if ctx.matrix == MatrixPath::Coop && cfg.latent_dtype != Dtype::F32 {
        runs.push((MatrixPath::Coop, ScoresTile::Wide));
    }
    for (path, tile) in runs {
        let mut kernel = SparseMla::with(ctx, &shape, path).unwrap();
        kernel.scores_tile = tile;
        let (o_lat, lse) = p.run(ctx, &kernel, None).unwrap();
        let (eo, el) = p
            .check(path, &o_lat, &lse)
            .unwrap_or_else(|e| panic!("{path} {cfg}, {tile:?}: {e}"));
        eprintln!("sparse_mla {path} {cfg}, {tile:?}: max err o_lat {eo:e}, lse {el:e}");
    }
    // version 1, the same problem and tolerances
    let naive = SparseMlaNaive::new(ctx, &cfg.sparse_mla_shape()).unwrap();
    let (o_lat, lse) = p.run_naive(ctx, &naive, None).unwrap();
    let (oa, or) = SPARSE_MLA_O_LAT_TOL;
    let (la, lr) = SPARSE_MLA_LSE_TOL;
    let eo = compare("o_lat (naive)", &o_lat, &want_o, oa, or)
        .unwrap_or_else(|e| panic!("naive {cfg}: {e}"));
    let el = compare("lse (naive)", &lse, &want_lse, la, lr)
        .unwrap_or_else(|e| panic!("naive {cfg}: {e}"));
    eprintln!("sparse_mla_naive {cfg}: max err o_lat {eo:e}, lse {el:e}");
}

#[test]
fn sparse_mla_matches_reference() {
    // tiny dims; heads below one workgroup's 32; k not a multiple of the 64-row tile
    let tiny = RunConfig::tiny()
        .with_overrides(&["batch=3", "topk=77"])
        .unwrap();
    check_sparse_mla(&tiny, 500, 0.1, &[], fresh_seed(1));
    let tiny32 = RunConfig {
        latent_dtype: Dtype::F32,
        ..tiny.clone()
    };
    check_sparse_mla(&tiny32, 300, 0.3, &[1], fresh_seed(2));
    // the real latent width; 40 heads = one full and one partial workgroup of heads
    let wide = RunConfig::small()
        .with_overrides(&["heads=40", "batch=2", "topk=130"])
        .unwrap();
    check_sparse_mla(&wide, 1000, 0.05, &[], fresh_seed(3));
    let wide32 = RunConfig {
        latent_dtype: Dtype::F32,
        ..wide.clone()
    };
    check_sparse_mla(&wide32, 257, 0.0, &[], fresh_seed(4));
    // 70 heads: two 64-head `attend` workgroups, the second with one partial warp (heads 64..69)
    // and seven warps without a head
    let heads70 = RunConfig::small()
        .with_overrides(&["heads=70", "batch=2", "topk=90"])
        .unwrap();
    check_sparse_mla(&heads70, 500, 0.1, &[], fresh_seed(12));
    // 128 heads: whole workgroups, compiled without the per-warp head test (PART_HEADS = false)
    let heads128 = RunConfig::small()
        .with_overrides(&["heads=128", "batch=1", "topk=70"])
        .unwrap();
    check_sparse_mla(&heads128, 300, 0.1, &[], fresh_seed(13));
    // a latent width whose f32 V chunk (16 half rows × 40 vec4s) is not a multiple of the 256
    // threads
    let odd32 = RunConfig::small()
        .with_overrides(&["kv_lora_rank=320", "dtype=f32", "batch=2", "topk=100"])
        .unwrap();
    check_sparse_mla(&odd32, 400, 0.1, &[], fresh_seed(5));
    // batch 1 with k = 300: `attend` splits the ids into 4 slices of whole 64-id score tiles
    // (split-k): 128, 128, 44 and an empty one
    let split = RunConfig::small()
        .with_overrides(&["batch=1", "topk=300"])
        .unwrap();
    assert_eq!(
        SparseMla::new(ctx(), &split.sparse_mla_shape())
            .unwrap()
            .splits(1),
        4
    );
    check_sparse_mla(&split, 2000, 0.1, &[], fresh_seed(10));
    check_sparse_mla(
        &RunConfig {
            latent_dtype: Dtype::F32,
            ..split
        },
        700,
        0.0,
        &[],
        fresh_seed(11),
    );
    // other legal dims: kv 192 (24 dim groups of 8), no rope
    let odd = RunConfig::tiny()
        .with_overrides(&[
            "kv_lora_rank=192",
            "qk_rope_head_dim=0",
            "heads=33",
            "topk=5",
        ])
        .unwrap();
    check_sparse_mla(&odd, 50, 0.0, &[], fresh_seed(5));
}

/// Every sparse MLA kernel over FP8 rows (issue 13), dequantised as they are staged: against the
/// reference on the values the packed rows stand for, with each kernel's own tolerance (the same
/// inputs); latent widths with 1, 3 and 4 scales a row (padded to 4 slots), rope 0 and 64, heads
/// with a partial workgroup, split-k.
#[test]
fn sparse_mla_reads_fp8_rows() {
    fn fp8<'a>(overrides: &[&'a str]) -> Vec<&'a str> {
        let mut o = vec!["latent_dtype=fp8"];
        o.extend_from_slice(overrides);
        o
    }
    let tiny = RunConfig::tiny()
        .with_overrides(&fp8(&["batch=3", "topk=77"]))
        .unwrap();
    check_sparse_mla(&tiny, 500, 0.1, &[2], fresh_seed(60));
    let wide = RunConfig::small()
        .with_overrides(&fp8(&["heads=40", "batch=2", "topk=130"]))
        .unwrap();
    check_sparse_mla(&wide, 1000, 0.05, &[], fresh_seed(61));
    let odd = RunConfig::small()
        .with_overrides(&fp8(&["kv_lora_rank=320", "batch=2", "topk=90"]))
        .unwrap();
    check_sparse_mla(&odd, 400, 0.1, &[], fresh_seed(62));
    let split = RunConfig::small()
        .with_overrides(&fp8(&["batch=1", "topk=300", "heads=128"]))
        .unwrap();
    check_sparse_mla(&split, 2000, 0.1, &[], fresh_seed(63));
    let no_rope = RunConfig::tiny()
        .with_overrides(&fp8(&[
            "kv_lora_rank=192",
            "qk_rope_head_dim=0",
            "heads=33",
        ]))
        .unwrap();
    check_sparse_mla(&no_rope, 50, 0.0, &[], fresh_seed(64));
}

/// What FP8 rows cost against f16 rows of the same values (reported, not asserted: it is the
/// format's error, not a kernel's): the reference over each, at the real latent width.
#[test]
fn fp8_rows_against_f16_rows() {
    let cfg = RunConfig::small()
        .with_overrides(&["heads=16", "batch=2", "topk=256", "dtype=f32"])
        .unwrap();
    let p = SparseMlaProblem::random(&cfg, 2000, 0.0, &[], fresh_seed(65));
    let (o8, l8) = p.stored_as(Dtype::Fp8).reference();
    let (o16, l16) = p.stored_as(Dtype::F16).reference();
    let (o32, l32) = p.reference();
    let err = |a: &[f32], b: &[f32]| compare("", a, b, 1.0, 1.0).unwrap();
    eprintln!(
        "reference over FP8 rows vs f32 rows: o_lat {:e}, lse {:e}; f16 rows vs f32 rows: o_lat \
         {:e}, lse {:e}",
        err(&o8, &o32),
        err(&l8, &l32),
        err(&o16, &o32),
        err(&l16, &l32)
    );
}

#[test]
fn sparse_mla_all_ids_invalid_gives_zero_and_neg_inf() {
    let cfg = RunConfig::tiny()
        .with_overrides(&["batch=2", "topk=70"])
        .unwrap();
    check_sparse_mla(&cfg, 10, 1.0, &[], fresh_seed(6));
    check_sparse_mla(&cfg, 10, 0.0, &[0], fresh_seed(7));
}

#[test]
fn lse_merge_matches_reference() {
    let ctx = ctx();
    let kernel = LseMerge::new(ctx).unwrap();
    // 333 rows × 64 dims: not a multiple of 256 elements; rows with one or both parts empty
    let p = LseMergeProblem::random(333, 64, &[0, 5, 17], &[5, 9], fresh_seed(8));
    let (o, lse) = p.run(ctx, &kernel).unwrap();
    let (want_o, want_lse) = p.reference();
    compare("o", &o, &want_o, 1e-6, 1e-5).unwrap();
    compare("lse", &lse, &want_lse, 1e-6, 1e-6).unwrap();
    assert_eq!(lse[5], f32::NEG_INFINITY);
}

/// Attention over a set split in two and merged equals attention over the whole set: the
/// kernel-level version of the identity the offload overlap relies on.
#[test]
fn split_attention_then_merge_equals_one_pass() {
    let ctx = ctx();
    let cfg = RunConfig::small()
        .with_overrides(&["heads=16", "batch=2", "topk=96"])
        .unwrap();
    let full = SparseMlaProblem::random(&cfg, 400, 0.0, &[], fresh_seed(9));
    let k = cfg.model.topk as usize;
    let half = |first: bool| {
        let mut p = SparseMlaProblem {
            cfg: cfg.clone(),
            q: full.q.clone(),
            ids: full.ids.clone(),
            seqs: full.seqs.clone(),
            rows: full.rows.clone(),
        };
        for (i, id) in p.ids.iter_mut().enumerate() {
            if ((i % k) < k / 3) != first {
                *id = -1;
            }
        }
        p
    };
    for kernel in paths(ctx, cfg.latent_dtype) {
        let mla = SparseMla::with(ctx, &cfg.sparse_mla_shape(), kernel).unwrap();
        let (a, b) = (
            half(true).run(ctx, &mla, None).unwrap(),
            half(false).run(ctx, &mla, None).unwrap(),
        );
        let merged = LseMergeProblem {
            dim: cfg.model.kv_lora_rank as usize,
            parts: [a, b],
        }
        .run(ctx, &LseMerge::new(ctx).unwrap())
        .unwrap();
        let one_pass = full.run(ctx, &mla, None).unwrap();
        // the coop kernel rounds each part's P to f16 on its own: the two sides may differ by
        // twice its bound
        let o_atol = match kernel {
            MatrixPath::Fma => 1e-5,
            MatrixPath::Coop => 2.0 * sparse_mla_coop_o_lat_tol(k).0,
        };
        compare("merged o", &merged.0, &one_pass.0, o_atol, 1e-4).unwrap();
        compare("merged lse", &merged.1, &one_pass.1, 1e-5, 1e-5).unwrap();
    }
}

/// Each kernel's shape states its limits once: the kernel, the configuration and the engine all
/// give the same message, naming the field, the value and the allowed range.
#[test]
fn kernels_reject_shapes_they_cannot_handle() {
    let ctx = ctx();
    let indexer = |heads, dim| IndexerShape {
        heads,
        dim,
        dtype: Dtype::F16,
    };
    let e = Indexer::new(ctx, &indexer(12, 64)).unwrap_err().to_string();
    assert!(
        e.contains("index_heads = 12") && e.contains("8 ..= 64, a multiple of 8"),
        "{e}"
    );
    let e = IndexerNaive::new(ctx, &indexer(16, 40))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("index_head_dim = 40") && e.contains("multiple of 32"),
        "{e}"
    );
    // FP8 keys: one scale a key, so at most 128 dims
    let fp8 = IndexerShape {
        heads: 64,
        dim: 160,
        dtype: Dtype::Fp8,
    };
    let e = Indexer::new(ctx, &fp8).unwrap_err().to_string();
    assert!(
        e.contains("index_head_dim (fp8 keys) = 160") && e.contains("32 ..= 128"),
        "{e}"
    );
    for k in [0, 4096] {
        let e = TopK::new(ctx, &TopKShape { k }).unwrap_err().to_string();
        assert!(
            e.contains(&format!("topk = {k}")) && e.contains("1 ..= 2048"),
            "{e}"
        );
    }
    let mut bad = RunConfig::tiny();
    bad.model.kv_lora_rank = 520;
    let from_kernel = SparseMla::new(ctx, &bad.sparse_mla_shape())
        .unwrap_err()
        .to_string();
    let from_naive = SparseMlaNaive::new(ctx, &bad.sparse_mla_shape())
        .unwrap_err()
        .to_string();
    let from_config = bad.validate().unwrap_err().to_string();
    assert!(from_kernel.contains("kv_lora_rank = 520") && from_kernel.contains("64 ..= 512"));
    assert_eq!(from_kernel, from_config);
    assert_eq!(from_kernel, from_naive);
}

/// In CI the adapter must be the Vulkan one: a silent fall-back to GL would hide failures.
#[test]
fn ci_runs_on_vulkan() {
    if std::env::var_os("CI").is_none() {
        eprintln!("CI not set: not checking the backend");
        return;
    }
    assert_eq!(
        ctx().report.backend,
        "Vulkan",
        "CI must run on the Vulkan backend; got {}",
        ctx().report
    );
}

/// The output digests equal the reference bit for bit, over steps, for two buffers in one
/// dispatch whose sizes are not multiples of the workgroup, and a one-bit change changes them.
#[test]
fn digest_matches_reference() {
    use ess_wgpu::kernels::Digest;
    use ess_wgpu::kernels::digest::DigestArgs;
    let ctx = ctx();
    let seed = fresh_seed(31);
    let mut rng = ess_wgpu::workload::Rng::new(seed);
    let (words, words2) = (70_001usize, 333usize);
    let data: Vec<u32> = (0..words).map(|_| rng.next_u64() as u32).collect();
    let data2: Vec<u32> = (0..words2).map(|_| rng.next_u64() as u32).collect();
    let buf = ctx.upload("data", &data).unwrap();
    let buf2 = ctx.upload("data2", &data2).unwrap();
    let clock = ctx.storage("clock", 16).unwrap();
    let digest = ctx.upload("digest", &[0u32; 8]).unwrap();
    let d = Digest::new(ctx).unwrap().bind(
        ctx,
        &DigestArgs {
            clock: &clock,
            data: &buf,
            words: words as u32,
            data2: &buf2,
            words2: words2 as u32,
            digest: &digest,
            slot: 1,
            salt: 77,
        },
    );
    let mut want = [0u32; 4];
    let add = |w: &mut [u32], r: [u32; 2]| {
        w[0] = w[0].wrapping_add(r[0]);
        w[1] = w[1].wrapping_add(r[1]);
    };
    for step in [1u32, 2, 9] {
        ctx.write(&clock, 0, bytemuck::bytes_of(&step));
        ctx.run_pass(None, |p| d.record(p)).unwrap();
        add(&mut want[..2], ess_wgpu::reference::digest(&data, step, 77));
        add(
            &mut want[2..],
            ess_wgpu::reference::digest(&data2, step, 78),
        );
    }
    let got: Vec<u32> = ctx.read(&digest).unwrap();
    assert_eq!(&got[2..6], &want, "seed {seed}");
    assert_eq!(
        (got[0], got[1], got[6], got[7]),
        (0, 0, 0, 0),
        "other slots written"
    );
    let mut flipped = data.clone();
    flipped[words - 1] ^= 1 << 17;
    assert_ne!(
        ess_wgpu::reference::digest(&flipped, 1, 77),
        ess_wgpu::reference::digest(&data, 1, 77)
    );
}

/// The GPU's step-to-step overlap sums equal the reference's, with invalid ids, a short row and
/// a k that is not a multiple of the workgroup.
#[test]
fn overlap_matches_reference() {
    use ess_wgpu::kernels::Overlap;
    use ess_wgpu::kernels::overlap::OverlapArgs;
    let ctx = ctx();
    let seed = fresh_seed(32);
    let mut rng = ess_wgpu::workload::Rng::new(seed);
    let (b, k, cap) = (3usize, 300usize, 1000u32);
    let clock = ctx.storage("clock", 16).unwrap();
    let topk = ctx.storage("topk", (b * k * 4) as u64).unwrap();
    let marks = ctx.upload("marks", &vec![0u32; b * cap as usize]).unwrap();
    let sums = ctx.upload("sums", &vec![0f32; b]).unwrap();
    let kernel = Overlap::new(ctx).unwrap();
    let d = kernel.bind(
        ctx,
        &OverlapArgs {
            clock: &clock,
            topk_indices: &topk,
            marks: &marks,
            overlap_sum: &sums,
            k: k as u32,
            capacity: cap,
            b0: 0,
            batch: b as u32,
        },
    );
    let mut prev: Vec<Vec<i32>> = vec![Vec::new(); b];
    let mut want = vec![0f64; b];
    for step in 1..=5u32 {
        let mut ids = vec![-1i32; b * k];
        for s in 0..b {
            // distinct ids: a random window of the tokens, some left invalid; sequence 2 short
            let valid = if s == 2 {
                40
            } else {
                k - rng.below(30) as usize
            };
            let start = rng.below((cap as usize - k) as u64) as usize / 50;
            for (i, id) in ids[s * k..][..valid].iter_mut().enumerate() {
                *id = (start + i) as i32;
            }
            if step > 1 {
                want[s] += ess_wgpu::reference::topk_overlap(&prev[s], &ids[s * k..][..k]);
            }
            prev[s] = ids[s * k..][..k].to_vec();
        }
        ctx.write(&topk, 0, bytemuck::cast_slice(&ids));
        ctx.write(&clock, 0, bytemuck::bytes_of(&step));
        ctx.run_pass(None, |p| d.record(p)).unwrap();
    }
    let got: Vec<f32> = ctx.read(&sums).unwrap();
    let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
    // f32 sums of 4 ratios in step order against f64: a few ulps
    compare("overlap_sum", &got, &want, 1e-6, 1e-6).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
}

/// One step of the synthetic queries' random walk equals the reference (f32 on both sides; the
/// GPU may fuse the multiply-add, so a few ulps), on a size that is not a multiple of 256.
#[test]
fn walk_matches_reference() {
    use ess_wgpu::kernels::Walk;
    use ess_wgpu::kernels::walk::WalkArgs;
    let ctx = ctx();
    let seed = fresh_seed(33);
    let mut rng = ess_wgpu::workload::Rng::new(seed);
    let n = 5_000usize;
    let mut want = rng.vec(n);
    let q = ctx.upload("q", &want).unwrap();
    let clock = ctx.upload("clock", &[0u32, 7, 0, 0]).unwrap();
    let d = Walk::new(ctx).unwrap().bind(
        ctx,
        &WalkArgs {
            clock: &clock,
            q: &q,
            n: n as u32,
            layer: 3,
            salt: 0x1234,
            rho: 0.9,
        },
    );
    ctx.run_pass(None, |p| d.record(p)).unwrap();
    ess_wgpu::reference::walk_step(&mut want, 0x1234, 3, 7, 0.9);
    let got: Vec<f32> = ctx.read(&q).unwrap();
    compare("q", &got, &want, 1e-6, 1e-6).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
}

/// The GPU FP8 quantiser against reference::fp8, byte for byte, and its inverse value for value
/// (the kernels' e4m3 decoder): v32's latent row (512 + 64) and indexer key (128), a latent row
/// whose last block is short (200 + 6), the tiny model's (64 + 32, scales padded to 4 slots), a
/// 48-value key. Rows of random values at magnitudes from 2^-20 to 2^12, and edge rows: all zero
/// (the 1e-4 floor), negative zeros, values at 448 · 2^k (a scale of exactly 2^k), ties at the
/// e4m3 step (1.0625, 1.1875 with scale 1) and in the subnormal range (2^-10, 3 · 2^-10), values
/// under the smallest subnormal, and every finite e4m3 value.
#[test]
fn fp8_quant_matches_reference_byte_for_byte() {
    use ess_wgpu::kernels::Fp8Quant;
    use ess_wgpu::kernels::fp8_quant::Fp8RowShape;
    use ess_wgpu::reference::fp8::{self, ScaleRule};
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let mut rng = Rng::new(fresh_seed(40));
    let shapes = [
        Fp8RowShape::latent(512, 64),
        Fp8RowShape::key(128),
        Fp8RowShape::latent(200, 6),
        Fp8RowShape::latent(64, 32),
        Fp8RowShape::key(48),
        Fp8RowShape::key_cache(128),
        Fp8RowShape::key_cache(32),
    ];
    for shape in shapes {
        let (kv, rope) = (shape.kv as usize, shape.rope as usize);
        let key = shape == Fp8RowShape::key(shape.kv);
        let layout = ess_wgpu::workload::RowLayout::Key { dim: kv };
        let pack = |r: &[f32]| match key {
            true => fp8::pack_index_key(r, ScaleRule::Ue8m0),
            false => fp8::pack_latent_row(&r[..kv], &r[kv..], ScaleRule::Ue8m0),
        };
        let unpack = |b: &[u8]| match key {
            true => fp8::unpack_index_key(b, kv),
            false => fp8::unpack_latent_row(b, kv, rope),
        };
        let width = kv + rope;
        let mut rows: Vec<Vec<f32>> = (0..37)
            .map(|i| {
                let mag = 2f32.powi(i % 33 - 20);
                (0..width).map(|_| rng.range(-mag, mag)).collect()
            })
            .collect();
        rows.push(vec![0.0; width]);
        rows.push(vec![-0.0; width]);
        let ties = [
            448.0,
            1.0625,
            1.1875,
            -1.0625,
            2f32.powi(-10),
            3.0 * 2f32.powi(-10),
        ];
        let tiny = [448.0, 2f32.powi(-11), -2f32.powi(-11), 1e-30, -0.0, 0.25];
        // every finite e4m3 value, positive then negative: with ±448 in each block the scale is 1,
        // so the bytes are every code, and reading them back checks the kernels' decoder on each
        let codes: Vec<f32> = (0u8..=0x7e)
            .chain(0x80..=0xfe)
            .map(fp8::e4m3_decode)
            .collect();
        for pattern in [&ties[..], &tiny[..], &codes[..]] {
            rows.push((0..width).map(|i| pattern[i % pattern.len()]).collect());
        }
        rows.push(
            (0..width)
                .map(|i| 3584.0 * (i as f32 / width as f32 - 0.5))
                .collect(),
        );
        let n = rows.len();
        // rows one after another, or the key cache (values, then scales, then zeros to 16 bytes)
        let want: Vec<u8> = match shape.cache {
            true => fp8::pack_index_cache(&rows.concat(), kv, ScaleRule::Ue8m0),
            false => rows.iter().flat_map(|r| pack(r)).collect(),
        };
        let kernel = Fp8Quant::new(ctx, &shape).unwrap();
        let src = ctx.upload("fp8 src", &rows.concat()).unwrap();
        let dst = ctx.upload("fp8 dst", &vec![0xABu8; want.len()]).unwrap(); // poison
        let d = kernel.bind(ctx, &src, &dst, n as u32).unwrap();
        ctx.run_pass(None, |p| d.record(p)).unwrap();
        let got: Vec<u8> = ctx.read(&dst).unwrap();
        let row = shape.row_bytes() as usize;
        let written = n * row; // (the key cache's padding is not the kernel's to write)
        if let Some(i) = (0..written).find(|&i| got[i] != want[i]) {
            panic!(
                "{shape:?}: byte {i} (row {}) is {:#04x}, the reference's {:#04x}",
                i / row,
                got[i],
                want[i]
            );
        }
        // and back: every value bit for bit what reference::fp8 reads from the same bytes
        let values = ctx
            .upload("fp8 values", &vec![f32::NAN; n * width])
            .unwrap(); // poison
        let d = kernel.bind_dequant(ctx, &dst, &values, n as u32).unwrap();
        ctx.run_pass(None, |p| d.record(p)).unwrap();
        let back: Vec<f32> = ctx.read(&values).unwrap();
        let want_values: Vec<f32> = match shape.cache {
            true => ess_wgpu::workload::values_of(&want, ess_wgpu::Dtype::Fp8, layout),
            false => want.chunks(row).flat_map(unpack).collect(),
        };
        for (i, (g, w)) in back.iter().zip(&want_values).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{shape:?}, value {i}: {g} vs {w}");
        }
        eprintln!("fp8_quant {kv} + {rope}: {n} rows of {row} bytes, identical, and back");
    }
}

/// The shader that makes cache rows (`fill.wgsl`: prefill and each step's new token) stores
/// exactly what the CPU stores for the same values, byte for byte, in every format: f16, f32,
/// FP8 latent rows (quantised on the GPU by lib/fp8_pack.wgsl) and the FP8 key cache. Ragged
/// ranges into a poisoned buffer, then each sequence's newest row over them.
#[test]
fn fill_stores_the_reference_bytes_in_every_format() {
    use ess_wgpu::config::Dtype;
    use ess_wgpu::kernels::Fill;
    use ess_wgpu::kernels::fill::{FillRange, FillRows};
    use ess_wgpu::reference::fill_row;
    use ess_wgpu::workload::{RowLayout, storage_bytes};
    let ctx = ctx();
    let fill = Fill::new(ctx).unwrap();
    let (salt, layer, scale) = (fresh_seed(70) as u32, 3, 1.5);
    let layouts = [
        RowLayout::Latent { kv: 512, rope: 64 },
        RowLayout::Latent { kv: 64, rope: 32 },
        RowLayout::Key { dim: 128 },
        RowLayout::Key { dim: 32 },
    ];
    let counts = [5u32, 0, 3]; // prefill rows per sequence; sequence b's rows start at 8b
    let cap = 8u32;
    let rows = counts.len() as u32 * cap;
    for layout in layouts {
        for dtype in [Dtype::F16, Dtype::F32, Dtype::Fp8] {
            let width = layout.width();
            // the whole buffer's values: rows past a sequence's count stay poison, compared below
            let values: Vec<f32> = (0..rows)
                .flat_map(|r| {
                    let (b, i) = (r / cap, r % cap);
                    let newest = i == counts[b as usize];
                    fill_row(salt, layer, b, i, width, if newest { 1.0 } else { scale })
                })
                .collect();
            let want = storage_bytes(&values, dtype, layout);
            let dest = ctx.upload("dest", &vec![0xEEu8; want.len()]).unwrap(); // poison
            let ranges: Vec<FillRange> = (0..counts.len() as u32)
                .map(|b| FillRange {
                    base: b * cap,
                    start: 0,
                    count: counts[b as usize],
                })
                .collect();
            let what = FillRows { dtype, layout };
            let ds = fill
                .bind(ctx, &dest, what, salt, layer, scale, 0, &ranges)
                .unwrap();
            // then each sequence's next token, as a decode step writes it: token T_b − 1 of the
            // table (first row, T_b) at row first + T_b − 1 (unit scale, as the engine's)
            let seq: Vec<u32> = (0..counts.len() as u32)
                .flat_map(|b| [b * cap, counts[b as usize] + 1])
                .collect();
            let seq = ctx.upload("seq", &seq).unwrap();
            let n = counts.len() as u32;
            let newest = fill.bind_newest(ctx, &dest, &seq, what, salt, layer, 0, n, false);
            ctx.run_pass(None, |p| ds.iter().for_each(|d| d.record(p)))
                .unwrap();
            let got_main: Vec<u8> = ctx.read(&dest).unwrap();
            ctx.run_pass(None, |p| newest.record(p)).unwrap();
            let got: Vec<u8> = ctx.read(&dest).unwrap();
            let row_bytes = want.len() / rows as usize;
            let same = |r: u32| match (dtype, layout) {
                // the key cache: a key's values, then its scale after all of them
                (Dtype::Fp8, RowLayout::Key { dim }) => {
                    let (v, s) = (r as usize * dim, rows as usize * dim + 4 * r as usize);
                    got[v..v + dim] == want[v..v + dim] && got[s..s + 4] == want[s..s + 4]
                }
                _ => {
                    let at = r as usize * row_bytes;
                    got[at..at + row_bytes] == want[at..at + row_bytes]
                }
            };
            for r in 0..rows {
                let (i, count) = (r % cap, counts[(r / cap) as usize]);
                assert!(
                    i > count || same(r),
                    "{dtype} {layout:?}: row {r} differs from the reference"
                );
            }
            assert_ne!(
                got_main, got,
                "{dtype} {layout:?}: the newest rows were not written"
            );
            eprintln!("fill {dtype} {layout:?}: rows identical to the reference");
        }
    }
}

/// The FP8 indexer against DeepSeek's `fp8_index` formula itself (reference::fp8::fp8_index_score,
/// in f64, on the queries quantised by reference::fp8::quantize_rows and the key cache packed by
/// reference::fp8::pack_index_cache), on every kernel the adapter has and version 1: ragged lengths, key values
/// of several magnitudes. The tolerance is the indexer's: f32 sums of exact e4m3 products.
#[test]
fn indexer_fp8_matches_the_fp8_index_formula() {
    use ess_wgpu::kernels::indexer::IndexerArgs;
    use ess_wgpu::problems::{pack_seqs, seq_table};
    use ess_wgpu::reference::fp8::{
        self, ScaleRule, fp8_index_score, pack_index_cache, quantize_rows,
    };
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    for (i, &(heads, dim)) in [(64usize, 128usize), (8, 64), (16, 32), (40, 96)]
        .iter()
        .enumerate()
    {
        let mut rng = Rng::new(fresh_seed(50 + i as u64));
        let lens = [0usize, 1, 255, 257, 700, 33];
        let (b, seqs) = (lens.len(), pack_seqs(&lens, 3));
        let rows = seqs.last().map_or(0, |s| s.first_row + s.len + 3);
        let mut q: Vec<f32> = rng.vec(b * heads * dim);
        q.iter_mut().step_by(dim).for_each(|x| *x = 0.0);
        let w: Vec<f32> = rng.vec(b * heads);
        // every fifth key: 448 first (a scale of 1), then the e4m3 subnormals and smallest
        // normals themselves, so each kernel's decoder reads those codes (a decoder that flushed
        // subnormals would lose 2^-9 .. 7 · 2^-9 a value); the queries' dim 0 is zero, so the 448
        // adds nothing and the small terms are what the score is made of
        let codes: Vec<f32> = (1u8..=0x0f)
            .chain(0x81..=0x8f)
            .map(fp8::e4m3_decode)
            .collect();
        let keys: Vec<f32> = (0..rows)
            .flat_map(|r| {
                let mag = 2f32.powi(r as i32 % 9 - 4);
                (0..dim)
                    .map(|i| match (r % 5, i) {
                        (0, 0) => 448.0,
                        (0, _) => codes[(r * 7 + i) % codes.len()],
                        _ => rng.range(-mag, mag),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let cache = pack_index_cache(&keys, dim, ScaleRule::Ue8m0);
        let (q_bytes, q_scales) = quantize_rows(&q, dim, ScaleRule::Ue8m0);
        let stride = 700;
        let mut want = vec![f32::NAN; b * stride];
        let mut magnitude = vec![0f64; b * stride];
        for (bi, s) in seqs.iter().enumerate() {
            let qh = &q_bytes[bi * heads * dim..][..heads * dim];
            let qs = &q_scales[bi * heads..][..heads];
            for t in 0..s.len {
                let r = s.first_row + t;
                let k_s = f32::from_le_bytes(cache[rows * dim + 4 * r..][..4].try_into().unwrap());
                let key = &cache[r * dim..][..dim];
                let wh = &w[bi * heads..][..heads];
                let score = fp8_index_score(qh, qs, wh, key, k_s);
                want[bi * stride + t] = score as f32;
                // the size of the terms: Σ_h |w_h q_s| k_s Σ_d |q̂ k̂| (f32 sums of D products, then
                // of H heads, err by at most (D + H) · 2^-24 of it; keys of every code make it
                // large against the score)
                let d = |x: u8| fp8::e4m3_decode(x).abs() as f64;
                magnitude[bi * stride + t] = (0..heads)
                    .map(|h| {
                        let dot: f64 = (0..dim).map(|i| d(qh[h * dim + i]) * d(key[i])).sum();
                        (wh[h] * qs[h]).abs() as f64 * k_s as f64 * dot
                    })
                    .sum::<f64>();
            }
        }
        let shape = IndexerShape {
            heads: heads as u32,
            dim: dim as u32,
            dtype: Dtype::Fp8,
        };
        let run = |bind: &dyn Fn(&IndexerArgs) -> ess_wgpu::kernels::Dispatch| -> Vec<f32> {
            let (qbuf, kbuf, wbuf) = (
                ctx.upload("q", &pack_index_cache(&q, dim, ScaleRule::Ue8m0))
                    .unwrap(),
                ctx.upload("keys", &cache).unwrap(),
                ctx.upload("w", &w).unwrap(),
            );
            let seq = ctx.upload("seq", &seq_table(&seqs)).unwrap();
            let scores = ctx.upload("scores", &vec![f32::NAN; b * stride]).unwrap(); // poison
            let args = IndexerArgs {
                q: &qbuf,
                w: &wbuf,
                keys: &kbuf,
                seq: &seq,
                scores: &scores,
                b0: 0,
                batch: b as u32,
                max_len: 700,
                score_stride: stride as u32,
            };
            let d = bind(&args);
            ctx.run_pass(None, |p| d.record(p)).unwrap();
            ctx.read(&scores).unwrap()
        };
        let mut runs: Vec<(String, Vec<f32>)> = paths(ctx, shape.dtype)
            .into_iter()
            .map(|k| {
                let kernel = Indexer::with(ctx, &shape, k).unwrap();
                (k.to_string(), run(&|a| kernel.bind(ctx, a)))
            })
            .collect();
        let naive = IndexerNaive::new(ctx, &shape).unwrap();
        runs.push(("version 1".into(), run(&|a| naive.bind(ctx, a))));
        // INDEXER_TOL, widened where the terms are large by the f32 summation bound
        let (atol, rtol) = INDEXER_TOL;
        let gamma = (dim + heads) as f64 * 2f64.powi(-24);
        for (name, got) in runs {
            let mut worst = 0f64;
            for (i, (&g, &wv)) in got.iter().zip(&want).enumerate() {
                if wv.is_nan() {
                    assert!(g.is_nan(), "{name} {heads}x{dim}: [{i}] written past T");
                    continue;
                }
                let tol = atol as f64 + rtol as f64 * wv.abs() as f64 + gamma * magnitude[i];
                let err = (g as f64 - wv as f64).abs();
                assert!(
                    err <= tol,
                    "{name} {heads}x{dim}: [{i}] got {g:e}, want {wv:e} (tolerance {tol:e})"
                );
                worst = worst.max(err / tol);
            }
            eprintln!(
                "indexer fp8 {name} {heads}x{dim}: largest error {worst:.2} of its tolerance"
            );
        }
    }
}

/// A zero-copy gather fused into the coop indexer's dispatch (issue 14's mechanism,
/// `shaders/indexer_gather.wgsl`) gives exactly what the two dispatches give: the same scores
/// bit for bit and the same pool bytes, with ragged copy lists (an empty one included), a
/// gather that starts inside its host-store group, and f16 and FP8 keys. Coop adapters only (lavapipe has no cooperative matrices: skipped there).
#[test]
fn fused_gather_equals_the_two_dispatches() {
    use ess_wgpu::kernels::Transfer;
    use ess_wgpu::kernels::indexer::FusedGather;
    use ess_wgpu::kernels::transfer::TransferArgs;
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    if ctx.matrix != MatrixPath::Coop {
        eprintln!("fused gather: no coop matrix path on this adapter, not run");
        return;
    }
    for dtype in [Dtype::F16, Dtype::Fp8] {
        let (heads, dim) = (64usize, 128usize);
        let p = IndexerProblem::random(heads, dim, dtype, &[700, 1, 300], fresh_seed(80));
        let shape = IndexerShape {
            heads: heads as u32,
            dim: dim as u32,
            dtype,
        };
        let indexer = Indexer::with(ctx, &shape, MatrixPath::Coop).unwrap();
        // the gather: sequences 1 and 2 of a host group of 3 (k = 40, 50 slots, 200 host rows
        // each): the host rows are addressed from the group's first sequence
        let (gb, k, slots, cap, rb) = (3u32, 40u32, 50u32, 200u32, 656u64);
        let mut rng = Rng::new(fresh_seed(81));
        let host_bytes: Vec<u8> = (0..gb as u64 * cap as u64 * rb)
            .map(|_| rng.below(256) as u8)
            .collect();
        let misses = [40u32, 0, 17];
        let mut copies = vec![[0u32; 2]; (gb * k) as usize];
        for b in 0..gb as usize {
            for r in 0..misses[b] as usize {
                copies[b * k as usize + r] = [rng.below(cap as u64) as u32, r as u32];
            }
        }
        let counts: Vec<[u32; 2]> = misses.iter().map(|&m| [m, k - m]).collect();
        let (host, copies_buf, counts_buf) = (
            ctx.upload("host", &host_bytes).unwrap(),
            ctx.upload("copies", &copies).unwrap(),
            ctx.upload("counts", &counts).unwrap(),
        );
        // one poisoned pool for each way (index: fused)
        let pools: [_; 2] = std::array::from_fn(|_| {
            let pool = ctx.storage("pool", gb as u64 * slots as u64 * rb).unwrap();
            ctx.fill(&pool, 0xDEAD_BEEF);
            pool
        });
        let transfer = Transfer::new(ctx, rb, k, slots, cap).unwrap();
        let run = |fused: bool| -> (Vec<f32>, Vec<u8>) {
            let pool = &pools[fused as usize];
            let scores = p
                .run_with(
                    ctx,
                    |args| match fused {
                        true => {
                            let g = FusedGather {
                                copies: &copies_buf,
                                counts: &counts_buf,
                                host: &host,
                                host_b0: 0,
                                pool,
                                row_bytes: rb,
                                k,
                                slots,
                                capacity: cap,
                                b0: 1,
                                batch: gb - 1,
                            };
                            Ok(vec![indexer.bind_with_gather(ctx, args, &g)?])
                        }
                        false => {
                            let targs = TransferArgs {
                                copies: &copies_buf,
                                counts: &counts_buf,
                                pool,
                                b0: 1,
                                batch: gb - 1,
                            };
                            Ok(vec![
                                indexer.bind(ctx, args),
                                transfer.gather(ctx, &targs, &host, 0),
                            ])
                        }
                    },
                    None,
                )
                .unwrap();
            (scores, ctx.read(pool).unwrap())
        };
        let (s_two, p_two) = run(false);
        let (s_one, p_one) = run(true);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&s_one), bits(&s_two), "{dtype}: scores differ");
        assert_eq!(p_one, p_two, "{dtype}: pools differ");
        // and the gather did its job: slot r of sequence b holds host row copies[b][r].0
        let row = |b: usize, t: u32| {
            &host_bytes[((b as u64 * cap as u64 + t as u64) * rb) as usize..][..rb as usize]
        };
        for b in 1..gb as usize {
            for r in 0..misses[b] as usize {
                let at = ((b as u64 * slots as u64 + r as u64) * rb) as usize;
                assert_eq!(
                    &p_one[at..at + rb as usize],
                    row(b, copies[b * k as usize + r][0])
                );
            }
        }
        // sequence 0 is outside the gather (b0 = 1 inside a host group starting at 0)
        let seq0 = &p_one[..(slots as u64 * rb) as usize];
        assert!(seq0.chunks(4).all(|w| w == 0xDEAD_BEEFu32.to_le_bytes()));
        eprintln!("fused gather {dtype}: scores and pool identical to the two dispatches");
    }
}

/// `DaOrder` over `[batch, k]` slot ids with their copy lists and counts (uploaded), outputs
/// poisoned first: the (da_ids, da_seq) buffers it wrote.
#[allow(clippy::too_many_arguments)]
fn run_da_order(
    ctx: &ess_wgpu::GpuContext,
    ids: &[i32],
    copies: &[[u32; 2]],
    counts: &[[u32; 2]],
    k: u32,
    slots: u32,
    batch: u32,
) -> (wgpu::Buffer, wgpu::Buffer) {
    use ess_wgpu::kernels::DaOrder;
    use ess_wgpu::kernels::da_order::DaOrderArgs;
    let (ids_buf, copies_buf, counts_buf) = (
        ctx.upload("slot ids", ids).unwrap(),
        ctx.upload("copies", copies).unwrap(),
        ctx.upload("counts", counts).unwrap(),
    );
    let da_ids = ctx.storage("da ids", batch as u64 * k as u64 * 4).unwrap();
    let da_seq = ctx.storage("da seq", batch as u64 * 8).unwrap();
    ctx.fill(&da_ids, 0xDEAD_BEEF);
    ctx.fill(&da_seq, 0xDEAD_BEEF);
    let d = DaOrder::new(ctx)
        .unwrap()
        .bind(
            ctx,
            &DaOrderArgs {
                slot_ids: &ids_buf,
                copies: &copies_buf,
                counts: &counts_buf,
                da_ids: &da_ids,
                da_seq: &da_seq,
                k,
                slots,
                b0: 0,
                batch,
            },
        )
        .unwrap();
    ctx.run_pass(None, |p| d.record(p)).unwrap();
    (da_ids, da_seq)
}

/// DA's order (`shaders/da_order.wgsl`) against `reference::da_order`: random slot ids with −1s,
/// random misses among them (none, some, all), k not a multiple of the workgroup's 256 threads,
/// outputs poisoned first.
#[test]
fn da_order_equals_the_reference() {
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let mut rng = Rng::new(fresh_seed(90));
    for (k, slots) in [(40u32, 41u32), (300, 1000), (2048, 16_384), (2047, 2049)] {
        let batch = 4u32;
        let mut ids = vec![-1i32; (batch * k) as usize];
        let mut copies = vec![[0u32; 2]; (batch * k) as usize];
        let mut counts = vec![[0u32; 2]; batch as usize];
        let mut want = Vec::new();
        for b in 0..batch as usize {
            // distinct slots for the valid ids (sequence b has k − 7b of them), misses among them
            let valid = (k as usize).saturating_sub(7 * b);
            let mut pool: Vec<u32> = (0..slots).collect();
            for i in 0..valid {
                let j = i + rng.below((slots as usize - i) as u64) as usize;
                pool.swap(i, j);
                ids[b * k as usize + i] = pool[i] as i32;
            }
            let miss_rate = [0.0, 0.1, 1.0, 0.5][b];
            let mut m = 0;
            for &slot in &pool[..valid] {
                if (rng.below(1000) as f64) < miss_rate * 1000.0 {
                    copies[b * k as usize + m] = [rng.below(1 << 20) as u32, slot];
                    m += 1;
                }
            }
            counts[b] = [m as u32, (valid - m) as u32];
            let missed: Vec<u32> = copies[b * k as usize..][..m].iter().map(|c| c[1]).collect();
            want.push(ess_wgpu::reference::da_order(
                &ids[b * k as usize..][..k as usize],
                &missed,
            ));
        }
        let (da_ids, da_seq) = run_da_order(ctx, &ids, &copies, &counts, k, slots, batch);
        let got: Vec<i32> = ctx.read(&da_ids).unwrap();
        let seq: Vec<[u32; 2]> = ctx.read(&da_seq).unwrap();
        for (b, (w_ids, w_hits)) in want.iter().enumerate() {
            assert_eq!(
                &got[b * k as usize..][..k as usize],
                &w_ids[..],
                "k {k}, sequence {b}"
            );
            assert_eq!(seq[b], [b as u32 * slots, *w_hits], "k {k}, sequence {b}");
        }
    }
    eprintln!("da_order: 4 shapes × 4 sequences equal to the reference");
}

/// DA's two sparse MLA dispatches (`SparseMla::bind_da`: the misses gathered from host memory
/// inside the first, which scores the tiles of hits; the second scores the rest and attends)
/// give exactly what sparse MLA gives over the same ordered ids with every row already in the
/// pool, and leave the pool as a plain gather would. The missed rows' pool slots are poisoned
/// first. Sequences with no misses, all misses, and a short one (−1 ids); k not a multiple of
/// the 256-id score tile. Coop adapters only (skipped on lavapipe).
#[test]
fn da_sparse_mla_equals_gather_then_attend() {
    use ess_wgpu::kernels::indexer::FusedGather;
    use ess_wgpu::kernels::sparse_mla::{SparseMlaArgs, SparseMlaShape};
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    if ctx.matrix != MatrixPath::Coop {
        eprintln!("DA sparse MLA: no coop matrix path on this adapter, not run");
        return;
    }
    let (batch, k, slots, cap) = (4u32, 600u32, 700u32, 900u32);
    for dtype in [Dtype::F16, Dtype::Fp8] {
        let shape = SparseMlaShape {
            heads: 64,
            kv: 512,
            rope: 64,
            topk: k,
            dtype,
            softmax_scale: 0.07,
        };
        let kernel = SparseMla::with(ctx, &shape, MatrixPath::Coop).unwrap();
        let rb = dtype.row_bytes(512, 64);
        let mut rng = Rng::new(fresh_seed(95));
        // valid rows of the configured format, made by the CPU reference's packing
        let row = |rng: &mut Rng| -> Vec<u8> {
            let v: Vec<f32> = (0..576).map(|_| rng.range(-1.0, 1.0)).collect();
            let layout = ess_wgpu::workload::RowLayout::Latent { kv: 512, rope: 64 };
            ess_wgpu::workload::storage_bytes(&v, dtype, layout)
        };
        let mut pool = vec![0u8; (batch * slots) as usize * rb as usize];
        let mut host = vec![0u8; (batch * cap) as usize * rb as usize];
        let mut ids = vec![-1i32; (batch * k) as usize];
        let mut copies = vec![[0u32; 2]; (batch * k) as usize];
        let mut counts = vec![[0u32; 2]; batch as usize];
        for b in 0..batch as usize {
            let valid = if b == 3 { 130 } else { k as usize };
            let miss_rate = [0.0, 1.0, 0.15, 0.5][b];
            let mut free: Vec<u32> = (0..slots).collect();
            let mut m = 0usize;
            for j in 0..valid {
                let i = j + rng.below((slots as usize - j) as u64) as usize;
                free.swap(j, i);
                let slot = free[j];
                ids[b * k as usize + j] = slot as i32;
                let r = row(&mut rng);
                let at = (b * slots as usize + slot as usize) * rb as usize;
                pool[at..at + rb as usize].copy_from_slice(&r);
                if (rng.below(1000) as f32) < miss_rate * 1000.0 {
                    let token = (j as u32 * 7 + b as u32) % cap;
                    let h = (b * cap as usize + token as usize) * rb as usize;
                    host[h..h + rb as usize].copy_from_slice(&r);
                    copies[b * k as usize + m] = [token, slot];
                    m += 1;
                }
            }
            counts[b] = [m as u32, (valid - m) as u32];
        }
        // the pool before the fetch: the missed rows' slots poisoned
        let mut poisoned = pool.clone();
        for b in 0..batch as usize {
            for c in &copies[b * k as usize..][..counts[b][0] as usize] {
                let at = (b * slots as usize + c[1] as usize) * rb as usize;
                poisoned[at..at + rb as usize].fill(0xFF);
            }
        }
        let q: Vec<f32> = (0..batch * 64 * 576)
            .map(|_| rng.range(-1.0, 1.0))
            .collect();
        let up = |what: &str, bytes: &[u8]| ctx.upload(what, bytes).unwrap();
        let q_buf = ctx.upload("q", &q).unwrap();
        let (copies_buf, counts_buf) = (
            ctx.upload("copies", &copies).unwrap(),
            ctx.upload("counts", &counts).unwrap(),
        );
        let host_buf = up("host", &host);
        let (da_ids, da_seq) = run_da_order(ctx, &ids, &copies, &counts, k, slots, batch);
        let run = |rows: &wgpu::Buffer, da: bool| -> (Vec<u32>, Vec<u32>) {
            let scratch = kernel.scratch(ctx, batch).unwrap();
            let o_lat = ctx.storage("o_lat", (batch * 64 * 512) as u64 * 4).unwrap();
            let lse = ctx.storage("lse", (batch * 64) as u64 * 4).unwrap();
            ctx.fill(&o_lat, 0x7FC0_0BAD);
            ctx.fill(&lse, 0x7FC0_0BAD);
            ctx.fill(&scratch.scores, 0x7FC0_0BAD);
            let args = SparseMlaArgs {
                q: &q_buf,
                ids: &da_ids,
                seq: &da_seq,
                rows,
                scratch: &scratch,
                o_lat: &o_lat,
                lse: &lse,
                b0: 0,
                batch,
            };
            let ds = match da {
                true => {
                    let g = FusedGather {
                        copies: &copies_buf,
                        counts: &counts_buf,
                        host: &host_buf,
                        host_b0: 0,
                        pool: rows,
                        row_bytes: rb,
                        k,
                        slots,
                        capacity: cap,
                        b0: 0,
                        batch,
                    };
                    Vec::from(kernel.bind_da(ctx, &args, &g).unwrap())
                }
                false => vec![kernel.bind(ctx, &args)],
            };
            ctx.run_pass(None, |p| ds.iter().for_each(|d| d.record(p)))
                .unwrap();
            (ctx.read(&o_lat).unwrap(), ctx.read(&lse).unwrap())
        };
        let (full, fetched) = (up("pool", &pool), up("pool (misses poisoned)", &poisoned));
        let want = run(&full, false);
        let got = run(&fetched, true);
        assert_eq!(got.0, want.0, "{dtype}: o_lat differs");
        assert_eq!(got.1, want.1, "{dtype}: lse differs");
        assert!(got.1.iter().all(|&x| f32::from_bits(x).is_finite()));
        let after: Vec<u8> = ctx.read(&fetched).unwrap();
        assert!(after == pool, "{dtype}: the pool after DA's gather differs");
        eprintln!("DA sparse MLA {dtype}: identical to gather + sparse MLA, pool fetched");
    }
}

/// The model's per-token kernels (`shaders/model_ops.wgsl`) against `reference::model`: RMSNorm
/// and LayerNorm over rows whose length is not a multiple of the workgroup, RoPE in both layouts
/// on heads inside wider rows (positions up to 5000, the (cos, sin) table made in f64), and the
/// Hadamard rotation at 128 and 1024 values. Outputs poisoned first. Tolerance: f32 sums against
/// f64, |Δ| ≤ 1e-5 + 1e-5·|want| (the largest on lavapipe: 4.8e-7).
#[test]
fn model_ops_equal_the_reference() {
    use ess_wgpu::kernels::ModelOps;
    use ess_wgpu::kernels::model_ops::{Heads, rope_table};
    use ess_wgpu::reference::model::{RopeLayout, hadamard, layer_norm, rms_norm, rope};
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let ops = ModelOps::new(ctx).unwrap();
    let mut rng = Rng::new(fresh_seed(99));
    let tol = (1e-5f32, 1e-5f32);
    // norms
    let (rows, n) = (37u32, 300u32);
    let x: Vec<f32> = (0..rows * n).map(|_| rng.range(-2.0, 2.0)).collect();
    let w: Vec<f32> = (0..n).map(|_| rng.range(0.5, 1.5)).collect();
    let bias: Vec<f32> = (0..n).map(|_| rng.range(-0.5, 0.5)).collect();
    let (xb, wb, bb) = (
        ctx.upload("x", &x).unwrap(),
        ctx.upload("w", &w).unwrap(),
        ctx.upload("b", &bias).unwrap(),
    );
    let y = ctx.storage("y", (rows * n) as u64 * 4).unwrap();
    let mut worst = 0f32;
    for layer in [false, true] {
        ctx.fill(&y, 0x7FC0_0BAD);
        let d = ops.norm(ctx, &xb, &wb, layer.then_some(&bb), &y, rows, n, 1e-6);
        ctx.run_pass(None, |p| d.record(p)).unwrap();
        let got: Vec<f32> = ctx.read(&y).unwrap();
        let want: Vec<f32> = x
            .chunks(n as usize)
            .flat_map(|r| match layer {
                true => layer_norm(r, &w, &bias, 1e-6),
                false => rms_norm(r, &w, 1e-6),
            })
            .collect();
        worst = worst.max(compare("norm", &got, &want, tol.0, tol.1).unwrap());
    }
    // RoPE: 5 rows of 3 heads of 48 values, dims 32 .. 48 rotated
    let freqs: Vec<f64> = (0..8)
        .map(|i| 1.0 / 10_000f64.powf(i as f64 / 8.0))
        .collect();
    let table = ctx.upload("table", &rope_table(&freqs, 5001)).unwrap();
    let (rows, heads, stride) = (5u32, 3u32, 48u32);
    let pos: Vec<u32> = (0..rows).map(|_| rng.below(5001) as u32).collect();
    let posb = ctx.upload("positions", &pos).unwrap();
    let x: Vec<f32> = (0..rows * heads * stride)
        .map(|_| rng.range(-1.0, 1.0))
        .collect();
    for layout in [RopeLayout::Interleaved, RopeLayout::NeoX] {
        let xb = ctx.upload("x", &x).unwrap();
        let at = Heads {
            rows,
            n: heads * stride,
            heads,
            stride,
            off: 32,
            d: 16,
        };
        let d = ops.rope(ctx, &xb, &table, &posb, at, layout).unwrap();
        ctx.run_pass(None, |p| d.record(p)).unwrap();
        let got: Vec<f32> = ctx.read(&xb).unwrap();
        let mut want = x.clone();
        for (r, &p) in pos.iter().enumerate() {
            for h in 0..heads as usize {
                let at = (r * heads as usize + h) * stride as usize + 32;
                let v = rope(&x[at..at + 16], p, &freqs, layout);
                want[at..at + 16].copy_from_slice(&v);
            }
        }
        worst = worst.max(compare("rope", &got, &want, tol.0, tol.1).unwrap());
    }
    // Hadamard
    for d in [128u32, 1024] {
        let (rows, heads) = (3u32, 2u32);
        let x: Vec<f32> = (0..rows * heads * d)
            .map(|_| rng.range(-1.0, 1.0))
            .collect();
        let xb = ctx.upload("x", &x).unwrap();
        let at = Heads {
            rows,
            n: heads * d,
            heads,
            stride: d,
            off: 0,
            d,
        };
        let disp = ops.hadamard(ctx, &xb, at).unwrap();
        ctx.run_pass(None, |p| disp.record(p)).unwrap();
        let got: Vec<f32> = ctx.read(&xb).unwrap();
        let want: Vec<f32> = x.chunks(d as usize).flat_map(hadamard).collect();
        worst = worst.max(compare("hadamard", &got, &want, tol.0, tol.1).unwrap());
    }
    eprintln!("model ops: largest |Δ| against the reference {worst:.1e}");
}

/// The FP8 round trip (`act_quant`) bit for bit against `reference::model::act_quant` (rows of
/// 300: blocks of 128, 128 and 44; magnitudes from 1e-6 to 1e4, a zero row, values on e4m3
/// ties), SwiGLU (|Δ| ≤ 1e-5 + 1e-5·|want|: f32's exp against f64), and argmax with ties to the
/// lowest index.
#[test]
fn model_ops_quantise_gate_and_pick_as_the_reference() {
    use ess_wgpu::kernels::ModelOps;
    use ess_wgpu::reference::model::{act_quant, argmax};
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let ops = ModelOps::new(ctx).unwrap();
    let mut rng = Rng::new(fresh_seed(101));
    let (rows, n) = (6u32, 300u32);
    let mut x: Vec<f32> = (0..rows * n)
        .map(|i| {
            let mag = 10f32.powi((i / n) as i32 * 2 - 6); // 1e-6 … 1e4 by row
            rng.range(-1.0, 1.0) * mag
        })
        .collect();
    x[n as usize..2 * n as usize].fill(0.0);
    // e4m3 ties under a block scale of 1 (amax 448 → s = 1): 1.0625 lies between 1 and 1.125
    let b5 = 5 * n as usize;
    x[b5..b5 + 128]
        .iter_mut()
        .for_each(|v| *v = rng.range(-1.0, 1.0));
    x[5 * n as usize] = 448.0;
    x[5 * n as usize + 1] = 1.0625;
    x[5 * n as usize + 2] = -3.25 + 0.125 / 2.0;
    let xb = ctx.upload("x", &x).unwrap();
    let d = ops.act_quant(ctx, &xb, rows, n);
    ctx.run_pass(None, |p| d.record(p)).unwrap();
    let got: Vec<f32> = ctx.read(&xb).unwrap();
    let want: Vec<f32> = x.chunks(n as usize).flat_map(act_quant).collect();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&got),
        bits(&want),
        "act_quant differs from the reference"
    );
    // SwiGLU over [gate ‖ up] rows
    let (rows, n) = (3u32, 77u32);
    let gu: Vec<f32> = (0..rows * 2 * n).map(|_| rng.range(-6.0, 6.0)).collect();
    let (gb, y) = (
        ctx.upload("gate up", &gu).unwrap(),
        ctx.storage("y", (rows * n) as u64 * 4).unwrap(),
    );
    ctx.fill(&y, 0x7FC0_0BAD);
    let d = ops.swiglu(ctx, &gb, &y, rows, n);
    ctx.run_pass(None, |p| d.record(p)).unwrap();
    let got: Vec<f32> = ctx.read(&y).unwrap();
    let want: Vec<f32> = gu
        .chunks(2 * n as usize)
        .flat_map(|r| {
            (0..n as usize).map(move |i| {
                let g = r[i] as f64;
                (g / (1.0 + (-g).exp()) * r[n as usize + i] as f64) as f32
            })
        })
        .collect();
    compare("swiglu", &got, &want, 1e-5, 1e-5).unwrap();
    // argmax, ties to the lowest index
    let (rows, n) = (4u32, 1000u32);
    let mut l: Vec<f32> = (0..rows * n).map(|_| rng.range(-1.0, 1.0)).collect();
    l[(n + 700) as usize] = 5.0;
    l[(n + 300) as usize] = 5.0; // a tie: 300 wins
    l[(2 * n + 999) as usize] = 9.0;
    let (lb, y) = (
        ctx.upload("logits", &l).unwrap(),
        ctx.storage("argmax", rows as u64 * 4).unwrap(),
    );
    ctx.fill(&y, 0xFFFF_FFFF);
    let d = ops.argmax(ctx, &lb, &y, rows, n);
    ctx.run_pass(None, |p| d.record(p)).unwrap();
    let got: Vec<u32> = ctx.read(&y).unwrap();
    let want: Vec<u32> = l.chunks(n as usize).map(argmax).collect();
    assert_eq!(got, want);
    assert_eq!(got[1], 300);
}

/// `ModelGemm::linear` of `x` by `weight` into a poisoned `y` of `rows · yr` values (with a
/// split scratch as the shape needs): y as read back.
fn run_linear(
    ctx: &ess_wgpu::GpuContext,
    ops: &ess_wgpu::kernels::ModelOps,
    (xb, weight): (&wgpu::Buffer, ess_wgpu::kernels::model_gemm::Weight),
    shape: &ess_wgpu::kernels::model_gemm::LinearShape,
    poison: u32,
) -> Vec<f32> {
    let y = ctx
        .storage("y", shape.rows as u64 * shape.yr as u64 * 4)
        .unwrap();
    ctx.fill(&y, poison);
    let scratch = ctx
        .storage("scratch", shape.scratch_bytes().max(4))
        .unwrap();
    let d = ops
        .gemm
        .linear(ctx, (xb, weight, &y), shape, Some(&scratch))
        .unwrap();
    ctx.run_pass(None, |p| d.record(p)).unwrap();
    ctx.read(&y).unwrap()
}

/// The model's tiled linear layer (`ModelGemm::linear`) against the version-1 kernel and the
/// f64 reference, sizes off every tile (rows not a multiple of 32, outputs of 64, inputs of
/// 32), outputs poisoned first: with K whole it is version 1 bit for bit; with K split (few
/// outputs, many inputs) within 1e-6 of Σ|x·w| of each output (f32 sums of ≤ 2500 products
/// against f64; measured on lavapipe ≤ 1.4e-7), and written into a strided part of its rows
/// (the rest left as poisoned).
#[test]
fn tiled_linear_equals_version_1() {
    use ess_wgpu::kernels::ModelOps;
    use ess_wgpu::kernels::model_gemm::{LinearShape, Weight};
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let ops = ModelOps::new(ctx).unwrap();
    let mut rng = Rng::new(fresh_seed(107));
    let poison = 0x7FC0_0BADu32;
    // (rows, K, N, y's row stride, first column)
    for (rows, k, n, yr, yo) in [
        (1u32, 300u32, 1000u32, 1000u32, 0u32),
        (37, 77, 130, 130, 0),
        (65, 200, 1000, 1000, 0),
        (45, 1000, 70, 150, 41),
        (3, 2500, 20, 20, 0),
    ] {
        let x: Vec<f32> = (0..rows * k).map(|_| rng.range(-1.0, 1.0)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.range(-1.0, 1.0)).collect();
        let shape = LinearShape {
            yr,
            yo,
            ..LinearShape::plain(rows, k, n)
        };
        let (xb, wb) = (ctx.upload("x", &x).unwrap(), ctx.upload("w", &w).unwrap());
        let got = run_linear(ctx, &ops, (&xb, Weight::F32(&wb)), &shape, poison);
        let splits = shape.splits().0;
        let mut v1 = Vec::<f32>::new();
        if splits == 1 {
            let y1 = ctx.storage("y v1", rows as u64 * n as u64 * 4).unwrap();
            let d = ops.linear(ctx, &xb, &wb, &y1, rows, k, n);
            ctx.run_pass(None, |p| d.record(p)).unwrap();
            v1 = ctx.read(&y1).unwrap();
        }
        // the written outputs (y[r, yo + o] = x's row r against w's row o) and their dots
        let (mut written, mut dots) = (Vec::new(), Vec::new());
        for r in 0..rows as usize {
            for c in 0..yr as usize {
                let g = got[r * yr as usize + c];
                let Some(o) = c.checked_sub(yo as usize).filter(|&o| o < n as usize) else {
                    assert_eq!(
                        g.to_bits(),
                        poison,
                        "({rows}, {k}, {n}): column {c} written"
                    );
                    continue;
                };
                written.push(g);
                dots.push((r, o));
                if splits == 1 {
                    let v = v1[r * n as usize + o];
                    assert_eq!(g.to_bits(), v.to_bits(), "({rows}, {k}, {n}) [{r}, {o}]");
                }
            }
        }
        let worst = worst_of_dots(&written, &x, &w, k as usize, &dots);
        assert!(worst <= 1e-6, "({rows}, {k}, {n}): {worst:e} of Σ|x·w|");
        eprintln!(
            "tiled linear {rows} × {k} → {n}, {splits} slices of K: within {worst:.1e} of Σ|x·w|"
        );
    }
}

/// MLA's per-head products on the tiles against version 1's `head_linear`: W_UV
/// (`LinearShape::mla_uv`: one product a head, grid z = head · slices + slice, each head's rows
/// of kv_b_proj read in place) bit for bit where K is one slice, within 1e-6 of Σ|x·w| of the
/// f64 sums where it is split; W_UK absorbed (`LinearShape::mla_uk`, from `w_uk_transposed`)
/// bit for bit, writing only each head's kv columns. 3 heads, odd widths; y poisoned first.
#[test]
fn per_head_products_on_the_tiles_equal_head_linear() {
    use ess_wgpu::kernels::ModelOps;
    use ess_wgpu::kernels::model_gemm::{LinearShape, Weight};
    use ess_wgpu::kernels::model_ops::HeadLinear;
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let ops = ModelOps::new(ctx).unwrap();
    let mut rng = Rng::new(fresh_seed(127));
    let poison = 0x7FC0_0BADu32;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // version 1's `head_linear` of x by w into a poisoned y of `len` values, as read back
    let version_1 = |(x, w): (&wgpu::Buffer, &wgpu::Buffer), hl: &HeadLinear, len: u32| {
        let y = ctx.storage("y v1", len as u64 * 4).unwrap();
        ctx.fill(&y, poison);
        let d = ops.head_linear(ctx, x, w, &y, hl).unwrap();
        ctx.run_pass(None, |p| d.record(p)).unwrap();
        ctx.read::<f32>(&y).unwrap()
    };
    // (rows, heads, nope, v, kv)
    for (rows, heads, nope, v, kv) in [(37u32, 3u32, 20u32, 70u32, 200u32), (5, 3, 9, 33, 700)] {
        let x: Vec<f32> = (0..rows * heads * kv)
            .map(|_| rng.range(-1.0, 1.0))
            .collect();
        let w: Vec<f32> = (0..heads * (nope + v) * kv)
            .map(|_| rng.range(-0.5, 0.5))
            .collect();
        let (xb, wb) = (ctx.upload("x", &x).unwrap(), ctx.upload("w", &w).unwrap());
        let shape = LinearShape::mla_uv(rows, heads, (nope, v, kv));
        let got = run_linear(ctx, &ops, (&xb, Weight::F32(&wb)), &shape, poison);
        let hl = HeadLinear::mla_uv(rows, heads, (nope, v, kv));
        let v1 = version_1((&xb, &wb), &hl, rows * heads * v);
        let splits = shape.splits().0;
        let (ku, vu, hu, nu) = (kv as usize, v as usize, heads as usize, nope as usize);
        // output (r, h, j): x's row r·H + h against W_UV's row j of head h
        let dots: Vec<(usize, usize)> = (0..rows as usize * hu)
            .flat_map(|rh| (0..vu).map(move |j| (rh, (rh % hu) * (nu + vu) + nu + j)))
            .collect();
        let worst = worst_of_dots(&got, &x, &w, ku, &dots);
        if splits == 1 {
            assert_eq!(
                bits(&got),
                bits(&v1),
                "W_UV on the tiles differs from version 1"
            );
        }
        eprintln!(
            "per-head W_UV {rows} rows × {heads} heads, {kv} → {v}, {splits} slices: within \
             {worst:.1e} of Σ|x·w|"
        );
        assert!(worst <= 1e-6, "{worst:e}");

        // W_UK absorbed, from each head's W_UK transposed: x [rows, heads, nope + rope] into
        // the first kv of y [rows, heads, kv + rope] (its rope part left alone); K = nope
        let rope = 7u32;
        let xq: Vec<f32> = (0..rows * heads * (nope + rope))
            .map(|_| rng.range(-1.0, 1.0))
            .collect();
        let xqb = ctx.upload("x", &xq).unwrap();
        let wt = ess_wgpu::kernels::model_gemm::w_uk_transposed(&w, hu, (nu, vu, ku));
        let wtb = ctx.upload("w_uk", &wt).unwrap();
        let shape = LinearShape::mla_uk(rows, heads, (nope, rope, kv));
        let got = run_linear(ctx, &ops, (&xqb, Weight::F32(&wtb)), &shape, poison);
        let hl = HeadLinear::mla_uk(rows, heads, (nope, rope, v, kv));
        let v1 = version_1((&xqb, &wb), &hl, rows * heads * (kv + rope));
        assert_eq!(shape.splits().0, 1, "K = nope is one slice");
        assert_eq!(
            bits(&got),
            bits(&v1),
            "W_UK on the tiles differs from version 1"
        );
        let rope_parts = (0..(rows * heads) as usize)
            .flat_map(|rh| (kv..kv + rope).map(move |c| rh * (kv + rope) as usize + c as usize));
        assert!(
            rope_parts.into_iter().all(|i| got[i].to_bits() == poison),
            "W_UK wrote past each head's kv"
        );
    }
}

/// The routed experts grouped by expert (`ModelGemm::experts`: the grouping, each expert's tiles
/// of tokens, the weighted combine) equal version 1's `expert_up` and `expert_down` bit for bit:
/// 45 tokens, 3 of 8 experts each, one expert chosen by every token (two tiles), one by none,
/// the weights in two bindings (experts 0..3 and 3..8), sizes off every tile, outputs poisoned
/// first.
#[test]
fn grouped_experts_equal_version_1() {
    use ess_wgpu::kernels::ModelOps;
    use ess_wgpu::kernels::model_gemm::{ExpertChunk, ExpertScratch, ExpertShape, Weight};
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let ops = ModelOps::new(ctx).unwrap();
    let mut rng = Rng::new(fresh_seed(109));
    let shape = ExpertShape {
        rows: 45,
        top_k: 3,
        experts: 8,
        hidden: 100,
        inter: 70,
    };
    let (rows, k, e, hsz, inter) = (45usize, 3usize, 8u32, 100usize, 70usize);
    // routes [rows, k] = (expert, weight bits): expert 0 in every row's slot 1, expert 7 never
    let mut routes = Vec::new();
    for _ in 0..rows {
        let mut chosen = vec![0u32];
        while chosen.len() < k {
            let c = 1 + rng.below(6) as u32;
            if !chosen.contains(&c) {
                chosen.push(c);
            }
        }
        chosen.swap(0, 1);
        for c in chosen {
            routes.extend([c, rng.range(0.1, 1.0).to_bits()]);
        }
    }
    let x: Vec<f32> = (0..rows * hsz).map(|_| rng.range(-1.0, 1.0)).collect();
    let mut weights = |n| -> Vec<f32> { (0..n).map(|_| rng.range(-0.2, 0.2)).collect() };
    let (g, u, d) = (
        weights(e as usize * inter * hsz),
        weights(e as usize * inter * hsz),
        weights(e as usize * hsz * inter),
    );
    let up = |v: &[f32]| ctx.upload("w", v).unwrap();
    let (xb, rb, gb, ub, db) = (
        up(&x),
        ctx.upload("routes", &routes).unwrap(),
        up(&g),
        up(&u),
        up(&d),
    );
    let buf = |n: usize| {
        let b = ctx.storage("out", n as u64 * 4).unwrap();
        ctx.fill(&b, 0x7FC0_0BAD);
        b
    };
    let (act, part, groups, y) = (
        buf(rows * k * inter),
        buf(rows * k * hsz),
        buf(shape.group_words() as usize),
        buf(rows * hsz),
    );
    let scratch = ExpertScratch {
        groups: &groups,
        act: &act,
        part: &part,
    };
    // the experts' weights in two bindings, 0..3 and 3..8 (as past a binding's limit)
    let split = |v: &[f32], per: usize| (up(&v[..3 * per]), up(&v[3 * per..]));
    let per = inter * hsz;
    let ((g0, g1), (u0, u1), (d0, d1)) = (split(&g, per), split(&u, per), split(&d, per));
    let chunks = [
        ExpertChunk {
            first: 0,
            count: 3,
            gate: Weight::F32(&g0),
            up: Weight::F32(&u0),
            down: Weight::F32(&d0),
        },
        ExpertChunk {
            first: 3,
            count: 5,
            gate: Weight::F32(&g1),
            up: Weight::F32(&u1),
            down: Weight::F32(&d1),
        },
    ];
    let list = ops
        .gemm
        .experts(ctx, &xb, &chunks, &rb, &y, &shape, &scratch, None);
    ctx.run_pass(None, |p| list.iter().for_each(|d| d.record(p)))
        .unwrap();
    let (act1, y1) = (buf(rows * k * inter), buf(rows * hsz));
    let dims = (k as u32, hsz as u32, inter as u32);
    let v1 = [
        ops.expert_up(ctx, &xb, &gb, &ub, &rb, &act1, rows as u32, dims),
        ops.expert_down(ctx, &act1, &db, &rb, &y1, rows as u32, dims),
    ];
    ctx.run_pass(None, |p| v1.iter().for_each(|d| d.record(p)))
        .unwrap();
    let bits = |b: &wgpu::Buffer| -> Vec<u32> { ctx.read(b).unwrap() };
    assert_eq!(
        bits(&act),
        bits(&act1),
        "the activations differ from version 1"
    );
    assert_eq!(bits(&y), bits(&y1), "the outputs differ from version 1");
    let groups: Vec<u32> = ctx.read(&groups).unwrap();
    assert_eq!(
        (groups[0], groups[7]),
        (45, 0),
        "expert 0 in every row, expert 7 in none"
    );
}

/// Sums against their f64 reference: the largest |got − want| / Σ|terms| of `got[i]` against
/// the dot products of `x`'s row `rows[i].0` with `w`'s row `rows[i].1` (`k` values each).
fn worst_of_dots(got: &[f32], x: &[f32], w: &[f32], k: usize, rows: &[(usize, usize)]) -> f64 {
    let mut worst = 0f64;
    for (g, &(xr, wr)) in got.iter().zip(rows) {
        let (a, b) = (&x[xr * k..][..k], &w[wr * k..][..k]);
        let want: f64 = a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum();
        let mag: f64 = a
            .iter()
            .zip(b)
            .map(|(&p, &q)| (p as f64 * q as f64).abs())
            .sum();
        worst = worst.max((*g as f64 - want).abs() / mag.max(f64::MIN_POSITIVE));
    }
    worst
}

/// act_quant of each `k`-long row of `x` (what an FP8 weight's inputs go through).
fn act_quant_rows(x: &[f32], k: usize) -> Vec<f32> {
    x.chunks(k)
        .flat_map(ess_wgpu::reference::model::act_quant)
        .collect()
}

/// The largest f32 sums' error of the FP8 linear layers and experts, relative to Σ|x·w|: the
/// same bound as the tiled f32 kernel's, since on the tensor cores (`model_gemm_coop.wgsl`) the
/// operands are exact in f16 and only the order of the f32 sums differs.
const FP8_GEMM_TOL: f64 = 1e-6;

/// FP8 weights (bytes and 128 × 128 block scales as the checkpoint stores them) in the linear
/// layers, on whichever units the context gives them (the tensor cores where it has cooperative
/// matrices), and in the grouped experts (likewise), against the f64 sums of act_quant(x) and the dequantised
/// weights: odd sizes, K split and whole, a piece of a weight (its scales from row 128 on), the
/// experts in two bindings with act_quant between up and down. Outputs poisoned first.
#[test]
fn fp8_linear_and_experts_equal_the_reference() {
    use ess_wgpu::kernels::ModelOps;
    use ess_wgpu::kernels::model_gemm::{
        ExpertChunk, ExpertScratch, ExpertShape, LinearShape, Weight,
    };
    use ess_wgpu::model::init::quantize_fp8;
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let ops = ModelOps::new(ctx).unwrap();
    let mut rng = Rng::new(fresh_seed(113));
    let poison = 0x7FC0_0BADu32;
    let units = |w: &Weight, k: u32| match ops.gemm.on_tensor_cores(w, k) {
        true => "tensor cores",
        false => "FMA units",
    };
    // (rows, K, N, first weight row bound, whether that row is bound as the buffer's first or
    // reached by an offset into the whole weight: `LinearShape::wb`)
    for (rows, k, n, row0, by_offset) in [
        (1u32, 300u32, 1000u32, 0u32, false),
        (37, 900, 200, 0, false),
        (45, 2304, 72, 0, false),
        (70, 1028, 300, 128, false),
        (33, 640, 400, 256, true),
    ] {
        let (ku, nu) = (k as usize, n as usize);
        let xs: Vec<f32> = (0..rows * k).map(|_| rng.range(-3.0, 3.0)).collect();
        let x = act_quant_rows(&xs, ku);
        let wv: Vec<f32> = (0..n * k).map(|_| rng.range(-0.1, 0.1)).collect();
        let q = quantize_fp8(&wv, &[nu, ku]);
        let values = q.values();
        let bound = n - row0;
        let first = if by_offset { 0 } else { row0 as usize * ku };
        let shape = LinearShape {
            wb: if by_offset { row0 * k } else { 0 },
            ..LinearShape::plain(rows, k, bound)
        };
        let xb = ctx.upload("x", &x).unwrap();
        let bytes = ctx.upload("w", &q.bytes[first..]).unwrap();
        let scales = ctx.upload("scales", &q.scales).unwrap();
        let weight = Weight::Fp8 {
            bytes: &bytes,
            scales: &scales,
            row0,
        };
        let got = run_linear(ctx, &ops, (&xb, weight), &shape, poison);
        let pairs: Vec<(usize, usize)> = (0..rows as usize)
            .flat_map(|r| (row0 as usize..nu).map(move |o| (r, o)))
            .collect();
        let worst = worst_of_dots(&got, &x, &values, ku, &pairs);
        let on = units(&weight, k);
        eprintln!(
            "FP8 linear {rows} × {k} → {bound} (from row {row0}{}), {} slices, {on}: within \
             {worst:.1e} of Σ|x·w|",
            if by_offset { " by an offset" } else { "" },
            shape.splits().0
        );
        assert!(
            worst <= FP8_GEMM_TOL,
            "({rows}, {k}, {n}) on the {on}: {worst:e}"
        );
    }

    // the experts: 41 tokens, 3 of 8 each, hidden 256, inter 132
    let (rows, top_k, e, hsz, inter) = (41usize, 3usize, 8usize, 256usize, 132usize);
    let shape = ExpertShape {
        rows: rows as u32,
        top_k: top_k as u32,
        experts: e as u32,
        hidden: hsz as u32,
        inter: inter as u32,
    };
    let mut routes = Vec::new();
    let mut chosen_of = Vec::new();
    for _ in 0..rows {
        let mut chosen = Vec::new();
        while chosen.len() < top_k {
            let c = rng.below(e as u64) as u32;
            if !chosen.contains(&c) {
                chosen.push(c);
            }
        }
        for &c in &chosen {
            routes.extend([c, rng.range(0.1, 1.0).to_bits()]);
        }
        chosen_of.push(chosen);
    }
    let x = act_quant_rows(
        &(0..rows * hsz)
            .map(|_| rng.range(-3.0, 3.0))
            .collect::<Vec<_>>(),
        hsz,
    );
    // each expert's weight quantised on its own, its scales after the expert before
    let mut experts = |n: usize, k: usize| {
        let q: Vec<_> = (0..e)
            .map(|_| {
                let v: Vec<f32> = (0..n * k).map(|_| rng.range(-0.1, 0.1)).collect();
                quantize_fp8(&v, &[n, k])
            })
            .collect();
        let values: Vec<f32> = q.iter().flat_map(|t| t.values()).collect();
        (q, values)
    };
    let ((gq, gv), (uq, uv), (dq, dv)) = (
        experts(inter, hsz),
        experts(inter, hsz),
        experts(hsz, inter),
    );
    let upload = |q: &[ess_wgpu::reference::model::Fp8Tensor]| {
        let bytes: Vec<u8> = q.iter().flat_map(|t| t.bytes.clone()).collect();
        let scales: Vec<f32> = q.iter().flat_map(|t| t.scales.clone()).collect();
        (
            ctx.upload("bytes", &bytes).unwrap(),
            ctx.upload("scales", &scales).unwrap(),
        )
    };
    let halves = |q: &[ess_wgpu::reference::model::Fp8Tensor]| (upload(&q[..3]), upload(&q[3..]));
    let (g, u, d) = (halves(&gq), halves(&uq), halves(&dq));
    let fp8 = Weight::fp8;
    let chunks = [
        ExpertChunk {
            first: 0,
            count: 3,
            gate: fp8(&g.0),
            up: fp8(&u.0),
            down: fp8(&d.0),
        },
        ExpertChunk {
            first: 3,
            count: 5,
            gate: fp8(&g.1),
            up: fp8(&u.1),
            down: fp8(&d.1),
        },
    ];
    let buf = |n: usize| {
        let b = ctx.storage("out", n as u64 * 4).unwrap();
        ctx.fill(&b, poison);
        b
    };
    let (xb, rb) = (
        ctx.upload("x", &x).unwrap(),
        ctx.upload("routes", &routes).unwrap(),
    );
    let pairs = rows * top_k;
    let run = |quant: bool| {
        let (act, part, groups, y) = (
            buf(pairs * inter),
            buf(pairs * hsz),
            buf(shape.group_words() as usize),
            buf(rows * hsz),
        );
        let scratch = ExpertScratch {
            groups: &groups,
            act: &act,
            part: &part,
        };
        let between = quant.then(|| ops.act_quant(ctx, &act, pairs as u32, inter as u32));
        let list = ops
            .gemm
            .experts(ctx, &xb, &chunks, &rb, &y, &shape, &scratch, between);
        ctx.run_pass(None, |p| list.iter().for_each(|d| d.record(p)))
            .unwrap();
        let read = |b: &wgpu::Buffer| -> Vec<f32> { ctx.read(b).unwrap() };
        (read(&act), read(&y))
    };
    let on = match ops.gemm.experts_on_tensor_cores(&chunks, &shape) {
        true => "tensor cores",
        false => "FMA units",
    };
    // up: each activation's gate and up sums within the bound, carried through SwiGLU
    let (act, _) = run(false);
    let mut worst_act = 0f64;
    for p in 0..pairs {
        let (r, ex) = (p / top_k, chosen_of[p / top_k][p % top_k] as usize);
        for i in 0..inter {
            let row = ex * inter + i;
            let dot = |w: &[f32]| -> (f64, f64) {
                let (a, b) = (&x[r * hsz..][..hsz], &w[row * hsz..][..hsz]);
                let s = a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum();
                let m = a
                    .iter()
                    .zip(b)
                    .map(|(&p, &q)| (p as f64 * q as f64).abs())
                    .sum();
                (s, m)
            };
            let ((gs, gm), (us, um)) = (dot(&gv), dot(&uv));
            let silu = gs / (1.0 + (-gs).exp());
            let want = silu * us;
            // d silu / d g ≤ 1.1: the bound of each sum carried through the product
            let bound = FP8_GEMM_TOL * (1.1 * gm * us.abs() + silu.abs() * um) + 1e-7 * want.abs();
            let ratio = (act[p * inter + i] as f64 - want).abs() / bound.max(1e-30);
            if ratio > 1.0 && worst_act <= 1.0 {
                eprintln!(
                    "first miss: pair {p} (token {r}, expert {ex}) column {i}: {} for {want} \
                     (gate {gs}, up {us})",
                    act[p * inter + i]
                );
            }
            worst_act = worst_act.max(ratio);
        }
    }
    eprintln!("FP8 experts up ({on}): within {worst_act:.2} of the bound");
    assert!(
        worst_act <= 1.0,
        "FP8 experts up on the {on}: {worst_act:.2} of the bound"
    );
    // down: the quantised activations equal act_quant's, the output its f64 sum
    let (act_q, y) = run(true);
    let want_q = act_quant_rows(&act, inter);
    assert!(
        act_q
            .iter()
            .zip(&want_q)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "act_quant between up and down differs from the reference's"
    );
    let mut worst = 0f64;
    for r in 0..rows {
        for o in 0..hsz {
            let (mut want, mut mag) = (0f64, 0f64);
            for (j, &ex) in chosen_of[r].iter().enumerate() {
                let p = r * top_k + j;
                let wgt = f32::from_bits(routes[2 * p + 1]) as f64;
                let ex = ex as usize;
                let (a, b) = (
                    &act_q[p * inter..][..inter],
                    &dv[(ex * hsz + o) * inter..][..inter],
                );
                want += wgt
                    * a.iter()
                        .zip(b)
                        .map(|(&p, &q)| p as f64 * q as f64)
                        .sum::<f64>();
                mag += wgt
                    * a.iter()
                        .zip(b)
                        .map(|(&p, &q)| (p as f64 * q as f64).abs())
                        .sum::<f64>();
            }
            worst = worst.max((y[r * hsz + o] as f64 - want).abs() / mag.max(f64::MIN_POSITIVE));
        }
    }
    eprintln!("FP8 experts down and combine ({on}): within {worst:.1e} of Σ|w·act·D|");
    assert!(
        worst <= FP8_GEMM_TOL,
        "FP8 experts down on the {on}: {worst:e}"
    );
}

/// `round_to` (a cache's rounding of the rows and keys the model makes) bit for bit against
/// `reference::model::stored_value`: f16 and bf16 (nearest even, ties included) on a strided
/// part of each row (rows of 37, values 5 .. 5 + 23 rounded, the rest untouched), magnitudes
/// from 1e-6 to 1e4; f32 rounds nothing.
#[test]
fn round_to_stores_as_the_caches() {
    use ess_wgpu::config::Dtype;
    use ess_wgpu::kernels::ModelOps;
    use ess_wgpu::kernels::model_ops::Heads;
    use ess_wgpu::reference::model::stored_value;
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let ops = ModelOps::new(ctx).unwrap();
    let mut rng = Rng::new(fresh_seed(103));
    let (rows, n, off, d) = (7u32, 37usize, 5usize, 23usize);
    let mut x: Vec<f32> = (0..rows as usize * n)
        .map(|i| rng.range(-1.0, 1.0) * 10f32.powi((i / n) as i32 * 2 - 6))
        .collect();
    // ties: halfway between two bf16 values (1 + 2^-8), and two f16 values (1 + 2^-11)
    x[off] = 1.0 + 2f32.powi(-8);
    x[off + 1] = 1.0 + 3.0 * 2f32.powi(-8);
    x[off + 2] = 1.0 + 2f32.powi(-11);
    let at = Heads {
        rows,
        n: n as u32,
        heads: 1,
        stride: n as u32,
        off: off as u32,
        d: d as u32,
    };
    for dtype in [Dtype::F16, Dtype::Fp8] {
        let xb = ctx.upload("x", &x).unwrap();
        let step = ops.round_to(ctx, &xb, at, dtype).expect("a rounding");
        ctx.run_pass(None, |p| step.record(p)).unwrap();
        let got: Vec<f32> = ctx.read(&xb).unwrap();
        let want: Vec<f32> = x
            .chunks(n)
            .flat_map(|r| {
                let mut r = r.to_vec();
                let part = stored_value(r[off..off + d].to_vec(), dtype, true);
                r[off..off + d].copy_from_slice(&part);
                r
            })
            .collect();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{dtype}: round_to differs");
    }
    assert!(
        ops.round_to(ctx, &ctx.upload("x", &x).unwrap(), at, Dtype::F32)
            .is_none()
    );
}

/// The MoE router on the GPU against `reference::model::route` (sigmoid scores in f32 against
/// f64: the same experts in the same order, weights within 1e-5, except where two experts' or
/// groups' f64 scores are within 1e-6, which f32 may order either way): DeepSeek-V3.2's 256 experts in
/// 8 groups (4 kept, 8 chosen) and the tiny config's 8 in 2 (1 kept, 2 chosen), random logits and
/// biases, and a row of equal logits (ties to the lower index, group and expert alike).
#[test]
fn the_router_equals_the_reference() {
    use ess_wgpu::kernels::ModelOps;
    use ess_wgpu::kernels::model_ops::Routing;
    use ess_wgpu::reference::model::route;
    use ess_wgpu::workload::Rng;
    let ctx = ctx();
    let ops = ModelOps::new(ctx).unwrap();
    let mut rng = Rng::new(fresh_seed(103));
    for (experts, groups, topk_group, top_k) in [(256u32, 8u32, 4u32, 8u32), (8, 2, 1, 2)] {
        let rows = 9u32;
        let mut logits: Vec<f32> = (0..rows * experts).map(|_| rng.range(-4.0, 4.0)).collect();
        logits[..experts as usize].fill(0.5);
        let bias: Vec<f32> = (0..experts).map(|_| rng.range(-0.1, 0.1)).collect();
        let zero_bias = vec![0f32; experts as usize];
        for b in [&bias, &zero_bias] {
            let (lb, bb) = (
                ctx.upload("logits", &logits).unwrap(),
                ctx.upload("bias", b).unwrap(),
            );
            let out = ctx
                .storage("routes", (rows * top_k * 2) as u64 * 4)
                .unwrap();
            ctx.fill(&out, 0x7FC0_0BAD);
            let r = Routing {
                experts,
                groups,
                topk_group,
                top_k,
                scaling: 2.5,
            };
            let d = ops.route(ctx, &lb, &bb, &out, rows, r).unwrap();
            ctx.run_pass(None, |p| d.record(p)).unwrap();
            let got: Vec<[u32; 2]> = ctx.read(&out).unwrap();
            for (t, row) in logits.chunks(experts as usize).enumerate() {
                let (e, w) = route(
                    row,
                    b,
                    groups as usize,
                    topk_group as usize,
                    top_k as usize,
                    2.5,
                );
                let g = &got[t * top_k as usize..][..top_k as usize];
                let ge: Vec<usize> = g.iter().map(|x| x[0] as usize).collect();
                if ge != e {
                    // f32 against f64 may swap two experts (or groups) whose scores are within
                    // rounding: only such a near-tie may differ
                    let sb: Vec<f64> = row
                        .iter()
                        .zip(b.iter())
                        .map(|(&l, &bv)| 1.0 / (1.0 + (-(l as f64)).exp()) + bv as f64)
                        .collect();
                    let per = (experts / groups) as usize;
                    let gs = |e: usize| {
                        let mut v = sb[e / per * per..][..per].to_vec();
                        v.sort_by(|a, b| b.total_cmp(a));
                        v[0] + v[1]
                    };
                    let near = |a: usize, c: usize| {
                        (sb[a] - sb[c]).abs() < 1e-6 || (gs(a) - gs(c)).abs() < 1e-6
                    };
                    for (&x, &y) in ge.iter().zip(&e) {
                        assert!(
                            x == y || near(x, y),
                            "{experts} experts, token {t}: {ge:?} against {e:?}"
                        );
                    }
                    eprintln!("token {t}: a near-tie, {ge:?} against the reference's {e:?}");
                    continue;
                }
                let gw: Vec<f32> = g.iter().map(|x| f32::from_bits(x[1])).collect();
                compare("route weights", &gw, &w, 1e-5, 1e-5).unwrap();
            }
        }
    }
}

/// The version-1 sparse MLA takes any even number of RoPE dims (`SparseMlaShape::
/// validate_naive`): 16, the `model init --config tiny` checkpoint's, in f32, f16 and FP8 rows,
/// against the reference within the version-1 tolerances; the tuned kernels still refuse it.
#[test]
fn naive_sparse_mla_takes_sixteen_rope_dims() {
    use ess_wgpu::problems::SparseMlaProblem;
    let ctx = ctx();
    let mut base = RunConfig::tiny()
        .with_overrides(&["batch=2", "topk=50"])
        .unwrap();
    base.model.qk_rope_head_dim = 16;
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Fp8] {
        let cfg = RunConfig {
            latent_dtype: dtype,
            ..base.clone()
        };
        let p = SparseMlaProblem::random(&cfg, 300, 0.2, &[], fresh_seed(107)).stored_as(dtype);
        let naive = SparseMlaNaive::new(ctx, &cfg.sparse_mla_shape()).unwrap();
        let (o_lat, lse) = p.run_naive(ctx, &naive, None).unwrap();
        let (want_o, want_lse) = p.reference();
        let (oa, or) = SPARSE_MLA_O_LAT_TOL;
        let (la, lr) = SPARSE_MLA_LSE_TOL;
        compare("o_lat", &o_lat, &want_o, oa, or).unwrap_or_else(|e| panic!("{dtype}: {e}"));
        compare("lse", &lse, &want_lse, la, lr).unwrap_or_else(|e| panic!("{dtype}: {e}"));
    }
    let e = SparseMla::new(ctx, &base.sparse_mla_shape())
        .unwrap_err()
        .to_string();
    assert!(e.contains("qk_rope_head_dim"), "{e}");
}

/// The non-blocking read (a browser's only one) gives what the blocking read gives.
#[test]
fn read_async_equals_read() {
    let ctx = ctx();
    let p = IndexerProblem::random(8, 32, Dtype::F16, &[1, 257, 33], fresh_seed(77));
    let kernel = Indexer::with(
        ctx,
        &IndexerShape {
            heads: 8,
            dim: 32,
            dtype: Dtype::F16,
        },
        MatrixPath::Fma,
    )
    .unwrap();
    let scores = p
        .dispatch_with(ctx, |a| Ok(vec![kernel.bind(ctx, a)]), None)
        .unwrap();
    let blocking: Vec<f32> = ctx.read(&scores).unwrap();
    let awaited: Vec<f32> = pollster::block_on(ctx.read_async(&scores)).unwrap();
    assert_eq!(
        blocking.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        awaited.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}
