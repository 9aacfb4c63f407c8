//! One Rust type per WGSL file. Each owns its pipeline, checks the shapes its shader can handle,
//! and turns buffers + sizes into a [`Dispatch`] that records into a compute pass. Nothing here
//! submits work: the caller decides what goes into which pass and command buffer.

pub mod da_order;
pub mod digest;
pub mod fill;
pub mod fp8_quant;
pub mod gemm;
pub mod indexer;
pub mod indexer_naive;
pub mod lse_merge;
pub mod model_gemm;
pub mod model_ops;
pub mod overlap;
pub mod probe;
pub mod resolve;
pub mod sparse_mla;
pub mod sparse_mla_naive;
pub mod topk;
pub mod transfer;
pub mod walk;

pub use da_order::DaOrder;
pub use digest::Digest;
pub use fill::Fill;
pub use fp8_quant::Fp8Quant;
pub use gemm::Gemm;
pub use indexer::Indexer;
pub use indexer_naive::IndexerNaive;
pub use lse_merge::LseMerge;
pub use model_gemm::ModelGemm;
pub use model_ops::ModelOps;
pub use overlap::Overlap;
pub use probe::Probe;
pub use resolve::Resolve;
pub use sparse_mla::SparseMla;
pub use sparse_mla_naive::SparseMlaNaive;
pub use topk::TopK;
pub use transfer::Transfer;
pub use walk::Walk;

use crate::config::Dtype;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, MatrixPath};

/// Whether the context can run a cooperative-matrix kernel that needs `workgroup_bytes` of
/// workgroup memory (what `new` asks before it picks one).
pub(crate) fn coop_fits(ctx: &GpuContext, workgroup_bytes: u32) -> bool {
    ctx.matrix == MatrixPath::Coop
        && ctx.report.max_compute_workgroup_storage_size >= workgroup_bytes
}

/// The matrix path of a kernel over cached rows stored as `dtype` whose cooperative-matrix
/// variant needs `workgroup_bytes` (what its `new` takes): coop where the context can run that
/// variant and the rows are f16 or FP8; f32 rows stay on the FMA units, where they stay exact
/// (the tensor cores would round them to f16).
pub(crate) fn rows_path(ctx: &GpuContext, dtype: Dtype, workgroup_bytes: u32) -> MatrixPath {
    match dtype != Dtype::F32 && coop_fits(ctx, workgroup_bytes) {
        true => MatrixPath::Coop,
        false => MatrixPath::Fma,
    }
}

/// The paths tests and benchmarks run a kernel over rows of `dtype` on, side by side: fma
/// always, coop where the context has it and the rows are f16 or FP8.
pub fn paths(ctx: &GpuContext, dtype: Dtype) -> Vec<MatrixPath> {
    let mut p = vec![MatrixPath::Fma];
    if ctx.matrix == MatrixPath::Coop && dtype != Dtype::F32 {
        p.push(MatrixPath::Coop);
    }
    p
}

/// As [`require_coop`], for a kernel over `field` rows stored as `dtype`: those must be f16 or
/// FP8 (see [`rows_path`]).
pub(crate) fn require_coop_rows(
    ctx: &GpuContext,
    what: &str,
    workgroup_bytes: u32,
    field: &str,
    dtype: Dtype,
) -> Result<()> {
    require_coop(ctx, what, workgroup_bytes)?;
    if dtype == Dtype::F32 {
        return Err(Error::config(field, dtype, "f16, fp8"));
    }
    Ok(())
}

/// The error for a cooperative-matrix kernel `what` (forced with `with`) the context cannot run:
/// no coop matrix path, or less workgroup memory than `workgroup_bytes`.
pub(crate) fn require_coop(ctx: &GpuContext, what: &str, workgroup_bytes: u32) -> Result<()> {
    if ctx.matrix != MatrixPath::Coop {
        return Err(Error::Unsupported {
            what: what.into(),
            need: "a context on the coop matrix path".into(),
            have: ctx.report.matrix.clone(),
        });
    }
    let have = ctx.report.max_compute_workgroup_storage_size;
    if have < workgroup_bytes {
        return Err(Error::Unsupported {
            what: what.into(),
            need: format!("{workgroup_bytes} bytes of workgroup memory"),
            have: format!("{have}"),
        });
    }
    Ok(())
}

