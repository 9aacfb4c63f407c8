//! The figures run end to end at a tiny size (CI runs them on the software adapter).

mod common;

use common::ctx;
use ess_wgpu::RunConfig;
use ess_wgpu::cache::{PoolSize, TransferPath};
use ess_wgpu::engine::{EngineOptions, Mode};
use ess_wgpu::figures::{FigureOptions, misses_vs_ratio, warmup};
use ess_wgpu::locality::paper_profile;

fn options() -> FigureOptions {
    let run = RunConfig::tiny()
        .with_overrides(&["layers=4", "batch=2", "topk=16"])
        .unwrap();
    let base = EngineOptions {
        run,
        contexts: vec![200, 200],
        steps: 10,
        mode: Mode::Offload,
        pool: PoolSize::Ratio(0.2),
        transfer: TransferPath::ZeroCopy,
        locality: 0.9,
        // ρ per layer standing in for a calibrated paper profile
        layer_locality: vec![0.0, 0.99, 0.9, 0.97],
        warmup_windows: 2,
        seed: 3,
        track_overlap: false,
        digest_outputs: false,
        time_every: 1,
        record_trace: false,
    };
    FigureOptions {
        base,
        contexts: vec![200, 120],
        ratios: vec![0.05, 0.1, 0.2, 0.5, 0.9],
        targets: paper_profile(4),
    }
}

#[test]
fn warmup_figure_shows_fewer_first_step_misses() {
    let fig = warmup(ctx(), &options()).unwrap();
    let rows: Vec<Vec<f64>> = fig
        .csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 10);
    assert!(
        rows[0][1] < rows[0][2],
        "warm-up should cut the first step's misses: {:?}",
        rows[0]
    );
    assert!(fig.svgs[0].1.starts_with("<svg") && fig.table.contains("with warm-up"));
}

#[test]
fn misses_fall_as_the_pool_grows() {
    let fig = misses_vs_ratio(ctx(), &options()).unwrap();
    for context in ["200", "120"] {
        let misses: Vec<f64> = fig
            .csv
            .lines()
            .filter(|l| l.starts_with(&format!("{context},")))
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(misses.len() >= 3, "{}", fig.csv);
        assert!(
            misses.windows(2).all(|w| w[1] <= w[0] + 1e-9),
            "misses must not grow with the pool: {misses:?}"
        );
    }
    assert!(
        fig.csv.contains(",true,"),
        "expected ratios with a pool below 2k: {}",
        fig.csv
    );
}
