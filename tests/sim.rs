//! The throughput simulator: its arithmetic on hand-checked small cases, its configs' errors
//! named, the ready-made configs' batches, and its check against the H200 records.

use ess_wgpu::sim::records::{Curve, calibrate, fit_line, missed_rows, parse_sweep};
use ess_wgpu::sim::report::{self, Pair};
use ess_wgpu::sim::{Part, Scenario, SimConfig, Simulator};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ess-wgpu");

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn curves_interpolate_extrapolate_and_scale() {
    let c = Curve::new(vec![(3.0, 5.0), (1.0, 1.0)]);
    assert!(close(c.at(2.0), 3.0));
    assert!(close(c.at(5.0), 9.0), "past the last point: the last slope");
    assert!(
        close(c.at(0.5), 0.5),
        "below the first: scaled with the batch"
    );
    let (a, b) = fit_line(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]);
    assert!(close(a, 1.0) && close(b, 2.0));
    // 10 sequences, top-2048, 2 tokens of which the second's selections are 70% the first's,
    // 90% hits: 10 × 1.3 × 2048 × 0.1 rows
    assert!(close(missed_rows(10.0, 2048, 2, 0.9, 0.7), 2662.4));
    assert!(close(missed_rows(10.0, 2048, 1, 0.9, 0.0), 2048.0));
}

/// The paper config cut down to one attention layer on one GPU, with round rates, so every
/// part can be worked out by hand.
fn hand_config() -> SimConfig {
    let mut c = SimConfig::preset("paper").unwrap();
    let (m, h, d) = (&mut c.model, &mut c.hardware, &mut c.deployment);
    m.layers = 1;
    m.dense_layers = 0;
    m.mtp_layers = 0;
    m.attention_only = true;
    h.hbm_bandwidth = 1e12;
    h.memory_efficiency = 1.0;
    h.attention_flops = 1e12;
    h.attention_efficiency = 1.0;
    h.indexer_flops = 1e12;
    h.indexer_efficiency = 1.0;
    h.launch = 0.0;
    h.bus_h2d = 1e10;
    h.bus_d2h = 1e10;
    h.bus_latency = 0.0;
    h.network_bandwidth = 0.0;
    d.expert_parallel = 1;
    d.tokens_per_step = 1;
    d.acceptance = 1.0;
    d.two_batch_overlap = false;
    d.transfers_beside_other_half = false;
    c.ess.overlap = "none".into();
    c.ess.hit_rate = 0.9;
    c.scenarios = vec![Scenario {
        context: 4096,
        ratio: 0.75,
        hit_rate: None,
    }];
    c
}

