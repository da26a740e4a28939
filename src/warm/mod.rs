//! Cache warming: `plan` decides what to warm and when it is due again
//! (pure); `schedule` owns the schedule's Redis layout; `workers` are the
//! threads that fetch and store the proxy's entries.

pub mod plan;
pub mod schedule;
pub mod workers;
