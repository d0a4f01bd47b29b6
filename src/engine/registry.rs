//! Where entity actors live: addresses by id, and the Arbiters they run on.
//!
//! Ids are dense from 1, so each kind is a list indexed by `id - 1`. The
//! directory actor is the only writer, and it only appends; every request
//! reads, without a lock (see [`Slots`]). The entries are addresses (and,
//! for products, the reference to the shelf each product's actor
//! publishes), never domain state (that stays inside the actors).

use crate::engine::campaign_actor::CampaignActor;
use crate::engine::product_actor::ProductRef;
use crate::engine::user_actor::UserActor;
use actix::{Addr, ArbiterHandle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub struct Registry {
    pub users: Slots<Addr<UserActor>>,
    pub products: Slots<ProductRef>,
    pub campaigns: Slots<Addr<CampaignActor>>,
    arbiters: Vec<ArbiterHandle>,
}

/// Entries of the first segment; segment `s` holds `FIRST << s`.
const FIRST: usize = 1024;
/// Segments: room for `FIRST * (2^SEGMENTS - 1)` entries.
const SEGMENTS: usize = 40;

/// An append-only list of entries by id that readers read without a lock.
///
/// Every request looks up one or more entries. Behind a lock each lookup
/// wrote the lock's shared counter, so the cores taking requests passed
/// its cache line back and forth on every lookup. Here an entry is set
/// once and never moves: segment `s` holds the `FIRST << s` entries after
/// the earlier segments' and is allocated at its first entry, so a lookup
/// reads the length, the segment and the entry, and writes nothing.
pub struct Slots<A> {
    segments: [OnceLock<Box<[OnceLock<A>]>>; SEGMENTS],
    /// Entries set: each is set before the length counts it.
    len: AtomicUsize,
    /// Serializes appends (the directory's), so ids stay dense.
    append: Mutex<()>,
}

/// The segment of entry `index` and its place in it.
fn locate(index: usize) -> (usize, usize) {
    let blocks = index / FIRST + 1;
    let segment = (usize::BITS - 1 - blocks.leading_zeros()) as usize;
    (segment, index - FIRST * ((1 << segment) - 1))
}

impl<A> Slots<A> {
    fn new(entries: Vec<A>) -> Self {
        let slots = Slots {
            segments: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            append: Mutex::new(()),
        };
        for (i, entry) in entries.into_iter().enumerate() {
            slots.push(i as u64 + 1, entry);
        }
        slots
    }

    fn entry(&self, index: usize) -> Option<&A> {
        if index >= self.len.load(Ordering::Acquire) {
            return None;
        }
        let (segment, at) = locate(index);
        self.segments[segment].get()?.get(at)?.get()
    }

    /// `f` of the entry of `id`, without cloning it.
    pub fn with<R>(&self, id: u64, f: impl FnOnce(&A) -> R) -> Option<R> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.entry(index).map(f)
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers the entity of id `len + 1`.
    pub fn push(&self, id: u64, entry: A) {
        let _one_at_a_time = self.append.lock().unwrap_or_else(|e| e.into_inner());
        let index = self.len.load(Ordering::Acquire);
        assert_eq!(index as u64 + 1, id, "entities are registered in id order");
        let (segment, at) = locate(index);
        assert!(segment < SEGMENTS, "at most {SEGMENTS} segments of entries");
        let entries = self.segments[segment]
            .get_or_init(|| (0..FIRST << segment).map(|_| OnceLock::new()).collect());
        assert!(entries[at].set(entry).is_ok(), "an entry is set once");
        self.len.store(index + 1, Ordering::Release);
    }
}

impl<A: Clone> Slots<A> {
    pub fn get(&self, id: u64) -> Option<A> {
        self.with(id, A::clone)
    }

    /// Entries of ids `first..first + count` that exist.
    pub fn range(&self, first: u64, count: usize) -> Vec<(u64, A)> {
        let start = usize::try_from(first.max(1) - 1).unwrap_or(usize::MAX);
        let end = start.saturating_add(count).min(self.len());
        (start..end)
            .filter_map(|i| self.entry(i).map(|a| (i as u64 + 1, a.clone())))
            .collect()
    }
}

impl Registry {
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        users: Vec<Addr<UserActor>>,
        products: Vec<ProductRef>,
        campaigns: Vec<Addr<CampaignActor>>,
    ) -> Registry {
        Registry {
            users: Slots::new(users),
            products: Slots::new(products),
            campaigns: Slots::new(campaigns),
            arbiters,
        }
    }

    /// The Arbiter an entity of this id runs on: spread by id.
    pub fn arbiter_for(&self, id: u64) -> &ArbiterHandle {
        &self.arbiters[(id as usize) % self.arbiters.len()]
    }

    pub fn arbiters(&self) -> &[ArbiterHandle] {
        &self.arbiters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_tile_the_indices_without_gaps_or_overlap() {
        // proves each index has one place, and consecutive indices fill each segment in order
        let mut expected = (0, 0);
        for index in 0..FIRST * 15 + 7 {
            assert_eq!(locate(index), expected, "index {index}");
            expected.1 += 1;
            if expected.1 == FIRST << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
        let capacity = FIRST * ((1 << SEGMENTS) - 1);
        assert_eq!(
            locate(capacity - 1),
            (SEGMENTS - 1, (FIRST << (SEGMENTS - 1)) - 1)
        );
        assert_eq!(locate(capacity).0, SEGMENTS);
    }

    #[test]
    fn entries_are_found_by_id_across_segments_and_nothing_else_is() {
        // proves get, with, range and len over ids spanning three segments, and misses for 0 and past the end
        let n = FIRST * 3 + 5;
        let slots = Slots::new((1..=n as u64).map(|id| id * 10).collect());
        assert_eq!(slots.len(), n);
        for id in 1..=n as u64 {
            assert_eq!(slots.get(id), Some(id * 10));
        }
        for id in [0, n as u64 + 1, u64::MAX] {
            assert_eq!(slots.get(id), None, "{id}");
        }
        assert_eq!(
            slots.with(FIRST as u64 + 1, |v| *v + 1),
            Some(FIRST as u64 * 10 + 11)
        );
        let page = slots.range(FIRST as u64 - 1, 4);
        let ids: Vec<u64> = page.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            ids,
            [
                FIRST as u64 - 1,
                FIRST as u64,
                FIRST as u64 + 1,
                FIRST as u64 + 2
            ]
        );
        assert!(page.iter().all(|(id, v)| *v == id * 10));
        assert_eq!(slots.range(n as u64, 10).len(), 1);
        assert!(slots.range(n as u64 + 1, 10).is_empty());
        assert_eq!(slots.range(0, 2).len(), 2, "a first id of 0 reads from 1");
        assert!(Slots::<u64>::new(Vec::new()).is_empty());
    }

    #[test]
    #[should_panic(expected = "registered in id order")]
    fn an_id_out_of_order_is_refused() {
        let slots = Slots::new(vec![1u64]);
        slots.push(3, 3);
    }

    #[test]
    fn readers_racing_an_appender_see_every_entry_they_count() {
        // proves a reader never sees a length whose entries are not set, while another thread appends across segments
        let slots = std::sync::Arc::new(Slots::new(Vec::<u64>::new()));
        let n = FIRST * 7;
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let slots = slots.clone();
                std::thread::spawn(move || {
                    let mut seen = 0;
                    while seen < n {
                        seen = slots.len();
                        if seen > 0 {
                            assert_eq!(slots.get(seen as u64), Some(seen as u64));
                            assert_eq!(slots.get(1), Some(1));
                        }
                    }
                })
            })
            .collect();
        for id in 1..=n as u64 {
            slots.push(id, id);
        }
        for r in readers {
            r.join().unwrap();
        }
    }
}
