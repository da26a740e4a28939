//! The leader lease in Redis (DESIGN.md section 12): one writer at a time.
//!
//! `precache:leader` holds `EPOCH INSTANCE` with an expiry; the epoch comes
//! from `INCR precache:leader:epoch`, so every holder has a number no
//! earlier holder had, and commits order by it (`store::commit`). Taking
//! the lease, renewing it (compare and `PEXPIRE`) and releasing it (compare
//! and `DEL`) are each one script, so no two instances can both think they
//! hold it. A key of another type or garbage in either place is replaced,
//! never a reason to fail for ever. Writes are fenced by the token
//! ([`Store::apply`] with `WriteBatch::fence`): a holder that lost the lease
//! while it was stopped cannot write.

use std::fmt;
use std::time::Duration;

use super::{Store, StoreError};

/// The lease as one holder has it: its epoch and the value it set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    pub epoch: u64,
    /// `EPOCH INSTANCE`, the value of `precache:leader` while held.
    pub value: String,
}

impl LeaseToken {
    /// The instance named in the value.
    pub fn holder(&self) -> &str {
        holder_of(&self.value)
    }
}

/// The instance a lease value names.
pub fn holder_of(value: &str) -> &str {
    value
        .split_once(' ')
        .map_or(value, |(_, instance)| instance)
}

/// Who holds the lease, as another instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub value: String,
    /// Milliseconds until it expires unless renewed.
    pub expires_in_ms: i64,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (lease epoch {}, expires in {:.0} s unless renewed)",
            holder_of(&self.value),
            self.value.split(' ').next().unwrap_or("?"),
            self.expires_in_ms.max(0) as f64 / 1000.0
        )
    }
}

/// What an attempt to take the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Taken(LeaseToken),
    HeldBy(Holder),
}

/// Takes the lease for instance `ARGV[1]` for `ARGV[2]` ms when nobody
/// holds it (with `ARGV[3]` = "1": whoever holds it; absent otherwise, a
/// few bytes less for every `once`). A value that is already ours (a reply
/// lost, a run that stood down while the keeper took it again) is kept and
/// renewed. A value of another type, one that is not `EPOCH INSTANCE`, or
/// one without an expiry is nobody's lease and is replaced. The epoch is
/// always above the commit marker's, whatever became of the counter.
const ACQUIRE: &str = r#"
local leader, epoch_key, marker = KEYS[1], KEYS[2], KEYS[3]
local kind = redis.call('TYPE', leader)['ok']
if kind ~= 'string' and kind ~= 'none' then redis.call('DEL', leader) end
local current = redis.call('GET', leader)
if current then
  local ttl = redis.call('PTTL', leader)
  local epoch, holder = string.match(current, '^(%d+) (.+)$')
  if epoch and ttl > 0 then
    if holder == ARGV[1] then
      redis.call('PEXPIRE', leader, ARGV[2])
      return {1, current, tonumber(epoch)}
    end
    if ARGV[3] ~= '1' then return {0, current, ttl} end
  end
end
local floor = 0
if redis.call('TYPE', marker)['ok'] == 'string' then
  floor = tonumber(string.match(redis.call('GET', marker), '^precache%-commit v1 (%d+)')) or 0
end
local next = redis.pcall('INCR', epoch_key)
if type(next) ~= 'number' or next <= floor then
  redis.call('DEL', epoch_key)
  next = redis.call('INCRBY', epoch_key, floor + 1)
end
local value = next .. ' ' .. ARGV[1]
redis.call('SET', leader, value, 'PX', ARGV[2])
return {1, value, next}
"#;

/// Renews the lease if `ARGV[1]` still holds it.
const RENEW: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// The holder and its time left (nothing for a key of another type).
const HOLDER: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return false end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"#;

