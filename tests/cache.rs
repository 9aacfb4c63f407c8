//! The offloaded cache against its plain-Rust definition: the GPU resolve must equal the LRU
//! oracle exactly (slot ids, copy list, counts, and the tables themselves) on randomized traces.

mod common;

use common::{ctx, seed};
use ess_wgpu::kernels::Resolve;
use ess_wgpu::kernels::resolve::{ResolveArgs, ResolveShape};
use ess_wgpu::problems::{POISON_U32, seq_table};
use ess_wgpu::reference::LruPool;
use ess_wgpu::reference::SeqRows;
use ess_wgpu::workload::{Rng, next_selection};

struct SelectionTrace {
    k: usize,
    slots: usize,
    capacity: usize,
    lens: Vec<usize>,
    steps: usize,
    overlap: f32,
    invalid: f32,
}

/// Run `t.steps` decode steps of resolve on the GPU and in the oracle; compare everything.
fn check_trace(t: &SelectionTrace, seed: u64) {
    let ctx = ctx();
    let (k, p, cap, b) = (t.k, t.slots, t.capacity, t.lens.len());
    let resolve = Resolve::new(
        ctx,
        &ResolveShape {
            k: k as u32,
            slots: p as u32,
            capacity: cap as u32,
        },
    )
    .unwrap();
    let init_state: Vec<[i32; 2]> = vec![[-1, 0]; b * p];
    let slot_state = ctx.upload("slot_state", &init_state).unwrap();
    let token_slot = ctx.upload("token_slot", &vec![-1i32; b * cap]).unwrap();
    let slot_ids = ctx.storage("slot_ids", (b * k * 4) as u64).unwrap();
    let copies = ctx.storage("copies", (b * k * 8) as u64).unwrap();
    let counts = ctx.storage("counts", (b * 8) as u64).unwrap();
    let mut oracle: Vec<LruPool> = (0..b).map(|_| LruPool::new(p, cap)).collect();
    let mut rng = Rng::new(seed);
    let mut lens = t.lens.clone();
    let mut prev: Vec<Vec<i32>> = vec![Vec::new(); b];
    for step in 1..=t.steps {
        let mut topk = vec![-1i32; b * k];
        for s in 0..b {
            lens[s] = (lens[s] + 1).min(cap); // decode appends one token per step
            let mut sel = next_selection(&mut rng, &prev[s], lens[s], k, t.overlap);
            if rng.uniform() < 0.5 {
                sel[0] = lens[s] as i32 - 1; // the newest token is often selected
                sel.sort_unstable();
                sel.dedup();
            }
            prev[s] = sel.clone();
            for (j, &id) in sel.iter().enumerate() {
                topk[s * k + j] = if rng.uniform() < t.invalid { -1 } else { id };
            }
            for j in (1..k).rev() {
                topk.swap(s * k + j, s * k + rng.below(j as u64 + 1) as usize);
            }
        }
        let seqs: Vec<SeqRows> = lens
            .iter()
            .map(|&len| SeqRows { first_row: 0, len })
            .collect();
        let topk_buf = ctx.upload("topk", &topk).unwrap();
        let seq = ctx.upload("seq", &seq_table(&seqs)).unwrap();
        for buf in [&slot_ids, &copies, &counts] {
            ctx.fill(buf, POISON_U32);
        }
        let clock = Resolve::clock(ctx, step as u32);
        let args = ResolveArgs {
            clock: &clock,
            topk_indices: &topk_buf,
            seq: &seq,
            slot_state: &slot_state,
            token_slot: &token_slot,
            slot_ids: &slot_ids,
            copies: &copies,
            counts: &counts,
            b0: 0,
            batch: b as u32,
        };
        ctx.run_pass(None, |pass| resolve.bind(ctx, &args).record(pass))
            .unwrap();
        let got_ids: Vec<i32> = ctx.read(&slot_ids).unwrap();
        let got_copies: Vec<[u32; 2]> = ctx.read(&copies).unwrap();
        let got_counts: Vec<[u32; 2]> = ctx.read(&counts).unwrap();
        for s in 0..b {
            let want = oracle[s].resolve(&topk[s * k..][..k], lens[s] as i32 - 1);
            let ctxt = format!(
                "step {step}, sequence {s}, P {p}, k {k}, overlap {}",
                t.overlap
            );
            assert_eq!(
                &got_ids[s * k..][..k],
                &want.slot_ids[..],
                "slot ids differ: {ctxt}"
            );
            let m = want.copies.len();
            assert_eq!(
                got_counts[s],
                [m as u32, want.hits],
                "counts differ: {ctxt}"
            );
            let gc: Vec<(u32, u32)> = got_copies[s * k..][..m]
                .iter()
                .map(|c| (c[0], c[1]))
                .collect();
            assert_eq!(gc, want.copies, "copy list differs: {ctxt}");
        }
    }
    let got_state: Vec<[i32; 2]> = ctx.read(&slot_state).unwrap();
    let got_token_slot: Vec<i32> = ctx.read(&token_slot).unwrap();
    for s in 0..b {
        let o = &oracle[s];
        let want: Vec<[i32; 2]> = o
            .slot_token
            .iter()
            .zip(&o.slot_last)
            .map(|(&tk, &l)| [tk, l as i32])
            .collect();
        // the reserved slot is not tracked by resolve
        assert_eq!(
            &got_state[s * p..][..p - 1],
            &want[..p - 1],
            "slot table of sequence {s}"
        );
        assert_eq!(
            &got_token_slot[s * cap..][..cap],
            &o.token_slot[..],
            "token table of sequence {s}"
        );
    }
}

