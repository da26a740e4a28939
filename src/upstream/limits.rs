//! The process-wide limits every call goes through: at most
//! `upstream.max_concurrency` in flight, and request starts spaced by
//! `upstream.max_requests_per_sec`.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::util::lock;

/// Counting semaphore: at most `limit` requests in flight process-wide.
pub(super) struct Gate {
    in_flight: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

pub(super) struct GatePermit<'a>(&'a Gate);

impl Gate {
    pub(super) fn new(limit: usize) -> Gate {
        Gate {
            in_flight: Mutex::new(0),
            freed: Condvar::new(),
            limit: limit.max(1),
        }
    }

    pub(super) fn acquire(&self) -> GatePermit<'_> {
        let mut n = lock(&self.in_flight);
        while *n >= self.limit {
            n = self.freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        GatePermit(self)
    }
}

impl Drop for GatePermit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.in_flight) -= 1;
        self.0.freed.notify_one();
    }
}

/// Spaces request starts at least `1 / rate` seconds apart, so no one-second
/// window sees more than `rate` (+1 at its edge) requests.
pub(super) struct RateLimiter {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl RateLimiter {
    /// `rate` requests per second. Config bounds it to [0.01, 100000]; the
    /// clamp keeps a hand-built config from panicking here.
    pub(super) fn new(rate: f64) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(
                1.0 / rate.clamp(crate::config::MIN_REQUESTS_PER_SEC, 1e9),
            ),
            next_slot: Mutex::new(Instant::now()),
        }
    }

    pub(super) fn wait(&self) {
        let slot = {
            let mut next = lock(&self.next_slot);
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        }
    }
}
