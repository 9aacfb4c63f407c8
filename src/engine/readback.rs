//! One readback per step, without waiting for it: a ring of host-mapped buffers.
//!
//! Each step copies what the CPU needs from it (timestamps, resolve counts, and the top-k ids
//! when a trace is recorded) into the next buffer of the ring, inside the step's own command
//! buffer, and asks for it to be mapped. The CPU goes on recording the next steps; a buffer is
//! read when the ring comes round to it again (or at [`ReadbackRing::drain`]). So the GPU is
//! never idle waiting for the CPU to read a step, and the CPU waits only when it is `depth`
//! steps ahead.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Mapped};
use std::collections::VecDeque;

/// A step's tag and the bytes its readback held.
pub type Readout<T> = (T, Vec<u8>);

struct InFlight<T> {
    slot: usize,
    index: wgpu::SubmissionIndex,
    mapped: Mapped,
    tag: T,
}

/// `depth` buffers of `size` bytes; `T` says what a buffer holds (the step it came from).
pub struct ReadbackRing<T> {
    buffers: Vec<wgpu::Buffer>,
    in_flight: VecDeque<InFlight<T>>,
    next: usize,
}

impl<T> ReadbackRing<T> {
    pub fn new(ctx: &GpuContext, size: u64, depth: usize) -> Self {
        ReadbackRing {
            buffers: (0..depth.max(1))
                .map(|i| ctx.readback_buffer(&format!("step readback {i}"), size))
                .collect(),
            in_flight: VecDeque::new(),
            next: 0,
        }
    }

    /// The buffer the next step copies into. If it still holds an unread step, that step is
    /// waited for and returned first (oldest first), so nothing is overwritten unread.
    pub async fn next_buffer(
        &mut self,
        ctx: &GpuContext,
    ) -> Result<(Option<Readout<T>>, &wgpu::Buffer)> {
        let done = if self.in_flight.len() == self.buffers.len() {
            self.pop(ctx).await?
        } else {
            None
        };
        Ok((done, &self.buffers[self.next]))
    }

    /// The buffer given by [`ReadbackRing::next_buffer`] was written by submission `index`.
    pub fn submitted(&mut self, index: wgpu::SubmissionIndex, tag: T) {
        let buffer = &self.buffers[self.next];
        self.in_flight.push_back(InFlight {
            slot: self.next,
            index,
            mapped: crate::gpu::map_async(buffer, 0..buffer.size()),
            tag,
        });
        self.next = (self.next + 1) % self.buffers.len();
    }

    /// Every unread step, oldest first (waits for the GPU).
    pub async fn drain(&mut self, ctx: &GpuContext) -> Result<Vec<Readout<T>>> {
        let mut out = Vec::new();
        while let Some(d) = self.pop(ctx).await? {
            out.push(d);
        }
        Ok(out)
    }

    /// The oldest step in flight. Natively the wait makes its map callback run (in whichever
    /// thread's poll saw the submission finish: with a context shared between threads it may
    /// still be on its way when our wait returns, so it gets a minute); in a browser the wait
    /// does nothing and the await yields to the page's event loop until it has run.
    async fn pop(&mut self, ctx: &GpuContext) -> Result<Option<Readout<T>>> {
        let Some(f) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        ctx.wait_for(f.index)?;
        #[cfg(not(target_arch = "wasm32"))]
        if !f.mapped.arrived_within(std::time::Duration::from_secs(60)) {
            return Err(Error::Gpu("readback map callback never ran".into()));
        }
        f.mapped
            .await
            .map_err(|e| Error::Gpu(format!("readback map failed: {e}")))?;
        let bytes = crate::gpu::take_mapped(&self.buffers[f.slot], ..)?;
        Ok(Some((f.tag, bytes)))
    }
}
