//! The lease and the fence, deterministically: the real state machines
//! (`LeaseState`, `Fence`) of two nodes against in-process fakes of the
//! stream (expected last sequence, message-id deduplication) and of the
//! key-value bucket (revisions, TTL by the server's clock), on manual clocks.
//!
//! Each event is one step a real node takes: a lease tick and the request
//! it makes (answered, or with its reply lost, or lost on the way), the
//! permit check and send of an append (`Prepare`), the append reaching the
//! stream (`Land`, or with its ack lost), time passing. Named scenarios
//! cover the interleavings the design names; then every schedule of up to
//! six events from a few starting states, and long random schedules with
//! skewed clocks. After every event: no batch is in the stream twice,
//! every acknowledged batch is where its ack said, terms never go back in
//! the stream, and (with clocks within the guard) a node with a permit is
//! the key's current holder, so two nodes never hold permits at once.

use crate::engine_support::Rng;
use commerce_engine::cluster::fence::{Refusal, Ticket};
use commerce_engine::cluster::{Action, Fence, LeaseConfig, LeaseState, LeaseValue, StepDown};
use std::collections::HashMap;

const TTL_MS: u64 = 3_000;
const STEP_MS: u64 = 1_000;
const DEDUP_WINDOW_MS: u64 = 120_000;

fn config() -> LeaseConfig {
    LeaseConfig {
        ttl_ms: TTL_MS,
        ..LeaseConfig::default()
    }
}

#[derive(Clone, Debug)]
struct Msg {
    id: String,
    term: u64,
    body: String,
}

/// The journal stream as JetStream keeps it.
#[derive(Clone, Debug, Default)]
struct FakeStream {
    messages: Vec<Msg>,
    dedup: HashMap<String, (u64, u64)>,
}

#[derive(Debug, PartialEq)]
enum Appended {
    Stored(u64),
    Refused,
}

impl FakeStream {
    fn last_seq(&self) -> u64 {
        self.messages.len() as u64
    }

    /// Deduplication first, then the expected last sequence; a refusal that
    /// is this very append stored earlier counts as stored (as
    /// `JournalStream::append` settles it).
    fn append(&mut self, t: &Ticket, body: &str, now: u64) -> Appended {
        if let Some(&(seq, at)) = self.dedup.get(&t.msg_id) {
            if now < at + DEDUP_WINDOW_MS {
                return Appended::Stored(seq);
            }
        }
        if self.last_seq() != t.expected_last_seq {
            let next = self.messages.get(t.expected_last_seq as usize);
            return match next {
                Some(m) if m.id == t.msg_id => Appended::Stored(t.expected_last_seq + 1),
                _ => Appended::Refused,
            };
        }
        self.messages.push(Msg {
            id: t.msg_id.clone(),
            term: t.term,
            body: body.to_owned(),
        });
        let seq = self.last_seq();
        self.dedup.insert(t.msg_id.clone(), (seq, now));
        Appended::Stored(seq)
    }
}

/// The lease bucket: one key, revisions from one counter, entries expire
/// TTL after their write. `expiry_ahead_ms` is the skew between the
/// server that stamped a write and the one that expires it (after a
/// leader change): the worst case, always ahead.
#[derive(Clone, Debug, Default)]
struct FakeKv {
    entry: Option<(LeaseValue, u64, u64)>,
    last_rev: u64,
    expiry_ahead_ms: u64,
}

#[derive(Debug, PartialEq)]
enum KvResult {
    Ok(u64),
    Taken,
    Conflict,
}

impl FakeKv {
    fn current(&self, server_now: u64) -> Option<(LeaseValue, u64)> {
        match &self.entry {
            Some((v, rev, written)) if server_now + self.expiry_ahead_ms < written + TTL_MS => {
                Some((v.clone(), *rev))
            }
            _ => None,
        }
    }

    fn write(&mut self, value: LeaseValue, server_now: u64) -> u64 {
        self.last_rev += 1;
        self.entry = Some((value, self.last_rev, server_now));
        self.last_rev
    }

    fn create(&mut self, value: LeaseValue, server_now: u64) -> KvResult {
        if self.current(server_now).is_some() {
            return KvResult::Taken;
        }
        KvResult::Ok(self.write(value, server_now))
    }

    fn update(&mut self, value: LeaseValue, rev: u64, server_now: u64) -> KvResult {
        match self.current(server_now) {
            Some((_, current)) if current == rev => KvResult::Ok(self.write(value, server_now)),
            _ => KvResult::Conflict,
        }
    }

