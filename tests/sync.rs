//! The sync core against a private Redis and the simulator: the seed's keys
//! and format, exact change detection after churn, failure semantics, Redis
//! going away, reader consistency, debug files, and the seed's utilities.

use std::collections::BTreeSet;

use kit::*;
use precache::config::Config;
use precache::report::RunReport;
use precache::report::RunStatus;
use precache::sim::{ChurnSpec, Fault, MatchListKey, Scale};
use serde_json::Value;

/// How the runs of a rig choose the roots they ask for their matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polling {
    /// `sync.adaptive = false`: every root every run, as the original.
    FullSweep,
    /// Adaptive polling with short cycles (active every 2 runs, dormant
    /// every 4), so a test sees whole cycles quickly.
    Adaptive,
}

const BOTH_MODES: [Polling; 2] = [Polling::FullSweep, Polling::Adaptive];

impl Polling {
    fn apply(self, config: &mut Config) {
        config.sync.adaptive = self == Polling::Adaptive;
        config.sync.active_every = 2;
        config.sync.dormant_every = 4;
    }
}

/// A rig whose runs ask every root.
fn new_rig(scale: Scale, seed: u64) -> Rig {
    polling_rig(scale, seed, Polling::FullSweep)
}

fn polling_rig(scale: Scale, seed: u64, polling: Polling) -> Rig {
    Harness::new("logs")
        .sim(scale, seed)
        .redis()
        .build()
        .rig(|config| polling.apply(config))
}

/// The real API answers a root's matches under `matches`, the seed's
/// documentation says `tournamentMatches`: the cache filled from one
/// spelling is the cache filled from the other, record for record, and
/// churn is exact under either.
#[test]
fn match_lists_are_read_under_either_name() {
    let mut rig = new_rig(Scale::Small, 41);
    // The simulator's default is the real API's spelling.
    let cold = rig.run();
    assert_status(&cold, RunStatus::Success);
    let served = rig.sim().stats();
    assert!(served.matches > 0);
    assert_eq!(rig.redis().data("tournament_matches").len(), served.matches);
    let data_before = rig.redis().data("tournament_matches");

    rig.sim()
        .set_match_list_key(MatchListKey::TournamentMatches);
    let renamed = rig.run();
    assert_eq!(renamed.summary.status, RunStatus::Success);
    assert_eq!(
        reported(&renamed),
        precache::sim::ChangedIds::default(),
        "the same lists under the seed's name are no change"
    );
    assert_eq!(rig.redis().data("tournament_matches"), data_before);
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 3,
        matches_added: 2,
        matches_removed: 1,
        ..ChurnSpec::default()
    });
    let churned = rig.run();
    assert_eq!(reported(&churned), expected);

    rig.sim().set_match_list_key(MatchListKey::Matches);
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 2,
        matches_added: 1,
        ..ChurnSpec::default()
    });
    let back = rig.run();
    assert_eq!(reported(&back), expected);
}

/// The roots a run asked for their matches.
fn asked_roots(report: &RunReport) -> BTreeSet<i64> {
    report
        .calls
        .iter()
        .filter_map(|c| c.params.get("tournamentId")?.parse().ok())
        .collect()
}

fn id_set(ids: &[i64]) -> BTreeSet<i64> {
    ids.iter().copied().collect()
}

fn ids(values: &[Value], field: &str) -> BTreeSet<i64> {
    values.iter().map(|v| v[field].as_i64().unwrap()).collect()
}

