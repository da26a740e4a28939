//! The seed's debug files under `{logs.dir}/precache_debug_logs/`, written by
//! their own thread so a slow disk never delays a run.
//!
//! Names and shapes follow the seed's "Debug Logging": the API-call log, the
//! latest run's stats, the run history, and the `*_latest.json` snapshots of
//! cached and fetched data. Each file is replaced atomically (temp file,
//! then rename), so a reader never sees half a file.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;

use serde::Serialize;

use crate::model::dataset::{DatasetId, then_each_dataset};

use crate::model::Snapshot;
use crate::model::calls::CallRecord;
use crate::report::RunStats;

pub const DIR_NAME: &str = "precache_debug_logs";
pub const RUN_CALLS: &str = "precache_run_calls.json";
pub const RUN_STATS: &str = "precache_run_stats.json";
pub const RUN_HISTORY: &str = "precache_run_history.json";

/// Snapshot file stems: cached (`{stem}_latest.json`) and fetched (`{stem}_fetched_latest.json`).
/// One list a snapshot file holds. An enum, not names, so that a list
/// added here is written by `items_of` or does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotList {
    ValidSeasons,
    TournamentsInSeason,
    RootTournaments,
    TournamentMatches,
    UniqueTeamIds,
    /// A dataset's records (DESIGN.md section 13).
    Data(DatasetId),
}

impl SnapshotList {
    /// The file stem (the seed's names, the dataset's key).
    pub fn stem(self) -> &'static str {
        match self {
            SnapshotList::Data(d) => d.spec().key,
            SnapshotList::ValidSeasons => "valid_seasons",
            SnapshotList::TournamentsInSeason => "tournaments_in_season",
            SnapshotList::RootTournaments => "root_tournaments",
            SnapshotList::TournamentMatches => "tournament_matches",
            SnapshotList::UniqueTeamIds => "unique_team_ids",
        }
    }
}

/// The lists of the cached (before-run) snapshot files, in the seed's
/// order, then the datasets'.
pub const CACHED_SNAPSHOTS: [SnapshotList; 4 + DatasetId::COUNT] = then_each_dataset!(
    [
        SnapshotList::ValidSeasons,
        SnapshotList::TournamentsInSeason,
        SnapshotList::TournamentMatches,
        SnapshotList::UniqueTeamIds,
    ],
    4 + DatasetId::COUNT,
    SnapshotList::Data
);
/// The lists of the fetched snapshot files, in the seed's order, then the
/// datasets'.
pub const FETCHED_SNAPSHOTS: [SnapshotList; 5 + DatasetId::COUNT] = then_each_dataset!(
    [
        SnapshotList::ValidSeasons,
        SnapshotList::TournamentsInSeason,
        SnapshotList::RootTournaments,
        SnapshotList::TournamentMatches,
        SnapshotList::UniqueTeamIds,
    ],
    5 + DatasetId::COUNT,
    SnapshotList::Data
);

pub fn dir(logs_dir: &Path) -> PathBuf {
    logs_dir.join(DIR_NAME)
}

/// Every file name this module may write (for `clear`).
pub fn all_file_names() -> Vec<String> {
    let mut names = vec![
        RUN_CALLS.to_string(),
        RUN_STATS.to_string(),
        RUN_HISTORY.to_string(),
    ];
    names.extend(
        CACHED_SNAPSHOTS
            .iter()
            .map(|s| format!("{}_latest.json", s.stem())),
    );
    names.extend(
        FETCHED_SNAPSHOTS
            .iter()
            .map(|s| format!("{}_fetched_latest.json", s.stem())),
    );
    names
}

/// One run's worth of debug output.
pub struct RunRecord {
    /// The run's stats (the seed's `log_item`).
    pub stats: RunStats,
    pub calls: CallsFile,
    /// The data snapshots, when `logs.debug_snapshots` is on and they changed.
    pub snapshots: Option<SnapshotFiles>,
}

/// `precache_run_calls.json`: every upstream call of the run.
#[derive(Serialize)]
pub struct CallsFile {
    pub run_id: String,
    pub timestamp: String,
    pub calls: Arc<Vec<CallRecord>>,
}

/// Whether the snapshot files are there (a run writes them when something
/// changed, or when they are missing).
pub fn snapshot_files_exist(logs_dir: &Path) -> bool {
    dir(logs_dir)
        .join("tournament_matches_fetched_latest.json")
        .exists()
}

/// The cached (before the run) and fetched (after) data, shared with the
/// run rather than copied: the files are streamed from the records' JSON.
pub struct SnapshotFiles {
    pub run_id: String,
    pub timestamp: String,
    pub cached: Arc<Snapshot>,
    pub fetched: Arc<Snapshot>,
}

