//! What the daemon knows about itself, shared between the run loop (which
//! writes it) and the HTTP server (which reads it): whether a run is in
//! progress, when the loop last made progress, the recent runs.
//!
//! The decisions the endpoints make from it — is the loop healthy, is the
//! service ready, what the status JSON and HTML page say — are pure
//! functions of a [`StateView`] and the time, so they are tested without
//! threads or sockets.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::model::changes::Category;
use crate::report::{ApiCallCounts, PollReport, RunStats, RunStatus, Tier, UpstreamStatus};
use crate::serve::charts::{Series, bar_chart};
pub use crate::serve::html::escape;
use crate::store::StoreError;
use crate::util::{lock, rfc3339};

/// The shared state. Cheap to update; readers copy a [`StateView`] out.
pub struct DaemonState {
    inner: Mutex<StateView>,
}

/// A copy of the state at one moment.
#[derive(Debug, Clone)]
pub struct StateView {
    /// When the daemon started (for its uptime).
    pub started: Instant,
    pub interval: Duration,
    pub grace: Duration,
    pub history_len: usize,
    /// When the loop last started or finished a run, or began waiting.
    pub last_progress: Instant,
    /// Start of the run in progress.
    pub running_since: Option<(Instant, DateTime<Utc>)>,
    /// When the last run that succeeded (or degraded) ended.
    pub last_ok: Option<(Instant, DateTime<Utc>)>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub stopping: bool,
    /// The seed's run stats of the recent runs, oldest first.
    pub runs: VecDeque<RunStats>,
    /// How the last run that got to the match calls chose its roots.
    pub polling: Option<PollReport>,
    /// Warm-ups due after each recent run (oldest first; as many as `runs`
    /// at most), for the status page's chart.
    pub warm_due: VecDeque<u64>,
    /// Leader or standby, when the lease is kept (DESIGN.md section 12).
    pub role: Option<Role>,
}

/// This instance's part, as `/status` and the page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// "leader" or "standby".
    pub role: &'static str,
    /// The instance that holds the lease (this one, when leading), if any.
    pub leader: Option<String>,
    /// Since when this instance has had this part.
    pub since: Option<String>,
}

impl DaemonState {
    pub fn new(
        interval: Duration,
        grace: Duration,
        history_len: usize,
        now: Instant,
    ) -> DaemonState {
        DaemonState {
            inner: Mutex::new(StateView {
                interval,
                grace,
                history_len: history_len.max(1),
                started: now,
                last_progress: now,
                running_since: None,
                last_ok: None,
                next_run_at: None,
                stopping: false,
                runs: VecDeque::new(),
                polling: None,
                warm_due: VecDeque::new(),
                role: None,
            }),
        }
    }

    pub fn view(&self) -> StateView {
        lock(&self.inner).clone()
    }

    pub fn is_running(&self) -> bool {
        lock(&self.inner).running_since.is_some()
    }

    pub fn run_started(&self, now: Instant, at: DateTime<Utc>) {
        let mut s = lock(&self.inner);
        s.running_since = Some((now, at));
        s.last_progress = now;
    }

    /// `stats`: the seed's `log_item`; `ok`: success or degraded.
    pub fn run_finished(&self, now: Instant, at: DateTime<Utc>, stats: RunStats, ok: bool) {
        let mut s = lock(&self.inner);
        s.running_since = None;
        s.last_progress = now;
        if ok {
            s.last_ok = Some((now, at));
        }
        s.runs.push_back(stats);
        while s.runs.len() > s.history_len {
            s.runs.pop_front();
        }
    }

    /// The tiers and polls of the run just finished (kept from an earlier
    /// run when this one failed before its match calls).
    pub fn polled(&self, poll: Option<PollReport>) {
        if let Some(poll) = poll {
            lock(&self.inner).polling = Some(poll);
        }
    }

    /// The warm-ups due after the run just finished.
    pub fn warm_due_after_run(&self, due: u64) {
        let mut s = lock(&self.inner);
        s.warm_due.push_back(due);
        while s.warm_due.len() > s.history_len {
            s.warm_due.pop_front();
        }
    }

