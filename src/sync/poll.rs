//! Which root tournaments a run asks for their matches (DESIGN.md section
//! 10): each root's heat (`Tier`) from the dates of the matches we hold,
//! and from the tiers, the run number and each root's last poll, the roots
//! polled this run. Pure: the snapshot, the time and the state come in, a
//! plan goes out; nothing here reads a clock, the network or Redis.
//!
//! Why a root is polled, in order: the run is a full sweep (start-up,
//! `once --full`, `sync.adaptive = false`, every `full_sweep_every` runs);
//! the root was never polled (new); it is `live`; its tier's turn has come
//! (its slot in the tier's cycle, spread by a hash of its id so every run
//! costs about the same); or its last call failed. A slot comes once in
//! every cycle, so a root is asked at least every `every` runs of its
//! tier, also right after it moved there from a slower one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDateTime};
use serde::Serialize;

use crate::model::Match;
use crate::rng::Rng;

/// How hot a root is, by the dates of its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A match within `live_window` of now: polled every run.
    Live,
    /// A match within `active_window`, or a match without a date: every
    /// `active_every` runs.
    Active,
    /// Everything else, including a root without matches: every
    /// `dormant_every` runs.
    Dormant,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Live, Tier::Active, Tier::Dormant];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Live => "live",
            Tier::Active => "active",
            Tier::Dormant => "dormant",
        }
    }
}

/// The knobs of `[sync]` that polling reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    /// `sync.live_window_hours`, either side of now.
    pub live_window: Duration,
    /// `sync.active_window_days`, either side of now.
    pub active_window: Duration,
    /// `sync.active_every` runs (≥ 1).
    pub active_every: u64,
    /// `sync.dormant_every` runs (≥ 1).
    pub dormant_every: u64,
    /// `sync.full_sweep_every` runs; 0 = never.
    pub full_sweep_every: u64,
}

impl PollSettings {
    /// Runs between two polls of a root of `tier`.
    pub fn every(&self, tier: Tier) -> u64 {
        match tier {
            Tier::Live => 1,
            Tier::Active => self.active_every.max(1),
            Tier::Dormant => self.dormant_every.max(1),
        }
    }
}

/// The tier of a root whose matches are `matches`, at `now` (the clock
/// the match dates are in).
///
/// A match without a date counts as `active`: it is usually one not yet
/// scheduled, whose date and teams are still to come, so it is asked
/// about more often than a finished one, though not every run.
pub fn tier(matches: &[Match], now: NaiveDateTime, settings: &PollSettings) -> Tier {
    let mut hottest = Tier::Dormant;
    for m in matches {
        let tier = match m.date {
            None => Tier::Active,
            Some(date) => {
                let distance = (date - now).abs();
                if distance <= settings.live_window {
                    return Tier::Live;
                } else if distance <= settings.active_window {
                    Tier::Active
                } else {
                    Tier::Dormant
                }
            }
        };
        hottest = hottest.min(tier);
    }
    hottest
}

/// What polling remembers between runs (kept in Redis, so `once` polls as
/// the daemon would).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PollState {
    /// The number of the last run that polled (0 before the first).
    pub run: u64,
    /// For each root, the number of the last run whose call for it answered.
    pub last_polled: BTreeMap<i64, u64>,
    /// Roots whose last call failed: asked again on the next run.
    #[serde(default)]
    pub failed: BTreeSet<i64>,
}

/// Why a run polls a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    FullSweep,
    New,
    Live,
    Turn,
    Retry,
}

/// The roots one run polls, and the tier of every root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollPlan {
    /// This run's number.
    pub run: u64,
    pub full_sweep: bool,
    /// Every root of the run and its tier.
    pub tiers: BTreeMap<i64, Tier>,
    /// The roots to ask, with why.
    pub poll: BTreeMap<i64, Reason>,
}

impl PollPlan {
    pub fn polls(&self, root: i64) -> bool {
        self.poll.contains_key(&root)
    }

