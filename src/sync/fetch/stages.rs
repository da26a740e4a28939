//! The fetch's stages, in the order a run asks (DESIGN.md sections 3, 10
//! and 13): seasons, the valid seasons' tournaments, the root tournaments'
//! matches as adaptive polling plans them, then each dataset's due keys.
//! Each adds what it got to the run's [`Fetched`] and says, as a typed
//! [`FetchFailure`], when the run cannot go on.

use std::collections::{BTreeMap, HashSet};

use super::call::{Answered, Asker, FailedCall, ListCall, MATCHES, SEASONS, TOURNAMENTS};
use super::call::{unconditional, unknown};
use super::{DataAnswer, FetchFailure, FetchSettings, Fetched, Known, Polled, UndatedSeason};
use super::{Validated, poll};
use crate::model::bodies::{BodyStamp, list_digest};
use crate::model::dataset::{self, Asks, DatasetId, DatasetState};
use crate::model::request::ApiRequest;
use crate::model::{Keyed, Match};
use crate::report::RunStatus;
use crate::sync::poll::{PollPlan, PollState};

/// A shutdown stopped a call: the run cannot tell what the upstream holds.
pub(super) fn not_stopped(failed: &[FailedCall]) -> Result<(), FetchFailure> {
    match failed.iter().any(FailedCall::cancelled) {
        true => Err(FetchFailure::Cancelled),
        false => Ok(()),
    }
}

/// Any failed seasons or tournaments call fails the run: without its
/// answer the run cannot know which tournaments exist.
fn every_call_answered(what: &'static str, failed: &[FailedCall]) -> Result<(), FetchFailure> {
    not_stopped(failed)?;
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(FetchFailure::Listing {
            what,
            first: first.clone(),
        }),
    }
}

/// Stage 1: seasons for every sport and year; the first of an id counts.
pub(super) fn seasons(
    asker: Asker,
    settings: &FetchSettings,
    out: &mut Fetched,
) -> Result<(), FetchFailure> {
    let years_and_sports: Vec<(i32, i64)> = settings
        .years
        .clone()
        .flat_map(|year| settings.sport_ids.iter().map(move |sport| (year, *sport)))
        .collect();
    out.api_calls.seasons = years_and_sports.len();
    let request = |(year, sport): &(i32, i64)| ApiRequest::seasons(*year, *sport);
    let (answered, _) = asker.stage(
        years_and_sports,
        request,
        &SEASONS,
        unconditional,
        unknown,
        &mut out.failed_calls,
    );
    every_call_answered("seasons", &out.failed_calls)?;
    let mut seen = HashSet::new();
    for season in answered.into_iter().flat_map(|(_, a)| a.records) {
        if !seen.insert(season.id) {
            continue;
        }
        match season.from_year {
            Some(year) if year >= settings.first_year => out.snapshot.valid_seasons.push(season),
            Some(_) => {}
            None => out.undated_seasons.push(UndatedSeason {
                id: season.id,
                date_from: season.date_from_raw(),
                name: season.name,
            }),
        }
    }
    Ok(())
}

/// Stage 2: tournaments of each valid season; the first of an id counts.
pub(super) fn tournaments(asker: Asker, out: &mut Fetched) -> Result<(), FetchFailure> {
    let season_ids: Vec<i64> = out.snapshot.valid_seasons.iter().map(|s| s.id).collect();
    out.api_calls.tournament_season = season_ids.len();
    let request = |id: &i64| ApiRequest::tournament_season(*id);
    let (answered, _) = asker.stage(
        season_ids,
        request,
        &TOURNAMENTS,
        unconditional,
        unknown,
        &mut out.failed_calls,
    );
    every_call_answered("tournaments", &out.failed_calls)?;
    let mut seen = HashSet::new();
    for (season_id, Answered { records, .. }) in answered {
        if records.is_empty() {
            out.empty_seasons.push(season_id);
        }
        out.snapshot
            .tournaments
            .extend(records.into_iter().filter(|t| seen.insert(t.id)));
    }
    Ok(())
}

/// Which roots a run asks for their matches, and the held lists of those
/// it does not.
struct MatchCalls<'a> {
    plan: PollPlan,
    before: PollState,
    asked: Vec<i64>,
    /// Roots not asked this run: each keeps the list, stamp and validators
    /// it has. It is not a change and not a carry-over.
    resting: Vec<(i64, &'a Vec<Match>, BodyStamp)>,
}

