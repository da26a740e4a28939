//! Why a run failed, typed to the edge: Redis (reading the cache or
//! writing the run), the writer, the upstream (the fetch's typed failure and
//! what it says of the upstream), the lease, or a shutdown.

use std::fmt;

use crate::report::UpstreamStatus;
use crate::store::StoreError;
use crate::sync::baseline::{Baseline, ReadFailure, WRITE_TIMEOUT};
use crate::sync::fetch::FetchFailure;

/// Why a run failed before it could be planned or written.
#[derive(Debug)]
pub enum RunFailure {
    /// Reading the cache (or writing the run) failed.
    Redis(StoreError),
    /// An earlier run's write is still unanswered, or this one's was not
    /// answered in time: the transaction may still land.
    WriteUnanswered,
    /// The writer thread is gone (shutting down).
    WriterStopped,
    /// The upstream failed the run (DESIGN.md section 3): it did not
    /// answer (`Down`) or refused our credentials (`Unauthorized`).
    Upstream(FetchFailure, UpstreamStatus),
    /// Another instance holds the lease: nothing was written.
    Fenced(String),
    /// A shutdown cut the run short.
    Cancelled,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunFailure::Redis(e) => write!(f, "{e}"),
            RunFailure::WriteUnanswered => write!(
                f,
                "redis: a write was not answered within {WRITE_TIMEOUT:?}; it may still land"
            ),
            RunFailure::WriterStopped => f.write_str("the Redis writer has stopped"),
            RunFailure::Upstream(failure, _) => write!(f, "{failure}"),
            RunFailure::Fenced(reason) => f.write_str(reason),
            RunFailure::Cancelled => {
                f.write_str("cancelled by shutdown before its calls were done; nothing written")
            }
        }
    }
}

/// The cache could not be read because its reading thread did not run.
pub(super) fn reading_failed(reason: String) -> RunFailure {
    RunFailure::Redis(StoreError {
        kind: Default::default(),
        doing: "reading the cache".into(),
        reason,
    })
}

pub(super) fn reader_gone<T>(_: T) -> Result<Option<Baseline>, RunFailure> {
    Err(reading_failed("its thread stopped".into()))
}

impl From<ReadFailure> for RunFailure {
    fn from(e: ReadFailure) -> Self {
        match e {
            ReadFailure::Redis(e) => RunFailure::Redis(e),
            ReadFailure::WriteUnanswered => RunFailure::WriteUnanswered,
        }
    }
}

impl From<StoreError> for RunFailure {
    fn from(e: StoreError) -> Self {
        RunFailure::Redis(e)
    }
}
