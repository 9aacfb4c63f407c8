//! The browser page's engine (issue 17): `web/index.html` loads this example, built for
//! `wasm32-unknown-unknown` and bound by `wasm-bindgen` (`bash web/run.sh` builds it and serves
//! the page on 127.0.0.1; docs/WEB.md).
//!
//! It exports two async functions to the page's JavaScript:
//! - `adapter()`: the WebGPU adapter's report (what the CLI prints first), as text;
//! - `run(settings, progress)`: the CLI's `decode` (both modes, compared bit for bit) on the
//!   settings the page's form gives, calling `progress(mode, step)` after each step; it returns
//!   the report as JSON (every figure the CLI prints, per layer) with the CLI's text and the SVG
//!   figures.
//!
//! Natively this example only says how to build and open the page.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    println!(
        "examples/web.rs is the browser page's engine, built for wasm32:\n  bash web/run.sh\n\
         then open http://127.0.0.1:8080/ in a browser with WebGPU (docs/WEB.md)."
    );
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(target_arch = "wasm32")]
mod page {
    use ess_wgpu::cache::PoolSize;
    use ess_wgpu::decode::{DecodeReport, decode_async};
    use ess_wgpu::engine::{EngineOptions, Mode, ModelRef, TransferOverlap};
    use ess_wgpu::svg::{Series, lines};
    use ess_wgpu::{Error, GpuContext, Result, RunConfig};
    use wasm_bindgen::prelude::*;

    /// What the page's form sets.
    #[derive(serde::Deserialize)]
    struct Settings {
        /// `tiny` or `small` (synthetic queries), or `tiny-model` (the tiny random DeepSeek-V3.2
        /// model's decoder layers, as `decode --builtin tiny`).
        preset: String,
        /// Sparse memory ratio: pool / the sequence's whole latent cache.
        ratio: f64,
        /// `paper` (the paper's per-layer overlap profile, calibrated to ρ on this adapter) or a
        /// step-to-step query similarity ρ in 0 ..= 1.
        locality: String,
        /// `none`, `da`, `dba`, `dba:N`.
        overlap: String,
        batch: u32,
        context: u32,
        steps: u32,
        seed: u64,
    }

    /// Everything the page draws.
    #[derive(serde::Serialize)]
    struct PageReport {
        report: DecodeReport,
        /// The CLI's text of the same report.
        text: String,
        /// (title, SVG): the offload run's hits and misses per layer, each mode's step timeline.
        figures: Vec<(String, String)>,
    }

    fn js(e: Error) -> JsValue {
        JsValue::from_str(&e.to_string())
    }

    async fn context() -> Result<GpuContext> {
        GpuContext::new_async().await
    }

    /// A panic (a bug: every bad input is an `Err`) is shown on the page and in the console,
    /// not only as WebAssembly's "unreachable" trap: the page's `essPanic`, then console.error.
    fn report_panics() {
        std::panic::set_hook(Box::new(|info| {
            let msg = JsValue::from_str(&info.to_string());
            let global = js_sys::global();
            for (object, name) in [(global.clone(), "essPanic"), (global.clone(), "console")] {
                let Ok(target) = js_sys::Reflect::get(&object, &name.into()) else {
                    continue;
                };
                let call = match name {
                    "console" => js_sys::Reflect::get(&target, &"error".into()).ok(),
                    _ => Some(target.clone()),
                };
                if let Some(f) = call.and_then(|f| f.dyn_into::<js_sys::Function>().ok()) {
                    let _ = f.call1(&target, &msg);
                }
            }
        }));
    }

    #[wasm_bindgen]
    pub async fn adapter() -> std::result::Result<String, JsValue> {
        report_panics();
        Ok(context().await.map_err(js)?.report.to_string())
    }

    #[wasm_bindgen]
    pub async fn run(
        settings: String,
        progress: js_sys::Function,
    ) -> std::result::Result<String, JsValue> {
        let s: Settings = serde_json::from_str(&settings)
            .map_err(|e| JsValue::from_str(&format!("settings: {e}")))?;
        run_page(&s, &progress).await.map_err(js)
    }

