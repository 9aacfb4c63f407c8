// gemm_fma.wgsl — the GEMM on the f32 FMA units (adapters without cooperative matrices).
//
// Mapping: workgroup (x, y, z) = (64 columns of C, 64 rows, batch z), 256 threads as 16 × 16;
// thread (ty, tx) owns rows ty + 16r and columns tx + 16c (r, c < 4) of the tile: 16 f32
// accumulators. K is streamed 16 at a time through workgroup memory, zero-padded past M, N, K,
// so any shape works (tails included). Parameters and loads: gemm/common.wgsl.

const T: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> a_s: array<f32, 1024>;   // [TK][T]: A tile, k-major
var<workgroup> b_s: array<f32, 1024>;   // [TK][T]: B tile

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bt = wg.z;
    let m0 = wg.y * T;
    let n0 = wg.x * T;
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        // each thread loads 4 elements of each tile
        for (var e = lid; e < TK * T; e += 256u) {
            let kk = e / T;
            let x = e % T;
            a_s[e] = load_a(bt, m0 + x, k0 + kk);
            b_s[e] = load_b(bt, k0 + kk, n0 + x);
        }
        workgroupBarrier();   // tiles loaded before anyone multiplies
        for (var kk = 0u; kk < TK; kk++) {
            for (var r = 0u; r < 4u; r++) {
                let av = a_s[kk * T + ty + 16u * r];
                for (var cc = 0u; cc < 4u; cc++) {
                    acc[r * 4u + cc] = fma(av, b_s[kk * T + tx + 16u * cc], acc[r * 4u + cc]);
                }
            }
        }
        workgroupBarrier();   // everyone done with the tiles before the next load
    }
    for (var r = 0u; r < 4u; r++) {
        for (var cc = 0u; cc < 4u; cc++) {
            let i = m0 + ty + 16u * r;
            let j = n0 + tx + 16u * cc;
            if (i < params.m && j < params.n) { store_c(bt, i, j, acc[r * 4u + cc]); }
        }
    }
}
