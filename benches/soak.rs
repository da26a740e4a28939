//! Soak: many runs back to back, a churn before each, against the daemon as
//! it is deployed (`precache run`, a child process with its HTTP server,
//! warm-up and debug files). `cargo bench --bench soak`; `SOAK_SMALL_RUNS`
//! and `SOAK_NORWAY_RUNS` change the run counts (default 2,000 and 200).
//!
//! Runs are started back to back through `POST /run` (no interval between
//! them). Every run's changed ids (the run's stats in `/status`) must equal
//! what the simulator's churn reported, exactly. At the start (after the
//! first `SETTLE` runs, once caches and pools are warm) and at the end it
//! prints the daemon's RSS and open descriptors, the size of `/metrics`
//! and Redis's key count, and fails loudly when one grew by more than 10 %.
//! Warm-up entries (`GET:*`, `refresh:GET:*`) are counted apart: they
//! expire after `warm.ttl_secs` by design, so a churn that adds matches
//! adds entries until the first expire.

use std::time::{Duration, Instant};

use kit::{DaemonChild, Harness, SimCommand, proc_status_kib, quoted};
use serde_json::Value;

/// Runs before the first reading: a tenth of them, at least this many, so
/// caches and connection pools have reached their working size.
const SETTLE: usize = 20;
/// Largest growth allowed between the readings.
const FLAT: f64 = 0.10;

/// Starts the daemon against the harness's simulator and Redis (runs
/// only when triggered) and waits for its first run.
fn start_daemon(h: &Harness) -> DaemonChild {
    let path = h.write_minimal_config(&[
        ("sync", "interval_secs", "86400".into()),
        ("sync", "adaptive", "false".into()),
        ("metrics", "admin_token", quoted("soak")),
    ]);
    let daemon = DaemonChild::command(&path)
        .poll_every(Duration::from_millis(2))
        .http_timeout(Duration::from_secs(30))
        .start();
    daemon.wait_run(&Value::Null, RUN_LIMIT);
    daemon
}

/// Longest a run may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// What is read at the start and the end.
#[derive(Debug, Clone, Copy)]
struct Reading {
    rss_kib: f64,
    /// The live heap (`precache_heap_in_use_bytes`), in KiB.
    heap_kib: f64,
    fds: f64,
    metrics_bytes: f64,
    redis_keys: f64,
    warm_keys: f64,
}

fn rss_kib(pid: u32) -> f64 {
    proc_status_kib(Some(pid), "VmRSS")
}

