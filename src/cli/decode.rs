//! `ess-wgpu decode` (the main job): both modes, compared bit for bit, with their report.

use super::{EngineArgs, apply_profile, context_arg, print_report, progress_bar};
use clap::ValueEnum;
use ess_wgpu::engine::{EngineOptions, Mode};
use ess_wgpu::{GpuContext, Result};

#[derive(clap::Args, Clone)]
pub struct DecodeArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Context per sequence, 1 ..= 1024K (comma list, one per sequence; K = 1024); default: the
    /// preset's.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = context_arg)]
    contexts: Vec<u32>,
    #[arg(long, value_enum, default_value_t = ModeArg::Both)]
    mode: ModeArg,
    /// With both modes: do not compare their outputs (saves the digest dispatches).
    #[arg(long)]
    no_verify: bool,
    /// Write the offload run's misses per layer as a miss profile (for `--overlap
    /// layerwise:FILE`; format in src/engine/chunks.rs).
    #[arg(long)]
    miss_profile: Option<std::path::PathBuf>,
}

/// Which modes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Resident, then offload, compared bit for bit.
    Both,
    Resident,
    Offload,
}

impl ModeArg {
    fn modes(self) -> Vec<Mode> {
        match self {
            ModeArg::Both => vec![Mode::Resident, Mode::Offload],
            ModeArg::Resident => vec![Mode::Resident],
            ModeArg::Offload => vec![Mode::Offload],
        }
    }
}

pub fn run(args: DecodeArgs) -> Result<()> {
    let contexts = (!args.contexts.is_empty()).then(|| args.contexts.clone());
    let (mut opts, budget) = args.engine.options(None, true)?;
    if let Some(c) = contexts {
        opts.run.batch = c.len() as u32;
        opts.contexts = c;
        opts.validate()?;
    }
    // every requested mode's options checked before any GPU work (the pool only matters offload)
    for &mode in &args.mode.modes() {
        EngineOptions {
            mode,
            ..opts.clone()
        }
        .validate()?;
    }
    let ctx = GpuContext::new()?;
    let profile = apply_profile(&ctx, args.engine.profile.as_deref(), &mut opts)?;
    let bar = progress_bar(opts.steps as u64);
    let report = ess_wgpu::decode::decode(
        &ctx,
        &opts,
        &args.mode.modes(),
        !args.no_verify,
        budget,
        |what, step| {
            bar.set_message(what.to_string());
            bar.set_position(step as u64);
        },
    );
    bar.finish_and_clear();
    let mut report = report?;
    report.profile = profile;
    print_report(&report, args.engine.json)?;
    if let Some(path) = &args.miss_profile {
        write_miss_profile(&report, path)?;
    }
    if report.identical == Some(false) {
        return Err(ess_wgpu::Error::Gpu(
            "resident and offload outputs differ".into(),
        ));
    }
    Ok(())
}

/// The offload run's mean misses per sequence and step, per layer, as a miss profile.
fn write_miss_profile(
    report: &ess_wgpu::decode::DecodeReport,
    path: &std::path::Path,
) -> Result<()> {
    let Some(m) = report.modes.iter().find(|m| m.mode == Mode::Offload) else {
        return Err(ess_wgpu::Error::config(
            "miss-profile",
            path.display(),
            "a run with --mode offload or both",
        ));
    };
    let per = (m.steps.max(1) as u64 * m.batch.max(1) as u64) as f64;
    let misses: Vec<f64> = m
        .stats
        .counters
        .iter()
        .map(|c| c.misses as f64 / per)
        .collect();
    let config = report.config.replace('\n', "; ");
    let what = format!("{config}, batch {}, context {}", m.batch, m.context);
    let text = ess_wgpu::engine::chunks::format_miss_profile(&misses, &what);
    super::write_all_or_none(&[(path.to_path_buf(), text.into_bytes())])?;
    say!("wrote {}", path.display())
}
