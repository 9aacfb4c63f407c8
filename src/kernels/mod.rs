//! One Rust type per WGSL file. Each owns its pipeline, checks the shapes its shader can handle,
//! and turns buffers + sizes into a [`Dispatch`] that records into a compute pass. Nothing here
//! submits work: the caller decides what goes into which pass and command buffer.

pub mod fill;
pub mod indexer;
pub mod lse_merge;
pub mod probe;
pub mod resolve;
pub mod sparse_mla;
pub mod topk;
pub mod transfer;

pub use fill::Fill;
pub use indexer::Indexer;
pub use lse_merge::LseMerge;
pub use probe::Probe;
pub use resolve::Resolve;
pub use sparse_mla::SparseMla;
pub use topk::TopK;
pub use transfer::Transfer;

/// One or more pipelines with their bind groups and grids, recorded back to back into one pass
/// (wgpu orders dispatches in a pass that touch the same buffers). Holds its uniform alive.
pub struct Dispatch {
    steps: Vec<Step>,
    _params: wgpu::Buffer,
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

    /// Each step as a dispatch of its own (to time the steps of a multi-step kernel apart).
    pub fn steps(&self) -> Vec<Dispatch> {
        self.steps
            .iter()
            .map(|s| Dispatch {
                steps: vec![s.clone()],
                _params: self._params.clone(),
            })
            .collect()
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
    ctx: &crate::gpu::GpuContext,
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
    }
}

/// Build a one-step dispatch: uniform `params` at binding 0, then `buffers` at bindings 1, 2, ….
pub(crate) fn dispatch<P: bytemuck::Pod>(
    ctx: &crate::gpu::GpuContext,
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
