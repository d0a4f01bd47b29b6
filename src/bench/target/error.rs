//! Why an operation did not succeed, and whether it may have happened.

use crate::engine::Error;

/// Why an operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// An error code of `API.md`, or `TRANSPORT` / `HTTP_<status>` / `BAD_BODY`.
    pub code: String,
    /// True when the operation may or may not have happened (a timeout, a
    /// dropped connection, an engine shutting down): exact checks relax then.
    pub unknown_outcome: bool,
}

impl OpError {
    pub(super) fn known(code: impl Into<String>) -> OpError {
        OpError {
            code: code.into(),
            unknown_outcome: false,
        }
    }

    pub(super) fn unknown(code: impl Into<String>) -> OpError {
        OpError {
            code: code.into(),
            unknown_outcome: true,
        }
    }

    /// True when the attempt could not reach the server: nothing can be
    /// concluded from it, neither success nor a violated invariant.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.code.as_str(), TRANSPORT | TIMEOUT | UNREACHABLE)
    }
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        match e {
            // A refusal changed nothing (a failed payment is a known outcome too).
            Error::Rejected(_)
            | Error::IdempotencyKeyReused
            | Error::Overloaded
            | Error::NotLeader => OpError::known(e.code()),
            Error::Storage(_) | Error::ShuttingDown | Error::OutcomeUnknown => {
                OpError::unknown(e.code())
            }
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.code)
    }
}

impl std::error::Error for OpError {}

pub type OpResult<T> = Result<T, OpError>;

/// The error code of an attempt that reached no server: refused, reset or cut off.
pub const TRANSPORT: &str = "TRANSPORT";
/// ...or that got no answer within the request timeout.
pub const TIMEOUT: &str = "TIMEOUT";
/// ...or that was not made: the server was already taken for gone.
pub const UNREACHABLE: &str = "UNREACHABLE";
