//! The pure rooms never see wgpu: references, workload, traces, plots, the comparator, the
//! configuration and the engine's plan, stats and options can be read and tested without a GPU.

#[test]
fn pure_modules_do_not_use_wgpu() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let pure = [
        "reference/mod.rs",
        "reference/lru.rs",
        "workload.rs",
        "trace.rs",
        "svg.rs",
        "compare.rs",
        "config.rs",
        "engine/plan.rs",
        "engine/stats.rs",
        "engine/options.rs",
    ];
    for file in pure {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for needle in ["wgpu::", "GpuContext", "crate::gpu"] {
            assert!(!text.contains(needle), "src/{file} uses {needle}");
        }
    }
}
