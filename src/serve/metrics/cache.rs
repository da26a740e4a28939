//! The families that describe what the cache holds: each data key's size,
//! and one info series per valid season and per tournament (thousands at
//! norway scale, so rewritten only when those lists change).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{IntGauge, IntGaugeVec};

use super::Families;
use crate::model::Snapshot;
use crate::model::changes::Category;
use crate::report::RunReport;

pub(super) struct CacheFamilies {
    cached_data_size_bytes: IntGaugeVec,
    valid_seasons_count: IntGauge,
    valid_seasons_info: IntGaugeVec,
    tournaments_in_season_count: IntGauge,
    tournaments_in_season_info: IntGaugeVec,
    /// Whether the info series have been filled once.
    recorded: AtomicBool,
}

impl CacheFamilies {
    pub fn new(f: &Families) -> Result<CacheFamilies, prometheus::Error> {
        Ok(CacheFamilies {
            cached_data_size_bytes: f.gauge_vec(
                "precache_cached_data_size_bytes",
                "Size of each cached data key in Redis.",
                &["data_type"],
            )?,
            valid_seasons_count: f.gauge(
                "precache_valid_seasons_count",
                "Valid seasons in the cache.",
            )?,
            valid_seasons_info: f.gauge_vec(
                "precache_valid_seasons_info",
                "One series per valid season in the cache (value 1).",
                &[
                    "season_id",
                    "season_name",
                    "season_year",
                    "sport_id",
                    "sport_name",
                ],
            )?,
            tournaments_in_season_count: f.gauge(
                "precache_tournaments_in_season_count",
                "Tournaments of the valid seasons in the cache.",
            )?,
            tournaments_in_season_info: f.gauge_vec(
                "precache_tournaments_in_season_info",
                "One series per tournament in the cache (value 1).",
                &[
                    "tournament_id",
                    "tournament_name",
                    "season_id",
                    "sport_id",
                    "is_root",
                ],
            )?,
            recorded: AtomicBool::new(false),
        })
    }

    /// `snapshot`: what the cache holds after the run; `sizes`: bytes of
    /// each data key in Redis.
    pub fn record(
        &self,
        report: &RunReport,
        snapshot: Option<&Snapshot>,
        sizes: &BTreeMap<String, u64>,
    ) {
        let summary = &report.summary;
        let listed_changed = [Category::ValidSeasons, Category::TournamentsInSeason]
            .iter()
            .any(|c| summary.changes.get(*c) != Some(0));
        if let Some(snapshot) = snapshot.filter(|_| summary.status.is_ok())
            && (listed_changed || !self.recorded.swap(true, Ordering::Relaxed))
        {
            self.record_lists(snapshot);
        }
        for (data_type, bytes) in sizes {
            self.cached_data_size_bytes
                .with_label_values(&[data_type])
                .set(*bytes as i64);
        }
    }

    fn record_lists(&self, snapshot: &Snapshot) {
        let id = |id: Option<i64>| id.map(|id| id.to_string()).unwrap_or_default();
        replace_info(
            &self.valid_seasons_count,
            &self.valid_seasons_info,
            snapshot.valid_seasons.iter().map(|s| {
                let year = s.from_year.map(|y| y.to_string()).unwrap_or_default();
                [
                    s.id.to_string(),
                    s.name.clone(),
                    year,
                    id(s.sport_id),
                    s.sport_name.clone(),
                ]
            }),
        );
        replace_info(
            &self.tournaments_in_season_count,
            &self.tournaments_in_season_info,
            snapshot.tournaments.iter().map(|t| {
                let root = if t.is_root() { "true" } else { "false" };
                [
                    t.id.to_string(),
                    t.name.clone(),
                    id(t.season_id),
                    id(t.sport_id),
                    root.into(),
                ]
            }),
        );
    }
}

/// Replaces an info family (one series of value 1 per item) and its count.
fn replace_info(count: &IntGauge, info: &IntGaugeVec, rows: impl Iterator<Item = [String; 5]>) {
    info.reset();
    let mut n = 0;
    for labels in rows {
        info.with_label_values(&labels.each_ref().map(String::as_str))
            .set(1);
        n += 1;
    }
    count.set(n);
}