/// A grid of `groups` workgroups, folded into two dimensions past the 65,535 limit of one (the
/// shader computes its index as `x + y · num_workgroups.x` and checks it against its size).
pub fn grid_2d(groups: u32) -> [u32; 3] {
    if groups <= 65535 {
        [groups, 1, 1]
    } else {
        [65535, groups.div_ceil(65535), 1]
    }
}

/// One or more pipelines with their bind groups and grids, recorded back to back into one pass
/// (wgpu orders dispatches in a pass that touch the same buffers). Holds its uniform alive.
pub struct Dispatch {
    steps: Vec<Step>,
    _params: wgpu::Buffer,
    /// Buffers only the bind groups refer to, kept alive with them.
    kept: Vec<wgpu::Buffer>,
}

#[derive(Clone)]
struct Step {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass) {
        for s in &self.steps {
            if s.workgroups.contains(&0) {
                continue;
            }
            pass.set_pipeline(&s.pipeline);
            pass.set_bind_group(0, &s.bind_group, &[]);
            pass.dispatch_workgroups(s.workgroups[0], s.workgroups[1], s.workgroups[2]);
        }
    }

    /// The uniform `Params` buffer all steps share (binding 0): per-step values are written into
    /// it with `queue.write_buffer`, so a dispatch is bound once and recorded many times.
    pub fn params(&self) -> &wgpu::Buffer {
        &self._params
    }

    /// Change the grid of every step (the bind groups stay): for grids that follow a length.
    pub fn set_grid(&mut self, workgroups: [u32; 3]) {
        for s in &mut self.steps {
            s.workgroups = workgroups;
        }
    }

    /// Each step as a dispatch of its own (to time the steps of a multi-step kernel apart).
    pub fn steps(&self) -> Vec<Dispatch> {
        self.steps
            .iter()
            .map(|s| Dispatch {
                steps: vec![s.clone()],
                _params: self._params.clone(),
                kept: self.kept.clone(),
            })
            .collect()
    }

    /// Keep `buffer` alive as long as this dispatch (one its bind groups use).
    pub(crate) fn keep(&mut self, buffer: wgpu::Buffer) {
        self.kept.push(buffer);
    }
}

/// One step of a dispatch: a pipeline, the (binding, buffer) pairs it uses besides the uniform
/// `Params` at binding 0, and its grid.
pub(crate) struct StepSpec<'a> {
    pub pipeline: &'a wgpu::ComputePipeline,
    pub buffers: &'a [(u32, &'a wgpu::Buffer)],
    pub workgroups: [u32; 3],
}

/// Build a multi-step dispatch sharing one uniform `params` at binding 0.
pub(crate) fn dispatch_steps<P: bytemuck::Pod>(
    ctx: &GpuContext,
    label: &str,
    params: &P,
    steps: &[StepSpec],
) -> Dispatch {
    let uniform = ctx.uniform(label, params);
    let steps = steps
        .iter()
        .map(|s| {
            let mut all = vec![(0, &uniform)];
            all.extend_from_slice(s.buffers);
            Step {
                pipeline: s.pipeline.clone(),
                bind_group: ctx.bind_group(s.pipeline, label, &all),
                workgroups: s.workgroups,
            }
        })
        .collect();
    Dispatch {
        steps,
        _params: uniform,
        kept: Vec::new(),
    }
}

/// A one-step dispatch of `pipeline` with the (binding, buffer) pairs its entry point uses
/// besides the uniform `params` at binding 0.
pub(crate) fn dispatch_one<P: bytemuck::Pod>(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    params: &P,
    buffers: &[(u32, &wgpu::Buffer)],
    workgroups: [u32; 3],
) -> Dispatch {
    let step = StepSpec {
        pipeline,
        buffers,
        workgroups,
    };
    dispatch_steps(ctx, label, params, &[step])
}

/// Build a one-step dispatch: uniform `params` at binding 0, then `buffers` at bindings 1, 2, ….
pub(crate) fn dispatch<P: bytemuck::Pod>(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    params: &P,
    buffers: &[&wgpu::Buffer],
    workgroups: [u32; 3],
) -> Dispatch {
    let numbered: Vec<(u32, &wgpu::Buffer)> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| (i as u32 + 1, *b))
        .collect();
    dispatch_steps(
        ctx,
        label,
        params,
        &[StepSpec {
            pipeline,
            buffers: &numbered,
            workgroups,
        }],
    )
}
