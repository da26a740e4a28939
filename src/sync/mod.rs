//! One sync run (DESIGN.md section 3): `fetch` asks the upstream, `diff`
//! and `plan` decide (pure), `run` is the shell that reads the cache
//! (`baseline`, on its own thread while the fetch starts),
//! hands the plan's writes to the store and records the run; `debuglog`
//! writes the seed's debug files.

mod baseline;
pub mod debuglog;
pub mod diff;
pub mod fetch;
pub mod hold;
pub mod plan;
pub mod poll;
pub mod run;
pub mod writes;
