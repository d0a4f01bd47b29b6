//! Replication (optional): the journal as a NATS JetStream stream, one
//! leader by a lease, every stale writer fenced by the stream itself.
//!
//! In a cluster **the stream is the only truth**. A node's local sled
//! store is a copy of what the stream holds (plus snapshots), written only
//! after the stream stored each batch, so a node that rejoins finds its
//! last local record in the stream and follows from there; a store the
//! stream does not hold is refused.
//! The design, the server configuration and the failure table are in
//! `docs/cluster.md`.
//!
//! - [`lease`]: who leads, as a pure state machine over a key-value
//!   bucket's TTL and revision compare-and-swap; time is passed in.
//! - [`fence`]: where the leader appends, as a pure state machine: the
//!   expected last sequence and message id of every append, the term marker.
//! - [`journal`]: the stream itself (append, follow, last sequence, purge).
//! - [`lease_bucket`]: the bucket's I/O; [`lease_task`]: the task driving the lease.
//! - [`replicator`]: what the journal writer calls, per batch.
//! - [`nodes`]: each node's report of where its store stands in the
//!   stream; [`trim`]: what the leader may purge from the stream, given
//!   the reports (pure).
//!
//! # How the engine uses it
//!
//! `serve --cluster` runs a node (`engine::cluster_node`, `http::cluster`).
//! The leader's journal writer, per group-commit batch:
//! 1. appends the batch's frames with [`Replicator::append`] and awaits it
//!    (the publish ack: stored and fsynced by a quorum of servers). It
//!    expects the stream's last sequence to be the one it appended last, so
//!    a writer that lost its lease is refused (`Fenced`), and it resends an
//!    unanswered append under the same message id, so a lost ack never
//!    doubles a batch;
//! 2. flushes the batch locally (`Store::append`, unchanged);
//! 3. acknowledges its records. A batch that failed step 1 is answered
//!    `NOT_LEADER` (nothing stored) or `OUTCOME_UNKNOWN` (maybe stored) and
//!    the node becomes a standby.
//!
//! A standby reads the stream with [`JournalStream::read_from`] from the
//! sequence after its snapshot, applies every batch through the same code
//! as recovery (`store::recovery`), and reports it with
//! [`Replicator::on_applied`]. When [`LeaseHandle::permit`] makes it the
//! leader, it reads to the stream's end, opens its term with
//! [`Replicator::begin_term`] (on `Behind`: apply what is new and begin
//! again), and only then serves. Each node keeps the stream sequence its
//! local store holds (`cluster-position`, with the record sequence), and
//! the leader trims the stream below the least one the nodes report
//! ([`trim`]). A term marker (an empty message) holds no records:
//! appliers skip it.
//!
//! Stream sequences are not the journal's record sequences: a batch is one
//! stream message and many records. The engine keeps both (the record
//! sequence of a batch's first record travels inside its frames).

pub mod fence;
pub mod forget;
pub mod journal;
pub mod lease;
pub mod lease_bucket;
pub mod lease_task;
pub mod nodes;
pub mod replicator;
pub mod trim;

pub use fence::{Fence, Ticket};
pub use journal::{AppendError, Follow, JournalEntry, JournalStream, ReadError};
pub use lease::{Action, LeaseConfig, LeaseState, LeaseValue, Role, StepDown};
pub use lease_bucket::{LeaseBucket, LeaseOpError};
pub use lease_task::{LeaseHandle, LeaseTask, MonotonicClock};
pub use nodes::{NodeReport, NodeReports};
pub use replicator::{ReplicateError, Replicator, ReplicatorConfig};

use std::time::Duration;

/// Failures to join a cluster (connecting, creating or binding its stream
/// and bucket). Failures of single appends and lease operations have their
/// own types.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster name {0:?}: use 1 to 64 of A-Z, a-z, 0-9, '_' and '-'")]
    BadName(String),
    #[error("no NATS server answered at {urls}: {error}")]
    Connect { urls: String, error: String },
    #[error("JetStream request failed: {0}")]
    JetStream(String),
    /// A request timed out or JetStream is not ready (no meta leader, or
    /// too few servers up for the replicas): worth another try.
    #[error("JetStream not ready: {0}")]
    NotReady(String),
    #[error("the lease bucket's TTL is {bucket_ms} ms but this node's lease assumes {node_ms} ms")]
    LeaseTtl { bucket_ms: u64, node_ms: u64 },
    #[error(transparent)]
    LeaseConfig(#[from] lease::LeaseConfigError),
}

