//! Losing a NATS server under a writer: the stream's leader is killed
//! (kill -9) or paused (SIGSTOP); appends resume within 15 s and every
//! acknowledged batch is in the stream once, where its ack said.

use crate::cluster_support::{runtime, NatsCluster};
use bytes::Bytes;
use commerce_engine::cluster::{
    Cluster, ClusterName, LeaseConfig, LeaseState, LeaseTask, ReplicateError, Replicator,
    ReplicatorConfig,
};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A node that writes: its lease, its replicator, what it was told.
struct Writer {
    cluster: Cluster,
    _lease: LeaseTask,
    replicator: Replicator,
    /// Acknowledged batches: (stream sequence, content).
    acked: Vec<(u64, String)>,
    /// Batches whose outcome was unknown: in the stream at most once.
    maybe: Vec<String>,
}

impl Writer {
    async fn start(nats: &NatsCluster) -> Writer {
        let config = LeaseConfig::default();
        let cluster = Cluster::join(&nats.urls(), &ClusterName::new("shop").unwrap(), &config)
            .await
            .expect("joins");
        let lease = LeaseTask::start(
            cluster.lease_bucket.clone(),
            LeaseState::new(config, "a", "http://a"),
        );
        let replicator = Replicator::new(
            cluster.journal.clone(),
            lease.handle(),
            "a",
            0,
            ReplicatorConfig::default(),
        );
        Writer {
            cluster,
            _lease: lease,
            replicator,
            acked: Vec::new(),
            maybe: Vec::new(),
        }
    }

    /// Leads with a term begun on top of everything in the stream, as a
    /// standby taking over would: waits for the lease, applies what it has
    /// not, opens the term; again on `Behind`.
    async fn lead(&mut self, deadline: Instant) {
        loop {
            assert!(
                Instant::now() < deadline,
                "no leadership before the deadline"
            );
            if self.replicator.term().is_some() {
                return;
            }
            if self.replicator_permit().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if self.catch_up().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            match self.replicator.begin_term().await {
                Ok(_) => return,
                Err(ReplicateError::Behind)
                | Err(ReplicateError::NotLeader)
                | Err(ReplicateError::OutcomeUnknown) => continue,
                Err(e) => panic!("begin_term: {e}"),
            }
        }
    }

    fn replicator_permit(&self) -> Option<u64> {
        self._lease.handle().permit()
    }