    /// The run's options, as the CLI's `decode` builds them from its flags.
    fn options(s: &Settings) -> Result<EngineOptions> {
        let (mut run, model) = match s.preset.as_str() {
            "tiny-model" => {
                use ess_wgpu::model::init::{WeightDtype, preset, random_weights};
                let cfg = preset("tiny")?;
                let w = random_weights(&cfg, 0..cfg.num_hidden_layers, s.seed, WeightDtype::F32)?;
                let caches = RunConfig::tiny();
                let weights = Box::leak(Box::new(w));
                let run = ess_wgpu::model::generate::run_config(
                    weights,
                    s.batch,
                    caches.latent_dtype,
                    caches.key_dtype,
                );
                let what = format!("built-in random tiny, seed {}, f32 weights", s.seed);
                (run, Some(ModelRef { weights, what }))
            }
            name => (RunConfig::preset(name)?, None),
        };
        run.batch = s.batch;
        run.context = s.context;
        ess_wgpu::limits::ratio("sparse memory ratio", s.ratio)?;
        run.validate()?;
        let locality = match s.locality.as_str() {
            "paper" => 0.0, // set per layer after calibration
            rho => {
                let v = rho
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| Error::config("locality", rho, "paper, or a number in 0 ..= 1"))?;
                ess_wgpu::limits::unit("locality", v)? as f32
            }
        };
        // the transfer path is zero-copy, asked for as natively; a browser has no mappable
        // storage buffers, so the cache falls back to staging and says so in its report
        let contexts = vec![run.context; run.batch as usize];
        let opts = EngineOptions {
            steps: s.steps,
            pool: PoolSize::Ratio(s.ratio),
            locality,
            warmup_windows: 2,
            seed: s.seed,
            track_overlap: true,
            transfer_overlap: TransferOverlap::parse(&s.overlap)?,
            model,
            ..EngineOptions::new(run, contexts)
        };
        opts.validate()?;
        for mode in [Mode::Resident, Mode::Offload] {
            EngineOptions {
                mode,
                ..opts.clone()
            }
            .validate()?;
        }
        Ok(opts)
    }

    async fn run_page(s: &Settings, progress: &js_sys::Function) -> Result<String> {
        let mut opts = options(s)?;
        let ctx = context().await?;
        let profile = match (s.locality.as_str(), &opts.model) {
            ("paper", None) => {
                let targets = ess_wgpu::locality::paper_profile(opts.run.layers);
                ess_wgpu::locality::apply_targets(&ctx, &mut opts, &targets).await?
            }
            ("paper", Some(_)) => {
                return Err(Error::config(
                    "locality",
                    "paper",
                    "a number with the model (a profile shapes synthetic queries; a model's \
                     queries are its own)",
                ));
            }
            _ => Vec::new(),
        };
        let tell = |mode: &str, step: u32| {
            let _ = progress.call2(&JsValue::NULL, &mode.into(), &step.into());
        };
        let budget = ctx.max_binding().max(1 << 30);
        let modes = [Mode::Resident, Mode::Offload];
        let mut report = decode_async(&ctx, &opts, &modes, true, budget, tell).await?;
        report.profile = profile;
        let mut figures = Vec::new();
        if let Some(off) = report.modes.iter().find(|m| m.mode == Mode::Offload) {
            let per_step = |x: u64| x as f64 / off.steps.max(1) as f64 / opts.run.batch as f64;
            let series = |name: &str, f: &dyn Fn(&ess_wgpu::cache::CacheCounters) -> u64| Series {
                name: name.into(),
                points: (off.stats.counters.iter().enumerate())
                    .map(|(l, c)| (l as f64, per_step(f(c))))
                    .collect(),
                dashed: false,
            };
            let title = "hits and misses per layer (offload)";
            figures.push((
                title.to_string(),
                lines(
                    title,
                    "layer",
                    "rows per step and sequence",
                    &[series("misses", &|c| c.misses), series("hits", &|c| c.hits)],
                    &[],
                ),
            ));
        }
        for m in &report.modes {
            if !m.stats.timeline.is_empty() {
                let mode = m.mode.to_string();
                figures.push((
                    format!("one decode step, {mode}"),
                    ess_wgpu::figures::step_timeline(&mode, &opts, &m.stats.timeline),
                ));
            }
        }
        let page = PageReport {
            text: report.to_string(),
            report,
            figures,
        };
        serde_json::to_string(&page).map_err(|e| Error::Gpu(format!("report to JSON: {e}")))
    }
}