    /// Roots per tier.
    pub fn tier_sizes(&self) -> BTreeMap<Tier, usize> {
        count_by_tier(self.tiers.values().copied())
    }

    /// Polled roots per tier.
    pub fn polled_by_tier(&self) -> BTreeMap<Tier, usize> {
        count_by_tier(
            self.poll
                .keys()
                .filter_map(|root| self.tiers.get(root).copied()),
        )
    }
}

fn count_by_tier(tiers: impl Iterator<Item = Tier>) -> BTreeMap<Tier, usize> {
    let mut counts: BTreeMap<Tier, usize> = Tier::ALL.iter().map(|t| (*t, 0)).collect();
    for tier in tiers {
        *counts.entry(tier).or_default() += 1;
    }
    counts
}

/// The slot of `root` in a cycle of `every` runs: a hash of its id, so the
/// roots of a tier are spread evenly over the cycle whatever their ids.
pub fn slot(root: i64, every: u64) -> u64 {
    Rng::new(root as u64).next_u64() % every.max(1)
}

/// Plans the polls of the run after `state`. `roots` are the root
/// tournaments this run's tournaments call named; `matches_of` gives the
/// matches we hold for a root (none for a new one); `full` asks for a
/// full sweep (start-up, `once --full`, adaptive polling off).
pub fn plan_polls<'m>(
    roots: &[i64],
    matches_of: impl Fn(i64) -> Option<&'m [Match]>,
    state: &PollState,
    now: NaiveDateTime,
    settings: &PollSettings,
    full: bool,
) -> PollPlan {
    let run = state.run.saturating_add(1);
    let full_sweep =
        full || (settings.full_sweep_every > 0 && run.is_multiple_of(settings.full_sweep_every));
    let mut plan = PollPlan {
        run,
        full_sweep,
        ..PollPlan::default()
    };
    for &root in roots {
        let tier = tier(matches_of(root).unwrap_or_default(), now, settings);
        plan.tiers.insert(root, tier);
        let every = settings.every(tier);
        let reason = match state.last_polled.get(&root) {
            _ if full_sweep => Some(Reason::FullSweep),
            None => Some(Reason::New),
            Some(_) if tier == Tier::Live => Some(Reason::Live),
            Some(_) if slot(root, every) == run % every => Some(Reason::Turn),
            Some(_) if state.failed.contains(&root) => Some(Reason::Retry),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            plan.poll.insert(root, reason);
        }
    }
    plan
}

/// The state after a run of `plan` in which the calls for `answered`
/// answered (a 304 counts: the upstream was asked). Roots the run no longer
/// has are forgotten; a root whose call failed keeps its last poll and is
/// asked again on the next run.
pub fn after_run(state: &PollState, plan: &PollPlan, answered: &[i64]) -> PollState {
    let mut last_polled: BTreeMap<i64, u64> = state
        .last_polled
        .iter()
        .filter(|(root, _)| plan.tiers.contains_key(root))
        .map(|(root, run)| (*root, *run))
        .collect();
    let answered: BTreeSet<i64> = answered.iter().copied().collect();
    let mut failed = BTreeSet::new();
    for root in plan.poll.keys() {
        if answered.contains(root) {
            last_polled.insert(*root, plan.run);
        } else {
            failed.insert(*root);
        }
    }
    PollState {
        run: plan.run,
        last_polled,
        failed,
    }
}

/// Runs since each tier's least recently polled root was polled, at the
/// run after `state` (for the oldest-poll-age metric).
pub fn oldest_poll_age(state: &PollState, plan: &PollPlan) -> BTreeMap<Tier, u64> {
    let mut oldest: BTreeMap<Tier, u64> = Tier::ALL.iter().map(|t| (*t, 0)).collect();
    for (root, tier) in &plan.tiers {
        let age = match state.last_polled.get(root) {
            Some(last) => state.run.saturating_sub(*last),
            None => continue,
        };
        let entry = oldest.entry(*tier).or_default();
        *entry = (*entry).max(age);
    }
    oldest
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
