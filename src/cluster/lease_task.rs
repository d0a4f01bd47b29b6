//! The task that drives a [`LeaseState`] against the [`LeaseBucket`].
//!
//! It ticks the state machine, performs each [`Action`] with a timeout of
//! `request_timeout_ms`, reports the outcome, and publishes the role. The
//! state lives behind a mutex that is never held across an await, so the
//! journal writer's [`LeaseHandle::permit`] answers at once, from the
//! deadline, whatever the task is waiting for.

use super::lease::{Action, LeaseState, LeaseValue, Role};
use super::lease_bucket::{LeaseBucket, LeaseOpError};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Milliseconds on this process's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

struct Shared {
    state: Mutex<LeaseState>,
    clock: MonotonicClock,
    wake: Notify,
    role: watch::Sender<Role>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, LeaseState> {
        // The state machine cannot panic halfway (no I/O, no unwrap), so a
        // poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_role(&self) {
        let role = self.state().role(self.clock.now_ms());
        self.role
            .send_if_modified(|r| std::mem::replace(r, role) != role);
    }
}

/// What the journal writer and the HTTP layer hold.
#[derive(Clone)]
pub struct LeaseHandle {
    shared: Arc<Shared>,
}

impl LeaseHandle {
    /// The term this node may append in now; `None` unless it leads and its
    /// deadline has not passed. Ask right before each append.
    pub fn permit(&self) -> Option<u64> {
        self.shared.state().permit(self.shared.clock.now_ms())
    }

    /// The role, updated by the task after each step (it may lag the
    /// deadline by a request's timeout: [`permit`](LeaseHandle::permit) does not).
    pub fn role(&self) -> watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    /// The leader as last seen (for `X-Leader`).
    pub fn holder(&self) -> Option<LeaseValue> {
        self.shared.state().holder().cloned()
    }

    /// An append was refused (fenced): leadership ends now.
    pub fn publish_refused(&self) {
        let now = self.shared.clock.now_ms();
        self.shared.state().on_publish_refused(now);
        self.shared.publish_role();
        self.shared.wake.notify_one();
    }

    /// The node's clock, the one the lease's deadline is on.
    pub fn clock(&self) -> MonotonicClock {
        self.shared.clock
    }
}

/// The running task and its handle.
pub struct LeaseTask {
    handle: LeaseHandle,
    join: JoinHandle<()>,
}

impl LeaseTask {
    /// Starts driving `state` against `bucket` on the current tokio runtime.
    pub fn start(bucket: LeaseBucket, state: LeaseState) -> LeaseTask {
        let (role, _) = watch::channel(Role::Standby);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            clock: MonotonicClock::new(),
            wake: Notify::new(),
            role,
        });
        let join = tokio::spawn(run(bucket, shared.clone()));
        LeaseTask {
            handle: LeaseHandle { shared },
            join,
        }
    }

    pub fn handle(&self) -> LeaseHandle {
        self.handle.clone()
    }

    /// Gives the lease up (deleting the key if it is still this node's) and
    /// stops the task.
    pub async fn resign(self) {
        let shared = &self.handle.shared;
        shared.state().resign(shared.clock.now_ms());
        shared.publish_role();
        shared.wake.notify_one();
        let _ = self.join.await;
    }

    /// Stops renewing without giving the lease up, as a node that hangs
    /// would: the key expires TTL after its last renewal.
    pub fn abandon(self) {
        self.join.abort();
    }
}

async fn run(bucket: LeaseBucket, shared: Arc<Shared>) {
    let timeout = Duration::from_millis(shared.state().config().request_timeout_ms);
    loop {
        let now = shared.clock.now_ms();
        let action = shared.state().on_tick(now);
        shared.publish_role();
        match action {
            Action::Wait { until_ms } => {
                if until_ms == u64::MAX {
                    return; // resigned, nothing left to release
                }
                let wait = Duration::from_millis(until_ms.saturating_sub(now).max(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.wake.notified() => {}
                }
            }
            Action::Acquire => acquire(&bucket, &shared, timeout).await,
            Action::Renew { revision, value } => {
                let outcome = within(timeout, bucket.update(&value, revision)).await;
                let after = shared.clock.now_ms();
                let mut state = shared.state();
                match outcome {
                    Ok(revision) => state.on_renewed(revision, now),
                    Err(LeaseOpError::Conflict) => state.on_renew_refused(after),
                    Err(_) => state.on_renew_failed(after),
                }
            }
            Action::Read => {
                let current = within(timeout, bucket.read()).await;
                let after = shared.clock.now_ms();
                match current {
                    Ok(current) => shared.state().on_lease_read(after, current),
                    Err(_) => shared.state().on_renew_failed(after),
                }
            }
            Action::Release { revision } => {
                let _ = within(timeout, bucket.release(revision)).await;
            }
        }
    }
}

async fn acquire(bucket: &LeaseBucket, shared: &Shared, timeout: Duration) {
    let term = match within(timeout, bucket.next_term()).await {
        Ok(term) => term,
        Err(_) => {
            shared
                .state()
                .on_acquire_failed(shared.clock.now_ms(), None);
            return;
        }
    };
    let value = shared.state().value(term);
    let sent = shared.clock.now_ms();
    match within(timeout, bucket.create(&value)).await {
        Ok(revision) => shared.state().on_acquired(revision, term, sent),
        Err(LeaseOpError::Taken) => {
            let holder = within(timeout, bucket.read())
                .await
                .ok()
                .flatten()
                .map(|(v, _)| v);
            shared
                .state()
                .on_acquire_failed(shared.clock.now_ms(), holder);
        }
        Err(_) => shared
            .state()
            .on_acquire_failed(shared.clock.now_ms(), None),
    }
}

async fn within<T>(
    timeout: Duration,
    op: impl Future<Output = Result<T, LeaseOpError>>,
) -> Result<T, LeaseOpError> {
    tokio::time::timeout(timeout, op)
        .await
        .unwrap_or_else(|_| Err(LeaseOpError::Unavailable("timed out".into())))
}
