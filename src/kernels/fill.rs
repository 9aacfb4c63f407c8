//! Synthetic cache rows from a hash, written by the GPU into any row buffer, as f16, f32 or FP8
//! (quantised where they are made, as the model's `new_token` does). Shader: `shaders/fill.wgsl`.

use super::Dispatch;
use crate::config::Dtype;
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::workload::RowLayout;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    words: u32,
    salt: u32,
    layer: u32,
    b0: u32,
    scale: f32,
    batch_rows: u32,
    f32_values: u32,
    kv: u32,
    rope: u32,
    slots: u32,
    key_rows: u32,
    from_src: u32,
    src_seq: u32,
    src_tok: u32,
    width: u32,
    _pad: u32,
}

#[derive(Debug)]
pub struct Fill {
    pipeline: wgpu::ComputePipeline,
    newest: wgpu::ComputePipeline,
    pipeline_fp8: wgpu::ComputePipeline,
    newest_fp8: wgpu::ComputePipeline,
    /// What the hashed fills bind as `src` (every entry point uses the binding).
    no_src: wgpu::Buffer,
}

/// Rows taken from a buffer instead of the hash: f32 values, the row of (sequence b, token)
/// at `buffer` row `b · seq_rows + token · token_rows`.
#[derive(Clone, Copy)]
pub struct FillSource<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub seq_rows: u32,
    pub token_rows: u32,
}

/// What a fill writes: rows of `layout` stored as `dtype`. FP8 keys go into the FP8 key cache
/// whose size is the destination buffer's ([`crate::reference::fp8::pack_index_cache`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillRows {
    pub dtype: Dtype,
    pub layout: RowLayout,
}

impl FillRows {
    /// The uniform for `dest` (everything but the sequences, the salt and the layer).
    fn params(&self, dest: &wgpu::Buffer) -> Params {
        let width = self.layout.width() as u32;
        let (kv, rope, slots, key_rows, words) = match (self.dtype, self.layout) {
            (Dtype::Fp8, RowLayout::Latent { kv, rope }) => {
                let slots = crate::reference::fp8::latent_scale_slots(kv) as u32;
                let bytes = self.dtype.row_bytes(kv as u32, rope as u32);
                (kv as u32, rope as u32, slots, 0, (bytes / 4) as u32)
            }
            (Dtype::Fp8, RowLayout::Key { dim }) => {
                let rows = dest.size() / self.dtype.key_bytes(dim as u32);
                (width, 0, 1, rows as u32, width / 4)
            }
            (Dtype::F16, _) => (0, 0, 0, 0, width / 2),
            (Dtype::F32, _) => (0, 0, 0, 0, width),
        };
        Params {
            words,
            salt: 0,
            layer: 0,
            b0: 0,
            scale: 1.0,
            batch_rows: 0,
            f32_values: (self.dtype == Dtype::F32) as u32,
            kv,
            rope,
            slots,
            key_rows,
            from_src: 0,
            src_seq: 0,
            src_tok: 0,
            width,
            _pad: 0,
        }
    }
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
        let unit = crate::shaders::FILL;
        Ok(Fill {
            pipeline: ctx.pipeline("fill", unit, "main", &[])?,
            newest: ctx.pipeline("fill newest", unit, "newest", &[])?,
            pipeline_fp8: ctx.pipeline("fill fp8", unit, "main_fp8", &[])?,
            newest_fp8: ctx.pipeline("fill newest fp8", unit, "newest_fp8", &[])?,
            no_src: ctx.storage("fill: no source", 16)?,
        })
    }

    /// The uniform's source fields and the buffer to bind as `src`.
    fn source<'a>(
        &'a self,
        params: Params,
        src: Option<&FillSource<'a>>,
    ) -> (Params, &'a wgpu::Buffer) {
        match src {
            None => (params, &self.no_src),
            Some(s) => (
                Params {
                    from_src: 1,
                    src_seq: s.seq_rows,
                    src_tok: s.token_rows,
                    ..params
                },
                s.buffer,
            ),
        }
    }

    /// Dispatches writing `ranges[i]` of sequences `b0 + i` into `dest` (`rows`), split so that
    /// no grid dimension passes 65,535 workgroups.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        ctx: &GpuContext,
        dest: &wgpu::Buffer,
        rows: FillRows,
        salt: u32,
        layer: u32,
        scale: f32,
        b0: u32,
        ranges: &[FillRange],
    ) -> Result<Vec<Dispatch>> {
        self.bind_from(ctx, dest, rows, None, (salt, layer, scale), b0, ranges)
    }

    /// [`Fill::bind`] with the values from `src` where given (the hash's salt and scale then
    /// unused).
    #[allow(clippy::too_many_arguments)]
    pub fn bind_from(
        &self,
        ctx: &GpuContext,
        dest: &wgpu::Buffer,
        rows: FillRows,
        src: Option<&FillSource>,
        (salt, layer, scale): (u32, u32, f32),
        b0: u32,
        ranges: &[FillRange],
    ) -> Result<Vec<Dispatch>> {
        let (base, src) = self.source(rows.params(dest), src);
        let fp8 = rows.dtype == Dtype::Fp8;
        let words = base.words;
        let rows_per_dispatch = match fp8 {
            true => 65535,
            false => (65535 * 256 / words).max(1),
        };
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
                salt,
                layer,
                b0,
                scale,
                ..base
            };
            let (pipeline, x) = match fp8 {
                true => (&self.pipeline_fp8, n),
                false => (&self.pipeline, (n * words).div_ceil(256)),
            };
            let buffers = [(1, &table), (2, dest), (4, src)];
            let grid = [x, ranges.len() as u32, 1];
            out.push(super::dispatch_one(
                ctx, pipeline, "fill", &params, &buffers, grid,
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
        rows: FillRows,
        salt: u32,
        layer: u32,
        b0: u32,
        n: u32,
        batch_rows: bool,
    ) -> Dispatch {
        self.bind_newest_from(ctx, dest, seq, rows, None, (salt, layer), b0, n, batch_rows)
    }

    /// [`Fill::bind_newest`] with the values from `src` where given.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_newest_from(
        &self,
        ctx: &GpuContext,
        dest: &wgpu::Buffer,
        seq: &wgpu::Buffer,
        rows: FillRows,
        src: Option<&FillSource>,
        (salt, layer): (u32, u32),
        b0: u32,
        n: u32,
        batch_rows: bool,
    ) -> Dispatch {
        let (base, src) = self.source(rows.params(dest), src);
        let params = Params {
            salt,
            layer,
            b0,
            batch_rows: batch_rows as u32,
            ..base
        };
        let (pipeline, x) = match rows.dtype {
            Dtype::Fp8 => (&self.newest_fp8, 1),
            _ => (&self.newest, base.words.div_ceil(256)),
        };
        let buffers = [(2, dest), (3, seq), (4, src)];
        super::dispatch_one(ctx, pipeline, "fill newest", &params, &buffers, [x, n, 1])
    }
}
