//! The blocks of the outbox that delivery holds in memory: read in key
//! order (requeued blocks first, then the journal's), at most
//! `events_max` events held at a time (plus one block read past it: a
//! block is read whole), in at most `events_max` blocks. An event leaves
//! memory as soon as it is accepted; a dead letter waits in its block
//! until the block is settled in the store, and counts as held until then.
//! A block keeps only its open events (a map by index), so a block held
//! back by one refused event costs that event, not the whole block.

use crate::domain::platform::PlatformEvent;
use crate::domain::time::Timestamp;
use crate::engine::delivery::DeliveryStats;
use crate::store::outbox::{decode_block, encode_dead_letter, BlockKey, DeadLetter, Settlement};
use crate::store::outbox::{OutboxLive, OutboxStore, Space};
use crate::store::StorageError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One event of the window: its block, and its place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventRef {
    pub block: BlockKey,
    pub index: u32,
}

/// A block held: its events until each is settled in memory.
struct Held {
    /// Events neither accepted nor dead-lettered yet, by index.
    open: BTreeMap<u32, PlatformEvent>,
    delivered: u64,
    dead: Vec<DeadLetter>,
}

pub struct Window {
    blocks: BTreeMap<BlockKey, Held>,
    /// The next id to read, per space.
    next_requeued: u64,
    next_journal: u64,
    /// Events held: open, or dead letters not yet settled.
    events: usize,
    events_max: usize,
    stats: Arc<DeliveryStats>,
}

impl Window {
    pub fn new(events_max: usize, stats: Arc<DeliveryStats>) -> Window {
        Window {
            blocks: BTreeMap::new(),
            next_requeued: 0,
            next_journal: 0,
            events: 0,
            events_max: events_max.max(1),
            stats,
        }
    }

    pub fn has_room(&self) -> bool {
        self.events < self.events_max && self.blocks.len() < self.events_max
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Reads blocks from `store` while there is room; answers the events
    /// read, in order.
    pub fn refill(&mut self, store: &dyn OutboxStore) -> Result<Vec<EventRef>, StorageError> {
        let mut read = Vec::new();
        for space in [Space::Requeued, Space::Journal] {
            while self.has_room() {
                let next = match space {
                    Space::Requeued => &mut self.next_requeued,
                    Space::Journal => &mut self.next_journal,
                };
                let Some((id, bytes)) = store.block_from(space, *next)? else {
                    break;
                };
                let events = decode_block(&bytes)?;
                *next = id + 1;
                let block = BlockKey { space, id };
                read.extend((0..events.len() as u32).map(|index| EventRef { block, index }));
                self.events += events.len();
                self.blocks.insert(
                    block,
                    Held {
                        open: (0..).zip(events).collect(),
                        delivered: 0,
                        dead: Vec::new(),
                    },
                );
            }
        }
        self.stats.held(self.events);
        Ok(read)
    }

    pub fn event(&self, r: EventRef) -> Option<&PlatformEvent> {
        self.blocks.get(&r.block)?.open.get(&r.index)
    }

    /// The data platform accepted the event: it leaves memory.
    pub fn accept(&mut self, r: EventRef) {
        let Some(held) = self.blocks.get_mut(&r.block) else {
            return;
        };
        if held.open.remove(&r.index).is_some() {
            held.delivered += 1;
            self.events -= 1;
            self.stats.held(self.events);
        }
    }

    /// The event becomes a dead letter (written when its block is settled).
    pub fn dead(&mut self, r: EventRef, last_error: String, refusals: u32, at: Timestamp) {
        let Some(held) = self.blocks.get_mut(&r.block) else {
            return;
        };
        if let Some(event) = held.open.remove(&r.index) {
            held.dead.push(DeadLetter {
                event,
                last_error,
                refusals,
                at,
            });
        }
    }

    /// Every block with no event left open.
    pub fn done(&self) -> Vec<BlockKey> {
        self.blocks
            .iter()
            .filter(|(_, h)| h.open.is_empty())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Every block held, whole (the file sink writes all of them at once).
    pub fn all(&self) -> Vec<BlockKey> {
        self.blocks.keys().copied().collect()
    }

    /// The unsettled events of `blocks`, in order.
    pub fn open_events<'a>(
        &'a self,
        blocks: &'a [BlockKey],
    ) -> impl Iterator<Item = &'a PlatformEvent> + 'a {
        blocks
            .iter()
            .filter_map(|k| self.blocks.get(k))
            .flat_map(|h| h.open.values())
    }

    /// The settlement of `blocks` after those `live` counts: their removal,
    /// their dead letters numbered on from the dead-lettered total, and the
    /// new totals. `extra_delivered` counts events settled by the caller
    /// rather than through [`accept`](Window::accept) (the file sink's).
    pub fn settlement(
        &self,
        blocks: &[BlockKey],
        live: &OutboxLive,
        extra_delivered: u64,
    ) -> Result<Settlement, StorageError> {
        let mut s = Settlement {
            remove: blocks.to_vec(),
            delivered: live.delivered() + extra_delivered,
            dead_lettered: live.dead_lettered(),
            ..Settlement::default()
        };
        for held in blocks.iter().filter_map(|k| self.blocks.get(k)) {
            s.delivered += held.delivered;
            for letter in &held.dead {
                s.dead.push((s.dead_lettered, encode_dead_letter(letter)?));
                s.dead_lettered += 1;
            }
        }
        Ok(s)
    }

    /// `blocks` are settled in the store: they leave memory.
    pub fn remove(&mut self, blocks: &[BlockKey]) {
        for k in blocks {
            if let Some(held) = self.blocks.remove(k) {
                self.events -= held.open.len() + held.dead.len();
            }
        }
        self.stats.held(self.events);
    }
}
