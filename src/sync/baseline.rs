//! What the cache holds before a run (the run's baseline), and whether
//! Redis still holds what this process last committed.
//!
//! Redis, not memory, is the truth (DESIGN.md section 3). Every run starts
//! with one cheap check (`store::commit`): the commit marker and each data
//! key against what the marker recorded, and the bookkeeping keys' types.
//! When Redis holds exactly our last commit, the snapshot kept in memory is
//! the baseline. Anything else (a restore, a failover, another writer, an
//! operator's `once`, an edited, emptied, deleted or unreadable key) makes
//! the run read what Redis holds and diff the upstream against that, with
//! the keys Redis does not hold as committed written whatever the diff
//! says, so the cache converges in that run and each change is reported
//! once. "Less" is still judged against the newest state known: memory,
//! when Redis lost our last commit (a flush under a held shrink keeps it
//! held).
//!
//! Its own piece so that a run can read it on one thread while the fetch
//! asks the upstream on others: loading 20 MB from Redis (`once`, a
//! restart, a reload) overlaps the seasons and tournaments calls instead of
//! preceding them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::model::Snapshot;
use crate::model::bodies::MatchBodies;
use crate::model::dataset::DatasetId;
use crate::store::commit::{Check, CommitId, CommitRecord};
use crate::store::{ApplyError, LoadedSnapshot, Store, StoreError};
use crate::sync::fetch::MatchValidators;
use crate::sync::hold::ShrinkState;
use crate::sync::plan::Rebuild;
use crate::sync::poll::PollState;
use crate::sync::writes::Rewrite;

/// Longest wait for the writer's answer before the run is declared failed:
/// longer than the writer's own worst case (a search for the master 10 s,
/// or connect 3 s, and an I/O stall of 10 s; twice).
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the cache could not be read.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    Redis(StoreError),
    /// An earlier run's write is still unanswered: it may land any time.
    WriteUnanswered,
}

impl From<StoreError> for ReadFailure {
    fn from(e: StoreError) -> Self {
        ReadFailure::Redis(e)
    }
}

/// What the cache holds before a run, and what the run must repair.
pub(crate) struct Baseline {
    /// What Redis holds: the run's diff and writes are against it.
    pub snapshot: Arc<Snapshot>,
    /// The newest state known, for judging "less": `snapshot`, or this
    /// process's last commit when Redis lost it.
    pub newest: Arc<Snapshot>,
    /// The bodies `snapshot`'s match lists were read from.
    pub bodies: MatchBodies,
    /// The upstream's validators of those bodies (kept in memory only).
    pub validators: MatchValidators,
    /// Adaptive polling's state: the daemon's, else the one kept in Redis;
    /// `None` when neither is known (the run sweeps every root).
    pub poll: Option<PollState>,
    /// The shrink held so far: Redis's, else (when Redis lost our last
    /// commit) the one this process kept.
    pub shrink: Option<ShrinkState>,
    /// Keys written whatever the diff says.
    pub rewrite: Rewrite,
    /// Bookkeeping keys deleted first (of the wrong type), and those
    /// written whole.
    pub discard: Vec<String>,
    pub rebuild: Rebuild,
    /// The marker record of what Redis holds (the next marker builds on it).
    pub record: CommitRecord,
    /// Write a marker even when nothing else is written.
    pub force_marker: bool,
    /// Why this run read the cache from Redis instead of trusting memory.
    pub reloaded: Option<String>,
    /// An operator asked (`once --accept-shrink` beside a running leader)
    /// that the shrink held be accepted: who and when.
    pub accept_requested: Option<String>,
    /// Spread datasets whose grouping could not be read back: the run asks
    /// every key of them, so their records fall in place again.
    pub regrouped: Vec<DatasetId>,
}

/// The connection to the cache and what we know it holds.
pub(crate) struct Cache {
    pub store: Store,
    /// What the cache holds as of our last commit; `None` until loaded,
    /// and after a write that may or may not have landed.
    previous: Option<Arc<Snapshot>>,
    previous_bodies: MatchBodies,
    previous_validators: MatchValidators,
    /// The marker of our last commit (or of the state we loaded).
    record: Option<CommitRecord>,
    /// The shrink held as of our last commit.
    shrink: Option<ShrinkState>,
    /// Our last commit's snapshot, kept when a failed write made us forget
    /// `previous`: still the newest state known for judging "less".
    last_committed: Option<(CommitId, Arc<Snapshot>)>,
    /// Adaptive polling's state, once known (it outlives a forgotten
    /// snapshot: which roots were asked does not depend on what Redis holds).
    pub poll: Option<PollState>,
    /// The reply channel of a write that timed out, until it answers.
    unanswered_write: Option<Receiver<Result<(), ApplyError>>>,
    /// The master (found through Sentinel) the last baseline was read
    /// from: a new one may lack our last acknowledged writes (asynchronous
    /// replication), so a run on it reads the cache whatever the marker says.
    read_from: Option<String>,
}

impl Cache {
    /// The master the last baseline was read from (with Sentinel).
    pub fn read_from_master(&self) -> Option<&str> {
        self.read_from.as_deref()
    }

