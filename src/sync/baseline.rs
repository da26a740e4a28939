//! What the cache holds before a run (the run's baseline): the snapshot
//! kept in memory since the last confirmed write, or the one loaded from
//! Redis, and the write whose answer is still out.
//!
//! Its own piece so that a run can read it on one thread while the fetch
//! asks the upstream on others: loading 20 MB from Redis (`once`, a
//! restart) overlaps the seasons and tournaments calls instead of
//! preceding them.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::model::Snapshot;
use crate::model::bodies::MatchBodies;
use crate::store::{Store, StoreError};
use crate::sync::fetch::MatchValidators;
use crate::sync::hold::ShrinkState;
use crate::sync::poll::PollState;

/// Longest wait for the writer's answer before the run is declared failed:
/// longer than the writer's own worst case (connect 3 s + I/O 30 s, twice).
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

/// What the cache holds before a run, and whether to rewrite every key.
pub(crate) struct Baseline {
    pub snapshot: Arc<Snapshot>,
    /// The bodies `snapshot`'s match lists were read from.
    pub bodies: MatchBodies,
    /// The upstream's validators of those bodies (kept in memory only: a
    /// snapshot loaded from Redis has none, and its first run asks plainly).
    pub validators: MatchValidators,
    /// Adaptive polling's state: the daemon's, else the one kept in Redis;
    /// `None` when neither is known (the run sweeps every root).
    pub poll: Option<PollState>,
    pub rewrite_all: bool,
}

/// The connection to the cache and what we know it holds.
pub(crate) struct Cache {
    pub store: Store,
    /// What the cache holds, as far as we know; `None` until loaded.
    previous: Option<Arc<Snapshot>>,
    previous_bodies: MatchBodies,
    previous_validators: MatchValidators,
    /// Adaptive polling's state, once known (it outlives a forgotten
    /// snapshot: which roots were asked does not depend on what Redis holds).
    pub poll: Option<PollState>,
    /// `precache:shrink` as read with the snapshot this run loaded, for
    /// the run's shrink check (one command less for `once`).
    loaded_shrink: Option<Option<String>>,
    /// The reply channel of a write that timed out, until it answers.
    unanswered_write: Option<Receiver<Result<(), StoreError>>>,
}

impl Cache {
    pub fn new(store: Store) -> Cache {
        Cache {
            store,
            previous: None,
            previous_bodies: MatchBodies::default(),
            previous_validators: MatchValidators::new(),
            poll: None,
            loaded_shrink: None,
            unanswered_write: None,
        }
    }

    /// The cache now holds `next` (the writer confirmed it), read from
    /// `bodies`. Validators are kept only for those very bodies: a list
    /// held against a shorter answer must not be confirmed by a 304 to it.
    pub fn advance(&mut self, next: Arc<Snapshot>, bodies: MatchBodies, answered: MatchValidators) {
        let mut validators = answered;
        validators.retain(|root, held| bodies.0.get(root).is_some_and(|s| s.body == held.body));
        self.previous = Some(next);
        self.previous_bodies = bodies;
        self.previous_validators = validators;
    }

    /// The cache may hold anything now (a write failed or went
    /// unanswered, and may still land): the next run reads it from Redis.
    pub fn forget(&mut self) {
        self.previous = None;
    }

    /// A write that was not answered in time: no run reads the cache
    /// until it is.
    pub fn await_later(&mut self, reply: Receiver<Result<(), StoreError>>) {
        self.unanswered_write = Some(reply);
    }

    /// What the cache holds now: the in-memory snapshot if Redis still has
    /// the keys, else what Redis has (a full rewrite when keys are
    /// missing). `None` for a dry run that cannot reach Redis.
    pub fn read_baseline(&mut self, dry_run: bool) -> Result<Option<Baseline>, ReadFailure> {
        self.loaded_shrink = None;
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
        let everything = |poll: Option<PollState>| Baseline {
            snapshot: Arc::new(Snapshot::default()),
            bodies: MatchBodies::default(),
            validators: MatchValidators::new(),
            poll,
            rewrite_all: true,
        };
        if let Some(previous) = &self.previous {
            if self.store.data_keys_present()? {
                return Ok(Baseline {
                    snapshot: previous.clone(),
                    bodies: self.previous_bodies.clone(),
                    validators: self.previous_validators.clone(),
                    poll: self.poll.clone(),
                    rewrite_all: false,
                });
            }
            log::warn!(
                "cache keys are missing from Redis (cleared or restarted empty): rewriting everything"
            );
            return Ok(everything(self.poll.clone()));
        }
        let loaded = self.store.load_snapshot()?;
        self.loaded_shrink = Some(loaded.shrink.clone());
        if self.poll.is_none() {
            self.poll = loaded.poll.as_deref().and_then(|text| {
                let state = PollState::from_text(text);
                if state.is_none() {
                    let key = self.store.keys.poll_state();
                    log::warn!("{key} is unreadable; this run asks every root");
                }
                state
            });
        }
        if !loaded.missing.is_empty() {
            log::info!(
                "no complete snapshot in Redis (missing {:?}): this run writes everything",
                loaded.missing
            );
            return Ok(everything(self.poll.clone()));
        }
        log::info!(
            "loaded the previous snapshot from Redis: {:?}",
            loaded.snapshot.item_counts()
        );
        Ok(Baseline {
            snapshot: Arc::new(loaded.snapshot),
            bodies: loaded.bodies,
            validators: MatchValidators::new(),
            poll: self.poll.clone(),
            rewrite_all: false,
        })
    }

    /// The shrink held so far (an unreadable record counts from 1 again).
    pub fn read_shrink_state(&mut self) -> Result<Option<ShrinkState>, StoreError> {
        let key = self.store.keys.shrink_state();
        let text = match self.loaded_shrink.take() {
            Some(text) => text,
            None => self.store.get(&key)?,
        };
        Ok(text.and_then(|text| {
            serde_json::from_str(&text)
                .map_err(|e| log::warn!("{key} is unreadable ({e}); counting a held shrink from 1"))
                .ok()
        }))
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
