//! Cache warming, the imperative half: `schedule` reads and settles the
//! schedule in Redis, `workers` are the scheduler and worker threads that
//! fetch and store the proxy's entries. What to warm and when is the pure
//! `warm`'s.

pub mod schedule;
pub mod workers;
