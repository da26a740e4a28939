//! The warm-up tasks a run enqueues, as commands for the run's own
//! transaction: the schedule's sorted set of due times and its hash of
//! refresh deadlines (names from [`Keys`]). Here, beside the other
//! commands of a run's batch, so the run's planning (`sync`) builds them
//! without depending on the warm-up's threads; reading and settling the
//! schedule is `warmer::schedule`'s.

use super::Keys;

/// Warm-up tasks (schedule members) due at `due_ms` and refreshed until
/// `refresh_until_ms` (unix milliseconds): what a run enqueues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmEnqueue {
    pub members: Vec<String>,
    pub due_ms: i64,
    pub refresh_until_ms: i64,
}

/// The commands that put `enqueue` in the schedule, for a run's transaction.
///
/// Plain ZADD (not LT): a task already due keeps one member, so it is
/// fetched once; one being fetched right now gets a new score, which tells
/// its worker to leave it due (see `warmer::schedule::settle`).
pub fn enqueue_commands(keys: &Keys, enqueue: &WarmEnqueue) -> Vec<redis::Cmd> {
    let mut commands = Vec::new();
    for chunk in enqueue.members.chunks(1000) {
        let mut due = redis::cmd("ZADD");
        due.arg(keys.warm_schedule());
        for member in chunk {
            due.arg(enqueue.due_ms).arg(member);
        }
        let mut until = redis::cmd("HSET");
        until.arg(keys.warm_refresh_until());
        for member in chunk {
            until.arg(member).arg(enqueue.refresh_until_ms);
        }
        let mut failures = redis::cmd("HDEL");
        failures.arg(keys.warm_failures()).arg(chunk);
        commands.extend([due, until, failures]);
    }
    commands
}
