//! `ess-wgpu simulate`: the throughput simulator on a ready-made or written config (no GPU).

use super::{output_dir, write_all_or_none};
use ess_wgpu::sim::report::{self, Gain, Pair, Point};
use ess_wgpu::sim::{Costs, Part, SimConfig, Simulator};
use ess_wgpu::svg::{Series, lines};
use ess_wgpu::{Error, Result};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args, Clone)]
pub struct SimulateArgs {
    /// A ready-made config: paper (ESS's deployment, every assumption cited) or h200-measured
    /// (this project's engine on one H200, as measured, checked against its runs).
    #[arg(long, default_value = "paper")]
    preset: String,
    /// A config file instead (JSON, the fields of configs/sim/*.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Change a field of the config, e.g. hardware.bus_h2d=16e9, ess.overlap=none,
    /// deployment.two_batch_overlap=false, scenarios.0.context=65536 or batches=[1,64]
    /// (repeatable): the what-if knobs.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Folder for the CSV and SVG files.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// `cfg` with `a.b=value` set (a number, true/false, or a word), checked.
fn with_field(cfg: &SimConfig, kv: &str) -> Result<SimConfig> {
    let out: SimConfig = super::with_json_field(cfg, kv, "set", "the config")?;
    out.validate()?;
    Ok(out)
}

fn load(a: &SimulateArgs) -> Result<SimConfig> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::Io {
                path: p.display().to_string(),
                source: e,
            })?;
            SimConfig::parse(&p.display().to_string(), &text)?
        }
        None => SimConfig::preset(&a.preset)?,
    };
    for kv in &a.set {
        cfg = with_field(&cfg, kv)?;
    }
    Ok(cfg)
}

fn ms(s: f64) -> String {
    format!("{:.3}", s * 1e3)
}

fn mode(offload: bool) -> &'static str {
    if offload { "offload" } else { "resident" }
}

pub fn run(a: SimulateArgs) -> Result<()> {
    let cfg = load(&a)?;
    output_dir(&a.out)?;
    let sim = Simulator::new(cfg)?;
    let c = &sim.cfg;
    println!("simulator config: {} ({})", c.name, c.hardware.name);
    for line in &c.about {
        println!("  - {line}");
    }
    let points = report::batch_sweep(&sim)?;
    let gains: Vec<Gain> = c
        .scenarios
        .iter()
        .map(|s| report::gain(&sim, s))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let ratios = report::ratio_sweep(&sim)?;
    let roofline = matches!(c.costs, Costs::Roofline);
    let (mut bus, mut net) = (Vec::new(), Vec::new());
    if roofline {
        for s in &c.scenarios {
            bus.push((s.context, report::bus_what_if(&sim, s)?));
            if c.deployment.expert_parallel > 1 {
                net.push((s.context, report::network_what_if(&sim, s)?));
            }
        }
    }
    let pairs = report::validate(&sim)?;

    print!("{}", steps_table(&points));
    print!("{}", gains_table("at the scenarios", &gains));
    print!(
        "{}",
        gains_table("against the sparse memory ratio", &ratios)
    );
    for (ctx, (_, even)) in &bus {
        match even {
            Some(bw) => println!(
                "context {ctx}: offload gains above {:.1} GB/s host → device and loses below",
                bw / 1e9
            ),
            None => println!("context {ctx}: no break-even bandwidth between 0.25 and 1024 GB/s"),
        }
    }
    if !pairs.is_empty() {
        print!("{}", validation_table(&pairs));
    }

    let mut files = vec![
        (a.out.join("sim-steps.csv"), steps_csv(&points).into_bytes()),
        (
            a.out.join("sim-gains.csv"),
            gains_csv(&gains, &ratios).into_bytes(),
        ),
        (
            a.out.join("sim-throughput.svg"),
            throughput_svg(&c.name, &points).into_bytes(),
        ),
        (
            a.out.join("sim-ratio.svg"),
            ratio_svg(&c.name, &ratios).into_bytes(),
        ),
    ];
    if roofline {
        let curves: Vec<(u64, &[(f64, f64)])> = bus
            .iter()
            .map(|(ctx, (c, _))| (*ctx, c.as_slice()))
            .collect();
        let w = WhatIf {
            stem: "sim-bus",
            column: "bus_h2d_gb_per_s",
            title: format!("{}: offload's gain against the bus (host → device)", c.name),
            xlabel: "GB/s",
            configured: c.hardware.bus_h2d / 1e9,
            break_even: bus
                .iter()
                .filter_map(|(ctx, (_, even))| even.map(|bw| (bw / 1e9, *ctx)))
                .collect(),
        };
        files.extend(what_if_files(&a.out, &w, &curves));
    }
    if !net.is_empty() {
        let curves: Vec<(u64, &[(f64, f64)])> =
            net.iter().map(|(ctx, c)| (*ctx, c.as_slice())).collect();
        let w = WhatIf {
            stem: "sim-network",
            column: "network_gb_per_s",
            title: format!(
                "{}: offload's gain against the expert-parallel network",
                c.name
            ),
            xlabel: "GB/s a GPU (dispatch and combine)",
            configured: c.hardware.network_bandwidth / 1e9,
            break_even: Vec::new(),
        };
        files.extend(what_if_files(&a.out, &w, &curves));
        for (ctx, curve) in &net {
            let list: Vec<String> = curve
                .iter()
                .map(|(b, g)| format!("{b:.0} GB/s {:+.0}%", g * 100.0))
                .collect();
            println!(
                "context {ctx}, gain against the network: {}",
                list.join(", ")
            );
        }
    }
    if !pairs.is_empty() {
        files.push((
            a.out.join("sim-validation.csv"),
            validation_csv(&pairs).into_bytes(),
        ));
    }
    write_all_or_none(&files)?;
    let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
}

