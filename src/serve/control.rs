//! What the HTTP side asks of the run loop. Defined by the side that asks;
//! the loop (in `daemon`, above) answers it, so `serve` never imports the
//! daemon.

use std::time::Instant;

use crossbeam_channel::Sender;

use crate::store::{Cleared, StoreError};

/// What an admin endpoint asks the run loop to do; the loop does it
/// between runs, so an admin action never races a run.
pub enum AdminCommand {
    /// Start a run now.
    Run,
    /// Start a run now that applies whatever shrink it sees (DESIGN.md section 3).
    AcceptShrink,
    /// Do what `precache clear` does and answer with what was removed,
    /// unless `deadline` has passed: the requester gives up waiting for
    /// `started` a little after it, so a clear either starts while it still
    /// listens (and it then waits for `reply`) or not at all.
    Clear {
        started: Sender<()>,
        reply: Sender<Result<Cleared, StoreError>>,
        deadline: Instant,
    },
}
