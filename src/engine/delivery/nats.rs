//! The NATS JetStream sink (`--data-platform-url nats://host:port/subject`):
//! each event is one message on the subject, with `Nats-Msg-Id` = its
//! `event_id`, so the stream that captures the subject stores a redelivered
//! event once (within the stream's duplicate window, 2 minutes by default).
//!
//! It runs the HTTP sink's loop ([`super::http`]): the same batches of up to
//! `batch_events_max` events, up to [`super::REQUESTS_IN_FLIGHT_MAX`] in
//! flight, the same backoff and dead letters. A batch is accepted once the
//! stream acknowledged every message of it; a missing stream, a timeout or
//! a lost connection is retried (the messages acknowledged already are
//! deduplicated on the resend); a message larger than the server's
//! `max_payload` is a refusal (split, then a dead letter when alone). The
//! stream itself belongs to the data platform: the engine never creates it.

use super::http::Outcome;
use async_nats::jetstream::{self, context::PublishErrorKind};
use std::time::Duration;

/// Where events go: a NATS server and a subject, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTarget {
    /// `nats://host:port`
    pub server: String,
    pub subject: String,
}

impl NatsTarget {
    /// `nats://host:port/subject`: a host, a port, and a subject of
    /// dot-separated tokens without wildcards or white space.
    pub fn parse(text: &str) -> Result<NatsTarget, String> {
        let rest = text
            .strip_prefix("nats://")
            .ok_or_else(|| "the scheme must be nats://".to_owned())?;
        let (authority, subject) = rest
            .split_once('/')
            .ok_or_else(|| "the URL names no subject: nats://host:port/subject".to_owned())?;
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| "the URL has no port: nats://host:port/subject".to_owned())?;
        if host.is_empty() || host.contains(['@', '/', '?', '#']) {
            return Err(format!("{host:?} is not a host"));
        }
        port.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{port:?} is not a port"))?;
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'*' | b'>' | b'.'))
        };
        if subject.len() > 255 || !subject.split('.').all(token_ok) {
            return Err(format!(
                "{subject:?} is not a subject: dot-separated tokens of printable characters, no wildcards"
            ));
        }
        Ok(NatsTarget {
            server: format!("nats://{authority}"),
            subject: subject.to_owned(),
        })
    }
}

/// A connection to the target's server, made in the background: until it
/// is up, publishes fail and are retried with the sink's backoff.
pub(super) async fn connect(
    target: &NatsTarget,
    timeout: Duration,
) -> Result<jetstream::Context, String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .connect(target.server.as_str())
        .await
        .map_err(|e| e.to_string())?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(timeout)
        .build(client))
}

/// Publishes `events` (event id, JSON), all sent before any ack is awaited.
pub(super) async fn publish(
    js: jetstream::Context,
    subject: std::sync::Arc<str>,
    events: Vec<(String, Vec<u8>)>,
) -> Outcome {
    let mut acks = Vec::with_capacity(events.len());
    for (id, json) in events {
        let message = jetstream::message::PublishMessage::build()
            .payload(json.into())
            .message_id(id);
        match js.send_publish(subject.to_string(), message).await {
            Ok(ack) => acks.push(ack),
            Err(e) => return failed(e.kind(), e.to_string()),
        }
    }
    for ack in acks {
        if let Err(e) = ack.await {
            return failed(e.kind(), e.to_string());
        }
    }
    Outcome::Accepted
}

fn failed(kind: PublishErrorKind, error: String) -> Outcome {
    let error = format!("the data platform's stream: {error}");
    match kind {
        PublishErrorKind::MaxPayloadExceeded => Outcome::Refused(error),
        _ => Outcome::Retry(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nats_url_names_a_server_and_a_subject_or_is_refused() {
        // proves the start-up check of --data-platform-url nats://...: the accepted form and each malformed one
        assert_eq!(
            NatsTarget::parse("nats://127.0.0.1:4222/shop.events"),
            Ok(NatsTarget {
                server: "nats://127.0.0.1:4222".into(),
                subject: "shop.events".into()
            })
        );
        assert!(NatsTarget::parse("nats://platform:4222/events").is_ok());
        for bad in [
            "http://127.0.0.1:4222/events",
            "nats://127.0.0.1:4222",
            "nats://127.0.0.1:4222/",
            "nats://127.0.0.1/events",
            "nats://:4222/events",
            "nats://127.0.0.1:0/events",
            "nats://127.0.0.1:99999/events",
            "nats://127.0.0.1:4222/shop.*",
            "nats://127.0.0.1:4222/shop.>",
            "nats://127.0.0.1:4222/shop..events",
            "nats://127.0.0.1:4222/shop events",
        ] {
            assert!(NatsTarget::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
