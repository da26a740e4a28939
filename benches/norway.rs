//! Norway-scale numbers for the closing notes, reproducibly:
//! `cargo bench --bench norway` (add `BENCH_SKIP_WARM=1` to skip the
//! ~80 s warm-up phase).
//!
//! The simulator runs as a child process (`precache sim`), so the peak
//! memory printed is precache's own. Phase 1: a cold run into an empty
//! private Redis and three no-change runs: duration, bytes Redis received
//! (`INFO stats` total_net_input_bytes), keys written. Phase 2: a cold start
//! with warm-up against the simulator at 20 ms latency: how many warm-ups,
//! how long with the default workers, and the lower bounds set by the
//! workers, the concurrency cap and the rate limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::{Harness, SimCommand, net_input_bytes, peak_rss_mib};
use precache::daemon::Services;

/// The simulator at norway scale answering after `latency_ms`, as its own
/// process, a private Redis, and the repository's config as deployed.
fn harness(latency_ms: u64) -> Harness {
    Harness::new("bench-norway")
        .sim_process(SimCommand::new("norway").latency_ms(latency_ms))
        .redis()
        .deployed_defaults()
        .build()
}

fn main() {
    println!("== phase 1: sync at norway scale (simulator without added latency)");
    let h = harness(0);
    let redis_url = h.redis().url();
    let mut cfg = h.config();
    cfg.warm.enabled = false;
    cfg.logs.debug_snapshots = false;
    // Every root every run: the original's load (`--bench matchday`
    // measures adaptive polling).
    cfg.sync.adaptive = false;
    let mut services = Services::start(&cfg).expect("services start");
    for (i, label) in ["cold", "no-change", "no-change", "no-change"]
        .iter()
        .enumerate()
    {
        let before = net_input_bytes(&redis_url);
        let started = Instant::now();
        let report = services.runner.run_once(false);
        let took = started.elapsed();
        let received = net_input_bytes(&redis_url) - before;
        println!(
            "run {} ({label}): {:?} in {:.0} ms; items {:?}; {} keys / {} bytes written; Redis received {} bytes",
            i + 1,
            report.summary.status,
            took.as_secs_f64() * 1000.0,
            report.summary.items,
            report.summary.keys_written,
            report.summary.bytes_written,
            received
        );
    }
    services.shutdown();
    println!("peak RSS so far: {:.0} MiB", peak_rss_mib());
    drop(h);

    if std::env::var_os("BENCH_SKIP_WARM").is_some() {
        println!("== phase 2 skipped (BENCH_SKIP_WARM)");
        return;
    }
    println!("== phase 2: cold-start warm-up, simulator at 20 ms latency");
    let h = harness(20);
    let mut cfg = h.config();
    cfg.logs.debug_snapshots = false;
    let mut services = Services::start(&cfg).expect("services start");
    let report = services.runner.run_once(false);
    let enqueued = report.warm_enqueued.len();
    let started = Instant::now();
    services.start_warmer(true).expect("warmer starts");
    let counts = services
        .warmer
        .as_ref()
        .expect("started")
        .wait_for(&report.warm_enqueued, Duration::from_secs(1800));
    let took = started.elapsed();
    let upstream = Arc::clone(services.runner.upstream());
    services.shutdown();
    let workers = cfg.warm.workers.min(cfg.upstream.max_concurrency) as f64;
    let by_workers = enqueued as f64 * 0.020 / workers;
    let rate = cfg.upstream.max_requests_per_sec;
    let by_rate = if rate > 0.0 {
        format!("{:.1} s", enqueued as f64 / rate)
    } else {
        "none (max_requests_per_sec = 0)".to_string()
    };
    println!(
        "warm-ups: {enqueued} enqueued, {} done, {} failed, {} pending in {:.1} s with {} workers (max_concurrency {})",
        counts.done,
        counts.failed,
        counts.pending,
        took.as_secs_f64(),
        cfg.warm.workers,
        cfg.upstream.max_concurrency
    );
    println!(
        "lower bounds: {by_workers:.1} s from min(workers, max_concurrency) x 20 ms; rate limit: {by_rate}; achieved {:.0} % of the bound",
        100.0 * by_workers / took.as_secs_f64()
    );
    let retries: u64 = precache::model::calls::CallType::ALL
        .iter()
        .map(|c| upstream.counters().retries(*c))
        .sum();
    println!(
        "upstream retries: {retries}; peak RSS: {:.0} MiB",
        peak_rss_mib()
    );
}