/// The validators that may be sent for `root`: those of the body the
/// cache's list came from.
fn sendable<'a>(known: &Known<'a>, root: i64) -> Option<&'a Validated> {
    let held = known.validators.get(&root)?;
    (known.bodies.0.get(&root)?.body == held.body).then_some(held)
}

fn plan_match_calls<'a>(
    settings: &FetchSettings,
    known: &Known<'a>,
    root_ids: Vec<i64>,
) -> MatchCalls<'a> {
    let polling = &settings.polling;
    let before = known.poll.cloned().unwrap_or_default();
    // A root whose validators expired is asked this run, whatever its
    // tier, so an ETag that hides an edit costs at most the age limit and
    // an interval.
    let expired = |root: i64| {
        sendable(known, root).is_some_and(|v| !v.fresh(settings.now, settings.max_validator_age))
    };
    let plan = poll::plan_polls(
        &root_ids,
        |root| known.held(root),
        expired,
        &before,
        polling.now,
        &polling.settings,
        polling.full_sweep || !polling.adaptive || known.poll.is_none() || known.sweep,
    );
    // The plan asks every root without a list and a stamp; one that still
    // lacks them is asked all the same.
    let (mut asked, mut resting) = (Vec::new(), Vec::new());
    for root in root_ids {
        let held = known.snapshot.matches_by_root.get(&root);
        match (plan.polls(root), held, known.bodies.0.get(&root)) {
            (false, Some(list), Some(stamp)) => resting.push((root, list, *stamp)),
            _ => asked.push(root),
        }
    }
    MatchCalls {
        plan,
        before,
        asked,
        resting,
    }
}

/// Stage 3: matches of each root tournament the poll plan asks; a match
/// under two roots counts under the lower one (`Snapshot::dedup_matches`).
pub(super) fn matches(
    asker: Asker,
    settings: &FetchSettings,
    known: &Known,
    out: &mut Fetched,
) -> Result<(), FetchFailure> {
    let root_ids: Vec<i64> = out.snapshot.root_tournaments().map(|t| t.id).collect();
    let MatchCalls {
        plan,
        before,
        asked,
        resting,
    } = plan_match_calls(settings, known, root_ids);
    let total_roots = asked.len();
    out.api_calls.tournament_matches = total_roots;
    let (answered, failed) = asker.stage(
        asked,
        |id: &i64| ApiRequest::tournament_matches(*id),
        &MATCHES,
        // Only validators of the body the cache's list came from, and not
        // older than the age limit: a 304 then means exactly that list.
        |root| {
            let held = sendable(known, *root)?;
            held.fresh(settings.now, settings.max_validator_age)
                .then(|| (held.body, held.validators.clone()))
        },
        |root, body| known.bodies.reuse(known.snapshot, *root, body),
        &mut out.failed_calls,
    );
    let asked_ok: Vec<i64> = answered.iter().map(|(root, _)| *root).collect();
    let after = poll::after_run(&before, &plan, &asked_ok);
    let mut unwritten = poll::after_run(&before, &plan, &[]);
    unwritten.data_retry = before.data_retry.clone();
    out.polled = Some(Polled {
        plan,
        before,
        after,
        unwritten,
    });
    for (root, list, stamp) in resting {
        if let Some(validated) = known.validators.get(&root) {
            out.validators.insert(root, validated.clone());
        }
        out.bodies.0.insert(root, stamp);
        out.snapshot.matches_by_root.insert(root, list.clone());
    }
    keep_match_answers(settings, known, answered, out);
    out.failed_roots = failed;
    if out.failed_roots.is_empty() {
        return Ok(());
    }
    // Calls a shutdown stopped fail the fetch at its end (`Cancelled`),
    // after the datasets' due keys are noted to be asked again.
    let stopped = out.failed_calls.iter().any(FailedCall::cancelled);
    if !stopped && out.failed_roots.len() as f64 / total_roots as f64 > settings.max_failed_fraction
    {
        return Err(FetchFailure::TooManyMatchCalls {
            failed: out.failed_roots.len(),
            asked: total_roots,
            max_fraction: settings.max_failed_fraction,
            first: out.failed_calls[0].clone(),
        });
    }
    out.status = RunStatus::Degraded;
    Ok(())
}

