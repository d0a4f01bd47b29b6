//! The journal stream against real nats-servers: appends, fencing, resends,
//! following, large batches, purge.

use crate::cluster_support::{runtime, NatsCluster};
use bytes::Bytes;
use commerce_engine::cluster::{
    AppendError, Cluster, ClusterName, Fence, JournalEntry, JournalStream, LeaseConfig, ReadError,
    Ticket,
};
use futures_util::StreamExt;
use std::time::Duration;

async fn join(nats: &NatsCluster, name: &str) -> Cluster {
    Cluster::join(
        &nats.urls(),
        &ClusterName::new(name).unwrap(),
        &LeaseConfig::default(),
    )
    .await
    .expect("joins the cluster")
}

/// [`JournalStream::append`], sent again under the same ticket while its
/// outcome is unknown (a timeout on a loaded machine), as the replicator
/// does: the stream deduplicates it or refuses it, never stores it twice.
async fn send(journal: &JournalStream, ticket: &Ticket, batch: Bytes) -> Result<u64, AppendError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match journal.append(ticket, batch.clone()).await {
            Err(AppendError::Unknown(why)) if tokio::time::Instant::now() < deadline => {
                eprintln!("append outcome unknown, sent again: {why}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            settled => return settled,
        }
    }
}

/// Appends `batch` as the fence's next append (a marker first if it has no term).
async fn append(journal: &JournalStream, fence: &mut Fence, term: u64, batch: &[u8]) -> u64 {
    if fence.term() != Some(term) {
        let marker = fence.marker(term).unwrap();
        let seq = send(journal, &marker, Bytes::new()).await.expect("marker");
        fence.on_appended(&marker, seq).unwrap();
    }
    let ticket = fence.batch(Some(term)).unwrap();
    let seq = send(journal, &ticket, Bytes::copy_from_slice(batch))
        .await
        .expect("append");
    fence.on_appended(&ticket, seq).unwrap();
    seq
}

async fn next(follow: &mut commerce_engine::cluster::Follow) -> JournalEntry {
    tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .expect("an entry within 10 s")
        .expect("the follower goes on")
        .expect("reads")
}

#[test]
fn appends_are_stored_in_order_and_a_follower_reads_them_all_then_follows_new_ones() {
    // Proves read_from yields every batch once, in order, and keeps following.
    let nats = NatsCluster::start(3);
    runtime().block_on(async {
        let cluster = join(&nats, "shop").await;
        let journal = &cluster.journal;
        assert_eq!(journal.replicas(), 3, "three servers, three replicas");
        let mut fence = Fence::new("a", 0);
        let mut stored = Vec::new();
        for i in 0..5 {
            let batch = format!("batch {i}");
            stored.push((
                append(journal, &mut fence, 1, batch.as_bytes()).await,
                batch,
            ));
        }
        assert_eq!(stored[0].0, 2, "the term marker is message 1");
        let mut follow = journal.read_from(1).await.unwrap();
        let marker = next(&mut follow).await;
        assert!(marker.is_marker() && marker.seq == 1 && marker.term == 1);
        for (seq, batch) in &stored {
            let entry = next(&mut follow).await;
            assert_eq!((entry.seq, entry.bytes.as_ref()), (*seq, batch.as_bytes()));
            assert_eq!(entry.term, 1);
        }
        for i in 5..8 {
            let batch = format!("batch {i}");
            let seq = append(journal, &mut fence, 1, batch.as_bytes()).await;
            let entry = next(&mut follow).await;
            assert_eq!((entry.seq, entry.bytes.as_ref()), (seq, batch.as_bytes()));
        }
        assert_eq!(journal.last_seq().await.unwrap(), 9);
    });
}

#[test]
fn a_second_writer_whose_expected_sequence_is_stale_is_refused_as_fenced() {
    // Proves the stream, not the writers, decides: the later writer on an old history is refused.
    let nats = NatsCluster::start(3);
    runtime().block_on(async {
        let cluster = join(&nats, "shop").await;
        let journal = &cluster.journal;
        let mut old = Fence::new("old", 0);
        let mut new = Fence::new("new", 0);
        let marker = old.marker(1).unwrap();
        let seq = send(journal, &marker, Bytes::new()).await.unwrap();
        old.on_appended(&marker, seq).unwrap();
        let stale_ticket = old.batch(Some(1)).unwrap();

        // The new leader applied everything (message 1) and opens term 2.
        new.on_applied(1, 1).unwrap();
        let marker = new.marker(2).unwrap();
        let seq = send(journal, &marker, Bytes::new()).await.unwrap();
        new.on_appended(&marker, seq).unwrap();

        let refused = send(journal, &stale_ticket, Bytes::from_static(b"stale")).await;
        assert_eq!(
            refused,
            Err(AppendError::Fenced {
                expected_last_seq: 1
            })
        );
        assert_eq!(
            journal.last_seq().await.unwrap(),
            2,
            "nothing of the old writer's stored"
        );
        let fresh = new.batch(Some(2)).unwrap();
        assert_eq!(send(journal, &fresh, Bytes::from_static(b"b")).await, Ok(3));
    });
}