#[test]
fn gpu_resolve_equals_lru_oracle() {
    let mut i = 0;
    for &(k, mult) in &[(16usize, 1.0f32), (16, 1.5), (37, 2.0), (64, 4.0)] {
        for &overlap in &[0.0f32, 0.35, 0.8, 1.0] {
            let slots = ((k as f32 * mult) as usize).max(k + 1);
            let t = SelectionTrace {
                k,
                slots,
                capacity: 700,
                lens: vec![50, 300, 5, 613],
                steps: 12,
                overlap,
                invalid: 0.05,
            };
            check_trace(&t, seed(i));
            i += 1;
        }
    }
}

#[test]
fn gpu_resolve_equals_oracle_at_v32_top_k() {
    // k = 2048 with a pool of exactly k + 1 slots (maximum thrashing) and of 2k
    for (i, slots) in [2049usize, 4096].into_iter().enumerate() {
        let t = SelectionTrace {
            k: 2048,
            slots,
            capacity: 9000,
            lens: vec![8000, 2500],
            steps: 5,
            overlap: 0.6,
            invalid: 0.0,
        };
        check_trace(&t, seed(100 + i as u64));
    }
}

#[test]
fn pools_smaller_than_k_plus_one_are_errors() {
    let shape = |slots| ResolveShape {
        k: 64,
        slots,
        capacity: 100,
    };
    let e = Resolve::new(ctx(), &shape(64)).unwrap_err().to_string();
    assert!(e.contains("pool slots = 64") && e.contains("65 ..="), "{e}");
    assert!(Resolve::new(ctx(), &shape(65)).is_ok());
}

mod offload {
    use super::{ctx, seed};
    use ess_wgpu::cache::{CacheShape, NewRows, OffloadCache, PoolSize, TransferPath};
    use ess_wgpu::problems::seq_table;
    use ess_wgpu::reference::SeqRows;
    use ess_wgpu::workload::{Rng, next_selection};

