//! Seeded random problems for each kernel, shared by the tests, the examples and the benchmark's
//! check step: build inputs, upload them, poison the outputs, dispatch, read back, and compute the
//! CPU reference. One code path, so what the tests check is what the examples show.

use crate::config::{Dtype, RunConfig};
use crate::error::Result;
use crate::gpu::{GpuContext, GpuTimer, MatrixPath};
use crate::kernels::sparse_mla_naive::SparseMlaNaiveArgs;
use crate::kernels::{Dispatch, Indexer, IndexerNaive, LseMerge, SparseMla, SparseMlaNaive, TopK};
use crate::kernels::{
    indexer::IndexerArgs, lse_merge::LseMergeArgs, sparse_mla::SparseMlaArgs, topk::TopKArgs,
};
use crate::reference::{self, SeqRows};
use crate::workload::{Rng, RowLayout, query_bytes, round_f16, storage_bytes, stored_values};

/// The GEMM family against [`crate::reference::gemm`] (f16-rounded operands, f32 sums against
/// f64, K ≤ 1000 products of values in [-1, 1)): (atol, rtol). The largest errors `tests/gemm.rs`
/// printed are 5.7e-5 on the H200 (K = 1000, coop and fma alike) and 4.0e-5 on lavapipe.
pub const GEMM_TOL: (f32, f32) = (1e-4, 1e-4);

/// The indexer against [`crate::reference::indexer`]: (atol, rtol). f32 sums over H × D ≤
/// 64 × 128 products against f64; the largest error printed on lavapipe is 1.3e-7.
pub const INDEXER_TOL: (f32, f32) = (1e-4, 1e-4);

/// Sparse MLA against [`crate::reference::sparse_mla`]: (atol, rtol) of `o_lat` and of `lse`.
/// The kernels accumulate in f32 over k ≤ 2048 rows (the reference in f64); the largest errors
/// `tests/kernels.rs` printed on lavapipe are 1.8e-6 (o_lat) and 9.5e-7 (lse), tuned and
/// version-1 kernels alike.
pub const SPARSE_MLA_O_LAT_TOL: (f32, f32) = (2e-5, 1e-4);
pub const SPARSE_MLA_LSE_TOL: (f32, f32) = (2e-5, 1e-5);
/// The coop kernel's `o_lat` against the reference of its f16-rounded q, for k ids (its `lse`
/// keeps [`SPARSE_MLA_LSE_TOL`]). P enters the tensor cores as f16, scaled so its largest term is
/// 1024 (sparse_mla_coop.wgsl): rounding costs each term at most 2^-11 of itself, a term below
/// f16's normal range (2^-14, i.e. 2^-24 of the largest) at most itself; an f16 value of c_kv
/// below 2^-14 may be flushed to zero by the tensor cores (nothing documents the path; the H200's
/// largest error, 5.2e-4 before P was scaled, exceeded 2^-11, so the bound allows it). With
/// values in [-1, 1): |Δo| ≤ 2^-11 + 2^-14 + k · 2^-24, plus the f32 allowance of
/// [`SPARSE_MLA_O_LAT_TOL`]: 5.9e-4 at k = 300, 6.9e-4 at k = 2048. The bound, not a fit: the
/// errors the H200 printed are in docs/PERF.md.
pub fn sparse_mla_coop_o_lat_tol(k: usize) -> (f32, f32) {
    let bound =
        2f32.powi(-11) + 2f32.powi(-14) + k as f32 * 2f32.powi(-24) + SPARSE_MLA_O_LAT_TOL.0;
    (bound, SPARSE_MLA_O_LAT_TOL.1)
}

/// The `o_lat` tolerance of the sparse MLA kernel of `path` over k ids: [`SPARSE_MLA_O_LAT_TOL`]
/// on the FMA units, [`sparse_mla_coop_o_lat_tol`] on the tensor cores.
pub fn sparse_mla_o_lat_tol(path: MatrixPath, k: usize) -> (f32, f32) {
    match path {
        MatrixPath::Fma => SPARSE_MLA_O_LAT_TOL,
        MatrixPath::Coop => sparse_mla_coop_o_lat_tol(k),
    }
}

