//! The leader's lease, as a pure state machine: no I/O, no clock.
//!
//! The lease is one key in a JetStream key-value bucket whose entries live
//! `ttl_ms` after their last write (the bucket's `max_age`). A standby
//! takes it with `create`, which succeeds only when the key is absent or
//! has expired; the leader renews it with `update` at the revision it last
//! wrote (compare-and-swap), every `renew_every_ms`.
//!
//! The leader's own deadline is counted on its own monotonic clock from the
//! moment it *sent* its last successful write: the server stored that write
//! no earlier, so nobody can `create` the key before that moment plus the
//! TTL. The deadline keeps `guard_ms` of the TTL back, for the difference in
//! rate between this node's clock and the servers' and for the skew between
//! the servers' clocks (a new stream leader expires by its own clock). Past
//! the deadline, or as soon as a renewal's compare-and-swap fails, the node
//! is no longer leader, whatever it still believes about the bucket.
//!
//! The lease makes one writer the usual case; it does not make two writers
//! impossible (a paused process wakes up with an old belief). That is the
//! fence's job ([`super::fence`]): every append carries the stream sequence
//! it expects to follow, so a stale writer's append is refused.
//!
//! The driver ([`super::lease_task`]) calls [`LeaseState::on_tick`] and
//! performs the [`Action`] it returns, then reports the outcome with one of
//! the `on_*` methods, passing the time in. The journal writer asks
//! [`LeaseState::permit`] before each append and reports a refused append
//! with [`LeaseState::on_publish_refused`].

use serde::{Deserialize, Serialize};

/// Timing of the lease, in milliseconds of each node's monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long the key lives after its last write: the bucket's `max_age`.
    pub ttl_ms: u64,
    /// A leader renews this long after it sent its last successful renewal.
    pub renew_every_ms: u64,
    /// Kept back from the TTL in the leader's deadline: covers the drift of
    /// this node's clock against the servers' over one TTL and the skew
    /// between the servers' clocks.
    pub guard_ms: u64,
    /// A standby tries to take the lease this often; a leader whose renewal
    /// failed retries this soon.
    pub retry_every_ms: u64,
    /// One request to the bucket (create, update, read) counts as failed
    /// after this long.
    pub request_timeout_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl_ms: 3_000,
            renew_every_ms: 1_000,
            guard_ms: 1_000,
            retry_every_ms: 250,
            request_timeout_ms: 800,
        }
    }
}

/// A lease configuration that cannot keep its promise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("lease configuration: {0}")]
pub struct LeaseConfigError(pub &'static str);

impl LeaseConfig {
    /// Checks that a leader renews, and hears back, well before its deadline.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        if self.guard_ms == 0 || self.guard_ms >= self.ttl_ms {
            return Err(LeaseConfigError(
                "guard_ms must be above 0 and below ttl_ms",
            ));
        }
        let held_ms = self.ttl_ms - self.guard_ms;
        if self.renew_every_ms + self.request_timeout_ms >= held_ms {
            return Err(LeaseConfigError(
                "renew_every_ms + request_timeout_ms must be below ttl_ms - guard_ms",
            ));
        }
        if self.retry_every_ms == 0 || self.request_timeout_ms == 0 {
            return Err(LeaseConfigError(
                "retry_every_ms and request_timeout_ms must be above 0",
            ));
        }
        if self.ttl_ms > 3_600_000 {
            return Err(LeaseConfigError("ttl_ms must be at most an hour"));
        }
        Ok(())
    }

    /// How long a write sent at `sent_ms` keeps its writer leader.
    fn deadline(&self, sent_ms: u64) -> u64 {
        sent_ms.saturating_add(self.ttl_ms - self.guard_ms)
    }
}

/// What the lease key holds: who leads, where to reach it, and its term.
///
/// Terms increase with each new leader: a candidate's term is the bucket's
/// last revision plus one, read before its `create`, and every earlier
/// leader's term is at most its own `create`'s revision, which is at most
/// that last revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub node: String,
    pub url: String,
    pub term: u64,
}