    fn release(&mut self, rev: u64, server_now: u64) {
        if self.current(server_now).is_some_and(|(_, r)| r == rev) {
            self.last_rev += 1;
            self.entry = None;
        }
    }
}

/// A node's monotonic clock: `offset + t`, running `ppm` parts per
/// million fast (or slow, negative) against true time `t`.
#[derive(Clone, Copy, Debug)]
struct NodeClock {
    offset_ms: u64,
    ppm: i64,
}

impl NodeClock {
    fn at(&self, t: u64) -> u64 {
        let drift = (t as i64 * self.ppm) / 1_000_000;
        (self.offset_ms as i64 + t as i64 + drift) as u64
    }
}

#[derive(Clone, Debug)]
struct Pending {
    ticket: Ticket,
    body: String,
    /// Sent once already without an answer.
    sent: bool,
}

#[derive(Clone, Debug)]
struct Node {
    name: &'static str,
    lease: LeaseState,
    fence: Fence,
    clock: NodeClock,
    pending: Option<Pending>,
    batches: u64,
    acked: Vec<(u64, String)>,
    maybe: Vec<String>,
}

impl Node {
    fn new(name: &'static str, clock: NodeClock) -> Node {
        Node {
            name,
            lease: LeaseState::new(config(), name, format!("http://{name}")),
            fence: Fence::new(name, 0),
            clock,
            pending: None,
            batches: 0,
            acked: Vec::new(),
            maybe: Vec::new(),
        }
    }
}

/// What a request's reply does on the way back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Net {
    Answered,
    ReplyLost,
    RequestLost,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    Tick(usize, Net),
    Prepare(usize),
    Land(usize, Net),
    /// Time passes: a renewal period.
    Advance,
    /// Time passes: a retry pause.
    Nudge,
}

#[derive(Clone, Debug)]
struct World {
    t: u64,
    stream: FakeStream,
    kv: FakeKv,
    nodes: Vec<Node>,
    /// Whether the clocks are within the guard (exclusivity is checked).
    in_bounds: bool,
    /// Whether two nodes ever held permits at the same time.
    overlapped: bool,
}

impl World {
    fn new(clocks: [NodeClock; 2], server_ahead_ms: u64, in_bounds: bool) -> World {
        World {
            t: 0,
            stream: FakeStream::default(),
            kv: FakeKv {
                expiry_ahead_ms: server_ahead_ms,
                ..FakeKv::default()
            },
            nodes: vec![Node::new("a", clocks[0]), Node::new("b", clocks[1])],
            in_bounds,
            overlapped: false,
        }
    }

    fn fair() -> World {
        let c = NodeClock {
            offset_ms: 0,
            ppm: 0,
        };
        World::new([c, c], 0, true)
    }

    /// True time, which the servers stamp writes with.
    fn server_now(&self) -> u64 {
        self.t
    }