/// A what-if: the gain against one knob, a line a context.
struct WhatIf<'a> {
    /// File names' stem and the knob's CSV column.
    stem: &'a str,
    column: &'a str,
    title: String,
    xlabel: &'a str,
    /// The knob's configured value, and each context's break-even value, marked.
    configured: f64,
    break_even: Vec<(f64, u64)>,
}

/// A what-if's CSV and SVG.
fn what_if_files(
    out: &std::path::Path,
    w: &WhatIf,
    curves: &[(u64, &[(f64, f64)])],
) -> Vec<(PathBuf, Vec<u8>)> {
    let WhatIf {
        stem,
        column,
        title,
        xlabel,
        configured,
        break_even,
    } = w;
    let mut csv = format!("context,{column},gain\n");
    let mut series = Vec::new();
    for (ctx, curve) in curves {
        for (x, g) in curve.iter() {
            let _ = writeln!(csv, "{ctx},{x},{g:.4}");
        }
        series.push(Series {
            name: format!("{}K", ctx / 1024),
            points: curve.iter().map(|&(x, g)| (x, g * 100.0)).collect(),
            dashed: false,
        });
    }
    let labels: Vec<String> = break_even
        .iter()
        .map(|(_, ctx)| format!("{}K breaks even", ctx / 1024))
        .collect();
    let mut marks = vec![(*configured, "configured")];
    marks.extend(
        break_even
            .iter()
            .zip(&labels)
            .map(|((x, _), l)| (*x, l.as_str())),
    );
    let svg = lines(
        title,
        xlabel,
        "gain over resident, % (below 0: offload loses)",
        &series,
        &marks,
    );
    vec![
        (out.join(format!("{stem}.csv")), csv.into_bytes()),
        (out.join(format!("{stem}.svg")), svg.into_bytes()),
    ]
}

fn steps_table(points: &[Point]) -> String {
    let mut s = String::from(
        "\n context mode      batch   step ms  tokens/s  tok/s/seq  attention¹  transfer²  ffn³     comm⁴    hidden\n",
    );
    for p in points {
        let st = &p.step;
        let attn = st.part(Part::Projections)
            + st.part(Part::Indexer)
            + st.part(Part::TopK)
            + st.part(Part::SparseMla);
        let xfer = st.part(Part::Resolve) + st.part(Part::Gather) + st.part(Part::WriteBack);
        let ffn = st.part(Part::Experts) + st.part(Part::Dense) + st.part(Part::Head);
        let comm = st.part(Part::Dispatch) + st.part(Part::Combine);
        let _ = writeln!(
            s,
            "{:>8} {:<8} {:>6}{} {:>8} {:>9.0} {:>10.1} {:>10} {:>10} {:>8} {:>8} {:>8}",
            p.context,
            mode(st.offload),
            st.batch,
            if p.largest { "*" } else { " " },
            ms(st.total),
            st.tokens_per_s,
            st.per_request,
            ms(attn),
            ms(xfer),
            ms(ffn),
            ms(comm),
            ms(st.hidden)
        );
    }
    s.push_str(
        "(* = the largest batch of the mode in the cache budget; ms a step per GPU; ¹ projections, indexer, top-k, sparse MLA; ² resolve, gather, write-back; ³ experts, dense MLP, head; ⁴ dispatch and combine; hidden: what the overlaps hide)\n",
    );
    s
}

/// A gain's fields: context, ratio, resident's batch and tokens/s, offload's, and the gain.
fn gain_fields(g: &Gain) -> (u64, f64, u32, f64, u32, f64, f64) {
    (
        g.context,
        g.ratio,
        g.resident.batch,
        g.resident.tokens_per_s,
        g.offload.batch,
        g.offload.tokens_per_s,
        g.gain(),
    )
}