/// The cache's invariants: teams are the teams of the matches, roots the
/// parentless tournaments.
fn assert_consistent(tournaments: &[Value], roots: &[Value], matches: &[Value], teams: &[Value]) {
    let expected_teams: BTreeSet<i64> = matches
        .iter()
        .flat_map(|m| [m["hometeamId"].as_i64(), m["awayteamId"].as_i64()])
        .flatten()
        .collect();
    let teams: BTreeSet<i64> = teams.iter().map(|t| t.as_i64().unwrap()).collect();
    assert_eq!(
        teams, expected_teams,
        "unique_team_ids = teams of tournament_matches"
    );
    let parentless: BTreeSet<i64> = tournaments
        .iter()
        .filter(|t| {
            matches!(t.get("parentTournamentId"), None | Some(Value::Null))
                || t["parentTournamentId"] == 0
        })
        .map(|t| t["tournamentId"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids(roots, "tournamentId"),
        parentless,
        "root_tournaments = parentless tournaments"
    );
}

#[test]
fn cold_run_writes_every_seed_key_and_a_second_run_writes_nothing() {
    let mut rig = new_rig(Scale::Small, 11);
    let report = rig.run();
    assert_eq!(report.summary.status, RunStatus::Success);
    let stats = rig.sim().stats();
    let r = rig.redis();
    let seasons = r.data("valid_seasons");
    let tournaments = r.data("tournaments_in_season");
    let roots = r.data("root_tournaments");
    let matches = r.data("tournament_matches");
    let teams = r.data("unique_team_ids");
    assert_eq!(seasons.len(), stats.valid_seasons);
    assert_eq!(tournaments.len(), stats.tournaments);
    assert_eq!(roots.len(), stats.root_tournaments);
    assert_eq!(matches.len(), stats.matches);
    assert_eq!(teams.len(), stats.teams);
    assert_consistent(&tournaments, &roots, &matches, &teams);
    // Records are the upstream's, field for field.
    let first = &matches[0];
    let served = rig
        .sim()
        .with_data(|d| d.match_body(first["matchId"].as_i64().unwrap()))
        .unwrap();
    assert_eq!(first, &served);
    // The seed's entry format.
    for key in [
        "valid_seasons",
        "tournaments_in_season",
        "root_tournaments",
        "tournament_matches",
        "unique_team_ids",
    ] {
        let entry: Value = serde_json::from_str(&r.get(key).unwrap()).unwrap();
        let obj = entry.as_object().unwrap();
        assert_eq!(obj.len(), 2, "{key}: only data and last_updated");
        chrono::DateTime::parse_from_rfc3339(entry["last_updated"].as_str().unwrap()).unwrap();
    }
    // tournaments_season_{id} for every valid season, holding that season's tournaments.
    let season_keys = r.keys("tournaments_season_*");
    assert_eq!(season_keys.len(), stats.valid_seasons);
    for season in &seasons {
        let id = season["seasonId"].as_i64().unwrap();
        let list = r.data(&format!("tournaments_season_{id}"));
        let expected: BTreeSet<i64> = tournaments
            .iter()
            .filter(|t| t["seasonId"] == id)
            .map(|t| t["tournamentId"].as_i64().unwrap())
            .collect();
        assert_eq!(ids(&list, "tournamentId"), expected);
    }

    let before = rig.redis().dump();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = rig.run();
    assert_eq!(second.summary.status, RunStatus::Success);
    assert!(second.changes.as_ref().unwrap().is_empty());
    for category in precache::model::changes::Category::ALL {
        assert_eq!(second.summary.changes.get(category), Some(0), "{category}");
    }
    assert_eq!(second.summary.keys_written, 0);
    assert_eq!(second.summary.bytes_written, 0);
    assert_eq!(
        rig.redis().dump(),
        before,
        "no data key rewritten: last_updated unchanged"
    );

    // A dry run compares against the cache and writes nothing, even with changes.
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 2,
        ..Default::default()
    });
    let dry = rig.dry_run();
    assert_eq!(reported(&dry), expected);
    assert_eq!(dry.summary.keys_written, 0);
    assert_eq!(rig.redis().dump(), before, "a dry run writes nothing");
}

/// Churns the upstream, runs, and checks the changes reported are exactly
/// the churn's: in the next run with full sweeps; with adaptive polling,
/// over one dormant cycle (4 runs), each change reported once.
fn churn_and_check(rig: &mut Rig, polling: Polling, spec: ChurnSpec) {
    let expected = rig.sim().churn(&spec);
    let runs = match polling {
        Polling::FullSweep => 1,
        Polling::Adaptive => 4,
    };
    let mut seen = precache::sim::ChangedIds::default();
    for _ in 0..runs {
        let report = rig.run();
        assert_eq!(report.summary.status, RunStatus::Success);
        let got = reported(&report);
        for (all, new) in [
            (&mut seen.valid_seasons, got.valid_seasons),
            (&mut seen.tournaments_in_season, got.tournaments_in_season),
            (&mut seen.tournament_matches, got.tournament_matches),
            (&mut seen.individual_matches, got.individual_matches),
            (&mut seen.unique_team_ids, got.unique_team_ids),
        ] {
            for id in new {
                assert!(!all.contains(&id), "{id} reported twice ({polling:?})");
                all.push(id);
            }
        }
    }
    for list in [
        &mut seen.valid_seasons,
        &mut seen.tournaments_in_season,
        &mut seen.tournament_matches,
        &mut seen.individual_matches,
        &mut seen.unique_team_ids,
    ] {
        list.sort_unstable();
    }
    assert_eq!(seen, expected, "after {spec:?} ({polling:?})");
    // And the cache now equals the upstream.
    assert_eq!(
        rig.redis().data("tournament_matches").len(),
        rig.sim().stats().matches
    );
    let after = rig.run();
    assert!(
        after.changes.unwrap().is_empty(),
        "nothing left to find ({polling:?})"
    );
}

#[test]
fn churn_is_detected_exactly_at_small_scale() {
    for polling in BOTH_MODES {
        churn_at_small_scale(polling);
    }
}