    pub fn new(store: Store) -> Cache {
        Cache {
            store,
            previous: None,
            previous_bodies: MatchBodies::default(),
            previous_validators: MatchValidators::new(),
            record: None,
            shrink: None,
            last_committed: None,
            poll: None,
            unanswered_write: None,
            read_from: None,
        }
    }

    /// The cache now holds `next` (the writer confirmed it), read from
    /// `bodies`, as the marker `record` says (`None`: nothing was written,
    /// the record stands). Validators are kept only for those very bodies:
    /// a list held against a shorter answer must not be confirmed by a 304.
    pub fn advance(
        &mut self,
        next: Arc<Snapshot>,
        bodies: MatchBodies,
        answered: MatchValidators,
        record: Option<CommitRecord>,
        shrink: Option<ShrinkState>,
    ) {
        let mut validators = answered;
        validators.retain(|root, held| bodies.0.get(root).is_some_and(|s| s.body == held.body));
        match record {
            Some(record) => {
                self.last_committed = Some((record.id.clone(), next.clone()));
                self.record = Some(record);
            }
            // Nothing written: `next` is what the last commit left, record
            // for record. Holding it instead of the snapshot that commit
            // wrote keeps one snapshot in memory, not two (50 MB at 10x).
            None => {
                if let Some((_, committed)) = &mut self.last_committed {
                    *committed = next.clone();
                }
            }
        }
        self.previous = Some(next);
        self.previous_bodies = bodies;
        self.previous_validators = validators;
        self.shrink = shrink;
    }

    /// The cache may hold anything now (a write failed or went
    /// unanswered, and may still land): the next run reads it from Redis.
    pub fn forget(&mut self) {
        self.previous = None;
    }

    /// Forget everything known of the cache: another instance has written
    /// it since (this one just took the lease over, or was fenced). What
    /// Redis holds is the newest state.
    pub fn forget_all(&mut self) {
        self.previous = None;
        self.record = None;
        self.last_committed = None;
        self.shrink = None;
    }

    /// A write that was not answered in time: no run reads the cache
    /// until it is.
    pub fn await_later(&mut self, reply: Receiver<Result<(), ApplyError>>) {
        self.unanswered_write = Some(reply);
    }