    /// The loop is waiting for its next run.
    pub fn waiting(&self, now: Instant, next_run_at: DateTime<Utc>) {
        let mut s = lock(&self.inner);
        s.last_progress = now;
        s.next_run_at = Some(next_run_at);
    }

    pub fn stopping(&self) {
        lock(&self.inner).stopping = true;
    }

    /// Leader or standby now.
    pub fn set_role(&self, role: Role) {
        lock(&self.inner).role = Some(role);
    }

    /// A reload changed `sync.interval_secs`: health and readiness measure
    /// by the new one.
    pub fn set_interval(&self, interval: Duration) {
        lock(&self.inner).interval = interval;
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// How long the loop may go without progress: a whole interval of waiting
/// plus a run as long as an interval, plus the shutdown grace.
pub fn stuck_after(view: &StateView) -> Duration {
    view.interval * 2 + view.grace
}

/// Why `/healthz` says no: the loop made no progress for too long.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    /// A run was in progress all that time (else the loop itself stalled).
    pub in_run: bool,
    pub quiet: Duration,
    pub limit: Duration,
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let doing = if self.in_run {
            "a run has been in progress"
        } else {
            "the run loop has made no progress"
        };
        write!(
            f,
            "{doing} for {:.1} s (limit {:.1} s)",
            secs(self.quiet),
            secs(self.limit)
        )
    }
}

/// `/healthz`: the loop is alive and not stuck.
pub fn health(view: &StateView, now: Instant) -> Result<(), Stuck> {
    let quiet = now.saturating_duration_since(view.last_progress);
    let limit = stuck_after(view);
    if quiet > limit {
        return Err(Stuck {
            in_run: view.running_since.is_some(),
            quiet,
            limit,
        });
    }
    Ok(())
}

/// Why `/readyz` says no.
#[derive(Debug, Clone, PartialEq)]
pub enum NotReady {
    Redis(StoreError),
    NoRunYet,
    /// The last successful run ended `ago` ago, more than `limit`.
    Stale {
        ago: Duration,
        limit: Duration,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Redis(e) => write!(f, "redis does not answer: {e}"),
            NotReady::NoRunYet => f.write_str("no run has succeeded yet"),
            NotReady::Stale { ago, limit } => write!(
                f,
                "the last successful run ended {:.1} s ago (limit {:.1} s)",
                secs(*ago),
                secs(*limit)
            ),
        }
    }
}

/// `/readyz`: Redis answers and a run succeeded within two intervals; a
/// standby (which does not run) only needs Redis.
pub fn readiness(
    view: &StateView,
    now: Instant,
    redis: Result<(), StoreError>,
) -> Result<(), NotReady> {
    redis.map_err(NotReady::Redis)?;
    if view.role.as_ref().is_some_and(|r| r.role == "standby") {
        return Ok(());
    }
    let limit = view.interval * 2;
    match view.last_ok {
        None => Err(NotReady::NoRunYet),
        Some((at, _)) if now.saturating_duration_since(at) > limit => Err(NotReady::Stale {
            ago: now.saturating_duration_since(at),
            limit,
        }),
        Some(_) => Ok(()),
    }
}

/// What the loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopState {
    Waiting,
    Running,
    Stopping,
}

/// The warm-up's numbers, as `/status` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WarmView {
    pub due: u64,
    pub scheduled: u64,
    pub oldest_due_age_secs: u64,
    pub done: u64,
    pub failed: u64,
}

/// `/status`: the current state and the recent runs (newest first).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `--version`'s text: version, git revision, build date.
    pub version: &'static str,
    pub uptime_secs: u64,
    pub state: LoopState,
    pub healthy: bool,
    pub running_since: Option<String>,
    pub next_run_at: Option<String>,
    pub last_success_at: Option<String>,
    pub interval_secs: u64,
    pub upstream_status: Option<UpstreamStatus>,
    pub last_run: Option<RunStats>,
    /// `None` when the warm-up is off.
    pub warm: Option<WarmView>,
    /// Root tournaments per polling tier and how many the last run asked;
    /// `None` before the first run that got to the match calls.
    pub polling: Option<PollReport>,
    /// Warm-ups due after each recent run, oldest first.
    pub warm_due_per_run: Vec<u64>,
    /// Leader or standby (absent without a lease).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The Redis this process writes to (set by the HTTP side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisView>,
    pub runs: Vec<RunStats>,
}

