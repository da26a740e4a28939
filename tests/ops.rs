//! What an operator of a VM gets (DESIGN.md section 11): the systemd unit,
//! the notify protocol, `check-config`, logs that suit journald.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use precache::sim::{Fault, Scale};

/// `systemd-analyze verify` accepts the unit (with ExecStart pointed at the
/// binary under test: it checks that the command exists).
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let unit = std::fs::read_to_string(repo_path("deploy/precache.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let dir = TempDir::new("unit");
    let path = dir.path().join("precache.service");
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
    fn new(dir: &TempDir) -> FakeSystemd {
        let path = dir.path().join("notify.sock");
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
    let sim = sim(Scale::Small, 61);
    let redis = RedisServer::start();
    let dir = TempDir::new("notify");
    let systemd = FakeSystemd::new(&dir);
    let cfg = write_full_config(
        dir.path(),
        &sim,
        &redis,
        &[
            ("sync", "interval_secs", "1".into()),
            ("daemon", "shutdown_grace_secs", "1".into()),
            ("upstream", "timeout_secs", "30".into()),
            ("upstream", "retries", "0".into()),
            ("warm", "enabled", "false".into()),
        ],
    );
    let mut daemon = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("NOTIFY_SOCKET", &systemd.path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
    assert_eq!(systemd.all("READY=1"), 1, "READY once");
    send_signal(daemon.id(), "TERM");
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(systemd.all("STOPPING=1"), 1);
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let dir = TempDir::new("check");
    let secret = dir.path().join("client_secret");
    std::fs::write(&secret, "file-secret-xyz\n").unwrap();
    let cfg = write_config(
        dir.path(),
        &[
            ("upstream", "client_secret_file", quoted("client_secret")),
            ("metrics", "admin_token", quoted("admin-xyz")),
            ("redis", "url", quoted("redis://:pw-xyz@127.0.0.1:6390/1")),
        ],
    );
    let out = Command::new(bin())
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .env("CREDENTIALS_DIRECTORY", dir.path())
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
    let bad = write_config(dir.path(), &[("sync", "interval_secs", "0".into())]);
    let out = Command::new(bin())
        .args(["--config", bad.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync.interval_secs"));
    assert!(out.stdout.is_empty());
}

/// Under systemd (`JOURNAL_STREAM` set) stderr lines carry no timestamp:
/// journald adds its own. Elsewhere they start with one.
#[test]
fn stderr_has_no_timestamps_under_journald() {
    let sim = sim(Scale::Small, 62);
    let redis = RedisServer::start();
    let dir = TempDir::new("journal");
    let cfg = write_full_config(
        dir.path(),
        &sim,
        &redis,
        &[("warm", "enabled", "false".into())],
    );
    for journald in [true, false] {
        let mut command = Command::new(bin());
        command.args(["--config", cfg.to_str().unwrap(), "once"]);
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
        }
    }
}