    /// What the cache holds now (see the module's comment). `None` for a
    /// dry run that cannot reach Redis.
    pub fn read_baseline(&mut self, dry_run: bool) -> Result<Option<Baseline>, ReadFailure> {
        self.settle_unanswered_write()?;
        match self.baseline() {
            Ok(baseline) => Ok(Some(baseline)),
            Err(e) if dry_run => {
                log::warn!("{e}; the dry run fetches without comparing against the cache");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn baseline(&mut self) -> Result<Baseline, StoreError> {
        let check = self.store.check_commit()?;
        let discard = self.discarded(&check);
        let shrink = self.shrink_state(check.shrink.as_deref());
        let poll = self.poll_state(check.poll.as_deref());
        let master = self.store.master().map(str::to_string);
        let master_changed = self.read_from.is_some() && master != self.read_from;
        // Redis holds exactly our last commit: memory is the baseline.
        if let (Some(previous), Some(record)) = (&self.previous, &self.record)
            && !master_changed
            && check.id.as_ref() == Some(&record.id)
            && check.mismatched.is_empty()
        {
            // A grouping Redis lost is written again with its key.
            let keys = &self.store.keys;
            let rewrite = Rewrite {
                keys: keys
                    .datasets()
                    .iter()
                    .filter(|d| discard.contains(&keys.dataset_groups(**d)))
                    .map(|d| keys.dataset(*d))
                    .collect(),
                ..Rewrite::default()
            };
            self.read_from = master;
            return Ok(Baseline {
                snapshot: previous.clone(),
                newest: previous.clone(),
                bodies: self.previous_bodies.clone(),
                validators: self.previous_validators.clone(),
                poll,
                shrink,
                rewrite,
                rebuild: Rebuild {
                    shrink: discard.contains(&self.store.keys.shrink_state()),
                    ..Rebuild::default()
                },
                discard,
                record: record.clone(),
                force_marker: false,
                reloaded: None,
                accept_requested: check.accept_requested,
                regrouped: Vec::new(),
            });
        }
        let reloaded = self.why_reload(&check, master_changed);
        if let Some(why) = &reloaded {
            log::warn!("{why}: reading the cache from Redis and repairing it this run");
        }
        let loaded = self.store.load_snapshot(&check.found)?;
        if !loaded.missing.is_empty() {
            log::info!(
                "the cache lacks {:?} (absent, or not in the seed's format): this run writes them",
                loaded.missing
            );
        }
        let accept_requested = check.accept_requested.clone();
        let mut baseline = self.reloaded_baseline(check, loaded, discard, shrink, reloaded);
        baseline.accept_requested = accept_requested;
        self.read_from = self.store.master().map(str::to_string);
        Ok(baseline)
    }

    /// The baseline read from Redis.
    fn reloaded_baseline(
        &mut self,
        check: Check,
        loaded: LoadedSnapshot,
        discard: Vec<String>,
        shrink: Option<ShrinkState>,
        reloaded: Option<String>,
    ) -> Baseline {
        let keys = self.store.keys.clone();
        let snapshot = Arc::new(loaded.snapshot);
        // Which state is the newest known: Redis's when another commit came
        // after ours; else ours, of which Redis lost some or all (no
        // marker, an older one, or our own with keys emptied or edited).
        let ours = self.last_committed.clone();
        let newest = match (&ours, &check.id) {
            (Some((id, committed)), theirs) if theirs.as_ref().is_none_or(|t| t <= id) => {
                log::warn!(
                    "Redis lost part of this process's last commit ({id}): \"less\" is still judged against that commit"
                );
                committed.clone()
            }
            _ => snapshot.clone(),
        };
        // The record Redis's marker vouches for, the keys read now marked
        // by what was read.
        let mut record = match check.commit_record() {
            Some(record) if check.id.is_some() => record,
            _ => CommitRecord {
                id: check.id.clone().unwrap_or_else(CommitId::none),
                keys: Default::default(),
            },
        };
        for key in &check.mismatched {
            record.keys.remove(key);
        }
        for (key, mark) in &loaded.marks {
            record.keys.insert(key.clone(), mark.clone());
        }
        let mut rewrite = Rewrite {
            all: false,
            derived: check.id.is_none(),
            keys: check.mismatched.iter().cloned().collect::<BTreeSet<_>>(),
        };
        rewrite.keys.extend(loaded.missing.iter().cloned());
        // Validators stay only for lists Redis holds as they were answered.
        let validators = match &self.previous {
            Some(_) => {
                let mut kept = self.previous_validators.clone();
                kept.retain(|root, v| loaded.bodies.0.get(root).is_some_and(|s| s.body == v.body));
                kept
            }
            None => MatchValidators::new(),
        };
        let rebuild = Rebuild {
            match_roots: loaded.match_roots_unreadable || discard.contains(&keys.match_roots()),
            match_bodies: loaded.match_bodies_unreadable || discard.contains(&keys.match_bodies()),
            shrink: discard.contains(&keys.shrink_state()),
        };
        let poll = self.poll_state(check.poll.as_deref());
        // From here on, memory is what Redis holds.
        self.previous = None;
        self.record = Some(record.clone());
        Baseline {
            snapshot,
            newest,
            bodies: loaded.bodies,
            validators,
            poll,
            shrink,
            rewrite,
            discard,
            rebuild,
            force_marker: check.id.is_none() || !check.mismatched.is_empty(),
            record,
            reloaded,
            accept_requested: None,
            regrouped: loaded.regrouped,
        }
    }

    /// Bookkeeping keys of the wrong type: discarded (and counted) by the
    /// run, never a reason for it to fail.
    fn discarded(&self, check: &Check) -> Vec<String> {
        for (key, found) in &check.wrong_type {
            log::warn!(
                "{key} is a {found}, not what precache keeps there: discarding and rebuilding it"
            );
        }
        check
            .wrong_type
            .iter()
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Why memory cannot be trusted this run (`None`: nothing was known).
    fn why_reload(&self, check: &Check, master_changed: bool) -> Option<String> {
        let ours = self.record.as_ref().map(|r| &r.id)?;
        Some(match &check.id {
            _ if master_changed => format!(
                "the Redis master changed (now {}): it may lack the last acknowledged writes",
                self.store.master().unwrap_or("?")
            ),
            None => "Redis holds no commit marker (flushed, restarted empty, or edited)".into(),
            Some(theirs) if theirs != ours => format!(
                "Redis holds {theirs}, not this process's last commit ({ours}): a restore, a failover or another writer"
            ),
            Some(_) => format!(
                "Redis holds keys that are not as the last commit left them: {}",
                check.mismatched.join(", ")
            ),
        })
    }

    /// The shrink held so far: Redis's record of it, else ours when Redis
    /// lost it; an unreadable record counts from 1 again.
    fn shrink_state(&self, text: Option<&str>) -> Option<ShrinkState> {
        let key = self.store.keys.shrink_state();
        match text {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| log::warn!("{key} is unreadable ({e}); counting a held shrink from 1"))
                .ok(),
            None => self.shrink.clone(),
        }
    }

    /// Adaptive polling's state: ours, else Redis's.
    fn poll_state(&mut self, text: Option<&str>) -> Option<PollState> {
        if self.poll.is_none() {
            self.poll = text.and_then(|text| {
                let state = PollState::from_text(text);
                if state.is_none() {
                    let key = self.store.keys.poll_state();
                    log::warn!("{key} is unreadable; this run asks every root");
                }
                state
            });
        }
        self.poll.clone()
    }

    /// A write the writer never answered may land at any time, so no run
    /// may read the cache from Redis before it is resolved: one that did
    /// would diff against a state about to change under it.
    fn settle_unanswered_write(&mut self) -> Result<(), ReadFailure> {
        let Some(reply) = self.unanswered_write.take() else {
            return Ok(());
        };
        match reply.recv_timeout(WRITE_TIMEOUT) {
            Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                self.unanswered_write = Some(reply);
                Err(ReadFailure::WriteUnanswered)
            }
        }
    }
}
