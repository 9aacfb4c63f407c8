//! The figures run end to end at a tiny size (CI runs them on the software adapter).

mod common;

use common::ctx;
use ess_wgpu::RunConfig;
use ess_wgpu::engine::{EngineOptions, Mode};
use ess_wgpu::figures::{FigureOptions, misses_vs_ratio, timeline, warmup};
use ess_wgpu::locality::paper_profile;

fn options() -> FigureOptions {
    let run = RunConfig::tiny()
        .with_overrides(&["layers=4", "batch=2", "topk=16"])
        .unwrap();
    let base = EngineOptions {
        steps: 10,
        mode: Mode::Offload,
        locality: 0.9,
        // ρ per layer standing in for a calibrated paper profile
        layer_locality: vec![0.0, 0.99, 0.9, 0.97],
        warmup_windows: 2,
        seed: 3,
        ..EngineOptions::new(run, vec![200, 200])
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

/// The timeline (the paper's Fig. 6): every layer's passes of the last timed step, each stage's
/// bar after the one before it in the layer, offload with its transfers, serial and with the DA
/// and DBA schedules (whose overlapped work is one pass a layer).
#[test]
fn timeline_shows_each_layers_passes_in_order() {
    let fo = options();
    let fig = timeline(ctx(), &fo, 1 << 30).unwrap();
    let rows: Vec<(String, u32, String, f64, f64)> = fig
        .csv
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (
                c[0].to_string(),
                c[1].parse().unwrap(),
                c[2].to_string(),
                c[3].parse().unwrap(),
                c[4].parse().unwrap(),
            )
        })
        .collect();
    for mode in ["resident", "offload", "offload/da", "offload/dba:2"] {
        let stages: &[&str] = match mode {
            "resident" => &["new_token", "indexer", "topk", "sparse_mla"],
            "offload" => &[
                "new_token",
                "write_back",
                "indexer",
                "topk",
                "resolve",
                "gather",
                "sparse_mla",
            ],
            "offload/da" => &[
                "new_token",
                "write_back",
                "indexer",
                "topk",
                "resolve",
                "overlapped",
            ],
            _ => &["new_token", "write_back", "overlapped", "sparse_mla"],
        };
        for layer in 0..fo.base.run.layers {
            let bars: Vec<&(String, u32, String, f64, f64)> = rows
                .iter()
                .filter(|r| r.0 == mode && r.1 == layer)
                .collect();
            let names: Vec<&str> = bars.iter().map(|r| r.2.as_str()).collect();
            assert_eq!(names, stages, "{mode} layer {layer}");
            assert!(
                bars.iter().all(|r| r.3 <= r.4),
                "{mode}: a bar ends before it begins"
            );
            assert!(
                bars.windows(2).all(|w| w[0].4 <= w[1].3),
                "{mode} layer {layer}: passes overlap in a serial schedule: {bars:?}"
            );
        }
    }
    assert_eq!(fig.svgs.len(), 4);
    assert!(fig.table.contains("offload") && fig.table.contains("gather + write_back"));
}
