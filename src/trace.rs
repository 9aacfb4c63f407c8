//! Traces of top-k selections: record them from a run, write and read them in a documented,
//! versioned text format, and replay them through the cache policy alone ([`LruPool`], no GPU) to
//! get hits and misses for any pool size in seconds.
//!
//! # Format `ess-trace 1`
//!
//! Plain text, one record per line, fields separated by spaces; `#` starts a comment line.
//!
//! ```text
//! ess-trace 1
//! layers <L> batch <B> topk <K> capacity <C>
//! w <step> <layer> <seq> <len> <id_1> … <id_K>     a warm-up window (prefill top-k)
//! s <step> <layer> <seq> <len> <id_1> … <id_K>     a decode step's top-k
//! ```
//!
//! `len` is the sequence's context when the selection was made: its newest token is `len − 1`
//! (it sits in the pool's reserved slot). Ids are token positions `< len`, or `−1` for none;
//! exactly `K` per line. Records replay in file order; pools are per (layer, seq), so records of
//! different layers and sequences may interleave freely. Any engine that can write these lines
//! can have its selections replayed.

use crate::error::{Error, Result};
use crate::limits::shown;
use crate::reference::LruPool;
use std::fmt::Write as _;

/// The header's allowed values: (field, min, max). A trace is plain text from any engine, so
/// top-k may exceed the GPU kernel's 2048 (the replay is plain Rust); the context limit is the
/// engine's.
const HEADER_LIMITS: [(&str, u32, u32); 4] = [
    ("layers", 1, 4096),
    ("batch", 1, crate::limits::MAX_BATCH),
    ("topk", 1, 65536),
    ("capacity", 1, crate::limits::MAX_CONTEXT),
];

/// Most LRU table entries a replay may allocate (token → slot and slot tables of every pool):
/// 1 Gi entries, 4 GiB.
pub const REPLAY_MAX_ENTRIES: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A prefill window's top-k, used for LRU warm-up; not decode traffic.
    Warmup,
    Step,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub kind: Kind,
    pub step: u32,
    pub layer: u32,
    pub seq: u32,
    pub len: u32,
    /// `[K]` token ids, −1 = none.
    pub ids: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub layers: u32,
    pub batch: u32,
    pub topk: u32,
    pub capacity: u32,
    pub entries: Vec<Entry>,
}

/// Hits and misses of a replay: `[step][layer]` (hits, misses) summed over sequences, decode
/// steps only, in step order; and the warm-up's own totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replay {
    pub steps: Vec<Vec<(u64, u64)>>,
    pub warmup_misses: u64,
}

/// Hits, misses and hit rate per layer, as a table.
impl std::fmt::Display for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:>6} {:>10} {:>10} {:>9}",
            "layer", "hits", "misses", "hit rate"
        )?;
        for (l, (h, m)) in self
            .hits_per_layer()
            .iter()
            .zip(self.misses_per_layer())
            .enumerate()
        {
            writeln!(
                f,
                "{l:>6} {h:>10} {m:>10} {:>8.1}%",
                100.0 * *h as f64 / (h + m).max(1) as f64
            )?;
        }
        Ok(())
    }
}

impl Replay {
    /// Misses per layer summed over steps.
    pub fn misses_per_layer(&self) -> Vec<u64> {
        let layers = self.steps.first().map_or(0, Vec::len);
        (0..layers)
            .map(|l| self.steps.iter().map(|s| s[l].1).sum())
            .collect()
    }

    pub fn hits_per_layer(&self) -> Vec<u64> {
        let layers = self.steps.first().map_or(0, Vec::len);
        (0..layers)
            .map(|l| self.steps.iter().map(|s| s[l].0).sum())
            .collect()
    }
}

impl Trace {
    pub fn new(layers: u32, batch: u32, topk: u32, capacity: u32) -> Self {
        Trace {
            layers,
            batch,
            topk,
            capacity,
            entries: Vec::new(),
        }
    }

