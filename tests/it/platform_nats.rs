//! The data platform on NATS JetStream (`--data-platform-url
//! nats://host:port/subject`): a real nats-server, a stream that captures
//! the subject, and an engine on a sled dir that pays orders, is restarted
//! while events are under way, and pays more. Every paid order's event is
//! in the stream exactly once, under `Nats-Msg-Id` = its `event_id`.

use crate::cluster_support::NatsCluster;
use crate::durability_support::{manual_clock, runtime, start};
use crate::platform_sink::{event_ids, pay_orders_concurrently, sink_config, wait_until};
use async_nats::jetstream;
use commerce_engine::domain::ids::OrderId;
use commerce_engine::engine::delivery::nats::NatsTarget;
use commerce_engine::engine::DataPlatform;
use commerce_engine::store::SledStore;
use serde_json::Value;
use std::collections::BTreeMap;

const STREAM: &str = "PLATFORM";
const SUBJECT: &str = "shop.events";

/// Every message of the stream: its `Nats-Msg-Id` and its body's `event_id`.
async fn messages(stream: &jetstream::stream::Stream) -> Vec<(String, String)> {
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("a message");
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&m.payload).expect("json");
        out.push((id, body["event_id"].as_str().unwrap_or_default().to_owned()));
    }
    out
}

#[test]
fn every_paid_orders_event_lands_once_in_the_stream_across_a_restart_mid_delivery() {
    // proves the NATS sink: one message per paid order with Nats-Msg-Id = event_id, none lost and none doubled although the engine stopped while events were under way and sent them again
    let nats = NatsCluster::start(1);
    let rt = runtime();
    let stream = rt.block_on(async {
        let client = async_nats::connect(nats.url(0)).await.expect("connects");
        jetstream::new(client)
            .create_stream(jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                ..Default::default()
            })
            .await
            .expect("the platform's stream")
    });
    let target = NatsTarget::parse(&format!("{}/{SUBJECT}", nats.url(0))).expect("url");
    let config = sink_config(DataPlatform::Nats(target));
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();

    let first: Vec<OrderId> = {
        let engine = start(
            config.clone(),
            SledStore::open(dir.path()).unwrap(),
            clock.clone(),
        );
        let paid = rt.block_on(pay_orders_concurrently(&engine, 600, 8));
        // Stopped mid-way: some events stored, others under way or unsent.
        wait_until("some events reach the stream", || {
            rt.block_on(stream.get_info()).unwrap().state.messages > 0
        });
        engine.shutdown();
        paid
    };
    let engine = start(
        config.clone(),
        SledStore::open(dir.path()).unwrap(),
        clock.clone(),
    );
    let more = rt.block_on(pay_orders_concurrently(&engine, 300, 8));
    let all: Vec<OrderId> = first.iter().chain(&more).copied().collect();
    let want = event_ids(&all);
    wait_until("every event is in the stream and settled", || {
        rt.block_on(stream.get_info()).unwrap().state.messages >= want.len() as u64
            && engine.outbox_pending() == 0
    });
    engine.shutdown();

    let got = rt.block_on(messages(&stream));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, event_id) in &got {
        assert_eq!(id, event_id, "Nats-Msg-Id is the event's id");
        *counts.entry(id.as_str()).or_default() += 1;
    }
    assert!(
        counts.values().all(|&n| n == 1),
        "an event stored twice: {:?}",
        counts.iter().filter(|(_, &n)| n > 1).collect::<Vec<_>>()
    );
    assert_eq!(
        counts
            .keys()
            .map(|k| k.to_string())
            .collect::<std::collections::BTreeSet<_>>(),
        want,
        "every paid order's event, and nothing else"
    );
}
