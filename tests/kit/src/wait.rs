//! Waiting, signals, HTTP probes and the external tools a test may need.

use std::time::{Duration, Instant};

/// Polls `ok` every 25 ms; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A tool a test needs is missing: under CI (`CI` set, as `.ci/run` does,
/// after installing it) that is a failure; elsewhere the test says it
/// skipped that part.
pub fn tool_missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing, and CI must run this check (.ci/run installs it)");
    }
    println!("SKIPPED: {what} is missing");
}

/// Sends signal `name` (e.g. "TERM") to process `pid` through the shell's
/// `kill` builtin, which exists wherever `/bin/sh` does.
pub fn send_signal(pid: u32, name: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
        .expect("sh runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Whether `program` is on `PATH` (as the shell finds it).
pub fn on_path(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The headless browser on this machine, if any.
pub fn browser() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// A GET's body, whatever its status; `None` when nothing answered.
pub fn http_get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    response.body_mut().read_to_string().ok()
}
