//! One Rust type per WGSL file. Each owns its pipeline, checks the shapes its shader can handle,
//! and turns buffers + sizes into a [`Dispatch`] that records into a compute pass. Nothing here
//! submits work: the caller decides what goes into which pass and command buffer.

pub mod indexer;
pub mod lse_merge;
pub mod probe;
pub mod sparse_mla;
pub mod topk;

pub use indexer::Indexer;
pub use lse_merge::LseMerge;
pub use probe::Probe;
pub use sparse_mla::SparseMla;
pub use topk::TopK;

/// A pipeline with its bind group and grid, ready to record. Holds its uniform buffer alive.
pub struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    _params: wgpu::Buffer,
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass) {
        if self.workgroups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups[0], self.workgroups[1], self.workgroups[2]);
    }
}

/// Build a dispatch: uniform `params` at binding 0, then `buffers` at bindings 1, 2, ….
pub(crate) fn dispatch<P: bytemuck::Pod>(
    ctx: &crate::gpu::GpuContext,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    params: &P,
    buffers: &[&wgpu::Buffer],
    workgroups: [u32; 3],
) -> Dispatch {
    let uniform = ctx.uniform(label, params);
    let mut all = vec![&uniform];
    all.extend_from_slice(buffers);
    let bind_group = ctx.bind_group(pipeline, label, &all);
    Dispatch {
        pipeline: pipeline.clone(),
        bind_group,
        workgroups,
        _params: uniform,
    }
}
