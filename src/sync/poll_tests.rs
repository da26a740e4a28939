use super::*;
use crate::model::fixtures::game;
use chrono::NaiveDate;
use serde_json::json;
use std::collections::BTreeSet;

fn settings() -> PollSettings {
    PollSettings {
        live_window: Duration::hours(36),
        active_window: Duration::days(14),
        active_every: 3,
        dormant_every: 20,
        full_sweep_every: 0,
    }
}

fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 26)
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .expect("a valid time")
}

/// A match `offset` from now.
fn at(offset: Duration) -> Match {
    let date = (now() + offset).format("%Y-%m-%dT%H:%M:%S").to_string();
    game(1, 1, &date)
}

fn undated() -> Match {
    Match::from_json(&json!({"matchId": 2, "tournamentId": 1, "matchDate": null})).expect("a match")
}

#[test]
fn the_tier_follows_the_nearest_match_either_side_of_now_edges_included() {
    let s = settings();
    let second = Duration::seconds(1);
    let cases = [
        (Duration::zero(), Tier::Live),
        (s.live_window, Tier::Live),
        (-s.live_window, Tier::Live),
        (s.live_window + second, Tier::Active),
        (-s.live_window - second, Tier::Active),
        (s.active_window, Tier::Active),
        (-s.active_window, Tier::Active),
        (s.active_window + second, Tier::Dormant),
        (-s.active_window - second, Tier::Dormant),
        (Duration::days(400), Tier::Dormant),
        (Duration::days(-400), Tier::Dormant),
    ];
    for (offset, expected) in cases {
        assert_eq!(tier(&[at(offset)], now(), &s), expected, "{offset}");
        // One hotter match makes the whole root hotter, wherever it is.
        let dormant = at(Duration::days(-90));
        assert_eq!(
            tier(&[dormant.clone(), at(offset), dormant], now(), &s),
            expected,
            "{offset} among dormant ones"
        );
    }
    assert_eq!(
        tier(
            &[at(Duration::days(30)), at(Duration::hours(-2))],
            now(),
            &s
        ),
        Tier::Live
    );
}

#[test]
fn a_root_without_matches_is_dormant_and_one_with_only_undated_ones_active() {
    let s = settings();
    assert_eq!(tier(&[], now(), &s), Tier::Dormant);
    assert_eq!(tier(&[undated()], now(), &s), Tier::Active);
    assert_eq!(tier(&[undated(), undated()], now(), &s), Tier::Active);
    // Beside dated matches an undated one does not count.
    assert_eq!(
        tier(&[at(Duration::days(-300)), undated()], now(), &s),
        Tier::Dormant
    );
    assert_eq!(
        tier(&[undated(), at(Duration::days(10))], now(), &s),
        Tier::Active
    );
    assert_eq!(
        tier(&[undated(), at(Duration::hours(1))], now(), &s),
        Tier::Live
    );
}

/// `plan_polls` over `lists` at `now()`.
fn plan_at(
    roots: &[i64],
    lists: &BTreeMap<i64, Vec<Match>>,
    state: &PollState,
    s: &PollSettings,
    full: bool,
) -> PollPlan {
    plan_polls(
        roots,
        |r| match lists.get(&r) {
            Some(list) => HeldList::Answered(list),
            None => HeldList::Nothing,
        },
        |_| false,
        state,
        now(),
        s,
        full,
    )
}

/// Roots 1..=n.
fn roots_of(n: i64) -> Vec<i64> {
    (1..=n).collect()
}

/// Runs `runs` plans in a row with every call answering; returns how many
/// times each root was polled, and the state after.
fn run_many(
    roots: &[i64],
    lists: &BTreeMap<i64, Vec<Match>>,
    mut state: PollState,
    runs: u64,
    s: &PollSettings,
) -> (BTreeMap<i64, u64>, Vec<usize>, PollState) {
    let mut polled: BTreeMap<i64, u64> = BTreeMap::new();
    let mut per_run = Vec::new();
    for _ in 0..runs {
        let plan = plan_at(roots, lists, &state, s, false);
        for root in plan.poll.keys() {
            *polled.entry(*root).or_default() += 1;
        }
        per_run.push(plan.poll.len());
        let answered: Vec<i64> = plan.poll.keys().copied().collect();
        state = after_run(&state, &plan, &answered);
    }
    (polled, per_run, state)
}

