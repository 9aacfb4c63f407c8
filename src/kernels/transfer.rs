//! Row transfers between the host store and the GPU staging pool: zero-copy gather, scatter of
//! a CPU-packed staging upload, and write-back (newest row → reserved slot + host store).
//! Shader: `shaders/transfer.wgsl`.

use super::{Dispatch, StepSpec, dispatch_steps};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    row_vecs: u32,
    k: u32,
    slots: u32,
    capacity: u32,
    b0: u32,
    host_b0: u32,
    _pad: [u32; 2],
}

#[derive(Debug)]
pub struct Transfer {
    gather: wgpu::ComputePipeline,
    scatter: wgpu::ComputePipeline,
    write_back: wgpu::ComputePipeline,
    pool_newest: wgpu::ComputePipeline,
    /// 16-byte units per row.
    pub row_vecs: u32,
    pub k: u32,
    pub slots: u32,
    pub capacity: u32,
}

/// Where the rows of sequences `b0 .. b0 + batch` go and come from.
pub struct TransferArgs<'a> {
    /// `[B, k]` (token, slot) and `[B]` (misses, hits) from the resolve.
    pub copies: &'a wgpu::Buffer,
    pub counts: &'a wgpu::Buffer,
    /// `[B, P, row]` the pool of one layer.
    pub pool: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
}

impl Transfer {
    /// `row_bytes` must be a multiple of 16 (656 and 1152 are).
    pub fn new(
        ctx: &GpuContext,
        row_bytes: u64,
        k: u32,
        slots: u32,
        capacity: u32,
    ) -> Result<Self> {
        if row_bytes == 0 || !row_bytes.is_multiple_of(16) {
            return Err(crate::Error::config(
                "row bytes",
                row_bytes,
                "a positive multiple of 16",
            ));
        }
        let src = crate::shaders::TRANSFER;
        Ok(Transfer {
            gather: ctx.pipeline("gather", src, "gather", &[])?,
            scatter: ctx.pipeline("scatter", src, "scatter", &[])?,
            write_back: ctx.pipeline("write_back", src, "write_back", &[])?,
            pool_newest: ctx.pipeline("pool_newest", src, "pool_newest", &[])?,
            row_vecs: (row_bytes / 16) as u32,
            k,
            slots,
            capacity,
        })
    }

    /// `host_b0`: the first sequence of the host-store group the dispatch reads or writes.
    fn params(&self, b0: u32, host_b0: u32) -> Params {
        Params {
            row_vecs: self.row_vecs,
            k: self.k,
            slots: self.slots,
            capacity: self.capacity,
            b0,
            host_b0,
            _pad: [0; 2],
        }
    }

    fn grid_rows(&self, batch: u32) -> [u32; 3] {
        [(self.k * self.row_vecs).div_ceil(256), batch, 1]
    }

    /// Zero-copy: every missed row straight from the host store into its slot. `host` is the
    /// host-store group holding sequences `a.b0 .. a.b0 + a.batch` (`capacity` rows each), whose
    /// first sequence is `host_b0` (≤ `a.b0`).
    pub fn gather(
        &self,
        ctx: &GpuContext,
        a: &TransferArgs,
        host: &wgpu::Buffer,
        host_b0: u32,
    ) -> Dispatch {
        let buffers = [(1, a.copies), (2, a.counts), (3, host), (4, a.pool)];
        let step = StepSpec {
            pipeline: &self.gather,
            buffers: &buffers,
            workgroups: self.grid_rows(a.batch),
        };
        dispatch_steps(ctx, "gather", &self.params(a.b0, host_b0), &[step])
    }

    /// Staging: rows packed by the CPU as `staging[b, r]` (r = miss rank) into their slots.
    pub fn scatter(&self, ctx: &GpuContext, a: &TransferArgs, staging: &wgpu::Buffer) -> Dispatch {
        let buffers = [(1, a.copies), (2, a.counts), (3, staging), (4, a.pool)];
        let step = StepSpec {
            pipeline: &self.scatter,
            buffers: &buffers,
            workgroups: self.grid_rows(a.batch),
        };
        dispatch_steps(ctx, "scatter", &self.params(a.b0, a.b0), &[step])
    }

    /// The newest row of each sequence into the pool's reserved slot and, with `a.host`, into
    /// the host store at token T_b − 1 (write-back).
    pub fn write_back(&self, ctx: &GpuContext, a: &WriteBackArgs) -> Dispatch {
        let grid = [self.row_vecs.div_ceil(256), a.batch, 1];
        match a.host {
            Some(host) => {
                let buffers = [(3, a.new_rows), (4, a.pool), (5, a.seq), (6, host)];
                let step = StepSpec {
                    pipeline: &self.write_back,
                    buffers: &buffers,
                    workgroups: grid,
                };
                dispatch_steps(ctx, "write_back", &self.params(a.b0, a.b0), &[step])
            }
            None => {
                let buffers = [(3, a.new_rows), (4, a.pool)];
                let step = StepSpec {
                    pipeline: &self.pool_newest,
                    buffers: &buffers,
                    workgroups: grid,
                };
                dispatch_steps(ctx, "pool_newest", &self.params(a.b0, a.b0), &[step])
            }
        }
    }
}

/// The newest rows of sequences `b0 .. b0 + batch`.
pub struct WriteBackArgs<'a> {
    /// `[B, P, row]` the pool of one layer.
    pub pool: &'a wgpu::Buffer,
    /// `[B, row]` the new rows.
    pub new_rows: &'a wgpu::Buffer,
    /// `[B, 2]` (_, T_b): the new row is token T_b − 1.
    pub seq: &'a wgpu::Buffer,
    /// The host-store group of these sequences (zero-copy write-back), or none.
    pub host: Option<&'a wgpu::Buffer>,
    pub b0: u32,
    pub batch: u32,
}