/// Which Redis master precache reaches (DESIGN.md section 12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisView {
    /// Where connections go, as it may be shown (no secrets).
    pub target: String,
    /// The master Sentinel named last (none without Sentinel).
    pub master: Option<String>,
    /// Failovers this process saw.
    pub master_changes: u64,
    /// Whether the last connection attempt reached the master.
    pub reachable: Option<bool>,
}

/// The status at `now`; `warm`: the warm-up's numbers, when it runs.
pub fn status(view: &StateView, now: Instant, warm: Option<WarmView>) -> Status {
    let state = if view.stopping {
        LoopState::Stopping
    } else if view.running_since.is_some() {
        LoopState::Running
    } else {
        LoopState::Waiting
    };
    let at = |t: DateTime<Utc>| rfc3339(t, SecondsFormat::Secs);
    let last = view.runs.back();
    Status {
        version: crate::util::LONG_VERSION,
        uptime_secs: now.saturating_duration_since(view.started).as_secs(),
        state,
        healthy: health(view, now).is_ok(),
        running_since: view.running_since.map(|(_, t)| at(t)),
        next_run_at: view
            .next_run_at
            .filter(|_| view.running_since.is_none())
            .map(at),
        last_success_at: view.last_ok.map(|(_, t)| at(t)),
        interval_secs: view.interval.as_secs(),
        upstream_status: last.map(|r| r.upstream_status),
        last_run: last.cloned(),
        warm,
        polling: view.polling,
        warm_due_per_run: view.warm_due.iter().copied().collect(),
        role: view.role.clone(),
        redis: None,
        runs: view.runs.iter().rev().cloned().collect(),
    }
}

/// `3 d 4 h`, `2 h 5 min`, `42 s`.
fn uptime(secs: u64) -> String {
    let (days, hours, mins) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {mins} min")
    } else if mins > 0 {
        format!("{mins} min {} s", secs % 60)
    } else {
        format!("{secs} s")
    }
}

/// This instance's part and the Redis master it writes to, when known.
fn role_line(status: &Status) -> String {
    let mut parts = Vec::new();
    if let Some(role) = &status.role {
        let mut text = format!("Role: <strong id=\"role\">{}</strong>", escape(role.role));
        if let Some(leader) = role.leader.as_deref().filter(|_| role.role == "standby") {
            text.push_str(&format!(" (leader {})", escape(leader)));
        }
        if let Some(since) = &role.since {
            text.push_str(&format!(" since {}", escape(since)));
        }
        parts.push(text);
    }
    if let Some(redis) = &status.redis {
        let (class, reach) = match redis.reachable {
            Some(false) => ("bad", " unreachable"),
            _ => ("ok", ""),
        };
        let at = redis.master.as_deref().unwrap_or(&redis.target);
        parts.push(format!(
            "Redis master <span id=\"redis-master\" class=\"{class}\">{}{reach}</span> ({} failover(s) seen)",
            escape(at),
            redis.master_changes
        ));
    }
    if parts.is_empty() {
        return String::new();
    }
    format!("<p>{}</p>", parts.join(" · "))
}

/// A number or "–" when there is none.
fn count(n: Option<usize>) -> String {
    n.map_or_else(|| "–".to_string(), |n| n.to_string())
}

/// Changed ids shown per category on the page.
const IDS_SHOWN: usize = 10;

