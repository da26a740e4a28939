//! Process logging: human-readable lines on stderr (and, for the daemon, a
//! log file), set up once by the CLI. Never given secrets.

use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger,
};
use std::fs::OpenOptions;
use std::path::Path;

fn log_config() -> simplelog::Config {
    let mut builder = ConfigBuilder::new();
    builder
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Error)
        .set_thread_level(log::LevelFilter::Off)
        // Dependencies' debug chatter (ureq, rustls) would drown ours;
        // tiny_http (vendored) says when it cannot accept connections.
        .add_filter_allow_str("precache")
        .add_filter_allow_str("tiny_http");
    let _ = builder.set_time_offset_to_local();
    builder.build()
}

/// Logs to stderr, and to `file` when given. Errors (e.g. a logger already
/// installed, in tests) are ignored: logging is best-effort.
pub fn init(level: log::LevelFilter, file: Option<&Path>) {
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![TermLogger::new(
        level,
        log_config(),
        TerminalMode::Stderr,
        ColorChoice::Never,
    )];
    if let Some(path) = file {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => loggers.push(WriteLogger::new(level, log_config(), f)),
            Err(e) => eprintln!(
                "cannot open log file {}: {e}; logging to stderr only",
                path.display()
            ),
        }
    }
    let _ = CombinedLogger::init(loggers);
}
