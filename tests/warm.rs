//! Cache warming against a private Redis and the simulator: the exact set of
//! entries a cold start warms, refetching only what changed, retries and
//! permanent failures, surviving SIGKILL, the shared rate limit, and the
//! refresh schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use kit::*;
use precache::daemon::Services;
use precache::model::dataset::DatasetId;
use precache::sim::{ChurnSpec, Fault, SimServer};
use precache::store::{Keys, Store};
use precache::upstream::Upstream;
use precache::warm::plan::{Endpoint, Lifetimes, WarmTarget};
use precache::warmer::schedule;
use precache::warmer::workers::{WarmSettings, Warmer};
use serde_json::Value;

const WINDOW_DAYS: i64 = 14;

fn reference() -> NaiveDate {
    today()
}

fn cli_config(h: &Harness, extra: &[(&str, &str, String)]) -> std::path::PathBuf {
    let mut overrides = vec![
        ("warm", "reference_date", quoted(&reference().to_string())),
        ("warm", "window_days", WINDOW_DAYS.to_string()),
        // Each run sees every change: the warm-up's reaction to a churn is
        // what these tests count, not polling's.
        ("sync", "adaptive", "false".into()),
    ];
    overrides.extend(extra.iter().cloned());
    h.write_config(&overrides)
}

/// The keys a cold start must warm, from the cache's own match list: four
/// per match dated within the window (or undated), one per team.
fn expected_keys(redis: &RedisServer) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for m in redis.data("tournament_matches") {
        let date = m["matchDate"]
            .as_str()
            .and_then(precache::model::parse_upstream_datetime);
        let in_window =
            date.is_none_or(|d| (d.date() - reference()).num_days().abs() <= WINDOW_DAYS);
        if in_window {
            let id = m["matchId"].as_i64().unwrap();
            for e in Endpoint::FOR_MATCH {
                keys.insert(format!("GET:{}", WarmTarget::new(e, id).key()));
            }
        }
    }
    for t in redis.data("unique_team_ids") {
        keys.insert(format!(
            "GET:{}",
            WarmTarget::new(Endpoint::Team, t.as_i64().unwrap()).key()
        ));
    }
    keys.extend(page_and_dataset_keys(redis));
    keys
}

/// What the simulator serves for a target, as JSON.
fn served(sim: &SimServer, target: WarmTarget) -> Value {
    sim.with_data(|d| match target.endpoint {
        Endpoint::Match => d.match_body(target.id),
        Endpoint::Incidents => d.incidents_body(target.id),
        Endpoint::Referee => d.referee_body(target.id),
        Endpoint::TeamMembers => d.team_members_body(target.id),
        Endpoint::Team => d.team_body(target.id),
        Endpoint::SeasonPage => d.tournaments_body(target.id),
        Endpoint::TournamentPage => d.tournament_page_body(target.id),
        Endpoint::Data(DatasetId::OrgTeams) => d.org_body(target.id),
        Endpoint::Data(DatasetId::Venues) => Some(d.venues_body()),
        Endpoint::Data(DatasetId::VenueDetails) => d.venue_body(target.id),
        Endpoint::Data(DatasetId::Clubs) => Some(d.clubs_body(target.id)),
    })
    .unwrap()
}

/// The simulator's requests per warm-up endpoint, less the sync calls of
/// the run `synced` summarises where they share a counter (a dataset's
/// call is both; a season page is the tournaments call).
fn warm_counts(sim: &SimServer, synced: Option<&Value>) -> BTreeMap<&'static str, u64> {
    let counts = sim.request_counts();
    Endpoint::ALL
        .iter()
        .map(|e| {
            let counter = match e {
                Endpoint::SeasonPage => "tournament_season",
                _ => e.call_type().as_str(),
            };
            let sync = synced.map_or(0, |s| s["api_calls"][counter].as_u64().unwrap_or(0));
            let n = counts.get(counter).copied().unwrap_or(0) - sync;
            (e.call_type().as_str(), n)
        })
        .collect()
}

fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query(&mut redis.conn())
        .unwrap()
}