/// Poison for f32 outputs: a NaN any unwritten element shows.
pub const POISON_F32: u32 = 0x7FC0_0BAD;
/// Poison for index outputs.
pub const POISON_U32: u32 = 0xFFFF_FFFF;

/// The `[B, 2]` (first row, length) table the indexer and top-k read.
pub fn seq_table(seqs: &[SeqRows]) -> Vec<u32> {
    seqs.iter()
        .flat_map(|s| [s.first_row as u32, s.len as u32])
        .collect()
}

/// Pack ragged lengths back to back, with a gap of `gap` unused rows between sequences so that
/// an off-by-one in the kernel reads the wrong data rather than the right data by luck.
pub fn pack_seqs(lens: &[usize], gap: usize) -> Vec<SeqRows> {
    let mut first_row = gap;
    lens.iter()
        .map(|&len| {
            let s = SeqRows { first_row, len };
            first_row += len + gap;
            s
        })
        .collect()
}

fn run_one(ctx: &GpuContext, d: &crate::kernels::Dispatch, timer: Option<&GpuTimer>) -> Result<()> {
    ctx.run_pass(timer.map(|t| (t, 0)), |pass| d.record(pass))
}

/// Random indexer inputs over ragged sequence lengths.
pub struct IndexerProblem {
    pub heads: usize,
    pub dim: usize,
    pub dtype: Dtype,
    pub q: Vec<f32>,    // [B, H, D]
    pub w: Vec<f32>,    // [B, H]
    pub keys: Vec<f32>, // [rows, D], as stored
    pub seqs: Vec<SeqRows>,
    pub score_stride: usize,
}

impl IndexerProblem {
    pub fn random(heads: usize, dim: usize, dtype: Dtype, lens: &[usize], seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let seqs = pack_seqs(lens, 3);
        let rows = seqs.last().map_or(0, |s| s.first_row + s.len + 3);
        let b = lens.len();
        let scale = 1.0 / ((heads * dim) as f32).sqrt();
        IndexerProblem {
            heads,
            dim,
            dtype,
            q: rng.vec(b * heads * dim),
            w: rng.vec(b * heads).iter().map(|x| x * scale).collect(),
            keys: stored_values(&rng.vec(rows * dim), dtype, RowLayout::Key { dim }),
            score_stride: lens.iter().copied().max().unwrap_or(0).max(1),
            seqs,
        }
    }

    pub fn reference(&self) -> Vec<f32> {
        self.reference_of(&self.q)
    }

    /// The reference of what the kernel of `path` computes: the coop kernel rounds q to f16 as it
    /// stages it (its one rounding: the products of f16 values are exact in f32), the fma kernel
    /// does not.
    /// Over FP8 keys both read q quantised per head as the model does (ue8m0, before the kernel:
    /// [`crate::workload::query_bytes`]), and nothing else: the products of e4m3 values are exact
    /// in f32, and the scales (positive) commute with ReLU.
    pub fn reference_for(&self, path: MatrixPath) -> Vec<f32> {
        use crate::reference::fp8::{ScaleRule, round_rows};
        match (path, self.dtype) {
            (_, Dtype::Fp8) => self.reference_of(&round_rows(&self.q, self.dim, ScaleRule::Ue8m0)),
            (MatrixPath::Fma, _) => self.reference(),
            (MatrixPath::Coop, _) => self.reference_of(&round_f16(&self.q)),
        }
    }

    fn reference_of(&self, q: &[f32]) -> Vec<f32> {
        reference::indexer(
            q,
            &self.w,
            &self.keys,
            &self.seqs,
            self.heads,
            self.dim,
            self.score_stride,
        )
    }

    /// Run on the GPU; returns `[B, score_stride]` with unwritten entries left as poison (NaN).
    pub fn run(
        &self,
        ctx: &GpuContext,
        kernel: &Indexer,
        timer: Option<&GpuTimer>,
    ) -> Result<Vec<f32>> {
        self.run_with(ctx, |a| Ok(vec![kernel.bind(ctx, a)]), timer)
    }

