//! What the journal writer calls: append a batch to the stream as the
//! leader, with its fence, its retries and its lease check in one place.
//!
//! One [`Replicator`] per node, used by one writer at a time (`&mut self`).
//! A standby reports each entry it applies ([`Replicator::on_applied`]);
//! once the lease makes it leader, it opens its term
//! ([`Replicator::begin_term`]) and then appends batches
//! ([`Replicator::append`]).

use super::fence::{Fence, NotReady, OutOfOrder, Refusal, Ticket};
use super::journal::{AppendError, JournalStream};
use super::lease_task::LeaseHandle;
use bytes::Bytes;
use std::time::Duration;

/// How a [`Replicator`] retries an append whose outcome is unknown.
#[derive(Clone, Debug)]
pub struct ReplicatorConfig {
    /// One send counts as unanswered after this long.
    pub append_timeout_ms: u64,
    /// Pause between two sends of the same append.
    pub retry_pause_ms: u64,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            append_timeout_ms: 2_000,
            retry_pause_ms: 100,
        }
    }
}

/// Why a batch was not appended, and what its requests are told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicateError {
    /// Nothing was sent: this node does not lead (answer `NOT_LEADER`).
    #[error("this node is not the leader")]
    NotLeader,
    /// The term's marker was refused: the stream holds entries this node
    /// has not applied. Apply them ([`Replicator::on_applied`]) and begin
    /// the term again. Nothing was decided, nothing is lost.
    #[error("the journal holds entries this node has not applied")]
    Behind,
    /// The batch was refused: another writer appended. Not stored; this
    /// node stepped down (answer `NOT_LEADER`).
    #[error("fenced: another writer appended")]
    Fenced,
    /// Sent, but the lease ended before the outcome was known: the batch
    /// may be in the stream (answer `OUTCOME_UNKNOWN`; the next leader applies it if it is).
    #[error("the lease ended before the append's outcome was known")]
    OutcomeUnknown,
    /// Larger than one message may be; nothing was sent.
    #[error(transparent)]
    TooLarge(AppendError),
    /// The stream broke its own rule; a bug or corruption, never expected.
    #[error(transparent)]
    OutOfOrder(#[from] OutOfOrder),
}

/// A node's writer to the journal stream.
pub struct Replicator {
    journal: JournalStream,
    lease: LeaseHandle,
    fence: Fence,
    config: ReplicatorConfig,
}

impl Replicator {
    /// A node whose local state holds the stream up to `applied_seq`.
    pub fn new(
        journal: JournalStream,
        lease: LeaseHandle,
        node: &str,
        applied_seq: u64,
        config: ReplicatorConfig,
    ) -> Replicator {
        Replicator {
            journal,
            lease,
            fence: Fence::new(node, applied_seq),
            config,
        }
    }

    /// The last stream sequence this node applied or appended.
    pub fn last_seq(&self) -> u64 {
        self.fence.last_seq()
    }

    /// The term this node appends in, once begun.
    pub fn term(&self) -> Option<u64> {
        self.fence.term()
    }

    /// A standby applied the entry at `seq`, appended in `term`.
    pub fn on_applied(&mut self, seq: u64, term: u64) -> Result<(), OutOfOrder> {
        self.fence.on_applied(seq, term)
    }

    /// Opens the lease's term with a marker that expects everything this
    /// node has applied; the marker's sequence.
    pub async fn begin_term(&mut self) -> Result<u64, ReplicateError> {
        let term = self.lease.permit().ok_or(ReplicateError::NotLeader)?;
        let ticket = match self.fence.marker(term) {
            Ok(ticket) => ticket,
            Err(_) => {
                // The stream holds a later term: this lease is stale.
                self.lease.publish_refused();
                return Err(ReplicateError::Fenced);
            }
        };
        self.send(&ticket, Bytes::new()).await
    }

    /// Appends one group-commit batch; its stream sequence once a quorum of
    /// servers stored it.
    pub async fn append(&mut self, batch: Bytes) -> Result<u64, ReplicateError> {
        let ticket = self.fence.batch(self.lease.permit()).map_err(|e| match e {
            NotReady::NotLeader | NotReady::NoMarker | NotReady::Superseded => {
                ReplicateError::NotLeader
            }
        })?;
        self.send(&ticket, batch).await
    }

    /// Sends `ticket` until the stream settles it, while the lease holds.
    async fn send(&mut self, ticket: &Ticket, payload: Bytes) -> Result<u64, ReplicateError> {
        let timeout = Duration::from_millis(self.config.append_timeout_ms);
        let mut sent = false;
        loop {
            if self.lease.permit() != Some(ticket.term) {
                self.fence.step_down();
                return Err(if sent {
                    ReplicateError::OutcomeUnknown
                } else {
                    ReplicateError::NotLeader
                });
            }
            let outcome =
                tokio::time::timeout(timeout, self.journal.append(ticket, payload.clone()))
                    .await
                    .unwrap_or_else(|_| Err(AppendError::Unknown("timed out".into())));
            match outcome {
                Ok(seq) => {
                    self.fence.on_appended(ticket, seq)?;
                    return Ok(seq);
                }
                Err(AppendError::Fenced { .. }) => {
                    return Err(match self.fence.on_refused(ticket) {
                        Refusal::Behind => ReplicateError::Behind,
                        Refusal::Fenced => {
                            self.lease.publish_refused();
                            ReplicateError::Fenced
                        }
                    })
                }
                Err(e @ AppendError::TooLarge { .. }) => return Err(ReplicateError::TooLarge(e)),
                Err(AppendError::Unknown(why)) => {
                    tracing::warn!(seq = ticket.expected_last_seq, %why, "journal append unanswered; sending it again");
                    sent = true;
                    tokio::time::sleep(Duration::from_millis(self.config.retry_pause_ms)).await;
                }
            }
        }
    }
}
