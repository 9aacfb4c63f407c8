//! `ess-wgpu figures NAME`: one of the paper's observations as CSV, SVG and a table.

use super::{
    EngineArgs, apply_profile, batch_arg, context_arg, locality_arg, out, output_dir, ratio_arg,
    write_all_or_none,
};
use clap::ValueEnum;
use ess_wgpu::{GpuContext, Result};

#[derive(clap::Args, Clone)]
pub struct FiguresArgs {
    #[arg(value_enum)]
    figure: FigureArg,
    #[command(flatten)]
    engine: EngineArgs,
    /// Contexts, 1 ..= 1024K each (comma list, K = 1024); the first is used by `warmup`.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = context_arg, default_values_t = [2048u32, 4096])]
    contexts: Vec<u32>,
    /// Sparse memory ratios to replay, each in (0, 1] (comma list).
    #[arg(long, value_delimiter = ',', value_parser = ratio_arg, allow_negative_numbers = true, default_values_t = [0.05f64, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9])]
    ratios: Vec<f64>,
    /// batch-throughput: extra batches below each mode's largest, 1 ..= 65535.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = batch_arg, default_values_t = [1u32, 2, 4])]
    batches: Vec<u32>,
    /// overlap: localities (ρ, 0 ..= 1, comma list) whose misses make the x axis.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = locality_arg, default_values_t = [1.0f32, 0.995, 0.99, 0.98, 0.96, 0.92, 0.85, 0.7, 0.0])]
    localities: Vec<f32>,
    /// Folder for the CSV and SVG files.
    #[arg(long, default_value = "figures")]
    out: std::path::PathBuf,
}

/// The figures (docs/FIGURES.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FigureArg {
    /// Step-to-step top-k overlap per layer (the paper's Fig. 2).
    Similarity,
    /// Misses per step with and without LRU warm-up.
    Warmup,
    /// Misses per layer at several contexts.
    MissesPerLayer,
    /// Misses against the sparse memory ratio.
    MissesVsRatio,
    /// Throughput against batch, both modes.
    BatchThroughput,
    /// One decode step's passes from GPU timestamps, both modes (the paper's Fig. 6).
    Timeline,
    /// Exposed transfer time per layer against misses, every --overlap schedule (the paper's
    /// Fig. 7); offload at the first --contexts, one --locality per point (no profile).
    Overlap,
}

pub fn run(args: FiguresArgs) -> Result<()> {
    let (mut base, budget) = args.engine.options(None, false)?;
    if args.figure == FigureArg::Similarity && base.steps < 2 {
        return Err(ess_wgpu::Error::config(
            "steps",
            base.steps,
            "≥ 2 (the overlap compares consecutive steps)",
        ));
    }
    output_dir(&args.out)?;
    let ctx = GpuContext::new()?;
    let spec = match args.figure {
        // its x axis is the misses one ρ for every layer gives
        FigureArg::Overlap => "none".into(),
        // a model's queries are its own
        _ if base.model.is_some() => "none".into(),
        _ => args
            .engine
            .profile
            .clone()
            .unwrap_or_else(|| "paper".into()),
    };
    // the paper's profile unless asked otherwise (`--profile none`: one --locality)
    let profile = match spec.as_str() {
        "none" => Vec::new(),
        s => apply_profile(&ctx, Some(s), &mut base)?,
    };
    if let Some(m) = &base.model {
        say!("queries: the model's ({}), over hashed contexts", m.what)?;
    } else if profile.is_empty() {
        say!("locality: one ρ = {} for every layer", base.locality)?;
    } else {
        say!("locality profile {spec}: target overlap per layer, calibrated to ρ on this adapter")?;
    }
    let fo = ess_wgpu::figures::FigureOptions {
        base,
        contexts: args.contexts.clone(),
        ratios: args.ratios.clone(),
        targets: profile.iter().map(|p| p.0).collect(),
    };
    use ess_wgpu::figures as f;
    let fig = match args.figure {
        FigureArg::Similarity => f::similarity(&ctx, &fo)?,
        FigureArg::Warmup => f::warmup(&ctx, &fo)?,
        FigureArg::MissesPerLayer => f::misses_per_layer(&ctx, &fo)?,
        FigureArg::MissesVsRatio => f::misses_vs_ratio(&ctx, &fo)?,
        FigureArg::BatchThroughput => f::batch_throughput(&ctx, &fo, &args.batches, budget)?,
        FigureArg::Timeline => f::timeline(&ctx, &fo, budget)?,
        FigureArg::Overlap => f::overlap(&ctx, &fo, budget, &args.localities)?.0,
    };
    let csv = args.out.join(format!("{}.csv", fig.name.replace('-', "_")));
    let mut files = vec![(csv.clone(), fig.csv.clone().into_bytes())];
    for (name, svg) in &fig.svgs {
        files.push((args.out.join(name), svg.clone().into_bytes()));
    }
    write_all_or_none(&files)?;
    out(format_args!("{}", fig.table))?;
    for (path, _) in &files {
        say!("wrote {}", path.display())?;
    }
    Ok(())
}