/// The charts over the kept runs (oldest left).
fn charts(status: &Status) -> String {
    let runs: Vec<&RunStats> = status.runs.iter().rev().collect();
    let labels: Vec<String> = runs.iter().map(|r| r.start_time.clone()).collect();
    let per_run = |f: &dyn Fn(&RunStats) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<f64>>();
    // More series than colours reuse them (a cycle, never a dropped series).
    const COLORS: [&str; 5] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"];
    let palette = || COLORS.iter().copied().cycle();
    let duration = bar_chart(
        "chart-duration",
        "Run duration",
        " s",
        &[Series {
            name: "duration",
            color: COLORS[0],
            values: per_run(&|r| r.process_time),
        }],
        &labels,
    );
    let by_category: Vec<Series<'_>> = Category::ALL
        .iter()
        .zip(palette())
        .map(|(c, color)| Series {
            name: c.as_str(),
            color,
            values: per_run(&|r| r.changes.get(*c).unwrap_or(0) as f64),
        })
        .collect();
    let changes = bar_chart(
        "chart-changes",
        "Changes per category",
        "",
        &by_category,
        &labels,
    );
    let by_call: Vec<Series<'_>> = ApiCallCounts::CALL_TYPES
        .iter()
        .zip(palette())
        .map(|(call, color)| Series {
            name: call.as_str(),
            color,
            values: per_run(&|r| r.api_calls.get(*call) as f64),
        })
        .collect();
    let calls = bar_chart(
        "chart-calls",
        "Upstream calls per run",
        "",
        &by_call,
        &labels,
    );
    let warm = match &status.warm {
        None => "<figure class=\"chart\"><figcaption>Warm-up queue</figcaption><p>Warm-up is off.</p></figure>".to_string(),
        Some(_) => {
            // Aligned to the newest runs.
            let due = &status.warm_due_per_run;
            let offset = labels.len().saturating_sub(due.len());
            let values: Vec<f64> = (0..labels.len())
                .map(|i| i.checked_sub(offset).and_then(|k| due.get(k)).copied().unwrap_or(0) as f64)
                .collect();
            bar_chart(
                "chart-warm",
                "Warm-ups due after each run",
                "",
                &[Series {
                    name: "due",
                    color: COLORS[1],
                    values,
                }],
                &labels,
            )
        }
    };
    format!("<div class=\"charts\">{duration}{changes}{calls}{warm}</div>")
}

/// The last run's changed ids, the first few per category, with counts.
fn changed_ids(last: Option<&RunStats>) -> String {
    let Some(run) = last else {
        return String::new();
    };
    if Category::ALL.iter().all(|c| run.changes.get(*c).is_none()) {
        return "<h2>Changed in the last run</h2><ul id=\"changed-ids\"><li>the run failed: nothing was written</li></ul>".into();
    }
    let mut items = String::new();
    for c in Category::ALL {
        let total = run.changes.get(c).unwrap_or(0);
        if total == 0 {
            continue;
        }
        let ids = run.changed_ids.get(&c).map(Vec::as_slice).unwrap_or(&[]);
        let shown: Vec<String> = ids.iter().take(IDS_SHOWN).map(i64::to_string).collect();
        let more = total.saturating_sub(shown.len());
        let more = if more > 0 {
            format!(" … and {more} more")
        } else {
            String::new()
        };
        items.push_str(&format!(
            "<li><strong>{c}</strong> ({total}): <span class=\"ids\">{}</span>{more}</li>",
            escape(&shown.join(", "))
        ));
    }
    if items.is_empty() {
        items.push_str("<li>nothing changed</li>");
    }
    format!("<h2>Changed in the last run</h2><ul id=\"changed-ids\">{items}</ul>")
}

