//! systemd's notify protocol (`sd_notify(3)`), spoken directly: a datagram
//! of `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET` (a
//! path, or an abstract name written `@name`). No library: it is a few
//! lines, and the daemon must not depend on libsystemd.
//!
//! What precache says: `READY=1` once, after its first run (or first failed
//! run), so `systemctl start` returns when the cache has been filled or
//! tried; `WATCHDOG=1` every half `WATCHDOG_USEC` while the run loop makes
//! progress (the same rule as `/healthz`), so systemd restarts a loop that
//! is stuck and never one that is merely slow; `STOPPING=1` on the way out.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go; `None` outside systemd.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half the watchdog timeout systemd set for us (`WATCHDOG_USEC`, for
    /// this process: `WATCHDOG_PID`), if any.
    watchdog_every: Option<Duration>,
}

impl Notifier {
    /// From the process environment.
    pub fn from_env() -> Notifier {
        Notifier::new(&|name| std::env::var(name).ok(), std::process::id())
    }

    /// From `env` (tests pass their own), for the process `pid`.
    pub fn new(env: &dyn Fn(&str) -> Option<String>, pid: u32) -> Notifier {
        let socket = env("NOTIFY_SOCKET").and_then(|name| match open(&name) {
            Ok(socket) => Some(socket),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {name} cannot be used: {e}; not notifying systemd");
                None
            }
        });
        let for_us = env("WATCHDOG_PID").is_none_or(|p| p.trim() == pid.to_string());
        let watchdog_every = env("WATCHDOG_USEC")
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us && socket.is_some())
            .map(|usec| Duration::from_micros(usec) / 2);
        Notifier {
            socket,
            watchdog_every,
        }
    }

    /// How often to send `WATCHDOG=1`; `None` when systemd wants none.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket
            && let Err(e) = socket.send_to_addr(message.as_bytes(), addr)
        {
            log::warn!("cannot notify systemd ({message:?}): {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// A reload begins; [`Notifier::ready`] ends it (sd_notify(3): with
    /// the monotonic time, as `Type=notify-reload` requires).
    pub fn reloading(&self) {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

/// An unbound datagram socket and the address `name` means.
fn open(name: &str) -> std::io::Result<(UnixDatagram, std::os::unix::net::SocketAddr)> {
    let addr = match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?
        }
        None => std::os::unix::net::SocketAddr::from_pathname(name)?,
    };
    Ok((UnixDatagram::unbound()?, addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn listener(tag: &str) -> (UnixDatagram, String) {
        let path =
            std::env::temp_dir().join(format!("precache-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("a test socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        (socket, path.display().to_string())
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_the_socket_and_the_watchdog_interval_is_half() {
        let (socket, path) = listener("path");
        let n = Notifier::new(
            &env(&[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "3000000")]),
            42,
        );
        assert_eq!(n.watchdog_every(), Some(Duration::from_millis(1500)));
        n.ready("first run success");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=first run success");
        n.watchdog();
        assert_eq!(receive(&socket), "WATCHDOG=1");
        n.stopping();
        assert_eq!(receive(&socket), "STOPPING=1");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn an_abstract_socket_works_too() {
        let name = format!("precache-notify-test-{}", std::process::id());
        let addr = {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap()
        };
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let n = Notifier::new(&env(&[("NOTIFY_SOCKET", &format!("@{name}"))]), 1);
        n.watchdog();
        assert_eq!(receive(&socket), "WATCHDOG=1");
    }

    #[test]
    fn no_watchdog_for_another_pid_or_without_a_socket() {
        let (_socket, path) = listener("pid");
        let other = Notifier::new(
            &env(&[
                ("NOTIFY_SOCKET", &path),
                ("WATCHDOG_USEC", "1000000"),
                ("WATCHDOG_PID", "7"),
            ]),
            42,
        );
        assert_eq!(other.watchdog_every(), None);
        let none = Notifier::new(&env(&[("WATCHDOG_USEC", "1000000")]), 42);
        assert_eq!(none.watchdog_every(), None);
        none.ready("nothing happens");
        let _ = std::fs::remove_file(&path);
    }
}