fn gains_table(title: &str, gains: &[Gain]) -> String {
    let mut s = format!(
        "\ngain {title}\n context  ratio  resident batch  tokens/s   offload batch  tokens/s     gain\n"
    );
    for g in gains {
        let (c, r, rb, rt, ob, ot, gain) = gain_fields(g);
        let pct = gain * 100.0;
        let _ = writeln!(
            s,
            "{c:>8} {r:>6.3} {rb:>15} {rt:>9.0} {ob:>15} {ot:>9.0} {pct:>+8.1}%"
        );
    }
    s
}

fn validation_table(pairs: &[Pair]) -> String {
    let mut s = String::from(
        "\nagainst the measured runs (GPU ms a step)\n record                                        overlap  context mode      batch   hit   measured  simulated   error\n",
    );
    let mut worst: f64 = 0.0;
    let (mut n, mut within) = (0, 0);
    for p in pairs {
        let _ = writeln!(
            s,
            " {:<45} {:<7} {:>8} {:<8} {:>6} {:>5.3} {:>10} {:>10} {:>+7.1}%{}",
            p.record.trim_end_matches("/sweep.csv"),
            p.overlap,
            p.row.context,
            mode(p.row.offload),
            p.row.batch,
            p.row.hit_rate,
            ms(p.row.step),
            ms(p.predicted),
            p.error() * 100.0,
            if p.calibration { "  (calibration)" } else { "" }
        );
        if !p.calibration {
            n += 1;
            worst = worst.max(p.error().abs());
            if p.error().abs() <= 0.10 {
                within += 1;
            }
        }
    }
    let _ = writeln!(
        s,
        "checked points (not calibration): {within} of {n} within ±10%, the worst {:.1}%",
        worst * 100.0
    );
    s
}

fn steps_csv(points: &[Point]) -> String {
    let names: Vec<String> = Part::ALL
        .iter()
        .map(|p| format!("{}_ms", p.name()))
        .collect();
    let mut s = format!(
        "context,ratio,mode,batch,largest,step_ms,tokens_per_s,tokens_per_s_per_request,hidden_ms,{}\n",
        names.join(",")
    );
    for p in points {
        let st = &p.step;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.4},{:.2},{:.3},{:.4},{}",
            p.context,
            p.ratio,
            mode(st.offload),
            st.batch,
            p.largest,
            st.total * 1e3,
            st.tokens_per_s,
            st.per_request,
            st.hidden * 1e3,
            report::parts_csv(st)
        );
    }
    s
}

fn gains_csv(at: &[Gain], ratios: &[Gain]) -> String {
    let mut s = String::from(
        "sweep,context,ratio,resident_batch,resident_tokens_per_s,offload_batch,offload_tokens_per_s,gain\n",
    );
    for (name, list) in [("scenario", at), ("ratio", ratios)] {
        for g in list {
            let (c, r, rb, rt, ob, ot, gain) = gain_fields(g);
            let _ = writeln!(s, "{name},{c},{r},{rb},{rt:.2},{ob},{ot:.2},{gain:.4}");
        }
    }
    s
}

fn validation_csv(pairs: &[Pair]) -> String {
    let mut s = String::from(
        "record,overlap,context,mode,batch,hit_rate,measured_ms,simulated_ms,error,calibration\n",
    );
    for p in pairs {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{:.4},{:.4},{:.4},{:.4},{}",
            p.record,
            p.overlap,
            p.row.context,
            mode(p.row.offload),
            p.row.batch,
            p.row.hit_rate,
            p.row.step * 1e3,
            p.predicted * 1e3,
            p.error(),
            p.calibration
        );
    }
    s
}

/// Consecutive items with the same key as one series.
fn series_by<T>(
    items: &[T],
    key: impl Fn(&T) -> String,
    dashed: impl Fn(&T) -> bool,
    point: impl Fn(&T) -> (f64, f64),
) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for it in items {
        let k = key(it);
        if series.last().is_none_or(|s| s.name != k) {
            series.push(Series {
                name: k,
                points: Vec::new(),
                dashed: dashed(it),
            });
        }
        series.last_mut().expect("pushed").points.push(point(it));
    }
    series
}

fn throughput_svg(name: &str, points: &[Point]) -> String {
    let series = series_by(
        points,
        |p| format!("{}K {}", p.context / 1024, mode(p.step.offload)),
        |p| p.step.offload,
        |p| (p.step.batch as f64, p.step.tokens_per_s),
    );
    lines(
        &format!("{name}: decode throughput against batch (the paper's Fig. 1)"),
        "batch (sequences a GPU)",
        "tokens/s a GPU",
        &series,
        &[],
    )
}

fn ratio_svg(name: &str, gains: &[Gain]) -> String {
    let series = series_by(
        gains,
        |g| format!("{}K", g.context / 1024),
        |_| false,
        |g| (g.ratio, g.gain() * 100.0),
    );
    lines(
        &format!("{name}: offload's gain at its largest batch against the sparse memory ratio"),
        "sparse memory ratio",
        "gain over resident, %",
        &series,
        &[],
    )
}
