//! The bad-input suite: the built `ess-wgpu` binary driven with bad options, values, files,
//! output paths, environment and streams, each under a timeout and a memory limit. Every case
//! must end with a non-zero exit status (or, for the few inputs accepted as valid, zero), never
//! a panic, an abort, a hang or an out-of-memory kill, with a message that names the cause, and
//! leave existing outputs untouched.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ess-wgpu");
/// A generous bound: the slowest cases start a GPU context on lavapipe.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Data-segment limit for the child (KiB): an input that allocates by its own size fails here.
const MEMORY_KIB: u64 = 6 << 20;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run the binary with `args` and `env` under the timeout and memory limit; stdout to `stdout`
/// (a file) or captured.
fn run_with(args: &[&str], env: &[(&str, &str)], stdout: Option<std::fs::File>) -> Outcome {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -d {MEMORY_KIB}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    match stdout {
        Some(f) => cmd.stdout(f),
        None => cmd.stdout(Stdio::piped()),
    };
    let mut child = cmd.spawn().expect("spawn the binary");
    // each stream read by its own thread: a child that fills one pipe never waits on us
    let mut out = child.stdout.take();
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut o = String::new();
        if let Some(out) = out.as_mut() {
            let _ = out.read_to_string(&mut o);
        }
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        e
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("ess-wgpu {:?} hung (over {TIMEOUT:?})", show(args));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    Outcome {
        code: status.code(),
        stdout,
        stderr,
    }
}

fn run(args: &[&str]) -> Outcome {
    run_with(args, &[], None)
}

/// The arguments as a failure message shows them (long ones cut).
fn show(args: &[&str]) -> Vec<String> {
    args.iter()
        .map(|a| match a.char_indices().nth(60) {
            Some((cut, _)) => format!("{}… ({} bytes)", &a[..cut], a.len()),
            None => a.to_string(),
        })
        .collect()
}

/// A failure, not a crash, whose message names every one of `needles`.
/// `decode` of the tiny preset's two layers with `--overlap SPEC` and `more`.
fn layerwise<'a>(spec: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "decode",
        "--preset",
        "tiny",
        "--set",
        "layers=2",
        "--overlap",
        spec,
    ];
    v.extend_from_slice(more);
    v
}

