//! SIGINT and SIGTERM: the first stops the loop (a watchdog cancels the
//! upstream at half the grace period and exits at its end), a second exits
//! at once. SIGHUP (what `systemctl reload` and log rotators send) asks for
//! a config reload and never stops the process.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::DaemonError;
use crate::lifecycle::Shutdown;
use crate::upstream::Upstream;

/// Installs the SIGINT/SIGTERM handler. First signal: fires `stop` (the
/// process's one shutdown signal, `crate::lifecycle`); a watchdog cancels
/// the upstream at half the grace period and exits the process at its end.
/// Second signal: exit at once (status 130).
pub fn install_signal_handler(
    stop: Shutdown,
    upstream: Arc<Upstream>,
    grace: Duration,
) -> Result<(), DaemonError> {
    let count = AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if count.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("precache: second signal, exiting now");
            std::process::exit(130);
        }
        log::info!("shutdown requested: no new run will start (grace {grace:?})");
        stop.fire();
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
    .map_err(DaemonError::Signal)
}

static RELOAD_PIPE: AtomicI32 = AtomicI32::new(-1);

/// The SIGHUP handler: one byte into the pipe, which is all a signal
/// handler may safely do; a thread turns it into a message.
extern "C" fn on_sighup(_: libc::c_int) {
    let fd = RELOAD_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is a static
        // byte. A full pipe (reloads already pending) drops this one. The
        // interrupted code's errno is put back as it was.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, b"h".as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Blocks SIGHUP in this thread, and so in every thread it starts from
/// now on, until [`install_reload_handler`]: a reload asked for while the
/// daemon starts waits for it instead of killing it (SIGHUP's default).
/// Called by the long-running commands before they start any thread.
pub fn defer_sighup() {
    set_sighup_mask(libc::SIG_BLOCK);
}

fn set_sighup_mask(how: libc::c_int) {
    // SAFETY: a signal set built with sigemptyset/sigaddset and passed to
    // pthread_sigmask for the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Installs the SIGHUP handler; each signal becomes one message on the
/// returned channel (signals arriving while one is pending merge into it).
/// Must come after [`install_signal_handler`]: ctrlc's `termination`
/// feature takes SIGHUP as a stop, and this replaces that for SIGHUP alone.
/// Then unblocks SIGHUP in this thread (see [`defer_sighup`]): one that
/// came meanwhile is delivered now, as a reload.
pub fn install_reload_handler() -> Result<Receiver<()>, DaemonError> {
    let failed = |what: &str| {
        DaemonError::Spawn(
            "the SIGHUP handler",
            std::io::Error::other(format!("{what}: {}", std::io::Error::last_os_error())),
        )
    };
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: `fds` is the two-int array pipe2(2) fills.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(failed("pipe2"));
    }
    let [read_fd, write_fd] = fds;
    // SAFETY: fcntl on a descriptor we just made; non-blocking so the
    // handler never blocks on a full pipe.
    if unsafe { libc::fcntl(write_fd, libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(failed("fcntl"));
    }
    RELOAD_PIPE.store(write_fd, Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
    // the handler is an `extern "C" fn(c_int)`, as sa_sigaction wants
    // without SA_SIGINFO.
    let installed = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sighup as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut())
    };
    if installed != 0 {
        return Err(failed("sigaction"));
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    // SAFETY: `read_fd` is ours alone from here on.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(read_fd) };
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            while let Ok(1) = pipe.read(&mut byte) {
                if let Err(crossbeam_channel::TrySendError::Disconnected(())) = tx.try_send(()) {
                    return;
                }
            }
        })
        .map_err(|e| DaemonError::Spawn("the SIGHUP thread", e))?;
    set_sighup_mask(libc::SIG_UNBLOCK);
    Ok(rx)
}
