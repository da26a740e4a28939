//! The daemon's HTTP side, against `precache run` as a child process: every
//! seed metric after a run, bounded `run_id` series, promtool, health and
//! readiness flipping, the admin endpoints, and the status page (also in
//! headless Chromium).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kit::*;
use precache::sim::Fault;
use serde_json::Value;

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn start(h: &Harness, extra: &[(&str, &str, String)]) -> DaemonChild {
    start_limited(h, extra, None)
}

/// A daemon (warm-up off) whose `RLIMIT_NOFILE` is `nofile`, once its
/// HTTP server answers.
fn start_limited(h: &Harness, extra: &[(&str, &str, String)], nofile: Option<u64>) -> DaemonChild {
    let mut overrides = vec![("warm", "enabled", "false".into())];
    overrides.extend(extra.iter().cloned());
    let mut command = DaemonChild::command(&h.write_config(&overrides));
    if let Some(nofile) = nofile {
        command = command.nofile(nofile);
    }
    let daemon = command.start();
    wait_for("the HTTP server", Duration::from_secs(20), || {
        daemon.get("/healthz").0 != 0
    });
    daemon
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// `name{labels} value` lines of one metric, as (labels, value).
fn series(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match head.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            if metric != name {
                return None;
            }
            let mut map = BTreeMap::new();
            // Label values here hold no '",' sequences.
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"")?;
                map.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
            Some((map, value.parse().ok()?))
        })
        .collect()
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(text, name)
        .into_iter()
        .find(|(map, _)| {
            labels
                .iter()
                .all(|(k, v)| map.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
}

const SEED_METRICS: [(&str, &[&str]); 15] = [
    ("precache_runs_total", &["status"]),
    ("precache_changes_detected_total", &["category"]),
    ("precache_api_calls_total", &["call_type"]),
    ("precache_changes_this_run", &["category", "run_id"]),
    (
        "precache_run_changes_summary",
        &["category", "run_id", "run_timestamp"],
    ),
    ("precache_last_run_timestamp", &[]),
    ("precache_items_processed", &["item_type"]),
    ("precache_cached_data_size_bytes", &["data_type"]),
    ("precache_valid_seasons_count", &[]),
    (
        "precache_valid_seasons_info",
        &[
            "season_id",
            "season_name",
            "season_year",
            "sport_id",
            "sport_name",
        ],
    ),
    ("precache_tournaments_in_season_count", &[]),
    (
        "precache_tournaments_in_season_info",
        &[
            "is_root",
            "season_id",
            "sport_id",
            "tournament_id",
            "tournament_name",
        ],
    ),
    (
        "precache_api_urls_called",
        &["method", "params", "run_id", "url_path"],
    ),
    ("precache_upstream_status", &["endpoint"]),
    ("precache_duration_seconds_count", &[]),
];

#[test]
fn metrics_after_a_run_carry_every_seed_metric_consistent_with_the_run() {
    let h = Harness::small("http", 41);
    let sim = h.sim();
    let daemon = start(&h, &[("metrics", "seed_run_series", "true".into())]);
    wait_for("the first run", Duration::from_secs(20), || {
        !daemon.runs().is_empty()
    });
    let run = daemon.runs()[0].clone();
    let text = daemon.metrics();
    for (name, labels) in SEED_METRICS {
        let found = series(&text, name);
        assert!(!found.is_empty(), "{name} is missing");
        for (map, _) in &found {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            assert_eq!(keys, labels.to_vec(), "{name}'s labels");
        }
    }
    assert_the_run_s_series(&text, &run);
    assert_eq!(
        value(&text, "precache_runs_total", &[("status", "success")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "precache_duration_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "precache_upstream_status", &[("endpoint", "api")]),
        Some(1.0)
    );
    let stats = sim.stats();
    assert_the_cache_s_series(&text, &stats, h.redis());
    let last = value(&text, "precache_last_run_timestamp", &[]).unwrap();
    assert!((last - chrono::Utc::now().timestamp() as f64).abs() < 60.0);
    // The first run asks every root (start-up), each by its tier.
    let by_tier: f64 = ["live", "active", "dormant"]
        .iter()
        .map(|t| value(&text, "precache_upstream_match_calls_total", &[("tier", t)]).unwrap())
        .sum();
    assert_eq!(by_tier, stats.root_tournaments as f64);
    let status: serde_json::Value = serde_json::from_str(&daemon.get("/status").1).unwrap();
    assert_eq!(status["polling"]["full_sweep"], true);
    let tiers = &status["polling"]["tiers"];
    assert_eq!(
        ["live", "active", "dormant"]
            .iter()
            .map(|t| tiers[t].as_u64().unwrap())
            .sum::<u64>(),
        stats.root_tournaments as u64
    );
    // Beyond the seed.
    for name in [
        "precache_poll_tier_roots",
        "precache_poll_oldest_age_runs",
        "precache_build_info",
        "precache_redis_errors_total",
        "precache_upstream_retries_total",
        "precache_upstream_connections_opened_total",
        "precache_cache_reloads_total",
        "precache_keys_repaired_total",
        "precache_last_run_changes",
        "process_resident_memory_bytes",
    ] {
        assert!(!series(&text, name).is_empty(), "{name} is missing");
    }
    assert!(!text.contains("demo-secret"), "no secret in the metrics");
}

/// The seed's per-run series and the totals agree with the run's summary.
fn assert_the_run_s_series(text: &str, run: &serde_json::Value) {
    let run_id = run["run_id"].as_str().unwrap();
    for (category, count) in run["changes"].as_object().unwrap() {
        let count = count.as_f64().unwrap();
        assert_eq!(
            value(
                text,
                "precache_changes_this_run",
                &[("category", category), ("run_id", run_id)]
            ),
            Some(count)
        );
        assert_eq!(
            value(
                text,
                "precache_run_changes_summary",
                &[("category", category), ("run_id", run_id)]
            ),
            Some(count)
        );
        assert_eq!(
            value(
                text,
                "precache_changes_detected_total",
                &[("category", category)]
            ),
            Some(count)
        );
    }
    for (item, count) in run["items"].as_object().unwrap() {
        assert_eq!(
            value(text, "precache_items_processed", &[("item_type", item)]),
            count.as_f64()
        );
    }
    let mut calls = 0.0;
    for (call, count) in run["api_calls"].as_object().unwrap() {
        assert_eq!(
            value(text, "precache_api_calls_total", &[("call_type", call)]),
            count.as_f64()
        );
        calls += count.as_f64().unwrap();
    }
    let urls: f64 = series(text, "precache_api_urls_called")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(urls, calls, "every call of the run, by URL");
}

/// The info and size series describe what the cache holds.
fn assert_the_cache_s_series(text: &str, stats: &precache::model::ItemCounts, redis: &RedisServer) {
    assert_eq!(
        value(text, "precache_valid_seasons_count", &[]),
        Some(stats.valid_seasons as f64)
    );
    assert_eq!(
        series(text, "precache_valid_seasons_info").len(),
        stats.valid_seasons
    );
    assert_eq!(
        value(text, "precache_tournaments_in_season_count", &[]),
        Some(stats.tournaments as f64)
    );
    assert_eq!(
        series(text, "precache_tournaments_in_season_info").len(),
        stats.tournaments
    );
    let roots = series(text, "precache_tournaments_in_season_info")
        .iter()
        .filter(|(m, _)| m["is_root"] == "true")
        .count();
    assert_eq!(roots, stats.root_tournaments);
    let strlen: u64 = redis::cmd("STRLEN")
        .arg("tournament_matches")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        value(
            text,
            "precache_cached_data_size_bytes",
            &[("data_type", "tournament_matches")]
        ),
        Some(strlen as f64)
    );
}

#[test]
fn run_id_series_stay_bounded_and_promtool_accepts_the_output() {
    let h = Harness::small("http", 42);
    let keep = 3;
    let daemon = start(
        &h,
        &[
            ("metrics", "keep_runs", keep.to_string()),
            ("metrics", "seed_run_series", "true".into()),
            ("metrics", "admin_token", quoted("t0ken")),
            // Every run asks the same URLs, so a kept run's series weigh
            // the same and the plateau below is flat.
            ("sync", "adaptive", "false".into()),
            // ... and every dataset, rather than a slot of its keys.
            ("datasets.org_teams", "every_runs", "1".into()),
            ("datasets.venues", "every_runs", "1".into()),
            ("datasets.venue_details", "every_runs", "1".into()),
            ("datasets.clubs", "every_runs", "1".into()),
        ],
    );
    wait_for("the first run", Duration::from_secs(20), || {
        !daemon.runs().is_empty()
    });
    let mut sizes = Vec::new();
    for n in 2..=keep + 5 {
        assert_eq!(daemon.post("/run", Some("t0ken")).0, 202);
        wait_for("the triggered run", Duration::from_secs(20), || {
            daemon.runs().len() == n
        });
        sizes.push(daemon.metrics().len());
    }
    let text = daemon.metrics();
    let kept: Vec<String> = daemon.runs()[..keep]
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    let seen: BTreeSet<String> = series(&text, "precache_changes_this_run")
        .into_iter()
        .chain(series(&text, "precache_api_urls_called"))
        .chain(series(&text, "precache_run_changes_summary"))
        .map(|(m, _)| m["run_id"].clone())
        .collect();
    assert_eq!(seen, kept.into_iter().collect::<BTreeSet<_>>());
    // Once keep_runs runs are retained the body stops growing (process
    // metrics may change a number's width by a few bytes).
    let plateau = &sizes[keep..];
    let (min, max) = (plateau.iter().min().unwrap(), plateau.iter().max().unwrap());
    assert!(max - min < 200, "metrics body sizes {sizes:?}");

    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        tool_missing("promtool (Debian package `prometheus`)");
        return;
    };
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 3 is "lint problems"; the only ones allowed are about the seed's
    // metric names, which are kept as they are on purpose.
    let allowed = [
        "precache_run_changes_summary metric name should not include type 'summary'",
        "precache_valid_seasons_count non-histogram and non-summary metrics should not have \"_count\" suffix",
        "precache_tournaments_in_season_count non-histogram and non-summary metrics should not have \"_count\" suffix",
    ];
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !allowed.contains(&l.trim()))
        .collect();
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "promtool: {report}"
    );
    assert!(problems.is_empty(), "promtool found problems: {problems:?}");
}

