//! Synthetic cache rows from a hash, written by the GPU into any row buffer.
//! Shader: `shaders/fill.wgsl`.

use super::{Dispatch, dispatch};
use crate::error::Result;
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    words: u32,
    salt: u32,
    layer: u32,
    b0: u32,
    scale: f32,
    batch_rows: u32,
    _pad: [u32; 2],
}

#[derive(Debug)]
pub struct Fill {
    pipeline: wgpu::ComputePipeline,
    newest: wgpu::ComputePipeline,
}

/// One sequence's part of a fill: rows `dest[base + i] = row(token = start + i)` for `i < count`.
#[derive(Clone, Copy, Debug)]
pub struct FillRange {
    pub base: u32,
    pub start: u32,
    pub count: u32,
}

impl Fill {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Fill {
            pipeline: ctx.pipeline("fill", crate::shaders::FILL, "main", &[])?,
            newest: ctx.pipeline("fill newest", crate::shaders::FILL, "newest", &[])?,
        })
    }

    /// Dispatches writing `ranges[i]` of sequences `b0 + i` into `dest` (rows of `words` u32),
    /// split so that no grid dimension passes 65,535 workgroups.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        ctx: &GpuContext,
        dest: &wgpu::Buffer,
        words: u32,
        salt: u32,
        layer: u32,
        scale: f32,
        b0: u32,
        ranges: &[FillRange],
    ) -> Result<Vec<Dispatch>> {
        let rows_per_dispatch = (65535 * 256 / words).max(1);
        let longest = ranges.iter().map(|r| r.count).max().unwrap_or(0);
        let mut out = Vec::new();
        let mut done = 0;
        while done < longest {
            let chunk: Vec<[u32; 4]> = ranges
                .iter()
                .map(|r| {
                    let n = r.count.saturating_sub(done).min(rows_per_dispatch);
                    [r.base + done, r.start + done, n, 0]
                })
                .collect();
            // the table is indexed by global sequence: pad in front for b0
            let mut table = vec![[0u32; 4]; b0 as usize];
            table.extend(chunk);
            let table = ctx.upload("fill table", &table)?;
            let n = rows_per_dispatch.min(longest - done);
            let params = Params {
                words,
                salt,
                layer,
                b0,
                scale,
                batch_rows: 0,
                _pad: [0; 2],
            };
            out.push(dispatch(
                ctx,
                &self.pipeline,
                "fill",
                &params,
                &[&table, dest],
                [(n * words).div_ceil(256), ranges.len() as u32, 1],
            ));
            done += n;
        }
        Ok(out)
    }

    /// Each sequence `b0 .. b0 + n`'s newest row (token T_b − 1, as `seq` `[B, 2]` (first row,
    /// T_b) says) into `dest`: at row `first_row + T_b − 1`, or at row b with `batch_rows`.
    /// Bound once; each step only the sequence table changes.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_newest(
        &self,
        ctx: &GpuContext,
        dest: &wgpu::Buffer,
        seq: &wgpu::Buffer,
        words: u32,
        salt: u32,
        layer: u32,
        b0: u32,
        n: u32,
        batch_rows: bool,
    ) -> Dispatch {
        let params = Params {
            words,
            salt,
            layer,
            b0,
            scale: 1.0,
            batch_rows: batch_rows as u32,
            _pad: [0; 2],
        };
        let buffers = [(2, dest), (3, seq)];
        super::dispatch_steps(
            ctx,
            "fill newest",
            &params,
            &[super::StepSpec {
                pipeline: &self.newest,
                buffers: &buffers,
                workgroups: [words.div_ceil(256), n, 1],
            }],
        )
    }
}
