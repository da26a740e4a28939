//! precache: keeps a Redis cache of NIF tournament data in step with the
//! upstream TA API. The folders follow the data flow (ARCHITECTURE.md):
//! `sync` fetches and plans a run, `store` writes it to Redis, `warm` decides
//! which proxy entries to warm and `warmer` warms them, `serve` answers over HTTP, `daemon` runs the loop;
//! `config`, `model`, `report` and `upstream` are what they all stand on.
//! `sim` is the upstream simulator: the CLI and the tests use it, the
//! production modules never do.

pub mod alloc;
pub mod config;
pub mod daemon;
pub mod lifecycle;
pub mod logging;
pub mod model;
pub mod report;
pub mod serve;
pub mod sim;
pub mod store;
pub mod sync;
pub mod upstream;
pub mod warm;
pub mod warmer;

mod rng;
pub mod util;
