//! `ess-wgpu bench kernels | transfer`.

use super::{
    PresetArg, batch_arg, context_arg, preset_config, print_report, reps_arg, row_bytes_arg,
    rows_arg,
};
use clap::Subcommand;
use ess_wgpu::bench::{self, BenchOptions};
use ess_wgpu::{GpuContext, Result};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time each kernel (both matrix paths where the adapter has both) against the roofline of the
    /// measured copy bandwidth and the FLOP rate of its units.
    Kernels {
        /// Presets to run (repeatable); default: v32 and small.
        #[arg(long = "preset", value_enum)]
        presets: Vec<PresetArg>,
        /// Batches, 1 ..= 65535 (comma list); default: the preset's (v32: 1,16,64; small: 1,4,16).
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = batch_arg)]
        batch: Vec<u32>,
        /// Contexts, 1 ..= 1024K (comma list, K = 1024); default: the preset's (v32: 8K,32K,128K;
        /// small: 4K,16K).
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = context_arg)]
        context: Vec<u32>,
        /// Timed repetitions per measurement, 1 ..= 1000 (the median is reported).
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = reps_arg)]
        reps: u32,
        /// Override a configuration field of every preset (repeatable).
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        overrides: Vec<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Time the model's linear layers (the tiled kernels and grouped experts beside the
    /// version-1 kernels, MLA's per-head products) at a built-in config's shapes, against the
    /// f32 FMA roofline.
    Model {
        /// The built-in config (tiny, small, v32-layers).
        #[arg(long, default_value = "v32-layers")]
        builtin: String,
        /// Change a field of its config.json, e.g. n_routed_experts=32 (repeatable).
        #[arg(long = "builtin-set", value_name = "FIELD=VALUE")]
        builtin_set: Vec<String>,
        /// Decode batches, 1 ..= 65535 (comma list).
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = batch_arg,
              default_values_t = [1u32, 8, 64, 256])]
        batch: Vec<u32>,
        /// Timed repetitions per measurement, 1 ..= 1000 (the median is reported).
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = reps_arg)]
        reps: u32,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Move latent rows host <-> device by each transfer path, against the measured bus peaks.
    Transfer {
        /// Row sizes in bytes, 16 ..= 65536, multiples of 16 (comma list).
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = row_bytes_arg, default_values_t = [656u64, 1152])]
        row_bytes: Vec<u64>,
        /// Missed rows per dispatch, 1 ..= 1024K (comma list, K = 1024).
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = rows_arg,
              default_values_t = [64u32, 256, 1024, 4096, 16384, 65536])]
        rows: Vec<u32>,
        /// Timed repetitions per measurement, 1 ..= 1000 (the median is reported).
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = reps_arg)]
        reps: u32,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Kernels {
            presets,
            batch,
            context,
            reps,
            overrides,
            json,
        } => {
            let names = if presets.is_empty() {
                vec![PresetArg::V32, PresetArg::Small]
            } else {
                presets
            };
            let presets = names
                .into_iter()
                .map(|p| preset_config(p, &overrides))
                .collect::<Result<Vec<_>>>()?;
            let ctx = GpuContext::new()?;
            let opts = BenchOptions {
                presets,
                batches: batch,
                contexts: context,
                reps,
            };
            let report = bench::run(&ctx, &opts, |what| eprintln!("... {what}"))?;
            print_report(&report, json)?;
        }
        BenchCommand::Model {
            builtin,
            builtin_set,
            batch,
            reps,
            json,
        } => {
            let mut cfg = ess_wgpu::model::init::preset(&builtin)?;
            for kv in &builtin_set {
                cfg = super::generate::with_field(&cfg, kv)?;
            }
            let ctx = GpuContext::new()?;
            eprintln!("... measuring copy bandwidth and FLOP rates");
            let ceilings = bench::measure_ceilings(&ctx, reps)?;
            let timings = bench::model::run(&ctx, &cfg, &batch, &ceilings, reps, |w| {
                eprintln!("... {w}")
            })?;
            let report = bench::BenchReport {
                adapter: ctx.report.clone(),
                ceilings,
                checks: Vec::new(),
                timings,
            };
            print_report(&report, json)?;
        }
        BenchCommand::Transfer {
            row_bytes,
            rows,
            reps,
            json,
        } => {
            let ctx = GpuContext::new()?;
            let opts = bench::transfer::TransferOptions {
                row_bytes,
                rows,
                reps,
            };
            let report = bench::transfer::run(&ctx, &opts, |what| eprintln!("... {what}"))?;
            print_report(&report, json)?;
        }
    }
    Ok(())
}