    fn local(&self, n: usize) -> u64 {
        self.nodes[n].clock.at(self.t)
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Tick(n, net) => self.tick(n, net),
            Event::Prepare(n) => self.prepare(n),
            Event::Land(n, net) => self.land(n, net),
            Event::Advance => self.t += STEP_MS,
            Event::Nudge => self.t += config().retry_every_ms,
        }
        self.check();
    }

    fn run(&mut self, events: &[Event]) {
        for &e in events {
            self.step(e);
        }
    }

    /// One lease tick and its request. A node without a term follows the
    /// stream first, as a standby does all the time, unless a send of its
    /// own is under way (the replicator does one thing at a time).
    fn tick(&mut self, n: usize, net: Net) {
        if self.nodes[n].fence.term().is_none() && self.nodes[n].pending.is_none() {
            self.follow(n);
        }
        let now = self.local(n);
        let server_now = self.server_now();
        let action = self.nodes[n].lease.on_tick(now);
        let node = &mut self.nodes[n];
        match action {
            Action::Wait { .. } => {}
            Action::Acquire => {
                let term = self.kv.last_rev + 1;
                let value = node.lease.value(term);
                let result = match net {
                    Net::RequestLost => None,
                    _ => Some(self.kv.create(value, server_now)),
                };
                match (result, net) {
                    (Some(KvResult::Ok(rev)), Net::Answered) => {
                        node.lease.on_acquired(rev, term, now)
                    }
                    (Some(KvResult::Taken), Net::Answered) => {
                        let holder = self.kv.current(server_now).map(|(v, _)| v);
                        node.lease.on_acquire_failed(now, holder)
                    }
                    _ => node.lease.on_acquire_failed(now, None),
                }
            }
            Action::Renew { revision, value } => {
                let result = match net {
                    Net::RequestLost => None,
                    _ => Some(self.kv.update(value, revision, server_now)),
                };
                match (result, net) {
                    (Some(KvResult::Ok(rev)), Net::Answered) => node.lease.on_renewed(rev, now),
                    (Some(KvResult::Conflict), Net::Answered) => node.lease.on_renew_refused(now),
                    _ => node.lease.on_renew_failed(now),
                }
            }
            Action::Read => match net {
                Net::Answered => node.lease.on_lease_read(now, self.kv.current(server_now)),
                _ => node.lease.on_renew_failed(now),
            },
            Action::Release { revision } => {
                if net != Net::RequestLost {
                    self.kv.release(revision, server_now);
                }
            }
        }
    }

    /// Applies every stream message the node has not.
    fn follow(&mut self, n: usize) {
        let fence = &mut self.nodes[n].fence;
        while fence.last_seq() < self.stream.last_seq() {
            let next = fence.last_seq() + 1;
            let term = self.stream.messages[next as usize - 1].term;
            fence.on_applied(next, term).unwrap();
        }
    }

    /// The writer's permit check and the start of a send: a marker when
    /// the lease's term has none yet, else the next batch; or a resend of
    /// an unanswered one, which the permit must still cover.
    fn prepare(&mut self, n: usize) {
        let now = self.local(n);
        let node = &mut self.nodes[n];
        let permit = node.lease.permit(now);
        if let Some(p) = &node.pending {
            if permit != Some(p.ticket.term) {
                // As Replicator::send: the lease ended before the outcome was known.
                node.maybe.push(p.body.clone());
                node.pending = None;
                node.fence.step_down();
            }
            return;
        }
        let Some(term) = permit else { return };
        let (ticket, body) = if node.fence.term() == Some(term) {
            node.batches += 1;
            let body = format!("{}-{}", node.name, node.batches);
            (node.fence.batch(permit).unwrap(), body)
        } else {
            match node.fence.marker(term) {
                Ok(marker) => (marker, String::new()),
                Err(_) => {
                    // As Replicator::begin_term: a stale lease steps down.
                    node.lease.on_publish_refused(now);
                    return;
                }
            }
        };
        node.pending = Some(Pending {
            ticket,
            body,
            sent: false,
        });
    }

    /// The pending append reaches the stream; its answer comes back or not.
    fn land(&mut self, n: usize, net: Net) {
        let now = self.local(n);
        let server_now = self.server_now();
        let Some(mut p) = self.nodes[n].pending.take() else {
            return;
        };
        let outcome = match net {
            Net::RequestLost => None,
            _ => Some(self.stream.append(&p.ticket, &p.body, server_now)),
        };
        let node = &mut self.nodes[n];
        match (outcome, net) {
            (Some(Appended::Stored(seq)), Net::Answered) => {
                node.fence.on_appended(&p.ticket, seq).unwrap();
                if !p.ticket.marker {
                    node.acked.push((seq, p.body));
                }
            }
            (Some(Appended::Refused), Net::Answered) => {
                if node.fence.on_refused(&p.ticket) == Refusal::Fenced {
                    node.lease.on_publish_refused(now);
                }
            }
            _ => {
                p.sent = true;
                node.pending = Some(p);
            }
        }
    }

    fn check(&mut self) {
        let mut seen = HashMap::new();
        let mut term = 0;
        for (i, m) in self.stream.messages.iter().enumerate() {
            assert!(m.term >= term, "terms go back at {}: {self:#?}", i + 1);
            term = m.term;
            if !m.body.is_empty() {
                assert!(
                    seen.insert(m.body.clone(), i + 1).is_none(),
                    "{} twice",
                    m.body
                );
            }
        }
        for node in &self.nodes {
            for (seq, body) in &node.acked {
                let stored = self.stream.messages.get(*seq as usize - 1).map(|m| &m.body);
                assert_eq!(stored, Some(body), "{}'s ack of {body} at {seq}", node.name);
            }
        }
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].lease.permit(self.local(n)).is_some())
            .collect();
        if holders.len() > 1 {
            self.overlapped = true;
        }
        if self.in_bounds {
            let current = self.kv.current(self.server_now());
            for &n in &holders {
                let node = &self.nodes[n];
                let term = node.lease.permit(self.local(n));
                assert!(
                    current
                        .as_ref()
                        .is_some_and(|(v, _)| v.node == node.name && Some(v.term) == term),
                    "{} holds a permit but not the key at t={}: {current:?}",
                    node.name,
                    self.t
                );
            }
        }
    }

    fn permit(&self, n: usize) -> Option<u64> {
        self.nodes[n].lease.permit(self.local(n))
    }

    fn body_count(&self, body: &str) -> usize {
        self.stream
            .messages
            .iter()
            .filter(|m| m.body == body)
            .count()
    }
}