#[test]
fn every_root_of_a_tier_is_polled_exactly_once_per_cycle_and_runs_cost_alike() {
    let s = settings();
    for (tier_match, every) in [
        (Some(Duration::days(5)), s.active_every),
        (Some(Duration::days(-200)), s.dormant_every),
        (None, s.dormant_every),
    ] {
        let roots = roots_of(2000);
        let lists: BTreeMap<i64, Vec<Match>> = roots
            .iter()
            .map(|r| (*r, tier_match.map(at).into_iter().collect()))
            .collect();
        // The first run is a full sweep (start-up); then whole cycles.
        let first = plan_at(&roots, &lists, &PollState::default(), &s, true);
        assert_eq!(first.poll.len(), roots.len());
        assert!(first.poll.values().all(|r| *r == Reason::FullSweep));
        let state = after_run(&PollState::default(), &first, &roots);
        for cycles in 1..=3 {
            let (polled, per_run, _) = run_many(&roots, &lists, state.clone(), every * cycles, &s);
            assert_eq!(polled.len(), roots.len(), "every root, every {every}");
            assert!(
                polled.values().all(|n| *n == cycles),
                "each root {cycles} times in {cycles} cycles of {every}"
            );
            // Spread: no run asks much more than its share.
            let share = roots.len() as f64 / every as f64;
            let most = *per_run.iter().max().expect("runs") as f64;
            assert!(most <= share * 1.5 + 3.0, "{per_run:?} (share {share})");
        }
    }
}

#[test]
fn live_roots_every_run_new_roots_at_once_and_failed_ones_again_next_run() {
    let s = settings();
    let lists: BTreeMap<i64, Vec<Match>> = [
        (1, vec![at(Duration::hours(3))]),
        (2, vec![at(Duration::days(-100))]),
    ]
    .into_iter()
    .collect();
    let roots = vec![1, 2];
    let first = plan_at(&roots, &BTreeMap::new(), &PollState::default(), &s, false);
    assert_eq!(first.poll.get(&1), Some(&Reason::New));
    assert_eq!(first.poll.get(&2), Some(&Reason::New));
    let mut state = after_run(&PollState::default(), &first, &[1, 2]);
    assert_eq!(state.last_polled.get(&2), Some(&1));

    // The live root every run; a new root (3) on its first run.
    let roots = vec![1, 2, 3];
    let mut lists = lists;
    for run in 2..=25 {
        let plan = plan_at(&roots, &lists, &state, &s, false);
        assert_eq!(plan.run, run);
        assert_eq!(plan.poll.get(&1), Some(&Reason::Live), "run {run}");
        if run == 2 {
            assert_eq!(plan.poll.get(&3), Some(&Reason::New));
            lists.insert(3, vec![at(Duration::days(-100))]);
        }
        // Root 2's call fails whenever it is asked: asked again next run.
        let answered: Vec<i64> = plan.poll.keys().copied().filter(|r| *r != 2).collect();
        let asked_2 = plan.polls(2);
        state = after_run(&state, &plan, &answered);
        if asked_2 {
            let next = plan_at(&roots, &lists, &state, &s, false);
            assert_eq!(
                next.poll.get(&2),
                Some(&Reason::Retry),
                "a failed root is asked again at once"
            );
            break;
        }
    }
    // Dormant root 2 was asked within its cycle (slot or overdue).
    assert!(state.run <= 1 + s.dormant_every, "run {}", state.run);
}

#[test]
fn a_root_that_heats_up_is_asked_within_its_new_tiers_cycle() {
    let s = settings();
    let roots: Vec<i64> = roots_of(50);
    let cold: BTreeMap<i64, Vec<Match>> = roots
        .iter()
        .map(|r| (*r, vec![at(Duration::days(-100))]))
        .collect();
    let first = plan_at(&roots, &cold, &PollState::default(), &s, true);
    let state = after_run(&PollState::default(), &first, &roots);
    let (_, _, state) = run_many(&roots, &cold, state, 5, &s);
    // Now every root has a match in 10 days: active, every 3 runs; each is
    // asked within 3 runs, not 20.
    let warm: BTreeMap<i64, Vec<Match>> = roots
        .iter()
        .map(|r| (*r, vec![at(Duration::days(10))]))
        .collect();
    let (polled, _, _) = run_many(&roots, &warm, state, s.active_every, &s);
    assert_eq!(polled.len(), roots.len());
}

