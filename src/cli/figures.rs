//! `ess-wgpu figures NAME`: one of the paper's observations as CSV, SVG and a table.

use super::{EngineArgs, apply_profile, parse_count_arg};
use clap::ValueEnum;
use ess_wgpu::{Error, GpuContext, Result};

#[derive(clap::Args, Clone)]
pub struct FiguresArgs {
    #[arg(value_enum)]
    figure: FigureArg,
    #[command(flatten)]
    engine: EngineArgs,
    /// Contexts (comma list, K = 1024); the first is used by `warmup`.
    #[arg(long, value_delimiter = ',', value_parser = parse_count_arg, default_values_t = [2048u32, 4096])]
    contexts: Vec<u32>,
    /// Sparse memory ratios to replay (comma list).
    #[arg(long, value_delimiter = ',', default_values_t = [0.05f64, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9])]
    ratios: Vec<f64>,
    /// batch-throughput: extra batches below each mode's largest.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2, 4])]
    batches: Vec<u32>,
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
}

pub fn run(args: FiguresArgs) -> Result<()> {
    let (mut base, budget) = args.engine.options(None, false)?;
    let ctx = GpuContext::new()?;
    let spec = args
        .engine
        .profile
        .clone()
        .unwrap_or_else(|| "paper".into());
    // the paper's profile unless asked otherwise (`--profile none`: one --locality)
    let profile = match spec.as_str() {
        "none" => Vec::new(),
        s => apply_profile(&ctx, Some(s), &mut base)?,
    };
    if profile.is_empty() {
        println!("locality: one ρ = {} for every layer", base.locality);
    } else {
        println!(
            "locality profile {spec}: target overlap per layer, calibrated to ρ on this adapter"
        );
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
    };
    let io = |path: &std::path::Path, e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| io(&args.out, e))?;
    let csv = args.out.join(format!("{}.csv", fig.name.replace('-', "_")));
    std::fs::write(&csv, &fig.csv).map_err(|e| io(&csv, e))?;
    print!("{}", fig.table);
    println!("wrote {}", csv.display());
    for (name, svg) in &fig.svgs {
        let path = args.out.join(name);
        std::fs::write(&path, svg).map_err(|e| io(&path, e))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
