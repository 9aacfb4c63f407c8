//! `ess-wgpu trace record | replay`: selections written by a GPU run, replayed through the LRU
//! policy alone.

use super::{
    EngineArgs, apply_profile, context_arg, out, output_file, ratio_arg, slots_arg,
    write_all_or_none,
};
use clap::Subcommand;
use ess_wgpu::cache::PoolSize;
use ess_wgpu::{GpuContext, Result};

#[derive(Subcommand)]
pub enum TraceCommand {
    /// Decode in offload mode and write every layer's top-k of every step (format ess-trace 1).
    Record {
        #[command(flatten)]
        engine: Box<EngineArgs>,
        /// Context per sequence, 1 ..= 1024K (comma list); default: the preset's.
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = context_arg)]
        contexts: Vec<u32>,
        /// The trace file to write.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Replay a trace through exact LRU pools: hits and misses per layer, no GPU needed.
    Replay {
        /// The trace file (format in src/trace.rs and the README).
        file: std::path::PathBuf,
        /// Pool slots per layer and sequence, top-k + 1 ..= 16384.
        #[arg(long, allow_negative_numbers = true, value_parser = slots_arg)]
        pool_slots: Option<u32>,
        /// Or a sparse memory ratio of the trace's capacity, (0, 1].
        #[arg(long, alias = "pool-ratio", default_value_t = 0.2, value_parser = ratio_arg, allow_negative_numbers = true)]
        sparse_memory_ratio: f64,
        /// Skip the warm-up windows.
        #[arg(long)]
        no_warmup: bool,
    },
}

pub fn run(cmd: TraceCommand) -> Result<()> {
    match cmd {
        TraceCommand::Record {
            engine,
            contexts,
            out,
        } => record(*engine, contexts, out),
        TraceCommand::Replay {
            file,
            pool_slots,
            sparse_memory_ratio,
            no_warmup,
        } => {
            let trace = ess_wgpu::trace::Trace::read(&file)?;
            let slots = match pool_slots {
                Some(n) => n,
                None => PoolSize::Ratio(sparse_memory_ratio).slots(trace.capacity, trace.topk)?,
            };
            let r = trace.replay(slots, !no_warmup)?;
            say!(
                "{}: {} layers, {} sequences, top-k {}, capacity {}; pool {slots} slots; {} decode steps; warm-up misses {}",
                file.display(),
                trace.layers,
                trace.batch,
                trace.topk,
                trace.capacity,
                r.steps.len(),
                r.warmup_misses
            )?;
            out(format_args!("{r}"))
        }
    }
}

fn record(engine: EngineArgs, contexts: Vec<u32>, out: std::path::PathBuf) -> Result<()> {
    let (mut opts, budget) = engine.options(None, true)?;
    if !contexts.is_empty() {
        opts.run.batch = contexts.len() as u32;
        opts.contexts = contexts;
    }
    opts.record_trace = true;
    opts.mode = ess_wgpu::engine::Mode::Offload;
    opts.validate()?;
    output_file(&out)?;
    let ctx = GpuContext::new()?;
    apply_profile(&ctx, engine.profile.as_deref(), &mut opts)?;
    let mut e = ess_wgpu::engine::Engine::new(&ctx, &opts, budget)?;
    for _ in 0..opts.steps {
        e.step(&ctx)?;
    }
    e.finish(&ctx)?;
    let trace = e.trace.take().expect("recording");
    write_all_or_none(&[(out.clone(), trace.to_text().into_bytes())])?;
    let gpu: Vec<String> = e
        .stats
        .counters
        .iter()
        .map(|c| format!("{}/{}", c.hits, c.misses))
        .collect();
    say!(
        "wrote {} ({} records); GPU hits/misses per layer: {}",
        out.display(),
        trace.entries.len(),
        gpu.join(" ")
    )
}
