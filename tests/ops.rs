//! What an operator of a VM gets (DESIGN.md section 11): the systemd unit,
//! the notify protocol, `check-config`, logs that suit journald.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kit::*;
use precache::sim::Fault;

/// `systemd-analyze verify` accepts the unit (with ExecStart pointed at the
/// binary under test: it checks that the command exists).
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let unit = std::fs::read_to_string(repo_path("deploy/precache.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let h = Harness::new("unit").build();
    let path = h.dir().join("precache.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/precache", bin())).unwrap();
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    else {
        tool_missing("systemd-analyze (Debian package `systemd`)");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("precache.service"),
        "warnings about the unit: {stderr}"
    );
    // The stop timeout leaves the run its grace.
    let grace: u64 = 20;
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(stop > grace, "TimeoutStopSec={stop} within the grace");
}

/// A socket standing in for systemd's, and what arrived on it, when.
struct FakeSystemd {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl FakeSystemd {
    fn new(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push((Instant::now(), text));
            }
        });
        FakeSystemd { path, messages }
    }

    fn count(&self, prefix: &str, since: Instant, until: Instant) -> usize {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, m)| m.starts_with(prefix) && *t >= since && *t <= until)
            .count()
    }

    fn all(&self, prefix: &str) -> usize {
        self.count(
            prefix,
            Instant::now() - Duration::from_secs(3600),
            Instant::now(),
        )
    }
}

