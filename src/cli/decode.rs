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
    if report.identical == Some(false) {
        return Err(ess_wgpu::Error::Gpu(
            "resident and offload outputs differ".into(),
        ));
    }
    Ok(())
}