use Event::{Advance, Land, Nudge, Prepare, Tick};
use Net::{Answered, ReplyLost, RequestLost};
const A: usize = 0;
const B: usize = 1;

/// `n` takes the lease and opens its term (marker stored).
fn lead(w: &mut World, n: usize) {
    w.run(&[Tick(n, Answered), Prepare(n), Land(n, Answered)]);
    assert!(w.permit(n).is_some() && w.nodes[n].fence.term().is_some());
}

/// `n` appends one batch, answered.
fn publish(w: &mut World, n: usize) {
    w.run(&[Prepare(n), Land(n, Answered)]);
}

#[test]
fn a_leader_that_renews_then_publishes_has_its_batch_acknowledged_where_the_stream_put_it() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves the plain path: acquire, marker, renew, append.
    let mut w = World::fair();
    lead(&mut w, A);
    w.run(&[Advance, Tick(A, Answered), Advance]);
    publish(&mut w, A);
    assert_eq!(w.nodes[A].acked, vec![(2, "a-1".to_string())]);
    assert!(w.permit(A).is_some(), "renewed: still leading at 2 s");
}

#[test]
fn a_leader_whose_renewals_are_lost_stops_before_its_key_expires_and_never_sends_again() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves a node that cannot renew loses its permit at its deadline, before the TTL.
    let mut w = World::fair();
    lead(&mut w, A);
    w.run(&[Advance, Tick(A, RequestLost), Advance]);
    assert_eq!(w.permit(A), None, "deadline: 2 s after the create was sent");
    assert!(
        w.kv.current(w.server_now()).is_some(),
        "the key still lives"
    );
    w.run(&[Prepare(A)]);
    assert!(w.nodes[A].pending.is_none(), "no append attempted");
    w.run(&[Advance, Tick(B, Answered)]);
    assert!(w.permit(B).is_some(), "b takes the key once it expired");
}

#[test]
fn a_renewal_lost_on_the_way_back_is_adopted_on_the_next_refusal_and_leadership_goes_on() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves an unanswered but stored renewal does not cost the lease.
    let mut w = World::fair();
    lead(&mut w, A);
    w.run(&[Advance, Tick(A, ReplyLost), Nudge]);
    w.run(&[Tick(A, Answered)]); // retry at the old revision: refused
    w.run(&[Tick(A, Answered)]); // reads the key: its own term, adopted
    assert!(w.permit(A).is_some());
    assert_eq!(w.nodes[A].lease.deadline_ms(), Some(3_000));
    w.run(&[Tick(A, Answered), Advance, Tick(A, Answered), Advance]);
    assert!(w.permit(A).is_some(), "renewing at the adopted revision");
    publish(&mut w, A);
    assert_eq!(w.nodes[A].acked.len(), 1);
}

#[test]
fn an_old_leader_paused_past_the_ttl_is_fenced_on_append_and_loses_the_lease_on_renewal() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves the pause scenario in both orders of the old leader's wake-up.
    for append_first in [true, false] {
        let mut w = World::fair();
        lead(&mut w, A);
        publish(&mut w, A);
        w.run(&[Prepare(A)]); // checked its permit, then paused
        w.run(&[Advance, Advance, Advance, Tick(B, Answered)]);
        assert!(w.permit(B).is_some(), "b leads after the TTL");
        w.run(&[Prepare(B), Land(B, Answered)]);
        publish(&mut w, B);
        assert_eq!(w.nodes[B].acked.len(), 1);
        let (first, second) = if append_first {
            (Land(A, Answered), Tick(A, Answered))
        } else {
            (Tick(A, Answered), Land(A, Answered))
        };
        w.run(&[first, second]);
        assert!(
            w.nodes[A].acked.len() == 1,
            "a's stale batch not acknowledged"
        );
        assert_eq!(w.body_count("a-2"), 0, "nor stored");
        assert_eq!(w.permit(A), None);
        assert!(matches!(
            w.nodes[A].lease.last_step_down(),
            Some(StepDown::Fenced) | Some(StepDown::Expired) | Some(StepDown::LeaseLost)
        ));
        assert!(w.permit(B).is_some(), "b unaffected");
    }
}