    /// A decode-like run: prefill rows into the host store, then each step appends a new row and
    /// fetches a top-k selection with the given overlap. Returns the cache and every row written.
    fn run(
        path: TransferPath,
        shape: &CacheShape,
        lens0: &[usize],
        steps: usize,
        overlap: f32,
        seed: u64,
    ) -> (OffloadCache, Vec<Vec<Vec<u8>>>, Vec<usize>) {
        let ctx = ctx();
        let mut cache = OffloadCache::new(ctx, shape, path).unwrap();
        let mut rng = Rng::new(seed);
        let rb = shape.row_bytes as usize;
        let (b, k) = (shape.batch as usize, shape.topk as usize);
        let random_row =
            |rng: &mut Rng| -> Vec<u8> { (0..rb).map(|_| rng.below(256) as u8).collect() };
        // rows[layer][seq] = every row written so far, token order
        let mut rows: Vec<Vec<Vec<u8>>> = vec![vec![Vec::new(); b]; shape.layers as usize];
        let mut lens = lens0.to_vec();
        for l in 0..shape.layers {
            for s in 0..b {
                let prefill: Vec<u8> = (0..lens[s]).flat_map(|_| random_row(&mut rng)).collect();
                cache.host.write(ctx, l, s as u32, 0, &prefill).unwrap();
                rows[l as usize][s] = prefill;
            }
        }
        let mut prev: Vec<Vec<Vec<i32>>> = vec![vec![Vec::new(); b]; shape.layers as usize];
        for _ in 0..steps {
            for len in lens.iter_mut() {
                *len += 1;
            }
            let seqs: Vec<SeqRows> = lens
                .iter()
                .map(|&len| SeqRows { first_row: 0, len })
                .collect();
            let seq = ctx.upload("seq", &seq_table(&seqs)).unwrap();
            let newest: Vec<u32> = lens.iter().map(|&l| l as u32 - 1).collect();
            for l in 0..shape.layers {
                let new_rows: Vec<u8> = (0..b).flat_map(|_| random_row(&mut rng)).collect();
                for s in 0..b {
                    rows[l as usize][s].extend_from_slice(&new_rows[s * rb..][..rb]);
                }
                let new_buf = ctx.upload("new rows", &new_rows).unwrap();
                let mut topk = vec![-1i32; b * k];
                for s in 0..b {
                    let sel = next_selection(&mut rng, &prev[l as usize][s], lens[s], k, overlap);
                    topk[s * k..][..sel.len()].copy_from_slice(&sel);
                    prev[l as usize][s] = sel;
                }
                let topk_buf = ctx.upload("topk", &topk).unwrap();
                let new = NewRows {
                    rows: &new_buf,
                    seq: &seq,
                    newest: &newest,
                };
                cache.write_back(ctx, l, &new).unwrap();
                cache.fetch(ctx, l, &topk_buf, &seq).unwrap();
            }
        }
        (cache, rows, lens)
    }

    fn shape(row_bytes: u64) -> CacheShape {
        CacheShape {
            layers: 2,
            batch: 3,
            capacity: 400,
            slots: 40,
            row_bytes,
            topk: 24,
        }
    }

    /// After any sequence of steps every pool slot holds exactly the host row its table names,
    /// and the reserved slot holds the newest row: byte for byte.
    #[test]
    fn pool_slots_hold_the_rows_their_tables_name() {
        let ctx = ctx();
        for (i, path) in [
            TransferPath::ZeroCopy,
            TransferPath::Staging,
            TransferPath::PerRow,
        ]
        .into_iter()
        .enumerate()
        {
            let sh = shape(if i == 1 { 1152 } else { 656 });
            let (cache, rows, lens) = run(path, &sh, &[100, 7, 250], 9, 0.6, seed(200 + i as u64));
            let rb = sh.row_bytes as usize;
            for l in 0..sh.layers {
                let pool: Vec<u8> = ctx.read(cache.pool(l)).unwrap();
                for s in 0..sh.batch as usize {
                    let (state, token_slot) = cache.tables(ctx, l, s as u32).unwrap();
                    let slot_row = |slot: usize| &pool[(s * sh.slots as usize + slot) * rb..][..rb];
                    let mut held = 0;
                    for (slot, st) in state[..sh.slots as usize - 1].iter().enumerate() {
                        if st[0] >= 0 {
                            let t = st[0] as usize;
                            assert_eq!(token_slot[t], slot as i32, "{path}: tables disagree");
                            assert_eq!(
                                slot_row(slot),
                                &rows[l as usize][s][t * rb..][..rb],
                                "{path}: layer {l} seq {s} slot {slot} token {t}"
                            );
                            held += 1;
                        }
                    }
                    assert!(held > 0, "{path}: nothing was fetched");
                    let newest = lens[s] - 1;
                    assert_eq!(
                        slot_row(sh.slots as usize - 1),
                        &rows[l as usize][s][newest * rb..][..rb],
                        "{path}: reserved slot"
                    );
                }
            }
            let c = cache.counters[0];
            assert!(c.misses > 0 && c.hits > 0, "{path}: {c:?}");
            eprintln!(
                "{path}: {} | layer 0: {c:?}, hit rate {:.2}",
                cache.host.describe(),
                c.hit_rate()
            );
        }
    }