fn fails_naming(o: &Outcome, args: &[&str], needles: &[&str]) {
    let args = show(args);
    assert!(
        matches!(o.code, Some(1) | Some(2)),
        "ess-wgpu {args:?}: exit {:?} (want 1 or 2: an error, not a crash or success)\n{}",
        o.code,
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"),
        "ess-wgpu {args:?} panicked:\n{}",
        o.stderr
    );
    for n in needles {
        assert!(
            o.stderr.contains(n),
            "ess-wgpu {args:?}: the message does not name {n:?}:\n{}",
            o.stderr
        );
    }
    assert!(
        o.stderr.len() < 4000,
        "ess-wgpu {args:?}: a {} byte message",
        o.stderr.len()
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ess-bad-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Options and values: refused at parse time, before any GPU work.
#[test]
fn bad_options_and_values_name_the_cause() {
    let long = "9".repeat(100_000);
    let long_set = format!("heads={long}");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["decode", "--steps", "4294967295"],
            vec!["steps", "1 ..= 1048576"],
        ),
        (vec!["decode", "--steps", "0"], vec!["steps = 0"]),
        (vec!["decode", "--steps", "-5"], vec!["steps"]),
        (vec!["decode", "--steps", "1e3"], vec!["steps"]),
        (
            vec!["decode", "--contexts", "4194303K"],
            vec!["context", "1 ..= 1048576"],
        ),
        (vec!["decode", "--contexts", "0"], vec!["context = 0"]),
        (vec!["decode", "--contexts", "4096,,4096"], vec!["context"]),
        (
            vec!["decode", "--device-budget=-1G"],
            vec!["device-budget", "1M ..= 64T"],
        ),
        (
            vec!["decode", "--device-budget", "NaN"],
            vec!["device-budget"],
        ),
        (
            vec!["decode", "--device-budget", "inf"],
            vec!["device-budget"],
        ),
        (
            vec!["decode", "--device-budget", "0"],
            vec!["device-budget"],
        ),
        (
            vec!["decode", "--device-budget", "100T"],
            vec!["device-budget"],
        ),
        (
            vec!["decode", "--device-budget", "8X"],
            vec!["device-budget"],
        ),
        (
            vec!["decode", "--sparse-memory-ratio", "-0.1"],
            vec!["sparse-memory-ratio", "(0, 1]"],
        ),
        (
            vec!["decode", "--sparse-memory-ratio", "NaN"],
            vec!["sparse-memory-ratio"],
        ),
        (
            vec!["decode", "--sparse-memory-ratio", "0"],
            vec!["sparse-memory-ratio"],
        ),
        (
            vec!["decode", "--sparse-memory-ratio", "1.5"],
            vec!["sparse-memory-ratio"],
        ),
        (
            vec!["decode", "--pool-ratio", "inf"],
            vec!["sparse-memory-ratio"],
        ),
        (
            vec!["decode", "--locality", "1.5"],
            vec!["locality", "0 ..= 1"],
        ),
        (vec!["decode", "--locality", "-0.1"], vec!["locality"]),
        (vec!["decode", "--locality", "NaN"], vec!["locality"]),
        (
            vec!["decode", "--warmup", "100000"],
            vec!["warmup", "0 ..= 64"],
        ),
        (vec!["decode", "--time-every", "0"], vec!["time-every"]),
        (
            vec!["decode", "--overlap", "sometimes"],
            vec!["overlap", "none, da, dba, dba:N"],
        ),
        (vec!["decode", "--overlap", "dba:0"], vec!["overlap chunks"]),
        (
            vec![
                "model",
                "init",
                "--config",
                "huge",
                "--out",
                "/nonexistent/m",
            ],
            vec!["model config", "tiny, small or v32-layers"],
        ),
        (
            vec!["model", "init", "--dtype", "fp4", "--out", "/nonexistent/m"],
            vec!["dtype", "bf16, f16, f32 or fp8"],
        ),
        (
            vec!["model", "generate", "--new-tokens", "0"],
            vec!["new-tokens", "1 ..= 4096"],
        ),
        (
            vec!["model", "generate", "--prompt", "99999"],
            vec!["prompt token", "99999", "the vocabulary"],
        ),
        (
            vec!["generate", "--cache-dtype", "fp4"],
            vec!["cache-dtype", "fp8, f16, f32"],
        ),
        (
            vec!["generate", "--batch", "0"],
            vec!["batch", "1 ..= 65535"],
        ),
        (
            vec!["generate", "--new-tokens", "1"],
            vec!["new-tokens", "2 ..="],
        ),
        (
            vec!["generate", "--builtin-set", "nonsense=3"],
            vec!["builtin-set", "a field of config.json"],
        ),
        (
            vec!["generate", "--builtin-set", "n_routed_experts=7"],
            vec!["n_group", "a divisor of n_routed_experts"],
        ),
        (
            vec!["generate", "--layers", "2..9"],
            vec!["layers", "within 0..3"],
        ),
        (
            vec!["generate", "--prompt", "99999"],
            vec!["prompt token", "99999", "the vocabulary"],
        ),
        (
            vec!["generate", "--overlap", "da"],
            vec!["overlap", "DA needs the tuned sparse MLA"],
        ),
        (
            vec!["generate", "--largest-batch"],
            vec!["largest-batch", "--context N"],
        ),
        (
            vec!["generate", "--model", "/nonexistent/ckpt"],
            vec!["/nonexistent/ckpt/config.json"],
        ),
        // refused from the config before the weights are drawn: v32's MoE layer is 18 GB of
        // FP8 weights, past this suite's memory limit and half a minute to draw
        (
            vec![
                "generate",
                "--builtin",
                "v32-layers",
                "--builtin-dtype",
                "fp8",
                "--layers",
                "3..4",
                "--context",
                "131072",
                "--mode",
                "offload",
            ],
            vec!["pool slots", "26216", "2049 ..= 16384"],
        ),
        (
            vec!["decode", "--builtin-set", "n_group=2"],
            vec!["builtin-set / layers", "--model DIR or --builtin NAME"],
        ),
        (
            vec!["decode", "--builtin", "tiny", "--profile", "paper"],
            vec!["profile", "a model's queries are its own"],
        ),
        (
            vec!["decode", "--builtin", "huge"],
            vec!["model config", "tiny, small or v32-layers"],
        ),
        (
            vec!["generate", "--builtin-dtype", "fp4"],
            vec!["dtype", "bf16, f16, f32 or fp8"],
        ),
        (
            vec!["generate", "--overlap", "layerwise:/nonexistent/misses.txt"],
            vec!["miss profile", "/nonexistent/misses.txt"],
        ),
        (
            vec!["generate", "--dump", "/tmp/d.safetensors", "--batch", "2"],
            vec!["dump", "a batch of one prompt"],
        ),
        (
            vec![
                "generate",
                "--dump",
                "/tmp/d.safetensors",
                "--context",
                "64",
            ],
            vec!["dump", "a batch of one prompt"],
        ),
        (
            vec![
                "model",
                "compare",
                "/nonexistent/a.safetensors",
                "/nonexistent/b.safetensors",
            ],
            vec!["/nonexistent/a.safetensors"],
        ),
        (
            vec!["model", "info", "/nonexistent/ckpt"],
            vec!["/nonexistent/ckpt/config.json"],
        ),
        (
            vec!["model", "info", "/nonexistent/ckpt", "--layers", "3..1"],
            vec!["layers", "a..b"],
        ),
        (
            vec!["decode", "--overlap", "dba:65"],
            vec!["overlap chunks", "1 ..= 64"],
        ),
        (vec!["decode", "--pool-slots", "1"], vec!["pool-slots"]),
        (vec!["decode", "--pool-slots", "99999"], vec!["pool-slots"]),
        (vec!["decode", "--mode", "both,offload"], vec!["--mode"]),
        (vec!["decode", "--transfer", "dma"], vec!["--transfer"]),
        (vec!["decode", "--preset", "huge"], vec!["--preset"]),
        (vec!["decode", "--set", "topk=0"], vec!["topk = 0"]),
        (
            vec!["decode", "--set", "topk=4096"],
            vec!["topk = 4096", "1 ..= 2048"],
        ),
        (vec!["decode", "--set", "heads=x"], vec!["heads = x"]),
        (vec!["decode", "--set", "nope=1"], vec!["field = nope"]),
        (vec!["decode", "--set", "heads"], vec!["override = heads"]),
        (
            vec!["decode", "--set", "batch=70000"],
            vec!["batch = 70000"],
        ),
        (vec!["decode", "--set", "batch=0"], vec!["batch = 0"]),
        (
            vec!["decode", "--set", "kv_lora_rank=520"],
            vec!["kv_lora_rank = 520"],
        ),
        (
            vec!["decode", "--set", "index_heads=12"],
            vec!["index_heads = 12"],
        ),
        (vec!["decode", "--set", "layers=0"], vec!["layers = 0"]),
        (vec!["decode", "--set", "context=2000000"], vec!["context"]),
        (vec!["decode", "--set", "dtype=f8"], vec!["dtype = f8"]),
        (
            vec!["decode", "--set", "latent_dtype=bf16"],
            vec!["latent_dtype = bf16", "fp8, f16, f32"],
        ),
        (
            vec![
                "decode",
                "--set",
                "key_dtype=fp8",
                "--set",
                "index_head_dim=160",
            ],
            vec!["index_head_dim (fp8 keys) = 160", "32 ..= 128"],
        ),
        (
            vec!["decode", "--set", "context=4294967296"],
            vec!["context"],
        ),
        (
            vec!["decode", "--preset", "tiny", "--steps", "1048576"],
            vec!["context + steps"],
        ),
        (
            vec!["decode", "--preset", "tiny", "--pool-slots", "3"],
            vec!["pool slots = 3", "17 ..="],
        ),
        (
            vec!["sweep", "--contexts", "1048576", "--steps", "8"],
            vec!["context + steps"],
        ),
        (vec!["sweep", "--max-batch", "0"], vec!["batch"]),
        (vec!["sweep", "--admission", "0"], vec!["admission"]),
        (
            vec!["figures", "misses-vs-ratio", "--ratios", "inf"],
            vec!["sparse-memory-ratio"],
        ),
        (
            vec!["figures", "misses-vs-ratio", "--ratios", "NaN"],
            vec!["sparse-memory-ratio"],
        ),
        (
            vec!["figures", "misses-vs-ratio", "--ratios", "0"],
            vec!["sparse-memory-ratio"],
        ),
        (
            vec!["figures", "misses-vs-ratio", "--ratios", "-1"],
            vec!["sparse-memory-ratio"],
        ),
        (
            vec!["figures", "similarity", "--steps", "1"],
            vec!["steps", "≥ 2"],
        ),
        (vec!["figures", "nope"], vec!["nope"]),
        (
            vec!["bench", "transfer", "--row-bytes", "0"],
            vec!["row-bytes"],
        ),
        (
            vec!["bench", "transfer", "--row-bytes", "17"],
            vec!["row-bytes", "multiple of 16"],
        ),
        (
            vec!["bench", "transfer", "--rows", "4000000K"],
            vec!["rows"],
        ),
        (vec!["bench", "transfer", "--reps", "0"], vec!["reps"]),
        (
            vec!["bench", "kernels", "--reps", "100000"],
            vec!["reps", "1 ..= 1000"],
        ),
        (vec!["bench", "kernels", "--batch", "0"], vec!["batch"]),
        (
            vec!["bench", "kernels", "--context", "99999999"],
            vec!["context"],
        ),
        (
            vec!["trace", "replay", "/nonexistent/x.trace"],
            vec!["/nonexistent/x.trace"],
        ),
        (
            vec!["decode", "--steps", &long],
            vec!["steps", "(100000 bytes)"],
        ),
        (
            vec!["decode", "--set", &long_set],
            vec!["heads", "(100000 bytes)"],
        ),
        (vec!["--nonsense"], vec!["--nonsense"]),
    ];
    for (args, needles) in &cases {
        fails_naming(&run(args), args, needles);
    }
    eprintln!("{} bad options and values refused", cases.len());
}

