//! The engine's overlapped schedule (`--overlap`): how a batch is cut into chunks, and the
//! layer-wise choice of chunks from a miss profile. docs/PERF.md "Overlap in the engine" has
//! the measurements the choice comes from.

use crate::error::{Error, Result};

/// `n` near-equal contiguous chunks of sequences `0 .. batch`, cut again at every group start
/// of `groups` (lists of (first, count)), so that each chunk lies inside one group of each list
/// (a chunk's indexer reads one key buffer, its gather one host-store buffer). At most `batch`
/// chunks; (first sequence, sequences) each.
pub fn chunk_ranges(batch: u32, n: u32, groups: &[&[(u32, u32)]]) -> Vec<(u32, u32)> {
    let n = n.clamp(1, batch.max(1));
    let mut cuts: Vec<u32> = (0..=n)
        .map(|i| (i as u64 * batch as u64 / n as u64) as u32)
        .collect();
    cuts.extend(groups.iter().flat_map(|g| g.iter().map(|&(b0, _)| b0)));
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .filter(|w| w[1] > w[0] && w[0] < batch)
        .map(|w| (w[0], w[1].min(batch) - w[0]))
        .collect()
}

/// The layer-wise choice: chunks for a layer whose sequences miss `misses` rows a step on
/// average, at `batch` sequences. Thresholds from `figures overlap` on the H200 (docs/PERF.md
/// "Overlap in the engine"): with few misses the extra top-k and resolve dispatches of a chunked
/// schedule cost more than the gather they hide.
pub fn choose_chunks(misses: f64, batch: u32) -> u32 {
    let n = if misses < LAYERWISE_MIN_MISSES {
        1
    } else {
        LAYERWISE_CHUNKS
    };
    n.min(batch.max(1))
}

/// Below this many misses a sequence, a layer runs serially.
pub const LAYERWISE_MIN_MISSES: f64 = 16.0;
/// Chunks of an overlapped layer.
pub const LAYERWISE_CHUNKS: u32 = 4;

/// A miss profile (format `ess-miss-profile 1`): the mean rows each sequence misses per decode
/// step, one line per layer, `#` comments and blank lines ignored. `trace replay
/// --miss-profile FILE` writes one.
pub fn read_miss_profile(path: &std::path::Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            "miss profile",
            path.display(),
            format!("a readable file ({e})"),
        )
    })?;
    parse_miss_profile(&text)
}

/// [`read_miss_profile`]'s parser.
pub fn parse_miss_profile(text: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => out.push(v),
            _ => {
                return Err(Error::config(
                    &format!("miss profile line {}", i + 1),
                    crate::limits::shown(line),
                    "a non-negative number",
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::config("miss profile", "no values", "one per layer"));
    }
    Ok(out)
}

/// [`read_miss_profile`]'s format, written.
pub fn format_miss_profile(misses: &[f64], what: &str) -> String {
    let mut s = format!(
        "# ess-miss-profile 1: mean rows missed per sequence and decode step, one line per layer\n# {what}\n"
    );
    for m in misses {
        s += &format!("{m:.3}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_batch_inside_groups() {
        assert_eq!(chunk_ranges(8, 2, &[]), vec![(0, 4), (4, 4)]);
        assert_eq!(chunk_ranges(5, 2, &[]), vec![(0, 2), (2, 3)]);
        assert_eq!(chunk_ranges(3, 8, &[]), vec![(0, 1), (1, 1), (2, 1)]);
        let g: &[(u32, u32)] = &[(0, 3), (3, 3), (6, 2)];
        assert_eq!(
            chunk_ranges(8, 2, &[g]),
            vec![(0, 3), (3, 1), (4, 2), (6, 2)]
        );
        assert_eq!(chunk_ranges(8, 1, &[]), vec![(0, 8)]);
    }

    #[test]
    fn miss_profiles_round_trip_and_refuse_junk() {
        let p = vec![0.0, 12.5, 300.0];
        let back = parse_miss_profile(&format_miss_profile(&p, "test")).unwrap();
        assert_eq!(back, p);
        assert!(parse_miss_profile("1\n-2\n").is_err());
        assert!(parse_miss_profile("# nothing\n").is_err());
        assert!(parse_miss_profile("nan").is_err());
    }
}
