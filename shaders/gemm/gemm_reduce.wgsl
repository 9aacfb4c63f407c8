// gemm_reduce.wgsl — the second step of a split-K GEMM: C (+)= the sum of the splits' partial
// products, in split order (deterministic). `partial` is [splits, batches, c_rows, c_cols] f32
// (M and N padded to whole tiles), C [batches, M, N]. A grid-stride loop over C's elements, so any size fits the grid.
// The parameters are gemm/params.wgsl's (the same uniform as the product step).

@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let count = params.batches * params.m * params.n;
    let slice = params.batches * params.c_rows * params.c_cols;   // one split's padded scratch
    for (var e = gid.x; e < count; e += nwg.x * 256u) {
        let j = e % params.n;
        let i = (e / params.n) % params.m;
        let bt = e / (params.m * params.n);
        let p = (bt * params.c_rows + i) * params.c_cols + j;
        var sum = 0.0;
        for (var s = 0u; s < params.splits; s++) { sum += partial[s * slice + p]; }
        c[e] = select(0.0, c[e], params.accumulate != 0u) + sum;
    }
}
