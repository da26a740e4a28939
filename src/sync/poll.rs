//! Which root tournaments a run asks for their matches (DESIGN.md section
//! 10): each root's heat (`Tier`) from the dates of the matches we hold,
//! and from the tiers, the run number and each root's last poll, the roots
//! polled this run. Pure: the snapshot, the time and the state come in, a
//! plan goes out; nothing here reads a clock, the network or Redis.
//!
//! Why a root is polled, in order: the run is a full sweep (start-up,
//! `once --full`, `sync.adaptive = false`, every `full_sweep_every` runs);
//! the cache holds nothing for it (new); it is `live`; its tier's turn has
//! come (its slot in the tier's cycle, spread by a hash of its id so every
//! run costs about the same); its last call failed; or the list we hold is
//! not exactly what its last answer said. A slot comes once in
//! every cycle, so a root is asked at least every `every` runs of its
//! tier, also right after it moved there from a slower one.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, NaiveDateTime};
use serde::Serialize;

use crate::config::SyncConfig;
use crate::model::Match;
use crate::model::dataset::DatasetId;
pub use crate::report::Tier;
use crate::report::{PollReport, TierCounts};
use crate::rng::Rng;

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
    pub fn from_config(sync: &SyncConfig) -> PollSettings {
        PollSettings {
            live_window: Duration::hours(sync.live_window_hours as i64),
            active_window: Duration::days(sync.active_window_days as i64),
            active_every: sync.active_every,
            dormant_every: sync.dormant_every,
            full_sweep_every: sync.full_sweep_every,
        }
    }

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
/// The dated matches decide. A root whose matches are all undated is
/// `active`: its schedule is still to come, and may come any day. An
/// undated match beside dated ones says nothing about the root's heat (a
/// match not yet rescheduled, or one of last season that never was).
pub fn tier(matches: &[Match], now: NaiveDateTime, settings: &PollSettings) -> Tier {
    let mut hottest = None;
    let mut undated = false;
    for m in matches {
        let Some(date) = m.date else {
            undated = true;
            continue;
        };
        let distance = (date - now).abs();
        let tier = if distance <= settings.live_window {
            return Tier::Live;
        } else if distance <= settings.active_window {
            Tier::Active
        } else {
            Tier::Dormant
        };
        hottest = Some(hottest.map_or(tier, |h: Tier| h.min(tier)));
    }
    match hottest {
        Some(tier) => tier,
        None if undated => Tier::Active,
        None => Tier::Dormant,
    }
}

/// What polling remembers between runs. `run` and `retry` are kept in
/// Redis (`precache:poll`, [`PollState::to_text`]), so `once` polls as the
/// daemon would; each root's last poll is kept in the daemon's memory
/// only, for the age metric: which roots a run asks follows from the run
/// number, the tiers and the slots, so it need not be written every run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollState {
    /// The number of the last run that polled (0 before the first).
    pub run: u64,
    /// For each root, the number of the last run whose call for it answered.
    pub last_polled: BTreeMap<i64, u64>,
    /// Roots asked again on the next run: their last call failed, or the
    /// run's answers did not reach the cache. (A root whose answer was held
    /// needs no entry: its list is not its answer, so it is `Unverified`
    /// and asked every run until the shrink is confirmed or gone.)
    pub retry: BTreeSet<i64>,
    /// Per dataset, the call keys asked again on the next run, for the
    /// same reasons (DESIGN.md section 13).
    pub data_retry: BTreeMap<DatasetId, BTreeSet<i64>>,
}

impl PollState {
    /// A dataset's keys to ask again.
    pub fn data_retry(&self, dataset: DatasetId) -> &BTreeSet<i64> {
        static NONE: BTreeSet<i64> = BTreeSet::new();
        self.data_retry.get(&dataset).unwrap_or(&NONE)
    }

    /// As kept in Redis: the run number, then the roots to ask again if
    /// any, then each dataset's keys to ask again (`"1234"`, `"1234 5,6"`,
    /// `"1234 5,6 venue_details=7,8"`). Terse, as a `once` that changed
    /// nothing sends Redis little else.
    pub fn to_text(&self) -> String {
        let mut text = self.run.to_string();
        let list =
            |ids: &BTreeSet<i64>| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        if !self.retry.is_empty() {
            text.push(' ');
            text.push_str(&list(&self.retry));
        }
        for (dataset, keys) in self.data_retry.iter().filter(|(_, k)| !k.is_empty()) {
            text.push_str(&format!(" {dataset}={}", list(keys)));
        }
        text
    }

    /// The state [`PollState::to_text`] wrote; `None` for anything else.
    pub fn from_text(text: &str) -> Option<PollState> {
        let ids = |list: &str| -> Option<BTreeSet<i64>> {
            list.split(',').map(|id| id.parse().ok()).collect()
        };
        let mut parts = text.split_whitespace();
        let mut state = PollState {
            run: parts.next()?.parse().ok()?,
            ..PollState::default()
        };
        for part in parts {
            match part.split_once('=') {
                None if state.retry.is_empty() && state.data_retry.is_empty() => {
                    state.retry = ids(part)?
                }
                None => return None,
                Some((name, list)) => {
                    state
                        .data_retry
                        .insert(DatasetId::by_name(name)?, ids(list)?);
                }
            }
        }
        Some(state)
    }
}

