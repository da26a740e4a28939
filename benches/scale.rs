//! What a run costs at norway and 10x scale (DESIGN.md section 9):
//! `cargo bench --bench scale` (`SCALES=norway` to skip 10x).
//!
//! For each scale, against the simulator in its own process (its CPU is
//! not counted) and a private Redis:
//! - `once`: `precache once --no-warm` as a child under `/usr/bin/time`,
//!   cold, no-change (the median of three) and churn (13 matches): CPU
//!   seconds (user + sys), peak RSS, bytes Redis received, the run's
//!   duration;
//! - daemon: `precache run` as a child, runs triggered over `POST /run`:
//!   the same three kinds against its in-memory baseline (no-change: the
//!   mean of five runs), CPU from `/proc/PID/stat`, peak RSS from `VmHWM`
//!   (reset before each measurement);
//! - wall: every run kind, `once` and daemon, against the simulator at
//!   20 ms latency, beside the latency bound (three dependent round trips
//!   plus ⌈calls ÷ max_concurrency⌉ rounds);
//! - transport (the first scale only): the daemon's cold and no-change CPU
//!   over plain HTTP, over HTTPS (the simulator with a certificate from a
//!   CA made with `openssl`, trusted through `upstream.ca_file`) and over
//!   HTTPS with gzip answers, with the TCP connections each run opened
//!   (`precache_upstream_connections_opened_total`; keep-alive should keep
//!   them at most `upstream.max_concurrency` for the first run and 0 after).
//!
//! - datasets (the first scale only, DESIGN.md section 13): the daemon
//!   with every dataset at its default cadence beside the seed's lists
//!   alone, with every root every run and with adaptive polling as
//!   shipped: no-change CPU, peak
//!   memory, and each dataset's upstream calls per run (measured) and per
//!   day (at the defaults: 480 runs a day).
//!
//! - Redis (the first scale only, DESIGN.md section 12): the daemon's
//!   no-change runs against one plain node beside a TLS master found
//!   through Sentinel (client certificates, a replica, three sentinels):
//!   CPU and the bytes the master received (`BENCH_ONLY_REDIS=1` runs
//!   this alone).
//!
//! It prints the figures and their targets; it does not fail, so a missed
//! target still leaves the numbers to read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kit::{
    DaemonChild, Harness, Override, SimCommand, net_input_bytes, net_input_bytes_of,
    proc_status_kib, quoted, sentinel_settings,
};
use precache::model::dataset::DatasetId;
use precache::sim::local::LocalCa;
use precache::sim::sentinel::TlsRedisSet;
use serde_json::Value;

const LATENCY_MS: u64 = 20;
const CHURN: &str = "matches_modified=10&matches_added=2&matches_removed=1";

/// One measured run.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    cpu_s: f64,
    rss_mib: f64,
    redis_bytes: u64,
    duration_ms: u64,
}

/// The simulator of `scale` (its own process, answering after
/// `latency_ms`) and a private Redis.
fn harness(scale: &str, latency_ms: u64) -> Harness {
    Harness::new("scale")
        .sim_process(SimCommand::new(scale).latency_ms(latency_ms))
        .redis()
        .build()
}

