//! Process logging: human-readable lines on stderr (and, for the daemon, a
//! log file rotated by size), set up once by the CLI. Never given secrets.
//!
//! Under systemd (`JOURNAL_STREAM` set) stderr lines carry no timestamp:
//! journald stamps each line itself; each starts with its syslog priority
//! (`<3>` for an error … `<7>` for debug, sd-daemon(3)), which journald
//! strips and records, so `journalctl -p err` finds our errors. The log file is optional
//! (`logs.file`), and is rotated before a line would take it past
//! `logs.max_file_bytes`, keeping `logs.keep_files` older files
//! (`precache.log.1` is the newest), so it never grows without bound.

use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger,
};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

fn log_config(timestamps: bool) -> simplelog::Config {
    let mut builder = ConfigBuilder::new();
    builder
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Error)
        .set_thread_level(log::LevelFilter::Off)
        .add_filter_allow_str(LOGGED_CRATES[0])
        .add_filter_allow_str(LOGGED_CRATES[1]);
    if !timestamps {
        builder.set_time_level(log::LevelFilter::Off);
    }
    let _ = builder.set_time_offset_to_local();
    builder.build()
}

/// The daemon's log file and its rotation.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: usize,
}

impl LogFile {
    /// From `[logs]`; `None` when `logs.file` is empty.
    pub fn from_config(logs: &crate::config::LogsConfig) -> Option<LogFile> {
        Some(LogFile {
            path: logs.file_path()?,
            max_bytes: logs.max_file_bytes,
            keep: logs.keep_files,
        })
    }
}

/// Whether stderr goes to journald (systemd sets `JOURNAL_STREAM` for a
/// service whose stderr is the journal).
pub fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Logs to stderr, and to `file` when given, at `level`. Errors (e.g. a
/// logger already installed, in tests) are ignored: logging is best-effort.
pub fn init(level: log::LevelFilter, file: Option<&LogFile>) {
    // The loggers pass everything; the one filter is the global level, so
    // a config reload can change it (`set_level`).
    let all = log::LevelFilter::Trace;
    let mut loggers: Vec<Box<dyn SharedLogger>> = if under_journald() {
        vec![Box::new(JournalStderr)]
    } else {
        vec![TermLogger::new(
            all,
            log_config(true),
            TerminalMode::Stderr,
            ColorChoice::Never,
        )]
    };
    if let Some(file) = file {
        match RotatingFile::open(file.clone()) {
            Ok(f) => loggers.push(WriteLogger::new(all, log_config(true), f)),
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "cannot open log file {}: {e}; logging to stderr only",
                    file.path.display()
                );
            }
        }
    }
    let _ = CombinedLogger::init(loggers);
    set_level(level);
}

/// Crates whose lines are logged (dependencies' debug chatter, ureq's and
/// rustls', would drown ours; tiny_http, vendored, says when it cannot
/// accept connections).
const LOGGED_CRATES: [&str; 2] = ["precache", "tiny_http"];

/// The syslog priority journald reads from a line's `<N>` prefix.
pub fn journal_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Stderr under journald: `<N>[LEVEL] target: message`, no timestamp.
struct JournalStderr;

impl log::Log for JournalStderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        LOGGED_CRATES
            .iter()
            .any(|name| metadata.target().starts_with(name))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "<{}>[{}] {}: {}\n",
            journal_priority(record.level()),
            record.level(),
            record.target(),
            record.args()
        );
        // One write per line, so threads' lines never interleave.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = io::stderr().flush();
    }
}

impl SharedLogger for JournalStderr {
    fn level(&self) -> log::LevelFilter {
        log::LevelFilter::Trace
    }

    fn config(&self) -> Option<&simplelog::Config> {
        None
    }

    fn as_log(self: Box<Self>) -> Box<dyn log::Log> {
        self
    }
}

/// The level from now on (`logs.level`, live on a config reload).
pub fn set_level(level: log::LevelFilter) {
    log::set_max_level(level);
}

/// A log file that rotates by size. Whole lines only: the logger writes a
/// record in pieces, and a rotation must not split one across two files.
pub struct RotatingFile {
    target: LogFile,
    file: File,
    /// Bytes in the current file.
    size: u64,
    /// The record being written, until its newline.
    line: Vec<u8>,
}

