//! One GPU context for the whole test binary (device creation and pipeline builds are the slow
//! part on a software adapter).

use ess_wgpu::GpuContext;
use std::sync::OnceLock;

pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        match GpuContext::new() {
            Ok(c) => {
                eprintln!("{}", c.report);
                c
            }
            Err(e) => panic!("tests need a GPU adapter: {e}"),
        }
    })
}

/// A fresh seed per run (printed, so a failure can be replayed with `ESS_SEED=…`), varied by `i`.
#[allow(dead_code)] // not every test binary draws random inputs
pub fn seed(i: u64) -> u64 {
    let base = std::env::var("ESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let s = base.wrapping_add(i.wrapping_mul(0x9E37_79B9));
    eprintln!("seed {s} (replay with ESS_SEED={base})");
    s
}
