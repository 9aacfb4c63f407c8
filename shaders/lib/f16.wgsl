// lib/f16.wgsl — f16 values stored two per u32 (no SHADER_F16 needed), unpacked to f32.
//
// Composed in front of the kernels that read f16 keys or latent rows (indexer.wgsl,
// sparse_mla.wgsl). Both return two vec4 columns of a mat2x4, which the driver keeps in
// registers.

// Four words, one from each of four keys or rows, each holding that key's dims 2i and 2i+1:
// column 0 = the four keys' dim 2i, column 1 = their dim 2i + 1.
fn unpack_pairs(w: vec4<u32>) -> mat2x4<f32> {
    let a = unpack2x16float(w.x);
    let b = unpack2x16float(w.y);
    let c = unpack2x16float(w.z);
    let d = unpack2x16float(w.w);
    return mat2x4<f32>(vec4<f32>(a.x, b.x, c.x, d.x), vec4<f32>(a.y, b.y, c.y, d.y));
}

// Four consecutive words of one row: its eight consecutive dims, column 0 the first four.
fn unpack_row8(w: vec4<u32>) -> mat2x4<f32> {
    return mat2x4<f32>(
        vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
        vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)),
    );
}