#[test]
fn a_cold_start_warms_exactly_the_in_window_matches_and_every_team() {
    let h = Harness::small("warm", 31);
    let (sim, redis) = (h.sim(), h.redis());
    let cfg = cli_config(&h, &[]);
    let started = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let summary = once_ok(&cfg, &[]);
    let ended = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let expected = expected_keys(redis);
    let matches = expected.iter().filter(|k| k.contains("/match/")).count();
    assert!(matches >= 3, "the window holds some matches ({matches})");
    assert!(
        matches < redis.data("tournament_matches").len(),
        "and not all of them"
    );
    assert_eq!(
        summary["warm"],
        serde_json::json!({"enqueued": expected.len(), "done": expected.len(), "failed": 0, "pending": 0})
    );
    let stored: BTreeSet<String> = redis.keys("GET:*").into_iter().collect();
    assert_eq!(stored, expected);
    // One request per key: the same key is never fetched twice.
    let counts = warm_counts(sim, Some(&summary));
    assert_eq!(
        counts.values().sum::<u64>(),
        expected.len() as u64,
        "{counts:?}"
    );

    let ttl_ms = 7 * 24 * 3600 * 1000;
    for key in &expected {
        let target = WarmTarget::parse(key.strip_prefix("GET:").unwrap()).unwrap();
        let entry: Value = serde_json::from_str(&redis.get(key).unwrap()).unwrap();
        assert_eq!(entry.as_object().unwrap().len(), 6, "{entry}");
        assert_eq!(entry["status_code"], 200);
        // DESIGN.md section 5: the fetch time in Unix seconds (a number),
        // and the ages in seconds at which the newest proxy calls an entry
        // stale (precache refreshes it then) and very stale (it expires).
        let cached_at = entry["cached_at"].as_f64().expect("cached_at is a number");
        assert!(
            (started..=ended).contains(&cached_at),
            "{key}: cached_at {cached_at} outside the run [{started}, {ended}]"
        );
        assert_eq!(entry["soft_ttl"], 604_800 * 9 / 10, "{key}");
        assert_eq!(entry["max_stale"], 604_800, "{key}");
        assert!(entry["headers"].is_object());
        let content: Value = serde_json::from_str(entry["content"].as_str().unwrap()).unwrap();
        assert_eq!(content, served(sim, target), "{key}");
        let ttl = pttl(redis, key);
        assert!(ttl > ttl_ms - 120_000 && ttl <= ttl_ms, "{key}: PTTL {ttl}");
        let refresh: Value =
            serde_json::from_str(&redis.get(&format!("refresh:{key}")).unwrap()).unwrap();
        assert_eq!(refresh["ttl"], 604800);
        assert_eq!(refresh["params"], target.params());
        let until =
            chrono::DateTime::parse_from_rfc3339(refresh["refresh_until"].as_str().unwrap())
                .unwrap();
        let last = chrono::DateTime::parse_from_rfc3339(refresh["last_refresh"].as_str().unwrap())
            .unwrap();
        assert!((until - last).num_seconds() > 7 * 24 * 3600 - 120);
    }
    // Every task is scheduled for its refresh, none is due.
    assert_eq!(redis.warm_tasks_due().unwrap(), 0);
    let scheduled: usize = redis::cmd("ZCARD")
        .arg("precache:warm:due")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(scheduled, expected.len());

    // --no-warm after a change enqueues nothing.
    sim.churn(&ChurnSpec {
        matches_modified: 2,
        in_window_days: Some(WINDOW_DAYS),
        ..Default::default()
    });
    let before = warm_counts(sim, None);
    let summary = once_ok(&cfg, &["--no-warm"]);
    assert_eq!(summary["changes"]["individual_matches"], 2);
    assert_eq!(summary.get("warm"), None);
    assert_eq!(warm_counts(sim, Some(&summary)), before);
}