    /// Add one layer's selections of all sequences: `flat` is `[B, K]`, `lens[b]` the contexts.
    pub fn push_selection(
        &mut self,
        kind: Kind,
        step: u32,
        layer: u32,
        lens: &[u32],
        flat: &[i32],
    ) {
        let k = self.topk as usize;
        for (b, &len) in lens.iter().enumerate() {
            self.entries.push(Entry {
                kind,
                step,
                layer,
                seq: b as u32,
                len,
                ids: flat[b * k..][..k].to_vec(),
            });
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "ess-trace 1\nlayers {} batch {} topk {} capacity {}\n",
            self.layers, self.batch, self.topk, self.capacity
        );
        for e in &self.entries {
            let tag = if e.kind == Kind::Warmup { 'w' } else { 's' };
            let _ = write!(s, "{tag} {} {} {} {}", e.step, e.layer, e.seq, e.len);
            for id in &e.ids {
                let _ = write!(s, " {id}");
            }
            s.push('\n');
        }
        s
    }

    /// Parse the text format; `what` names the source in errors (e.g. the file path).
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let err = |line: usize, offset: usize, message: String| Error::Parse {
            what: what.to_string(),
            line,
            offset,
            message,
        };
        let mut lines = Vec::new();
        let mut offset = 0;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let content = raw.trim_end_matches(['\n', '\r']);
            if !content.trim().is_empty() && !content.trim_start().starts_with('#') {
                lines.push((i + 1, offset, content, raw.ends_with('\n')));
            }
            offset += raw.len();
        }
        let mut it = lines.into_iter();
        let (l, o, magic, _) = it
            .next()
            .ok_or_else(|| err(1, 0, "empty file: expected `ess-trace 1`".into()))?;
        if magic.trim() != "ess-trace 1" {
            return Err(err(
                l,
                o,
                format!("expected `ess-trace 1`, found {:?}", shown(magic)),
            ));
        }
        let (l, o, header, _) = it
            .next()
            .ok_or_else(|| err(l + 1, text.len(), "truncated: no header line".into()))?;
        let f: Vec<&str> = header.split_whitespace().collect();
        let num = |idx: usize, name: &str| -> Result<u32> {
            if f.get(idx) != Some(&name) {
                return Err(err(
                    l,
                    o,
                    format!(
                        "header: expected `layers L batch B topk K capacity C`, found {:?}",
                        shown(header)
                    ),
                ));
            }
            let (min, max) = HEADER_LIMITS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|&(_, lo, hi)| (lo, hi))
                .expect("a header field");
            let v: u32 = f
                .get(idx + 1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| err(l, o, format!("header: {name} needs a whole number")))?;
            if v < min || v > max {
                return Err(err(
                    l,
                    o,
                    format!("header: {name} {v} outside {min} ..= {max}"),
                ));
            }
            Ok(v)
        };
        let mut trace = Trace::new(
            num(0, "layers")?,
            num(2, "batch")?,
            num(4, "topk")?,
            num(6, "capacity")?,
        );
        if f.len() != 8 {
            return Err(err(
                l,
                o,
                format!("header: 8 fields expected, found {}", f.len()),
            ));
        }
        let k = trace.topk as usize;
        for (l, o, line, terminated) in it {
            let mut f = line.split_whitespace();
            let kind = match f.next() {
                Some("w") => Kind::Warmup,
                Some("s") => Kind::Step,
                other => {
                    return Err(err(
                        l,
                        o,
                        format!("record must start with `w` or `s`, found {other:?}"),
                    ));
                }
            };
            // no allocation sized by the header: the record's own numbers decide
            let mut nums = Vec::new();
            for tok in f {
                if nums.len() > 4 + k {
                    break; // too many: reported below
                }
                nums.push(
                    tok.parse::<i64>()
                        .map_err(|_| err(l, o, format!("{:?} is not a number", shown(tok))))?,
                );
            }
            if nums.len() != 4 + k {
                let hint = if terminated { "" } else { " (truncated file?)" };
                let found = if nums.len() > 4 + k {
                    "more than that".to_string()
                } else {
                    format!("{} numbers", nums.len())
                };
                return Err(err(
                    l,
                    o,
                    format!("{found}, expected step layer seq len + {k} ids{hint}"),
                ));
            }
            let (step, layer, seq, len) = (nums[0], nums[1], nums[2], nums[3]);
            if step < 0
                || step > u32::MAX as i64
                || layer < 0
                || layer >= trace.layers as i64
                || seq < 0
                || seq >= trace.batch as i64
            {
                return Err(err(
                    l,
                    o,
                    format!("step {step}, layer {layer}, seq {seq} outside the header's sizes"),
                ));
            }
            if len < 1 || len > trace.capacity as i64 {
                return Err(err(
                    l,
                    o,
                    format!("len {len} outside 1 ..= capacity {}", trace.capacity),
                ));
            }
            let ids: Vec<i32> = nums[4..].iter().map(|&x| x as i32).collect();
            if let Some(bad) = nums[4..].iter().find(|&&x| x < -1 || x >= len) {
                return Err(err(l, o, format!("id {bad} outside -1 ..< len {len}")));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = ids.iter().find(|&&x| x >= 0 && !seen.insert(x)) {
                return Err(err(l, o, format!("id {dup} selected twice")));
            }
            trace.entries.push(Entry {
                kind,
                step: step as u32,
                layer: layer as u32,
                seq: seq as u32,
                len: len as u32,
                ids,
            });
        }
        Ok(trace)
    }

    pub fn read(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The largest working set: over every (layer, seq) and decode step, the number of distinct
    /// tokens selected in the last `window` steps (that step included).
    pub fn working_set(&self, window: u32) -> u32 {
        let mut history: std::collections::HashMap<(u32, u32), Vec<&Entry>> = Default::default();
        let mut largest = 0;
        for e in self.entries.iter().filter(|e| e.kind == Kind::Step) {
            let h = history.entry((e.layer, e.seq)).or_default();
            h.push(e);
            let recent = &h[h.len().saturating_sub(window.max(1) as usize)..];
            let union: std::collections::HashSet<i32> = recent
                .iter()
                .flat_map(|r| r.ids.iter().copied())
                .filter(|&t| t >= 0)
                .collect();
            largest = largest.max(union.len() as u32);
        }
        largest
    }

    /// Replay through exact LRU pools of `slots` slots per (layer, seq). With `warmup`, the
    /// warm-up windows seed the pools first (not counted); without, they are skipped.
    pub fn replay(&self, slots: u32, warmup: bool) -> Result<Replay> {
        if slots <= self.topk {
            return Err(Error::config(
                "pool slots",
                slots,
                format!("≥ top-k + 1 = {}", self.topk + 1),
            ));
        }
        // a pool per (layer, sequence) that has records, made when first needed; their token
        // tables together stay under REPLAY_MAX_ENTRIES
        let mut pools: std::collections::HashMap<(u32, u32), LruPool> = Default::default();
        let per_pool = self.capacity as u64 + slots as u64;
        let mut out = Replay::default();
        let mut step_index = std::collections::HashMap::new();
        for e in &self.entries {
            if e.kind == Kind::Warmup && !warmup {
                continue;
            }
            if !pools.contains_key(&(e.layer, e.seq))
                && (pools.len() as u64 + 1) * per_pool > REPLAY_MAX_ENTRIES
            {
                return Err(Error::config(
                    "trace size",
                    format!(
                        "{} pools × (capacity {} + {slots} slots)",
                        pools.len() + 1,
                        self.capacity
                    ),
                    format!("at most {REPLAY_MAX_ENTRIES} table entries in all (4 bytes each)"),
                ));
            }
            let pool = pools
                .entry((e.layer, e.seq))
                .or_insert_with(|| LruPool::new(slots as usize, self.capacity as usize));
            let r = pool.resolve(&e.ids, e.len as i32 - 1);
            let misses = r.copies.len() as u64;
            match e.kind {
                Kind::Warmup => out.warmup_misses += misses,
                Kind::Step => {
                    let next = step_index.len();
                    let i = *step_index.entry(e.step).or_insert(next);
                    if i == out.steps.len() {
                        out.steps.push(vec![(0, 0); self.layers as usize]);
                    }
                    let cell = &mut out.steps[i][e.layer as usize];
                    cell.0 += r.hits as u64;
                    cell.1 += misses;
                }
            }
        }
        Ok(out)
    }
}