/// The live heap the daemon reported after its last run, in KiB.
fn heap_kib(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("precache_heap_in_use_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |b| b / 1024.0)
}

fn read(daemon: &DaemonChild, redis: &mut redis::Connection) -> Reading {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(redis).expect("KEYS");
    let warm = keys
        .iter()
        .filter(|k| k.starts_with("GET:") || k.starts_with("refresh:GET:"))
        .count();
    let metrics = daemon.body("/metrics");
    Reading {
        rss_kib: rss_kib(daemon.pid()),
        heap_kib: heap_kib(&metrics),
        fds: std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
            .map_or(f64::NAN, |d| d.count() as f64),
        metrics_bytes: metrics.len() as f64,
        redis_keys: (keys.len() - warm) as f64,
        warm_keys: warm as f64,
    }
}

/// A churn step through the simulator's control endpoint; the ids it changed.
fn churn(sim_url: &str, spec: &str) -> Value {
    let mut answer = ureq::post(&format!("{sim_url}/_sim/churn?{spec}"))
        .send_empty()
        .expect("churn");
    let text = answer.body_mut().read_to_string().expect("churn answer");
    let body: Value = serde_json::from_str(&text).expect("churn answer is JSON");
    body["changed"].clone()
}

/// The run's changed ids in the simulator's shape (every seed category,
/// sorted; the datasets that changed under `data`).
fn changed_ids(run: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for category in [
        "valid_seasons",
        "tournaments_in_season",
        "tournament_matches",
        "individual_matches",
        "unique_team_ids",
    ] {
        let ids = run["changed_ids"][category].clone();
        out.insert(
            category.to_string(),
            if ids.is_null() {
                Value::Array(vec![])
            } else {
                ids
            },
        );
    }
    // The datasets', by name, under `data`, only those that changed (the
    // simulator's shape: `ChangedIds::data`).
    let data: serde_json::Map<String, Value> = precache::model::dataset::DatasetId::ALL
        .iter()
        .filter_map(|d| {
            let ids = &run["changed_ids"][d.name()];
            ids.as_array()
                .filter(|ids| !ids.is_empty())
                .map(|_| (d.name().to_string(), ids.clone()))
        })
        .collect();
    if !data.is_empty() {
        out.insert("data".into(), Value::Object(data));
    }
    Value::Object(out)
}

fn soak(scale: &str, runs: usize) -> bool {
    println!("== {scale}: {runs} runs, a churn before each");
    let h = Harness::new("soak")
        .sim_process(SimCommand::new(scale).latency_ms(0))
        .redis()
        .build();
    let mut conn = h.redis().conn();
    let daemon = start_daemon(&h);
    let spec = "matches_modified=3&matches_added=1&matches_removed=1&tournaments_renamed=1";
    let settle = SETTLE.max(runs / 10).min(runs);
    let started = Instant::now();
    let mut first = None;
    let mut mismatches = 0;
    let mut trend = Vec::new();
    for n in 1..=runs {
        if n == settle {
            first = Some(read(&daemon, &mut conn));
        }
        if n % (runs / 10).max(1) == 0 {
            trend.push((n, rss_kib(daemon.pid()), heap_kib(&daemon.body("/metrics"))));
        }
        let expected = churn(h.sim_process().url(), spec);
        let run = daemon.trigger("/run", RUN_LIMIT);
        let got = changed_ids(&run);
        if run["status"] != "success" || got != expected {
            mismatches += 1;
            if mismatches <= 5 {
                println!(
                    "run {n}: status {}, reported {got}, the simulator changed {expected}",
                    run["status"]
                );
            }
        }
    }
    let took = started.elapsed();
    let end = read(&daemon, &mut conn);
    let start = first.expect("read at the start");
    println!(
        "{runs} runs in {:.1} s ({:.0} ms each, churn and HTTP included); exact changes in {} of {runs}",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / runs as f64,
        runs - mismatches
    );
    println!(
        "{:<34}{:>14}{:>14}{:>9}",
        "after run", settle, runs, "growth"
    );
    let mut flat = mismatches == 0;
    for (what, a, b, judged) in [
        ("daemon RSS (KiB)", start.rss_kib, end.rss_kib, true),
        ("daemon live heap (KiB)", start.heap_kib, end.heap_kib, true),
        ("daemon open descriptors", start.fds, end.fds, true),
        (
            "/metrics (bytes)",
            start.metrics_bytes,
            end.metrics_bytes,
            true,
        ),
        (
            "Redis keys (data, bookkeeping)",
            start.redis_keys,
            end.redis_keys,
            true,
        ),
        (
            "Redis keys (warm-up, TTL-bound)",
            start.warm_keys,
            end.warm_keys,
            false,
        ),
    ] {
        let growth = (b - a) / a;
        let verdict = if !judged {
            "expire by TTL"
        } else if growth <= FLAT {
            "flat"
        } else {
            flat = false;
            "GREW"
        };
        println!(
            "{what:<34}{a:>14.0}{b:>14.0}{:>8.1}% {verdict}",
            growth * 100.0
        );
    }
    let trend: Vec<String> = trend
        .iter()
        .map(|(n, rss, heap)| format!("{n}: {:.1}/{:.1}", rss / 1024.0, heap / 1024.0))
        .collect();
    println!(
        "daemon RSS / live heap (MiB) after run  {}",
        trend.join(" · ")
    );
    drop(daemon);
    flat
}

fn runs_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(SETTLE + 1)
}

fn main() {
    let small = soak("small", runs_from_env("SOAK_SMALL_RUNS", 2000));
    let norway = soak("norway", runs_from_env("SOAK_NORWAY_RUNS", 200));
    if !(small && norway) {
        eprintln!("soak: a check failed (see above)");
        std::process::exit(1);
    }
    println!(
        "soak: every run exact, everything flat within {:.0} %",
        FLAT * 100.0
    );
}