#[test]
fn the_daemon_notifies_ready_once_and_feeds_the_watchdog_only_while_it_progresses() {
    let h = Harness::small("notify", 61);
    let sim = h.sim();
    let systemd = FakeSystemd::new(h.dir());
    let cfg = h.write_config(&[
        ("sync", "interval_secs", "1".into()),
        ("daemon", "shutdown_grace_secs", "1".into()),
        ("upstream", "timeout_secs", "30".into()),
        ("upstream", "retries", "0".into()),
        ("warm", "enabled", "false".into()),
    ]);
    let mut daemon = DaemonChild::command(&cfg)
        .env("NOTIFY_SOCKET", &systemd.path)
        .env("WATCHDOG_USEC", "400000")
        .start();
    wait_for("READY=1", Duration::from_secs(30), || {
        systemd.all("READY=1") == 1
    });
    let ready = systemd
        .messages
        .lock()
        .unwrap()
        .iter()
        .find(|(_, m)| m.starts_with("READY=1"))
        .cloned();
    assert!(ready.unwrap().1.contains("STATUS=first run success"));
    // Progressing: a WATCHDOG=1 every 200 ms.
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let fed = systemd.count("WATCHDOG=1", start, Instant::now());
    assert!(fed >= 4, "{fed} watchdog pings in 1.5 s");

    // Stuck: every seasons call stalls (30 s timeout). After 2 × interval
    // + grace (3 s) without progress the pings stop.
    sim.set_fault(
        "seasons",
        Fault {
            stall_rate: 1.0,
            ..Fault::default()
        },
    );
    let stalled = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let window = (stalled + Duration::from_secs(5), Instant::now());
    assert_eq!(
        systemd.count("WATCHDOG=1", window.0, window.1),
        0,
        "no ping while the loop is stuck"
    );
    // Released: the run ends, the loop progresses, the pings come back.
    sim.clear_faults();
    let released = Instant::now();
    wait_for("pings again", Duration::from_secs(10), || {
        systemd.count("WATCHDOG=1", released, Instant::now()) >= 2
    });
    assert_eq!(systemd.all("READY=1"), 1, "READY once for the start");
    // `systemctl reload`: RELOADING=1 (with the monotonic time), then READY=1.
    daemon.signal("HUP");
    wait_for("the reload's READY=1", Duration::from_secs(10), || {
        systemd.all("READY=1") == 2
    });
    let messages = systemd.messages.lock().unwrap().clone();
    let reloading: Vec<&String> = messages
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("RELOADING=1"))
        .collect();
    assert_eq!(reloading.len(), 1, "{messages:?}");
    assert!(
        reloading[0].contains("\nMONOTONIC_USEC="),
        "{}",
        reloading[0]
    );
    assert!(messages.iter().any(|(_, m)| m.contains("STATUS=reloaded")));
    daemon.signal("TERM");
    assert_eq!(daemon.wait(), Some(0));
    assert_eq!(systemd.all("STOPPING=1"), 1);
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let h = Harness::new("check").build();
    let secret = h.dir().join("client_secret");
    std::fs::write(&secret, "file-secret-xyz\n").unwrap();
    let cfg = h.write_config(&[
        ("upstream", "client_secret_file", quoted("client_secret")),
        ("metrics", "admin_token", quoted("admin-xyz")),
        ("redis", "url", quoted("redis://:pw-xyz@127.0.0.1:6390/1")),
    ]);
    let out = cli(&cfg)
        .arg("check-config")
        .env("CREDENTIALS_DIRECTORY", h.dir())
        .env("PRECACHE_SYNC_INTERVAL_SECS", "240")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stdout.contains("xyz") && !stderr.contains("xyz"),
        "{stdout}{stderr}"
    );
    let table: toml::Table = stdout.parse().expect("TOML");
    assert_eq!(
        table["sync"]["interval_secs"].as_integer(),
        Some(240),
        "the environment counts"
    );
    assert_eq!(
        table["upstream"]["client_secret"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(table["metrics"]["admin_token"].as_str(), Some("<redacted>"));
    assert_eq!(
        table["redis"]["url"].as_str(),
        Some("redis://<redacted>@127.0.0.1:6390/1")
    );

    // A bad config: exit 2, the key named.
    let bad = h.write_config(&[("sync", "interval_secs", "0".into())]);
    let out = cli(&bad).arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync.interval_secs"));
    assert!(out.stdout.is_empty());
}

/// Under systemd (`JOURNAL_STREAM` set) stderr lines carry no timestamp
/// (journald adds its own) and start with their priority (`<6>` info,
/// `<3>` an error), which `journalctl -p` filters on. Elsewhere they
/// start with a timestamp.
#[test]
fn stderr_has_priorities_and_no_timestamps_under_journald() {
    let mut h = Harness::small("journal", 62);
    let cfg = h.write_config(&[("warm", "enabled", "false".into())]);
    for journald in [true, false] {
        let mut command = cli(&cfg);
        command.arg("once");
        if journald {
            command.env("JOURNAL_STREAM", "8:12345");
        } else {
            command.env_remove("JOURNAL_STREAM");
        }
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("run ")).collect();
        assert!(!lines.is_empty(), "{stderr}");
        for line in lines {
            let stamped = line.starts_with(|c: char| c.is_ascii_digit());
            assert_eq!(stamped, !journald, "journald {journald}: {line}");
            assert_eq!(
                line.starts_with("<6>[INFO] "),
                journald,
                "journald {journald}: {line}"
            );
        }
    }
    // An error line: the upstream gone, so the run fails with an [ERROR].
    h.stop_sim();
    let out = cli(&cfg)
        .arg("once")
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|l| l.contains("[ERROR]"))
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    assert!(error.starts_with("<3>[ERROR] precache"), "{error}");
    for line in stderr.lines().filter(|l| l.contains("[WARN]")) {
        assert!(line.starts_with("<4>[WARN] "), "{line}");
    }
    // Redis gone: `once` says so (it used to blame "another instance").
    h.redis().stop();
    let out = cli(&cfg).arg("once").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("precache: redis: connecting to"),
        "{stderr}"
    );
    assert!(!stderr.contains("another instance holds"), "{stderr}");
}