    /// Run the version-1 kernel, as [`IndexerProblem::run`].
    pub fn run_naive(
        &self,
        ctx: &GpuContext,
        kernel: &IndexerNaive,
        timer: Option<&GpuTimer>,
    ) -> Result<Vec<f32>> {
        self.run_with(ctx, |a| Ok(vec![kernel.bind(ctx, a)]), timer)
    }

    /// Run the dispatches `bind` makes over the problem's buffers, in one pass, as
    /// [`IndexerProblem::run`] (for a dispatch that does more than index: a fused gather).
    pub fn run_with(
        &self,
        ctx: &GpuContext,
        bind: impl Fn(&IndexerArgs) -> Result<Vec<Dispatch>>,
        timer: Option<&GpuTimer>,
    ) -> Result<Vec<f32>> {
        ctx.read(&self.dispatch_with(ctx, bind, timer)?)
    }

    /// [`IndexerProblem::run_with`] up to the scores buffer, unread (a browser reads it with
    /// [`GpuContext::read_async`]).
    pub fn dispatch_with(
        &self,
        ctx: &GpuContext,
        bind: impl Fn(&IndexerArgs) -> Result<Vec<Dispatch>>,
        timer: Option<&GpuTimer>,
    ) -> Result<wgpu::Buffer> {
        let q = ctx.upload("q", &query_bytes(&self.q, self.dim, self.dtype))?;
        let w = ctx.upload("w", &self.w)?;
        let layout = RowLayout::Key { dim: self.dim };
        let keys = ctx.upload("keys", &storage_bytes(&self.keys, self.dtype, layout))?;
        let seq = ctx.upload("seq", &seq_table(&self.seqs))?;
        let scores = ctx.storage("scores", (self.seqs.len() * self.score_stride * 4) as u64)?;
        ctx.fill(&scores, POISON_F32);
        let args = IndexerArgs {
            q: &q,
            w: &w,
            keys: &keys,
            seq: &seq,
            scores: &scores,
            b0: 0,
            batch: self.seqs.len() as u32,
            max_len: self.score_stride as u32,
            score_stride: self.score_stride as u32,
        };
        let dispatches = bind(&args)?;
        ctx.run_pass(timer.map(|t| (t, 0)), |pass| {
            dispatches.iter().for_each(|d| d.record(pass))
        })?;
        Ok(scores)
    }
}

/// Score rows for top-k, with a chosen number of distinct values (few distinct = many ties).
pub struct TopKProblem {
    pub k: usize,
    pub scores: Vec<f32>, // [B, score_stride]
    pub lens: Vec<usize>,
    pub score_stride: usize,
}

impl TopKProblem {
    /// `distinct`: how many different score values to draw from (0 = continuous).
    pub fn random(k: usize, lens: &[usize], distinct: u64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let score_stride = lens.iter().copied().max().unwrap_or(0).max(1);
        let mut scores = vec![f32::NAN; lens.len() * score_stride];
        for (b, &len) in lens.iter().enumerate() {
            for s in 0..len {
                scores[b * score_stride + s] = if distinct == 0 {
                    rng.range(-4.0, 4.0)
                } else {
                    rng.below(distinct) as f32 * 0.25 - 1.0
                };
            }
        }
        TopKProblem {
            k,
            scores,
            lens: lens.to_vec(),
            score_stride,
        }
    }

    pub fn reference(&self) -> Vec<i32> {
        self.lens
            .iter()
            .enumerate()
            .flat_map(|(b, &len)| {
                reference::topk(&self.scores[b * self.score_stride..][..len], self.k)
            })
            .collect()
    }

    pub fn run(
        &self,
        ctx: &GpuContext,
        kernel: &TopK,
        timer: Option<&GpuTimer>,
    ) -> Result<Vec<i32>> {
        let out = self.dispatch(ctx, kernel, timer)?;
        Ok(self.ids_of(ctx.read(&out)?))
    }

    /// The selected ids out of the output buffer's contents (which may be padded).
    pub fn ids_of(&self, mut got: Vec<i32>) -> Vec<i32> {
        got.truncate(self.lens.len() * self.k);
        got
    }