fn churn_at_small_scale(polling: Polling) {
    let mut rig = polling_rig(Scale::Small, 12, polling);
    rig.run();
    let mixes = [
        ChurnSpec {
            matches_modified: 3,
            ..Default::default()
        },
        ChurnSpec {
            matches_added: 2,
            matches_removed: 2,
            ..Default::default()
        },
        ChurnSpec {
            tournaments_added: 1,
            tournaments_removed: 1,
            tournaments_renamed: 2,
            ..Default::default()
        },
        ChurnSpec {
            seasons_changed: 1,
            matches_modified: 1,
            matches_added: 1,
            matches_removed: 1,
            tournaments_renamed: 1,
            tournaments_added: 1,
            tournaments_removed: 1,
            ..Default::default()
        },
    ];
    for spec in mixes {
        churn_and_check(&mut rig, polling, spec);
    }
}

#[test]
fn churn_is_detected_exactly_at_norway_scale() {
    for polling in BOTH_MODES {
        churn_at_norway_scale(polling);
    }
}

fn churn_at_norway_scale(polling: Polling) {
    let mut rig = polling_rig(Scale::Norway, 13, polling);
    let cold = rig.run();
    assert_eq!(cold.summary.items, rig.sim().stats());
    churn_and_check(
        &mut rig,
        polling,
        ChurnSpec {
            matches_modified: 40,
            matches_added: 10,
            matches_removed: 10,
            tournaments_renamed: 5,
            tournaments_added: 2,
            tournaments_removed: 2,
            seasons_changed: 1,
            ..Default::default()
        },
    );
    churn_and_check(
        &mut rig,
        polling,
        ChurnSpec {
            matches_modified: 200,
            in_window_days: Some(14),
            ..Default::default()
        },
    );
}

/// Someone else edits the stored match list (an operator, an older
/// version): the body stamps must not let a restarted precache take the
/// edited list for the upstream's. The edited root is read again and the
/// upstream's record comes back as a change.
#[test]
fn unchanged_lists_answer_304_and_only_changed_ones_are_read_again() {
    let mut rig = new_rig(Scale::Small, 31);
    let first = rig.run();
    assert_eq!(
        first.summary.not_modified, 0,
        "nothing to ask conditionally yet"
    );
    let roots = first.summary.api_calls.tournament_matches;
    assert!(roots > 10);

    // Every list unchanged: every match call is answered 304, no change,
    // and nothing parsed: each list is the very records held before.
    let second = rig.run();
    assert_eq!(second.summary.status, RunStatus::Success);
    assert_eq!(second.summary.not_modified, roots);
    let (held, now) = (
        first.snapshot.as_ref().unwrap(),
        second.snapshot.as_ref().unwrap(),
    );
    for (root, list) in &now.matches_by_root {
        let before = &held.matches_by_root[root];
        assert!(
            list.len() == before.len()
                && list
                    .iter()
                    .zip(before)
                    .all(|(a, b)| precache::model::RawJson::same_slice(&a.raw, &b.raw)),
            "root {root}'s list was read again"
        );
    }
    assert_eq!(rig.sim().not_modified(), roots as u64);
    assert!(second.changes.as_ref().unwrap().is_empty());
    assert_eq!(second.summary.keys_written, 0);

    // A churn: the changed lists answer 200 and are reported exactly.
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 3,
        matches_added: 1,
        matches_removed: 1,
        ..Default::default()
    });
    let third = rig.run();
    assert_eq!(reported(&third), expected);
    assert_eq!(
        third.summary.not_modified,
        roots - expected.tournament_matches.len(),
        "the other lists are still 304"
    );
    assert_eq!(
        rig.redis().data("tournament_matches").len(),
        rig.sim().stats().matches
    );

    // Validators live in memory: after a restart every list is read once.
    rig.restart();
    let restarted = rig.run();
    assert_eq!(restarted.summary.not_modified, 0);
    assert!(restarted.changes.as_ref().unwrap().is_empty());
    assert_eq!(rig.run().summary.not_modified, roots);
}

/// An upstream whose ETag stays the same across an edit: each 304 hides
/// the edit, until the validators are `sync.max_validator_age_secs` old;
/// then the root is asked plainly whatever its tier (here a dormant one,
/// whose turn would not come for 1,000 runs) and the edit shows, exactly.
#[test]
fn an_etag_that_stays_the_same_across_an_edit_is_outgrown_within_the_validator_age() {
    let mut rig = Harness::small("logs", 32).rig(|config| {
        Polling::Adaptive.apply(config);
        config.sync.active_every = 500;
        config.sync.dormant_every = 1000;
        config.sync.max_validator_age_secs = 2;
    });
    rig.sim().set_fixed_etag(Some("\"same\""));
    rig.services().runner.sweep_every_root_next();
    rig.run();
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 2,
        root_tier: Some(precache::report::Tier::Dormant),
        ..Default::default()
    });
    assert_eq!(expected.individual_matches.len(), 2);
    // Young validators: the dormant root is not due, and a live root's 304
    // says nothing of the edit.
    let early = rig.run();
    assert!(
        early.changes.unwrap().is_empty(),
        "detected before its turn"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let late = rig.run();
    assert_eq!(late.summary.status, RunStatus::Success);
    assert_eq!(reported(&late), expected, "after the validator age");
    assert!(rig.run().changes.unwrap().is_empty());
}