    /// The three transfer paths leave identical pools.
    #[test]
    fn transfer_paths_leave_identical_pools() {
        let ctx = ctx();
        let sh = shape(656);
        let s = seed(300);
        let pools: Vec<Vec<Vec<u8>>> = [
            TransferPath::ZeroCopy,
            TransferPath::Staging,
            TransferPath::PerRow,
        ]
        .into_iter()
        .map(|p| {
            let (cache, _, _) = run(p, &sh, &[60, 200, 33], 7, 0.5, s);
            // the path asked for is the path that ran (lavapipe offers host-RAM buffers)
            assert_eq!(cache.path, p, "{:?}", cache.fallback);
            let u = cache.path_use;
            let ran = match p {
                TransferPath::ZeroCopy => (u.gathers > 0, u.scatters, u.row_copies),
                TransferPath::Staging => (u.gathers > 0, u.scatters.min(1), u.row_copies),
                TransferPath::PerRow => (u.gathers > 0, u.scatters, u.row_copies.min(1)),
            };
            let want = match p {
                TransferPath::ZeroCopy => (true, 0, 0),
                TransferPath::Staging => (false, 1, 0),
                TransferPath::PerRow => (false, 0, 1),
            };
            assert_eq!(ran, want, "{p}: {u:?}");
            (0..sh.layers)
                .map(|l| ctx.read(cache.pool(l)).unwrap())
                .collect()
        })
        .collect();
        assert!(pools[0] == pools[1], "zero-copy and staging pools differ");
        assert!(pools[0] == pools[2], "zero-copy and per-row pools differ");
    }

    /// Nothing is lost: the host store holds every token ever written, prefill and decode.
    #[test]
    fn host_store_holds_every_token_written() {
        let ctx = ctx();
        for path in [TransferPath::ZeroCopy, TransferPath::Staging] {
            let sh = shape(1152);
            let (cache, rows, lens) = run(path, &sh, &[10, 390 - 12, 0], 11, 0.3, seed(400));
            for l in 0..sh.layers {
                for s in 0..sh.batch {
                    let got = cache
                        .host
                        .read(ctx, l, s, 0, lens[s as usize] as u32)
                        .unwrap();
                    assert!(
                        got == rows[l as usize][s as usize],
                        "{path}: host store of layer {l} seq {s} differs"
                    );
                }
            }
            assert_eq!(cache.counters[0].rows_d2h, 11 * 3);
        }
    }

    #[test]
    fn pool_sizes_are_checked() {
        assert_eq!(PoolSize::Ratio(0.2).slots(32768, 2048).unwrap(), 6554);
        assert_eq!(PoolSize::Slots(2049).slots(32768, 2048).unwrap(), 2049);
        let e = PoolSize::Ratio(0.05)
            .slots(32768, 2048)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1639 (ratio 0.05 × context 32768)") && e.contains("2049 ..="),
            "{e}"
        );
        let e = PoolSize::Slots(2048).slots(32768, 2048).unwrap_err();
        assert!(
            e.to_string()
                .contains("pool slots = 2048; allowed: 2049 ..= 16384")
        );
        let e = PoolSize::Ratio(1.5).slots(100, 10).unwrap_err();
        assert!(
            e.to_string()
                .contains("sparse_memory_ratio = 1.5; allowed: (0, 1]")
        );
        let bad = CacheShape {
            layers: 1,
            batch: 1,
            capacity: 10,
            slots: 8,
            row_bytes: 650,
            topk: 4,
        };
        let e = OffloadCache::new(ctx(), &bad, TransferPath::ZeroCopy)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("row bytes = 650; allowed: a positive multiple of 16"),
            "{e}"
        );
    }
}