#[test]
fn healthz_and_readyz_follow_the_loop_and_redis() {
    let h = Harness::small("http", 43);
    let (sim, redis) = (h.sim(), h.redis());
    let daemon = start(
        &h,
        &[
            ("sync", "interval_secs", "1".into()),
            ("daemon", "shutdown_grace_secs", "1".into()),
            ("upstream", "timeout_secs", "30".into()),
        ],
    );
    wait_for("ready", Duration::from_secs(20), || {
        daemon.get("/readyz").0 == 200
    });
    assert_eq!(daemon.get("/healthz").0, 200);

    // Redis goes away: not ready, with the reason; still healthy.
    redis.stop();
    wait_for("not ready", Duration::from_secs(10), || {
        daemon.get("/readyz").0 == 503
    });
    let (_, reason) = daemon.get("/readyz");
    assert!(reason.contains("redis does not answer"), "{reason}");
    assert_eq!(daemon.get("/healthz").0, 200);
    let errors = value(&daemon.metrics(), "precache_redis_errors_total", &[]).unwrap();
    assert!(errors > 0.0, "Redis being down is counted");
    redis.restart();
    wait_for("ready again", Duration::from_secs(20), || {
        daemon.get("/readyz").0 == 200
    });

    // A run stuck on the upstream: unhealthy after 2 × interval + grace (3 s).
    sim.set_fault(
        "tournament_matches",
        Fault {
            stall_rate: 1.0,
            ..Fault::default()
        },
    );
    wait_for("unhealthy", Duration::from_secs(15), || {
        daemon.get("/healthz").0 == 503
    });
    let (_, reason) = daemon.get("/healthz");
    assert!(reason.contains("run has been in progress"), "{reason}");
    // Stuck for longer than two intervals: not ready either.
    assert_eq!(daemon.get("/readyz").0, 503);
    sim.clear_faults();
    wait_for("healthy again", Duration::from_secs(15), || {
        daemon.get("/healthz").0 == 200
    });
    wait_for("ready again", Duration::from_secs(15), || {
        daemon.get("/readyz").0 == 200
    });
}