/// A temp file name of this process's own: a daemon and a `precache once`
/// sharing a logs directory never write into each other's temp file.
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Streams `{"cache_name", "run_id", "timestamp", "count", "data": [...]}` to
/// `dir/name` atomically, from already-serialised items.
fn write_snapshot<'a>(
    dir: &Path,
    name: &str,
    cache_name: &str,
    run_id: &str,
    timestamp: &str,
    count: usize,
    items: impl Iterator<Item = &'a str>,
) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = temp_path(dir, name);
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&tmp)?);
        let head = serde_json::json!({"cache_name": cache_name, "run_id": run_id, "timestamp": timestamp, "count": count});
        let head = head.to_string();
        // Reopen the object to append the data list after the header fields.
        let open = head.strip_suffix('}').unwrap_or(&head);
        f.write_all(open.as_bytes())?;
        f.write_all(b",\"data\":[")?;
        for (i, item) in items.enumerate() {
            if i > 0 {
                f.write_all(b",\n")?;
            }
            f.write_all(item.as_bytes())?;
        }
        f.write_all(b"]}\n")?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))
}

fn write_snapshots(dir: &Path, files: &SnapshotFiles) -> std::io::Result<()> {
    let (run_id, ts) = (files.run_id.as_str(), files.timestamp.as_str());
    for (suffix, snap, stems) in [
        ("_latest.json", &files.cached, &CACHED_SNAPSHOTS[..]),
        (
            "_fetched_latest.json",
            &files.fetched,
            &FETCHED_SNAPSHOTS[..],
        ),
    ] {
        let teams: Vec<String> = snap.team_ids().iter().map(i64::to_string).collect();
        for &list in stems {
            let items: Vec<&str> = match list {
                SnapshotList::ValidSeasons => snap.valid_seasons.iter().map(|s| &*s.raw).collect(),
                SnapshotList::TournamentsInSeason => {
                    snap.tournaments.iter().map(|t| &*t.raw).collect()
                }
                SnapshotList::RootTournaments => snap.root_tournaments().map(|t| &*t.raw).collect(),
                SnapshotList::TournamentMatches => snap.matches().map(|m| &*m.raw).collect(),
                SnapshotList::UniqueTeamIds => teams.iter().map(String::as_str).collect(),
                SnapshotList::Data(d) => snap.datasets[d]
                    .records()
                    .into_iter()
                    .map(|r| &*r.raw)
                    .collect(),
            };
            let stem = list.stem();
            let name = format!("{stem}{suffix}");
            write_snapshot(dir, &name, stem, run_id, ts, items.len(), items.into_iter())?;
        }
    }
    Ok(())
}

/// Writes `value` to `dir/name` atomically, through a buffer: the
/// pretty printer emits many tiny writes, one syscall each unbuffered
/// (a third of a no-change run's CPU went there).
fn write_atomic(dir: &Path, name: &str, value: &impl Serialize) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = temp_path(dir, name);
    {
        let mut f = std::io::BufWriter::with_capacity(1 << 16, fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut f, value)?;
        f.write_all(b"\n")?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))
}

/// Starts the debug-log thread. It keeps the history in memory (seeded from
/// the file on disk) and rewrites the files for each record received.
pub fn spawn(
    logs_dir: &Path,
    history_len: usize,
) -> std::io::Result<(Sender<RunRecord>, std::thread::JoinHandle<()>)> {
    let dir = dir(logs_dir);
    let (tx, rx): (Sender<RunRecord>, Receiver<RunRecord>) = crossbeam_channel::bounded(4);
    let handle = std::thread::Builder::new()
        .name("debug-log".into())
        .spawn(move || {
            let mut history: VecDeque<Value> = fs::read_to_string(dir.join(RUN_HISTORY))
                .ok()
                .and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
                .unwrap_or_default()
                .into();
            for record in rx {
                let stats = serde_json::to_value(&record.stats).unwrap_or_default();
                history.push_back(stats.clone());
                while history.len() > history_len {
                    history.pop_front();
                }
                let written = [
                    (RUN_STATS, write_atomic(&dir, RUN_STATS, &stats)),
                    (RUN_CALLS, write_atomic(&dir, RUN_CALLS, &record.calls)),
                    (RUN_HISTORY, write_atomic(&dir, RUN_HISTORY, &history)),
                ];
                for (name, result) in written {
                    if let Err(e) = result {
                        log::warn!("cannot write debug file {}: {e}", dir.join(name).display());
                    }
                }
                if let Some(snapshots) = &record.snapshots
                    && let Err(e) = write_snapshots(&dir, snapshots)
                {
                    log::warn!("cannot write debug snapshots in {}: {e}", dir.display());
                }
            }
        })?;
    Ok((tx, handle))
}

/// Removes the debug files, returning the paths removed.
pub fn clear(logs_dir: &Path) -> Vec<String> {
    let dir = dir(logs_dir);
    all_file_names()
        .into_iter()
        .map(|name| dir.join(name))
        .filter(|p| fs::remove_file(p).is_ok())
        .map(|p| p.display().to_string())
        .collect()
}