/// A cluster's name: it names the stream, its subject and the lease bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn new(name: &str) -> Result<ClusterName, ClusterError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(ClusterName(name.to_owned()))
        } else {
            Err(ClusterError::BadName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<name>-journal`
    pub fn journal_stream(&self) -> String {
        format!("{}-journal", self.0)
    }

    /// `<name>.journal`
    pub fn journal_subject(&self) -> String {
        format!("{}.journal", self.0)
    }

    /// `<name>-lease`
    pub fn lease_bucket(&self) -> String {
        format!("{}-lease", self.0)
    }

    /// `<name>-nodes`
    pub fn nodes_bucket(&self) -> String {
        format!("{}-nodes", self.0)
    }
}

/// A node's connection to the NATS cluster, with its stream and bucket bound.
pub struct Cluster {
    pub client: async_nats::Client,
    pub journal: JournalStream,
    pub lease_bucket: LeaseBucket,
    pub nodes: NodeReports,
}

/// A bucket's creation failed: worth another try when it timed out or
/// the account's JetStream did not answer.
fn create_kv_error(
    what: &str,
    e: async_nats::jetstream::context::CreateKeyValueError,
) -> ClusterError {
    use async_nats::jetstream::context::CreateKeyValueErrorKind as Kind;
    let why = format!("{what}: {e}");
    match e.kind() {
        Kind::TimedOut | Kind::JetStream => ClusterError::NotReady(why),
        _ => ClusterError::JetStream(why),
    }
}

/// The key-value bucket `config.bucket`, bound, or created with `config`
/// when it does not exist; `what` names it in errors.
async fn bucket_or_create(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::kv::Config,
    what: &str,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    match js.get_key_value(&config.bucket).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(config)
            .await
            .map_err(|e| create_kv_error(what, e)),
    }
}

/// How the cluster's buckets are kept: one value per key (history 1), on
/// file, with `replicas` replicas.
fn bucket_config(bucket: &str, replicas: usize) -> async_nats::jetstream::kv::Config {
    async_nats::jetstream::kv::Config {
        bucket: bucket.to_owned(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// A bucket's stream could not be bound: worth another try when the
/// request itself failed.
fn get_stream_error(what: &str, e: async_nats::jetstream::context::GetStreamError) -> ClusterError {
    use async_nats::jetstream::context::GetStreamErrorKind as Kind;
    let why = format!("{what}: {e}");
    match e.kind() {
        Kind::Request => ClusterError::NotReady(why),
        _ => ClusterError::JetStream(why),
    }
}

/// How long [`Cluster::join`] keeps trying: a node started with its NATS
/// cluster waits for the servers to elect a JetStream leader and for the
/// stream's replicas to answer.
pub const JOIN_WITHIN: Duration = Duration::from_secs(30);

/// Pause between attempts to bind the stream and the bucket.
const BIND_RETRY: Duration = Duration::from_millis(500);

impl Cluster {
    /// Connects to any of `urls` and binds (or creates) the journal
    /// stream, the lease bucket and the node report bucket, with
    /// [`replicas_for`] replicas. A bind that times out or finds JetStream
    /// not ready yet (a cluster electing its leaders) is tried again, for
    /// [`JOIN_WITHIN`] in all; any other failure is final at once.
    pub async fn join(
        urls: &[String],
        name: &ClusterName,
        lease: &LeaseConfig,
    ) -> Result<Cluster, ClusterError> {
        lease.validate()?;
        let deadline = tokio::time::Instant::now() + JOIN_WITHIN;
        let client = connect(urls, deadline).await?;
        let js = async_nats::jetstream::new(client.clone());
        let replicas = replicas_for(urls.len(), client.server_info().connect_urls.len());
        let mut attempt = 1u32;
        let (journal, lease_bucket, nodes) = loop {
            match bind(&js, name, replicas, lease).await {
                Ok(bound) => break bound,
                Err(ClusterError::NotReady(why))
                    if tokio::time::Instant::now() + BIND_RETRY < deadline =>
                {
                    tracing::warn!(attempt, error = %why, "JetStream not ready; binding again");
                    attempt += 1;
                    tokio::time::sleep(BIND_RETRY).await;
                }
                Err(ClusterError::NotReady(why)) => {
                    return Err(ClusterError::JetStream(format!(
                        "{why} (still after {JOIN_WITHIN:?})"
                    )))
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Cluster {
            client,
            journal,
            lease_bucket,
            nodes,
        })
    }
}

/// A connection to any of `urls`, by `deadline`.
async fn connect(
    urls: &[String],
    deadline: tokio::time::Instant,
) -> Result<async_nats::Client, ClusterError> {
    let connect = async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            // A hung server (SIGSTOP, a stalled machine) keeps its socket
            // open: pings find it out and the client moves to another
            // server within a few seconds instead of the default minutes.
            .ping_interval(Duration::from_secs(1))
            .retry_on_initial_connect()
            .connect(urls)
            .await
            .map_err(|e| e.to_string())?;
        // The first INFO arrives with the connection; with
        // `retry_on_initial_connect` the call returns before it, so wait.
        client.flush().await.map_err(|e| e.to_string())?;
        Ok(client)
    };
    tokio::time::timeout_at(deadline, connect)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {JOIN_WITHIN:?}")))
        .map_err(|error| ClusterError::Connect {
            urls: urls.join(","),
            error,
        })
}

/// The journal stream, the lease bucket and the report bucket, each bound
/// or created, once.
async fn bind(
    js: &async_nats::jetstream::Context,
    name: &ClusterName,
    replicas: usize,
    lease: &LeaseConfig,
) -> Result<(JournalStream, LeaseBucket, NodeReports), ClusterError> {
    let journal = JournalStream::open(js, name, replicas).await?;
    let ttl = Duration::from_millis(lease.ttl_ms);
    let bucket = LeaseBucket::open(js, name, journal.replicas(), ttl).await?;
    let nodes = NodeReports::open(js, name, journal.replicas()).await?;
    Ok((journal, bucket, nodes))
}

/// Replicas for a NATS cluster of which `given` servers were named and the
/// connected server told of `advertised` (its own and its peers' client
/// URLs): 3 when the cluster has three servers or more, else 1.
pub fn replicas_for(given: usize, advertised: usize) -> usize {
    if given.max(advertised) >= 3 {
        3
    } else {
        1
    }
}
