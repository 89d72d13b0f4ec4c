//! `strategy: hash` — weighted rendezvous hashing behind a lookup table.
//!
//! The function (pinned by golden vectors; changing any constant here re-deals users):
//! 1. `slot = xxh3_64(normalised name) >> (64 - SLOT_BITS)`: one of 2^20 slots.
//! 2. For each backend, `h = xxh3_64_with_seed(slot as u64 little-endian,
//!    xxh3_64(backend name))` and `u = ((h >> 11) + 0.5) / 2^53`, a uniform in (0, 1).
//! 3. The slot belongs to the backend with the lowest `-ln(u) / weight` (ties: the
//!    backend whose name sorts first). This is weighted rendezvous ("highest random
//!    weight"): each backend's share is its weight's share, and adding or removing a
//!    backend moves only the slots it wins or held.
//!
//! xxh3 is a specified, platform-independent hash; `ln` comes from the `libm` crate
//! (a port of musl) rather than the platform's libm, so every process on every
//! platform computes the same bits. A decision is a hash and one table load (O(1));
//! the table caches step 3 for all backends up, and the rare slot whose owner is down
//! is recomputed over the backends that are up.

use std::num::NonZeroUsize;
use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::BackendId;

/// 2^20 slots: each slot is under a millionth of the users, so the slot grid adds
/// well under 1% of imbalance for clusters up to a few hundred backends.
pub const SLOT_BITS: u32 = 20;
pub const SLOTS: usize = 1 << SLOT_BITS;

/// The slot a normalised name falls in.
#[inline]
pub fn slot_of(normalised: &str) -> u32 {
    (xxh3_64(normalised.as_bytes()) >> (64 - SLOT_BITS)) as u32
}

#[derive(Debug, Clone)]
struct Member {
    id: BackendId,
    key: u64,
    weight: u32,
}

/// Members with one weight: within a group the largest `h` wins without any `ln`.
#[derive(Debug, Clone)]
struct Group {
    weight: f64,
    members: Vec<usize>,
}

#[derive(Clone)]
pub struct HashRing {
    members: Vec<Member>,
    groups: Vec<Group>,
    /// `table[slot]` = index into `members` of the slot's owner with every backend up.
    /// Shared between snapshots whose backends and weights are the same.
    table: Arc<[u16]>,
}

impl std::fmt::Debug for HashRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashRing")
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// One backend's place in a slot's ranking, for `--explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub id: BackendId,
    pub score: f64,
}

