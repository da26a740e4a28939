//! The datasets' part of a run's plan (DESIGN.md section 13): each
//! dataset's next state from what the cache holds and what its calls
//! answered, with "less" held as for the seed's lists.

use std::collections::{BTreeMap, HashSet};

use super::shrunk;
use crate::model::dataset::{Asks, DatasetId, DatasetState, Datasets};
use crate::sync::fetch::DataAnswer;

/// What a run makes of the datasets' answers.
pub(super) struct DataPlan {
    pub states: Datasets,
    pub carried: BTreeMap<DatasetId, Vec<i64>>,
    /// Keys kept against the answer, by dataset name (only those with any).
    pub held: BTreeMap<String, Vec<i64>>,
}

/// Each dataset's next state from what the cache holds (`previous`) and
/// what its calls answered (`answered`, by key), in descriptor order (a
/// dataset asked per record of another follows that one's next state).
/// The keys a dataset has now come from `team_ids`, the sports, or the
/// earlier dataset; a key that is gone takes its records with it.
/// `max_fraction`: hold "less" (an empty answer where there were records,
/// a shrink past it); `None` applies it. A record a call answered beside
/// its own stays under that call too (the key holds its first).
pub(super) fn plan_datasets(
    previous: &Datasets,
    answered: &Datasets,
    answers: &[DataAnswer],
    team_ids: &[i64],
    max_fraction: Option<f64>,
) -> DataPlan {
    let mut plan = DataPlan {
        states: Datasets::default(),
        carried: BTreeMap::new(),
        held: BTreeMap::new(),
    };
    for dataset in DatasetId::ALL {
        let old = &previous[dataset];
        let Some(answer) = answers.get(dataset.index()).filter(|a| a.enabled) else {
            plan.states[dataset] = old.clone();
            continue;
        };
        let spec = dataset.spec();
        let new = &answered[dataset].groups;
        let mut held = Vec::new();
        let mut carried = Vec::new();
        let next = if spec.spread {
            let source_ids;
            let keys: &[i64] = match spec.asks {
                Asks::EachTeam => team_ids,
                Asks::EachRecordOf(source) => {
                    source_ids = plan.states[source].ids();
                    &source_ids
                }
                Asks::Once | Asks::EachSport => &answer.asked,
            };
            let mut groups = BTreeMap::new();
            for &key in keys {
                match (new.get(&key), old.groups.get(&key)) {
                    (Some(list), Some(had))
                        if list.is_empty() && !had.is_empty() && max_fraction.is_some() =>
                    {
                        held.push(key);
                        groups.insert(key, had.clone());
                    }
                    (Some(list), _) => {
                        groups.insert(key, list.clone());
                    }
                    (None, Some(had)) => {
                        if answer.failed.binary_search(&key).is_ok() {
                            carried.push(key);
                        }
                        groups.insert(key, had.clone());
                    }
                    (None, None) => {}
                }
            }
            let mut next = DatasetState { groups };
            if let Some(f) = max_fraction
                && shrunk(old.ids().len(), next.ids().len(), f)
            {
                for (key, had) in &old.groups {
                    let now: HashSet<i64> = next
                        .groups
                        .get(key)
                        .map(|l| l.iter().map(|r| r.id).collect())
                        .unwrap_or_default();
                    if had.iter().any(|r| !now.contains(&r.id)) {
                        held.push(*key);
                        next.groups.insert(*key, had.clone());
                    }
                }
            }
            next
        } else if answer.asked.is_empty() {
            old.clone()
        } else if !answer.failed.is_empty() {
            carried = answer.failed.clone();
            old.clone()
        } else {
            // By call (a reload regroups the key's list under 0: only
            // the order of the records counts, and it is the same).
            let next = DatasetState {
                groups: new.clone(),
            };
            let less = |f: f64| {
                (next.is_empty() && !old.is_empty()) || shrunk(old.ids().len(), next.ids().len(), f)
            };
            if max_fraction.is_some_and(less) {
                held = answer.asked.clone();
                old.clone()
            } else {
                next
            }
        };
        held.sort_unstable();
        held.dedup();
        if !held.is_empty() {
            plan.held.insert(spec.name.to_string(), held);
        }
        if !carried.is_empty() {
            plan.carried.insert(dataset, carried);
        }
        plan.states[dataset] = next;
    }
    plan
}