/// The environment: an unknown backend, adapter or checks setting is named.
#[test]
fn bad_environment_is_named() {
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec![("WGPU_BACKEND", "nonsense")],
            vec!["WGPU_BACKEND = nonsense"],
        ),
        (
            vec![("WGPU_BACKEND", "vulkan,nonsense")],
            vec!["WGPU_BACKEND"],
        ),
        (
            vec![("WGPU_ADAPTER_NAME", "no such adapter")],
            vec!["no such adapter"],
        ),
        (
            vec![("ESS_SHADER_CHECKS", "maybe")],
            vec!["ESS_SHADER_CHECKS"],
        ),
    ];
    for (env, needles) in &cases {
        let o = run_with(&["info"], env, None);
        fails_naming(&o, &["info"], needles);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Malformed traces and profiles: the line and what is wrong, nothing allocated by a header.
#[test]
fn bad_files_name_the_line_and_the_cause() {
    let ids = |n: usize| vec!["0"; n].join(" ");
    let long = "7".repeat(10_000_000);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("empty", String::new(), vec!["empty file"]),
        (
            "binary",
            "\u{0}\u{1}\u{2}garbage".into(),
            vec!["ess-trace 1"],
        ),
        (
            "topk-0",
            "ess-trace 1\nlayers 1 batch 1 topk 0 capacity 10\n".into(),
            vec!["topk 0 outside 1 ..= 65536"],
        ),
        (
            "topk-huge",
            "ess-trace 1\nlayers 1 batch 1 topk 4294967295 capacity 10\ns 1 0 0 5 0\n".into(),
            vec!["topk 4294967295 outside"],
        ),
        (
            "layers-times-batch",
            "ess-trace 1\nlayers 4294967295 batch 2 topk 1 capacity 10\n".into(),
            vec!["layers 4294967295 outside"],
        ),
        (
            "capacity-huge",
            "ess-trace 1\nlayers 1 batch 1 topk 1 capacity 4294967295\n".into(),
            vec!["capacity 4294967295 outside"],
        ),
        (
            "id-2-31",
            "ess-trace 1\nlayers 1 batch 1 topk 1 capacity 10\ns 1 0 0 5 2147483648\n".into(),
            vec!["line 3", "id 2147483648 outside"],
        ),
        (
            "step-2-32",
            "ess-trace 1\nlayers 1 batch 1 topk 1 capacity 10\ns 4294967296 0 0 5 1\n".into(),
            vec!["line 3", "step 4294967296"],
        ),
        (
            "too-many-ids",
            format!(
                "ess-trace 1\nlayers 1 batch 1 topk 2 capacity 10\ns 1 0 0 5 {}\n",
                ids(9)
            ),
            vec!["line 3", "more than that"],
        ),
        (
            "long-token",
            format!("ess-trace 1\nlayers 1 batch 1 topk 1 capacity 10\ns 1 0 0 5 {long}\n"),
            vec!["line 3", "is not a number", "(10000000 bytes)"],
        ),
        (
            "duplicate-id",
            "ess-trace 1\nlayers 1 batch 1 topk 2 capacity 10\ns 1 0 0 5 1 1\n".into(),
            vec!["id 1 selected twice"],
        ),
        (
            "truncated",
            "ess-trace 1\nlayers 1 batch 1 topk 3 capacity 10\ns 1 0 0 5 1".into(),
            vec!["truncated file?"],
        ),
    ];
    for (name, text, needles) in &cases {
        let path = scratch(&format!("{name}.trace"));
        write(&path, text);
        let p = path.to_str().unwrap();
        let args = ["trace", "replay", p, "--pool-slots", "40"];
        fails_naming(&run(&args), &args, needles);
    }
    // a replay too large for memory is refused, not attempted
    let path = scratch("wide.trace");
    let mut text = String::from("ess-trace 1\nlayers 4096 batch 65535 topk 1 capacity 1048576\n");
    for s in 0..2000 {
        text += &format!("s 1 {} {} 5 0\n", s % 4096, s);
    }
    write(&path, &text);
    let args = [
        "trace",
        "replay",
        path.to_str().unwrap(),
        "--pool-slots",
        "40",
    ];
    fails_naming(&run(&args), &args, &["trace size", "table entries"]);
    // profiles
    for (name, text, needles) in [
        ("p-range", "0.5\n1.5\n", vec!["overlap 1.5 outside 0 ..= 1"]),
        ("p-empty", "", vec!["no values"]),
        ("p-word", "0.5\nabc\n", vec!["line 2", "\"abc\""]),
    ] {
        let path = scratch(&format!("{name}.txt"));
        write(&path, text);
        let args = [
            "decode",
            "--preset",
            "tiny",
            "--profile",
            path.to_str().unwrap(),
        ];
        fails_naming(&run(&args), &args, &needles);
    }
    let args = ["decode", "--profile", "/nonexistent/profile.txt"];
    fails_naming(&run(&args), &args, &["/nonexistent/profile.txt"]);
    // miss profiles and overlap tables (--overlap layerwise)

    let good = scratch("m-good.txt");
    write(&good, "# two layers\n10\n300\n");
    for (name, text, needles) in [
        (
            "m-neg",
            "10\n-2\n",
            vec!["miss profile line 2", "non-negative"],
        ),
        ("m-empty", "# nothing\n", vec!["miss profile", "no values"]),
        (
            "m-layers",
            "10\n20\n30\n",
            vec!["miss profile", "one per layer"],
        ),
    ] {
        let path = scratch(&format!("{name}.txt"));
        write(&path, text);
        let spec = format!("layerwise:{}", path.display());
        let args = layerwise(&spec, &[]);
        fails_naming(&run(&args), &args, &needles);
    }
    let spec = format!("layerwise:{}", good.display());
    for (name, text, needles) in [
        (
            "t-cols",
            "a,b\n",
            vec!["overlap table", "no column misses_per_seq"],
        ),
        (
            "t-schedule",
            "misses_per_seq,schedule,step_us\n5,dba:x,100\n",
            vec!["overlap table line 2"],
        ),
    ] {
        let path = scratch(&format!("{name}.csv"));
        write(&path, text);
        let args = layerwise(&spec, &["--overlap-table", path.to_str().unwrap()]);
        fails_naming(&run(&args), &args, &needles);
    }
    let args = ["decode", "--overlap", "layerwise:/nonexistent/misses.txt"];
    fails_naming(&run(&args), &args, &["/nonexistent/misses.txt"]);
    eprintln!("{} bad files refused", cases.len() + 11);
}