#[test]
fn an_append_sent_again_after_a_lost_ack_is_deduplicated_not_stored_twice() {
    // Proves a resend under the same ticket answers the first one's sequence and stores nothing.
    let nats = NatsCluster::start(3);
    runtime().block_on(async {
        let cluster = join(&nats, "shop").await;
        let journal = &cluster.journal;
        let mut fence = Fence::new("a", 0);
        let marker = fence.marker(1).unwrap();
        let seq = send(journal, &marker, Bytes::new()).await.unwrap();
        fence.on_appended(&marker, seq).unwrap();
        let ticket = fence.batch(Some(1)).unwrap();
        let batch = Bytes::from_static(b"once");
        let first = send(journal, &ticket, batch.clone()).await.unwrap();
        // The ack was "lost": the writer sends the same ticket again.
        let again = send(journal, &ticket, batch.clone()).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(journal.last_seq().await.unwrap(), first);
        fence.on_appended(&ticket, again).unwrap();
        let next_ticket = fence.batch(Some(1)).unwrap();
        assert_eq!(
            send(journal, &next_ticket, Bytes::from_static(b"next")).await,
            Ok(first + 1)
        );
        // And a resend of the earlier ticket once the stream moved on: still
        // the earlier sequence, still nothing stored.
        assert_eq!(send(journal, &ticket, batch).await, Ok(first));
        assert_eq!(journal.last_seq().await.unwrap(), first + 1);
    });
}

#[test]
fn a_batch_of_several_mib_is_one_message_and_one_above_the_limit_is_refused_unsent() {
    // Proves the stream and servers take a writer's largest batch (8 MiB) whole.
    let nats = NatsCluster::start(3);
    runtime().block_on(async {
        let cluster = join(&nats, "shop").await;
        let journal = &cluster.journal;
        assert!(journal.max_batch_bytes() >= 8 * 1024 * 1024 + 64 * 1024);
        let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let mut fence = Fence::new("a", 0);
        let seq = append(journal, &mut fence, 1, &big).await;
        let mut follow = journal.read_from(seq).await.unwrap();
        let entry = next(&mut follow).await;
        assert_eq!(entry.seq, seq);
        assert!(entry.bytes.as_ref() == big.as_slice(), "read back whole");

        let too_big = Bytes::from(vec![0u8; journal.max_batch_bytes() + 1]);
        let ticket = fence.batch(Some(1)).unwrap();
        assert!(matches!(
            send(journal, &ticket, too_big).await,
            Err(AppendError::TooLarge { .. })
        ));
        assert_eq!(journal.last_seq().await.unwrap(), seq);
    });
}

#[test]
fn purge_up_to_keeps_the_last_message_so_the_next_append_still_finds_its_expectation() {
    // Proves trimming below a snapshot never breaks the fence.
    let nats = NatsCluster::start(1);
    runtime().block_on(async {
        let cluster = join(&nats, "solo").await;
        let journal = &cluster.journal;
        assert_eq!(journal.replicas(), 1, "one server, one replica");
        let mut fence = Fence::new("a", 0);
        for i in 0..4 {
            append(journal, &mut fence, 1, format!("b{i}").as_bytes()).await;
        }
        assert_eq!(
            journal.purge_up_to(5).await.unwrap(),
            4,
            "1..=4 go, 5 stays"
        );
        let seq = append(journal, &mut fence, 1, b"after").await;
        assert_eq!(seq, 6);
        let mut follow = journal.read_from(5).await.unwrap();
        assert_eq!(next(&mut follow).await.seq, 5);
        assert_eq!(next(&mut follow).await.seq, 6);
        let mut from_start = journal.read_from(1).await.unwrap();
        let gap = tokio::time::timeout(Duration::from_secs(10), from_start.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            gap,
            Err(ReadError::Gap {
                expected: 1,
                found: 5
            })
        );
    });
}
