//! The writer's position in the journal stream, as a pure state machine.
//!
//! Every append names the stream sequence it expects to follow
//! (`Nats-Expected-Last-Subject-Sequence`): the stream takes it only if its
//! last message is exactly that one. So the stream never forks: an append
//! decided on a history that someone else has since extended is refused,
//! and a writer whose append was refused is fenced (it steps down and
//! follows). Every append also carries a message id (`Nats-Msg-Id`) made of
//! the writer's node, term and expected sequence, so that sending the same
//! append again after a lost acknowledgement is deduplicated by the stream
//! instead of stored twice, and so that no two different appends ever share
//! an id.
//!
//! A new leader's first append is a *term marker*, an empty message that
//! expects the last sequence the node has applied. If it is refused, the
//! stream holds messages the node has not applied yet (an earlier leader's
//! last append landed after the lease changed hands): the node applies them
//! and sends a new marker. Nothing was decided on the stale history, so
//! nothing is lost. Once the marker is stored, every earlier leader's
//! append is refused, and this node's batches follow its own history.
//!
//! A node never opens a term lower than one it has applied: if its lease
//! says term 3 but the stream already holds term 4, its lease is stale
//! (clocks beyond the lease's guard) and it steps down. So terms never go
//! back in the stream, whatever the clocks do.

/// One append to send: where it goes and under which id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub term: u64,
    /// The stream sequence this append must follow.
    pub expected_last_seq: u64,
    /// `Nats-Msg-Id`: the same for every resend of this append, unique otherwise.
    pub msg_id: String,
    /// A term marker (an empty message) rather than a batch.
    pub marker: bool,
}

/// Why no ticket is handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("this node does not lead (no term, or another term than the lease's)")]
    NotLeader,
    #[error("this term's marker is not stored yet")]
    NoMarker,
    #[error("the stream already holds a later term than the lease's")]
    Superseded,
}

/// What a refused append means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A marker was refused: apply the stream's newer messages, then send a new one.
    Behind,
    /// A batch was refused: another writer appended. Step down and follow.
    Fenced,
}

/// An append's outcome that contradicts the stream's rules: a bug or a
/// corrupt stream, never an expected event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("append expected after {expected} was stored at {stored}")]
pub struct OutOfOrder {
    pub expected: u64,
    pub stored: u64,
}

/// One node's position in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    node: String,
    /// The last stream sequence this node has applied or appended.
    last_seq: u64,
    /// The term whose marker is stored, if this node leads.
    term: Option<u64>,
    /// The highest term of the entries applied or appended.
    highest_term: u64,
}