#[test]
fn a_list_edited_behind_our_back_is_read_again_after_a_restart() {
    // Adaptive: after the restart the edited root is not due, but the list
    // held for it is not its answer any more, so it is asked anyway.
    let mut rig = polling_rig(Scale::Small, 23, Polling::Adaptive);
    assert_eq!(rig.run().summary.status, RunStatus::Success);
    let mut conn = rig.redis().conn();
    let stamps: usize = redis::cmd("HLEN")
        .arg("precache:match_bodies")
        .query(&mut conn)
        .unwrap();
    assert!(stamps > 10, "the run stamped the roots it read ({stamps})");

    let mut entry: Value =
        serde_json::from_str(&rig.redis().get("tournament_matches").unwrap()).unwrap();
    let edited = entry["data"][0].clone();
    let id = edited["matchId"].as_i64().unwrap();
    entry["data"][0]["edited"] = Value::from("behind our back");
    let _: () = redis::cmd("SET")
        .arg("tournament_matches")
        .arg(entry.to_string())
        .query(&mut conn)
        .unwrap();

    // A restart loads the edited list from Redis.
    rig.restart();
    let report = rig.run();
    assert_eq!(report.summary.status, RunStatus::Success);
    let changes = report.changes.as_ref().unwrap();
    assert_eq!(changes.individual_matches.modified, vec![id]);
    let restored = rig
        .redis()
        .data("tournament_matches")
        .into_iter()
        .find(|m| m["matchId"] == id)
        .unwrap();
    assert_eq!(restored, edited, "the upstream's record is back");
    // And the stamps agree again: the next run changes nothing.
    assert!(rig.run().changes.unwrap().is_empty());
}

#[test]
fn failed_match_calls_carry_over_and_failed_seasons_change_nothing() {
    let mut rig = new_rig(Scale::Small, 14);
    rig.run();
    let before = rig.redis().dump();
    let all_matches = ids(&rig.redis().data("tournament_matches"), "matchId");

    // 20 % of tournament_matches calls fail persistently, and some matches change.
    rig.sim().set_fault(
        "tournament_matches",
        Fault {
            error_rate: 0.2,
            sticky: true,
            ..Fault::default()
        },
    );
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 6,
        ..Default::default()
    });
    let report = rig.run();
    assert_eq!(report.summary.status, RunStatus::Degraded);
    let carried: BTreeSet<i64> = report.summary.carried_over.iter().copied().collect();
    assert!(!carried.is_empty());
    let changes = report.changes.as_ref().unwrap();
    for root in &carried {
        assert!(
            !changes.tournament_matches.ids().contains(root),
            "carried-over root {root} reported as changed"
        );
    }
    // Changes in tournaments that answered are still detected; those in failed ones are not.
    let detected: BTreeSet<i64> = changes.individual_matches.ids().into_iter().collect();
    assert!(detected.is_subset(&expected.individual_matches.iter().copied().collect()));
    // Every match is still in the cache (nothing deleted by a failed call).
    let cached: BTreeSet<i64> = ids(&rig.redis().data("tournament_matches"), "matchId");
    assert_eq!(cached, all_matches);

    // A seasons call failing fails the run and changes nothing.
    rig.sim().clear_faults();
    rig.run();
    let settled = rig.redis().dump();
    rig.sim().set_fault(
        "seasons",
        Fault {
            error_rate: 1.0,
            status: Some(503),
            ids: Some(vec![72]),
            ..Fault::default()
        },
    );
    rig.sim().churn(&ChurnSpec {
        matches_modified: 3,
        ..Default::default()
    });
    let failed = rig.run();
    assert_eq!(failed.summary.status, RunStatus::Failed);
    assert_eq!(
        failed.summary.upstream_status,
        precache::report::UpstreamStatus::Down
    );
    assert!(failed.summary.error.as_deref().unwrap().contains("seasons"));
    assert_eq!(rig.redis().dump(), settled, "a failed run writes nothing");
    assert_ne!(before, settled);
}

