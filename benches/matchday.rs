//! A match day at norway scale: what adaptive polling (DESIGN.md section
//! 10) saves the upstream, and what it costs in freshness.
//! `cargo bench --bench matchday` (`MATCHDAY_RUNS=N` for another length;
//! `MATCHDAY_QUIET=1` leaves out the per-match list).
//!
//! Two passes over the same simulated day (same seed, same churn): the
//! defaults of config.toml, then `sync.adaptive = false` (the original's
//! full sweep). Before each run the simulator changes what a match day
//! changes: results of matches in `live` tournaments after every run, a
//! new match in one every fourth run, some matches of `active` ones, a
//! `dormant` one now and then. Printed: upstream calls per run and per
//! hour, and for every churned match the runs until a run reported it, per
//! tier. It fails loudly when the match calls are not at least 70 % fewer
//! than the full sweep's, or when any change took longer than its tier
//! allows (live: the next run; active: `active_every` runs; dormant:
//! `dormant_every`), unless the root's tier cooled while the change waited
//! (the clock moved a match out of a window): that is printed, not failed.

use std::collections::BTreeMap;
use std::time::Instant;

use kit::Harness;
use precache::config::Config;
use precache::daemon::Services;
use precache::report::Tier;
use precache::sim::{ChurnSpec, Scale};
use precache::sync::poll::PollSettings;

const DEFAULT_RUNS: usize = 100;
const SEED: u64 = 2026;
const REQUIRED_SAVING: f64 = 0.70;

/// What the simulator changes before run `n` (1-based).
fn churn_before(n: usize) -> Vec<(Tier, ChurnSpec)> {
    let mut steps = vec![(
        Tier::Live,
        ChurnSpec {
            matches_modified: 6,
            matches_added: usize::from(n.is_multiple_of(4)),
            ..ChurnSpec::default()
        },
    )];
    steps.push((
        Tier::Active,
        ChurnSpec {
            matches_modified: 2,
            ..ChurnSpec::default()
        },
    ));
    if n.is_multiple_of(10) {
        steps.push((
            Tier::Dormant,
            ChurnSpec {
                matches_modified: 1,
                ..ChurnSpec::default()
            },
        ));
    }
    steps
}

/// A churned match waiting to be reported.
struct Pending {
    tier: Tier,
    root: i64,
    churned_before: usize,
    /// The coldest tier the runs saw its root in while it waited.
    coldest_seen: Tier,
}

/// What one pass measured.
struct Pass {
    runs: usize,
    match_calls: Vec<usize>,
    all_calls: Vec<usize>,
    not_modified: usize,
    /// Tier → (match id, runs until detected), per churned match.
    delays: BTreeMap<Tier, Vec<(i64, usize)>>,
    /// Matches that took longer than their tier allows (and their delay),
    /// split by whether their root's tier cooled meanwhile.
    late: Vec<(i64, Tier, usize)>,
    drifted: Vec<(i64, Tier, Tier, usize)>,
    undetected: Vec<(i64, Tier)>,
    seconds: f64,
}

fn pass(adaptive: bool, runs: usize) -> (Pass, PollSettings) {
    let h = Harness::new("matchday")
        .sim(Scale::Norway, SEED)
        .redis()
        .deployed_defaults()
        .build();
    let sim = h.sim();
    let mut config = h.config();
    config.logs.debug_snapshots = false;
    config.warm.enabled = false;
    config.sync.adaptive = adaptive;
    let settings = PollSettings::from_config(&config.sync);
    let mut services = Services::start(&config).expect("services start");
    let cold = services.runner.run_once(false);
    assert!(
        cold.summary.status.is_ok(),
        "the cold run: {:?}",
        cold.summary
    );

    let started = Instant::now();
    let mut out = Pass {
        runs,
        match_calls: Vec::new(),
        all_calls: Vec::new(),
        not_modified: 0,
        delays: BTreeMap::new(),
        late: Vec::new(),
        drifted: Vec::new(),
        undetected: Vec::new(),
        seconds: 0.0,
    };
    let mut pending: BTreeMap<i64, Pending> = BTreeMap::new();
    // After the day, runs without churn until every tier had its turn.
    let flush = settings.every(Tier::Dormant) as usize;
    for n in 1..=runs + flush {
        if n <= runs {
            for (tier, spec) in churn_before(n) {
                let spec = ChurnSpec {
                    root_tier: Some(tier),
                    ..spec
                };
                for id in sim.churn(&spec).individual_matches {
                    let root = sim
                        .with_data(|d| d.match_root(id))
                        .expect("a churned match has a root");
                    pending.insert(
                        id,
                        Pending {
                            tier,
                            root,
                            churned_before: n,
                            coldest_seen: tier,
                        },
                    );
                }
            }
        }
        let report = services.runner.run_once(false);
        assert!(
            report.summary.status.is_ok(),
            "run {n}: {:?}",
            report.summary
        );
        if n <= runs {
            out.match_calls
                .push(report.summary.api_calls.tournament_matches);
            let a = report.summary.api_calls;
            out.all_calls
                .push(a.seasons + a.tournament_season + a.tournament_matches);
            out.not_modified += report.summary.not_modified;
        }
        for wait in pending.values_mut() {
            if let Some(tier) = report.root_tiers.get(&wait.root) {
                wait.coldest_seen = wait.coldest_seen.max(*tier);
            }
        }
        let changes = report.changes.as_ref().expect("a diff");
        let reported = changes
            .individual_matches
            .added
            .iter()
            .chain(&changes.individual_matches.modified);
        for id in reported {
            let Some(wait) = pending.remove(id) else {
                continue;
            };
            let delay = n + 1 - wait.churned_before;
            out.delays.entry(wait.tier).or_default().push((*id, delay));
            let bound = settings.every(wait.tier) as usize;
            if delay > bound {
                let cooled_bound = settings.every(wait.coldest_seen) as usize;
                if wait.coldest_seen > wait.tier && delay <= cooled_bound {
                    out.drifted.push((*id, wait.tier, wait.coldest_seen, delay));
                } else {
                    out.late.push((*id, wait.tier, delay));
                }
            }
        }
    }
    out.undetected = pending.iter().map(|(id, w)| (*id, w.tier)).collect();
    out.seconds = started.elapsed().as_secs_f64();
    services.shutdown();
    (out, settings)
}

