//! The GEMM family against `reference::gemm`, on every matrix path the adapter has (lavapipe:
//! fma; a GPU with cooperative matrices: coop and fma): skinny decode shapes, tails on every
//! dimension, batches, transposed weights, f16 and f32 operands, accumulation, outputs poisoned.

mod common;

use common::{ctx, seed};
use ess_wgpu::Dtype;
use ess_wgpu::compare::compare;
use ess_wgpu::gpu::MatrixPath;
use ess_wgpu::kernels::Gemm;
use ess_wgpu::kernels::gemm::{GemmArgs, GemmKernel, GemmShape, Layout};
use ess_wgpu::problems::{GEMM_TOL, POISON_F32};
use ess_wgpu::workload::{Rng, RowLayout, storage_bytes};
use half::f16;

fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// The GEMM of one case: logical A `[batch, m, k]` row-major, B `[batch, k, n]` stored
/// row-major or as a weight `[n, k]` (`b_transposed`).
#[allow(clippy::too_many_arguments)]
fn case_shape(
    batch: u32,
    m: u32,
    n: u32,
    k: u32,
    a_dtype: Dtype,
    b_dtype: Dtype,
    b_transposed: bool,
    accumulate: bool,
) -> GemmShape {
    let b = if b_transposed {
        Layout::transposed(b_dtype, k, n)
    } else {
        Layout::row_major(b_dtype, k, n)
    };
    GemmShape {
        m,
        n,
        k,
        batch,
        a: Layout::row_major(a_dtype, m, k),
        b,
        accumulate,
    }
}

/// One GEMM of `shape` (from [`case_shape`]) on `kernel`, against the reference.
fn check(kernel: GemmKernel, split: bool, shape: &GemmShape, b_transposed: bool, seed: u64) -> f32 {
    let ctx = ctx();
    let mut rng = Rng::new(seed);
    let &GemmShape {
        m,
        n,
        k,
        batch,
        accumulate,
        ..
    } = shape;
    let (a_dtype, b_dtype) = (shape.a.dtype, shape.b.dtype);
    let (bu, mu, nu, ku) = (batch as usize, m as usize, n as usize, k as usize);
    let a: Vec<f32> = rng.vec(bu * mu * ku);
    let b: Vec<f32> = rng.vec(bu * ku * nu);
    let c0: Vec<f32> = rng.vec(bu * mu * nu);
    // B as stored: row-major [k, n], or [n, k] (a weight [out, in])
    let b_stored: Vec<f32> = if b_transposed {
        (0..bu)
            .flat_map(|bt| {
                let b = &b;
                (0..nu).flat_map(move |j| (0..ku).map(move |kk| b[(bt * ku + kk) * nu + j]))
            })
            .collect()
    } else {
        b.clone()
    };
    let mut gemm = Gemm::with(ctx, shape, kernel).unwrap();
    if !split {
        gemm = gemm.unsplit();
    }
    // f16 or f32 operands (a row layout only matters to FP8, which no GEMM operand is)
    let bytes = |v: &[f32], dtype| storage_bytes(v, dtype, RowLayout::Key { dim: v.len() });
    let a_buf = ctx.upload("a", &bytes(&a, a_dtype)).unwrap();
    let b_buf = ctx.upload("b", &bytes(&b_stored, b_dtype)).unwrap();
    let c_buf = ctx.storage("c", (bu * mu * nu * 4) as u64).unwrap();
    if accumulate {
        ctx.write(&c_buf, 0, bytemuck::cast_slice(&c0));
    } else {
        ctx.fill(&c_buf, POISON_F32);
    }
    let d = gemm
        .bind(
            ctx,
            &GemmArgs {
                a: &a_buf,
                b: &b_buf,
                c: &c_buf,
            },
        )
        .unwrap();
    ctx.run_pass(None, |p| d.record(p)).unwrap();
    let got: Vec<f32> = ctx.read(&c_buf).unwrap();
    let ra: Vec<f32> = a.iter().map(|&x| round_f16(x)).collect();
    let rb: Vec<f32> = b.iter().map(|&x| round_f16(x)).collect();
    let want = ess_wgpu::reference::gemm(&ra, &rb, &c0, bu, mu, nu, ku, accumulate);
    let (atol, rtol) = GEMM_TOL;
    let what = format!(
        "{} (splits {}) gemm {batch}×{m}×{n}×{k} A {a_dtype} B {b_dtype}{} acc {accumulate}",
        kernel.name(),
        gemm.splits,
        if b_transposed { "ᵀ" } else { "" }
    );
    compare(&what, &got, &want, atol, rtol).unwrap_or_else(|e| panic!("seed {seed}: {e}"))
}

