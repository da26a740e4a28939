//! `GET /`: the status page, one self-contained HTML document (no
//! external assets, no script; every value escaped) that fits a 1280-px
//! window and refreshes itself. A pure function of a [`Status`]; the
//! charts are `charts`'.

use crate::model::changes::Category;
use crate::report::{ApiCallCounts, RunStats, RunStatus, Tier};
use crate::serve::charts::{Series, bar_chart};
use crate::serve::html::escape;
use crate::serve::status::{LoopState, Status};

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

/// The page's whole style sheet (no external assets).
const STYLE: &str = "* { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1.5em; max-width: 1240px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; width: 100%; table-layout: fixed; }
table.small { width: auto; table-layout: auto; }
#runs th:first-child { width: 10em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; overflow-wrap: anywhere; }
#runs th { overflow-wrap: normal; word-break: normal; hyphens: none; font-size: 0.7em; padding: 0.25em 0.25em; vertical-align: bottom; }
header p { margin: 0.2em 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 1em; }
figure.chart { margin: 0; min-width: 0; }
figure.chart figcaption { font-weight: 600; margin-bottom: 0.2em; }
svg .axis { stroke: #999; stroke-width: 1; }
svg .tick, svg .empty { font-size: 12px; fill: #444; }
svg .cut-label { font-weight: 600; fill: #222; }
.legend { font-size: 0.8em; display: flex; flex-wrap: wrap; gap: 0.2em 0.8em; }
.legend i { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; vertical-align: middle; }
#changed-ids .ids { font-variant-numeric: tabular-nums; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #176f2c; font-weight: bold; }
.warn { color: #9a6700; font-weight: bold; }
.bad { color: #b42318; font-weight: bold; }
";

/// The recent runs' rows, newest first.
fn runs_table_rows(status: &Status) -> String {
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
    rows
}

/// One header per category, its words apart so they wrap whole.
fn runs_table_headers() -> String {
    Category::ALL
        .iter()
        .map(|c| format!("<th>{}</th>", c.as_str().replace('_', " ")))
        .collect()
}

/// The warm-up queue's figures.
fn warm_table(status: &Status) -> String {
    match &status.warm {
        None => "<p>Warm-up is off.</p>".to_string(),
        Some(warm) => format!(
            "<table class=\"small\"><tr><th>due now</th><th>scheduled</th><th>oldest due (s)</th><th>done</th><th>failed</th></tr>\
             <tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></table>",
            warm.due, warm.scheduled, warm.oldest_due_age_secs, warm.done, warm.failed,
        ),
    }
}

/// The last run's error and warnings, escaped.
fn problems(last: Option<&RunStats>) -> String {
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
    error
}

/// Roots per polling tier, and how many the last run asked.
fn polling_table(status: &Status) -> String {
    match &status.polling {
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
    }
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
{STYLE}</style>
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
        rows = runs_table_rows(status),
        headers = runs_table_headers(),
        warm_html = warm_table(status),
        error = problems(last),
        polling_html = polling_table(status),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::UpstreamStatus;
    use crate::serve::status::tests::{state, stats};
    use crate::serve::status::{WarmView, status};
    use chrono::Utc;

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
