//! Applying durable records in journal order, inside one actor.
//!
//! An actor decides synchronously, places its holds, and submits the record
//! in the same handler, so its submissions reach the journal in the order it
//! decided them. Acknowledgements come back as futures that actix may poll
//! in any order; this queue releases them in submission order, so the actor
//! applies its events exactly as recovery will replay them (history lines,
//! cart lines and balances come out identical after a restart).

use crate::store::writer::Ack;
use std::collections::VecDeque;

pub struct CommitQueue<Op> {
    next_ticket: u64,
    entries: VecDeque<(u64, Op, Option<Ack>)>,
}

impl<Op> Default for CommitQueue<Op> {
    fn default() -> Self {
        CommitQueue {
            next_ticket: 0,
            entries: VecDeque::new(),
        }
    }
}

impl<Op> CommitQueue<Op> {
    pub fn push(&mut self, op: Op) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.entries.push_back((ticket, op, None));
        ticket
    }

    /// Records the outcome of `ticket`; returns every op now ready, in order.
    pub fn resolve(&mut self, ticket: u64, ack: Ack) -> Vec<(Op, Ack)> {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.0 == ticket) {
            entry.2 = Some(ack);
        }
        let mut ready = Vec::new();
        while self.entries.front().is_some_and(|e| e.2.is_some()) {
            let (_, op, ack) = self.entries.pop_front().expect("front exists");
            ready.push((op, ack.expect("resolved")));
        }
        ready
    }

    /// Ops not yet finished, in submission order.
    pub fn iter(&self) -> impl Iterator<Item = &Op> {
        self.entries.iter().map(|e| &e.1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_released_in_submission_order() {
        let mut q = CommitQueue::default();
        let a = q.push('a');
        let b = q.push('b');
        let c = q.push('c');
        assert!(q.resolve(c, Ok(3)).is_empty());
        assert!(q.resolve(b, Ok(2)).is_empty());
        let ready: Vec<char> = q.resolve(a, Ok(1)).into_iter().map(|(op, _)| op).collect();
        assert_eq!(ready, vec!['a', 'b', 'c']);
        assert!(q.is_empty());
    }
}