/// The harness's config file for the benchmark: runs only when
/// triggered, warm-up and debug snapshots off, admin token `bench`;
/// `extra` after that.
fn bench_config(h: &Harness, extra: &[Override<'_>]) -> PathBuf {
    // Every root every run (the original's load, which DESIGN.md section
    // 9's targets are about) unless BENCH_ADAPTIVE=1.
    let adaptive = std::env::var("BENCH_ADAPTIVE").is_ok_and(|v| v == "1");
    let mut overrides = vec![
        ("sync", "interval_secs", "86400".into()),
        ("sync", "adaptive", adaptive.to_string()),
        ("warm", "enabled", "false".into()),
        ("metrics", "admin_token", quoted("bench")),
        ("logs", "debug_snapshots", "false".into()),
    ];
    overrides.extend(extra.iter().cloned());
    h.write_minimal_config(&overrides)
}

/// `precache once --no-warm` under `/usr/bin/time`.
fn once(config: &Path, redis_url: &str) -> (Cost, Value) {
    let before = net_input_bytes(redis_url);
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %U %S %M"])
        .arg(kit::bin())
        .arg("--config")
        .arg(config)
        .args(["once", "--no-warm"])
        .output()
        .expect("/usr/bin/time runs precache once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let times: Vec<f64> = stderr
        .lines()
        .find_map(|l| l.strip_prefix("TIME "))
        .map(|l| l.split(' ').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let cost = Cost {
        cpu_s: times.first().copied().unwrap_or(f64::NAN) + times.get(1).copied().unwrap_or(0.0),
        rss_mib: times.get(2).copied().unwrap_or(f64::NAN) / 1024.0,
        redis_bytes: net_input_bytes(redis_url) - before,
        duration_ms: summary["duration_ms"].as_u64().unwrap_or(0),
    };
    (cost, summary)
}

/// The daemon child, with the readings the benchmark takes of it.
struct Daemon(DaemonChild);

/// Longest a run may take (10x at 20 ms latency, with room).
const RUN_LIMIT: Duration = Duration::from_secs(900);

impl Daemon {
    fn start(config: &Path) -> Daemon {
        Daemon(
            DaemonChild::command(config)
                .poll_every(Duration::from_millis(20))
                .http_timeout(Duration::from_secs(30))
                .start(),
        )
    }

    fn wait_run(&self, before: &Value) -> Value {
        self.0.wait_run(before, RUN_LIMIT)
    }

    fn trigger(&self) -> Value {
        self.0.trigger("/run", RUN_LIMIT)
    }

    /// User + system CPU seconds so far.
    fn cpu_s(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.0.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces).
        let rest = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum();
        ticks / 100.0
    }

    fn peak_rss_mib(&self) -> f64 {
        proc_status_kib(Some(self.0.pid()), "VmHWM") / 1024.0
    }

    fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.0.pid()), "5");
    }

    /// `runs` triggered runs measured as one: the mean of each figure
    /// (the peak for memory). The kernel counts CPU in 10 ms ticks, a
    /// seventh of a no-change run at norway; over several runs the tick
    /// error is divided among them.
    fn measure_mean(&self, redis_url: &str, runs: usize) -> Cost {
        self.measure_mean_of(&|| net_input_bytes(redis_url), runs)
    }

    /// As [`Daemon::measure_mean`], Redis's received bytes read by `bytes`.
    fn measure_mean_of(&self, bytes_received: &dyn Fn() -> u64, runs: usize) -> Cost {
        self.reset_peak_rss();
        let (cpu, bytes) = (self.cpu_s(), bytes_received());
        let mut duration_ms = 0;
        for _ in 0..runs {
            let run = self.trigger();
            duration_ms += (run["process_time"].as_f64().unwrap_or(0.0) * 1000.0) as u64;
        }
        let n = runs.max(1);
        let cost = Cost {
            cpu_s: (self.cpu_s() - cpu) / n as f64,
            rss_mib: self.peak_rss_mib(),
            redis_bytes: (bytes_received() - bytes) / n as u64,
            duration_ms: duration_ms / n as u64,
        };
        println!(
            "  daemon no-change: mean of {n} runs: CPU {:.3} s, {} Redis bytes, {} ms",
            cost.cpu_s, cost.redis_bytes, cost.duration_ms
        );
        cost
    }

    /// One triggered run, measured.
    fn measure(&self, redis_url: &str) -> Cost {
        self.reset_peak_rss();
        let (cpu, bytes) = (self.cpu_s(), net_input_bytes(redis_url));
        let run = self.trigger();
        Cost {
            cpu_s: self.cpu_s() - cpu,
            rss_mib: self.peak_rss_mib(),
            redis_bytes: net_input_bytes(redis_url) - bytes,
            duration_ms: (run["process_time"].as_f64().unwrap_or(0.0) * 1000.0) as u64,
        }
    }
}

