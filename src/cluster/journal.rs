//! The journal stream: one JetStream stream per cluster, one message per
//! group-commit batch.
//!
//! Stream `<cluster>-journal` on subject `<cluster>.journal`, file storage,
//! replicas 3 on a NATS cluster of three servers or more (else 1), and no
//! limits: nothing acknowledged is ever discarded by the servers. The
//! leader trims it itself, up to the least position the nodes report
//! their stores hold (`super::trim`, [`JournalStream::purge_up_to`]).
//!
//! A batch goes as it is, in one message, so that a batch is stored whole
//! or not at all. Its size is bounded by the servers' `max_payload`
//! (`ops/nats/*.conf` sets 16 MiB, above the journal writer's 8 MiB batch
//! limit); the stream's `max_msg_size` is set to the same, and
//! [`JournalStream::append`] refuses a larger batch before sending it.
//!
//! Headers of every message: `Nats-Msg-Id` and
//! `Nats-Expected-Last-Subject-Sequence` from the [`Ticket`], and
//! `Commerce-Term`, the leader's term. A term marker has an empty body.

use super::fence::Ticket;
use super::{ClusterError, ClusterName};
use async_nats::jetstream::{self, consumer, context, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

/// Header naming the term a message was appended in.
pub const TERM_HEADER: &str = "Commerce-Term";

/// Room kept for headers under the servers' `max_payload`.
const HEADER_ROOM_BYTES: usize = 4 * 1024;

/// How long a resend of the same append is deduplicated by the stream.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// One message of the journal as a follower reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// The stream sequence: snapshots name the last one they cover.
    pub seq: u64,
    /// The term of the leader that appended it (0 when the header is missing).
    pub term: u64,
    /// The batch's frames as the leader encoded them; empty for a term marker.
    pub bytes: Bytes,
}

impl JournalEntry {
    pub fn is_marker(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Why an append was not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The stream's last message is not the one the ticket expected: another
    /// writer appended. Definite: this append is not stored.
    #[error("fenced: the stream's last message is not {expected_last_seq}")]
    Fenced { expected_last_seq: u64 },
    /// Larger than a message may be; nothing was sent.
    #[error("a batch of {bytes} bytes is larger than a message may be ({max} bytes)")]
    TooLarge { bytes: usize, max: usize },
    /// No answer, or not one that settles it: the append may or may not be
    /// stored. Sending the same ticket again is safe (deduplicated, or refused).
    #[error("append outcome unknown: {0}")]
    Unknown(String),
}

/// A follower's read of the stream failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The stream no longer holds `expected` (purged below a snapshot):
    /// the follower needs a snapshot that covers it.
    #[error("the journal skips from {expected} to {found}")]
    Gap { expected: u64, found: u64 },
    #[error("reading the journal failed: {0}")]
    Nats(String),
}

/// The journal stream of one cluster.
#[derive(Clone)]
pub struct JournalStream {
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    max_batch_bytes: usize,
}

