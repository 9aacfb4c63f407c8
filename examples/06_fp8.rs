//! 06 — the production FP8 cache formats (issue 13): DeepSeek-V3.2's latent rows in 656 bytes and
//! indexer keys in 132, written on the GPU and read back.
//!
//! Packs rows of random values on the GPU (`fp8_quant.wgsl`), checks the bytes against the CPU
//! quantiser (`reference::fp8`), unpacks them on the GPU, and reports what the format costs:
//! bytes per token per layer, and the error of the values read back against f16.
//!
//!     cargo run --release --example 06_fp8

use ess_wgpu::kernels::Fp8Quant;
use ess_wgpu::kernels::fp8_quant::Fp8RowShape;
use ess_wgpu::reference::fp8::{ScaleRule, pack_index_key, pack_latent_row};
use ess_wgpu::workload::{Rng, round_f16};
use ess_wgpu::{GpuContext, RunConfig};

fn main() -> ess_wgpu::Result<()> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.report);
    let m = RunConfig::preset("v32")?.model;
    let (kv, rope, dim) = (
        m.kv_lora_rank as usize,
        m.qk_rope_head_dim as usize,
        m.index_head_dim as usize,
    );
    let rows = 4096;
    let mut rng = Rng::new(6);
    for (what, kv, rope) in [("latent row", kv, rope), ("indexer key", dim, 0)] {
        // values of several magnitudes, as a cache holds
        let x: Vec<f32> = (0..rows * (kv + rope))
            .map(|i| rng.range(-1.0, 1.0) * 2f32.powi((i / (kv + rope)) as i32 % 7 - 3))
            .collect();
        let shape = match rope {
            0 => Fp8RowShape::key(kv as u32),
            _ => Fp8RowShape::latent(kv as u32, rope as u32),
        };
        let kernel = Fp8Quant::new(&ctx, &shape)?;
        let src = ctx.upload("values", &x)?;
        let packed = ctx.storage("packed", rows as u64 * shape.row_bytes())?;
        let back = ctx.storage("back", (x.len() * 4) as u64)?;
        let quant = kernel.bind(&ctx, &src, &packed, rows as u32)?;
        let dequant = kernel.bind_dequant(&ctx, &packed, &back, rows as u32)?;
        ctx.run_pass(None, |p| {
            quant.record(p);
            dequant.record(p);
        })?;
        let bytes: Vec<u8> = ctx.read(&packed)?;
        let want: Vec<u8> = x
            .chunks(kv + rope)
            .flat_map(|r| match rope {
                0 => pack_index_key(r, ScaleRule::Ue8m0),
                _ => pack_latent_row(&r[..kv], &r[kv..], ScaleRule::Ue8m0),
            })
            .collect();
        let same = bytes == want;
        let y: Vec<f32> = ctx.read(&back)?;
        // error against f16 storage of the same values, relative to each row's largest value
        let (mut fp8_err, mut f16_err) = (0f32, 0f32);
        let h = round_f16(&x);
        for ((r, yr), hr) in x
            .chunks(kv + rope)
            .zip(y.chunks(kv + rope))
            .zip(h.chunks(kv + rope))
        {
            let amax = r.iter().fold(0f32, |a, v| a.max(v.abs()));
            for i in 0..kv {
                fp8_err = fp8_err.max((yr[i] - r[i]).abs() / amax);
                f16_err = f16_err.max((hr[i] - r[i]).abs() / amax);
            }
        }
        println!(
            "{what}: {kv} + {rope} values in {} bytes (f16: {}); {rows} rows packed on the GPU, \
             bytes {} the CPU quantiser's; largest error of a quantised value, relative to its \
             row's largest: FP8 {fp8_err:.2e}, f16 {f16_err:.2e}",
            shape.row_bytes(),
            2 * (kv + rope),
            if same {
                "identical to"
            } else {
                "DIFFERENT from"
            },
        );
    }
    println!(
        "per token per layer: {} bytes in FP8 against {} in f16",
        ess_wgpu::reference::fp8::latent_row_bytes(kv, rope)
            + ess_wgpu::reference::fp8::index_key_bytes(dim),
        2 * (kv + rope + dim)
    );
    Ok(())
}
