//! What the benchmarks measure: Redis's traffic and processes' memory.

/// Bytes Redis has received so far (`INFO stats`).
pub fn net_input_bytes(redis_url: &str) -> u64 {
    let mut conn = redis::Client::open(redis_url)
        .and_then(|c| c.get_connection())
        .expect("redis answers");
    net_input_bytes_of(&mut conn)
}

/// [`net_input_bytes`] of the Redis `conn` is connected to.
pub fn net_input_bytes_of(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(conn).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A `kB` field of `/proc/PID/status` (Linux; `None` for this process),
/// e.g. `VmRSS` or `VmHWM` (the peak); NaN when it cannot be read.
pub fn proc_status_kib(pid: Option<u32>, field: &str) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Peak resident memory of this process so far (Linux), in MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_kib(None, "VmHWM") / 1024.0
}
