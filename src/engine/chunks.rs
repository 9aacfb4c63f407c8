//! The engine's overlapped schedules (`--overlap`): how a batch is cut into chunks, and the
//! layer-wise choice of a schedule from a miss profile. docs/PERF.md "Overlap in the engine" has
//! the measurements the choice comes from.

use super::LayerSchedule;
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

/// One measured schedule at one miss count: a row of `figures overlap`'s CSV.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    pub misses: f64,
    pub schedule: LayerSchedule,
    pub step_us: f64,
    /// The batch it was measured at (a table's `batch` column; older tables have none). The
    /// choice holds for that batch: at another, the schedules' costs differ.
    pub batch: Option<u32>,
}

/// The order the chooser prefers on a tie: serial, DA, then DBA by chunks.
fn rank(s: LayerSchedule) -> u32 {
    match s {
        LayerSchedule::Serial => 0,
        LayerSchedule::Da => 1,
        LayerSchedule::Dba(n) => 1 + n,
    }
}

/// The layer-wise choice: the schedule for a layer whose sequences miss `misses` rows a step on
/// average, from `table` (measured on the GPU it runs on: `figures overlap`): each schedule's
/// step time interpolated linearly in misses between its measured points (held at the ends),
/// the fastest taken, the simpler on a tie (serial, DA, fewer chunks). An empty table chooses
/// serial (docs/PERF.md "Overlap in the engine" has what the H200 measured).
pub fn choose_schedule(misses: f64, table: &[Measured]) -> LayerSchedule {
    let mut schedules: Vec<LayerSchedule> = table.iter().map(|m| m.schedule).collect();
    schedules.sort_by_key(|&s| rank(s));
    schedules.dedup();
    let at = |schedule: LayerSchedule| -> f64 {
        let mut pts: Vec<(f64, f64)> = table
            .iter()
            .filter(|m| m.schedule == schedule)
            .map(|m| (m.misses, m.step_us))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let i = pts.partition_point(|p| p.0 < misses);
        match (i.checked_sub(1).map(|j| pts[j]), pts.get(i)) {
            (Some(a), Some(b)) if b.0 > a.0 => a.1 + (b.1 - a.1) * (misses - a.0) / (b.0 - a.0),
            (_, Some(b)) => b.1,
            (Some(a), None) => a.1,
            (None, None) => f64::INFINITY,
        }
    };
    schedules
        .into_iter()
        .map(|s| (s, at(s)))
        .min_by(|a, b| a.1.total_cmp(&b.1).then(rank(a.0).cmp(&rank(b.0))))
        .map_or(LayerSchedule::Serial, |(s, _)| s)
}

/// `figures overlap`'s CSV (columns `misses_per_seq`, `schedule` = none | da | dba:N, `step_us`)
/// as the chooser's table.
pub fn read_overlap_table(path: &std::path::Path) -> Result<Vec<Measured>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            "overlap table",
            path.display(),
            format!("a readable file ({e})"),
        )
    })?;
    parse_overlap_table(&text)
}

/// [`read_overlap_table`]'s parser.
pub fn parse_overlap_table(text: &str) -> Result<Vec<Measured>> {
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |name: &str| {
        head.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::config(
                "overlap table",
                format!("no column {name}"),
                "figures overlap's CSV",
            )
        })
    };
    let (m, s, t) = (col("misses_per_seq")?, col("schedule")?, col("step_us")?);
    let batch = col("batch").ok();
    let mut out = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || {
            Error::config(
                &format!("overlap table line {}", i + 2),
                crate::limits::shown(line),
                "misses, none | da | dba:N, step µs",
            )
        };
        let num = |j: usize| -> Result<f64> {
            f.get(j)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(bad)
        };
        let schedule = LayerSchedule::parse(f.get(s).ok_or_else(bad)?).map_err(|_| bad())?;
        let batch = match batch {
            Some(j) => Some(num(j)? as u32),
            None => None,
        };
        out.push(Measured {
            misses: num(m)?,
            schedule,
            step_us: num(t)?,
            batch,
        });
    }
    Ok(out)
}

/// A miss profile (format `ess-miss-profile 1`): the mean rows each sequence misses per decode
/// step, one line per layer, `#` comments and blank lines ignored. `decode --miss-profile FILE`
/// writes one.
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
    fn the_chooser_takes_the_fastest_interpolated_schedule() {
        let m = |misses, chunks, step_us| Measured {
            misses,
            schedule: match chunks {
                1 => LayerSchedule::Serial,
                n => LayerSchedule::Dba(n),
            },
            step_us,
            batch: None,
        };
        // serial grows with misses, two chunks cost a fixed 100 µs more and grow half as fast
        let t = [
            m(0.0, 1, 1000.0),
            m(400.0, 1, 1400.0),
            m(0.0, 2, 1100.0),
            m(400.0, 2, 1300.0),
        ];
        let c = |misses, t: &[Measured]| choose_schedule(misses, t).chunks();
        assert_eq!(c(50.0, &t), 1);
        assert_eq!(c(200.0, &t), 1); // a tie: the fewer chunks
        assert_eq!(c(300.0, &t), 2);
        assert_eq!(c(9000.0, &t), 2); // held at the last point
        assert_eq!(choose_schedule(300.0, &[]), LayerSchedule::Serial);
        let da = Measured {
            misses: 0.0,
            schedule: LayerSchedule::Da,
            step_us: 1050.0,
            batch: None,
        };
        assert_eq!(
            choose_schedule(0.0, &[t[0], t[2], da]),
            LayerSchedule::Serial
        );
        assert_eq!(choose_schedule(300.0, &[t[0], t[1], da]), LayerSchedule::Da);
        let csv = "locality,misses_per_seq,schedule,step_us\n1,0.5,none,10\n1,0.5,dba:4,12\n";
        let back = parse_overlap_table(csv).unwrap();
        assert_eq!(back, vec![m(0.5, 1, 10.0), m(0.5, 4, 12.0)]);
        let with_batch = "misses_per_seq,schedule,step_us,batch\n3,da,9,64\n";
        assert_eq!(parse_overlap_table(with_batch).unwrap()[0].batch, Some(64));
        assert!(
            parse_overlap_table("locality,misses_per_seq,schedule,step_us\n1,2,dba:x,3").is_err()
        );
        assert!(parse_overlap_table("a,b\n").is_err());
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
