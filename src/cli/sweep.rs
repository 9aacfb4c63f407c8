//! `ess-wgpu sweep`: each mode at its largest batch in a device budget, per context.

use super::{EngineArgs, apply_profile, parse_count_arg, print_report};
use ess_wgpu::decode::SweepReport;
use ess_wgpu::{Error, GpuContext, Result};

#[derive(clap::Args, Clone)]
pub struct SweepArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Contexts to sweep (comma list, K = 1024).
    #[arg(long, value_delimiter = ',', value_parser = parse_count_arg, default_values_t = [4096u32])]
    contexts: Vec<u32>,
    /// Extra batches to run below each mode's largest (comma list).
    #[arg(long, value_delimiter = ',')]
    batches: Vec<u32>,
    /// Cap on the batch.
    #[arg(long, default_value_t = 1024)]
    max_batch: u32,
    /// Working-set-aware admission: also run offload with its pool sized to the working set over
    /// this many steps (measured by a probe run), at the largest batch that then fits.
    #[arg(long)]
    admission: Option<u32>,
    /// Folder for sweep.csv and sweep.svg.
    #[arg(long, default_value = ".")]
    out: std::path::PathBuf,
}

pub fn run(args: SweepArgs) -> Result<()> {
    let (mut opts, budget) = args.engine.options(None, false)?;
    let ctx = GpuContext::new()?;
    apply_profile(&ctx, args.engine.profile.as_deref(), &mut opts)?;
    let points = ess_wgpu::decode::sweep(
        &ctx,
        &opts,
        &args.contexts,
        &args.batches,
        args.max_batch,
        budget,
        args.admission,
        |what| eprintln!("... {what}"),
    )?;
    let io = |path: &std::path::Path, e| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| io(&args.out, e))?;
    let csv = args.out.join("sweep.csv");
    std::fs::write(&csv, ess_wgpu::decode::sweep_csv(&points)).map_err(|e| io(&csv, e))?;
    let svg = args.out.join("sweep.svg");
    let budget_text = if budget >= 1 << 30 {
        format!("{:.1} GiB", budget as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", budget as f64 / (1u64 << 20) as f64)
    };
    let title = format!(
        "{}: decode throughput at a {budget_text} device budget",
        opts.run.model.name
    );
    std::fs::write(&svg, ess_wgpu::decode::sweep_svg(&points, &title)).map_err(|e| io(&svg, e))?;
    print_report(&SweepReport { points }, args.engine.json);
    if !args.engine.json {
        println!("wrote {} and {}", csv.display(), svg.display());
    }
    Ok(())
}
