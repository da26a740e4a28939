//! The test kit: everything precache's integration tests (`tests/`) and
//! benchmarks (`benches/`) set up, in one place, so that no test file
//! repeats another's set-up.
//!
//! It owns:
//! - [`Harness`], the builder each test starts from: a temporary
//!   directory, the simulator (in-process, or as a child process for the
//!   benchmarks, so its CPU is not the measured process's), a private
//!   `redis-server`, and the configs pointed at them ([`Harness::config`]
//!   for in-process services, [`Harness::write_config`] for the command
//!   line and the daemon);
//! - [`Rig`], a harness with the in-process services (the runner, its
//!   writer, the warm-up) running;
//! - [`DaemonChild`], `precache run` as a child process: signals, exit,
//!   and its HTTP side (status, metrics, admin endpoints);
//! - the command line ([`bin`], [`cli`], [`run_cli`], [`once_ok`]);
//! - readings of Redis ([`RedisServer`], [`history`], [`feed`], [`data_of`])
//!   and what a fresh write of the upstream leaves ([`fresh_write`]);
//! - the README's least-privilege Redis user ([`apply_readme_acl`]);
//! - small waits, tools and measurements ([`wait_for`], [`tool_missing`],
//!   [`peak_rss_mib`], ...).
//!
//! Why a crate (a workspace member) rather than a `common` module per
//! directory: `tests/` and `benches/` each had their own copy of these
//! (two `DaemonChild` types among them), and each test file its own copy
//! of the set-up sequence. Cargo builds the kit once, beside `precache`
//! itself; the root package's dev-dependency on it and its dependency on
//! `precache` form the allowed dev-dependency cycle.
//!
//! A typical test:
//!
//! ```ignore
//! let h = Harness::new("sighup").sim(Scale::Small, 27).redis().build();
//! let mut daemon = h.start_daemon(&[("sync", "interval_secs", "1".into())]);
//! wait_for("the first run", Duration::from_secs(20), || !history(h.redis()).is_empty());
//! ```

mod acl;
mod cli;
mod config;
mod daemon;
mod dir;
mod harness;
mod measure;
mod redis_server;
mod rig;
mod sim;
mod wait;

pub use acl::{ACL_PASSWORD, apply_readme_acl, assert_refused, assert_the_rule_refuses};
pub use cli::{bin, cli, once_ok, run_cli};
pub use config::{Override, every_dataset_every_run, http_addr, quoted, sentinel_settings, today};
pub use daemon::{DaemonChild, DaemonCommand};
pub use dir::{TempDir, repo_path};
pub use harness::{Harness, HarnessBuilder};
pub use measure::{net_input_bytes, net_input_bytes_of, peak_rss_mib, proc_status_kib};
pub use redis_server::{RedisServer, data_in, data_of, dump_in, feed, feed_ids, feed_in, history};
pub use rig::{
    Rig, assert_cache_is_the_upstream, assert_holds_the_upstream, assert_status, fresh_write,
};
pub use sim::{SimCommand, SimProcess, reported, requests, silence_half_the_roots};
pub use wait::{browser, http_get, on_path, send_signal, tool_missing, wait_for};
