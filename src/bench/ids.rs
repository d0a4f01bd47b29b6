//! A compact log of order ids, for the paid orders a run checks afterwards.
//!
//! Each worker keeps the ids of the orders it saw paid. Kept as a `Vec`,
//! that is 8 bytes per paid order (16 with its slack) inside the process
//! whose RSS the run reports: over a long run the harness's own memory
//! grew with every order. One worker's ids mostly rise by about the number
//! of workers, so as zigzag varint deltas they take one or two bytes each.

use crate::domain::ids::OrderId;
use crate::domain::varint;

#[derive(Default)]
pub struct IdLog {
    bytes: Vec<u8>,
    last: u64,
    len: usize,
}

impl IdLog {
    pub fn push(&mut self, id: OrderId) {
        let delta = id.0.wrapping_sub(self.last) as i64;
        varint::push(&mut self.bytes, ((delta << 1) ^ (delta >> 63)) as u64);
        self.last = id.0;
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = OrderId> + '_ {
        let mut at = 0;
        let mut last = 0u64;
        std::iter::from_fn(move || {
            let zigzag = varint::read(&self.bytes, &mut at)?;
            let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
            last = last.wrapping_add(delta as u64);
            Some(OrderId(last))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_back_in_order_whatever_their_steps() {
        let ids = [1, 2, 66, 65, 0, u64::MAX, 7, u64::MAX - 1, 1 << 40, 3];
        let mut log = IdLog::default();
        for id in ids {
            log.push(OrderId(id));
        }
        assert_eq!(log.len(), ids.len());
        let back: Vec<u64> = log.iter().map(|id| id.0).collect();
        assert_eq!(back, ids);
    }

    #[test]
    fn rising_ids_take_a_byte_or_two_each() {
        let mut log = IdLog::default();
        for i in 1..=10_000u64 {
            log.push(OrderId(i * 64));
        }
        assert!(log.bytes.len() <= 2 * 10_000, "{} bytes", log.bytes.len());
        assert!(log
            .iter()
            .map(|id| id.0)
            .eq((1..=10_000u64).map(|i| i * 64)));
    }
}