/// `GET /`: a self-contained HTML page (no external assets, no script;
/// every value escaped) that fits a 1280-px window.
pub fn render_page(status: &Status) -> String {
    let last = status.last_run.as_ref();
    let upstream = match status.upstream_status {
        Some(status) => status.as_str(),
        None => "–",
    };
    let upstream_class = if upstream == "UP" { "ok" } else { "bad" };
    let result = last.map_or("–", |r| r.status.as_str());
    let result_class = match last.map(|r| r.status) {
        Some(RunStatus::Success) => "ok",
        Some(RunStatus::Degraded | RunStatus::Held | RunStatus::Fenced | RunStatus::Cancelled) => {
            "warn"
        }
        _ => "bad",
    };
    let mut rows = String::new();
    for run in &status.runs {
        let mut cells = vec![
            // Date and time on two lines where the column is narrow.
            escape(&run.start_time.replacen('T', " ", 1)),
            escape(run.status.as_str()),
            run.process_time.to_string(),
        ];
        cells.extend(Category::ALL.map(|c| count(run.changes.get(c))));
        cells.push(run.total_changes.to_string());
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let class = if i >= 2 { " class=\"num\"" } else { "" };
                format!("<td{class}>{cell}</td>")
            })
            .collect();
        rows.push_str(&format!("<tr>{}</tr>\n", cells.concat()));
    }
    if rows.is_empty() {
        // started, result, seconds, one per category, total.
        let columns = 3 + Category::ALL.len() + 1;
        rows.push_str(&format!(
            "<tr><td colspan=\"{columns}\">no run yet</td></tr>\n"
        ));
    }
    let headers: String = Category::ALL
        .iter()
        .map(|c| format!("<th>{}</th>", c.as_str().replace('_', " ")))
        .collect();
    let warm_html = match &status.warm {
        None => "<p>Warm-up is off.</p>".to_string(),
        Some(warm) => format!(
            "<table class=\"small\"><tr><th>due now</th><th>scheduled</th><th>oldest due (s)</th><th>done</th><th>failed</th></tr>\
             <tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></table>",
            warm.due, warm.scheduled, warm.oldest_due_age_secs, warm.done, warm.failed,
        ),
    };
    let mut error = match last.and_then(|r| r.error.as_ref()) {
        Some(e) => format!("<p class=\"bad\" id=\"last-error\">{}</p>", escape(e)),
        None => String::new(),
    };
    if let Some(warnings) = last.map(|r| &r.warnings).filter(|w| !w.is_empty()) {
        error.push_str("<ul class=\"warn\" id=\"last-warnings\">");
        for w in warnings {
            error.push_str(&format!("<li>{}</li>", escape(w)));
        }
        error.push_str("</ul>");
    }
    let polling_html = match &status.polling {
        None => "<p>No run has asked for matches yet.</p>".to_string(),
        Some(poll) => {
            let mut rows = String::new();
            for tier in Tier::ALL {
                rows.push_str(&format!(
                    "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    tier.as_str(),
                    poll.tiers.get(tier),
                    poll.polled.get(tier),
                    poll.oldest_poll_age_runs.get(tier),
                ));
            }
            let sweep = if poll.full_sweep {
                " (the last run asked every tournament)"
            } else {
                ""
            };
            format!(
                "<table id=\"polling\" class=\"small\"><tr><th>tier</th><th>tournaments</th><th>asked last run</th><th>oldest poll (runs ago)</th></tr>{rows}</table><p>{} of {} asked{sweep}</p>",
                poll.polled.total(),
                poll.tiers.total(),
            )
        }
    };
    let role_html = role_line(status);
    let state = match status.state {
        LoopState::Waiting => "waiting",
        LoopState::Running => "running",
        LoopState::Stopping => "stopping",
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>precache status</title>
<style>
* {{ box-sizing: border-box; }}
body {{ font-family: system-ui, sans-serif; margin: 0 auto; padding: 1.5em; max-width: 1240px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; width: 100%; table-layout: fixed; }}
table.small {{ width: auto; table-layout: auto; }}
#runs th:first-child {{ width: 10em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; overflow-wrap: anywhere; }}
#runs th {{ overflow-wrap: normal; word-break: normal; hyphens: none; font-size: 0.7em; padding: 0.25em 0.25em; vertical-align: bottom; }}
header p {{ margin: 0.2em 0; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 1em; }}
figure.chart {{ margin: 0; min-width: 0; }}
figure.chart figcaption {{ font-weight: 600; margin-bottom: 0.2em; }}
svg .axis {{ stroke: #999; stroke-width: 1; }}
svg .tick, svg .empty {{ font-size: 12px; fill: #444; }}
svg .cut-label {{ font-weight: 600; fill: #222; }}
.legend {{ font-size: 0.8em; display: flex; flex-wrap: wrap; gap: 0.2em 0.8em; }}
.legend i {{ display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; vertical-align: middle; }}
#changed-ids .ids {{ font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.ok {{ color: #176f2c; font-weight: bold; }}
.warn {{ color: #9a6700; font-weight: bold; }}
.bad {{ color: #b42318; font-weight: bold; }}
</style>
</head>
<body>
<header>
<h1>precache</h1>
<p class="build">Version <span id="version">{version}</span> · up <span id="uptime">{uptime}</span></p>
</header>
<p>State: <strong id="state">{state}</strong> · upstream <span id="upstream" class="{upstream_class}">{upstream}</span></p>
{role_html}
<p>Last run: <span id="last-run-time">{last_time}</span>, result <span id="last-run-result" class="{result_class}">{result}</span>, {changes} change(s) · next run {next}</p>
{error}
{charts}
{changed}
<h2>Changes per category, recent runs</h2>
<table id="runs">
<tr><th>started</th><th>result</th><th>seconds</th>{headers}<th>total</th></tr>
{rows}</table>
<h2>Polling</h2>
{polling_html}
<h2>Warm-up queue</h2>
{warm_html}
<p><a href="/metrics">/metrics</a> · <a href="/status">/status</a> · <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></p>
</body>
</html>
"#,
        last_time = escape(last.map_or("–", |r| r.end_time.as_str())),
        version = escape(status.version),
        uptime = uptime(status.uptime_secs),
        // Often enough to follow the runs, rarely enough to read it.
        refresh = status.interval_secs.clamp(10, 60),
        changes = count(last.map(|r| r.total_changes)),
        next = escape(status.next_run_at.as_deref().unwrap_or("–")),
        charts = charts(status),
        changed = changed_ids(last),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (DaemonState, Instant) {
        let t0 = Instant::now();
        (
            DaemonState::new(Duration::from_secs(10), Duration::from_secs(4), 3, t0),
            t0,
        )
    }

    fn stats(n: usize, status: RunStatus) -> RunStats {
        let mut summary = crate::report::RunSummary::new(format!("r{n}"), false);
        summary.status = status;
        let mut changes = crate::model::changes::Changes::default();
        changes.individual_matches.added = (0..n as i64).collect();
        if status != RunStatus::Failed {
            summary.changes = crate::model::changes::ChangeCounts::of(&changes);
        }
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        RunStats::of(&summary, t, t + chrono::Duration::seconds(1))
    }

    #[test]
    fn healthy_until_the_loop_is_quiet_for_two_intervals_plus_grace() {
        let (s, t0) = state();
        assert_eq!(stuck_after(&s.view()), Duration::from_secs(24));
        assert!(health(&s.view(), t0 + Duration::from_secs(24)).is_ok());
        let err = health(&s.view(), t0 + Duration::from_secs(25)).unwrap_err();
        assert!(err.to_string().contains("no progress"), "{err}");
        s.run_started(t0 + Duration::from_secs(20), Utc::now());
        assert!(health(&s.view(), t0 + Duration::from_secs(40)).is_ok());
        let err = health(&s.view(), t0 + Duration::from_secs(45)).unwrap_err();
        assert!(
            err.to_string().contains("run has been in progress"),
            "{err}"
        );
        s.run_finished(
            t0 + Duration::from_secs(46),
            Utc::now(),
            stats(1, RunStatus::Failed),
            false,
        );
        assert!(health(&s.view(), t0 + Duration::from_secs(47)).is_ok());
    }

    #[test]
    fn ready_when_redis_answers_and_a_run_succeeded_recently() {
        let (s, t0) = state();
        let err = readiness(&s.view(), t0, Ok(())).unwrap_err();
        assert!(err.to_string().contains("no run has succeeded"), "{err}");
        s.run_finished(
            t0 + Duration::from_secs(1),
            Utc::now(),
            stats(1, RunStatus::Degraded),
            true,
        );
        assert!(readiness(&s.view(), t0 + Duration::from_secs(21), Ok(())).is_ok());
        let err = readiness(&s.view(), t0 + Duration::from_secs(22), Ok(())).unwrap_err();
        assert!(err.to_string().contains("ended 21.0 s ago"), "{err}");
        let refused = StoreError {
            kind: Default::default(),
            doing: "PING".into(),
            reason: "refused".into(),
        };
        let err = readiness(&s.view(), t0 + Duration::from_secs(2), Err(refused)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis does not answer: redis: PING: refused"
        );
        // A failed run does not refresh readiness.
        s.run_finished(
            t0 + Duration::from_secs(30),
            Utc::now(),
            stats(2, RunStatus::Failed),
            false,
        );
        assert!(readiness(&s.view(), t0 + Duration::from_secs(30), Ok(())).is_err());
    }

    #[test]
    fn status_keeps_the_last_history_len_runs_newest_first() {
        let (s, t0) = state();
        for n in 1..=5 {
            s.run_finished(t0, Utc::now(), stats(n, RunStatus::Success), true);
        }
        let json = serde_json::to_value(status(&s.view(), t0, None)).unwrap();
        let ids: Vec<&str> = json["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["r5", "r4", "r3"]);
        assert_eq!(json["last_run"]["run_id"], "r5");
        assert_eq!(json["last_run"]["changes"]["individual_matches"], 5);
        assert_eq!(json["state"], "waiting");
        assert_eq!(json["upstream_status"], "UP");
        assert_eq!(json["warm"], serde_json::Value::Null);
        assert_eq!(json["polling"], serde_json::Value::Null);
        let counts = |live, active, dormant| crate::report::TierCounts {
            live,
            active,
            dormant,
        };
        s.polled(Some(PollReport {
            full_sweep: false,
            tiers: counts(12, 340, 1150),
            polled: counts(12, 113, 57),
            oldest_poll_age_runs: counts(0, 2, 19),
        }));
        s.polled(None);
        let json = serde_json::to_value(status(&s.view(), t0, None)).unwrap();
        assert_eq!(json["polling"]["tiers"]["active"], 340);
        assert_eq!(json["polling"]["polled"]["dormant"], 57);
        let page = render_page(&status(&s.view(), t0, None));
        assert!(page.contains("<td>dormant</td><td class=\"num\">1150</td><td class=\"num\">57</td><td class=\"num\">19</td>"), "{page}");
        assert!(page.contains("182 of 1502 asked"), "{page}");
        s.run_started(t0, Utc::now());
        assert_eq!(status(&s.view(), t0, None).state, LoopState::Running);
    }

    #[test]
    fn the_page_grows_with_the_categories_and_drops_none() {
        let (s, t0) = state();
        let page = render_page(&status(&s.view(), t0, None));
        let runs_table = &page[page.find("<th>started</th>").unwrap()..];
        let header_row = &runs_table[..runs_table.find("</tr>").unwrap()];
        let columns = header_row.matches("<th>").count();
        assert_eq!(columns, 3 + Category::ALL.len() + 1);
        assert!(
            page.contains(&format!("<td colspan=\"{columns}\">no run yet</td>")),
            "{page}"
        );
        s.run_finished(t0, Utc::now(), stats(3, RunStatus::Success), true);
        let page = render_page(&status(&s.view(), t0, None));
        let chart = &page[page.find("chart-changes").unwrap()..];
        let chart = &chart[..chart.find("</figure>").unwrap()];
        for c in Category::ALL {
            assert!(chart.contains(c.as_str()), "{c} missing from the chart");
        }
    }

    #[test]
    fn the_page_shows_the_last_result_and_escapes_what_it_prints() {
        let (s, t0) = state();
        let mut bad = stats(7, RunStatus::Failed);
        bad.error = Some("GET /x?<script>: HTTP 500".into());
        bad.upstream_status = UpstreamStatus::Down;
        s.run_finished(t0, Utc::now(), bad, false);
        let warm = WarmView {
            due: 3,
            ..WarmView::default()
        };
        let page = render_page(&status(&s.view(), t0, Some(warm)));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains(r#"<span id="last-run-result" class="bad">failed</span>"#));
        assert!(page.contains(r#"<span id="upstream" class="bad">DOWN</span>"#));
        assert!(page.contains("GET /x?&lt;script&gt;: HTTP 500"));
        assert!(!page.contains("<script>"));
        assert!(page.contains(r#"<a href="/metrics">"#));
        assert!(
            page.contains(r#"<td class="num">3</td>"#),
            "the warm-up queue"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external assets"
        );
    }

    #[test]
    fn a_held_run_shows_as_a_warning_with_its_reason() {
        let (s, t0) = state();
        let mut held = stats(3, RunStatus::Held);
        held.warnings =
            vec!["held (seen 1 of 3 runs; accept with <b>POST /accept-shrink</b>)".into()];
        s.run_finished(t0, Utc::now(), held, true);
        let page = render_page(&status(&s.view(), t0, None));
        assert!(page.contains(r#"<span id="last-run-result" class="warn">held</span>"#));
        assert!(page.contains(r#"<ul class="warn" id="last-warnings"><li>held (seen 1 of 3 runs; accept with &lt;b&gt;POST /accept-shrink&lt;/b&gt;)</li></ul>"#));
    }
}
