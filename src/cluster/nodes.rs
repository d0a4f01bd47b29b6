//! The nodes' reports: where each node's local store stands in the journal
//! stream, which the leader trims below (`super::trim`).
//!
//! Bucket `<cluster>-nodes`, one key per node id, history 1, file storage,
//! the journal's replicas, no `max_age` (a report stays until the node
//! writes a newer one or an operator removes it with `cluster-forget`).
//! A value is a [`NodeReport`] as JSON. Reads go to the bucket stream's
//! leader, never to a replica that may lag.

use super::lease::LeaseValue;
use super::lease_bucket::LEASE_KEY;
use super::{ClusterError, ClusterName};
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// Header the key-value layer marks deletes and purges with.
const KV_OPERATION: &str = "KV-Operation";

/// What a node reports: its local store holds every record of the
/// journal stream up to message `stream_seq` (whose last record is
/// `record_seq`), as its `cluster-position` file says, synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub stream_seq: u64,
    pub record_seq: u64,
}

/// A node's report as read back; `Err` holds why a value is unreadable.
pub type ReadReport = Result<NodeReport, String>;

/// The cluster's bucket of node reports.
#[derive(Clone)]
pub struct NodeReports {
    kv: kv::Store,
    stream: stream::Stream,
    bucket: String,
}

impl NodeReports {
    /// Binds the cluster's report bucket, creating it if it does not exist.
    pub async fn open(
        js: &jetstream::Context,
        name: &ClusterName,
        replicas: usize,
    ) -> Result<NodeReports, ClusterError> {
        let bucket = name.nodes_bucket();
        let config = super::bucket_config(&bucket, replicas);
        let kv = super::bucket_or_create(js, config, "node report bucket").await?;
        NodeReports::bind(js, kv, bucket).await
    }

    /// Binds an existing report bucket (never creates one): for
    /// `cluster-forget`, which must not set up a cluster.
    pub async fn existing(
        js: &jetstream::Context,
        name: &ClusterName,
    ) -> Result<NodeReports, ClusterError> {
        let bucket = name.nodes_bucket();
        let kv = js.get_key_value(&bucket).await.map_err(|e| {
            ClusterError::JetStream(format!(
                "no node report bucket {bucket:?} (is {:?} the cluster's name?): {e}",
                name.as_str()
            ))
        })?;
        NodeReports::bind(js, kv, bucket).await
    }

    async fn bind(
        js: &jetstream::Context,
        kv: kv::Store,
        bucket: String,
    ) -> Result<NodeReports, ClusterError> {
        let stream = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| super::get_stream_error("node report bucket stream", e))?;
        Ok(NodeReports { kv, stream, bucket })
    }

    /// Writes `node`'s report.
    pub async fn report(&self, node: &str, report: NodeReport) -> Result<(), ClusterError> {
        let value = serde_json::to_vec(&report).unwrap_or_default();
        self.kv
            .put(node, Bytes::from(value))
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::JetStream(format!("report of node {node}: {e}")))
    }

    /// Every node's report, by node id, as the bucket stream's leader
    /// holds it; a value that does not parse is handed back as an error
    /// (the caller decides: a trim stops until it is mended).
    pub async fn all(&self) -> Result<Vec<(String, ReadReport)>, ClusterError> {
        let failed = |e: String| ClusterError::JetStream(format!("node reports: {e}"));
        let mut keys = self.kv.keys().await.map_err(|e| failed(e.to_string()))?;
        let mut nodes = Vec::new();
        while let Some(key) = keys.next().await {
            nodes.push(key.map_err(|e| failed(e.to_string()))?);
        }
        let mut reports = Vec::with_capacity(nodes.len());
        for node in nodes {
            if let Some(report) = self.read(&node).await? {
                reports.push((node, report));
            }
        }
        Ok(reports)
    }

    /// `node`'s report; `None` when it has none (never reported, or forgotten).
    pub async fn read(&self, node: &str) -> Result<Option<ReadReport>, ClusterError> {
        let subject = format!("$KV.{}.{node}", self.bucket);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let removed = message
                    .headers
                    .get(KV_OPERATION)
                    .is_some_and(|op| op.as_str() != "PUT");
                if removed {
                    return Ok(None);
                }
                Ok(Some(
                    serde_json::from_slice::<NodeReport>(&message.payload)
                        .map_err(|e| format!("node {node}'s report is unreadable: {e}")),
                ))
            }
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                Ok(None)
            }
            Err(e) => Err(ClusterError::JetStream(format!(
                "report of node {node}: {e}"
            ))),
        }
    }

    /// Removes `node`'s report for good (its history too).
    pub async fn forget(&self, node: &str) -> Result<(), ClusterError> {
        self.kv
            .purge(node)
            .await
            .map_err(|e| ClusterError::JetStream(format!("forgetting node {node}: {e}")))
    }
}

/// The node named in the lease key of bucket `<cluster>-lease`, if any
/// holds it; the bucket is read, never created.
pub async fn lease_holder(
    js: &jetstream::Context,
    name: &ClusterName,
) -> Result<Option<LeaseValue>, ClusterError> {
    let bucket = name.lease_bucket();
    let kv = js.get_key_value(&bucket).await.map_err(|e| {
        ClusterError::JetStream(format!(
            "no lease bucket {bucket:?} (is {:?} the cluster's name?): {e}",
            name.as_str()
        ))
    })?;
    let value = kv
        .get(LEASE_KEY)
        .await
        .map_err(|e| ClusterError::JetStream(format!("the lease: {e}")))?;
    match value {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClusterError::JetStream(format!("the lease's value: {e}"))),
    }
}
