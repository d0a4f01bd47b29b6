//! Trimming the cluster's journal stream, with real processes: three
//! nats-servers and `commerce-engine serve --cluster` nodes (the starters
//! and load of `cluster_engine`), the leader trimming every second. Every
//! node reports where its store stands; the leader purges the stream
//! below the least report; a node away holds it back; `cluster-forget`
//! releases it; a node whose store ends below the stream's first message
//! stops at start and asks for a copy of a current node's data dir.

use crate::cluster_engine::{
    assert_holds, gauge, populate, setup_with, start_load, wait_paid, wait_ready, Node, Setup, Shop,
};
use crate::cluster_support::NatsCluster;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The sentence a node that cannot follow a trimmed stream stops with.
const NEEDS_COPY: &str = "needs a copy of a current node's data dir";

const TRIM_EVERY_SECOND: [&str; 2] = ["--cluster-trim-secs", "1"];

fn node(id: &'static str, dir: &std::path::Path, nats: &NatsCluster) -> Node {
    let mut node = Node::new(id, dir, nats.urls());
    node.extra = TRIM_EVERY_SECOND.iter().map(|s| s.to_string()).collect();
    node
}

/// Node `id`'s report in the cluster's bucket (its stream sequence).
async fn report(nats: &NatsCluster, id: &str) -> Option<u64> {
    let client = async_nats::connect(nats.url(0)).await.expect("connects");
    let kv = async_nats::jetstream::new(client)
        .get_key_value("shop-nodes")
        .await
        .expect("the report bucket");
    let value = kv.get(id).await.expect("a read")?;
    let report: serde_json::Value = serde_json::from_slice(&value).expect("json");
    report["stream_seq"].as_u64()
}

/// The stream sequence in `node`'s `cluster-position` file.
fn kept_position(node: &Node) -> u64 {
    let text = std::fs::read_to_string(node.data.join("cluster-position")).expect("position file");
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("record and stream sequence")
}