fn churn(h: &Harness) {
    ureq::post(&format!("{}/_sim/churn?{CHURN}", h.sim_process().url()))
        .send_empty()
        .expect("churn");
}

fn print_costs(label: &str, costs: &[(&str, Cost)]) {
    println!("{label}:");
    println!(
        "  {:<10} {:>8} {:>10} {:>14} {:>10}",
        "run", "CPU s", "peak MiB", "Redis bytes", "wall ms"
    );
    for (kind, c) in costs {
        println!(
            "  {kind:<10} {:>8.3} {:>10.1} {:>14} {:>10}",
            c.cpu_s, c.rss_mib, c.redis_bytes, c.duration_ms
        );
    }
}

/// The latency bound of a run: three dependent round trips (token,
/// seasons, tournaments) plus ⌈calls ÷ concurrency⌉ rounds.
fn bound_ms(summary: &Value, concurrency: u64) -> u64 {
    let calls: u64 = ["seasons", "tournament_season", "tournament_matches"]
        .iter()
        .map(|k| summary["api_calls"][k].as_u64().unwrap_or(0))
        .sum();
    (3 + calls.div_ceil(concurrency)) * LATENCY_MS
}

struct Measured {
    once: [Cost; 3],
    daemon: [Cost; 3],
}

/// Daemon no-change runs measured together (see [`Daemon::measure_mean`]).
const NO_CHANGE_RUNS: usize = 5;

/// Runs measured this many times where one run's noise matters most.
const REPEATS: usize = 3;

/// The run of median CPU among [`REPEATS`]; the spread is printed.
fn median_of(label: &str, mut run: impl FnMut() -> Cost) -> Cost {
    let mut costs: Vec<Cost> = (0..REPEATS).map(|_| run()).collect();
    costs.sort_by(|a, b| a.cpu_s.total_cmp(&b.cpu_s));
    println!(
        "  {label}: CPU s over {REPEATS} runs {:.3} / {:.3} / {:.3} (min / median / max)",
        costs[0].cpu_s,
        costs[REPEATS / 2].cpu_s,
        costs[REPEATS - 1].cpu_s
    );
    costs[REPEATS / 2]
}

fn measure_scale(scale: &str) -> Measured {
    println!("== {scale}");
    let mut h = harness(scale, 0);
    let redis_url = h.redis().url();
    let config = bench_config(&h, &[]);

    let (cold, summary) = once(&config, &redis_url);
    println!("  items: {}", summary["items"]);
    let no_change = median_of("once no-change", || once(&config, &redis_url).0);
    churn(&h);
    let (churned, s) = once(&config, &redis_url);
    println!("  churn changed: {}", s["changes"]);
    let once_costs = [cold, no_change, churned];
    print_costs(
        "once (each run a new process; it loads the snapshot from Redis)",
        &[("cold", cold), ("no-change", no_change), ("churn", churned)],
    );

    // The daemon: its first run is cold into an empty Redis.
    h.fresh_redis();
    let redis_d = h.redis().url();
    let config_d = bench_config(&h, &[]);
    let daemon = Daemon::start(&config_d);
    let first = daemon.wait_run(&Value::Null);
    let cold_d = Cost {
        cpu_s: daemon.cpu_s(),
        rss_mib: daemon.peak_rss_mib(),
        redis_bytes: net_input_bytes(&redis_d),
        duration_ms: (first["process_time"].as_f64().unwrap_or(0.0) * 1000.0) as u64,
    };
    let no_change_d = daemon.measure_mean(&redis_d, NO_CHANGE_RUNS);
    churn(&h);
    let churn_d = daemon.measure(&redis_d);
    let daemon_costs = [cold_d, no_change_d, churn_d];
    print_costs(
        "daemon (in-memory baseline; cold includes start-up)",
        &[
            ("cold", cold_d),
            ("no-change", no_change_d),
            ("churn", churn_d),
        ],
    );
    drop(daemon);
    drop(h);

    // Wall time against the latency bound, every run kind.
    let mut h = harness(scale, LATENCY_MS);
    let wall = |label: &str, summary: &Value, ms: u64| {
        let bound = bound_ms(summary, 16);
        println!(
            "  wall at {LATENCY_MS} ms latency, {label}: {ms} ms, bound {bound} ms, ratio {:.2}",
            ms as f64 / bound as f64
        );
    };
    let once_ms = |summary: &Value| summary["duration_ms"].as_u64().unwrap_or(0);
    let daemon_ms = |run: &Value| (run["process_time"].as_f64().unwrap_or(0.0) * 1000.0) as u64;
    let redis_w = h.redis().url();
    let config_w = bench_config(&h, &[]);
    for label in ["once cold", "once no-change", "once churn"] {
        if label == "once churn" {
            churn(&h);
        }
        let (_, summary) = once(&config_w, &redis_w);
        wall(label, &summary, once_ms(&summary));
    }
    h.fresh_redis();
    let config_dw = bench_config(&h, &[]);
    let daemon = Daemon::start(&config_dw);
    let first = daemon.wait_run(&Value::Null);
    wall("daemon cold", &first, daemon_ms(&first));
    let run = daemon.trigger();
    wall("daemon no-change", &run, daemon_ms(&run));
    churn(&h);
    let run = daemon.trigger();
    wall("daemon churn", &run, daemon_ms(&run));
    drop(daemon);
    Measured {
        once: once_costs,
        daemon: daemon_costs,
    }
}