impl RotatingFile {
    pub fn open(target: LogFile) -> io::Result<RotatingFile> {
        if let Some(dir) = target.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&target.path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            target,
            file,
            size,
            line: Vec::new(),
        })
    }

    /// `path.N` for the Nth newest rotated file.
    fn rotated(path: &Path, n: usize) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// The current file becomes `.1`, `.1` becomes `.2`, …; the oldest
    /// beyond `keep` is overwritten. A current file already gone (an
    /// operator, logrotate) is simply started afresh.
    fn rotate(&mut self) -> io::Result<()> {
        let path = &self.target.path;
        if path.exists() {
            for n in (1..self.target.keep).rev() {
                let from = Self::rotated(path, n);
                if from.exists() {
                    std::fs::rename(&from, Self::rotated(path, n + 1))?;
                }
            }
            std::fs::rename(path, Self::rotated(path, 1))?;
        }
        self.reopen()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.target.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    /// Whether the path no longer names the file we write (deleted or
    /// moved away by someone else): then we reopen it, rather than write
    /// into a file nobody can read and whose space is never freed.
    fn replaced(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.target.path), self.file.metadata()) {
            (Ok(on_disk), Ok(ours)) => on_disk.ino() != ours.ino() || on_disk.dev() != ours.dev(),
            _ => true,
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.replaced() {
            let _ = self.reopen();
        }
        if self.size > 0 && self.size + len > self.target.max_bytes {
            // A failed rotation keeps logging to the current file, and is
            // tried again a whole file later, not at every line.
            if let Err(e) = self.rotate() {
                eprintln!("cannot rotate log file {}: {e}", self.target.path.display());
                self.size = 0;
            }
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|b| *b == b'\n') {
            let rest = self.line.split_off(end + 1);
            let line = std::mem::replace(&mut self.line, rest);
            self.write_line(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.write_line(&line)?;
        }
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("precache-logging-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rotation_keeps_keep_files_under_the_size_and_never_splits_a_line() {
        let dir = temp_dir("rotate");
        let path = dir.join("precache.log");
        let target = LogFile {
            path: path.clone(),
            max_bytes: 1000,
            keep: 3,
        };
        let mut f = RotatingFile::open(target).unwrap();
        for n in 0..500 {
            // Written in pieces, as the logger does.
            write!(f, "2026-11-26T10:00:00Z [INFO] ").unwrap();
            writeln!(f, "line {n:04} of the run").unwrap();
        }
        f.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "precache.log",
                "precache.log.1",
                "precache.log.2",
                "precache.log.3"
            ]
        );
        let mut last_seen = None;
        for name in [
            "precache.log.3",
            "precache.log.2",
            "precache.log.1",
            "precache.log",
        ] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(text.len() <= 1000, "{name}: {} bytes", text.len());
            for line in text.lines() {
                assert!(
                    line.starts_with("2026-11-26T10:00:00Z [INFO] line ")
                        && line.ends_with("of the run"),
                    "{name}: a split line {line:?}"
                );
                let n: u32 = line[33..37].parse().unwrap();
                assert!(last_seen.is_none_or(|l| n == l + 1), "{name}: order");
                last_seen = Some(n);
            }
        }
        assert_eq!(
            last_seen,
            Some(499),
            "the newest line is in the current file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_deleted_or_moved_away_is_started_afresh() {
        let dir = temp_dir("deleted");
        let path = dir.join("p.log");
        let mut f = RotatingFile::open(LogFile {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        })
        .unwrap();
        writeln!(f, "{}", "a".repeat(60)).unwrap();
        std::fs::remove_file(&path).unwrap();
        writeln!(f, "{}", "b".repeat(60)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "b".repeat(60) + "\n"
        );
        std::fs::rename(&path, dir.join("moved")).unwrap();
        writeln!(f, "{}", "c".repeat(60)).unwrap();
        writeln!(f, "{}", "d".repeat(60)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "d".repeat(60) + "\n"
        );
        assert_eq!(
            std::fs::read_to_string(RotatingFile::rotated(&path, 1)).unwrap(),
            "c".repeat(60) + "\n"
        );
        assert!(
            !RotatingFile::rotated(&path, 2).exists(),
            "no history shifted away"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_existing_file_counts_toward_the_size() {
        let dir = temp_dir("existing");
        let path = dir.join("p.log");
        std::fs::write(&path, "x".repeat(900) + "\n").unwrap();
        let mut f = RotatingFile::open(LogFile {
            path: path.clone(),
            max_bytes: 1000,
            keep: 1,
        })
        .unwrap();
        writeln!(f, "{}", "y".repeat(200)).unwrap();
        assert!(RotatingFile::rotated(&path, 1).exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 201);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
