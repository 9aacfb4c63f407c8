//! Property tests of the parsers that take user and file input: arbitrary text never panics,
//! never allocates by a claimed size, and either parses to a value inside the documented range or
//! is an error that names the field.

use ess_wgpu::RunConfig;
use ess_wgpu::limits;
use ess_wgpu::trace::Trace;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn budgets(text in ".{0,24}") {
        match limits::budget("device-budget", &text) {
            Ok(v) => prop_assert!((1u64 << 20..=limits::MAX_BUDGET).contains(&v)),
            Err(e) => prop_assert!(e.to_string().contains("device-budget")),
        }
    }

    #[test]
    fn budgets_from_numbers(v in proptest::num::f64::ANY, unit in "[KMGTkmgt]?") {
        let text = format!("{v}{unit}");
        if let Ok(b) = limits::budget("b", &text) {
            prop_assert!((1 << 20..=limits::MAX_BUDGET).contains(&b));
        }
    }

    #[test]
    fn counts(text in "[0-9Kk+-. ]{0,24}", min in 0u32..10, span in 0u32..1_000_000) {
        let max = min + span;
        match limits::count("steps", &text, min, max) {
            Ok(v) => prop_assert!(v >= min && v <= max),
            Err(e) => prop_assert!(e.to_string().contains("steps")),
        }
    }

    #[test]
    fn ratios_and_units(v in proptest::num::f64::ANY) {
        if let Ok(r) = limits::ratio("r", v) {
            prop_assert!(r > 0.0 && r <= 1.0);
        }
        if let Ok(u) = limits::unit("u", v) {
            prop_assert!((0.0..=1.0).contains(&u));
        }
    }

    #[test]
    fn configuration_overrides(field in "[a-z_]{0,20}", value in ".{0,30}") {
        let o = format!("{field}={value}");
        match RunConfig::tiny().with_overrides(&[o.as_str()]).and_then(|c| c.validate().map(|_| c)) {
            Ok(c) => {
                prop_assert!(c.batch >= 1 && c.batch <= limits::MAX_BATCH);
                prop_assert!(c.context >= 1 && c.context <= limits::MAX_CONTEXT);
            }
            Err(e) => prop_assert!(e.to_string().starts_with("invalid configuration: ")),
        }
    }

    /// A header with any numbers (huge ones included) and a few records: parsed within the header
    /// limits or refused with a line number, never an allocation by the claimed sizes.
    #[test]
    fn trace_headers(layers in any::<u32>(), batch in any::<u32>(), topk in any::<u32>(),
                     capacity in any::<u32>(), records in proptest::collection::vec(".{0,40}", 0..4)) {
        let mut text = format!("ess-trace 1\nlayers {layers} batch {batch} topk {topk} capacity {capacity}\n");
        for r in &records {
            text += &format!("s 1 0 0 {r}\n");
        }
        match Trace::parse(&text, "t") {
            Ok(t) => {
                prop_assert!(t.layers <= 4096 && t.batch <= limits::MAX_BATCH);
                prop_assert!(t.topk <= 65536 && t.capacity <= limits::MAX_CONTEXT);
            }
            Err(e) => prop_assert!(e.to_string().contains("t: line")),
        }
    }

    /// Arbitrary bytes as a trace file.
    #[test]
    fn trace_text(text in "(ess-trace 1\n)?(layers [0-9]{1,3} batch [0-9]{1,3} topk [0-9]{1,2} capacity [0-9]{1,3}\n)?([sw# 0-9-]{0,30}\n){0,6}") {
        if let Ok(t) = Trace::parse(&text, "t") {
            // a parsed trace replays (or refuses a pool size) without panicking
            let _ = t.replay(t.topk + 1, true);
        }
    }
}
