//! One shutdown signal for every thread the daemon owns (DESIGN.md
//! section 12, "one lifecycle").
//!
//! A [`Shutdown`] is both the signal and a way to fire it. Firing sets a
//! flag and closes a channel, so a thread blocked in `select!` or
//! `recv_timeout` on [`Shutdown::rx`] wakes at once, and every clone sees
//! it. [`Shutdown::child`] makes a signal that fires with its parent or on
//! its own: the owner of a group of threads (the warm-up, the HTTP server,
//! the watchdog) fires its child from `Drop`, so those threads stop when it
//! goes out of scope whatever the path, and all of them stop when the
//! process's signal fires (SIGINT/SIGTERM).
//!
//! It exists so no thread has its own private way of being told to stop
//! that another part of the daemon forgets to use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// A poisoned lock here guards an `Option` and a list, which no panic
/// leaves half-updated. (Not `util::lock`: this module is a leaf, so that
/// the store's lease keeper can observe the signal without climbing the
/// house.)
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Inner {
    fired: AtomicBool,
    /// Dropped on firing: every receiver then sees a disconnected channel.
    tx: Mutex<Option<Sender<()>>>,
    children: Mutex<Vec<Weak<Inner>>>,
}

impl Inner {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        drop(lock(&self.tx).take());
        let children = std::mem::take(&mut *lock(&self.children));
        for child in children.iter().filter_map(Weak::upgrade) {
            child.fire();
        }
    }
}

/// A shutdown signal: clone it to observe it, fire it to stop.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
    rx: Receiver<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        // Nothing is ever sent: the channel only closes.
        let (tx, rx) = crossbeam_channel::bounded(0);
        Shutdown {
            inner: Arc::new(Inner {
                fired: AtomicBool::new(false),
                tx: Mutex::new(Some(tx)),
                children: Mutex::new(Vec::new()),
            }),
            rx,
        }
    }

    /// A signal that fires when this one does, and can be fired alone.
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::new();
        let mut children = lock(&self.inner.children);
        // Checked under the lock `fire` takes the children with: a child
        // made while its parent fires is either fired by it or fired here.
        if self.is_fired() {
            child.fire();
        } else {
            children.retain(|c| c.strong_count() > 0);
            children.push(Arc::downgrade(&child.inner));
        }
        child
    }

    pub fn fire(&self) {
        self.inner.fire();
    }

    pub fn is_fired(&self) -> bool {
        self.inner.fired.load(Ordering::SeqCst)
    }

    /// For `select!`: ready (disconnected) once fired.
    pub fn rx(&self) -> &Receiver<()> {
        &self.rx
    }

    /// Sleeps for `pause` or until fired; true when fired.
    pub fn sleep(&self, pause: Duration) -> bool {
        match self.rx.recv_timeout(pause) {
            Err(RecvTimeoutError::Timeout) => self.is_fired(),
            _ => true,
        }
    }
}

/// Fires its signal when dropped: what owns threads holds one, so they
/// stop on every path out of its scope.
pub struct FireOnDrop(Option<Shutdown>);

impl FireOnDrop {
    pub fn new(signal: Shutdown) -> FireOnDrop {
        FireOnDrop(Some(signal))
    }

    /// Lets go without firing (the threads found a longer-lived owner).
    pub fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for FireOnDrop {
    fn drop(&mut self) {
        if let Some(signal) = self.0.take() {
            signal.fire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn firing_wakes_every_clone_and_every_child_but_a_child_fires_alone() {
        let root = Shutdown::new();
        let a = root.child();
        let b = root.child();
        let grandchild = a.child();
        b.fire();
        assert!(b.is_fired() && !root.is_fired() && !a.is_fired());
        let observer = a.clone();
        let waiting = std::thread::spawn(move || observer.sleep(Duration::from_secs(30)));
        let started = Instant::now();
        root.fire();
        assert!(waiting.join().unwrap(), "the sleeper saw the signal");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(a.is_fired() && grandchild.is_fired());
        assert!(matches!(
            grandchild.rx().try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        ));
        assert!(
            root.child().is_fired(),
            "a child of a fired signal is fired"
        );
    }

    #[test]
    fn an_unfired_signal_sleeps_its_time_and_fire_on_drop_fires() {
        let root = Shutdown::new();
        assert!(!root.sleep(Duration::from_millis(20)));
        {
            let _guard = FireOnDrop::new(root.child());
        }
        assert!(!root.is_fired(), "only the child fired");
        let child = root.child();
        drop(FireOnDrop::new(root.clone()));
        let kept = Shutdown::new();
        FireOnDrop::new(kept.clone()).defuse();
        assert!(!kept.is_fired(), "a defused guard fires nothing");
        assert!(child.is_fired());
    }
}