impl Fence {
    /// A node whose local state holds the stream up to `applied_seq`.
    pub fn new(node: impl Into<String>, applied_seq: u64) -> Self {
        Fence {
            node: node.into(),
            last_seq: applied_seq,
            term: None,
            highest_term: 0,
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The term this node appends in, once its marker is stored.
    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// A follower applied the message at `seq` (the next one in the
    /// stream), appended in `term`.
    pub fn on_applied(&mut self, seq: u64, term: u64) -> Result<(), OutOfOrder> {
        if seq <= self.last_seq {
            return Err(OutOfOrder {
                expected: self.last_seq,
                stored: seq,
            });
        }
        self.last_seq = seq;
        self.highest_term = self.highest_term.max(term);
        Ok(())
    }

    /// The marker that opens `term` on top of what this node has applied;
    /// refused if the stream holds a later term.
    pub fn marker(&mut self, term: u64) -> Result<Ticket, NotReady> {
        self.term = None;
        if term < self.highest_term {
            return Err(NotReady::Superseded);
        }
        Ok(self.ticket_for(term, true))
    }

    /// A ticket for the next batch, if this node leads in `permit`'s term
    /// (the lease's answer now) and that term's marker is stored.
    pub fn batch(&self, permit: Option<u64>) -> Result<Ticket, NotReady> {
        match (permit, self.term) {
            (Some(lease), Some(ours)) if lease == ours => Ok(self.ticket_for(ours, false)),
            (Some(_), None) => Err(NotReady::NoMarker),
            _ => Err(NotReady::NotLeader),
        }
    }

    /// The stream stored `ticket`'s append at `seq` (or had stored it: a
    /// deduplicated resend).
    pub fn on_appended(&mut self, ticket: &Ticket, seq: u64) -> Result<(), OutOfOrder> {
        if seq != ticket.expected_last_seq + 1 || ticket.expected_last_seq != self.last_seq {
            return Err(OutOfOrder {
                expected: ticket.expected_last_seq,
                stored: seq,
            });
        }
        self.last_seq = seq;
        self.highest_term = self.highest_term.max(ticket.term);
        if ticket.marker {
            self.term = Some(ticket.term);
        }
        Ok(())
    }

    /// The stream refused `ticket`'s append: its last message is not the
    /// expected one.
    pub fn on_refused(&mut self, ticket: &Ticket) -> Refusal {
        self.term = None;
        if ticket.marker {
            Refusal::Behind
        } else {
            Refusal::Fenced
        }
    }

    /// Steps down without a refusal (the lease ended).
    pub fn step_down(&mut self) {
        self.term = None;
    }

    fn ticket_for(&self, term: u64, marker: bool) -> Ticket {
        Ticket {
            term,
            expected_last_seq: self.last_seq,
            msg_id: msg_id(&self.node, term, self.last_seq),
            marker,
        }
    }
}

/// `Nats-Msg-Id` of the append by `node` in `term` after `expected_last_seq`.
pub fn msg_id(node: &str, term: u64, expected_last_seq: u64) -> String {
    format!("{node}.t{term}.after{expected_last_seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_marker_and_each_other_with_distinct_ids() {
        // Proves each append expects the previous one and ids never repeat.
        let mut f = Fence::new("a", 4);
        let m = f.marker(9).unwrap();
        assert_eq!(m.expected_last_seq, 4);
        assert_eq!(f.batch(Some(9)), Err(NotReady::NoMarker));
        f.on_appended(&m, 5).unwrap();
        let b1 = f.batch(Some(9)).unwrap();
        assert_eq!(b1.expected_last_seq, 5);
        f.on_appended(&b1, 6).unwrap();
        let b2 = f.batch(Some(9)).unwrap();
        assert_eq!(b2.expected_last_seq, 6);
        assert_ne!(b1.msg_id, b2.msg_id);
        assert_ne!(m.msg_id, b1.msg_id);
    }

    #[test]
    fn a_batch_needs_the_lease_in_the_same_term_as_the_marker() {
        // Proves a node whose lease moved to another term cannot append.
        let mut f = Fence::new("a", 0);
        let m = f.marker(3).unwrap();
        f.on_appended(&m, 1).unwrap();
        assert_eq!(f.batch(None), Err(NotReady::NotLeader));
        assert_eq!(f.batch(Some(4)), Err(NotReady::NotLeader));
    }

    #[test]
    fn a_refused_marker_means_behind_and_a_refused_batch_means_fenced() {
        // Proves the two refusals are told apart, and both end the term.
        let mut f = Fence::new("a", 0);
        let m = f.marker(3).unwrap();
        assert_eq!(f.on_refused(&m), Refusal::Behind);
        f.on_applied(1, 2).unwrap();
        let m = f.marker(3).unwrap();
        assert_eq!(m.expected_last_seq, 1);
        f.on_appended(&m, 2).unwrap();
        let b = f.batch(Some(3)).unwrap();
        assert_eq!(f.on_refused(&b), Refusal::Fenced);
        assert_eq!(
            f.batch(Some(3)),
            Err(NotReady::NoMarker),
            "a term must begin again"
        );
    }

    #[test]
    fn a_node_whose_lease_term_is_below_one_it_applied_cannot_open_it() {
        // Proves terms never go back in the stream, even with a stale lease.
        let mut f = Fence::new("a", 0);
        f.on_applied(1, 4).unwrap();
        assert_eq!(f.marker(3), Err(NotReady::Superseded));
        assert!(f.marker(4).is_ok());
    }

    #[test]
    fn an_append_stored_anywhere_but_right_after_its_expectation_is_an_error() {
        // Proves the writer does not silently accept a stream that broke its rule.
        let mut f = Fence::new("a", 0);
        let m = f.marker(1).unwrap();
        assert!(f.on_appended(&m, 2).is_err());
        assert_eq!(f.last_seq(), 0);
    }
}
