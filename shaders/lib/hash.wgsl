// lib/hash.wgsl — a 32-bit integer hash, shared by every shader that needs one.
//
// Composed in front of a kernel at compile time (`concat!(include_str!(…))` in the Rust wrapper;
// WGSL module scope ignores declaration order). Mirrored bit for bit by `reference::hash32`.

// lowbias32, by Chris Wellons: good avalanche, cheap.
fn hash(x: u32) -> u32 {
    var h = x;
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h;
}