/// A root whose answer is held (it came back empty) is asked again in
/// every run, whatever its tier, so the shrink is seen in consecutive runs
/// and confirmed after `sync.confirm_runs`, as with full sweeps.
#[test]
fn with_adaptive_polling_a_held_root_is_asked_every_run_until_its_shrink_is_confirmed() {
    use precache::report::ShrinkVerdict;
    let mut rig = polling_rig(Scale::Small, 18, Polling::Adaptive);
    let cold = rig.run();
    let root = cold
        .snapshot
        .as_ref()
        .unwrap()
        .matches_by_root
        .iter()
        .find(|(_, list)| list.len() >= 2)
        .map(|(root, _)| *root)
        .expect("a root with matches");
    rig.sim().set_fault(
        "tournament_matches",
        Fault {
            empty_rate: 1.0,
            ids: Some(vec![root]),
            ..Fault::default()
        },
    );
    let mut verdicts = Vec::new();
    for _ in 0..10 {
        let report = rig.run();
        let verdict = report.summary.shrink;
        if verdict != ShrinkVerdict::None || !verdicts.is_empty() {
            verdicts.push(verdict);
        }
        if matches!(verdict, ShrinkVerdict::Confirmed { .. }) {
            break;
        }
    }
    assert_eq!(
        verdicts,
        vec![
            ShrinkVerdict::Held {
                seen: 1,
                confirm_runs: 3
            },
            ShrinkVerdict::Held {
                seen: 2,
                confirm_runs: 3
            },
            ShrinkVerdict::Confirmed { seen: 3 },
        ],
        "held in consecutive runs, then applied"
    );
    let emptied: BTreeSet<i64> = cold.snapshot.as_ref().unwrap().matches_by_root[&root]
        .iter()
        .map(|m| m.id)
        .collect();
    let cached = ids(&rig.redis().data("tournament_matches"), "matchId");
    assert!(
        cached.is_disjoint(&emptied),
        "the emptied root's matches are gone once confirmed"
    );
}

/// A root that also lists a lower root's match holds a list that is not
/// its answer (dedup keeps the match under the lower root), so adaptive
/// polling asks it every run: resting on it could lose the match should
/// the lower root drop it.
#[test]
fn with_adaptive_polling_a_root_sharing_a_match_is_asked_every_run() {
    use precache::sim::Hostile;
    let mut rig = polling_rig(Scale::Small, 19, Polling::Adaptive);
    let cold = rig.run();
    let lists = &cold.snapshot.as_ref().unwrap().matches_by_root;
    // Not a live one (asked every run anyway), and not the lowest.
    let duplicating = *lists
        .iter()
        .rev()
        .find(|(root, list)| {
            !list.is_empty()
                && rig.sim().with_data(|d| d.root_tier(**root))
                    != Some(precache::report::Tier::Live)
        })
        .map(|(root, _)| root)
        .expect("a root with matches that is not live");
    rig.sim().set_fault(
        "tournament_matches",
        Fault {
            hostile_rate: 1.0,
            hostile: Some(Hostile::DuplicateMatch),
            ids: Some(vec![duplicating]),
            ..Fault::default()
        },
    );
    // Until its turn comes it may rest; from the run that asked it on,
    // every run asks it.
    let mut since_asked = None;
    for n in 0..8 {
        let report = rig.run();
        assert!(report.summary.status.is_ok());
        let roots = asked_roots(&report);
        match since_asked {
            None if roots.contains(&duplicating) => since_asked = Some(n),
            None => {}
            Some(_) => assert!(roots.contains(&duplicating), "run {n} rested on it"),
        }
    }
    assert!(since_asked.is_some_and(|n| n < 4), "asked within its cycle");
}

/// The change feed: one stream entry per run that changed something, with
/// exactly the changed ids per category, written with the data; nothing
/// for a run that changed nothing.
#[test]
fn the_change_feed_holds_exactly_each_runs_changes() {
    let mut rig = new_rig(Scale::Small, 21);
    let entries = |rig: &Rig| -> Vec<(String, std::collections::BTreeMap<String, String>)> {
        let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("precache:changes")
            .arg("-")
            .arg("+")
            .query(&mut rig.redis().conn())
            .unwrap();
        reply
            .into_iter()
            .map(|(id, fields)| (id, fields.into_iter().collect()))
            .collect()
    };
    let cold = rig.run();
    assert_eq!(entries(&rig).len(), 1, "the cold run changed everything");
    assert!(rig.run().changes.unwrap().is_empty());
    assert_eq!(entries(&rig).len(), 1, "a no-change run adds nothing");
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 3,
        matches_added: 1,
        tournaments_renamed: 1,
        ..Default::default()
    });
    let churned = rig.run();
    let all = entries(&rig);
    assert_eq!(all.len(), 2);
    let (_, last) = &all[1];
    assert_eq!(last["run_id"], churned.summary.run_id);
    assert_ne!(last["run_id"], cold.summary.run_id);
    let counts: Value = serde_json::from_str(&last["changes"]).unwrap();
    assert_eq!(
        counts["individual_matches"],
        expected.individual_matches.len()
    );
    let ids = |field: &str| -> Vec<i64> {
        last.get(field)
            .map(|text| serde_json::from_str(text).unwrap())
            .unwrap_or_default()
    };
    assert_eq!(ids("valid_seasons"), expected.valid_seasons);
    assert_eq!(ids("tournaments_in_season"), expected.tournaments_in_season);
    assert_eq!(ids("tournament_matches"), expected.tournament_matches);
    assert_eq!(ids("individual_matches"), expected.individual_matches);
    assert_eq!(ids("unique_team_ids"), expected.unique_team_ids);
    assert!(expected.valid_seasons.is_empty());
    assert!(
        !last.contains_key("valid_seasons"),
        "only categories that changed"
    );
}