#[test]
fn gemm_matches_reference_on_every_path() {
    let ctx = ctx();
    let mut kernels = vec![GemmKernel::Fma];
    if ctx.matrix == MatrixPath::Coop {
        kernels.extend([GemmKernel::Coop, GemmKernel::CoopF16]);
    }
    use Dtype::{F16, F32};
    // (batch, m, n, k, A dtype, B dtype, B transposed, accumulate)
    let cases = [
        (1, 1, 129, 70, F16, F32, true, false), // a decode row against a weight [out, in]
        (3, 67, 45, 33, F32, F16, false, true), // tails everywhere, batches, accumulate
        (1, 130, 7, 300, F16, F16, true, false), // long K, narrow N
        (2, 64, 64, 64, F32, F32, false, false), // whole tiles
        (1, 5, 300, 1000, F16, F16, true, true), // skinny M, long K
        // shapes for the coop-f16 kernel (whole quads of 8 f16), tails past its 128 × 256 tile
        (2, 75, 300, 264, F16, F16, true, true), // batches, accumulate, B [N, K]
        (1, 130, 264, 40, F16, F16, false, false), // B [K, N], K not a multiple of 32
        (1, 200, 600, 1000, F16, F16, true, false), // tails on M, N and K
        (1, 1, 520, 8, F16, F16, true, false),   // one row, one quad of K
    ];
    for kernel in kernels {
        for (i, &(batch, m, n, k, ad, bd, bt, acc)) in cases.iter().enumerate() {
            let shape = case_shape(batch, m, n, k, ad, bd, bt, acc);
            if kernel == GemmKernel::CoopF16 && !shape.fits_coop_f16() {
                continue;
            }
            // the coop-f16 kernel splits K on these small grids: also run it whole
            let splits: &[bool] = match kernel {
                GemmKernel::CoopF16 => &[true, false],
                _ => &[true],
            };
            for &split in splits {
                let s = seed(900 + i as u64);
                let err = check(kernel, split, &shape, bt, s);
                eprintln!(
                    "{} gemm case {i} split {split}: max err {err:e}",
                    kernel.name()
                );
            }
        }
    }
}

#[test]
fn gemm_shapes_are_checked() {
    let ctx = ctx();
    let l = Layout::row_major(Dtype::F16, 4, 4);
    let bad = GemmShape {
        m: 0,
        n: 4,
        k: 4,
        batch: 1,
        a: l,
        b: l,
        accumulate: false,
    };
    let e = Gemm::new(ctx, &bad).unwrap_err().to_string();
    assert!(e.contains("gemm m = 0"), "{e}");
    // the coop-f16 kernel takes only f16 operands on quads of 8: K = 7 does not fit
    let odd = GemmShape {
        m: 4,
        n: 8,
        k: 7,
        a: Layout::row_major(Dtype::F16, 4, 7),
        b: Layout::transposed(Dtype::F16, 7, 8),
        ..bad
    };
    assert!(!odd.fits_coop_f16());
    assert!(
        GemmShape {
            k: 8,
            a: Layout::row_major(Dtype::F16, 4, 8),
            b: Layout::transposed(Dtype::F16, 8, 8),
            ..odd
        }
        .fits_coop_f16()
    );
    let e = Gemm::with(ctx, &odd, GemmKernel::CoopF16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("quads of 8"), "{e}");
    if ctx.matrix == MatrixPath::Fma {
        let ok = GemmShape { m: 4, ..bad };
        let e = Gemm::on(ctx, &ok, MatrixPath::Coop)
            .unwrap_err()
            .to_string();
        assert!(e.contains("coop"), "{e}");
    }
}
