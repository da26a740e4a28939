//! Cache warming, the pure half: `plan` decides what to warm and when it
//! is due again, and spells the proxy's keys and entries; `stats` holds the
//! counters the imperative half (`warmer`) keeps and the metrics read.

pub mod plan;
pub mod stats;