#[test]
fn roofline_parts_by_hand() {
    let sim = Simulator::new(hand_config()).unwrap();
    let s = &sim.cfg.scenarios[0];
    let step = sim.step(s, 1, true, None).unwrap();
    // sparse MLA: 2 × 128 heads × 2048 rows × (512 + 64 + 512) FLOPs at 1e12, against
    // 2048 × 656 bytes at 1e12 B/s: compute-bound
    assert!(close(step.part(Part::SparseMla), 570_425_344.0 / 1e12));
    // indexer: 2 × 64 × 128 × 4096 FLOPs (67.1 µs) against 4096 × 132 bytes (0.54 µs)
    assert!(close(step.part(Part::Indexer), 67_108_864.0 / 1e12));
    // top-k: the scores written and read, 4096 × 4 × 2 bytes
    assert!(close(step.part(Part::TopK), 32_768.0 / 1e12));
    // gather: 10% of 2048 rows of 656 bytes at 10 GB/s; write-back: one row
    assert!(close(step.part(Part::Gather), 204.8 * 656.0 / 1e10));
    assert!(close(step.part(Part::WriteBack), 656.0 / 1e10));
    // resolve: each selected id looked up and stamped, 12 bytes
    assert!(close(step.part(Part::Resolve), 2048.0 * 12.0 / 1e12));
    let sum: f64 = step.parts.iter().sum();
    assert!(close(step.total, sum) && step.hidden.abs() < 1e-15);
    assert!(close(step.tokens_per_s, 1.0 / step.total));
    // a miss profile instead of the hit rate: 100 rows a step in the one layer
    let dir = std::env::temp_dir().join(format!("ess-sim-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("misses.txt");
    std::fs::write(&file, "# ess-miss-profile 1\n100\n").unwrap();
    let mut c = hand_config();
    c.ess.miss_profile = Some(file.display().to_string());
    let profiled = Simulator::new(c.clone()).unwrap();
    let g = profiled.step(s, 3, true, None).unwrap().part(Part::Gather);
    assert!(close(g, 3.0 * 100.0 * 656.0 / 1e10));
    std::fs::write(&file, "100\n200\n").unwrap();
    let e = Simulator::new(c)
        .err()
        .expect("two layers for one")
        .to_string();
    assert!(
        e.contains("ess.miss_profile") && e.contains("2 layers"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
    // resident: no transfer parts
    let r = sim.step(s, 1, false, None).unwrap();
    assert_eq!(r.part(Part::Gather), 0.0);
    assert!(close(
        r.total,
        step.total
            - step.part(Part::Gather)
            - step.part(Part::WriteBack)
            - step.part(Part::Resolve)
    ));
}

#[test]
fn largest_batch_is_the_cache_arithmetic() {
    let mut c = hand_config();
    // resident: 4096 × (656 + 132) bytes a sequence; the budget ten of them and a little
    let per_seq = 4096.0 * 788.0;
    c.hardware.cache_budget_bytes = 10.0 * per_seq + 100.0;
    let sim = Simulator::new(c).unwrap();
    let s = &sim.cfg.scenarios[0];
    assert_eq!(sim.largest_batch(s, false).unwrap(), 10);
    // offload: the keys (4096 × 132) and a pool of 3072 slots of 656 + 8 bytes
    let off = 4096.0 * 132.0 + 3072.0 * 664.0;
    assert_eq!(
        sim.largest_batch(s, true).unwrap(),
        ((10.0 * per_seq + 100.0) / off).floor() as u32
    );
    // the paper config: 84e9 bytes over 62 layers of 788 bytes a token gives its 52 and 13
    let paper = Simulator::new(SimConfig::preset("paper").unwrap()).unwrap();
    let at = |context, ratio| Scenario {
        context,
        ratio,
        hit_rate: None,
    };
    assert_eq!(paper.largest_batch(&at(32768, 0.2), false).unwrap(), 52);
    assert_eq!(paper.largest_batch(&at(131072, 0.1), false).unwrap(), 13);
    assert_eq!(paper.largest_batch(&at(32768, 0.2), true).unwrap(), 156);
    assert_eq!(paper.largest_batch(&at(131072, 0.1), true).unwrap(), 52);
}

#[test]
fn two_batch_overlap_runs_each_half_beside_the_others_communication() {
    let mut c = SimConfig::preset("paper").unwrap();
    c.deployment.transfers_beside_other_half = false;
    c.ess.overlap = "none".into();
    let s = c.scenarios[0].clone();
    let tbo = Simulator::new(c.clone()).unwrap();
    c.deployment.two_batch_overlap = false;
    let one = Simulator::new(c).unwrap();
    for b in [8, 52] {
        let half = one.step(&s, b / 2, false, None).unwrap();
        let comm = half.part(Part::Dispatch) + half.part(Part::Combine);
        let compute = half.total - comm;
        let step = tbo.step(&s, b, false, None).unwrap();
        assert!(close(step.total, 2.0 * compute.max(comm)), "batch {b}");
        assert!(close(
            step.part(Part::Experts),
            2.0 * half.part(Part::Experts)
        ));
    }
}

/// A sweep record whose stages are straight lines in the batch, so the schedules' steps can be
/// worked out by hand: one layer, top-2048, 656-byte rows, 90% hits.
fn linear_record() -> String {
    let mut s = String::from(
        "context,mode,batch,largest,slots,admission,tokens_per_s_gpu,tokens_per_s_wall,hit_rate,device_bytes,new_token_ms_per_step,write_back_ms_per_step,indexer_ms_per_step,topk_ms_per_step,resolve_ms_per_step,gather_ms_per_step,sparse_mla_ms_per_step\n",
    );
    for (mode, b) in [
        ("resident", 1),
        ("resident", 4),
        ("resident", 16),
        ("offload", 1),
        ("offload", 4),
    ] {
        let b = b as f64;
        let off = mode == "offload";
        let (nt, idx, topk, mla) = (0.01, 0.1 * b, 0.05 + 0.001 * b, 0.2 * b);
        let (wb, res) = if off { (0.01, 0.02) } else { (0.0, 0.0) };
        // the gather: 204.8 rows a sequence of 656 bytes at 10 GB/s
        let gather = if off {
            b * 204.8 * 656.0 / 1e10 * 1e3
        } else {
            0.0
        };
        let step = nt + idx + topk + mla + wb + res + gather;
        s += &format!(
            "4096,{mode},{b},false,{},false,{},{},{},{},{nt},{wb},{idx},{topk},{res},{gather},{mla}\n",
            if off { 3072 } else { 0 },
            b / step * 1e3,
            b / step * 1e3,
            if off { 0.9 } else { 1.0 },
            1e6 * b
        );
    }
    s
}

#[test]
fn measured_curves_and_the_overlap_schedules_by_hand() {
    let rows = parse_sweep("linear", &linear_record()).unwrap();
    let cal = calibrate(&rows, &rows, &[1, 4], 1, 2048, 656).unwrap();
    let c = &cal[&4096];
    assert!(c.gather_fixed.abs() < 1e-12 && (c.gather_rate / 1e10 - 1.0).abs() < 1e-9);
    // through a config that reads the same record from a file
    let dir = std::env::temp_dir().join(format!("ess-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("linear.csv");
    std::fs::write(&path, linear_record()).unwrap();
    let mut cfg = SimConfig::preset("h200-measured").unwrap();
    let p = path.display().to_string();
    if let ess_wgpu::sim::Costs::Measured(m) = &mut cfg.costs {
        m.resident = vec![p.clone()];
        m.offload = vec![p.clone()];
        m.calibration_batches = vec![1, 4];
        m.layers = 1;
        m.validation.clear();
    }
    cfg.model.layers = 1;
    cfg.scenarios = vec![Scenario {
        context: 4096,
        ratio: 0.75,
        hit_rate: None,
    }];
    cfg.ess.da_efficiency = 0.5;
    cfg.ess.da_split_cost = 1e-5;
    cfg.ess.dba_efficiency = 1.0;
    let sim = Simulator::new(cfg).unwrap();
    let s = sim.cfg.scenarios[0].clone();
    let b = 8.0;
    let ms = 1e-3;
    let (nt, idx, topk, mla) = (
        0.01 * ms,
        0.1 * b * ms,
        (0.05 + 0.001 * b) * ms,
        0.2 * b * ms,
    );
    let (wb, res) = (0.01 * ms, 0.02 * ms);
    let g = |b: f64| b * 204.8 * 656.0 / 1e10;
    let none = nt + idx + topk + mla + wb + res + g(b);
    let step = |o: &str| {
        sim.step_with(
            &s,
            8,
            true,
            Some(0.9),
            ess_wgpu::sim::Overlap::parse(o).unwrap(),
        )
        .unwrap()
        .total
    };
    assert!(close(step("none"), none), "{} vs {none}", step("none"));
    // DA: the gather beside half of sparse MLA times the hits, at 50%; 10 µs of split a layer
    let da = none - g(b).min(0.5 * 0.5 * 0.9 * mla) + 1e-5;
    assert!(close(step("da"), da), "{} vs {da}", step("da"));
    // DBA:2: two chains at batch 4, the first chunk's gather beside the second's indexer
    // (hidden: 4 × 0.1 ms against 26.9 µs), the last chunk's gather exposed
    let chain = |c: f64| 0.1 * c * ms + (0.05 + 0.001 * c) * ms + res;
    let dba = nt + mla + wb + 2.0 * chain(4.0) + (g(4.0) - 0.4 * ms).max(0.0) + g(4.0);
    assert!(close(step("dba"), dba), "{} vs {dba}", step("dba"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_errors_name_the_field() {
    let paper = SimConfig::preset("paper").unwrap();
    let json = serde_json::to_string(&paper).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            json.replacen("\"hidden\":7168", "\"hiden\":7168", 1),
            "hiden",
        ),
        (json.replacen("\"hidden\":7168,", "", 1), "hidden"),
        (
            json.replacen("\"memory_efficiency\":0.9", "\"memory_efficiency\":1.5", 1),
            "hardware.memory_efficiency",
        ),
        (
            json.replacen("\"overlap\":\"dba\"", "\"overlap\":\"dbx\"", 1),
            "ess.overlap",
        ),
        (
            json.replacen("\"expert_parallel\":32", "\"expert_parallel\":3", 1),
            "deployment.expert_parallel",
        ),
        (
            json.replacen("\"context\":32768", "\"context\":100", 1),
            "scenarios.context",
        ),
        (
            json.replacen("\"acceptance\":1.7", "\"acceptance\":2.5", 1),
            "deployment.acceptance",
        ),
        ("{".into(), "simulator config"),
    ];
    for (text, field) in cases {
        assert_ne!(text, json, "the case for {field} changed nothing");
        let e = SimConfig::parse("test", &text)
            .expect_err(field)
            .to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
    let e = SimConfig::preset("nope").expect_err("nope").to_string();
    assert!(e.contains("h200-measured, paper"), "{e}");
}

/// The measured config against its records: every point not used to calibrate within ±10%,
/// except two, each explained in docs/SIMULATOR.md (a slow GPU episode whose repeat is within
/// 4%, and one DBA:4 point at +10.3%).
#[test]
fn the_measured_config_matches_the_h200_runs() {
    let sim = Simulator::new(SimConfig::preset("h200-measured").unwrap()).unwrap();
    let pairs = report::validate(&sim).unwrap();
    let checked: Vec<&Pair> = pairs.iter().filter(|p| !p.calibration).collect();
    assert!(checked.len() >= 100, "{} checked points", checked.len());
    let outside: Vec<(String, u32)> = checked
        .iter()
        .filter(|p| p.error().abs() > 0.10)
        .map(|p| (p.record.clone(), p.row.batch))
        .collect();
    assert_eq!(
        outside,
        vec![
            ("docs/bench/h200-sim/run-a/none32/sweep.csv".to_string(), 16),
            (
                "docs/bench/h200-sim/run-a/dba4-32/sweep.csv".to_string(),
                16
            ),
        ]
    );
    // the slow episode's repeat
    let repeat = pairs
        .iter()
        .find(|p| p.record.contains("none32b") && p.row.offload && p.row.batch == 16)
        .unwrap();
    assert!(repeat.error().abs() < 0.04, "{}", repeat.error());
}

#[test]
fn simulate_writes_its_tables_and_names_bad_fields() {
    let dir = std::env::temp_dir().join(format!("ess-simulate-{}", std::process::id()));
    let o = Command::new(BIN)
        .args(["simulate", "--preset", "paper", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("gain at the scenarios"), "{out}");
    for f in [
        "sim-steps.csv",
        "sim-gains.csv",
        "sim-throughput.svg",
        "sim-ratio.svg",
        "sim-bus.csv",
        "sim-bus.svg",
        "sim-network.csv",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // a list's element by its index
    let o = Command::new(BIN)
        .args([
            "simulate",
            "--set",
            "scenarios.1.context=65536",
            "--set",
            "ratios=[0.1]",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("   65536 resident"), "{out}");
    for (set, needle) in [
        ("hardware.bus=1", "bus is not one"),
        ("hardware.bus_h2d=-1", "hardware.bus_h2d"),
        ("nonsense", "FIELD=VALUE"),
        ("scenarios.7.context=1", "7 is not one"),
    ] {
        let o = Command::new(BIN)
            .args(["simulate", "--set", set, "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{set}: {err}");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{set}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