/// Waits until `name` on `node`'s `/metrics` satisfies `ok`; its value.
async fn wait_gauge(
    shop: &Shop,
    node: &Node,
    name: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = gauge(&shop.client, &node.base(), name).await {
            if ok(v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} on node {} not as wanted within {within:?}; log:\n{}",
            node.id,
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the standby has applied what the leader had appended when
/// asked (it keeps up under load: the lag gauge alone may never read 0
/// while batches keep coming).
async fn wait_follows(shop: &Shop, leader: &Node, standby: &Node) {
    let target = gauge(&shop.client, &leader.base(), "cluster_applied_seq")
        .await
        .expect("the leader's applied sequence");
    wait_gauge(
        shop,
        standby,
        "cluster_applied_seq",
        Duration::from_secs(20),
        |v| v >= target,
    )
    .await;
}

/// Waits until `node`'s process has ended; its log holds `sentence`.
async fn wait_stopped_saying(node: &mut Node, sentence: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while node.alive() {
        assert!(
            Instant::now() < deadline,
            "node {} still runs; log:\n{}",
            node.id,
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_logged(node, sentence).await;
}

/// Waits until `node`'s log holds `line` (lines reach the file within
/// 200 ms: a buffered writer).
async fn wait_logged(node: &Node, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&node.log)
        .expect("log")
        .contains(line)
    {
        assert!(
            Instant::now() < deadline,
            "node {} did not log {line:?}; log:\n{}",
            node.id,
            node.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `commerce-engine cluster-forget` for `id`: success and its output.
fn forget(nats: &NatsCluster, id: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
        .args(["cluster-forget", "--cluster"])
        .arg(nats.urls().join(","))
        .args(["--cluster-name", "shop", "--node-id", id])
        .env_remove("COMMERCE_CLUSTER")
        .env_remove("COMMERCE_CLUSTER_NAME")
        .output()
        .expect("cluster-forget runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stream_is_trimmed_below_the_least_report_held_by_a_node_away_and_released_by_cluster_forget(
) {
    // proves under load: the stream's first sequence advances while both nodes keep up; a killed standby's report never exceeds its kept position and holds trimming there; restarted (its place found by a search of the trimmed stream) it catches up and trimming resumes; an empty node joining after a trim and a forgotten node whose store the stream passed stop with the sentence; cluster-forget refuses the leader and releases a departed node; every acknowledged effect is held by the leader that took over
    let Setup {
        nats,
        dir,
        mut a,
        mut b,
        shop,
    } = setup_with(&TRIM_EVERY_SECOND).await;
    populate(&shop).await;
    let (stop, acked, task) = start_load(&shop);
    wait_paid(&acked, 30).await;

    // Trimming follows the load, and the standby keeps up.
    let first = wait_gauge(
        &shop,
        &a,
        "cluster_stream_first_seq",
        Duration::from_secs(30),
        |v| v > 1.0,
    )
    .await;
    wait_paid(&acked, 30).await;
    wait_gauge(
        &shop,
        &a,
        "cluster_stream_first_seq",
        Duration::from_secs(30),
        |v| v > first,
    )
    .await;
    wait_follows(&shop, &a, &b).await;
    eprintln!("the stream's first sequence went from 1 past {first} under load");

    // A standby away holds trimming at its report, which its disk holds.
    b.kill9();
    let held = report(&nats, "b").await.expect("b reported");
    assert!(
        held <= kept_position(&b),
        "b reported {held}, past its kept position {}",
        kept_position(&b)
    );
    wait_gauge(
        &shop,
        &a,
        "cluster_trim_floor_seq",
        Duration::from_secs(30),
        |v| v == held as f64,
    )
    .await;
    eprintln!("b, killed, holds trimming at {held}");
    for _ in 0..3 {
        wait_paid(&acked, 30).await;
        let first = gauge(&shop.client, &a.base(), "cluster_stream_first_seq")
            .await
            .expect("first sequence");
        assert!(
            first <= (held + 1) as f64,
            "trimmed to {first}, past b's report {held}"
        );
    }

    // A node with an empty data dir cannot join the trimmed stream.
    let mut c = node("c", dir.path(), &nats);
    c.start();
    wait_stopped_saying(&mut c, NEEDS_COPY).await;
    assert_eq!(
        report(&nats, "c").await,
        None,
        "a node that stopped at start reported nothing"
    );

    // Back without its position file: a search of the trimmed stream
    // places it, it catches up, and trimming resumes past its old report.
    std::fs::remove_file(b.data.join("cluster-position")).expect("b's position file");
    b.start();
    wait_ready(&shop.client, &b, "standby", Duration::from_secs(30)).await;
    wait_logged(&b, "placed in the journal stream by a search").await;
    wait_paid(&acked, 30).await;
    wait_follows(&shop, &a, &b).await;
    wait_gauge(
        &shop,
        &a,
        "cluster_stream_first_seq",
        Duration::from_secs(30),
        |v| v > (held + 1) as f64,
    )
    .await;

    // The leader goes; the standby takes over with a trimmed stream.
    a.kill9();
    wait_ready(&shop.client, &b, "ready", Duration::from_secs(10)).await;
    wait_paid(&acked, 30).await;
    let (ok, said) = forget(&nats, "b");
    assert!(
        !ok && said.contains("holds the lease"),
        "forgetting the leader: {said}"
    );
    let held = report(&nats, "a").await.expect("a reported");
    wait_gauge(
        &shop,
        &b,
        "cluster_trim_floor_seq",
        Duration::from_secs(30),
        |v| v == held as f64,
    )
    .await;
    let (ok, said) = forget(&nats, "a");
    assert!(ok && said.contains("forgot node a"), "forgetting a: {said}");
    assert_eq!(report(&nats, "a").await, None);
    // Everything a's store holds is at or below what b has applied now.
    let passed = gauge(&shop.client, &b.base(), "cluster_applied_seq")
        .await
        .expect("applied sequence");
    assert!(passed > held as f64);
    wait_gauge(
        &shop,
        &b,
        "cluster_stream_first_seq",
        Duration::from_secs(30),
        |v| v > passed + 1.0,
    )
    .await;
    eprintln!("a forgotten at {held}: trimming passed {passed}");

    // The forgotten node, with the store the stream has passed, stops.
    a.start();
    wait_stopped_saying(&mut a, NEEDS_COPY).await;

    wait_paid(&acked, 30).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("load");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert_holds(&b.base(), &acked).await;
}

#[test]
fn cluster_forget_says_why_it_did_nothing_without_a_server_or_with_a_bad_name() {
    // proves cluster-forget's failures exit non-zero with a sentence naming the cause, before or without touching a cluster
    let cases = [
        (
            vec!["--cluster", "nats://127.0.0.1:1", "--node-id", "a"],
            "no NATS server answered",
        ),
        (
            vec![
                "--cluster",
                "nats://127.0.0.1:1",
                "--cluster-name",
                "a.b",
                "--node-id",
                "a",
            ],
            "--cluster-name",
        ),
        (vec!["--cluster", "nats://127.0.0.1:1"], "--node-id"),
    ];
    for (flags, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_commerce-engine"))
            .arg("cluster-forget")
            .args(&flags)
            .env_remove("COMMERCE_CLUSTER")
            .env_remove("COMMERCE_CLUSTER_NAME")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} succeeded");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
