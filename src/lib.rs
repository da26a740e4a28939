//! precache: keeps a Redis cache of NIF tournament data in step with the
//! upstream TA API. See ARCHITECTURE.md for the map of threads and modules.

pub mod config;
pub mod daemon;
pub mod debuglog;
pub mod demo;
pub mod diff;
pub mod fetch;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod rng;
pub mod run;
pub mod sim;
pub mod status;
pub mod store;
pub mod upstream;
pub mod warm;
pub mod warmer;