impl HashRing {
    /// `backends`: (id, name, weight) for every backend; names must be distinct, weights
    /// positive, and there must be at least one and at most `u16::MAX`.
    pub fn new<'a>(backends: impl IntoIterator<Item = (BackendId, &'a str, u32)>) -> HashRing {
        Self::new_reusing(backends, None)
    }

    /// Like `new`, but takes `previous`'s table when the backends (names, order and
    /// weights) are the same, so a reload that only touches other keys costs nothing.
    pub fn new_reusing<'a>(
        backends: impl IntoIterator<Item = (BackendId, &'a str, u32)>,
        previous: Option<&HashRing>,
    ) -> HashRing {
        let members: Vec<Member> = backends
            .into_iter()
            .map(|(id, name, weight)| Member {
                id,
                key: xxh3_64(name.as_bytes()),
                weight,
            })
            .collect();
        assert!(!members.is_empty() && members.len() <= u16::MAX as usize);
        let mut weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        weights.sort_unstable();
        weights.dedup();
        let groups = weights
            .into_iter()
            .map(|w| Group {
                weight: w as f64,
                members: (0..members.len())
                    .filter(|&i| members[i].weight == w)
                    .collect(),
            })
            .collect();
        let mut ring = HashRing {
            members,
            groups,
            table: Arc::new([]),
        };
        ring.table = match previous {
            Some(p) if p.same_members(&ring) => p.table.clone(),
            _ => ring.build_table().into(),
        };
        ring
    }

    fn same_members(&self, other: &HashRing) -> bool {
        self.members.len() == other.members.len()
            && self
                .members
                .iter()
                .zip(&other.members)
                .all(|(a, b)| a.id == b.id && a.key == b.key && a.weight == b.weight)
    }

    fn build_table(&self) -> Box<[u16]> {
        let mut table = vec![0u16; SLOTS].into_boxed_slice();
        let threads = std::thread::available_parallelism()
            .map(NonZeroUsize::get)
            .unwrap_or(1)
            .min(8);
        let work = self.members.len() * SLOTS;
        if threads == 1 || work < 4 * SLOTS {
            self.fill(0, &mut table);
        } else {
            let chunk = SLOTS.div_ceil(threads);
            std::thread::scope(|s| {
                for (i, part) in table.chunks_mut(chunk).enumerate() {
                    s.spawn(move || self.fill(i * chunk, part));
                }
            });
        }
        table
    }

    fn fill(&self, first_slot: usize, out: &mut [u16]) {
        for (i, entry) in out.iter_mut().enumerate() {
            let slot = (first_slot + i) as u32;
            // The ring is never empty, so a winner always exists.
            *entry = self.winner(slot, |_| true).unwrap_or(0) as u16;
        }
    }

    /// Index into `members` of the slot's winner among members for which `up` holds.
    fn winner(&self, slot: u32, up: impl Fn(usize) -> bool) -> Option<usize> {
        let input = (slot as u64).to_le_bytes();
        let mut best: Option<(f64, usize)> = None;
        for g in &self.groups {
            // Members are in name order, so `>` keeps the first name on equal hashes.
            let mut top: Option<(u64, usize)> = None;
            for &m in &g.members {
                if !up(m) {
                    continue;
                }
                let h = xxh3_64_with_seed(&input, self.members[m].key);
                if top.is_none_or(|(th, _)| h > th) {
                    top = Some((h, m));
                }
            }
            if let Some((h, m)) = top {
                let score = score(h, g.weight);
                let better = match best {
                    None => true,
                    Some((bs, bm)) => {
                        score < bs || (score == bs && self.members[m].id < self.members[bm].id)
                    }
                };
                if better {
                    best = Some((score, m));
                }
            }
        }
        best.map(|(_, m)| m)
    }

    /// The owner of `slot` when every backend is up: one table load.
    #[inline]
    pub fn owner(&self, slot: u32) -> BackendId {
        self.members[self.table[slot as usize] as usize].id
    }

    /// The owner of `slot` among the backends for which `up` holds; the next choice
    /// of the hash when the first is down. `None` when none is up.
    pub fn owner_among(&self, slot: u32, up: impl Fn(BackendId) -> bool) -> Option<BackendId> {
        let first = self.owner(slot);
        if up(first) {
            return Some(first);
        }
        self.winner(slot, |m| up(self.members[m].id))
            .map(|m| self.members[m].id)
    }

    /// Every backend's score for `slot`, best first (for `--explain`).
    pub fn ranking(&self, slot: u32) -> Vec<Ranked> {
        let input = (slot as u64).to_le_bytes();
        let mut out: Vec<Ranked> = self
            .members
            .iter()
            .map(|m| Ranked {
                id: m.id,
                score: score(xxh3_64_with_seed(&input, m.key), m.weight as f64),
            })
            .collect();
        out.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.id.cmp(&b.id)));
        out
    }
}

/// `-ln(u) / weight` with `u` uniform in (0, 1) from the top 53 bits of `h`: an
/// exponential variable with rate `weight`; the lowest one in a slot wins.
#[inline]
fn score(h: u64, weight: f64) -> f64 {
    let u = ((h >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -libm::log(u) / weight
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &[(&'static str, u32)]) -> HashRing {
        HashRing::new(spec.iter().enumerate().map(|(i, (n, w))| (i, *n, *w)))
    }

    #[test]
    fn table_agrees_with_the_function() {
        let r = ring(&[("a", 1), ("b", 2), ("c", 1), ("d", 5)]);
        for slot in (0..SLOTS as u32).step_by(997) {
            let best = r.ranking(slot)[0].id;
            assert_eq!(r.owner(slot), best, "slot {slot}");
        }
    }

    #[test]
    fn fallback_is_the_next_choice() {
        let r = ring(&[("a", 1), ("b", 1), ("c", 1)]);
        for slot in (0..SLOTS as u32).step_by(7919) {
            let rank = r.ranking(slot);
            let down = rank[0].id;
            assert_eq!(r.owner_among(slot, |id| id != down), Some(rank[1].id));
            assert_eq!(r.owner_among(slot, |_| false), None);
        }
    }

    #[test]
    fn reuse_only_when_members_match() {
        let a = ring(&[("a", 1), ("b", 2)]);
        let same = HashRing::new_reusing([(0, "a", 1), (1, "b", 2)], Some(&a));
        assert!(Arc::ptr_eq(&a.table, &same.table));
        let heavier = HashRing::new_reusing([(0, "a", 1), (1, "b", 3)], Some(&a));
        assert!(!Arc::ptr_eq(&a.table, &heavier.table));
        let renamed = HashRing::new_reusing([(0, "a", 1), (1, "c", 2)], Some(&a));
        assert!(!Arc::ptr_eq(&a.table, &renamed.table));
    }

    #[test]
    fn single_backend_owns_everything() {
        let r = ring(&[("only", 3)]);
        assert!((0..SLOTS as u32).step_by(101).all(|s| r.owner(s) == 0));
    }
}
