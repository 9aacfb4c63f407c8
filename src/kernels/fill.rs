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
    _pad: [u32; 3],
}

#[derive(Debug)]
pub struct Fill {
    pipeline: wgpu::ComputePipeline,
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
                _pad: [0; 3],
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

    /// One row per sequence `b0 .. b0 + n`, as `table` (`[B]` of (base, start, count = 1, _),
    /// indexed by global sequence and rewritten by the caller before each submit) says: bound
    /// once, recorded every step.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_table(
        &self,
        ctx: &GpuContext,
        dest: &wgpu::Buffer,
        table: &wgpu::Buffer,
        words: u32,
        salt: u32,
        layer: u32,
        b0: u32,
        n: u32,
    ) -> Dispatch {
        let params = Params {
            words,
            salt,
            layer,
            b0,
            scale: 1.0,
            _pad: [0; 3],
        };
        dispatch(
            ctx,
            &self.pipeline,
            "fill",
            &params,
            &[table, dest],
            [words.div_ceil(256), n, 1],
        )
    }
}
