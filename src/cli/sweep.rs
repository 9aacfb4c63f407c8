//! `ess-wgpu sweep`: each mode at its largest batch in a device budget, per context.

use super::{
    EngineArgs, apply_profile, batch_arg, context_arg, output_dir, print_report, window_arg,
    write_all_or_none,
};
use ess_wgpu::decode::SweepReport;
use ess_wgpu::{GpuContext, Result};

#[derive(clap::Args, Clone)]
pub struct SweepArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Contexts to sweep, 1 ..= 1024K each (comma list, K = 1024).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = context_arg, default_values_t = [4096u32])]
    contexts: Vec<u32>,
    /// Extra batches to run below each mode's largest, 1 ..= 65535 (comma list).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = batch_arg)]
    batches: Vec<u32>,
    /// Cap on the batch, 1 ..= 65535.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = batch_arg)]
    max_batch: u32,
    /// Working-set-aware admission: also run offload with its pool sized to the working set over
    /// this many steps, 1 ..= 1024 (measured by a probe run), at the largest batch that then fits.
    #[arg(long, allow_negative_numbers = true, value_parser = window_arg)]
    admission: Option<u32>,
    /// Folder for sweep.csv and sweep.svg.
    #[arg(long, default_value = ".")]
    out: std::path::PathBuf,
}

pub fn run(args: SweepArgs) -> Result<()> {
    let (mut opts, budget) = args.engine.options(None, false)?;
    let (csv, svg) = (args.out.join("sweep.csv"), args.out.join("sweep.svg"));
    // offload's pool at every context, before any GPU work
    for &c in &args.contexts {
        let capacity = c.checked_add(opts.steps).ok_or_else(|| {
            ess_wgpu::Error::config(
                "context + steps",
                format!("{c} + {}", opts.steps),
                "≤ 1048576",
            )
        })?;
        ess_wgpu::limits::in_range(
            "context + steps",
            capacity as u64,
            1,
            ess_wgpu::limits::MAX_CONTEXT as u64,
        )?;
        opts.pool.slots(capacity, opts.run.model.topk)?;
    }
    output_dir(&args.out)?;
    let ctx = GpuContext::new()?;
    apply_profile(&ctx, args.engine.profile.as_deref(), &mut opts)?;
    // sweep.csv rewritten after every point: a sweep that stops keeps what it measured
    let mut saved = 0;
    let swept = ess_wgpu::decode::sweep(
        &ctx,
        &opts,
        &args.contexts,
        &args.batches,
        args.max_batch,
        budget,
        args.admission,
        |what| eprintln!("... {what}"),
        |points| {
            let bytes = ess_wgpu::decode::sweep_csv(points).into_bytes();
            write_all_or_none(&[(csv.clone(), bytes)])?;
            saved = points.len();
            Ok(())
        },
    );
    let points = swept.inspect_err(|_| {
        if saved > 0 {
            eprintln!(
                "{} holds the {saved} points measured before the error",
                csv.display()
            );
        }
    })?;
    let budget_text = if budget >= 1 << 30 {
        format!("{:.1} GiB", budget as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", budget as f64 / (1u64 << 20) as f64)
    };
    let title = format!(
        "{}: decode throughput at a {budget_text} device budget",
        opts.run.model.name
    );
    write_all_or_none(&[
        (
            csv.clone(),
            ess_wgpu::decode::sweep_csv(&points).into_bytes(),
        ),
        (
            svg.clone(),
            ess_wgpu::decode::sweep_svg(&points, &title).into_bytes(),
        ),
    ])?;
    print_report(&SweepReport { points }, args.engine.json)?;
    if !args.engine.json {
        say!("wrote {} and {}", csv.display(), svg.display())?;
    }
    Ok(())
}
