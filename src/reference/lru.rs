//! The exact LRU policy of one staging pool, in plain Rust. This is the oracle: the GPU resolve
//! (`shaders/resolve.wgsl`) must produce the same slot assignment, evictions and copy list.
//!
//! A pool has `P` slots. Slot `P − 1` is reserved for the sequence's newest token (whose latent
//! row is produced on the GPU this step and written straight there); slots `0 .. P − 1` hold
//! recently selected older tokens under exact LRU. One step resolves the top-k token ids of the
//! step into slot ids:
//!
//! 1. `-1` stays `-1`; the newest token maps to the reserved slot (a hit, nothing to copy).
//! 2. A token already in a slot is a **hit**: its slot is used at this step.
//! 3. The **misses**, taken in top-k order, take the victims: the slots *not used at this step*,
//!    ordered by (last use, slot index) ascending. Empty slots have last use 0, so they go first,
//!    lowest index first. The i-th miss takes the i-th victim; the victim's old token (if any)
//!    is evicted.
//! 4. Every used slot's last use becomes this step's number (steps count from 1).
//! 5. The copy list is (token, slot) for each miss, in top-k order: what must move host → device.
//!
//! `P ≥ k + 1` guarantees every step fits (at most k non-newest ids per step).

/// LRU state of one pool (one layer of one sequence).
#[derive(Clone, Debug, PartialEq)]
pub struct LruPool {
    /// `[P]` token held by each slot, -1 = empty (the reserved slot is not tracked).
    pub slot_token: Vec<i32>,
    /// `[P]` step of each slot's last use, 0 = never.
    pub slot_last: Vec<u32>,
    /// `[capacity]` slot holding each token, -1 = none.
    pub token_slot: Vec<i32>,
    /// Steps resolved so far.
    pub step: u32,
}

/// What one step resolved to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    /// `[k]` slot of each top-k entry, -1 where the id was -1.
    pub slot_ids: Vec<i32>,
    /// (token, slot) per miss, in top-k order.
    pub copies: Vec<(u32, u32)>,
    /// (token, slot) per eviction, in the order of the misses that caused them.
    pub evictions: Vec<(u32, u32)>,
    pub hits: u32,
}

impl LruPool {
    /// An empty pool of `slots` slots (≥ 2) for a sequence of up to `capacity` tokens.
    pub fn new(slots: usize, capacity: usize) -> Self {
        assert!(
            slots >= 2,
            "a pool needs the reserved slot and at least one more"
        );
        LruPool {
            slot_token: vec![-1; slots],
            slot_last: vec![0; slots],
            token_slot: vec![-1; capacity],
            step: 0,
        }
    }

    pub fn slots(&self) -> usize {
        self.slot_token.len()
    }

    pub fn reserved_slot(&self) -> usize {
        self.slots() - 1
    }

    /// Resolve one step's top-k ids; `newest` is the token in the reserved slot.
    pub fn resolve(&mut self, topk_indices: &[i32], newest: i32) -> Resolved {
        self.step += 1;
        let t = self.step;
        let reserved = self.reserved_slot();
        let mut out = Resolved {
            slot_ids: vec![-1; topk_indices.len()],
            ..Default::default()
        };
        let mut used = vec![false; self.slots()];
        let mut misses = Vec::new(); // (position in top-k, token)
        for (j, &id) in topk_indices.iter().enumerate() {
            if id < 0 {
                continue;
            }
            if id == newest {
                out.slot_ids[j] = reserved as i32;
                out.hits += 1;
                continue;
            }
            let slot = self.token_slot[id as usize];
            if slot >= 0 {
                out.slot_ids[j] = slot;
                used[slot as usize] = true;
                out.hits += 1;
            } else {
                misses.push((j, id as u32));
            }
        }
        let mut victims: Vec<usize> = (0..reserved).filter(|&s| !used[s]).collect();
        // the misses.len() smallest (last use, slot), in order: select in linear time, sort those
        if misses.len() < victims.len() {
            victims.select_nth_unstable_by_key(misses.len(), |&s| (self.slot_last[s], s));
            victims.truncate(misses.len());
        }
        victims.sort_unstable_by_key(|&s| (self.slot_last[s], s));
        assert!(
            victims.len() >= misses.len(),
            "pool of {} slots cannot take {} misses",
            self.slots(),
            misses.len()
        );
        for (&(j, token), &slot) in misses.iter().zip(&victims) {
            let old = self.slot_token[slot];
            if old >= 0 {
                self.token_slot[old as usize] = -1;
                out.evictions.push((old as u32, slot as u32));
            }
            self.slot_token[slot] = token as i32;
            self.token_slot[token as usize] = slot as i32;
            out.slot_ids[j] = slot as i32;
            out.copies.push((token, slot as u32));
            used[slot] = true;
        }
        for (s, &u) in used.iter().enumerate() {
            if u {
                self.slot_last[s] = t;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_and_lru_order() {
        // 4 slots: 0..3 regular, 3 reserved. newest = 99.
        let mut p = LruPool::new(4, 100);
        let r = p.resolve(&[10, 11, -1, 99], 99);
        assert_eq!(r.slot_ids, vec![0, 1, -1, 3]);
        assert_eq!(r.copies, vec![(10, 0), (11, 1)]);
        assert_eq!(r.hits, 1);
        let r = p.resolve(&[12, 10], 98); // 12 takes empty slot 2; 10 hits
        assert_eq!(
            (r.slot_ids.clone(), r.copies.clone()),
            (vec![2, 0], vec![(12, 2)])
        );
        // slot 1 (token 11) is now least recently used: used at step 1, others at step 2
        let r = p.resolve(&[13], 97);
        assert_eq!(
            (r.slot_ids.clone(), r.evictions.clone()),
            (vec![1], vec![(11, 1)])
        );
        assert_eq!(p.token_slot[11], -1);
        // ties in last use go to the lower slot: slots 0 and 2 both last used at step 2
        let r = p.resolve(&[14, 15, 13], 97);
        assert_eq!(r.copies, vec![(14, 0), (15, 2)]);
    }
}