/// `once` polls as the daemon would: its state (run number, roots to ask
/// again) is in Redis, so a second `once` asks a fraction of the roots,
/// `once --full` asks every one, and changes in any tier show within its
/// cycle.
#[test]
fn once_keeps_its_poll_state_in_redis_and_full_asks_every_root() {
    let h = Harness::small("once-poll", 17);
    let (sim, redis) = (h.sim(), h.redis());
    let cfg = h.write_config(&[
        ("warm", "enabled", "false".into()),
        ("sync", "active_every", "2".into()),
        ("sync", "dormant_every", "3".into()),
    ]);
    let once = |args: &[&str]| -> Value { once_ok(&cfg, args) };
    let roots = sim.stats().root_tournaments as u64;
    let calls = |s: &Value| s["api_calls"]["tournament_matches"].as_u64().unwrap();
    let cold = once(&[]);
    assert_eq!(calls(&cold), roots, "nothing held: every root is new");
    assert_eq!(redis.get("precache:poll").as_deref(), Some("1"));
    let second = once(&[]);
    assert_eq!(second["full_sweep"], false);
    assert!(calls(&second) < roots, "{second}");
    let polled = &second["polled"];
    assert_eq!(
        polled["live"].as_u64().unwrap()
            + polled["active"].as_u64().unwrap()
            + polled["dormant"].as_u64().unwrap(),
        calls(&second)
    );
    assert_eq!(second["tiers"]["live"], polled["live"], "live: every run");
    assert_eq!(redis.get("precache:poll").as_deref(), Some("2"));
    let full = once(&["--full"]);
    assert_eq!(full["full_sweep"], true);
    assert_eq!(calls(&full), roots);
    // A churn anywhere is reported, exactly, within a dormant cycle of onces.
    let expected = sim.churn(&ChurnSpec {
        matches_modified: 6,
        ..Default::default()
    });
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let summary = once(&[]);
        for id in summary["changed_ids"]["individual_matches"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(seen.insert(id.as_i64().unwrap()), "{id} twice");
        }
    }
    assert_eq!(seen, id_set(&expected.individual_matches));
}

/// Adaptive polling keeps the failure semantics: a polled root whose call
/// fails keeps its matches (degraded, not a change), is asked again on the
/// very next run, whatever its tier, and its change then shows.
#[test]
fn with_adaptive_polling_a_failed_root_is_carried_over_and_asked_again_next_run() {
    let mut rig = polling_rig(Scale::Small, 16, Polling::Adaptive);
    rig.run();
    let cached = ids(&rig.redis().data("tournament_matches"), "matchId");
    rig.sim().set_fault(
        "tournament_matches",
        Fault {
            error_rate: 0.3,
            sticky: true,
            ..Fault::default()
        },
    );
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 8,
        ..Default::default()
    });
    // Runs until one is degraded (a polled root's call failed).
    let mut degraded = None;
    let mut seen = BTreeSet::new();
    for _ in 0..8 {
        let report = rig.run();
        seen.extend(reported(&report).individual_matches);
        if report.summary.status == RunStatus::Degraded {
            degraded = Some(report);
            break;
        }
        assert_eq!(report.summary.status, RunStatus::Success);
    }
    let degraded = degraded.expect("a polled root's call failed");
    let carried: BTreeSet<i64> = degraded.summary.carried_over.iter().copied().collect();
    assert!(!carried.is_empty());
    assert_eq!(
        ids(&rig.redis().data("tournament_matches"), "matchId"),
        cached,
        "nothing deleted by a failed call"
    );
    rig.sim().clear_faults();
    let next = rig.run();
    assert_eq!(next.summary.status, RunStatus::Success);
    let asked = next.summary.poll.expect("polled").polled.total() as usize;
    assert!(asked >= carried.len(), "the failed roots are asked again");
    assert!(
        asked < rig.sim().stats().root_tournaments,
        "but not every root ({asked})"
    );
    assert!(
        carried.is_subset(&asked_roots(&next)),
        "failed roots {carried:?} asked again"
    );
    seen.extend(reported(&next).individual_matches);
    for _ in 0..4 {
        seen.extend(reported(&rig.run()).individual_matches);
    }
    assert_eq!(seen, id_set(&expected.individual_matches));
}