    /// Applies the stream's entries past the replicator's last sequence.
    async fn catch_up(&mut self) -> Result<(), String> {
        let journal = &self.cluster.journal;
        let last = tokio::time::timeout(Duration::from_secs(2), journal.last_seq())
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if last <= self.replicator.last_seq() {
            return Ok(());
        }
        let mut follow = journal
            .read_from(self.replicator.last_seq() + 1)
            .await
            .map_err(|e| e.to_string())?;
        while self.replicator.last_seq() < last {
            let entry = tokio::time::timeout(Duration::from_secs(5), follow.next())
                .await
                .map_err(|_| "follow timed out".to_string())?
                .ok_or("follow ended")?
                .map_err(|e| e.to_string())?;
            self.replicator
                .on_applied(entry.seq, entry.term)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Appends batch `content`, leading again first if needed; whether acknowledged.
    async fn append(&mut self, content: String, deadline: Instant) -> bool {
        self.lead(deadline).await;
        match self.replicator.append(Bytes::from(content.clone())).await {
            Ok(seq) => {
                self.acked.push((seq, content));
                true
            }
            Err(ReplicateError::OutcomeUnknown) => {
                self.maybe.push(content);
                false
            }
            Err(ReplicateError::NotLeader) | Err(ReplicateError::Fenced) => false,
            Err(e) => panic!("append: {e}"),
        }
    }

    /// Every acknowledged batch is in the stream at its sequence, and no
    /// batch is there twice.
    async fn check_stream(&self) {
        let journal = &self.cluster.journal;
        let last = journal.last_seq().await.unwrap();
        // The ordered consumer may first be placed on the lost server: retry.
        let mut follow = None;
        for _ in 0..20 {
            match journal.read_from(1).await {
                Ok(f) => {
                    follow = Some(f);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        let mut follow = follow.expect("a follower within 5 s");
        let mut at: HashMap<u64, String> = HashMap::new();
        let mut seen: HashMap<String, u64> = HashMap::new();
        for seq in 1..=last {
            let entry = tokio::time::timeout(Duration::from_secs(10), follow.next())
                .await
                .expect("reads the whole stream")
                .unwrap()
                .unwrap();
            assert_eq!(entry.seq, seq);
            if entry.is_marker() {
                continue;
            }
            let content = String::from_utf8(entry.bytes.to_vec()).unwrap();
            if let Some(first) = seen.insert(content.clone(), seq) {
                panic!("{content} stored twice, at {first} and {seq}");
            }
            at.insert(seq, content);
        }
        for (seq, content) in &self.acked {
            assert_eq!(
                at.get(seq),
                Some(content),
                "acknowledged batch at {seq} is in the stream"
            );
        }
        for content in at.values() {
            let acked = self.acked.iter().any(|(_, c)| c == content);
            assert!(
                acked || self.maybe.contains(content),
                "{content} was never sent"
            );
        }
    }
}

/// The server that leads the journal stream's raft group.
async fn stream_leader(nats: &NatsCluster, writer: &Writer) -> usize {
    let js = async_nats::jetstream::new(writer.cluster.client.clone());
    let info = js
        .get_stream("shop-journal")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("a stream leader");
    nats.index_of(&leader).expect("a server of ours")
}

/// Appends until one is acknowledged after `since`; how long that took.
async fn first_ack_after(writer: &mut Writer, since: Instant, next: &mut usize) -> Duration {
    let deadline = since + Duration::from_secs(15);
    loop {
        *next += 1;
        if writer.append(format!("batch {next}"), deadline).await {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no append acknowledged within 15 s"
        );
    }
}

#[test]
fn killing_the_stream_leaders_server_stops_appends_for_less_than_15_s_and_loses_nothing() {
    // Proves failover of the journal stream keeps every acknowledged batch, once.
    let mut nats = NatsCluster::start(3);
    runtime().block_on(async {
        let mut writer = Writer::start(&nats).await;
        let mut next = 0;
        let start = Instant::now() + Duration::from_secs(15);
        while writer.acked.len() < 30 {
            next += 1;
            writer.append(format!("batch {next}"), start).await;
        }
        let victim = stream_leader(&nats, &writer).await;
        nats.kill(victim);
        let killed = Instant::now();
        let took = first_ack_after(&mut writer, killed, &mut next).await;
        eprintln!("appends resumed {took:?} after kill -9 of the stream leader's server");
        let more = writer.acked.len() + 30;
        let deadline = Instant::now() + Duration::from_secs(15);
        while writer.acked.len() < more {
            next += 1;
            writer.append(format!("batch {next}"), deadline).await;
        }
        writer.check_stream().await;
        nats.restart(victim);
    });
}

#[test]
fn pausing_the_stream_leaders_server_stops_appends_for_less_than_15_s_and_loses_nothing() {
    // Proves a hung (SIGSTOP) server is failed over like a dead one, and rejoins on SIGCONT.
    let nats = NatsCluster::start(3);
    runtime().block_on(async {
        let mut writer = Writer::start(&nats).await;
        let mut next = 0;
        let start = Instant::now() + Duration::from_secs(15);
        while writer.acked.len() < 30 {
            next += 1;
            writer.append(format!("batch {next}"), start).await;
        }
        let victim = stream_leader(&nats, &writer).await;
        nats.pause(victim);
        let paused = Instant::now();
        let took = first_ack_after(&mut writer, paused, &mut next).await;
        eprintln!("appends resumed {took:?} after SIGSTOP of the stream leader's server");
        nats.resume(victim);
        let more = writer.acked.len() + 30;
        let deadline = Instant::now() + Duration::from_secs(15);
        while writer.acked.len() < more {
            next += 1;
            writer.append(format!("batch {next}"), deadline).await;
        }
        writer.check_stream().await;
    });
}