/// `promtool check rules` and `promtool test rules`: every alert fires on
/// what it is for and stays quiet on its near miss.
#[test]
fn promtool_tests_the_alert_and_recording_rules() {
    let dir = repo_path("deploy/prometheus");
    for args in [
        vec!["check", "rules", "precache.rules.yml"],
        vec!["test", "rules", "precache.rules.test.yml"],
    ] {
        let Ok(out) = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
        else {
            tool_missing("promtool (Debian package `prometheus`)");
            return;
        };
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert the issue names is there, and tested.
    let rules = std::fs::read_to_string(dir.join("precache.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("precache.rules.test.yml")).unwrap();
    for alert in [
        "PrecacheUpstreamDown",
        "PrecacheUpstreamUnauthorized",
        "PrecacheRunsFailing",
        "PrecacheRunsHeld",
        "PrecacheNoSuccessfulRun",
        "PrecacheNoSuccessfulRunSinceStart",
        "PrecacheDown",
        "PrecacheWarmBacklogGrowing",
        "PrecacheRedisErrors",
        "PrecacheRedisFailover",
        "PrecacheRedisNoMaster",
        "PrecacheRestarting",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} untested"
        );
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus (Debian's) scrapes a running daemon, and every query
/// of the Grafana dashboard returns at least one series.
#[test]
fn a_real_prometheus_answers_every_dashboard_query() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("deploy/grafana/precache.json")).unwrap(),
    )
    .unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(queries.len() >= 10, "{} queries", queries.len());
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        tool_missing("prometheus (Debian package `prometheus`)");
        return;
    }
    let h = Harness::small("prometheus", 63);
    let daemon = h.start_daemon(&[("sync", "interval_secs", "2".into())]);
    let metrics = http_addr(daemon.config());
    let prom_port = precache::sim::local::free_port().unwrap();
    let prom_config = h.dir().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: precache\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            h.dir().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{prom_port}");
    let query = |q: &str| -> serde_json::Value {
        http_get(&format!("{base}/api/v1/query?query={}", encode(q)))
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    // Scraped a few times, with runs in between (rates need two samples).
    wait_for(
        "Prometheus scraping the daemon",
        Duration::from_secs(60),
        || {
            query("count_over_time(precache_runs_total{job=\"precache\",status=\"success\"}[5m])")
            ["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 4.0)
        },
    );
    let mut empty = Vec::new();
    for q in &queries {
        let answer = query(q);
        assert_eq!(answer["status"], "success", "{q}: {answer}");
        if answer["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            empty.push(q.clone());
        }
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(empty.is_empty(), "queries without a series: {empty:#?}");
}

fn headless(browser: &str, profile: &Path) -> Command {
    let mut command = Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Headless Chromium renders the status page, charts and all, in a
/// 1280-px window without horizontal scrolling; the screenshot is kept in
/// target/ops/status-page-1280.png for the closing note.
#[test]
fn the_status_page_with_its_charts_fits_1280_px() {
    let h = Harness::small("page", 64);
    let (sim, redis) = (h.sim(), h.redis());
    let daemon = h.start_daemon(&[
        ("sync", "interval_secs", "1".into()),
        ("warm", "reference_date", quoted(&today().to_string())),
    ]);
    let base = daemon.url("");
    let runs = || -> usize {
        http_get(&format!("{base}/status"))
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|s| s["runs"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    wait_for("two runs", Duration::from_secs(30), || runs() >= 2);
    sim.churn(&precache::sim::ChurnSpec {
        matches_modified: 4,
        matches_added: 1,
        tournaments_renamed: 1,
        ..Default::default()
    });
    wait_for("the churn seen", Duration::from_secs(30), || {
        http_get(&format!("{base}/status")).is_some_and(|b| b.contains("\"individual_matches\":["))
    });
    wait_for("more runs", Duration::from_secs(30), || runs() >= 5);
    let page = http_get(&format!("{base}/")).unwrap();
    for id in [
        "chart-duration",
        "chart-changes",
        "chart-calls",
        "chart-warm",
    ] {
        assert!(page.contains(&format!("<svg id=\"{id}\"")), "{id} missing");
    }
    assert!(page.contains("id=\"changed-ids\""));
    assert!(
        !page.contains("<script") && !page.contains("src=\"http"),
        "self-contained"
    );
    // It refreshes itself, and says which build, how long up, where Redis is.
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    assert!(page.contains(&format!("id=\"version\">{}", env!("CARGO_PKG_VERSION"))));
    assert!(page.contains("id=\"uptime\">"));
    assert!(page.contains(&format!(
        "id=\"redis-master\" class=\"ok\">redis://127.0.0.1:{}/0",
        redis.port
    )));
    assert!(page.contains("id=\"role\">leader"));

    let Some(browser) = browser() else {
        tool_missing("chromium (Debian package `chromium`)");
        return;
    };
    // The page as served, plus a measuring line: Chromium lays it out at
    // 1280 px and the DOM it dumps says whether anything overflowed, how
    // many words of the runs table's header break across lines, and how
    // tall the tallest bar of the changes chart is after the first (cold)
    // run, in per cent of the plot (150 - 18 - 8 = 124 units).
    let measured = h.dir().join("measure.html");
    std::fs::write(
        &measured,
        page.replace(
            "</body>",
            "<script>var e=document.documentElement;var broken=0;\
             document.querySelectorAll('#runs th').forEach(function(th){if(th.scrollWidth>th.clientWidth)broken++;var t=th.firstChild;if(!t||t.nodeType!==3)return;\
             var re=/\\S+/g,m;while((m=re.exec(t.textContent))){var r=document.createRange();r.setStart(t,m.index);r.setEnd(t,m.index+m[0].length);\
             var lines={};Array.prototype.forEach.call(r.getClientRects(),function(c){lines[Math.round(c.top)]=1;});if(Object.keys(lines).length>1)broken++;}});\
             var bars={};document.querySelectorAll('#chart-changes rect:not(.cut)').forEach(function(b){var x=parseFloat(b.getAttribute('x'));bars[x]=(bars[x]||0)+parseFloat(b.getAttribute('height'));});\
             var xs=Object.keys(bars).map(parseFloat).sort(function(a,b){return a-b;});var later=0;for(var i=1;i<xs.length;i++){later=Math.max(later,bars[xs[i]]);}\
             document.body.insertAdjacentHTML('beforeend','<pre id=\"measure\">'+e.scrollWidth+' '+e.clientWidth+' '+document.querySelectorAll('svg rect').length+' '+broken+' '+Math.round(later/124*100)+'</pre>');</script></body>",
        ),
    )
    .unwrap();
    let profile = h.dir().join("chromium");
    let out = headless(browser, &profile)
        .arg("--dump-dom")
        .arg(format!("file://{}", measured.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    // The last one: the first is in the script's own text.
    let measure = dom
        .rsplit("<pre id=\"measure\">")
        .next()
        .filter(|_| dom.matches("<pre id=\"measure\">").count() >= 2)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no measurement: {}", String::from_utf8_lossy(&out.stderr)));
    let numbers: Vec<usize> = measure.split(' ').map(|n| n.parse().unwrap()).collect();
    let (scroll, client, bars) = (numbers[0], numbers[1], numbers[2]);
    let (broken, later_percent) = (numbers[3], numbers[4]);
    assert!((1200..=1280).contains(&client), "viewport {client}");
    assert!(scroll <= client, "horizontal scroll: {scroll} > {client}");
    assert!(bars >= 10, "the charts drew {bars} bars");
    assert_eq!(
        broken, 0,
        "header words broken across lines, or overflowing"
    );
    assert!(
        later_percent >= 20,
        "after the cold run, the tallest later bar is {later_percent} % of the chart"
    );
    eprintln!("the tallest later bar of the changes chart: {later_percent} % of its height");

    let shots = repo_path("target/ops");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("status-page-1280.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(browser, &profile)
        .arg("--window-size=1280,1600")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{base}/"))
        .output()
        .unwrap();
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 10_000),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("status page screenshot: {}", shot.display());
}

/// `precache once` writing its summary where nobody reads it any more
/// (`once | head -c1` after head exited: the pipe's read end is closed
/// before the summary comes) or where it cannot go (`> /dev/full`): a
/// clear error and exit 1, never a panic; the run itself is in Redis.
#[test]
fn a_closed_or_full_stdout_is_an_error_not_a_panic() {
    let h = Harness::small("stdout", 64);
    let redis = h.redis();
    let cfg = h.write_config(&[]);
    let once = |stdout: std::process::Stdio| {
        let mut child = cli(&cfg)
            .args(["once", "--no-warm"])
            .stdout(stdout)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A closed pipe: its only reader is gone before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = once(std::process::Stdio::piped());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("cannot write the result to stdout") && stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ended success"),
        "the run is named: {stderr}"
    );
    assert!(
        !redis.keys("tournament_matches").is_empty(),
        "the run wrote Redis"
    );

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (code, stderr) = once(std::process::Stdio::from(full));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
}

#[test]
fn an_unknown_precache_variable_stops_start_up_naming_it() {
    let h = Harness::new("typo").build();
    let cfg = h.write_config(&[]);
    for command in [&["check-config"][..], &["run"], &["once", "--dry-run"]] {
        let out = cli(&cfg)
            .args(command)
            .env("PRECACHE_SYNC_INTERVALL_SECS", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(
            stderr.contains("PRECACHE_SYNC_INTERVALL_SECS")
                && stderr.contains("did you mean PRECACHE_SYNC_INTERVAL_SECS"),
            "{command:?}: {stderr}"
        );
    }
}

#[test]
fn check_config_connect_proves_redis_the_token_endpoint_and_the_api() {
    let h = Harness::small("connect", 65);
    let redis = h.redis();
    let check = |cfg: &std::path::Path| {
        let out = cli(cfg)
            .args(["check-config", "--connect"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cfg = h.write_config(&[]);
    let (code, stderr) = check(&cfg);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("redis {}: answers, role master", redis.url())),
        "{stderr}"
    );
    assert!(stderr.contains("accepts client \"demo\""), "{stderr}");
    assert!(stderr.contains("HTTP 200"), "{stderr}");

    // A refused secret: named as such, the secret not shown.
    let wrong = h.write_config(&[("upstream", "client_secret", quoted("wrong-xyz"))]);
    let (code, stderr) = check(&wrong);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("were refused"), "{stderr}");
    assert!(!stderr.contains("wrong-xyz"), "{stderr}");

    // Redis stopped (its URL with a password): the target named, redacted.
    let with_password = format!("redis://:pw-xyz@127.0.0.1:{}/0", redis.port);
    let cfg = h.write_config(&[("redis", "url", quoted(&with_password))]);
    redis.stop();
    let (code, stderr) = check(&cfg);
    assert_eq!(code, Some(1), "{stderr}");
    let target = format!("redis://<redacted>@127.0.0.1:{}/0", redis.port);
    assert!(
        stderr.contains(&format!("connecting to {target}")),
        "{stderr}"
    );
    assert!(stderr.contains("FAILED"), "{stderr}");
    assert!(!stderr.contains("pw-xyz"), "{stderr}");
}

/// `precache demo` tells the truth: it names the Redis it writes to, warns
/// (and waits) before writing into one that holds data, and every churn it
/// announces is what the next run reports, id for id, under adaptive
/// polling.
#[test]
fn the_demo_names_its_redis_and_the_next_run_detects_what_it_announces() {
    // No simulator: the demo starts its own, on the port the config names.
    let h = Harness::new("demo").redis().build();
    let redis = h.redis();
    redis.set("someone:else", "1");
    let port = precache::sim::local::free_port().unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let cfg = h.write_config(&[
        ("upstream", "api_url", quoted(&api)),
        (
            "upstream",
            "token_url",
            quoted(&format!("{api}/connect/token")),
        ),
        ("warm", "enabled", "false".into()),
    ]);
    let stderr_path = h.dir().join("demo.stderr");
    let mut demo = cli(&cfg)
        .args(["demo", "--scale", "small", "--interval-secs", "1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let churns = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.split_once("demo: churned the simulator: "))
            .filter_map(|(_, rest)| rest.split_once("; "))
            .map(|(ids, when)| (ids.to_string(), when.to_string()))
            .collect()
    };
    wait_for("four announced churns", Duration::from_secs(60), || {
        churns(&log()).len() >= 4
    });
    send_signal(demo.id(), "TERM");
    assert_eq!(demo.wait().unwrap().code(), Some(0));
    let text = log();
    assert!(
        text.contains(&format!(
            "the Redis at {} (redis.url) already holds 1 key(s)",
            redis.url()
        )),
        "{text}"
    );
    let warned = text.find("already holds").unwrap();
    let first_run = text.find("run ").unwrap_or(0);
    assert!(warned < first_run, "warned after writing: {text}");

    // Entry 0 is the cold run; entry k+1 the run after churn k.
    let entries = feed(redis);
    let announced = churns(&text);
    assert!(entries.len() > announced.len() - 1, "{entries:?}");
    for (k, (ids, when)) in announced.iter().enumerate().take(entries.len() - 1) {
        let ids: precache::sim::ChangedIds = serde_json::from_str(ids).unwrap();
        let entry = &entries[k + 1];
        let got = |category: &str| -> Vec<i64> {
            entry
                .get(category)
                .map(|v| serde_json::from_str(v).unwrap())
                .unwrap_or_default()
        };
        assert_eq!(
            got("tournaments_in_season"),
            ids.tournaments_in_season,
            "churn {k}"
        );
        if when.contains("should detect exactly these") {
            assert_eq!(
                got("individual_matches"),
                ids.individual_matches,
                "churn {k}: {when}"
            );
            assert_eq!(
                got("tournament_matches"),
                ids.tournament_matches,
                "churn {k}: {when}"
            );
            assert_eq!(
                got("unique_team_ids"),
                ids.unique_team_ids,
                "churn {k}: {when}"
            );
        } else {
            assert!(
                when.contains("within"),
                "churn {k} promises nothing: {when}"
            );
        }
    }
}

/// The kit finds the binary from the running test (it cannot see
/// `CARGO_BIN_EXE_precache`, which only the root package's tests can):
/// it must be the one cargo built for them.
#[test]
fn the_kit_runs_the_binary_cargo_built_for_these_tests() {
    let built = std::fs::canonicalize(env!("CARGO_BIN_EXE_precache")).unwrap();
    assert_eq!(std::fs::canonicalize(bin()).unwrap(), built);
}

/// `--version` names the git revision and the build date; so does
/// `precache_build_info`.
#[test]
fn the_version_names_the_git_revision_and_the_build_date() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let version = String::from_utf8_lossy(&out.stdout);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_path(""))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(head.len(), 12, "a git checkout");
    assert!(
        version.starts_with(&format!(
            "precache {} (rev {head}",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    let date = version
        .rsplit("built ")
        .next()
        .unwrap()
        .trim()
        .trim_end_matches(')');
    assert!(
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
        "{version}"
    );
    let metrics = precache::serve::metrics::Metrics::new(10, false)
        .unwrap()
        .render()
        .unwrap();
    let info = metrics
        .lines()
        .find(|l| l.starts_with("precache_build_info{"))
        .unwrap();
    assert!(
        info.contains(&format!("revision=\"{}", &head))
            && info.contains(&format!("build_date=\"{date}\"")),
        "{info}"
    );
}