/// Redis refuses writes (out of memory) while it still answers reads: the
/// run that asked its roots fails to write their answers. Every root it
/// asked is asked again by the next run, whatever its tier, so no change
/// it saw waits for the root's next turn; over a cycle every change is
/// reported once.
#[test]
fn with_adaptive_polling_a_run_whose_write_failed_has_its_roots_asked_again() {
    let mut rig = polling_rig(Scale::Small, 24, Polling::Adaptive);
    rig.run();
    rig.run();
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 8,
        ..Default::default()
    });
    let mut conn = rig.redis().conn();
    let set = |conn: &mut redis::Connection, policy: &str, bytes: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .query(conn)
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .query(conn)
            .unwrap();
    };
    set(&mut conn, "noeviction", "1");
    let failed = rig.run();
    assert_status(&failed, RunStatus::Failed);
    set(&mut conn, "noeviction", "0");
    let asked_in_failed = asked_roots(&failed);
    assert!(!asked_in_failed.is_empty());
    let next = rig.run();
    assert_status(&next, RunStatus::Success);
    assert!(
        asked_in_failed.is_subset(&asked_roots(&next)),
        "roots asked by the failed run are asked again: {:?} not in {:?}",
        asked_in_failed,
        asked_roots(&next)
    );
    let mut seen: BTreeSet<i64> = reported(&next).individual_matches.into_iter().collect();
    for _ in 0..4 {
        seen.extend(reported(&rig.run()).individual_matches);
    }
    assert_eq!(seen, id_set(&expected.individual_matches));
}

#[test]
fn redis_going_away_fails_runs_and_recovery_rewrites_everything() {
    let mut rig = new_rig(Scale::Small, 15);
    assert_eq!(rig.run().summary.status, RunStatus::Success);
    rig.redis().stop();
    let served = rig.sim().request_counts();
    let down = rig.run();
    assert_eq!(down.summary.status, RunStatus::Failed);
    assert!(
        down.summary.error.as_deref().unwrap().starts_with("redis"),
        "{:?}",
        down.summary.error
    );
    // The cache is read while the first calls go out; the match calls,
    // which need it, are never made.
    assert_eq!(
        rig.sim().request_counts()["tournament_matches"],
        served["tournament_matches"]
    );
    assert_eq!(down.summary.api_calls.tournament_matches, 0);
    // Redis failed the run, not the upstream, which answered every call.
    assert_eq!(
        down.summary.upstream_status,
        precache::report::UpstreamStatus::Up
    );
    // Back, but empty: the next run notices and rewrites every key.
    rig.redis().restart();
    let back = rig.run();
    assert_status(&back, RunStatus::Success);
    assert_eq!(
        rig.redis().data("tournament_matches").len(),
        rig.sim().stats().matches
    );
    assert_eq!(
        rig.redis().keys("tournaments_season_*").len(),
        rig.sim().stats().valid_seasons
    );
    // A `clear` between runs is noticed the same way.
    let removed = precache::store::clear_keys(
        &mut precache::store::Store::new(&rig.redis().url(), Default::default()).unwrap(),
        None,
    )
    .unwrap();
    assert!(removed.len() >= 5);
    let again = rig.run();
    assert_eq!(again.summary.items, rig.sim().stats());
    assert_eq!(
        rig.redis().data("unique_team_ids").len(),
        rig.sim().stats().teams
    );
}

#[test]
fn readers_never_see_a_half_written_run() {
    let mut rig = new_rig(Scale::Small, 16);
    rig.run();
    let url = rig.redis().url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // MGET is atomic: one consistent view of the four keys.
                let values: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&[
                        "tournaments_in_season",
                        "root_tournaments",
                        "tournament_matches",
                        "unique_team_ids",
                    ])
                    .query(&mut conn)
                    .unwrap();
                let lists: Vec<Vec<Value>> = values
                    .iter()
                    .map(|v| precache::store::parse_entry(v.as_deref().unwrap()).unwrap())
                    .collect();
                assert_consistent(&lists[0], &lists[1], &lists[2], &lists[3]);
                reads += 1;
            }
            reads
        })
    };
    for i in 0..6 {
        rig.sim().churn(&ChurnSpec {
            matches_added: 3,
            matches_removed: 3,
            tournaments_added: 1,
            tournaments_removed: 1,
            matches_modified: i,
            ..Default::default()
        });
        assert_eq!(rig.run().summary.status, RunStatus::Success);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader.join().expect("every read was consistent");
    assert!(reads > 10, "the reader ran during the runs ({reads} reads)");
}

