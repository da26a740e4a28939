//! Redis, not memory, is the truth (DESIGN.md section 3): a restore, an
//! edited, emptied, deleted or unreadable key, a bookkeeping key of the
//! wrong type and a flush under a held shrink, each against a real Redis
//! and the simulator. After at most one run the cache equals a fresh full
//! write of the upstream (under a held shrink: the shrink still held, the
//! full data kept), each change is reported once, and no key's content can
//! fail runs.

use kit::*;
use precache::report::{RunStatus, ShrinkVerdict, Tier};
use precache::sim::ChurnSpec;

fn start_rig(seed: u64, adaptive: bool) -> Rig {
    Harness::small("truth", seed).rig(|config| {
        config.sync.adaptive = adaptive;
        config.sync.active_every = 2;
        config.sync.dormant_every = 4;
        config.warm.enabled = true;
        config.warm.reference_date = Some(today());
    })
}

/// A churn the next run detects: in live roots (asked every run)
/// under adaptive polling.
fn churn(rig: &Rig) -> precache::sim::ChangedIds {
    let changed = rig.sim().churn(&ChurnSpec {
        matches_modified: 3,
        matches_added: 1,
        matches_removed: 1,
        root_tier: rig.config.sync.adaptive.then_some(Tier::Live),
        ..ChurnSpec::default()
    });
    assert!(
        !changed.individual_matches.is_empty(),
        "the churn changed matches"
    );
    changed
}

#[test]
fn a_restore_from_an_older_rdb_is_corrected_in_one_run_each_change_reported_once() {
    for adaptive in [false, true] {
        let mut rig = start_rig(81, adaptive);
        assert_eq!(rig.run().summary.status, RunStatus::Success);
        rig.redis().cmd(&["SAVE"]);
        let expected = churn(&rig);
        assert_eq!(reported(&rig.run()), expected, "adaptive {adaptive}");
        assert_eq!(feed(rig.redis()).len(), 2);
        // The server goes down and comes back from the older RDB: the
        // churn's writes, and their feed entry, are gone.
        rig.redis().restart();
        assert_eq!(feed(rig.redis()).len(), 1, "the RDB has the cold run only");
        let repaired = rig.run();
        assert_eq!(repaired.summary.status, RunStatus::Success);
        assert!(
            repaired.summary.repairs.reloaded.is_some(),
            "{:?}",
            repaired.summary.repairs
        );
        assert_eq!(
            reported(&repaired),
            expected,
            "adaptive {adaptive}: against the restored state"
        );
        assert_cache_is_the_upstream(rig.sim(), rig.redis(), "after the restore");
        let entries = feed(rig.redis());
        assert_eq!(entries.len(), 2);
        assert_eq!(
            feed_ids(&entries[1], "individual_matches"),
            expected.individual_matches,
            "each changed id once in the feed"
        );
        let quiet = rig.run();
        assert!(quiet.changes.unwrap().is_empty());
        assert!(
            quiet.summary.repairs.is_empty(),
            "{:?}",
            quiet.summary.repairs
        );
        assert_eq!(quiet.summary.keys_written, 0);
    }
}

