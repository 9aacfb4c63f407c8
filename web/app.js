// The page: the form's settings go to examples/web.rs's `run` (the CLI's `decode`, compiled to
// WebAssembly), whose JSON report is drawn here. `?autorun` runs the defaults once loaded (the
// page test, tests/browser.rs, opens it so). `?preset=…&steps=…` etc. preset the form.
import init, { adapter, run } from "./pkg/web.js";

const $ = (id) => document.getElementById(id);
const form = $("settings");

function setVerdict(state, text) {
  const v = $("verdict");
  v.dataset.state = state;
  v.textContent = text;
}

function settings() {
  const f = new FormData(form);
  const num = (k) => Number(f.get(k));
  return {
    preset: f.get("preset"), ratio: num("ratio"), locality: f.get("locality"),
    overlap: f.get("overlap"), batch: num("batch"), context: num("context"),
    steps: num("steps"), seed: num("seed"),
  };
}

function row(cells, tag = "td") {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement(tag);
    if (c instanceof Node) td.append(c); else td.textContent = c;
    tr.append(td);
  }
  return tr;
}

function table(el, head, rows) {
  el.replaceChildren(row(head, "th"), ...rows.map((r) => row(r)));
}

const name = (m) => m.mode.toLowerCase();
const mib = (b) => (b / 1048576).toFixed(2);
const fixed = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : "–");

function meter(used, total) {
  const m = document.createElement("meter");
  m.min = 0; m.max = total; m.value = used;
  const span = document.createElement("span");
  span.className = "occupancy";
  span.append(m, ` ${((100 * used) / total).toFixed(1)}%`);
  return span;
}

function draw(page) {
  const r = page.report;
  const per = (m, x) => (1e3 * x) / Math.max(m.stats.steps, 1);
  table($("modes"),
    ["mode", "batch", "steps", "tokens/s (GPU)", "tokens/s (wall)", "GPU ms/step", "wall ms/step", "device MiB", "host MiB"],
    r.modes.map((m) => [name(m), m.batch, m.steps, fixed(m.tokens_per_s_gpu, 1), fixed(m.tokens_per_s_wall, 1),
      fixed(per(m, Object.values(m.stats.stage_s).reduce((a, b) => a + b, 0)), 3), fixed(per(m, m.stats.wall_s), 3),
      mib(m.device_bytes), mib(m.host_bytes)]));
  // per-stage times come from timestamps between passes; without them, only the wall clock
  const stages = Object.keys(r.modes[0].stage_ms_per_step);
  const timed = (m) => m.stats.timed_steps > 0;
  table($("stages"), ["mode", ...stages],
    r.modes.map((m) => [name(m), ...stages.map((s) => (timed(m) ? fixed(m.stage_ms_per_step[s], 3) : "–"))]));
  $("stage-note").textContent = r.modes.every(timed)
    ? "From GPU timestamps written between passes (every step timed: a pass per stage)."
    : "This adapter has no timestamp queries: no per-stage GPU times; the wall clock per step is in the table above.";
  const off = r.modes.find((m) => m.mode === "Offload");
  if (off) {
    $("cache-path").textContent = off.cache;
    table($("layers"),
      ["layer", "pool occupancy", "hits", "misses", "hit rate", "misses / step", "H→D rows", "H→D MiB", "D→H rows", "D→H MiB"],
      off.stats.counters.map((c, l) => {
        const [used, slots] = off.pool_occupancy[l] || [0, 1];
        return [l, meter(used, slots), c.hits, c.misses,
          `${((100 * c.hits) / Math.max(c.hits + c.misses, 1)).toFixed(1)}%`,
          (c.misses / Math.max(off.steps, 1)).toFixed(1), c.rows_h2d, mib(c.bytes_h2d), c.rows_d2h, mib(c.bytes_d2h)];
      }));
  }
  $("svgs").replaceChildren(...page.figures.map(([title, svg]) => {
    const fig = document.createElement("figure");
    fig.innerHTML = svg;
    const cap = document.createElement("figcaption");
    cap.textContent = title;
    fig.append(cap);
    return fig;
  }));
  $("text").textContent = page.text;
  for (const id of ["summary", "figures", "text-box"]) $(id).hidden = false;
}

async function go() {
  const s = settings();
  $("go").disabled = true;
  setVerdict("running", "running…");
  const t0 = performance.now();
  try {
    const json = await run(JSON.stringify(s), (mode, step) => {
      $("progress").textContent = `${mode}: step ${step} of ${s.steps}`;
    });
    const page = JSON.parse(json);
    draw(page);
    const secs = ((performance.now() - t0) / 1e3).toFixed(1);
    if (page.report.identical === true) {
      setVerdict("identical", `bit-identical: resident and offload gave the same o_lat and lse bits at every layer and step (${secs} s)`);
    } else {
      setVerdict("differ", "MODES DISAGREE: resident and offload outputs differ");
    }
  } catch (e) {
    setVerdict("error", `error: ${e}`);
  } finally {
    $("go").disabled = false;
  }
}

// examples/web.rs's panic hook calls this (a panic is a bug: bad settings are errors)
globalThis.essPanic = (msg) => setVerdict("error", `panic (a bug): ${msg}`);

form.addEventListener("submit", (e) => { e.preventDefault(); go(); });

const params = new URLSearchParams(location.search);
for (const [k, v] of params) if (form.elements[k]) form.elements[k].value = v;

try {
  await init();
  if (!navigator.gpu) throw new Error("this browser has no WebGPU (navigator.gpu is missing)");
  $("adapter").textContent = await adapter();
  if (params.has("autorun")) await go();
} catch (e) {
  $("adapter").textContent = String(e);
  setVerdict("error", `error: ${e}`);
}