fn mean(values: &[usize]) -> f64 {
    values.iter().sum::<usize>() as f64 / values.len().max(1) as f64
}

fn report(name: &str, p: &Pass, interval_secs: u64) {
    let runs_per_hour = 3600.0 / interval_secs as f64;
    let per_run = mean(&p.match_calls);
    let all = mean(&p.all_calls);
    println!(
        "{name}: {} runs in {:.1} s; match calls per run {per_run:.1} (min {}, max {}), all calls per run {all:.1}; \
         per hour at {interval_secs} s: {:.0} match calls, {:.0} in all; per day {:.0} in all; 304s {}",
        p.runs,
        p.seconds,
        p.match_calls.iter().min().unwrap_or(&0),
        p.match_calls.iter().max().unwrap_or(&0),
        per_run * runs_per_hour,
        all * runs_per_hour,
        all * runs_per_hour * 24.0,
        p.not_modified,
    );
    for (tier, detected) in &p.delays {
        let delays: Vec<usize> = detected.iter().map(|(_, d)| *d).collect();
        let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
        for d in &delays {
            *histogram.entry(*d).or_default() += 1;
        }
        println!(
            "  {:<7} {} churned matches detected; runs until detected: mean {:.2}, max {}; histogram {:?}",
            tier.as_str(),
            delays.len(),
            mean(&delays),
            delays.iter().max().unwrap_or(&0),
            histogram
        );
        if std::env::var_os("MATCHDAY_QUIET").is_none() {
            let each: Vec<String> = detected.iter().map(|(id, d)| format!("{id}:{d}")).collect();
            println!("    each (match id:runs): {}", each.join(" "));
        }
    }
    for (id, tier, cooled, delay) in &p.drifted {
        println!(
            "  note: match {id} churned in a {} root detected after {delay} runs: its root cooled to {} meanwhile",
            tier.as_str(),
            cooled.as_str()
        );
    }
}

fn main() {
    let runs = std::env::var("MATCHDAY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    println!("== a match day at norway scale: {runs} runs, a match day's churn before each");
    let (adaptive, settings) = pass(true, runs);
    let interval = Config::default().sync.interval_secs;
    println!(
        "tiers: live within {} h of now (every run), active within {} days (every {} runs), dormant (every {} runs)",
        settings.live_window.num_hours(),
        settings.active_window.num_days(),
        settings.active_every,
        settings.dormant_every
    );
    report("adaptive (defaults)", &adaptive, interval);
    let (full, _) = pass(false, runs);
    report("full sweep (sync.adaptive = false)", &full, interval);

    let saving = 1.0 - mean(&adaptive.match_calls) / mean(&full.match_calls);
    println!(
        "match calls: {:.1} % fewer with adaptive polling (required: {:.0} %)",
        saving * 100.0,
        REQUIRED_SAVING * 100.0
    );
    let mut failures = Vec::new();
    if saving < REQUIRED_SAVING {
        failures.push(format!("only {:.1} % fewer match calls", saving * 100.0));
    }
    for (name, p) in [("adaptive", &adaptive), ("full sweep", &full)] {
        for (id, tier, delay) in &p.late {
            failures.push(format!(
                "{name}: match {id} in a {} root detected after {delay} runs",
                tier.as_str()
            ));
        }
        for (id, tier) in &p.undetected {
            failures.push(format!(
                "{name}: match {id} in a {} root never detected",
                tier.as_str()
            ));
        }
    }
    if full.delays.values().flatten().any(|(_, d)| *d != 1) {
        failures.push("the full sweep missed a change in the next run".into());
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
    println!("every churned match was detected within its tier's bound");
}