#[test]
fn an_emptied_edited_older_or_deleted_key_is_repaired_in_one_run() {
    let mut rig = start_rig(82, true);
    rig.run();
    let all_matches: Vec<i64> = {
        let mut ids: Vec<i64> = rig
            .redis()
            .data("tournament_matches")
            .iter()
            .map(|m| m["matchId"].as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };

    // Emptied: every match is missing from what Redis holds, and is
    // reported (once) as it comes back.
    rig.redis().cmd(&[
        "SET",
        "tournament_matches",
        "{\"data\":[],\"last_updated\":\"2026-01-01T00:00:00+00:00\"}",
    ]);
    let repaired = rig.run();
    assert_eq!(repaired.summary.status, RunStatus::Success);
    let c = repaired.changes.as_ref().unwrap();
    assert_eq!(c.individual_matches.ids(), all_matches);
    assert_eq!(c.individual_matches.added.len(), all_matches.len());
    assert_cache_is_the_upstream(rig.sim(), rig.redis(), "emptied");
    assert!(rig.run().changes.unwrap().is_empty(), "converged");

    // An older copy put back: the changes since are reported again, once.
    let older = rig.redis().get("tournament_matches").unwrap();
    let expected = churn(&rig);
    assert_eq!(reported(&rig.run()), expected);
    rig.redis().cmd(&["SET", "tournament_matches", &older]);
    let repaired = rig.run();
    assert_eq!(
        reported(&repaired),
        expected,
        "the older copy's differences"
    );
    assert_cache_is_the_upstream(rig.sim(), rig.redis(), "older copy");
    assert!(rig.run().changes.unwrap().is_empty(), "converged");

    // Garbage: the key reads as empty and is written again.
    rig.redis().cmd(&["SET", "valid_seasons", "garbage"]);
    let repaired = rig.run();
    assert_eq!(repaired.summary.status, RunStatus::Success);
    assert_eq!(
        repaired.changes.as_ref().unwrap().valid_seasons.added.len(),
        rig.sim().stats().valid_seasons
    );
    assert_cache_is_the_upstream(rig.sim(), rig.redis(), "garbage");

    // A data key of another type: the same.
    rig.redis().cmd(&["DEL", "tournaments_in_season"]);
    rig.redis().cmd(&["RPUSH", "tournaments_in_season", "x"]);
    assert_eq!(rig.run().summary.status, RunStatus::Success);
    assert_cache_is_the_upstream(rig.sim(), rig.redis(), "a list");

    // A per-season key deleted: written again, and no change reported.
    let season_key = rig.redis().keys("tournaments_season_*")[0].clone();
    rig.redis().cmd(&["DEL", &season_key]);
    let repaired = rig.run();
    assert!(
        repaired.changes.unwrap().is_empty(),
        "a derived key is no change"
    );
    assert!(repaired.summary.repairs.rewritten.contains(&season_key));
    assert_cache_is_the_upstream(rig.sim(), rig.redis(), "a deleted season key");
    let quiet = rig.run();
    assert!(quiet.summary.repairs.is_empty());
    assert_eq!(quiet.summary.keys_written, 0);
}

/// How a bookkeeping key is spoiled.
#[derive(Debug, Clone, Copy)]
enum Spoil {
    /// Replaced by a value of another Redis type.
    WrongType,
    /// Its type kept, its content garbage.
    Garbage,
}

fn spoil(rig: &Rig, key: &str, how: Spoil) {
    rig.redis().cmd(&["DEL", key]);
    let kind = match key {
        "precache:runs" => "list",
        "precache:match_bodies" | "precache:warm:until" | "precache:warm:failures" => "hash",
        "precache:changes" => "stream",
        "precache:warm:due" => "zset",
        _ => "string",
    };
    match (how, kind) {
        (Spoil::WrongType, "string") => rig.redis().cmd(&["RPUSH", key, "x"]),
        (Spoil::WrongType, _) => rig.redis().cmd(&["SET", key, "x"]),
        (Spoil::Garbage, "string") => rig.redis().cmd(&["SET", key, "{garbage"]),
        (Spoil::Garbage, "hash") => rig.redis().cmd(&["HSET", key, "abc", "1"]),
        (Spoil::Garbage, "list") => rig.redis().cmd(&["RPUSH", key, "{garbage"]),
        (Spoil::Garbage, "zset") => rig.redis().cmd(&["ZADD", key, "1", "garbage"]),
        (Spoil::Garbage, _) => rig.redis().cmd(&["XADD", key, "*", "garbage", "1"]),
    };
}

#[test]
fn no_bookkeeping_key_can_fail_runs_for_ever() {
    let keys = [
        "precache:runs",
        "precache:match_roots",
        "precache:match_bodies",
        "precache:poll",
        "precache:changes",
        "precache:shrink",
        "precache:commit",
        "precache:warm:due",
        "precache:warm:until",
        "precache:warm:failures",
    ];
    for (n, key) in keys.iter().enumerate() {
        for how in [Spoil::WrongType, Spoil::Garbage] {
            for fresh in [false, true] {
                let what = format!("{key} {how:?}, {}", if fresh { "once" } else { "daemon" });
                let mut rig = start_rig(90 + n as u64, false);
                assert_eq!(rig.run().summary.status, RunStatus::Success);
                spoil(&rig, key, how);
                let expected = churn(&rig);
                let run = if fresh { rig.run_fresh() } else { rig.run() };
                assert_eq!(
                    run.summary.status,
                    RunStatus::Success,
                    "{what}: {:?}",
                    run.summary.error
                );
                assert_eq!(reported(&run), expected, "{what}");
                let last = feed(rig.redis())
                    .pop()
                    .expect("the feed has the run's entry");
                assert_eq!(
                    feed_ids(&last, "individual_matches"),
                    expected.individual_matches,
                    "{what}"
                );
                for again in [rig.run(), rig.run_fresh()] {
                    assert_eq!(
                        again.summary.status,
                        RunStatus::Success,
                        "{what}: {:?}",
                        again.summary.error
                    );
                    assert!(again.changes.unwrap().is_empty(), "{what}");
                }
                assert_cache_is_the_upstream(rig.sim(), rig.redis(), &what);
                let history: usize = redis::cmd("LLEN")
                    .arg("precache:runs")
                    .query(&mut rig.redis().conn())
                    .unwrap();
                assert!(history >= 2, "{what}: the history is kept again");
            }
        }
    }
}

/// How the cache is emptied under a held shrink.
#[derive(Debug, Clone, Copy)]
enum Emptied {
    Flushall,
    /// Redis restarted without persistence.
    Restart,
    /// `precache clear` / `POST /clear`.
    Clear,
}

#[test]
fn a_held_shrink_stays_held_when_the_cache_is_emptied_under_it() {
    for how in [Emptied::Flushall, Emptied::Restart, Emptied::Clear] {
        let mut rig = start_rig(85, false);
        assert_eq!(rig.run().summary.status, RunStatus::Success);
        let full = data_of(rig.redis());
        // Half the roots with matches answer none: held, not written.
        silence_half_the_roots(rig.sim());
        let held = rig.run();
        assert_eq!(held.summary.status, RunStatus::Held, "{how:?}");
        match how {
            Emptied::Flushall => {
                rig.redis().cmd(&["FLUSHALL"]);
            }
            Emptied::Restart => rig.redis().restart(),
            Emptied::Clear => {
                let config = rig.config.clone();
                let services = rig.services();
                precache::daemon::clear(services.runner.store(), &config, None).unwrap();
            }
        }
        let after = rig.run();
        assert_eq!(
            after.summary.status,
            RunStatus::Held,
            "{how:?}: {:?}",
            after.summary
        );
        assert_eq!(data_of(rig.redis()), full, "{how:?}: the full data kept");
        assert_eq!(
            after.summary.shrink,
            ShrinkVerdict::Held {
                seen: 2,
                confirm_runs: 3
            },
            "{how:?}: the count goes on"
        );
        // The third sighting in a row confirms it, as without the flush.
        let third = rig.run();
        assert_eq!(third.summary.status, RunStatus::Success, "{how:?}");
        assert_eq!(third.summary.shrink, ShrinkVerdict::Confirmed { seen: 3 });
    }
}