    /// [`TopKProblem::run`] up to the output buffer, unread (a browser reads it with
    /// [`GpuContext::read_async`], then [`TopKProblem::ids_of`]).
    pub fn dispatch(
        &self,
        ctx: &GpuContext,
        kernel: &TopK,
        timer: Option<&GpuTimer>,
    ) -> Result<wgpu::Buffer> {
        let scores = ctx.upload("scores", &self.scores)?;
        let seqs: Vec<SeqRows> = self
            .lens
            .iter()
            .map(|&len| SeqRows { first_row: 0, len })
            .collect();
        let seq = ctx.upload("seq", &seq_table(&seqs))?;
        let out = ctx.storage("topk_indices", (self.lens.len() * self.k * 4) as u64)?;
        ctx.fill(&out, POISON_U32);
        let args = TopKArgs {
            scratch: None,
            scores: &scores,
            seq: &seq,
            topk_indices: &out,
            b0: 0,
            batch: self.lens.len() as u32,
            score_stride: self.score_stride as u32,
        };
        run_one(ctx, &kernel.bind(ctx, &args)?, timer)?;
        Ok(out)
    }
}

/// Random queries, a row buffer, and per-sequence id lists (with some -1 and some duplicates).
/// Sequence b's ids are relative to its own first row `seqs[b].first_row`; the sequences'
/// ranges overlap, as a test that the base is applied.
pub struct SparseMlaProblem {
    pub cfg: RunConfig,
    pub q: Vec<f32>,   // [B, H, KV + ROPE]
    pub ids: Vec<i32>, // [B, k]
    pub seqs: Vec<SeqRows>,
    pub rows: Vec<f32>, // [R, KV + ROPE], as stored
}

impl SparseMlaProblem {
    /// `invalid`: the fraction of ids set to -1; a sequence listed in `empty` gets only -1.
    pub fn random(
        cfg: &RunConfig,
        n_rows: usize,
        invalid: f32,
        empty: &[usize],
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let (b, h, k, dq) = (
            cfg.batch as usize,
            cfg.model.heads as usize,
            cfg.model.topk as usize,
            cfg.model.row_dim() as usize,
        );
        let seqs: Vec<SeqRows> = (0..b)
            .map(|s| {
                let first_row = (s * 37) % n_rows.div_ceil(2);
                SeqRows {
                    first_row,
                    len: n_rows - first_row,
                }
            })
            .collect();
        let mut ids = Vec::with_capacity(b * k);
        for (seq, sk) in seqs.iter().enumerate() {
            for _ in 0..k {
                let skip = empty.contains(&seq) || rng.uniform() < invalid;
                ids.push(if skip {
                    -1
                } else {
                    rng.below(sk.len as u64) as i32
                });
            }
        }
        SparseMlaProblem {
            cfg: cfg.clone(),
            q: rng.vec(b * h * dq),
            ids,
            seqs,
            rows: stored_values(
                &rng.vec(n_rows * dq)
                    .iter()
                    .map(|x| x * 2.0)
                    .collect::<Vec<_>>(),
                cfg.latent_dtype,
                Self::layout(cfg),
            ),
        }
    }

    pub fn reference(&self) -> (Vec<f32>, Vec<f32>) {
        self.reference_of(&self.q)
    }

    /// The reference of what the kernel of `path` computes from its inputs: the coop kernel
    /// rounds q to f16 as it stages it (P's rounding is the error [`sparse_mla_coop_o_lat_tol`]
    /// bounds).
    pub fn reference_for(&self, path: MatrixPath) -> (Vec<f32>, Vec<f32>) {
        match path {
            MatrixPath::Fma => self.reference(),
            MatrixPath::Coop => self.reference_of(&round_f16(&self.q)),
        }
    }

    fn reference_of(&self, q: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let c = &self.cfg;
        reference::sparse_mla(
            q,
            &self.ids,
            &self.seqs.iter().map(|s| s.first_row).collect::<Vec<_>>(),
            &self.rows,
            c.batch as usize,
            c.model.heads as usize,
            c.model.kv_lora_rank as usize,
            c.model.qk_rope_head_dim as usize,
            c.model.topk as usize,
            c.model.softmax_scale(),
        )
    }