/// Outputs whole or not at all: a bad output path fails before any GPU work, and an existing
/// output is untouched by a failed run.
#[test]
fn outputs_are_whole_or_untouched() {
    let existing = scratch("existing.trace");
    write(&existing, "precious\n");
    // the run fails (a bad option found after the path is known): the file stays as it was
    let args = [
        "trace",
        "record",
        "--preset",
        "tiny",
        "--out",
        existing.to_str().unwrap(),
        "--pool-slots",
        "3",
    ];
    fails_naming(&run(&args), &args, &["pool slots = 3"]);
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "precious\n");
    // a parent that is a file, and an output that is a folder
    let file = scratch("a-file");
    write(&file, "x");
    let under_file = file.join("out.trace");
    let args = [
        "trace",
        "record",
        "--preset",
        "tiny",
        "--out",
        under_file.to_str().unwrap(),
    ];
    fails_naming(&run(&args), &args, &["a-file"]);
    let dir = scratch("a-folder");
    std::fs::create_dir_all(&dir).unwrap();
    let args = [
        "trace",
        "record",
        "--preset",
        "tiny",
        "--out",
        dir.to_str().unwrap(),
    ];
    fails_naming(&run(&args), &args, &["is a folder"]);
    let args = [
        "sweep",
        "--preset",
        "tiny",
        "--out",
        under_file.to_str().unwrap(),
    ];
    fails_naming(&run(&args), &args, &["a-file"]);
    let args = [
        "figures",
        "similarity",
        "--preset",
        "tiny",
        "--out",
        under_file.to_str().unwrap(),
    ];
    fails_naming(&run(&args), &args, &["a-file"]);
    // a successful run replaces the file whole
    let args = [
        "trace",
        "record",
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--out",
        existing.to_str().unwrap(),
    ];
    let o = run(&args);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let text = std::fs::read_to_string(&existing).unwrap();
    assert!(text.starts_with("ess-trace 1\n") && text.ends_with('\n'));
}

/// A full or closed stdout is an error status with a message, not a panic.
#[test]
fn full_or_closed_stdout_is_an_error() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    if let Ok(full) = full {
        let o = run_with(&["info"], &[], Some(full));
        fails_naming(&o, &["info", "> /dev/full"], &["stdout"]);
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = run_with(&["--help"], &[], Some(full));
        assert_ne!(o.code, Some(0), "--help to a full stdout: {:?}", o.code);
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    }
    // a closed pipe: the reader is gone before the program writes
    let mut child = Command::new(BIN)
        .args(["info"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(status.code(), Some(101), "panic exit status: {err}");
}

/// Inputs accepted as valid, on purpose.
#[test]
fn accepted_inputs() {
    // the pool is offload's: in resident mode its size is not used, so it is not checked
    let o = run(&[
        "decode",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--mode",
        "resident",
        "--pool-slots",
        "3",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("resident"));
    // --pool-ratio is the old name of --sparse-memory-ratio
    let o = run(&[
        "decode",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--pool-ratio",
        "0.5",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}