/// Whether this node may act as the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Standby,
    Leader { term: u64 },
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing before this time (or before an event reported by the writer).
    Wait { until_ms: u64 },
    /// Read the bucket's next term, then `create` the key with
    /// `(node, url, term)`; report with `on_acquired` or `on_acquire_failed`.
    /// The send time passed to `on_acquired` is taken right before `create`.
    Acquire,
    /// `update` the key to `value` at `revision`; report with `on_renewed`
    /// (with the time of this tick), `on_renew_refused` or `on_renew_failed`.
    Renew { revision: u64, value: LeaseValue },
    /// Read the key (linearizably, from the stream's leader) and report
    /// with `on_lease_read`: a renewal was refused while an earlier one's
    /// outcome is unknown, and it may be that one that moved the revision.
    Read,
    /// Delete the key if it is still at `revision` (so that a standby need
    /// not wait for the TTL); the outcome does not matter.
    Release { revision: u64 },
}

/// Why a leader stopped being one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepDown {
    /// Its deadline passed without a successful renewal.
    Expired,
    /// A renewal's compare-and-swap failed: someone else wrote the key.
    LeaseLost,
    /// An append to the journal was refused: someone else appended.
    Fenced,
    /// It gave the lease up.
    Resigned,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    term: u64,
    revision: u64,
    deadline_ms: u64,
    next_renew_ms: u64,
    /// Send time of the renewal in flight, if one is.
    renew_sent_ms: Option<u64>,
    /// Send time of the earliest renewal whose outcome is unknown (timed
    /// out): it may have been stored, so the revision may have moved.
    in_doubt_since_ms: Option<u64>,
    /// A renewal was refused while one was in doubt: read the key next.
    must_read: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Standby { next_attempt_ms: u64 },
    Acquiring,
    Leader(Held),
}

/// One node's view of the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    config: LeaseConfig,
    node: String,
    url: String,
    phase: Phase,
    /// The highest term this node has seen (its own or a holder's).
    highest_term: u64,
    /// The holder as last seen, for `X-Leader`.
    holder: Option<LeaseValue>,
    /// A lease to release once the driver gets to it.
    release: Option<u64>,
    last_step_down: Option<StepDown>,
}

