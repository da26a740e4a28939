//! SIGINT and SIGTERM: the first stops the loop (a watchdog cancels the
//! upstream at half the grace period and exits at its end), a second exits
//! at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::DaemonError;
use crate::upstream::Upstream;

/// Signals seen so far; the handler decides on the first and the second.
pub struct StopSignal {
    pub rx: Receiver<()>,
    pub stopping: Arc<AtomicBool>,
}

/// Installs the SIGINT/SIGTERM handler. First signal: stop requested, a
/// watchdog cancels the upstream at half the grace period and exits the
/// process at its end. Second signal: exit at once (status 130).
pub fn install_signal_handler(
    upstream: Arc<Upstream>,
    grace: Duration,
) -> Result<StopSignal, DaemonError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let stopping = Arc::new(AtomicBool::new(false));
    let count = AtomicUsize::new(0);
    let flag = stopping.clone();
    ctrlc::set_handler(move || {
        if count.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("precache: second signal, exiting now");
            std::process::exit(130);
        }
        log::info!("shutdown requested: no new run will start (grace {grace:?})");
        flag.store(true, Ordering::SeqCst);
        let _ = tx.try_send(());
        let upstream = upstream.clone();
        let _ = std::thread::Builder::new()
            .name("shutdown-watchdog".into())
            .spawn(move || {
                std::thread::sleep(grace / 2);
                log::warn!(
                    "run still in progress at half the grace period: cancelling upstream calls"
                );
                upstream.cancel();
                std::thread::sleep(grace - grace / 2);
                log::error!(
                    "shutdown grace period exceeded: exiting; Redis holds the last complete run"
                );
                std::process::exit(0);
            });
    })
    .map_err(DaemonError::Signal)?;
    Ok(StopSignal { rx, stopping })
}
