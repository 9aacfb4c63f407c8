//! Rows of f32 values into DeepSeek-V3.2's FP8 cache layout (issue 13): kv values as e4m3 bytes
//! with one power-of-two f32 scale per 128 of them, then rope values as bf16; a latent row of
//! v32 is 656 bytes, an indexer key (rope 0) 132. Shader: `shaders/fp8_quant.wgsl`.
//! Reference: [`crate::reference::fp8::pack_latent_row`] with [`ScaleRule::Ue8m0`], byte for
//! byte.
//!
//! [`ScaleRule::Ue8m0`]: crate::reference::fp8::ScaleRule::Ue8m0

use super::{Dispatch, dispatch};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    kv: u32,
    rope: u32,
    slots: u32,
    row_words: u32,
    cache_rows: u32,
    _pad: [u32; 2],
}

/// What a packed row holds: `kv` quantised values (a multiple of 4, at most 4096), `slots` f32
/// slots for their ⌈kv / 128⌉ scales, and `rope` bf16 values (even, at most 256). With `cache`,
/// the rows go into the FP8 key cache instead of one after another (its values, then its scales:
/// [`crate::reference::fp8::pack_index_cache`]; one scale a row, no rope).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fp8RowShape {
    pub kv: u32,
    pub slots: u32,
    pub rope: u32,
    pub cache: bool,
}

impl Fp8RowShape {
    /// A latent row ([`crate::reference::fp8::pack_latent_row`]): the scale slots rounded up to
    /// a multiple of 4.
    pub fn latent(kv: u32, rope: u32) -> Self {
        let slots = crate::reference::fp8::latent_scale_slots(kv as usize) as u32;
        Fp8RowShape {
            kv,
            slots,
            rope,
            cache: false,
        }
    }

    /// Rows of `dim` values into the FP8 key cache: what the indexer reads its keys and (for FP8
    /// keys) its queries from.
    pub fn key_cache(dim: u32) -> Self {
        Fp8RowShape {
            cache: true,
            ..Self::key(dim)
        }
    }

    /// An indexer key ([`crate::reference::fp8::pack_index_key`]): one slot per scale, no rope.
    pub fn key(dim: u32) -> Self {
        let slots = dim.div_ceil(crate::reference::fp8::BLOCK as u32);
        Fp8RowShape {
            kv: dim,
            slots,
            rope: 0,
            cache: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        crate::config::check(self.kv, "fp8 kv values", 4, 4096, 4)?;
        crate::config::check(self.rope, "fp8 rope values", 0, 256, 2)?;
        let least = self.kv.div_ceil(crate::reference::fp8::BLOCK as u32);
        crate::config::check(self.slots, "fp8 scale slots", least, least + 3, 1)?;
        if self.cache && (self.rope != 0 || self.slots != 1) {
            return Err(Error::config(
                "fp8 key cache rows",
                format!("{} + {} values, {} scales", self.kv, self.rope, self.slots),
                "at most 128 values, one scale, no rope",
            ));
        }
        Ok(())
    }

    /// Bytes of a packed row (656 for v32's latent rows, 132 for its indexer keys).
    pub fn row_bytes(&self) -> u64 {
        (self.kv + 4 * self.slots + 2 * self.rope) as u64
    }
}

#[derive(Debug)]
pub struct Fp8Quant {
    pipeline: wgpu::ComputePipeline,
    /// The inverse (`dequant`): packed rows back to f32 values.
    dequant: wgpu::ComputePipeline,
    pub shape: Fp8RowShape,
}

impl Fp8Quant {
    pub fn new(ctx: &GpuContext, shape: &Fp8RowShape) -> Result<Self> {
        shape.validate()?;
        let unit = crate::shaders::FP8_QUANT;
        Ok(Fp8Quant {
            pipeline: ctx.pipeline("fp8_quant", unit, "main", &[])?,
            dequant: ctx.pipeline("fp8_dequant", unit, "dequant", &[])?,
            shape: *shape,
        })
    }

    /// Pack `rows` rows of `src` (`[rows, kv + rope]` f32) into `dst` (`[rows, row_bytes]`).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        rows: u32,
    ) -> Result<Dispatch> {
        let params = self.params(src, dst, rows)?;
        Ok(dispatch(
            ctx,
            &self.pipeline,
            "fp8_quant",
            &params,
            &[src, dst],
            super::grid_2d(rows),
        ))
    }

    /// The inverse: `rows` packed rows of `packed` back into `values` (`[rows, kv + rope]` f32),
    /// each value `e4m3(byte) · scale` or its bf16.
    pub fn bind_dequant(
        &self,
        ctx: &GpuContext,
        packed: &wgpu::Buffer,
        values: &wgpu::Buffer,
        rows: u32,
    ) -> Result<Dispatch> {
        let params = self.params(values, packed, rows)?;
        let n = rows as u64 * (self.shape.kv + self.shape.rope) as u64;
        Ok(super::dispatch_steps(
            ctx,
            "fp8_dequant",
            &params,
            &[super::StepSpec {
                pipeline: &self.dequant,
                buffers: &[(2, packed), (3, values)],
                workgroups: super::grid_2d(n.div_ceil(256) as u32),
            }],
        ))
    }

    /// The uniform of `rows` rows, once both buffers are checked to hold them.
    fn params(&self, values: &wgpu::Buffer, packed: &wgpu::Buffer, rows: u32) -> Result<Params> {
        let Fp8RowShape {
            kv,
            slots,
            rope,
            cache,
        } = self.shape;
        let row_bytes = self.shape.row_bytes();
        let need = [
            ("fp8 values", values, rows as u64 * (kv + rope) as u64 * 4),
            ("fp8 packed rows", packed, rows as u64 * row_bytes),
        ];
        for (what, buf, bytes) in need {
            if buf.size() < bytes {
                return Err(Error::config(
                    what,
                    buf.size(),
                    format!("at least {bytes} bytes"),
                ));
            }
        }
        Ok(Params {
            rows,
            kv,
            rope,
            slots,
            row_words: (row_bytes / 4) as u32,
            cache_rows: if cache { rows } else { 0 },
            _pad: [0; 2],
        })
    }
}