    /// The rows' layout.
    fn layout(cfg: &RunConfig) -> RowLayout {
        RowLayout::Latent {
            kv: cfg.model.kv_lora_rank as usize,
            rope: cfg.model.qk_rope_head_dim as usize,
        }
    }

    /// The rows as the kernels read them, in the configured storage type.
    pub fn row_bytes(&self) -> Vec<u8> {
        storage_bytes(&self.rows, self.cfg.latent_dtype, Self::layout(&self.cfg))
    }

    /// The same problem with its rows stored as `dtype`: the values those rows stand for (FP8:
    /// quantised and back; f16: rounded), so its reference is the reference of those rows.
    pub fn stored_as(&self, dtype: Dtype) -> SparseMlaProblem {
        let cfg = RunConfig {
            latent_dtype: dtype,
            ..self.cfg.clone()
        };
        SparseMlaProblem {
            rows: stored_values(&self.rows, dtype, Self::layout(&cfg)),
            cfg,
            q: self.q.clone(),
            ids: self.ids.clone(),
            seqs: self.seqs.clone(),
        }
    }

    /// Run the version-1 kernel; returns (o_lat, lse) as [`SparseMlaProblem::run`].
    pub fn run_naive(
        &self,
        ctx: &GpuContext,
        kernel: &SparseMlaNaive,
        timer: Option<&GpuTimer>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (q, ids, seq, rows, o_lat, lse) = self.upload(ctx, &self.row_bytes())?;
        let args = SparseMlaNaiveArgs {
            q: &q,
            ids: &ids,
            seq: &seq,
            rows: &rows,
            o_lat: &o_lat,
            lse: &lse,
            b0: 0,
            batch: self.cfg.batch,
        };
        run_one(ctx, &kernel.bind(ctx, &args), timer)?;
        Ok((ctx.read(&o_lat)?, ctx.read(&lse)?))
    }

    /// Inputs uploaded (the rows as the bytes the kernel reads), outputs allocated and
    /// poisoned: (q, ids, seq, rows, o_lat, lse).
    #[allow(clippy::type_complexity)]
    fn upload(
        &self,
        ctx: &GpuContext,
        row_bytes: &[u8],
    ) -> Result<(
        wgpu::Buffer,
        wgpu::Buffer,
        wgpu::Buffer,
        wgpu::Buffer,
        wgpu::Buffer,
        wgpu::Buffer,
    )> {
        let c = &self.cfg;
        let o_lat = ctx.storage(
            "o_lat",
            (c.batch * c.model.heads * c.model.kv_lora_rank * 4) as u64,
        )?;
        let lse = ctx.storage("lse", (c.batch * c.model.heads * 4) as u64)?;
        ctx.fill(&o_lat, POISON_F32);
        ctx.fill(&lse, POISON_F32);
        Ok((
            ctx.upload("q", &self.q)?,
            ctx.upload("ids", &self.ids)?,
            ctx.upload("seq", &seq_table(&self.seqs))?,
            ctx.upload("rows", row_bytes)?,
            o_lat,
            lse,
        ))
    }

    pub fn run(
        &self,
        ctx: &GpuContext,
        kernel: &SparseMla,
        timer: Option<&GpuTimer>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let (o_lat, lse) = self.dispatch(ctx, kernel, timer)?;
        Ok((ctx.read(&o_lat)?, self.lse_of(ctx.read(&lse)?)))
    }

    /// A kernel's (o_lat, lse) against the reference of what `path` computes, at that path's
    /// tolerances: the largest errors, or what differs.
    pub fn check(
        &self,
        path: MatrixPath,
        o_lat: &[f32],
        lse: &[f32],
    ) -> std::result::Result<(f32, f32), String> {
        let (want_o, want_lse) = self.reference_for(path);
        let (oa, or) = sparse_mla_o_lat_tol(path, self.cfg.model.topk as usize);
        let (la, lr) = SPARSE_MLA_LSE_TOL;
        Ok((
            crate::compare::compare("o_lat", o_lat, &want_o, oa, or)?,
            crate::compare::compare("lse", lse, &want_lse, la, lr)?,
        ))
    }

