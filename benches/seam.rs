//! The seed's keys before and after the dataset seam (issue 21):
//! `cargo bench --bench seam`.
//!
//! Builds precache as it was before the seam (`SEAM_BASE`, by default the
//! parent of the commit that began it) in a git worktree, then writes a
//! cold cache with each binary from the same simulator data, at norway
//! scale: the old binary against the old simulator and against the new
//! one, the new binary (every dataset on, as shipped) against the new one.
//! Every seed key (the five and each `tournaments_season_*`) must hold
//! the same `data` bytes in all three; only `last_updated` may differ. It
//! prints what it compared and panics on the first difference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kit::{Harness, SimCommand, SimProcess, quoted};
use serde_json::value::RawValue;

const SCALE: &str = "norway";
const SEED: u64 = 7;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The revision before the seam.
fn seam_base(repo: &Path) -> String {
    if let Ok(base) = std::env::var("SEAM_BASE") {
        return base;
    }
    let first = git(
        repo,
        &["log", "--reverse", "--format=%H", "--grep=^Dataset seam"],
    );
    let first = first.lines().next().expect("a commit that begins the seam");
    git(repo, &["rev-parse", &format!("{first}^")])
}

/// The pre-seam binary, built in a worktree under `target/`.
fn build_base(repo: &Path, base: &str) -> PathBuf {
    let tree = repo.join("target/seam-base/tree");
    let target = repo.join("target/seam-base/target");
    if tree.exists() {
        let _ = git(
            repo,
            &["worktree", "remove", "--force", tree.to_str().unwrap()],
        );
    }
    git(
        repo,
        &["worktree", "add", "--detach", tree.to_str().unwrap(), base],
    );
    println!("building {base} in {} (a few minutes)", tree.display());
    let status = Command::new(env!("CARGO"))
        .current_dir(&tree)
        .args(["build", "--release", "--bin", "precache"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the pre-seam revision builds");
    target.join("release/precache")
}

/// `binary`'s simulator of the benchmark's data set.
fn start_sim(binary: &Path) -> SimProcess {
    SimCommand::new(SCALE).binary(binary).seed(SEED).start()
}

/// A cold `once --no-warm` of `binary` against `sim`; every seed key's
/// `data` text.
fn cold_write(binary: &Path, sim: &SimProcess) -> BTreeMap<String, String> {
    // The simulator is shared between writes: the harness has only Redis,
    // and a config of the keys the pre-seam revision knows too.
    let h = Harness::new("seam").redis().build();
    let api = sim.url();
    let config = h.write_minimal_config(&[
        ("upstream", "api_url", quoted(api)),
        (
            "upstream",
            "token_url",
            quoted(&format!("{api}/connect/token")),
        ),
        ("warm", "enabled", "false".into()),
        ("logs", "debug_snapshots", "false".into()),
    ]);
    let out = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .args(["once", "--no-warm"])
        .output()
        .expect("precache once runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conn = h.redis().conn();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("tournaments_season_*")
        .query(&mut conn)
        .expect("KEYS");
    keys.extend(
        [
            "valid_seasons",
            "tournaments_in_season",
            "root_tournaments",
            "tournament_matches",
            "unique_team_ids",
        ]
        .map(String::from),
    );
    keys.into_iter()
        .map(|key| {
            let text: String = redis::cmd("GET").arg(&key).query(&mut conn).expect("GET");
            #[derive(serde::Deserialize)]
            struct Entry<'a> {
                #[serde(borrow)]
                data: &'a RawValue,
            }
            let entry: Entry = serde_json::from_str(&text).expect("a data entry");
            (key, entry.data.get().to_string())
        })
        .collect()
}

fn compare(what: &str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: the same keys"
    );
    let bytes: usize = a.values().map(String::len).sum();
    for (key, text) in a {
        assert!(text == &b[key], "{what}: {key} differs");
    }
    println!(
        "  {what}: {} keys, {bytes} bytes of data, byte-identical",
        a.len()
    );
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let base = seam_base(&repo);
    let old = build_base(&repo, &base);
    let new = PathBuf::from(kit::bin());
    println!(
        "== the seed's keys before ({}) and after the seam, {SCALE} seed {SEED}",
        &base[..10]
    );
    let old_sim = start_sim(&old);
    let old_on_old = cold_write(&old, &old_sim);
    drop(old_sim);
    let new_sim = start_sim(&new);
    let old_on_new = cold_write(&old, &new_sim);
    let new_on_new = cold_write(&new, &new_sim);
    compare(
        "the old client, old simulator vs new simulator",
        &old_on_old,
        &old_on_new,
    );
    compare(
        "the same simulator, old client vs new client",
        &old_on_new,
        &new_on_new,
    );
    let tree = repo.join("target/seam-base/tree");
    let _ = git(
        &repo,
        &["worktree", "remove", "--force", tree.to_str().unwrap()],
    );
}