/// Every dataset enabled (or disabled), with adaptive polling on or off.
fn datasets_overrides(enabled: bool, adaptive: bool) -> Vec<Override<'static>> {
    let mut overrides = vec![("sync", "adaptive", adaptive.to_string())];
    for dataset in DatasetId::ALL {
        overrides.push((dataset.spec().section, "enabled", enabled.to_string()));
    }
    overrides
}

/// Runs a day at the default interval (180 s).
const RUNS_PER_DAY: f64 = 86_400.0 / 180.0;

/// The datasets' cost at `scale`: calls per run and per day, and the
/// daemon's no-change CPU and peak memory beside the seed's lists alone.
fn measure_datasets(scale: &str) {
    for adaptive in [false, true] {
        measure_datasets_polling(scale, adaptive);
    }
}

fn measure_datasets_polling(scale: &str, adaptive: bool) {
    let polling = if adaptive {
        "adaptive polling (as shipped)"
    } else {
        "every root every run (the section 9 load)"
    };
    println!("== datasets at {scale}: the daemon, {polling}");
    let mut h = harness(scale, 0);
    let mut rows = Vec::new();
    for (label, enabled) in [("seed only", false), ("every dataset", true)] {
        h.fresh_redis();
        let config = bench_config(&h, &datasets_overrides(enabled, adaptive));
        let daemon = Daemon::start(&config);
        let first = daemon.wait_run(&Value::Null);
        let cold_rss = daemon.peak_rss_mib();
        let cold_cpu = daemon.cpu_s();
        // Enough runs for org teams' cycle of 3 to come round twice.
        let runs: Vec<Value> = (0..6).map(|_| daemon.trigger()).collect();
        let no_change = daemon.measure_mean(&h.redis().url(), NO_CHANGE_RUNS);
        let peak = daemon.peak_rss_mib();
        if enabled {
            println!(
                "  {:<14} {:>9} {:>16} {:>18} {:>14}",
                "dataset", "records", "calls cold run", "calls/run (6 runs)", "calls/day"
            );
            for dataset in DatasetId::ALL {
                let name = dataset.name();
                let spec = dataset.spec();
                let records = first["items"]["datasets"][dataset.index()]
                    .as_u64()
                    .unwrap_or(0);
                let per_run: f64 = runs
                    .iter()
                    .map(|r| r["api_calls"][name].as_f64().unwrap_or(0.0))
                    .sum::<f64>()
                    / runs.len() as f64;
                // At the defaults: each call key once per every_runs runs.
                let keys = match spec.asks {
                    precache::model::dataset::Asks::Once => 1.0,
                    precache::model::dataset::Asks::EachSport => 2.0,
                    precache::model::dataset::Asks::EachTeam => {
                        first["items"]["teams"].as_f64().unwrap_or(0.0)
                    }
                    precache::model::dataset::Asks::EachRecordOf(_) => records as f64,
                };
                let per_day = keys * RUNS_PER_DAY / spec.every_runs as f64;
                println!(
                    "  {name:<14} {records:>9} {:>16} {per_run:>18.1} {per_day:>14.0}",
                    first["api_calls"][name]
                );
            }
            let seed: f64 = ["seasons", "tournament_season", "tournament_matches"]
                .iter()
                .map(|k| {
                    runs.iter()
                        .map(|r| r["api_calls"][k].as_f64().unwrap_or(0.0))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / runs.len() as f64;
            println!(
                "  (the seed's lists: {seed:.1} calls/run, {:.0}/day)",
                seed * RUNS_PER_DAY
            );
        }
        rows.push((label, cold_cpu, cold_rss, no_change, peak));
        drop(daemon);
    }
    println!(
        "  {:<14} {:>12} {:>14} {:>18} {:>16} {:>14}",
        "", "cold CPU s", "cold peak MiB", "no-change CPU s", "no-change bytes", "peak MiB"
    );
    for (label, cold_cpu, cold_rss, c, peak) in &rows {
        println!(
            "  {label:<14} {cold_cpu:>12.3} {cold_rss:>14.1} {:>18.3} {:>16} {peak:>14.1}",
            c.cpu_s, c.redis_bytes
        );
    }
    if let [(_, _, _, seed, _), (_, _, _, all, peak)] = &rows[..] {
        println!(
            "  targets: no-change CPU {:.2}× the seed-only figure (≤ 1.5×); peak {peak:.1} MiB (≤ 64)",
            all.cpu_s / seed.cpu_s
        );
    }
}

/// The daemon's connections opened so far (its metric).
fn connections_opened(daemon: &Daemon) -> u64 {
    daemon
        .0
        .body("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("precache_upstream_connections_opened_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The daemon over plain HTTP, HTTPS and HTTPS with gzip: CPU and the
/// connections each run opened.
fn measure_transports(scale: &str) {
    println!("== transport at {scale}: the daemon, every root every run unless BENCH_ADAPTIVE=1");
    let ca_home = Harness::new("scale-ca").build();
    let ca = match LocalCa::create(&ca_home.dir().join("ca"), "precache bench CA") {
        Ok(ca) => ca,
        Err(e) => {
            println!("  skipped: cannot make a CA with openssl: {e}");
            return;
        }
    };
    let issued = ca.issue_server("sim").expect("a server certificate");
    println!(
        "  {:<13} {:>12} {:>16} {:>18} {:>22}",
        "transport", "cold CPU s", "no-change CPU s", "cold connections", "connections per run"
    );
    for (label, tls, gzip) in [
        ("http", false, false),
        ("https", true, false),
        ("https + gzip", true, true),
    ] {
        let mut sim = SimCommand::new(scale).latency_ms(0).gzip(gzip);
        let mut trust = Vec::new();
        if tls {
            sim = sim.tls(&issued);
            trust.push(("upstream", "ca_file", quoted(ca.ca_pem.to_str().unwrap())));
        }
        let h = Harness::new("scale-tls").sim_process(sim).redis().build();
        let config = bench_config(&h, &trust);
        let daemon = Daemon::start(&config);
        let first = daemon.wait_run(&Value::Null);
        let cold_cpu = daemon.cpu_s();
        let cold_connections = connections_opened(&daemon);
        assert_eq!(first["status"], "success", "{label}: {first}");
        let no_change = daemon.measure_mean(&h.redis().url(), NO_CHANGE_RUNS);
        let per_run =
            (connections_opened(&daemon) - cold_connections) as f64 / NO_CHANGE_RUNS as f64;
        println!(
            "  {label:<13} {cold_cpu:>12.3} {:>16.3} {cold_connections:>18} {per_run:>22.1}",
            no_change.cpu_s
        );
    }
    println!(
        "  (upstream.max_concurrency = 16: a cold run opens at most that many, keep-alive reuses them)"
    );
}

/// The daemon's no-change runs with Redis as one plain node, and as a TLS
/// master found through Sentinel (client certificates required, a
/// replica, three sentinels): CPU and the bytes the master received.
fn measure_redis_topologies(scale: &str) {
    println!(
        "== Redis at {scale}: the daemon's no-change runs, every root every run unless BENCH_ADAPTIVE=1"
    );
    let h = harness(scale, 0);
    println!(
        "  {:<22} {:>12} {:>16} {:>20} {:>10}",
        "redis", "cold CPU s", "no-change CPU s", "no-change Redis bytes", "peak MiB"
    );
    let row = |label: &str, redis: &[Override<'_>], bytes_received: &dyn Fn() -> u64| {
        let config = bench_config(&h, redis);
        let daemon = Daemon::start(&config);
        let first = daemon.wait_run(&Value::Null);
        assert_eq!(first["status"], "success", "{label}: {first}");
        let cold_cpu = daemon.cpu_s();
        let no_change = daemon.measure_mean_of(bytes_received, NO_CHANGE_RUNS);
        println!(
            "  {label:<22} {cold_cpu:>12.3} {:>16.3} {:>20} {:>10.1}",
            no_change.cpu_s, no_change.redis_bytes, no_change.rss_mib
        );
    };
    let plain = h.redis().url();
    row("one node", &[], &|| net_input_bytes(&plain));
    h.redis().stop();
    let set = match TlsRedisSet::start(&h.dir().join("set")) {
        Ok(set) => set,
        Err(e) => {
            println!("  Sentinel + TLS skipped: cannot stand the set up: {e}");
            return;
        }
    };
    let master = set.master_port().expect("a sentinel names the master");
    row("sentinel + tls", &sentinel_settings(&set), &|| {
        net_input_bytes_of(&mut set.admin(master).expect("the master answers"))
    });
}

fn main() {
    let scales = std::env::var("SCALES").unwrap_or_else(|_| "norway,10x".into());
    if std::env::var("BENCH_ONLY_REDIS").is_ok_and(|v| v == "1") {
        measure_redis_topologies(scales.split(',').next().unwrap_or("norway"));
        return;
    }
    if let Some(first) = scales.split(',').next() {
        measure_datasets(first);
        if std::env::var("BENCH_ONLY_DATASETS").is_ok_and(|v| v == "1") {
            return;
        }
        measure_transports(first);
        measure_redis_topologies(first);
    }
    let measured: Vec<(String, Measured)> = scales
        .split(',')
        .map(|s| (s.to_string(), measure_scale(s)))
        .collect();
    println!("== targets (DESIGN.md section 9)");
    for (scale, m) in &measured {
        println!(
            "  {scale}: daemon no-change CPU {:.3} s (≤ 0.25 at norway); once no-change CPU {:.3} s (≤ 0.5 at norway); peak MiB once {:.0}/{:.0}/{:.0}, daemon {:.0}/{:.0}/{:.0} (≤ 64 at norway, ≤ 512 at 10x); no-change Redis bytes {} / {} (≤ 2048)",
            m.daemon[1].cpu_s,
            m.once[1].cpu_s,
            m.once[0].rss_mib,
            m.once[1].rss_mib,
            m.once[2].rss_mib,
            m.daemon[0].rss_mib,
            m.daemon[1].rss_mib,
            m.daemon[2].rss_mib,
            m.once[1].redis_bytes,
            m.daemon[1].redis_bytes,
        );
    }
    if let [(_, n), (_, x)] = &measured[..] {
        let ratio = |a: f64, b: f64| b / a;
        println!(
            "  10x ÷ norway: daemon no-change CPU {:.1}×, once no-change CPU {:.1}×, daemon churn peak memory {:.1}× (≤ 10×)",
            ratio(n.daemon[1].cpu_s, x.daemon[1].cpu_s),
            ratio(n.once[1].cpu_s, x.once[1].cpu_s),
            ratio(n.daemon[2].rss_mib, x.daemon[2].rss_mib),
        );
    }
}