#[test]
fn admin_endpoints_need_the_token_and_do_exactly_what_they_say() {
    let h = Harness::small("http", 44);
    let (sim, redis) = (h.sim(), h.redis());
    // Off without a token.
    let open = start(&h, &[]);
    assert_eq!(open.post("/run", None).0, 404);
    assert_eq!(open.post("/clear", Some("")).0, 404);
    drop(open);

    let daemon = start(&h, &[("metrics", "admin_token", quoted("s3cret-token"))]);
    wait_for("the first run", Duration::from_secs(20), || {
        !daemon.runs().is_empty()
    });
    assert_eq!(daemon.post("/run", None).0, 401);
    assert_eq!(daemon.post("/run", Some("s3cret-tokeN")).0, 401);
    assert_eq!(daemon.post("/run", Some("s3cret-token-longer")).0, 401);
    let (code, body) = daemon.post("/clear", Some("wrong"));
    assert_eq!(code, 401);
    assert!(!body.contains("s3cret"), "the token is never echoed");
    assert_eq!(daemon.runs().len(), 1, "refused requests trigger nothing");
    assert_eq!(daemon.get("/run").0, 405);

    assert_eq!(daemon.post("/run", Some("s3cret-token")).0, 202);
    wait_for("the triggered run", Duration::from_secs(20), || {
        daemon.runs().len() == 2
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(daemon.runs().len(), 2, "exactly one run");

    let (code, body) = daemon.post("/clear", Some("s3cret-token"));
    assert_eq!(code, 200, "{body}");
    let cleared: Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = cleared["deleted_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keys.contains(&"tournament_matches"), "{keys:?}");
    assert!(redis.get("tournament_matches").is_none());
    // The next run notices and rewrites everything.
    assert_eq!(daemon.post("/run", Some("s3cret-token")).0, 202);
    wait_for("the rewrite", Duration::from_secs(20), || {
        redis.get("tournament_matches").is_some()
    });
    assert_eq!(redis.data("tournament_matches").len(), sim.stats().matches);

    // Unknown paths, oversized requests.
    assert_eq!(daemon.get("/nope").0, 404);
    let big = "x".repeat(64 * 1024);
    let r = agent()
        .post(&daemon.url("/run"))
        .header("Authorization", "Bearer s3cret-token")
        .send(big.as_bytes());
    let code = r.map(|r| r.status().as_u16()).unwrap_or(413);
    assert_eq!(code, 413);
}

/// Checks that every element opened is closed in order (void elements
/// aside) and the document is one `html` element after a doctype.
fn assert_well_formed(html: &str) {
    const VOID: [&str; 6] = ["meta", "link", "br", "hr", "img", "input"];
    assert!(html.starts_with("<!DOCTYPE html>"), "doctype");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = &html["<!DOCTYPE html>".len()..];
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "closing </{name}>");
            continue;
        }
        let name = tag.split_whitespace().next().unwrap().to_ascii_lowercase();
        assert_eq!(tag.matches('"').count() % 2, 0, "quotes in <{tag}>");
        // Self-closing, as SVG's elements may be.
        if tag.ends_with('/') {
            continue;
        }
        if !VOID.contains(&name.as_str()) {
            if name == "style" {
                let close = rest.find("</style>").expect("</style>");
                rest = &rest[close + "</style>".len()..];
                continue;
            }
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn the_status_page_is_valid_html_and_renders_the_last_result() {
    let h = Harness::small("http", 45);
    let daemon = start(&h, &[]);
    wait_for("the first run", Duration::from_secs(20), || {
        !daemon.runs().is_empty()
    });
    let (code, page) = daemon.get("/");
    assert_eq!(code, 200);
    assert_well_formed(&page);
    let result = daemon.runs()[0]["status"].as_str().unwrap().to_string();
    assert!(
        page.contains(&format!("class=\"ok\">{result}</span>")),
        "{page}"
    );
    for link in ["/metrics", "/status", "/healthz", "/readyz"] {
        assert!(page.contains(&format!("href=\"{link}\"")));
    }

    let Some(browser) = browser() else {
        tool_missing("chromium (Debian package `chromium`)");
        return;
    };
    let profile = h.dir().join("chromium");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(daemon.url("/"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(&format!(
            "id=\"last-run-result\" class=\"ok\">{result}</span>"
        )),
        "chromium rendered: {dom}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("<table id=\"runs\">"));
}

#[test]
fn hostile_clients_neither_crash_nor_block_the_server() {
    use std::io::{Read, Write};
    let h = Harness::small("http", 46);
    let daemon = start(&h, &[]);
    wait_for("the first run", Duration::from_secs(20), || {
        !daemon.runs().is_empty()
    });
    let addr = http_addr(daemon.config());
    let head = |length: &str| {
        format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n")
    };
    // A body "larger than memory", once (tiny_http 0.12 aborted on this).
    let mut huge = std::net::TcpStream::connect(&addr).unwrap();
    huge.write_all(head("100000000000000000").as_bytes())
        .unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 64];
    let n = huge.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"));
    // Eight clients announcing bodies they never send, and eight that never
    // finish their request head: more than the handler threads.
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(head("5000").as_bytes()).unwrap();
        idle.push(s);
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    // Scrapes still answer, promptly.
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(daemon.get("/metrics").0, 200);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    drop(idle);
    drop(huge);

    // An unread body is never parsed as a request: one answer, then the
    // connection closes (a body over 1 KiB, and one behind Expect: 100-continue).
    let smuggled = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
    for (headers, body) in [
        (
            format!("Content-Length: {}\r\n", 2000),
            format!("{smuggled}{}", " ".repeat(2000 - smuggled.len())),
        ),
        (
            format!(
                "Content-Length: {}\r\nExpect: 100-continue\r\n",
                smuggled.len()
            ),
            smuggled.to_string(),
        ),
    ] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!("POST /metrics HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}");
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }

    // A request line that never ends is cut off, not buffered forever.
    let mut endless = std::net::TcpStream::connect(&addr).unwrap();
    endless
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = endless.write_all(&vec![b'A'; 64 * 1024]);
    let mut answer = Vec::new();
    let _ = endless.read_to_end(&mut answer);
    assert!(answer.len() < 1024, "closed without a long answer");
    assert_eq!(daemon.get("/healthz").0, 200, "the daemon is alive");
}

#[test]
fn the_listener_survives_running_out_of_file_descriptors() {
    let h = Harness::small("http", 61);
    // Room for the daemon's own descriptors and a few connections, not for
    // the 64 the server would take: accept() must fail with EMFILE.
    let nofile = 72;
    let daemon = start_limited(&h, &[], Some(nofile));
    wait_for("the first run", Duration::from_secs(30), || {
        !daemon.runs().is_empty()
    });
    let pid = daemon.pid();
    let idle_fds = open_fds(pid);
    assert!(
        idle_fds > 0 && idle_fds < nofile as usize - 8,
        "{idle_fds} open at rest"
    );
    let addr = http_addr(daemon.config());
    // Far past the limit: until the listen backlog is full (connects then
    // time out; two in a row, so one slow connect on a busy machine does
    // not end it early), 150 connections, or 5 s.
    let mut idle: Vec<std::net::TcpStream> = Vec::new();
    let mut timeouts = 0;
    let filling = Instant::now();
    while idle.len() < 150 && timeouts < 2 && filling.elapsed() < Duration::from_secs(5) {
        match std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)) {
            Ok(stream) => {
                idle.push(stream);
                timeouts = 0;
            }
            Err(_) => timeouts += 1,
        }
    }
    let log = h.logs_dir().join("precache.log");
    assert!(
        idle.len() >= 100,
        "{} connections opened; log: {}",
        idle.len(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let log_says = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };
    wait_for("accept() to fail", Duration::from_secs(20), || {
        log_says("cannot accept a connection")
    });
    // At the limit (the count is read while descriptors come and go).
    let held = open_fds(pid);
    assert!(
        held + 4 >= nofile as usize,
        "{held} open (limit {nofile}, {idle_fds} at rest)"
    );
    // Released: it answers again at once, and says it recovered.
    idle.clear();
    wait_for(
        "/metrics after the clients left",
        Duration::from_secs(10),
        || daemon.get("/metrics").0 == 200,
    );
    for _ in 0..20 {
        assert_eq!(daemon.get("/metrics").0, 200);
        assert_eq!(daemon.get("/healthz").0, 200);
    }
    assert!(log_says("accepting connections again"));
    // An idle connection is closed by the server after its timeout (15 s),
    // so idle clients alone cannot hold descriptors for ever.
    let mut lingering = std::net::TcpStream::connect(&addr).unwrap();
    lingering
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut lingering, &mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the server closed the idle connection: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert!(open_fds(pid) < idle_fds + 16, "descriptors are given back");
}