#[test]
fn an_old_leaders_append_landing_before_the_new_leaders_marker_is_kept_and_applied_first() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves a stray append is not lost: the new leader's marker is refused, it applies, then opens its term.
    let mut w = World::fair();
    lead(&mut w, A);
    w.run(&[Prepare(A)]);
    w.run(&[Advance, Advance, Advance, Tick(B, Answered)]);
    w.run(&[Prepare(B)]); // b's marker expects seq 1
    w.run(&[Land(A, Answered)]); // a's batch lands at 2 first
    assert_eq!(w.nodes[A].acked, vec![(2, "a-1".to_string())]);
    w.run(&[Land(B, Answered)]);
    assert_eq!(w.nodes[B].fence.term(), None, "marker refused: behind");
    assert!(w.permit(B).is_some(), "still the leader");
    w.run(&[Tick(B, Answered)]); // b applies a's batch as it follows
    assert_eq!(w.nodes[B].fence.last_seq(), 2);
    w.run(&[Prepare(B), Land(B, Answered)]);
    assert!(w.nodes[B].fence.term().is_some(), "marker after a's batch");
    publish(&mut w, B);
    assert_eq!(w.nodes[B].acked, vec![(4, "b-1".to_string())]);
}

#[test]
fn two_nodes_racing_to_take_a_free_lease_end_with_exactly_one_leader() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves create is exclusive and the loser learns who won.
    for first in [A, B] {
        let second = 1 - first;
        let mut w = World::fair();
        w.run(&[Tick(first, Answered), Tick(second, Answered)]);
        assert!(w.permit(first).is_some());
        assert_eq!(w.permit(second), None);
        assert_eq!(
            w.nodes[second].lease.holder().map(|h| h.node.as_str()),
            Some(w.nodes[first].name)
        );
    }
}

#[test]
fn an_append_whose_ack_was_lost_is_sent_again_and_stored_once() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves resends under the same message id are deduplicated, before and after the stream moved on.
    let mut w = World::fair();
    lead(&mut w, A);
    w.run(&[
        Prepare(A),
        Land(A, ReplyLost),
        Prepare(A),
        Land(A, Answered),
    ]);
    assert_eq!(w.nodes[A].acked, vec![(2, "a-1".to_string())]);
    assert_eq!(w.body_count("a-1"), 1);
    // Outside the deduplication window the stream refuses it, and the
    // refusal is settled as this very append.
    w.run(&[Prepare(A), Land(A, ReplyLost)]);
    w.stream.dedup.clear();
    w.run(&[Prepare(A), Land(A, Answered)]);
    assert_eq!(w.nodes[A].acked.last(), Some(&(3, "a-2".to_string())));
    assert_eq!(w.body_count("a-2"), 1);
}

#[test]
fn a_send_in_doubt_when_the_lease_ends_is_reported_as_unknown_and_stored_at_most_once() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves an unanswered append is never counted as acknowledged after the permit ends.
    let mut w = World::fair();
    lead(&mut w, A);
    w.run(&[Prepare(A), Land(A, ReplyLost), Advance, Advance, Prepare(A)]);
    assert_eq!(w.nodes[A].maybe, vec!["a-1".to_string()]);
    assert!(w.nodes[A].acked.is_empty());
    assert_eq!(w.body_count("a-1"), 1);
}

/// Every schedule of `depth` events over `alphabet` from `start`, each
/// step checked; the number of schedules run.
fn exhaust(start: &World, alphabet: &[Event], depth: usize) -> u64 {
    if depth == 0 {
        return 1;
    }
    let mut count = 0;
    for &e in alphabet {
        let mut w = start.clone();
        w.step(e);
        count += exhaust(&w, alphabet, depth - 1);
    }
    count
}

