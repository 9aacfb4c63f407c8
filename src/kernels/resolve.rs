//! LRU resolve of the staging pool: top-k token ids → slot ids, copy list, counts.
//! Shader: `shaders/resolve.wgsl`. Oracle: [`crate::reference::LruPool`].

use super::{Dispatch, dispatch};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// Largest pool (slots per sequence per layer) the resolve kernel handles.
pub const MAX_SLOTS: u32 = 16384;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    slots: u32,
    capacity: u32,
    b0: u32,
    _pad: [u32; 4],
}

#[derive(Debug)]
pub struct Resolve {
    pipeline: wgpu::ComputePipeline,
    pub k: u32,
    pub slots: u32,
    pub capacity: u32,
}

/// Buffers of one resolve over sequences `b0 .. b0 + batch` (all indexed by global b).
pub struct ResolveArgs<'a> {
    /// `[B, k]` i32 token ids (top-k output).
    pub topk_indices: &'a wgpu::Buffer,
    /// `[B, 2]` u32 (_, T_b): the newest token of b is T_b − 1.
    pub seq: &'a wgpu::Buffer,
    /// `[B, P]` (i32 token or −1, i32 last use).
    pub slot_state: &'a wgpu::Buffer,
    /// `[B, capacity]` i32 slot of each token or −1.
    pub token_slot: &'a wgpu::Buffer,
    /// `[B, k]` i32 output: slot ids.
    pub slot_ids: &'a wgpu::Buffer,
    /// `[B, k]` (u32 token, u32 slot) output: the first `misses` entries are valid.
    pub copies: &'a wgpu::Buffer,
    /// `[B]` (u32 misses, u32 hits) output.
    pub counts: &'a wgpu::Buffer,
    /// `[4]` u32 uniform, x = this step's number: ≥ 1 and larger than every earlier step's on
    /// these tables ([`Resolve::clock`], rewritten before each submit).
    pub clock: &'a wgpu::Buffer,
    pub b0: u32,
    pub batch: u32,
}

/// What resolve can be built for: top-k `k`, `slots` P per pool (k + 1 ..= MAX_SLOTS: slot
/// P − 1 is reserved for the newest token), `capacity` tokens per sequence in the token table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolveShape {
    pub k: u32,
    pub slots: u32,
    pub capacity: u32,
}

impl ResolveShape {
    pub fn validate(&self) -> Result<()> {
        super::topk::TopKShape { k: self.k }.validate()?;
        check_slots(self.slots, self.k, &self.slots.to_string())
    }
}

/// The pool-size limit, with `what` saying where `slots` came from (a count, or a ratio's
/// arithmetic): the one message for it.
pub fn check_slots(slots: u32, k: u32, what: &str) -> Result<()> {
    if slots <= k || slots > MAX_SLOTS {
        return Err(Error::config(
            "pool slots",
            what,
            format!(
                "{} ..= {MAX_SLOTS} (top-k {k} + 1 reserved for the newest token)",
                k + 1
            ),
        ));
    }
    Ok(())
}

impl Resolve {
    pub fn new(ctx: &GpuContext, shape: &ResolveShape) -> Result<Self> {
        shape.validate()?;
        let ResolveShape { k, slots, capacity } = *shape;
        let pipeline =
            ctx.pipeline("resolve", crate::shaders::RESOLVE, "main", &[("WG", 256.0)])?;
        Ok(Resolve {
            pipeline,
            k,
            slots,
            capacity,
        })
    }

    pub fn bind(&self, ctx: &GpuContext, a: &ResolveArgs) -> Dispatch {
        let params = Params {
            k: self.k,
            slots: self.slots,
            capacity: self.capacity,
            b0: a.b0,
            _pad: [0; 4],
        };
        let buffers = [
            a.topk_indices,
            a.seq,
            a.slot_state,
            a.token_slot,
            a.slot_ids,
            a.copies,
            a.counts,
            a.clock,
        ];
        dispatch(
            ctx,
            &self.pipeline,
            "resolve",
            &params,
            &buffers,
            [a.batch, 1, 1],
        )
    }

    /// A step-number uniform for [`ResolveArgs::clock`], holding `step`.
    pub fn clock(ctx: &GpuContext, step: u32) -> wgpu::Buffer {
        ctx.uniform("resolve clock", &[step, 0, 0, 0])
    }

    /// Set the step number every resolve bound to `clock` sees at the next submit.
    pub fn set_step(ctx: &GpuContext, clock: &wgpu::Buffer, step: u32) {
        ctx.write(clock, 0, bytemuck::bytes_of(&[step, 0, 0, 0]));
    }
}
