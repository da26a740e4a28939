//! The `precache` binary and its command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `precache` binary cargo built for this test or benchmark.
///
/// `CARGO_BIN_EXE_precache` is only defined while compiling the root
/// package's own tests and benches, not this crate, so the binary is found
/// from the running executable instead: cargo puts a test or benchmark at
/// `target/<profile>/deps/<name>-<hash>` and the package's binary at
/// `target/<profile>/precache`.
pub fn bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the running test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()));
        let bin: PathBuf = profile_dir.join(format!("precache{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "the precache binary is not at {} (found from {}): the kit expects to run in a \
             test or benchmark of the root package, for which cargo builds the binary",
            bin.display(),
            exe.display()
        );
        bin.into_os_string()
            .into_string()
            .expect("the binary's path is UTF-8")
    })
}

/// `precache --config CONFIG`, to which a test adds the command, its
/// arguments and its environment.
pub fn cli(config: &Path) -> Command {
    let mut command = Command::new(bin());
    command.arg("--config").arg(config);
    command
}

/// Runs `precache --config CONFIG ARGS...`; returns its exit code, its
/// stdout as JSON (`Null` when it is not JSON) and its stderr.
pub fn run_cli(config: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = cli(config)
        .args(args)
        .output()
        .expect("the precache binary runs");
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `precache --config CONFIG once ARGS...`, which must exit 0; its summary.
pub fn once_ok(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["once"];
    all.extend(args);
    let (code, summary, stderr) = run_cli(config, &all);
    assert_eq!(code, Some(0), "once {args:?}: {stderr}");
    summary
}
