//! The lease's key-value bucket: the I/O that [`super::lease::LeaseState`]
//! asks for, and nothing else.
//!
//! Bucket `<cluster>-lease`, one key (`leader`), history 1, file storage,
//! the journal's replicas, and `max_age` = the lease's TTL: an entry the
//! leader stops renewing disappears TTL after its last write, and
//! `create` (a write that expects the key to have no message) succeeds again.

use super::lease::LeaseValue;
use super::{ClusterError, ClusterName};
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use std::time::Duration;

/// The one key of the bucket.
pub const LEASE_KEY: &str = "leader";

/// Header the key-value layer marks deletes and purges with.
const KV_OPERATION: &str = "KV-Operation";

/// Why a lease operation did not write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseOpError {
    /// `create`: the key is held (not expired).
    #[error("the lease is held")]
    Taken,
    /// `update`: the key is not at the expected revision.
    #[error("the lease is at another revision")]
    Conflict,
    /// No answer that settles it: the write may or may not be stored.
    #[error("lease bucket unavailable: {0}")]
    Unavailable(String),
}

/// The cluster's lease bucket.
#[derive(Clone)]
pub struct LeaseBucket {
    kv: kv::Store,
    /// The bucket's own stream, for reads from its leader.
    stream: stream::Stream,
    subject: String,
    ttl: Duration,
}

impl LeaseBucket {
    /// Binds the cluster's lease bucket, creating it with `ttl` if it does
    /// not exist. An existing bucket with another TTL is refused: every
    /// node's deadline assumes the bucket's TTL.
    pub async fn open(
        js: &jetstream::Context,
        name: &ClusterName,
        replicas: usize,
        ttl: Duration,
    ) -> Result<LeaseBucket, ClusterError> {
        let bucket = name.lease_bucket();
        let config = kv::Config {
            max_age: ttl,
            ..super::bucket_config(&bucket, replicas)
        };
        let kv = super::bucket_or_create(js, config, "lease bucket").await?;
        let status = kv.status().await.map_err(|e| {
            let why = format!("lease bucket: {e}");
            match e.kind() {
                kv::StatusErrorKind::TimedOut => ClusterError::NotReady(why),
                _ => ClusterError::JetStream(why),
            }
        })?;
        if status.max_age() != ttl {
            return Err(ClusterError::LeaseTtl {
                bucket_ms: status.max_age().as_millis() as u64,
                node_ms: ttl.as_millis() as u64,
            });
        }
        let stream = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| super::get_stream_error("lease bucket stream", e))?;
        Ok(LeaseBucket {
            kv,
            stream,
            subject: format!("$KV.{bucket}.{LEASE_KEY}"),
            ttl,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The term a new leader takes: the bucket's last revision plus one
    /// (see [`LeaseValue`] for why it exceeds every earlier term).
    pub async fn next_term(&self) -> Result<u64, LeaseOpError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| LeaseOpError::Unavailable(e.to_string()))?;
        Ok(info.state.last_sequence + 1)
    }

    /// Writes `value` if the key is absent, expired or deleted; its
    /// revision. A compare-and-swap on what the stream's leader holds for
    /// the key: nothing (sequence 0) or a delete marker.
    pub async fn create(&self, value: &LeaseValue) -> Result<u64, LeaseOpError> {
        let expected = match self.last().await? {
            Last::Absent => 0,
            Last::Deleted(revision) => revision,
            Last::Held(..) => return Err(LeaseOpError::Taken),
        };
        match self.update(value, expected).await {
            Err(LeaseOpError::Conflict) => Err(LeaseOpError::Taken),
            other => other,
        }
    }

    /// Writes `value` if the key is at `revision`; its new revision.
    pub async fn update(&self, value: &LeaseValue, revision: u64) -> Result<u64, LeaseOpError> {
        match self.kv.update(LEASE_KEY, encode(value), revision).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(LeaseOpError::Conflict)
            }
            Err(e) => Err(LeaseOpError::Unavailable(e.to_string())),
        }
    }

    /// The key's value and revision as the bucket's stream leader has it
    /// (never a replica's possibly older copy); `None` when absent.
    pub async fn read(&self) -> Result<Option<(LeaseValue, u64)>, LeaseOpError> {
        match self.last().await? {
            Last::Held(value, revision) => Ok(Some((value, revision))),
            Last::Absent | Last::Deleted(_) => Ok(None),
        }
    }

    async fn last(&self) -> Result<Last, LeaseOpError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject)
            .await
        {
            Ok(message) => {
                let deleted = message
                    .headers
                    .get(KV_OPERATION)
                    .is_some_and(|op| op.as_str() != "PUT");
                if deleted {
                    return Ok(Last::Deleted(message.sequence));
                }
                let value = serde_json::from_slice(&message.payload)
                    .map_err(|e| LeaseOpError::Unavailable(format!("lease value: {e}")))?;
                Ok(Last::Held(value, message.sequence))
            }
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                Ok(Last::Absent)
            }
            Err(e) => Err(LeaseOpError::Unavailable(e.to_string())),
        }
    }

    /// Deletes the key if it is still at `revision`.
    pub async fn release(&self, revision: u64) -> Result<(), LeaseOpError> {
        match self
            .kv
            .delete_expect_revision(LEASE_KEY, Some(revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(LeaseOpError::Conflict)
            }
            Err(e) => Err(LeaseOpError::Unavailable(e.to_string())),
        }
    }
}

/// The key's last message.
enum Last {
    Absent,
    Deleted(u64),
    Held(LeaseValue, u64),
}

fn encode(value: &LeaseValue) -> Bytes {
    // A struct of two strings and a number always serializes.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}