#[test]
fn every_schedule_of_six_steps_of_two_nodes_from_a_free_lease_keeps_the_invariants() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves safety over all orderings of acquire, marker, append and time from scratch.
    let alphabet = [
        Tick(A, Answered),
        Tick(B, Answered),
        Prepare(A),
        Land(A, Answered),
        Prepare(B),
        Land(B, Answered),
        Advance,
    ];
    assert_eq!(exhaust(&World::fair(), &alphabet, 6), 7u64.pow(6));
}

#[test]
fn every_schedule_of_six_steps_with_lost_replies_from_an_established_leader_keeps_the_invariants() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves safety over all orderings of renewals, lost replies, stray appends and takeover.
    let mut start = World::fair();
    lead(&mut start, A);
    publish(&mut start, A);
    start.run(&[Tick(B, Answered)]); // b follows and knows the holder
    let alphabet = [
        Tick(A, Answered),
        Tick(A, ReplyLost),
        Tick(B, Answered),
        Prepare(A),
        Land(A, Answered),
        Land(A, ReplyLost),
        Prepare(B),
        Land(B, Answered),
        Advance,
    ];
    assert_eq!(exhaust(&start, &alphabet, 6), 9u64.pow(6));
}

#[test]
fn every_schedule_of_six_steps_from_a_paused_leader_with_a_send_in_flight_keeps_the_invariants() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves safety when the old leader's append is in flight across the TTL.
    let mut start = World::fair();
    lead(&mut start, A);
    publish(&mut start, A);
    start.run(&[Prepare(A), Advance, Advance]);
    let alphabet = [
        Tick(A, Answered),
        Tick(B, Answered),
        Land(A, Answered),
        Prepare(A),
        Prepare(B),
        Land(B, Answered),
        Advance,
    ];
    assert_eq!(exhaust(&start, &alphabet, 6), 7u64.pow(6));
}

/// Random schedules' events, from the tests' one generator.
trait Events {
    fn event(&mut self) -> Event;
}

impl Events for Rng {
    fn event(&mut self) -> Event {
        let n = self.below(2) as usize;
        let net = match self.below(10) {
            0 => ReplyLost,
            1 => RequestLost,
            _ => Answered,
        };
        match self.below(8) {
            0 | 1 => Tick(n, net),
            2 | 3 => Prepare(n),
            4 | 5 => Land(n, net),
            6 => Nudge,
            _ => Advance,
        }
    }
}

/// Runs `schedules` random schedules of `length` events; how many of them
/// had two permits at once, and how many batches were acknowledged.
fn random_schedules(
    make: impl Fn(&mut Rng) -> World,
    schedules: u64,
    length: usize,
) -> (u64, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut overlapped, mut acked) = (0, 0);
    for _ in 0..schedules {
        let mut w = make(&mut rng);
        for _ in 0..length {
            let e = rng.event();
            w.step(e);
        }
        overlapped += w.overlapped as u64;
        acked += w.nodes.iter().map(|n| n.acked.len()).sum::<usize>();
    }
    (overlapped, acked)
}

#[test]
fn random_schedules_with_clock_drift_and_server_skew_within_the_guard_keep_one_permit_at_a_time() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves exclusivity holds for node clocks 10% fast or slow and servers up to 500 ms ahead.
    let (overlapped, acked) = random_schedules(
        |rng| {
            let clock = |rng: &mut Rng| NodeClock {
                offset_ms: rng.below(10_000),
                ppm: rng.below(200_001) as i64 - 100_000,
            };
            let clocks = [clock(rng), clock(rng)];
            World::new(clocks, rng.below(501), true)
        },
        3_000,
        60,
    );
    assert_eq!(overlapped, 0);
    assert!(acked > 1_000, "the schedules do append: {acked}");
}

#[test]
fn with_the_servers_clock_far_ahead_two_permits_overlap_yet_the_fence_loses_and_doubles_nothing() {
    let _heavy = crate::quiet::shared(); // CPU-heavy: never beside a cluster test
                                         // Proves the fence, not the lease, is what keeps acknowledged batches safe.
    let (overlapped, acked) = random_schedules(
        |_| {
            let c = NodeClock {
                offset_ms: 0,
                ppm: 0,
            };
            // Keys expire 2.5 s early: past the 1 s guard.
            World::new([c, c], 2_500, false)
        },
        3_000,
        60,
    );
    assert!(
        overlapped > 0,
        "the skew does break exclusivity in some schedule"
    );
    assert!(acked > 1_000, "the schedules do append: {acked}");
}