impl LeaseState {
    /// A standby that tries to take the lease at its first tick.
    pub fn new(config: LeaseConfig, node: impl Into<String>, url: impl Into<String>) -> Self {
        LeaseState {
            config,
            node: node.into(),
            url: url.into(),
            phase: Phase::Standby { next_attempt_ms: 0 },
            highest_term: 0,
            holder: None,
            release: None,
            last_step_down: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The value this node writes for `term`.
    pub fn value(&self, term: u64) -> LeaseValue {
        LeaseValue {
            node: self.node.clone(),
            url: self.url.clone(),
            term,
        }
    }

    /// The term this node may append in now, if it is the leader and its
    /// deadline has not passed.
    pub fn permit(&self, now_ms: u64) -> Option<u64> {
        match &self.phase {
            Phase::Leader(held) if now_ms < held.deadline_ms => Some(held.term),
            _ => None,
        }
    }

    /// The role as of `now_ms` (a leader past its deadline is a standby
    /// already, before its next tick says so).
    pub fn role(&self, now_ms: u64) -> Role {
        match self.permit(now_ms) {
            Some(term) => Role::Leader { term },
            None => Role::Standby,
        }
    }

    /// The leader as last seen in the bucket (this node itself when it leads).
    pub fn holder(&self) -> Option<&LeaseValue> {
        self.holder.as_ref()
    }

    /// The leader's deadline, when this node holds the lease.
    pub fn deadline_ms(&self) -> Option<u64> {
        match &self.phase {
            Phase::Leader(held) => Some(held.deadline_ms),
            _ => None,
        }
    }

    /// Why this node last stopped leading.
    pub fn last_step_down(&self) -> Option<StepDown> {
        self.last_step_down
    }

    /// What to do now.
    pub fn on_tick(&mut self, now_ms: u64) -> Action {
        if let Phase::Leader(held) = &self.phase {
            if now_ms >= held.deadline_ms {
                self.step_down(now_ms, StepDown::Expired);
            }
        }
        if let Some(revision) = self.release.take() {
            return Action::Release { revision };
        }
        let renew_every_ms = self.config.renew_every_ms;
        let request_timeout_ms = self.config.request_timeout_ms;
        match &mut self.phase {
            Phase::Standby { next_attempt_ms } if now_ms >= *next_attempt_ms => {
                self.phase = Phase::Acquiring;
                Action::Acquire
            }
            Phase::Standby { next_attempt_ms } => Action::Wait {
                until_ms: *next_attempt_ms,
            },
            Phase::Acquiring => Action::Wait {
                until_ms: now_ms.saturating_add(request_timeout_ms),
            },
            Phase::Leader(held) if held.must_read => {
                held.must_read = false;
                Action::Read
            }
            Phase::Leader(held) => match held.renew_sent_ms {
                Some(_) => Action::Wait {
                    until_ms: held.deadline_ms,
                },
                None if now_ms >= held.next_renew_ms => {
                    held.renew_sent_ms = Some(now_ms);
                    held.next_renew_ms = now_ms.saturating_add(renew_every_ms);
                    let (revision, term) = (held.revision, held.term);
                    Action::Renew {
                        revision,
                        value: self.value(term),
                    }
                }
                None => Action::Wait {
                    until_ms: held.next_renew_ms.min(held.deadline_ms),
                },
            },
        }
    }

    /// The `create` sent at `sent_ms` stored `(node, url, term)` at `revision`.
    pub fn on_acquired(&mut self, revision: u64, term: u64, sent_ms: u64) {
        if self.phase != Phase::Acquiring {
            // Resigned meanwhile: the key is ours, give it back.
            self.release = Some(revision);
            return;
        }
        if term <= self.highest_term {
            // A term must exceed every term seen; a bucket that was reset
            // under a running cluster could break that. Refuse to lead.
            self.release = Some(revision);
            self.phase = Phase::Standby {
                next_attempt_ms: sent_ms.saturating_add(self.config.retry_every_ms),
            };
            return;
        }
        self.highest_term = term;
        self.holder = Some(self.value(term));
        self.phase = Phase::Leader(Held {
            term,
            revision,
            deadline_ms: self.config.deadline(sent_ms),
            next_renew_ms: sent_ms.saturating_add(self.config.renew_every_ms),
            renew_sent_ms: None,
            in_doubt_since_ms: None,
            must_read: false,
        });
    }

    /// The `create` did not take the key: held by `holder` (when read), or
    /// the bucket could not be reached.
    pub fn on_acquire_failed(&mut self, now_ms: u64, holder: Option<LeaseValue>) {
        if let Some(h) = &holder {
            self.highest_term = self.highest_term.max(h.term);
        }
        if holder.is_some() {
            self.holder = holder;
        }
        if self.phase == Phase::Acquiring {
            self.phase = Phase::Standby {
                next_attempt_ms: now_ms.saturating_add(self.config.retry_every_ms),
            };
        }
    }

    /// The renewal sent at `sent_ms` stored the key at `revision`.
    pub fn on_renewed(&mut self, revision: u64, sent_ms: u64) {
        let config = &self.config;
        let Phase::Leader(held) = &mut self.phase else {
            // Stepped down while the renewal was in flight (fenced,
            // resigned): the key is still ours at `revision`; give it back
            // rather than make the next leader wait a TTL.
            self.release = Some(revision);
            return;
        };
        if held.renew_sent_ms == Some(sent_ms) {
            // It was a compare-and-swap on the last known revision, so no
            // renewal in doubt was stored before it.
            held.revision = revision;
            held.deadline_ms = held.deadline_ms.max(config.deadline(sent_ms));
            held.renew_sent_ms = None;
            held.in_doubt_since_ms = None;
        }
    }

    /// The renewal's outcome is unknown (timed out, connection lost): it may
    /// or may not have been stored. The deadline stays where it was.
    pub fn on_renew_failed(&mut self, now_ms: u64) {
        let retry_ms = self.config.retry_every_ms;
        if let Phase::Leader(held) = &mut self.phase {
            if let Some(sent) = held.renew_sent_ms.take() {
                held.in_doubt_since_ms = Some(held.in_doubt_since_ms.unwrap_or(sent));
            }
            held.next_renew_ms = now_ms.saturating_add(retry_ms);
        }
    }

    /// The renewal's compare-and-swap failed. With no earlier renewal in
    /// doubt, someone else wrote the key: leadership ends now. Otherwise
    /// the next tick reads the key ([`Action::Read`]).
    pub fn on_renew_refused(&mut self, now_ms: u64) {
        let Phase::Leader(held) = &mut self.phase else {
            return;
        };
        held.renew_sent_ms = None;
        if held.in_doubt_since_ms.is_none() {
            self.step_down(now_ms, StepDown::LeaseLost);
        } else {
            held.must_read = true;
        }
    }

    /// The key as read after a refused renewal. If it holds this node's term,
    /// a renewal in doubt was stored: adopt its revision, with the deadline
    /// of the earliest renewal in doubt. Otherwise the lease is lost.
    pub fn on_lease_read(&mut self, now_ms: u64, current: Option<(LeaseValue, u64)>) {
        let Phase::Leader(held) = &mut self.phase else {
            return;
        };
        match (current, held.in_doubt_since_ms) {
            (Some((value, revision)), Some(since))
                if value.node == self.node && value.term == held.term =>
            {
                held.revision = revision;
                held.deadline_ms = held.deadline_ms.max(self.config.deadline(since));
                held.in_doubt_since_ms = None;
                held.next_renew_ms = now_ms;
            }
            (current, _) => {
                if let Some((value, _)) = current {
                    self.highest_term = self.highest_term.max(value.term);
                    self.holder = Some(value);
                }
                self.step_down(now_ms, StepDown::LeaseLost);
            }
        }
    }

    /// An append of this node's was refused by the stream's expected
    /// sequence: another writer appended. Leadership ends now.
    pub fn on_publish_refused(&mut self, now_ms: u64) {
        if matches!(self.phase, Phase::Leader(_)) {
            self.step_down(now_ms, StepDown::Fenced);
        }
    }

    /// Gives the lease up (shutdown): never tries to take it again.
    pub fn resign(&mut self, now_ms: u64) {
        if matches!(self.phase, Phase::Leader(_)) {
            self.step_down(now_ms, StepDown::Resigned);
        }
        self.phase = Phase::Standby {
            next_attempt_ms: u64::MAX,
        };
    }

    fn step_down(&mut self, now_ms: u64, why: StepDown) {
        if let Phase::Leader(held) = &self.phase {
            self.release = Some(held.revision);
            if self.holder.as_ref().is_some_and(|h| h.node == self.node) {
                self.holder = None;
            }
        }
        self.last_step_down = Some(why);
        // Another node demonstrably took over (it appended, or wrote the
        // key): leave the lease to the standbys that followed it for a TTL
        // rather than race them for it while behind. A node that merely
        // could not renew tries again at once.
        let hold_off_ms = match why {
            StepDown::Fenced | StepDown::LeaseLost => self.config.ttl_ms,
            StepDown::Expired | StepDown::Resigned => self.config.retry_every_ms,
        };
        self.phase = Phase::Standby {
            next_attempt_ms: now_ms.saturating_add(hold_off_ms),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader_at(now: u64) -> LeaseState {
        let mut s = LeaseState::new(LeaseConfig::default(), "a", "http://a");
        assert_eq!(s.on_tick(now), Action::Acquire);
        s.on_acquired(7, 5, now);
        s
    }

    #[test]
    fn a_new_leader_may_append_until_ttl_minus_guard_after_its_create_was_sent() {
        // Proves the deadline counts from the send time, not the reply.
        let s = leader_at(1_000);
        assert_eq!(s.permit(2_999), Some(5));
        assert_eq!(s.permit(3_000), None);
    }

    #[test]
    fn a_renewal_moves_the_deadline_to_its_own_send_time_plus_ttl_minus_guard() {
        // Proves renewals extend leadership and use the revision they stored.
        let mut s = leader_at(0);
        let Action::Renew { revision, .. } = s.on_tick(1_000) else {
            panic!("renews at 1 s")
        };
        assert_eq!(revision, 7);
        s.on_renewed(9, 1_000);
        assert_eq!(s.permit(2_999), Some(5));
        assert_eq!(s.deadline_ms(), Some(3_000));
        let Action::Renew { revision, .. } = s.on_tick(2_000) else {
            panic!("renews again at 2 s")
        };
        assert_eq!(revision, 9);
    }

    #[test]
    fn a_refused_renewal_with_nothing_in_doubt_ends_leadership_at_once() {
        // Proves a failed compare-and-swap is not retried: the key is someone else's.
        let mut s = leader_at(0);
        s.on_tick(1_000);
        s.on_renew_refused(1_010);
        assert_eq!(s.permit(1_010), None);
        assert_eq!(s.on_tick(1_010), Action::Release { revision: 7 });
        assert_eq!(s.last_step_down(), Some(StepDown::LeaseLost));
    }

    #[test]
    fn a_renewal_in_doubt_that_was_stored_is_adopted_with_its_earlier_send_time() {
        // Proves a lost reply does not cost the lease, and the deadline stays conservative.
        let mut s = leader_at(0);
        s.on_tick(1_000);
        s.on_renew_failed(1_500);
        let Action::Renew { revision, .. } = s.on_tick(1_750) else {
            panic!("retries")
        };
        assert_eq!(revision, 7);
        s.on_renew_refused(1_760);
        assert_eq!(s.on_tick(1_760), Action::Read);
        s.on_lease_read(1_770, Some((s.value(5), 8)));
        assert_eq!(
            s.deadline_ms(),
            Some(3_000),
            "from the send at 1 s, not 1.75 s"
        );
        let Action::Renew { revision, .. } = s.on_tick(1_780) else {
            panic!("renews at the adopted revision")
        };
        assert_eq!(revision, 8);
    }

    #[test]
    fn a_renewal_that_succeeds_after_the_node_stepped_down_is_released() {
        // Proves a fenced leader whose renewal was in flight does not keep the key for a TTL.
        let mut s = leader_at(0);
        s.on_tick(1_000);
        s.on_publish_refused(1_010);
        assert_eq!(s.on_tick(1_010), Action::Release { revision: 7 });
        s.on_renewed(8, 1_000);
        assert_eq!(s.on_tick(1_020), Action::Release { revision: 8 });
        assert_eq!(s.permit(1_020), None);
        assert_eq!(
            s.on_tick(1_300),
            Action::Wait { until_ms: 4_010 },
            "leaves the lease to the others for a TTL"
        );
    }

    #[test]
    fn a_leader_past_its_deadline_has_no_permit_even_before_its_next_tick() {
        // Proves the writer's check does not depend on the driver running.
        let s = leader_at(0);
        assert_eq!(s.role(1_999), Role::Leader { term: 5 });
        assert_eq!(s.role(2_000), Role::Standby);
    }

    #[test]
    fn a_term_not_above_every_term_seen_is_refused_and_released() {
        // Proves terms only increase on this node.
        let mut s = LeaseState::new(LeaseConfig::default(), "a", "http://a");
        s.on_tick(0);
        s.on_acquire_failed(
            0,
            Some(LeaseValue {
                node: "b".into(),
                url: "http://b".into(),
                term: 9,
            }),
        );
        assert_eq!(s.on_tick(500), Action::Acquire);
        s.on_acquired(12, 9, 500);
        assert_eq!(s.permit(501), None);
        assert_eq!(s.on_tick(502), Action::Release { revision: 12 });
    }

    #[test]
    fn the_default_configuration_is_valid_and_a_tight_one_is_not() {
        // Proves validate() refuses a renewal period that leaves no time to hear back.
        assert_eq!(LeaseConfig::default().validate(), Ok(()));
        let tight = LeaseConfig {
            renew_every_ms: 1_500,
            ..LeaseConfig::default()
        };
        assert!(tight.validate().is_err());
    }
}