#[test]
fn full_sweeps_come_every_full_sweep_every_runs_and_gone_roots_are_forgotten() {
    let s = PollSettings {
        full_sweep_every: 4,
        ..settings()
    };
    let roots = roots_of(30);
    let lists: BTreeMap<i64, Vec<Match>> = roots.iter().map(|r| (*r, Vec::new())).collect();
    let mut state = PollState::default();
    for run in 1..=8u64 {
        let plan = plan_at(&roots, &lists, &state, &s, false);
        assert_eq!(plan.full_sweep, run % 4 == 0, "run {run}");
        if plan.full_sweep {
            assert_eq!(plan.poll.len(), roots.len());
        }
        let answered: Vec<i64> = plan.poll.keys().copied().collect();
        state = after_run(&state, &plan, &answered);
    }
    let fewer = roots_of(10);
    let plan = plan_at(&fewer, &lists, &state, &s, false);
    let after = after_run(&state, &plan, &[]);
    assert!(after.last_polled.keys().all(|r| fewer.contains(r)));
    assert_eq!(after.last_polled.len(), 10);
}

#[test]
fn tier_sizes_polled_counts_and_oldest_age() {
    let s = settings();
    let lists: BTreeMap<i64, Vec<Match>> = [
        (1, vec![at(Duration::hours(1))]),
        (2, vec![at(Duration::days(3))]),
        (3, vec![]),
        (4, vec![]),
    ]
    .into_iter()
    .collect();
    let roots = vec![1, 2, 3, 4];
    let state = PollState {
        data_retry: Default::default(),
        run: 10,
        last_polled: [(1, 10), (2, 9), (3, 1), (4, 10)].into_iter().collect(),
        retry: BTreeSet::new(),
    };
    let plan = plan_at(&roots, &lists, &state, &s, false);
    let sizes = plan.tier_sizes();
    assert_eq!(
        sizes,
        TierCounts {
            live: 1,
            active: 1,
            dormant: 2
        }
    );
    assert_eq!(plan.polled_by_tier().get(Tier::Live), 1);
    let age = oldest_poll_age(&state, &plan);
    assert_eq!(
        age,
        TierCounts {
            live: 0,
            active: 1,
            dormant: 9
        }
    );
}

#[test]
fn a_list_that_is_not_its_answer_is_asked_every_run_until_it_is() {
    let s = settings();
    let dormant = vec![at(Duration::days(-100))];
    let roots = roots_of(40);
    let state = PollState {
        data_retry: Default::default(),
        run: 7,
        ..PollState::default()
    };
    let plan = plan_polls(
        &roots,
        |r| {
            if r == 5 {
                HeldList::Unverified(&dormant)
            } else {
                HeldList::Answered(&dormant)
            }
        },
        // Root 6's validators are too old to be sent.
        |r| r == 6,
        &state,
        now(),
        &s,
        false,
    );
    assert!(plan.polls(5));
    assert!(matches!(
        plan.poll.get(&5),
        Some(Reason::Unverified | Reason::Turn)
    ));
    assert!(plan.polls(6), "expired validators: asked whatever its tier");
    assert!(matches!(
        plan.poll.get(&6),
        Some(Reason::Revalidate | Reason::Turn)
    ));
    assert!(
        plan.poll.len() < 10,
        "the others wait for their turn: {plan:?}"
    );
}

#[test]
fn the_state_kept_in_redis_is_the_run_and_the_roots_to_ask_again_only() {
    let state = PollState {
        data_retry: Default::default(),
        run: 1234,
        last_polled: [(1, 1234)].into_iter().collect(),
        retry: BTreeSet::new(),
    };
    assert_eq!(state.to_text(), "1234");
    let back = PollState::from_text("1234").expect("readable");
    assert_eq!(
        (back.run, back.retry.len(), back.last_polled.len()),
        (1234, 0, 0)
    );
    let retrying = PollState {
        retry: [4, -3].into_iter().collect(),
        ..state
    };
    assert_eq!(retrying.to_text(), "1234 -3,4");
    let back = PollState::from_text(&retrying.to_text()).expect("readable");
    assert_eq!((back.run, back.retry), (1234, retrying.retry));
    for garbage in ["", "x", "-1", "12 a", "12 1,,2", "{\"run\":3}"] {
        assert_eq!(PollState::from_text(garbage), None, "{garbage:?}");
    }
}