mod warmup {
    use super::{ctx, seed};
    use ess_wgpu::cache::{CacheShape, OffloadCache, TransferPath};
    use ess_wgpu::problems::seq_table;
    use ess_wgpu::reference::SeqRows;
    use ess_wgpu::workload::{Rng, next_selection};

    /// LRU warm-up seeds the pool from the last prefill windows' top-k: the first decode step,
    /// whose selection overlaps the last window, misses far less than on a cold pool; and the
    /// warm-up's own traffic is not counted as decode traffic.
    #[test]
    fn warm_up_cuts_first_step_misses() {
        let ctx = ctx();
        let shape = CacheShape {
            layers: 1,
            batch: 2,
            capacity: 600,
            slots: 96,
            row_bytes: 656,
            topk: 48,
        };
        let mut rng = Rng::new(seed(500));
        let lens = [500usize, 420];
        let (b, k) = (2usize, 48usize);
        // three prefill windows with 70% step-to-step overlap, then a decode step with 70% overlap
        let mut prev = vec![Vec::new(); b];
        let mut windows = Vec::new();
        for _ in 0..4 {
            let mut w = vec![-1i32; b * k];
            for s in 0..b {
                let sel = next_selection(&mut rng, &prev[s], lens[s] - 1, k, 0.7);
                w[s * k..][..sel.len()].copy_from_slice(&sel);
                prev[s] = sel;
            }
            windows.push(w);
        }
        let decode = windows.pop().unwrap();
        let seqs: Vec<SeqRows> = lens
            .iter()
            .map(|&len| SeqRows { first_row: 0, len })
            .collect();
        let seq = ctx.upload("seq", &seq_table(&seqs)).unwrap();
        let first_step_misses = |warm: bool| {
            let mut cache = OffloadCache::new(ctx, &shape, TransferPath::ZeroCopy).unwrap();
            if warm {
                let bufs: Vec<_> = windows
                    .iter()
                    .map(|w| ctx.upload("window", w).unwrap())
                    .collect();
                let c = pollster::block_on(cache.warm(ctx, 0, &bufs, &seq)).unwrap();
                assert!(c.misses > 0);
                assert_eq!(
                    cache.counters[0].misses, 0,
                    "warm-up traffic counted as decode traffic"
                );
            }
            let topk = ctx.upload("topk", &decode).unwrap();
            cache.fetch(ctx, 0, &topk, &seq).unwrap().misses
        };
        let (cold, warm) = (first_step_misses(false), first_step_misses(true));
        eprintln!("first decode step misses: cold {cold}, warmed {warm}");
        assert_eq!(cold, (b * k) as u64);
        assert!(warm * 2 < cold, "warm-up did not help: {warm} vs {cold}");
    }
}

/// The LRU oracle at scale: 10,000 independent random traces (each a sequence of its own batch
/// row: its own context, selections and tables), 8 decode steps each, over 20 shapes of pool
/// (k from 1 to 97, pools from k + 1 to 4k, overlaps 0–100%, invalid ids 0–30%, ragged
/// contexts from empty). Every slot id, copy list, count and table entry must equal the oracle.
#[test]
fn gpu_resolve_equals_the_oracle_on_10000_traces() {
    let mut rng = Rng::new(seed(777));
    let shapes = 20;
    let per_shape = 500;
    for i in 0..shapes {
        let k = 1 + rng.below(97) as usize;
        let slots = (k + 1 + rng.below(3 * k as u64 + 1) as usize).min(16384);
        let capacity = k + 8 + rng.below(400) as usize;
        let lens: Vec<usize> = (0..per_shape)
            .map(|_| rng.below(capacity as u64 - 8) as usize)
            .collect();
        let t = SelectionTrace {
            k,
            slots,
            capacity,
            lens,
            steps: 8,
            overlap: rng.uniform(),
            invalid: 0.3 * rng.uniform(),
        };
        check_trace(&t, seed(1000 + i));
    }
    eprintln!(
        "GPU resolve equals the LRU oracle on {} traces",
        shapes * per_shape
    );
}