/// `curl` (a real client) against the daemon's HTTPS listener.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().to_string(), body.to_string())
}

/// `/metrics` and the page over TLS with basic auth (bcrypt-hashed
/// users): `curl` with the CA and the password gets the metrics; without
/// auth, with a wrong password or an unknown user, 401; plain HTTP gets
/// nothing; the admin endpoints keep their bearer token.
#[test]
fn metrics_over_tls_with_basic_auth_for_a_real_client() {
    if Command::new("curl").arg("--version").output().is_err() {
        tool_missing("curl");
        return;
    }
    let h = Harness::small("http", 46);
    let ca = precache::sim::local::LocalCa::create(&h.dir().join("ca"), "metrics CA").unwrap();
    let cert = ca.issue_server("metrics").unwrap();
    let hash = bcrypt::hash_with_salt("scrape-pw", 4, [9u8; 16])
        .unwrap()
        .to_string();
    let path = |p: &std::path::Path| quoted(p.to_str().unwrap());
    let cfg = h.write_config(&[
        ("metrics", "tls_cert_file", path(&cert.cert_pem)),
        ("metrics", "tls_key_file", path(&cert.key_pem)),
        (
            "metrics",
            "basic_auth_users",
            format!("[{:?}]", format!("prometheus:{hash}")),
        ),
        ("metrics", "admin_token", quoted("adm1n-token")),
        ("warm", "enabled", "false".into()),
    ]);
    let _daemon = DaemonChild::start(&cfg);
    let addr = http_addr(&cfg);
    let base = format!("https://{addr}");
    let ca_pem = ca.ca_pem.to_str().unwrap();
    let url = format!("{base}/metrics");
    wait_for("the HTTPS listener", Duration::from_secs(20), || {
        curl(&["--cacert", ca_pem, &url]).0 == "401"
    });
    let (code, body) = curl(&["--cacert", ca_pem, "-u", "prometheus:scrape-pw", &url]);
    assert_eq!(code, "200");
    assert!(body.contains("precache_build_info{"), "{body}");
    for (what, user) in [
        ("a wrong password", "prometheus:scrape-pW"),
        ("an unknown user", "grafana:scrape-pw"),
    ] {
        let (code, body) = curl(&["--cacert", ca_pem, "-u", user, &url]);
        assert_eq!(code, "401", "{what}");
        assert!(!body.contains("precache_"), "{what}");
    }
    let (code, _) = curl(&["--cacert", ca_pem, &url]);
    assert_eq!(code, "401", "no auth");
    let (code, _) = curl(&[
        "--cacert",
        ca_pem,
        "-u",
        "prometheus:scrape-pw",
        &format!("{base}/"),
    ]);
    assert_eq!(code, "200", "the page too");
    // Plain HTTP on the TLS port gets no answer worth the name.
    let (code, body) = curl(&[&format!("http://{addr}/metrics")]);
    assert!(code != "200" && !body.contains("precache_"), "{code}");
    // A client that does not trust the CA refuses the server.
    let (code, _) = curl(&[&url]);
    assert_eq!(code, "000", "curl without the CA");
    // The admin endpoint keeps its bearer token, basic auth or not.
    let (code, _) = curl(&[
        "--cacert",
        ca_pem,
        "-X",
        "POST",
        "-H",
        "Authorization: Bearer adm1n-token",
        &format!("{base}/run"),
    ]);
    assert_eq!(code, "202");
    // check-config shows neither the key's path nor the hash.
    let out = cli(&cfg).arg("check-config").output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains(&hash) && !shown.contains(cert.key_pem.to_str().unwrap()));
    assert!(shown.contains("prometheus:<bcrypt hash>"), "{shown}");
}