/// Releases the lease if `ARGV[1]` still holds it.
const RELEASE: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// `script` with its keys spelled in it (`KEYS[n]` is `keys[n - 1]`): the
/// names cost the `EVALSHA` nothing, and a `once` sends Redis as little as
/// it can (DESIGN.md section 9: a no-change run sends at most 2 KB).
fn with_keys(script: &str, keys: &[String]) -> redis::Script {
    let names: Vec<String> = keys.iter().map(|k| super::commit::lua_string(k)).collect();
    redis::Script::new(&format!("local KEYS = {{{}}}\n{script}", names.join(",")))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl Store {
    /// Takes the lease for `instance` for `lease`, unless another holds
    /// it; `force` takes it from whoever does (an operator's `--force`).
    pub fn acquire_lease(
        &mut self,
        instance: &str,
        lease: Duration,
        force: bool,
    ) -> Result<Attempt, StoreError> {
        let keys = &self.keys;
        let script = with_keys(
            ACQUIRE,
            &[keys.leader(), keys.leader_epoch(), keys.commit_marker()],
        );
        let reply: (i64, String, i64) = self.with("taking the leader lease", |c| {
            let mut invocation = script.prepare_invoke();
            invocation.arg(instance).arg(millis(lease));
            if force {
                invocation.arg("1");
            }
            invocation.invoke(c)
        })?;
        Ok(match reply {
            (1, value, epoch) => Attempt::Taken(LeaseToken {
                epoch: epoch.max(0) as u64,
                value,
            }),
            (_, value, ttl) => Attempt::HeldBy(Holder {
                value,
                expires_in_ms: ttl,
            }),
        })
    }

    /// Renews the lease `token` holds; false when it does not any more.
    pub fn renew_lease(&mut self, token: &LeaseToken, lease: Duration) -> Result<bool, StoreError> {
        let script = with_keys(RENEW, &[self.keys.leader()]);
        let renewed: i64 = self.with("renewing the leader lease", |c| {
            script.arg(&token.value).arg(millis(lease)).invoke(c)
        })?;
        Ok(renewed == 1)
    }

    /// Gives the lease up if `token` still holds it (a clean stop).
    pub fn release_lease(&mut self, token: &LeaseToken) -> Result<bool, StoreError> {
        let script = with_keys(RELEASE, &[self.keys.leader()]);
        let released: i64 = self.with("releasing the leader lease", |c| {
            script.arg(&token.value).invoke(c)
        })?;
        Ok(released == 1)
    }

    /// Who holds the lease now, if anyone.
    pub fn lease_holder(&mut self) -> Result<Option<Holder>, StoreError> {
        let script = with_keys(HOLDER, &[self.keys.leader()]);
        let reply: Option<(String, i64)> = self.with("reading the leader lease", |c| {
            script.prepare_invoke().invoke(c)
        })?;
        Ok(reply.map(|(value, ttl)| Holder {
            value,
            expires_in_ms: ttl,
        }))
    }
}

/// Whether this instance leads, shared by the threads that must know: the
/// run loop (runs only while leading), the warm-up (works only while
/// leading, and fences its writes), the HTTP side (role on `/status`).
#[derive(Debug, Default)]
pub struct Leadership {
    state: std::sync::Mutex<LeaseState>,
}

/// What the keeper knows of the lease.
#[derive(Debug, Clone, Default)]
pub struct LeaseState {
    /// Held by this instance.
    pub token: Option<LeaseToken>,
    /// Held by another, as last seen.
    pub other: Option<Holder>,
    /// Since when the current role (leader or standby) holds.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Times this instance took or lost the lease.
    pub transitions: u64,
    /// Why the last attempt to take or renew the lease failed (Redis
    /// unreachable), until one succeeds.
    pub unreachable: Option<StoreError>,
}

impl Leadership {
    pub fn state(&self) -> LeaseState {
        crate::util::lock(&self.state).clone()
    }

    pub fn token(&self) -> Option<LeaseToken> {
        crate::util::lock(&self.state).token.clone()
    }

    pub fn is_leader(&self) -> bool {
        crate::util::lock(&self.state).token.is_some()
    }

    /// The value writes are fenced with while leading.
    pub fn fence(&self) -> Option<String> {
        self.token().map(|t| t.value)
    }

    /// A write made under the lease of `epoch` was fenced: stand down at
    /// once (the keeper would find out at its next renewal), unless the
    /// keeper holds a newer lease already (taken again while the run went
    /// on), which stays.
    pub fn stand_down(&self, epoch: u64) {
        let mut state = crate::util::lock(&self.state);
        if state.token.as_ref().is_some_and(|t| t.epoch == epoch) {
            state.token = None;
            state.transitions += 1;
            state.since = Some(chrono::Utc::now());
        }
    }

    fn set(&self, token: Option<LeaseToken>, other: Option<Holder>) -> bool {
        let mut state = crate::util::lock(&self.state);
        let changed = state.token.is_some() != token.is_some()
            || state.token.as_ref().map(|t| t.epoch) != token.as_ref().map(|t| t.epoch);
        if changed {
            state.transitions += 1;
            state.since = Some(chrono::Utc::now());
        }
        if state.since.is_none() {
            state.since = Some(chrono::Utc::now());
        }
        state.token = token;
        state.other = other;
        changed
    }
}

/// Keeps the lease: takes it when free, renews it every third of its
/// length while held, lets go of it when a renewal finds another holder or
/// renewals fail for a whole lease (Redis unreachable: another instance may
/// have it by now), and releases it on stop. `changed` hears of every
/// change of role, so a standby that takes over runs at once.
///
/// It outlives the process's shutdown signal on purpose: a leader keeps
/// renewing through the grace period, as the run in progress writes under
/// the lease, and releases it when dropped after the last write. Once the
/// signal fired, a standby no longer takes the lease (it would lead for
/// the moments before it exits, and delay the real takeover).
pub struct LeaseKeeper {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts keeping the lease for `instance`; the first attempt is made
    /// before this returns, so the caller knows its role at once. `force`
    /// takes it from whoever holds it on that first attempt (`--force`).
    pub fn start(
        mut store: Store,
        instance: String,
        lease: Duration,
        leadership: std::sync::Arc<Leadership>,
        changed: crossbeam_channel::Sender<()>,
        force: bool,
        shutdown: crate::lifecycle::Shutdown,
    ) -> std::io::Result<LeaseKeeper> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut keeper = Keeper {
            instance,
            lease,
            leadership,
            changed,
            last_renewed: std::time::Instant::now(),
            last_error: None,
            force,
            shutdown,
            next_wait: lease / 3,
        };
        keeper.tick(&mut store);
        keeper.force = false;
        let thread = std::thread::Builder::new()
            .name("lease".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(keeper.next_wait)
                {
                    keeper.tick(&mut store);
                }
                keeper.release(&mut store);
            })?;
        Ok(LeaseKeeper {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for LeaseKeeper {
    /// Stops keeping the lease and releases it.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Keeper {
    instance: String,
    lease: Duration,
    leadership: std::sync::Arc<Leadership>,
    changed: crossbeam_channel::Sender<()>,
    last_renewed: std::time::Instant,
    last_error: Option<String>,
    /// Take the lease from whoever holds it (the first attempt of `--force`).
    force: bool,
    /// The process's shutdown signal: once fired, a standby stays one.
    shutdown: crate::lifecycle::Shutdown,
    /// Until the next tick: a third of the lease, or, for a standby, until
    /// just after the holder's lease would lapse if that comes sooner, so
    /// a crashed leader is replaced within the lease, not a third more.
    next_wait: Duration,
}

/// How long after a lease's expiry a standby tries for it.
const AFTER_EXPIRY: Duration = Duration::from_millis(50);

impl Keeper {
    fn tick(&mut self, store: &mut Store) {
        self.next_wait = self.lease / 3;
        let result = match self.leadership.token() {
            Some(token) => self.renew(store, token),
            None if self.shutdown.is_fired() => Ok(()),
            None => self.acquire(store),
        };
        match result {
            Ok(()) => {
                crate::util::lock(&self.leadership.state).unreachable = None;
                if self.last_error.take().is_some() {
                    log::info!("leader lease: Redis answers again");
                }
            }
            Err(e) => {
                crate::util::lock(&self.leadership.state).unreachable = Some(e.clone());
                let message = e.to_string();
                if self.last_error.as_ref() != Some(&message) {
                    log::warn!("leader lease: {message}");
                }
                self.last_error = Some(message);
                // A leader that cannot renew for a whole lease has lost it,
                // whether or not Redis saw another take it.
                if self.leadership.is_leader() && self.last_renewed.elapsed() >= self.lease {
                    log::warn!(
                        "leader lease: not renewed for {:?}; standing down",
                        self.lease
                    );
                    self.announce(None, None);
                }
            }
        }
    }

    fn renew(&mut self, store: &mut Store, token: LeaseToken) -> Result<(), StoreError> {
        if store.renew_lease(&token, self.lease)? {
            self.last_renewed = std::time::Instant::now();
            return Ok(());
        }
        // Lost, whoever has it now: no write of ours may wait for that read.
        self.announce(None, None);
        let other = store.lease_holder()?;
        log::warn!(
            "leader lease lost to {}: this instance is a standby now",
            other
                .as_ref()
                .map_or("nobody (it expired)".to_string(), |h| h.to_string())
        );
        self.leadership.set(None, other);
        Ok(())
    }

    fn acquire(&mut self, store: &mut Store) -> Result<(), StoreError> {
        match store.acquire_lease(&self.instance, self.lease, self.force)? {
            Attempt::Taken(token) => {
                log::info!(
                    "leader lease taken (epoch {}): this instance syncs and warms",
                    token.epoch
                );
                self.last_renewed = std::time::Instant::now();
                self.announce(Some(token), None);
            }
            Attempt::HeldBy(holder) => {
                let first = self.leadership.state().other.is_none();
                if first {
                    log::info!("standby: the leader is {holder}");
                }
                if let Ok(left) = u64::try_from(holder.expires_in_ms) {
                    self.next_wait = self
                        .next_wait
                        .min(Duration::from_millis(left) + AFTER_EXPIRY);
                }
                self.leadership.set(None, Some(holder));
            }
        }
        Ok(())
    }

    fn announce(&mut self, token: Option<LeaseToken>, other: Option<Holder>) {
        if self.leadership.set(token, other) {
            let _ = self.changed.try_send(());
        }
    }

    fn release(&mut self, store: &mut Store) {
        if let Some(token) = self.leadership.token() {
            match store.release_lease(&token) {
                Ok(true) => log::info!("leader lease released"),
                Ok(false) => {}
                Err(e) => log::warn!("leader lease not released ({e}); it expires by itself"),
            }
            self.leadership.set(None, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_value_names_its_holder() {
        assert_eq!(holder_of("7 vm-1:42"), "vm-1:42");
        let holder = Holder {
            value: "7 vm-1:42".into(),
            expires_in_ms: 41_500,
        };
        assert_eq!(
            holder.to_string(),
            "vm-1:42 (lease epoch 7, expires in 42 s unless renewed)"
        );
    }
}
