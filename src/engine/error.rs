//! The engine's error: one variant per error code of `API.md` that the
//! engine can produce (the HTTP layer adds `UNAUTHORIZED`,
//! `PAYLOAD_TOO_LARGE` and its own parse errors).

use crate::domain::rejection::Rejection;
use crate::store::writer::SubmitError;
use crate::store::StorageError;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A business rule refused the command; carries the documented code.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("this idempotency key was used for another request")]
    IdempotencyKeyReused,
    #[error("the engine cannot take more work now; retry shortly")]
    Overloaded,
    /// Storage failed: nothing was acknowledged; the engine refuses writes until restarted.
    #[error("storage unavailable: {0}")]
    Storage(StorageError),
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// In a cluster: this node is a standby (or just stopped leading);
    /// nothing was stored.
    #[error("this node is not the cluster's leader")]
    NotLeader,
    /// In a cluster: leadership ended while the change was being
    /// replicated; it may have happened (retry with the same key to learn).
    #[error("leadership ended before the change's outcome was known")]
    OutcomeUnknown,
}

impl Error {
    /// The error code of `API.md`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Rejected(r) => r.code(),
            Error::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Error::Overloaded => "OVERLOADED",
            Error::Storage(_) => "STORAGE_UNAVAILABLE",
            Error::ShuttingDown => "SHUTTING_DOWN",
            Error::NotLeader => "NOT_LEADER",
            Error::OutcomeUnknown => "OUTCOME_UNKNOWN",
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Rejected(Rejection::InvalidRequest(message.into()))
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotLeader => Error::NotLeader,
            StorageError::OutcomeUnknown => Error::OutcomeUnknown,
            e => Error::Storage(e),
        }
    }
}

impl From<SubmitError> for Error {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded => Error::Overloaded,
            SubmitError::Storage(s) => Error::from(s),
        }
    }
}

impl From<actix::MailboxError> for Error {
    fn from(_: actix::MailboxError) -> Self {
        Error::ShuttingDown
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
