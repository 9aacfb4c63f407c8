//! Every unit of WGSL the GPU compiles (`ess_wgpu::shaders::UNITS`: kernel files with the library
//! files composed in front) parses and validates with naga, with each set of override constants
//! the kernels use, and goes through naga's SPIR-V writer (wgpu's Vulkan path), which catches
//! writer panics without an adapter. Every `.wgsl` file belongs to some unit.

use ess_wgpu::shaders::UNITS;
use naga::back::spv;

/// The override-constant sets the kernels build each unit with (the shape classes of the presets
/// and tests: f16, f32 and FP8 rows and keys, latent widths 64 … 512, head counts with and
/// without a partial attend workgroup, top-k workgroup sizes).
fn constant_sets(unit: &str) -> Vec<Vec<(&'static str, f64)>> {
    match unit {
        "indexer" => vec![
            vec![("KEYS_F16", 1.0), ("KEYS_FP8", 0.0)],
            vec![("KEYS_F16", 0.0), ("KEYS_FP8", 0.0)],
            vec![("KEYS_F16", 1.0), ("KEYS_FP8", 1.0)],
        ],
        "indexer_coop" => [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
            .iter()
            .map(|&(fp8, fused)| vec![("KEYS_FP8", fp8), ("FUSED", fused)])
            .collect(),
        "topk" | "topk_split" => [64.0, 128.0, 256.0, 512.0, 1024.0]
            .iter()
            .map(|&wg| vec![("WG", wg)])
            .collect(),
        "resolve" => vec![vec![("WG", 256.0)]],
        "model_gemm" => vec![vec![("W_FP8", 0.0)], vec![("W_FP8", 1.0)]],
        "model_gemm_coop" => [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0)]
            .iter()
            .map(|&(pair, swiglu)| vec![("X_IS_PAIR", pair), ("SWIGLU", swiglu)])
            .collect(),
        "gemm_coop_f16" => vec![vec![("B_NK", 1.0)], vec![("B_NK", 0.0)]],
        "sparse_mla_naive" => vec![
            vec![("ROWS_F16", 1.0), ("ROWS_FP8", 0.0)],
            vec![("ROWS_F16", 0.0), ("ROWS_FP8", 0.0)],
            vec![("ROWS_FP8", 1.0)],
        ],
        "sparse_mla_coop" | "sparse_mla_coop_da" => {
            let mut sets = Vec::new();
            for (kv, rope) in [(512.0, 64.0), (64.0, 32.0), (192.0, 0.0)] {
                for fp8 in [0.0, 1.0] {
                    for phase in [0.0, 1.0, 2.0] {
                        let mut set = vec![("KV", kv), ("ROPE", rope), ("ROWS_FP8", fp8)];
                        set.push(("PHASE", phase));
                        sets.push(set);
                    }
                }
            }
            sets
        }
        "gemm_fma" | "gemm_coop" => [(1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.0, 0.0)]
            .iter()
            .map(|&(a, b)| vec![("A_F16", a), ("B_F16", b)])
            .collect(),
        "sparse_mla" => {
            let mut sets = Vec::new();
            for (kv, rope) in [(512.0, 64.0), (64.0, 32.0), (320.0, 64.0), (128.0, 0.0)] {
                // (f16, fp8): f16 rows, f32 rows, FP8 rows staged as f16
                for (f16, fp8) in [(1.0, 0.0), (0.0, 0.0), (1.0, 1.0)] {
                    for part in [1.0, 0.0] {
                        sets.push(vec![
                            ("KV", kv),
                            ("ROPE", rope),
                            ("ROWS_F16", f16),
                            ("ROWS_FP8", fp8),
                            ("PART_HEADS", part),
                        ]);
                    }
                }
            }
            sets
        }
        _ => vec![vec![]],
    }
}

/// The workgroup memory every kernel may use: the 32 KiB `GpuContext` guarantees (lavapipe's
/// limit); the coop kernels run only on GPUs with cooperative matrices, which have 48 KiB (the
/// H100 and H200 through Vulkan). A pipeline over its adapter's limit is not rejected by wgpu 30:
/// on the H200 its dispatch hung (docs/PERF.md), so it is checked here, without an adapter.
const WORKGROUP_MAX: u32 = 32 << 10;
const COOP_WORKGROUP_MAX: u32 = 48 << 10;

/// Bytes of workgroup memory entry point `entry` uses: every workgroup variable it names,
/// itself or through the functions it calls (what a driver reserves for its pipeline).
fn workgroup_bytes(m: &naga::Module, info: &naga::valid::ModuleInfo, entry: &str) -> u32 {
    let (index, _) = m
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, ep)| ep.name == entry)
        .unwrap();
    let uses = info.get_entry_point(index);
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(m.to_ctx()).unwrap();
    m.global_variables
        .iter()
        .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty())
        .map(|(_, v)| layouter[v.ty].size)
        .sum()
}

#[test]
fn every_unit_validates_and_writes_spirv() {
    // The strictest target we support: no optional capability except unpack2x16float's
    // (SHADER_FLOAT16_IN_FLOAT32, which every Vulkan/Metal/DX12 adapter has).
    let base = naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let mut checked = 0;
    for (name, src, _) in UNITS {
        // the tensor-core kernels also need f16 and cooperative matrices (never on lavapipe:
        // here is where CI checks them)
        let caps = if name.contains("coop") {
            base | naga::valid::Capabilities::SHADER_FLOAT16
                | naga::valid::Capabilities::COOPERATIVE_MATRIX
        } else {
            base
        };
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        for constants in constant_sets(name) {
            let constants: naga::back::PipelineConstants =
                constants.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            for ep in &module.entry_points {
                let (m, i) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((naga::ShaderStage::Compute, &ep.name)),
                    &constants,
                )
                .unwrap_or_else(|e| panic!("{name}/{} {constants:?}: {e:?}", ep.name));
                let pipeline = spv::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: ep.name.clone(),
                };
                spv::write_vec(&m, &i, &spv::Options::default(), Some(&pipeline))
                    .unwrap_or_else(|e| panic!("{name}/{} {constants:?}: {e:?}", ep.name));
                let bytes = workgroup_bytes(&m, &i, &ep.name);
                let most = if name.contains("coop") {
                    COOP_WORKGROUP_MAX
                } else {
                    WORKGROUP_MAX
                };
                assert!(
                    bytes <= most,
                    "{name}/{} {constants:?}: {bytes} bytes of workgroup memory, more than {most}",
                    ep.name
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} (unit, entry, constants) checked"
    );
}

#[test]
fn every_wgsl_file_is_in_a_unit() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files = Vec::new();
    for sub in ["", "lib", "gemm"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("wgsl") {
                let rel = path
                    .strip_prefix(&dir)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                files.push(rel);
            }
        }
    }
    for f in &files {
        assert!(
            UNITS
                .iter()
                .any(|(_, _, parts)| parts.contains(&f.as_str())),
            "shaders/{f} is compiled by no unit (ess_wgpu::shaders::UNITS)"
        );
    }
    assert!(files.len() >= 10);
}
