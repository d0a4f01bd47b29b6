//! Whether this node accepts changes now ([`Engine::readiness`]), for
//! `GET /ready` and a load balancer: liveness (`/health`) says the process
//! runs; readiness says a change sent now can succeed.

use crate::engine::Engine;
use std::sync::atomic::{AtomicBool, Ordering};

/// The node's readiness, most pressing first when several hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Changes are accepted.
    Ready,
    /// Started but not yet serving: the new data dir is being seeded.
    Starting,
    /// Storage failed: every change is refused until restarted. The text
    /// says what failed.
    StorageUnavailable(String),
    /// A standby of a cluster, following the leader (given when known).
    Standby { leader: Option<String> },
    /// Shutting down: in-flight work finishes, nothing new should come.
    Stopping,
}

impl Readiness {
    /// The `status` of `/ready`.
    pub fn status(&self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Starting => "starting",
            Readiness::StorageUnavailable(_) => "storage_unavailable",
            Readiness::Standby { .. } => "standby",
            Readiness::Stopping => "stopping",
        }
    }

    /// A sentence for the operator: why changes are not accepted.
    pub fn detail(&self) -> String {
        match self {
            Readiness::Ready => "this node accepts changes".to_owned(),
            Readiness::Starting => {
                "the node is starting: the new data dir is being seeded".to_owned()
            }
            Readiness::StorageUnavailable(what) => what.clone(),
            Readiness::Standby { leader: Some(url) } => {
                format!("this node is a standby; the leader is {url}")
            }
            Readiness::Standby { leader: None } => {
                "this node is a standby; the leader is not known".to_owned()
            }
            Readiness::Stopping => "the node is shutting down".to_owned(),
        }
    }

    pub fn is_ready(&self) -> bool {
        *self == Readiness::Ready
    }
}

/// The lifecycle flags the engine keeps for [`Engine::readiness`].
#[derive(Debug, Default)]
pub struct Lifecycle {
    starting: AtomicBool,
    stopping: AtomicBool,
}

impl Lifecycle {
    pub(crate) fn set_starting(&self, starting: bool) {
        self.starting.store(starting, Ordering::Release);
    }

    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn starting(&self) -> bool {
        self.starting.load(Ordering::Acquire)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

impl Engine {
    /// Whether the engine accepts changes now. Stopping wins over a storage
    /// failure, which wins over starting.
    pub fn readiness(&self) -> Readiness {
        let life = self.lifecycle();
        if life.stopping() {
            return Readiness::Stopping;
        }
        if self.is_degraded() {
            return Readiness::StorageUnavailable(
                "the journal failed to write: changes are refused until the engine is restarted"
                    .to_owned(),
            );
        }
        if life.starting() {
            return Readiness::Starting;
        }
        Readiness::Ready
    }

    /// Marks the engine as starting (`true`: not ready yet) or started.
    pub fn set_starting(&self, starting: bool) {
        self.lifecycle().set_starting(starting);
    }

    /// Marks the engine as stopping: `/ready` answers `stopping` from now
    /// on. [`Engine::shutdown`] does it too; a server calls it as soon as
    /// the signal arrives, while it still drains its requests.
    pub fn begin_stopping(&self) {
        self.lifecycle().set_stopping();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_but_ready_has_its_status_and_a_sentence() {
        // proves the /ready vocabulary: each state maps to the API.md status, and detail is never empty
        let states = [
            (Readiness::Ready, "ready"),
            (Readiness::Starting, "starting"),
            (
                Readiness::StorageUnavailable("disk full".into()),
                "storage_unavailable",
            ),
            (
                Readiness::Standby {
                    leader: Some("http://a:8080".into()),
                },
                "standby",
            ),
            (Readiness::Standby { leader: None }, "standby"),
            (Readiness::Stopping, "stopping"),
        ];
        for (state, status) in states {
            assert_eq!(state.status(), status);
            assert!(!state.detail().is_empty());
            assert_eq!(state.is_ready(), status == "ready");
        }
    }
}
