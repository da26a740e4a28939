//! Cache warming, the imperative half: `schedule` reads and settles the
//! schedule in Redis, `workers` starts the threads and waits on them:
//! the `scheduler`, which hands due tasks out, and each `worker`, which
//! fetches and stores the proxy's entries. What to warm and when is the pure
//! `warm`'s.

pub mod schedule;
mod scheduler;
mod worker;
pub mod workers;
