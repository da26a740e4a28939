//! What the allocator holds: memory a run freed is handed back to the
//! system after the run, and the live heap is read for the metrics (a leak
//! grows it; allocator fragmentation grows only the resident size). glibc
//! only; elsewhere these do nothing and know nothing.

/// The glibc tunable that turns its per-thread caches off.
const THREAD_CACHES_OFF: &str = "glibc.malloc.tcache_count=0";

/// Marks a process restarted by [`bound_thread_caches`] (named by the
/// config, which tells it from a configuration variable).
pub const RESTARTED: &str = crate::config::ALLOCATOR_TUNED_VAR;

/// Restarts this process (same pid, same arguments) with glibc's
/// per-thread caches turned off, unless `GLIBC_TUNABLES` already says how
/// many to keep. Called first thing by the long-running commands.
///
/// Why: each of the daemon's long-lived threads (fetch pool, writers,
/// warm-up workers) keeps a private cache of freed chunks, and those
/// chunks pin pages of the arenas they came from. Over 2,000 runs that
/// grew the resident size 11-14 % and the live heap 16 %, slowing but not
/// stopping; with the caches off both stayed within 2 % (soak benchmark).
/// glibc reads the tunable only at start-up, hence the re-exec. An
/// operator who wants the caches sets `GLIBC_TUNABLES` with a
/// `tcache_count` of their own and is left alone.
pub fn bound_thread_caches() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        // Set on the restarted process: it never restarts twice, whatever
        // glibc made of the tunables (2.36 rewrites the variable in place,
        // keeping only the first tunable visible).
        if std::env::var_os(RESTARTED).is_some() {
            return;
        }
        let current = std::env::var_os("GLIBC_TUNABLES");
        let Some(tunables) = tunables_with_thread_caches_off(current.as_deref()) else {
            return;
        };
        let mut args = std::env::args_os();
        let Some(arg0) = args.next() else {
            return;
        };
        let args: Vec<std::ffi::OsString> = args.collect();
        let restart = |program: &std::path::Path| {
            std::process::Command::new(program)
                .arg0(&arg0)
                .args(&args)
                .env("GLIBC_TUNABLES", &tunables)
                .env(RESTARTED, "1")
                .exec()
        };
        // The binary's own path first: the kernel names the process after
        // it (`ps`, `top`, the journal show "precache", not "exe"). If that
        // file was replaced or removed since start (an upgrade in place),
        // /proc/self/exe is still this very binary.
        if let Ok(path) = std::env::current_exe() {
            let _ = restart(&path);
        }
        let err = restart(std::path::Path::new("/proc/self/exe"));
        // Before an exec, std sets SIGPIPE back to its default (the end of
        // the process) and does not undo that when the exec fails; Rust
        // programs ignore it, so a write to a closed pipe is an error.
        const SIGPIPE: i32 = 13;
        const SIG_IGN: usize = 1;
        unsafe extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        // SAFETY: setting a signal's disposition to "ignore" takes no
        // pointers and is what the Rust runtime did at start-up.
        unsafe {
            signal(SIGPIPE, SIG_IGN);
        }
        // exec returns only on failure; the daemon works without it.
        eprintln!(
            "precache: could not restart with {THREAD_CACHES_OFF} ({err}); \
             continuing with glibc's per-thread caches"
        );
    }
}

/// Blocks of this size or more are mapped on their own and handed back
/// to the system the moment they are freed.
const MMAP_THRESHOLD: i32 = 512 << 10;

/// Fixes glibc's threshold for mapping large blocks on their own. By
/// default it rises to the largest block freed so far (up to 32 MiB), after
/// which the run's multi-megabyte buffers (response bodies, the values
/// written to Redis) come from the arenas and leave holes there that
/// `malloc_trim` cannot close: the norway soak's resident size drifted
/// 6-8 MiB above a flat live heap. A few mmap calls per run cost less.
pub fn map_large_blocks_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt takes two integers and only changes a setting
        // of the allocator; glibc takes its own lock to do so.
        let ok = unsafe { mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok == 0 {
            log::debug!("mallopt(M_MMAP_THRESHOLD) refused; glibc's dynamic threshold stays");
        }
    }
}

/// `GLIBC_TUNABLES` with the per-thread caches turned off, or `None` when
/// it already sets a `tcache_count` (the operator's choice) or is not
/// UTF-8 (left as it is rather than guessed at).
fn tunables_with_thread_caches_off(
    current: Option<&std::ffi::OsStr>,
) -> Option<std::ffi::OsString> {
    let current = match current {
        None => return Some(THREAD_CACHES_OFF.into()),
        Some(value) => value.to_str()?,
    };
    let already_set = current
        .split(':')
        .any(|tunable| tunable.trim().starts_with("glibc.malloc.tcache_count="));
    if already_set {
        None
    } else if current.trim().is_empty() {
        Some(THREAD_CACHES_OFF.into())
    } else {
        Some(format!("{current}:{THREAD_CACHES_OFF}").into())
    }
}

/// Hands memory freed by the run back to the system. A run parses and
/// drops tens of megabytes on a dozen threads; glibc keeps such freed
/// memory in its per-thread arenas, so without this the daemon's RSS crept
/// up run after run while its live heap stayed flat (measured with
/// valgrind's massif over 400 runs: 4.8-5.1 MB live, RSS +3 KB per run).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes no pointers and only releases
        // free memory; it is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Bytes the allocator has handed out and not got back: the live heap,
/// which tells a leak (it grows) from fragmentation (RSS grows, this does
/// not). glibc's `mallinfo2`, summed over its arenas; `None` elsewhere.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[repr(C)]
        struct MallInfo2 {
            arena: usize,
            ordblks: usize,
            smblks: usize,
            hblks: usize,
            hblkhd: usize,
            usmblks: usize,
            fsmblks: usize,
            uordblks: usize,
            fordblks: usize,
            keepcost: usize,
        }
        unsafe extern "C" {
            fn mallinfo2() -> MallInfo2;
        }
        // SAFETY: mallinfo2 (glibc >= 2.33) takes nothing and returns a
        // plain struct of counters, laid out as declared above.
        let info = unsafe { mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_thread_caches_are_turned_off_unless_the_operator_chose_a_count() {
        let off = |v: Option<&str>| {
            tunables_with_thread_caches_off(v.map(OsStr::new))
                .map(|t| t.into_string().expect("utf-8"))
        };
        assert_eq!(off(None).as_deref(), Some(THREAD_CACHES_OFF));
        assert_eq!(off(Some("")).as_deref(), Some(THREAD_CACHES_OFF));
        assert_eq!(
            off(Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0")
        );
        assert_eq!(off(Some("glibc.malloc.tcache_count=7")), None);
        assert_eq!(
            off(Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0")),
            None
        );
        // A name that only starts like it is another tunable.
        assert!(off(Some("glibc.malloc.tcache_count_x=1")).is_some());
    }

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_is_left_alone() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            tunables_with_thread_caches_off(Some(OsStr::from_bytes(b"glibc.\xff"))),
            None
        );
    }
}