/// What the cache holds for a root, as polling needs to know it.
#[derive(Debug, Clone, Copy)]
pub enum HeldList<'m> {
    /// Nothing: the root is new to us (or its list was lost).
    Nothing,
    /// The list its last answer read to.
    Answered(&'m [Match]),
    /// A list that is not exactly what its last answer said: a lower root
    /// took some of its matches (dedup), or it was carried over, held, or
    /// reloaded without the stamp of its body. Asked every run until it is
    /// again, so skipping it never keeps a list no answer gave.
    Unverified(&'m [Match]),
}

impl<'m> HeldList<'m> {
    fn matches(self) -> &'m [Match] {
        match self {
            HeldList::Nothing => &[],
            HeldList::Answered(m) | HeldList::Unverified(m) => m,
        }
    }
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
    Unverified,
    /// Its validators are too old to trust a 304 (`sync.max_validator_age_secs`).
    Revalidate,
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

    /// The roots not asked this run, sorted.
    pub fn rested(&self) -> Vec<i64> {
        self.tiers
            .keys()
            .filter(|root| !self.polls(**root))
            .copied()
            .collect()
    }

    /// Roots per tier.
    pub fn tier_sizes(&self) -> TierCounts {
        count_by_tier(self.tiers.values().copied())
    }

    /// Polled roots per tier.
    pub fn polled_by_tier(&self) -> TierCounts {
        count_by_tier(
            self.poll
                .keys()
                .filter_map(|root| self.tiers.get(root).copied()),
        )
    }

    /// The run's report, `before` being the state it was planned from.
    pub fn report(&self, before: &PollState) -> PollReport {
        PollReport {
            full_sweep: self.full_sweep,
            tiers: self.tier_sizes(),
            polled: self.polled_by_tier(),
            oldest_poll_age_runs: oldest_poll_age(before, self),
        }
    }
}

fn count_by_tier(tiers: impl Iterator<Item = Tier>) -> TierCounts {
    let mut counts = TierCounts::default();
    for tier in tiers {
        *counts.get_mut(tier) += 1;
    }
    counts
}

/// The slot of `root` in a cycle of `every` runs: a hash of its id, so the
/// roots of a tier are spread evenly over the cycle whatever their ids.
pub fn slot(root: i64, every: u64) -> u64 {
    Rng::new(root as u64).next_u64() % every.max(1)
}

/// Plans the polls of the run after `state`. `roots` are the root
/// tournaments this run's tournaments call named; `held` tells what the
/// cache holds for a root; `expired`, whether its validators are too old
/// to be sent; `full` asks for a full sweep (start-up, `once --full`,
/// adaptive polling off).
pub fn plan_polls<'m>(
    roots: &[i64],
    held: impl Fn(i64) -> HeldList<'m>,
    expired: impl Fn(i64) -> bool,
    state: &PollState,
    now: NaiveDateTime,
    settings: &PollSettings,
    full: bool,
) -> PollPlan {
    // Wrapping: a run number read back at u64::MAX must still move on,
    // or the same slots would come up forever.
    let run = state.run.wrapping_add(1);
    let full_sweep =
        full || (settings.full_sweep_every > 0 && run.is_multiple_of(settings.full_sweep_every));
    let mut plan = PollPlan {
        run,
        full_sweep,
        ..PollPlan::default()
    };
    for &root in roots {
        let list = held(root);
        let tier = tier(list.matches(), now, settings);
        plan.tiers.insert(root, tier);
        let every = settings.every(tier);
        let reason = match list {
            _ if full_sweep => Some(Reason::FullSweep),
            HeldList::Nothing => Some(Reason::New),
            _ if tier == Tier::Live => Some(Reason::Live),
            _ if slot(root, every) == run % every => Some(Reason::Turn),
            _ if state.retry.contains(&root) => Some(Reason::Retry),
            HeldList::Unverified(_) => Some(Reason::Unverified),
            _ if expired(root) => Some(Reason::Revalidate),
            HeldList::Answered(_) => None,
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
    let mut retry = BTreeSet::new();
    for root in plan.poll.keys() {
        if answered.contains(root) {
            last_polled.insert(*root, plan.run);
        } else {
            retry.insert(*root);
        }
    }
    PollState {
        run: plan.run,
        last_polled,
        retry,
        data_retry: BTreeMap::new(),
    }
}

/// Runs since each tier's least recently polled root was polled, at the
/// run after `state` (for the oldest-poll-age metric).
pub fn oldest_poll_age(state: &PollState, plan: &PollPlan) -> TierCounts {
    let mut oldest = TierCounts::default();
    for (root, tier) in &plan.tiers {
        let age = match state.last_polled.get(root) {
            Some(last) => state.run.saturating_sub(*last),
            None => continue,
        };
        let entry = oldest.get_mut(*tier);
        *entry = (*entry).max(age);
    }
    oldest
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