/// The answered roots' lists, stamps and validators, into the run's result.
fn keep_match_answers(
    settings: &FetchSettings,
    known: &Known,
    answered: Vec<(i64, Answered<Match>)>,
    out: &mut Fetched,
) {
    // Stamped before dedup: a stamp describes the list as its body reads.
    for (root, answer) in &answered {
        let stamp = match known.bodies.0.get(root) {
            Some(stamp) if answer.reused => *stamp,
            _ => BodyStamp {
                body: answer.body,
                list: list_digest(&answer.records),
            },
        };
        out.bodies.0.insert(*root, stamp);
        if let Some(validators) = &answer.validators {
            let plain_at = match known.validators.get(root) {
                Some(held) if answer.not_modified => held.plain_at,
                _ => settings.now,
            };
            let validated = Validated {
                body: answer.body,
                validators: validators.clone(),
                plain_at,
            };
            out.validators.insert(*root, validated);
        }
        out.not_modified += usize::from(answer.not_modified);
    }
    out.snapshot.matches_by_root.extend(
        answered
            .into_iter()
            .map(|(root, answer)| (root, answer.records)),
    );
    out.snapshot.dedup_matches();
}

/// Stage 4: the datasets, in descriptor order (DESIGN.md section 13). A
/// failed call degrades the run and its key is asked again next run.
pub(super) fn datasets(asker: Asker, settings: &FetchSettings, known: &Known, out: &mut Fetched) {
    let mut team_ids = out.snapshot.team_ids();
    for root in &out.failed_roots {
        if let Some(list) = known.snapshot.matches_by_root.get(root) {
            team_ids.extend(list.iter().flat_map(Match::team_ids));
        }
    }
    team_ids.sort_unstable();
    team_ids.dedup();
    let before = out
        .polled
        .as_ref()
        .map(|p| p.before.clone())
        .unwrap_or_default();
    let run = out.polled.as_ref().map_or(before.run, |p| p.plan.run);
    let mut data_retry = BTreeMap::new();
    for dataset in DatasetId::ALL {
        let Some(every_runs) = settings.datasets[dataset.index()] else {
            continue;
        };
        out.data[dataset.index()].enabled = true;
        let spec = dataset.spec();
        let keys: Vec<i64> = match spec.asks {
            Asks::Once => vec![0],
            Asks::EachSport => settings.sport_ids.clone(),
            Asks::EachTeam => team_ids.clone(),
            Asks::EachRecordOf(source) => {
                if out.data[source.index()].complete() {
                    out.snapshot.datasets[source].ids()
                } else {
                    known.snapshot.datasets[source].ids()
                }
            }
        };
        let due = if known.regroup.contains(&dataset) {
            keys
        } else {
            let held = &known.snapshot.datasets[dataset];
            let retry = before.data_retry(dataset);
            dataset::due_keys(spec, every_runs, run, &keys, held, retry)
        };
        out.api_calls.datasets[dataset.index()] = due.len();
        if due.is_empty() {
            continue;
        }
        let failed = ask_dataset(asker, dataset, due, out);
        if !failed.is_empty() {
            out.status = RunStatus::Degraded;
            data_retry.insert(dataset, failed.iter().copied().collect());
        }
    }
    if let Some(polled) = &mut out.polled {
        polled.after.data_retry = data_retry;
        polled.unwritten = polled.unwritten(&out.data);
    }
}

/// Asks `dataset`'s `due` keys; its answer goes into the run's snapshot.
/// Returns the keys whose call failed.
fn ask_dataset(asker: Asker, dataset: DatasetId, due: Vec<i64>, out: &mut Fetched) -> Vec<i64> {
    let spec = dataset.spec();
    let list = ListCall::<Keyed> {
        body_keys: spec.body_keys,
        empty_is_empty_list: false,
        reader: spec,
    };
    let first_failure = out.failed_calls.len();
    let (answered, failed) = asker.stage(
        due.clone(),
        |key: &i64| ApiRequest::dataset(dataset, *key),
        &list,
        unconditional,
        unknown,
        &mut out.failed_calls,
    );
    let mut groups: BTreeMap<i64, Vec<Keyed>> =
        answered.into_iter().map(|(k, a)| (k, a.records)).collect();
    // A record that does not exist is an empty answer, not a failure
    // retried every run (`stage` adds the failed calls in key order).
    let calls = out.failed_calls.split_off(first_failure);
    let mut still_failed = Vec::new();
    for (key, call) in failed.into_iter().zip(calls) {
        if call.not_found() && call.call_type.not_found_means_none() {
            groups.insert(key, Vec::new());
        } else {
            still_failed.push(key);
            out.failed_calls.push(call);
        }
    }
    // The snapshot says what the upstream answered (a dry run without
    // a cache reports it); what the cache holds next is the plan's.
    out.snapshot.datasets[dataset] = DatasetState { groups };
    out.data[dataset.index()] = DataAnswer {
        enabled: true,
        asked: due,
        failed: still_failed.clone(),
    };
    still_failed
}