#[test]
fn a_churn_refetches_exactly_the_changed_in_window_matches() {
    let h = Harness::small("warm", 32);
    let (sim, redis) = (h.sim(), h.redis());
    let cfg = cli_config(&h, &[]);
    once_ok(&cfg, &[]);
    let in_window = sim.churn(&ChurnSpec {
        matches_modified: 3,
        in_window_days: Some(WINDOW_DAYS),
        ..Default::default()
    });
    let outside = sim.churn(&ChurnSpec {
        matches_modified: 1,
        out_of_window_days: Some(WINDOW_DAYS),
        ..Default::default()
    });
    assert_eq!(in_window.individual_matches.len(), 3);
    assert_eq!(outside.individual_matches.len(), 1);
    let cached_at = |target: WarmTarget| -> f64 {
        let entry: Value =
            serde_json::from_str(&redis.get(&format!("GET:{}", target.key())).unwrap()).unwrap();
        entry["cached_at"].as_f64().unwrap()
    };
    let changed = WarmTarget::new(Endpoint::Match, in_window.individual_matches[0]);
    let unchanged_key = redis
        .keys("GET:api/v1/ta/match/*")
        .into_iter()
        .find_map(|k| {
            let target = WarmTarget::parse(k.strip_prefix("GET:")?)?;
            (!in_window.individual_matches.contains(&target.id)).then_some(target)
        })
        .unwrap();
    let (changed_before, unchanged_before) = (cached_at(changed), cached_at(unchanged_key));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let before = warm_counts(sim, None);
    let summary = once_ok(&cfg, &[]);
    assert_eq!(summary["changes"]["individual_matches"], 4);
    assert_eq!(summary["warm"]["enqueued"], 12);
    assert_eq!(summary["warm"]["done"], 12);
    let after = warm_counts(sim, None);
    for e in Endpoint::FOR_MATCH {
        let name = e.call_type().as_str();
        assert_eq!(after[name] - before[name], 3, "{name}");
    }
    assert_eq!(after["team"], before["team"]);
    for id in &in_window.individual_matches {
        let target = WarmTarget::new(Endpoint::Match, *id);
        let entry: Value =
            serde_json::from_str(&redis.get(&format!("GET:{}", target.key())).unwrap()).unwrap();
        let content: Value = serde_json::from_str(entry["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            content,
            served(sim, target),
            "the entry holds the changed match"
        );
    }
    let out = WarmTarget::new(Endpoint::Match, outside.individual_matches[0]);
    assert_eq!(redis.get(&format!("GET:{}", out.key())), None);
    // A refreshed entry's age starts again; the others keep theirs.
    assert!(
        cached_at(changed) > changed_before,
        "cached_at moved: {changed_before} -> {}",
        cached_at(changed)
    );
    assert_eq!(cached_at(unchanged_key), unchanged_before);
}

/// A warmer running against `redis` and `sim` with the given lifetimes.
fn warmer_for(h: &Harness, lifetimes: Lifetimes, retries: u32) -> (Warmer, Store) {
    let redis = h.redis();
    let mut config = h.config();
    config.upstream.retries = retries;
    let upstream = std::sync::Arc::new(Upstream::new(&config.upstream).unwrap());
    let keys = Keys::new("");
    let warmer = Warmer::start(
        &precache::store::Connector::from_url(&redis.url()).unwrap(),
        &keys,
        upstream,
        WarmSettings {
            workers: 2,
            lifetimes,
        },
        false,
        None,
        &precache::lifecycle::Shutdown::new(),
    )
    .unwrap();
    (warmer, Store::new(&redis.url(), keys).unwrap())
}

fn a_match(sim: &SimServer) -> i64 {
    sim.with_data(|d| d.visible_match_ids()[0])
}

fn a_team(sim: &SimServer) -> i64 {
    let id = a_match(sim);
    sim.with_data(|d| d.match_body(id)).unwrap()["hometeamId"]
        .as_i64()
        .unwrap()
}

#[test]
fn a_500_is_retried_until_it_succeeds_and_a_404_is_dropped() {
    let h = Harness::small("warm", 33);
    let (sim, redis) = (h.sim(), h.redis());
    let lifetimes = Lifetimes {
        ttl: Duration::from_secs(3600),
        refresh_for: Duration::from_secs(7200),
    };
    let id = a_match(sim);
    // The first two requests for this match fail with 500; the client gives
    // up after one retry, so the task fails once and is rescheduled.
    sim.set_fault(
        "match",
        Fault {
            error_rate: 1.0,
            status: Some(500),
            max_faults: Some(2),
            ids: Some(vec![id]),
            ..Fault::default()
        },
    );
    let (warmer, mut store) = warmer_for(&h, lifetimes, 1);
    let good = WarmTarget::new(Endpoint::Match, id);
    let missing = WarmTarget::new(Endpoint::Match, 999_999_999);
    let now = Utc::now();
    schedule::enqueue(
        &mut store,
        &[good, missing],
        now,
        now + chrono::Duration::seconds(7200),
    )
    .unwrap();
    warmer.wake();
    let entry = format!("GET:{}", good.key());
    wait_for("the retried entry", Duration::from_secs(30), || {
        redis.get(&entry).is_some()
    });
    let stats = warmer.stats().clone();
    drop(warmer);
    // Two failed requests, then the retry five seconds later, and the 404 once.
    assert_eq!(
        stats.failed(Endpoint::Match),
        2,
        "one failure each for the 500 and the 404"
    );
    assert_eq!(stats.done(Endpoint::Match), 1);
    assert_eq!(sim.request_counts()["match"], 4);
    assert_eq!(redis.get(&format!("GET:{}", missing.key())), None);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("precache:warm:due")
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        members,
        vec![good.key()],
        "the 404 left the schedule, the good one awaits its refresh"
    );
    let failures: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("precache:warm:failures")
        .query(&mut redis.conn())
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn entries_are_refreshed_at_90_percent_of_their_ttl_until_refresh_until() {
    let h = Harness::small("warm", 34);
    let (sim, redis) = (h.sim(), h.redis());
    let lifetimes = Lifetimes {
        ttl: Duration::from_secs(2),
        refresh_for: Duration::from_secs(5),
    };
    let (warmer, mut store) = warmer_for(&h, lifetimes, 1);
    let target = WarmTarget::new(Endpoint::Team, a_team(sim));
    let start = Instant::now();
    let now = Utc::now();
    schedule::enqueue(
        &mut store,
        &[target],
        now,
        now + chrono::Duration::seconds(5),
    )
    .unwrap();
    warmer.wake();
    let mut fetches: Vec<Duration> = Vec::new();
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(9) {
        let n = sim.request_counts()["team"];
        if n > seen {
            seen = n;
            fetches.push(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(warmer);
    // At about 0, 1.8 and 3.6 s; the next (about 5.4 s) would be past
    // refresh_until (5 s). Each refresh is due 90 % of the TTL after the
    // previous fetch, so the gaps are what must be 1.8 s (plus the
    // scheduler's poll, at most 0.25 s, and a loaded machine's slack).
    assert_eq!(fetches.len(), 3, "{fetches:?}");
    assert!(fetches[0] < Duration::from_millis(600), "{fetches:?}");
    for pair in fetches.windows(2) {
        let gap = (pair[1] - pair[0]).as_secs_f64();
        assert!((1.75..2.3).contains(&gap), "gap {gap:.2} s: {fetches:?}");
    }
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("precache:warm:due")
        .arg(target.key())
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(score, None, "dropped from the schedule after refresh_until");
    // The entry itself expires by its TTL (last refreshed ~3.6 s, TTL 2 s).
    assert_eq!(redis.get(&format!("GET:{}", target.key())), None);
}

#[test]
fn the_rate_limit_holds_for_fetch_and_warm_up_together() {
    let h = Harness::small("warm", 35);
    let sim = h.sim();
    let rate = 25;
    let cfg = cli_config(
        &h,
        &[("upstream", "max_requests_per_sec", rate.to_string())],
    );
    let summary = once_ok(&cfg, &[]);
    let warmed = summary["warm"]["done"].as_u64().unwrap();
    assert!(warmed > 50);
    let times: Vec<u64> = sim
        .request_log()
        .into_iter()
        .filter(|(_, call)| *call != "token")
        .map(|(ms, _)| ms)
        .collect();
    assert!(
        times.len() as u64 > warmed,
        "fetch and warm-up requests are both counted"
    );
    // The client spaces request starts 1/rate apart, so any one-second
    // window sees at most rate + 1 of them. The simulator logs arrivals,
    // which a loaded machine delays unevenly (a thread descheduled between
    // its slot and its write lands among later ones): up to two such in a
    // window are allowed for. Without the limit the run sends hundreds a
    // second, so this still fails at once if the limit is not kept.
    let mut worst = 0;
    for (i, &t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|&&u| u < t + 1000).count();
        worst = worst.max(in_window);
    }
    assert!(
        worst <= rate + 3,
        "{worst} requests in one second, limit {rate}"
    );
    assert!(
        worst >= rate - 2,
        "the limit was actually reached ({worst})"
    );
    // Over the whole run, which jitter cannot compress: n requests take
    // at least (n - 1) / rate seconds (less 200 ms of arrival jitter).
    let span_ms = times.last().unwrap() - times.first().unwrap();
    let least_ms = (times.len() as u64 - 1) * 1000 / rate as u64;
    assert!(
        span_ms + 200 >= least_ms,
        "{} requests in {span_ms} ms: faster than {rate} a second",
        times.len()
    );
}

/// Every warm-up endpoint answers after `ms`.
fn slow_warm_ups(sim: &SimServer, ms: u64) {
    for call in [
        "match",
        "matchincidents",
        "matchreferee",
        "matchteammembers",
        "team",
    ] {
        sim.set_fault(
            call,
            Fault {
                latency_ms: ms,
                ..Fault::default()
            },
        );
    }
}

#[test]
fn sigterm_mid_warm_up_exits_promptly_and_leaves_the_rest_due() {
    let h = Harness::small("warm", 38);
    let (sim, redis) = (h.sim(), h.redis());
    slow_warm_ups(sim, 200);
    let cfg = cli_config(&h, &[]);
    let mut running = DaemonChild::start(&cfg);
    wait_for("some warm-ups done", Duration::from_secs(30), || {
        redis.keys("GET:*").len() >= 4
    });
    running.signal("TERM");
    let (code, took) = running.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    // Workers finished the request in hand (200 ms), not the queue.
    assert!(took < Duration::from_secs(3), "{took:?}");
    let expected = expected_keys(redis);
    let stored: BTreeSet<String> = redis.keys("GET:*").into_iter().collect();
    assert!(stored.len() < expected.len(), "work was left");
    // Nothing lost: every key is either stored or still due in Redis.
    let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg("precache:warm:due")
        .arg("-inf")
        .arg(Utc::now().timestamp_millis())
        .query(&mut redis.conn())
        .unwrap();
    let mut covered: BTreeSet<String> = due.into_iter().map(|m| format!("GET:{m}")).collect();
    covered.extend(stored);
    assert_eq!(covered, expected);
}

#[test]
fn pending_warm_ups_survive_sigkill() {
    let h = Harness::small("warm", 36);
    let (sim, redis) = (h.sim(), h.redis());
    // Slow warm-up endpoints, so the kill lands mid-way.
    slow_warm_ups(sim, 60);
    let cfg = cli_config(&h, &[]);
    let mut first = DaemonChild::start(&cfg);
    wait_for("some warm-ups done", Duration::from_secs(30), || {
        redis.keys("GET:*").len() >= 8
    });
    first.kill();
    let done_before = redis.keys("GET:*").len();
    let expected = expected_keys(redis);
    assert!(
        done_before < expected.len(),
        "killed with work pending ({done_before}/{})",
        expected.len()
    );
    assert!(redis.warm_tasks_due().unwrap() > 0);

    sim.clear_faults();
    let _second = DaemonChild::start(&cfg);
    wait_for("every pending warm-up", Duration::from_secs(30), || {
        redis.keys("GET:*").len() == expected.len() && redis.warm_tasks_due().unwrap() == 0
    });
    let stored: BTreeSet<String> = redis.keys("GET:*").into_iter().collect();
    assert_eq!(stored, expected);
}

#[test]
fn services_share_one_upstream_client_with_the_warmer() {
    // The warm-up goes through the runner's client: its counters see both.
    let h = Harness::small("warm", 37);
    let (sim, redis) = (h.sim(), h.redis());
    let mut config = h.config();
    config.warm.enabled = true;
    config.warm.reference_date = Some(reference());
    let mut services = Services::start(&config).unwrap();
    let report = services.runner.run_once(false);
    assert!(
        report.warm_enqueued.len() > 50,
        "{}",
        report.warm_enqueued.len()
    );
    services.start_warmer(true).unwrap();
    let counts = services
        .warmer
        .as_ref()
        .unwrap()
        .wait_for(&report.warm_enqueued, Duration::from_secs(60));
    assert_eq!(counts.done, report.warm_enqueued.len());
    let upstream = services.runner.upstream().clone();
    let team = upstream
        .counters()
        .requests(precache::model::calls::CallType::Team);
    let teams = redis.keys("GET:api/v1/ta/team\\?*").len();
    assert_eq!(teams, sim.stats().teams);
    assert_eq!(team as usize, teams);
    services.shutdown();
}

/// The API proxy's key for a request, from DESIGN.md section 5 alone
/// (deliberately not `precache`'s key builder): `GET:` + the request path
/// lowercased, relative to `api_url`, without a leading slash and with `//`
/// collapsed, + `?` + the parameters as `name=value` joined by `&`.
fn proxy_key_by_the_rule(path: &str, params: &[(&str, String)]) -> String {
    let mut path = path.trim_start_matches('/').to_lowercase();
    while path.contains("//") {
        path = path.replace("//", "/");
    }
    if params.is_empty() {
        return format!("GET:{path}");
    }
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("GET:{path}?{}", query.join("&"))
}

/// The season and tournament pages and the dataset calls a cold start
/// warms (DESIGN.md section 13), from what the cache holds, spelled as a
/// client of the proxy sends them and keyed by the proxy's rule, not by
/// precache's key builder: every season's and tournament's page, every
/// team's org call, the venue list, every venue's details, each sport's clubs.
fn page_and_dataset_keys(redis: &RedisServer) -> BTreeSet<String> {
    let id = |v: &Value, field: &str| v[field].as_i64().unwrap().to_string();
    let mut keys = BTreeSet::new();
    for s in redis.data("valid_seasons") {
        let path = format!("/api/v1/ta/Tournament/Season/{}/", id(&s, "seasonId"));
        keys.insert(proxy_key_by_the_rule(
            &path,
            &[("hierarchy", "true".into())],
        ));
    }
    for t in redis.data("tournaments_in_season") {
        keys.insert(proxy_key_by_the_rule(
            "/api/v1/ta/tournament/",
            &[("tournamentId", id(&t, "tournamentId"))],
        ));
    }
    // One call per team (an answer may hold its club's org too).
    for t in redis.data("unique_team_ids") {
        keys.insert(proxy_key_by_the_rule(
            "/api/v1/org/teams",
            &[("orgId", t.as_i64().unwrap().to_string())],
        ));
    }
    keys.insert(proxy_key_by_the_rule("/api/v1/venues/allvenues", &[]));
    for v in redis.data("venue_details") {
        keys.insert(proxy_key_by_the_rule(
            "/api/v1/ta/venue/",
            &[("venueId", id(&v, "venueId"))],
        ));
    }
    for sport in [72, 151] {
        keys.insert(proxy_key_by_the_rule(
            &format!("/api/v1/org/clubsbysport/{sport}/"),
            &[],
        ));
    }
    keys
}

#[test]
fn the_proxy_finds_every_entry_a_cold_start_wrote() {
    let h = Harness::small("proxy-keys", 37);
    let redis = h.redis();
    let cfg = cli_config(&h, &[]);
    once_ok(&cfg, &[]);
    // The requests of DESIGN.md section 2, as a client of the proxy sends them.
    let mut looked_up = BTreeSet::new();
    for m in redis.data("tournament_matches") {
        let date = m["matchDate"]
            .as_str()
            .and_then(precache::model::parse_upstream_datetime);
        if date.is_some_and(|d| (d.date() - reference()).num_days().abs() > WINDOW_DAYS) {
            continue;
        }
        let id = m["matchId"].as_i64().unwrap().to_string();
        looked_up.insert(proxy_key_by_the_rule(
            "/api/v1/ta/match/",
            &[("matchId", id.clone())],
        ));
        looked_up.insert(proxy_key_by_the_rule(
            "/api/v1/ta/matchincidents/",
            &[("matchId", id.clone())],
        ));
        looked_up.insert(proxy_key_by_the_rule(
            "/api/v1/ta/matchreferee",
            &[("matchId", id.clone())],
        ));
        looked_up.insert(proxy_key_by_the_rule(
            &format!("/api/v1/ta/MatchTeamMembers/{id}/"),
            &[("images", "false".into())],
        ));
    }
    for t in redis.data("unique_team_ids") {
        looked_up.insert(proxy_key_by_the_rule(
            "/api/v1/ta/Team",
            &[("teamId", t.as_i64().unwrap().to_string())],
        ));
    }
    looked_up.extend(page_and_dataset_keys(redis));
    let stored: BTreeSet<String> = redis.keys("GET:*").into_iter().collect();
    let missed: Vec<&String> = looked_up.difference(&stored).collect();
    assert!(
        missed.is_empty(),
        "{} of {} entries the proxy looks for are missing, e.g. {:?}",
        missed.len(),
        looked_up.len(),
        &missed[..missed.len().min(3)]
    );
    assert_eq!(stored, looked_up, "no entry the proxy never reads");
    // A client spelling the path its own way reaches the same entry.
    let team = redis.data("unique_team_ids")[0]
        .as_i64()
        .unwrap()
        .to_string();
    assert!(stored.contains(&proxy_key_by_the_rule(
        "/API//v1/TA/team",
        &[("teamId", team)]
    )));
    // And every refresh record sits beside its entry.
    for key in &stored {
        assert!(redis.get(&format!("refresh:{key}")).is_some(), "{key}");
    }
    // Both proxy generations read every entry: the first its content,
    // status and headers; the newest also its age, by its own rule.
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    for key in &stored {
        let entry: Value = serde_json::from_str(&redis.get(key).unwrap()).unwrap();
        assert!(entry["content"].is_string() && entry["headers"].is_object());
        assert!(entry["status_code"].as_u64().is_some_and(|s| s < 400));
        let (cache, age) = newest_proxy_staleness(&entry, now);
        assert_eq!(cache, "HIT", "{key}");
        assert!(age < 120, "{key}: X-Data-Age {age} right after the run");
    }
    let day_old =
        serde_json::json!({"cached_at": now - 86_400.0, "soft_ttl": 3600, "max_stale": 604_800});
    assert_eq!(newest_proxy_staleness(&day_old, now), ("STALE", 86_400));
}

/// `X-Cache` and `X-Data-Age` as the newest proxy computes them from an
/// entry (DESIGN.md section 5, as its `get_cache_staleness` reads it): an
/// entry without `cached_at` is "HIT" at age 0 for ever, which is why
/// precache writes it.
fn newest_proxy_staleness(entry: &Value, now: f64) -> (&'static str, i64) {
    let Some(cached_at) = entry["cached_at"].as_f64().filter(|t| *t != 0.0) else {
        return ("HIT", 0);
    };
    let age = (now - cached_at) as i64;
    let soft_ttl = entry["soft_ttl"].as_i64().unwrap_or(30);
    let max_stale = entry["max_stale"].as_i64().unwrap_or(600);
    let cache = if age <= soft_ttl {
        "HIT"
    } else if age <= max_stale {
        "STALE"
    } else {
        "VERY-STALE"
    };
    (cache, age)
}

#[test]
fn entries_in_the_old_spelling_move_to_the_proxys_key() {
    let h = Harness::small("migrate", 41);
    let redis = h.redis();
    let cfg = cli_config(&h, &[]);
    once_ok(&cfg, &[]);
    let mut conn = redis.conn();
    // Put some of what a cold start wrote back into the old spelling, as an
    // earlier precache wrote it: entries, refresh records, schedule members.
    let teams: Vec<WarmTarget> = redis
        .data("unique_team_ids")
        .iter()
        .take(5)
        .map(|t| WarmTarget::new(Endpoint::Team, t.as_i64().unwrap()))
        .collect();
    let members_key = "GET:api/v1/ta/matchteammembers/";
    let member_entry = redis
        .keys(&format!("{members_key}*"))
        .into_iter()
        .next()
        .unwrap();
    let team_members = WarmTarget::parse(member_entry.strip_prefix("GET:").unwrap()).unwrap();
    let mut moved = teams.clone();
    moved.push(team_members);
    let due: f64 = 4_102_444_800_000.0; // 2100: not due while the test runs
    for target in &moved {
        let (new, old) = (target.key(), target.legacy_key());
        assert_ne!(new, old);
        for prefix in ["GET:", "refresh:GET:"] {
            let _: () = redis::cmd("RENAME")
                .arg(format!("{prefix}{new}"))
                .arg(format!("{prefix}{old}"))
                .query(&mut conn)
                .unwrap();
        }
        let _: () = redis::pipe()
            .cmd("ZREM")
            .arg("precache:warm:due")
            .arg(&new)
            .cmd("ZADD")
            .arg("precache:warm:due")
            .arg(due)
            .arg(&old)
            .cmd("HSET")
            .arg("precache:warm:until")
            .arg(&old)
            .arg(4_102_444_800_000i64)
            .cmd("HSET")
            .arg("precache:warm:failures")
            .arg(&old)
            .arg(2)
            .query(&mut conn)
            .unwrap();
    }
    // An old entry whose new key exists too: the new one wins.
    let stale = &teams[0];
    let _: () = redis::cmd("SET")
        .arg(format!("GET:{}", stale.key()))
        .arg("{\"content\":\"new\"}")
        .query(&mut conn)
        .unwrap();
    let before_ttl = pttl(redis, &format!("GET:{}", teams[1].legacy_key()));
    assert!(before_ttl > 0);

    once_ok(&cfg, &["--warm-timeout-secs", "5"]);

    for target in &moved {
        let (new, old) = (target.key(), target.legacy_key());
        for prefix in ["GET:", "refresh:GET:"] {
            assert_eq!(
                redis.get(&format!("{prefix}{old}")),
                None,
                "{prefix}{old} is gone"
            );
            assert!(
                redis.get(&format!("{prefix}{new}")).is_some(),
                "{prefix}{new} is there"
            );
        }
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg("precache:warm:due")
            .arg(&new)
            .query(&mut conn)
            .unwrap();
        assert_eq!(score, Some(due), "{new} keeps its due time");
        let old_score: Option<f64> = redis::cmd("ZSCORE")
            .arg("precache:warm:due")
            .arg(&old)
            .query(&mut conn)
            .unwrap();
        assert_eq!(old_score, None);
        let failures: Option<u32> = redis::cmd("HGET")
            .arg("precache:warm:failures")
            .arg(&new)
            .query(&mut conn)
            .unwrap();
        assert_eq!(failures, Some(2));
    }
    assert_eq!(
        redis.get(&format!("GET:{}", stale.key())).as_deref(),
        Some("{\"content\":\"new\"}")
    );
    let after_ttl = pttl(redis, &format!("GET:{}", teams[1].key()));
    assert!(
        after_ttl > 0 && after_ttl <= before_ttl,
        "TTL kept: {after_ttl} vs {before_ttl}"
    );
    // Nothing in the schedule is spelled the old way any more.
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("precache:warm:due")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert!(
        members.iter().all(|m| WarmTarget::parse(m).is_some()),
        "{members:?}"
    );
    assert!(redis.keys("GET:api/v1/ta/Team*").is_empty());
    assert!(redis.keys("GET:api/v1/ta/MatchTeamMembers*").is_empty());
}