#[test]
fn debug_files_have_the_seeds_names_and_history_is_bounded() {
    let mut rig = new_rig(Scale::Small, 17);
    for i in 0..12 {
        rig.sim().churn(&ChurnSpec {
            matches_modified: i % 2,
            ..Default::default()
        });
        rig.run();
    }
    rig.shutdown();
    let dir = rig.config.logs.dir.join("precache_debug_logs");
    let read = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.join(name)).unwrap_or_else(|_| panic!("{name} missing")),
        )
        .unwrap()
    };
    let history = read("precache_run_history.json");
    assert_eq!(history.as_array().unwrap().len(), 10);
    let stats = read("precache_run_stats.json");
    for field in [
        "action",
        "start_time",
        "end_time",
        "process_time",
        "api_calls",
        "changes",
        "run_id",
        "total_changes",
        "upstream_status",
        "status",
    ] {
        assert!(
            stats.get(field).is_some(),
            "run stats lack {field}: {stats}"
        );
    }
    assert_eq!(
        history[9]["run_id"], stats["run_id"],
        "history ends with the latest run"
    );
    let calls = read("precache_run_calls.json");
    let first = &calls["calls"][0];
    for field in ["url_path", "params", "method", "status_code", "timestamp"] {
        assert!(
            first.get(field).is_some(),
            "call record lacks {field}: {first}"
        );
    }
    let stats_now = rig.sim().stats();
    for (name, count) in [
        ("valid_seasons_latest.json", stats_now.valid_seasons),
        ("tournament_matches_fetched_latest.json", stats_now.matches),
        (
            "root_tournaments_fetched_latest.json",
            stats_now.root_tournaments,
        ),
        ("unique_team_ids_fetched_latest.json", stats_now.teams),
        (
            "tournaments_in_season_fetched_latest.json",
            stats_now.tournaments,
        ),
        ("valid_seasons_fetched_latest.json", stats_now.valid_seasons),
    ] {
        let file = read(name);
        assert_eq!(file["data"].as_array().unwrap().len(), count, "{name}");
        assert_eq!(file["count"], count, "{name}");
    }
    for name in [
        "tournaments_in_season_latest.json",
        "tournament_matches_latest.json",
        "unique_team_ids_latest.json",
    ] {
        read(name);
    }
    // Redis keeps the same history.
    let mut store = precache::store::Store::new(&rig.redis().url(), Default::default()).unwrap();
    assert_eq!(store.history(50).unwrap().len(), 10);
}

#[test]
fn clear_and_season_behave_as_the_seed_says() {
    let mut rig = new_rig(Scale::Small, 18);
    rig.run();
    rig.shutdown();
    // The command line's logs are the rig's: clear removes its debug files.
    let cfg = rig.harness().write_config_in(
        "cli",
        &[("logs", "dir", quoted(rig.config.logs.dir.to_str().unwrap()))],
    );
    let cli = |args: &[&str]| {
        let (code, json, _) = run_cli(&cfg, args);
        (code, json)
    };
    let season = rig.redis().data("valid_seasons")[0]["seasonId"]
        .as_i64()
        .unwrap();
    let (code, found) = cli(&["season", &season.to_string()]);
    assert_eq!(code, Some(0));
    assert_eq!(found["status"], "success");
    assert_eq!(found["cache_key"], format!("tournaments_season_{season}"));
    assert_eq!(found["source"], "redis");
    assert!(
        found["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["seasonId"] == season)
    );
    let (_, missing) = cli(&["season", "999999"]);
    assert_eq!(missing["status"], "not_found");
    assert_eq!(missing["data"], Value::Null);

    let (code, status) = cli(&["status"]);
    assert_eq!(code, Some(0));
    assert_eq!(status["runs"].as_array().unwrap().len(), 1);

    let (code, cleared) = cli(&["clear"]);
    assert_eq!(code, Some(0));
    let keys: BTreeSet<String> = cleared["deleted_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert!(
        keys.contains("tournament_matches")
            && keys.contains(&format!("tournaments_season_{season}"))
    );
    assert!(!cleared["deleted_files"].as_array().unwrap().is_empty());
    assert!(rig.redis().keys("tournament*").is_empty());
    assert!(rig.redis().keys("valid_seasons").is_empty());
    assert!(
        !rig.config
            .logs
            .dir
            .join("precache_debug_logs/precache_run_stats.json")
            .exists()
    );
    let (_, gone) = cli(&["season", &season.to_string()]);
    assert_eq!(gone["status"], "not_found");
}