impl JournalStream {
    /// Binds the cluster's journal stream, creating it if it does not exist
    /// (an existing stream keeps its replicas).
    pub async fn open(
        js: &jetstream::Context,
        name: &ClusterName,
        replicas: usize,
    ) -> Result<JournalStream, ClusterError> {
        let max_payload = js.client().server_info().max_payload;
        let config = stream::Config {
            name: name.journal_stream(),
            subjects: vec![name.journal_subject()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            retention: stream::RetentionPolicy::Limits,
            max_messages: -1,
            max_bytes: -1,
            max_age: Duration::ZERO,
            max_message_size: i32::try_from(max_payload).unwrap_or(i32::MAX),
            duplicate_window: DUPLICATE_WINDOW,
            // Reads that decide (is this stored message ours?) go to the
            // stream's leader, never to a replica that may lag.
            allow_direct: false,
            deny_delete: true,
            ..Default::default()
        };
        let stream = js.get_or_create_stream(config).await.map_err(|e| {
            let why = format!("journal stream: {e}");
            let not_ready = match e.kind() {
                context::CreateStreamErrorKind::TimedOut
                | context::CreateStreamErrorKind::JetStreamUnavailable => true,
                // 503: no meta leader yet, or too few servers up for the replicas.
                context::CreateStreamErrorKind::JetStream(e) => e.code() == 503,
                _ => false,
            };
            if not_ready {
                ClusterError::NotReady(why)
            } else {
                ClusterError::JetStream(why)
            }
        })?;
        Ok(JournalStream {
            js: js.clone(),
            stream,
            subject: name.journal_subject(),
            max_batch_bytes: max_payload.saturating_sub(HEADER_ROOM_BYTES),
        })
    }

    /// The largest batch [`append`](JournalStream::append) sends.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    /// Replicas of the stream as it was created.
    pub fn replicas(&self) -> usize {
        self.stream.cached_info().config.num_replicas
    }

    /// Appends `batch` as `ticket` says; the stream sequence it is stored at
    /// once a quorum of servers has stored it (the publish ack).
    pub async fn append(&self, ticket: &Ticket, batch: Bytes) -> Result<u64, AppendError> {
        if batch.len() > self.max_batch_bytes {
            return Err(AppendError::TooLarge {
                bytes: batch.len(),
                max: self.max_batch_bytes,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(TERM_HEADER, ticket.term.to_string().as_str());
        let message = jetstream::message::PublishMessage::build()
            .payload(batch)
            .headers(headers)
            .message_id(&ticket.msg_id)
            .expected_last_subject_sequence(ticket.expected_last_seq);
        let ack = match self.js.send_publish(self.subject.clone(), message).await {
            Ok(future) => future.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == context::PublishErrorKind::WrongLastSequence => {
                self.settle_refusal(ticket).await
            }
            Err(e) if e.kind() == context::PublishErrorKind::MaxPayloadExceeded => {
                Err(AppendError::TooLarge {
                    bytes: usize::MAX,
                    max: self.max_batch_bytes,
                })
            }
            Err(e) => Err(AppendError::Unknown(e.to_string())),
        }
    }

    /// A refusal may be this very append, stored by an earlier send whose
    /// ack was lost and no longer deduplicated (past the window): the
    /// message right after the expected one tells.
    async fn settle_refusal(&self, ticket: &Ticket) -> Result<u64, AppendError> {
        let next = ticket.expected_last_seq + 1;
        match self.stream.get_raw_message(next).await {
            Ok(message) => {
                let id = message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str().to_owned());
                if id.as_deref() == Some(ticket.msg_id.as_str()) {
                    Ok(next)
                } else {
                    Err(AppendError::Fenced {
                        expected_last_seq: ticket.expected_last_seq,
                    })
                }
            }
            Err(e) if matches!(e.kind(), stream::RawMessageErrorKind::NoMessageFound) => {
                // Nothing after the expected one, yet the append was refused:
                // the expected one itself is not the last (a purge, or a
                // stream that does not hold it). Not ours to write on.
                Err(AppendError::Fenced {
                    expected_last_seq: ticket.expected_last_seq,
                })
            }
            Err(e) => Err(AppendError::Unknown(e.to_string())),
        }
    }

    /// The sequence of the stream's last message (0 when it never had one).
    pub async fn last_seq(&self) -> Result<u64, ClusterError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| ClusterError::JetStream(format!("journal info: {e}")))?;
        Ok(info.state.last_sequence)
    }

    /// The first and last sequence the stream holds; `None` when it holds
    /// no message (never had one, or everything was purged).
    pub async fn bounds(&self) -> Result<Option<(u64, u64)>, ClusterError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| ClusterError::JetStream(format!("journal info: {e}")))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        Ok((info.state.messages > 0 && first >= 1 && first <= last).then_some((first, last)))
    }

    /// The body of the message at `seq` (empty for a term marker), read
    /// from the stream's leader.
    pub async fn get(&self, seq: u64) -> Result<Bytes, ClusterError> {
        self.stream
            .get_raw_message(seq)
            .await
            .map(|m| m.payload)
            .map_err(|e| ClusterError::JetStream(format!("journal message {seq}: {e}")))
    }

    /// Every message from `seq` on, in order, and then each new one as it
    /// is stored: an ordered consumer, which the client recreates where it
    /// left off when a server goes away. The stream never ends by itself.
    pub async fn read_from(&self, seq: u64) -> Result<Follow, ClusterError> {
        let start = seq.max(1);
        let deliver_policy = if start == 1 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            }
        };
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::JetStream(format!("journal consumer: {e}")))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| ClusterError::JetStream(format!("journal consumer: {e}")))?;
        Ok(Follow {
            messages,
            next_seq: start,
        })
    }

    /// Removes every message up to and including `seq`, but never the
    /// last one: its sequence is what the next append expects, and the
    /// stream checks that against the subject's last message. Returns how
    /// many were removed.
    pub async fn purge_up_to(&self, seq: u64) -> Result<u64, ClusterError> {
        let last = self.last_seq().await?;
        // `sequence(n)` removes everything below n.
        let below = seq.saturating_add(1).min(last);
        if below <= 1 {
            return Ok(0);
        }
        let purged = self
            .stream
            .purge()
            .sequence(below)
            .await
            .map_err(|e| ClusterError::JetStream(format!("journal purge: {e}")))?;
        Ok(purged.purged)
    }
}

/// The journal from a sequence on, following new messages: see
/// [`JournalStream::read_from`]. Yields each sequence once, in order, or a
/// [`ReadError::Gap`] if one is missing.
pub struct Follow {
    messages: consumer::pull::Ordered,
    next_seq: u64,
}

impl Follow {
    /// The sequence of the next entry this follower yields.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

impl Stream for Follow {
    type Item = Result<JournalEntry, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let (message, seq) = loop {
            let message = match self.messages.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(ReadError::Nats(e.to_string()))))
                }
                Poll::Ready(Some(Ok(message))) => message,
            };
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => return Poll::Ready(Some(Err(ReadError::Nats(e.to_string())))),
            };
            // The client recreates its consumer from the last sequence it
            // delivered, or from the stream's start if it delivered none
            // yet (async-nats' ordered consumer): what comes before the
            // next sequence was asked for by no one, and is passed over.
            if seq >= self.next_seq {
                break (message, seq);
            }
        };
        if seq != self.next_seq {
            return Poll::Ready(Some(Err(ReadError::Gap {
                expected: self.next_seq,
                found: seq,
            })));
        }
        self.next_seq = seq + 1;
        let term = message
            .headers
            .as_ref()
            .and_then(|h| h.get(TERM_HEADER))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        Poll::Ready(Some(Ok(JournalEntry {
            seq,
            term,
            bytes: message.message.payload.clone(),
        })))
    }
}
