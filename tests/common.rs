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