    /// The lse values out of the lse buffer's contents (which may be padded).
    pub fn lse_of(&self, mut lse: Vec<f32>) -> Vec<f32> {
        lse.truncate((self.cfg.batch * self.cfg.model.heads) as usize);
        lse
    }

    /// [`SparseMlaProblem::run`] up to the (o_lat, lse) buffers, unread (a browser reads them
    /// with [`GpuContext::read_async`], the lse through [`SparseMlaProblem::lse_of`]).
    pub fn dispatch(
        &self,
        ctx: &GpuContext,
        kernel: &SparseMla,
        timer: Option<&GpuTimer>,
    ) -> Result<(wgpu::Buffer, wgpu::Buffer)> {
        let c = &self.cfg;
        let (q, ids, seq, rows, o_lat, lse) = self.upload(ctx, &self.row_bytes())?;
        let scratch = kernel.scratch(ctx, c.batch)?;
        ctx.fill(&scratch.scores, POISON_F32);
        ctx.fill(&scratch.partials, POISON_F32);
        ctx.fill(&scratch.part_lse, POISON_F32);
        let args = SparseMlaArgs {
            q: &q,
            ids: &ids,
            seq: &seq,
            rows: &rows,
            scratch: &scratch,
            o_lat: &o_lat,
            lse: &lse,
            b0: 0,
            batch: c.batch,
        };
        run_one(ctx, &kernel.bind(ctx, &args), timer)?;
        Ok((o_lat, lse))
    }
}

/// Two partial results (from a real split of one id set) and their merge.
pub struct LseMergeProblem {
    pub dim: usize,
    pub parts: [(Vec<f32>, Vec<f32>); 2], // (o [rows, dim], lse [rows])
}

impl LseMergeProblem {
    /// Random partials; rows listed in `empty0`/`empty1` have that part empty (lse = -inf, o = 0).
    pub fn random(rows: usize, dim: usize, empty0: &[usize], empty1: &[usize], seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut part = |empty: &[usize]| {
            let mut o = rng.vec(rows * dim);
            let mut lse: Vec<f32> = (0..rows).map(|_| rng.range(-8.0, 8.0)).collect();
            for &r in empty {
                lse[r] = f32::NEG_INFINITY;
                o[r * dim..][..dim].fill(0.0);
            }
            (o, lse)
        };
        let p0 = part(empty0);
        let p1 = part(empty1);
        LseMergeProblem {
            dim,
            parts: [p0, p1],
        }
    }

    pub fn reference(&self) -> (Vec<f32>, Vec<f32>) {
        let [(o0, l0), (o1, l1)] = &self.parts;
        reference::lse_merge(o0, l0, o1, l1, self.dim)
    }

    pub fn run(&self, ctx: &GpuContext, kernel: &LseMerge) -> Result<(Vec<f32>, Vec<f32>)> {
        let [(o0, l0), (o1, l1)] = &self.parts;
        let rows = l0.len();
        let bufs = [
            ctx.upload("o0", o0)?,
            ctx.upload("lse0", l0)?,
            ctx.upload("o1", o1)?,
            ctx.upload("lse1", l1)?,
        ];
        let o = ctx.storage("o", (rows * self.dim * 4) as u64)?;
        let lse = ctx.storage("lse", (rows * 4) as u64)?;
        ctx.fill(&o, POISON_F32);
        ctx.fill(&lse, POISON_F32);
        let args = LseMergeArgs {
            o0: &bufs[0],
            lse0: &bufs[1],
            o1: &bufs[2],
            lse1: &bufs[3],
            o: &o,
            lse: &lse,
            rows: rows as u32,
            dim: self.dim as u32,
        };
        run_one(ctx, &kernel.bind(ctx, &args), None)?;
        Ok((ctx.read(&o)?, ctx.read(&lse)?))
    }
}
