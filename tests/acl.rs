//! precache as the least-privilege Redis user the README gives: every run
//! kind and the warm-up work under it, and what the rule must refuse is
//! refused.

use kit::*;
use precache::config::Secret;
use precache::report::RunStatus;
use precache::sim::ChurnSpec;
use std::time::Duration;

fn user_conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(format!(
        "redis://precache:{ACL_PASSWORD}@127.0.0.1:{}/0",
        redis.port
    ))
    .unwrap()
    .get_connection()
    .unwrap()
}

#[test]
fn precache_runs_as_the_readme_user_and_the_rule_refuses_the_rest() {
    let harness = Harness::small("acl", 95);
    // The operator applies the rule as the default user; precache then
    // connects as the README's user.
    apply_readme_acl(&mut harness.redis().conn());
    let port = harness.redis().port;
    let mut rig = harness.rig(|config| {
        config.warm.enabled = true;
        config.sync.adaptive = false;
        every_dataset_every_run(config);
        config.redis.url = Secret::new(format!(
            "redis://precache:{ACL_PASSWORD}@127.0.0.1:{port}/0"
        ));
    });
    let cold = rig.run();
    assert_status(&cold, RunStatus::Success);
    assert!(!cold.warm_enqueued.is_empty());
    let counts = rig.warm_up(&cold.warm_enqueued, Duration::from_secs(60));
    assert_eq!(counts.failed, 0, "every warm-up settles as this user");
    assert!(!rig.redis().keys("GET:*").is_empty());

    let unchanged = rig.run();
    assert_eq!(unchanged.summary.status, RunStatus::Success);
    assert_eq!(unchanged.changes.as_ref().unwrap().total(), 0);
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 3,
        tournaments_renamed: 1,
        data: [("org_teams_modified".to_string(), 2)].into(),
        ..ChurnSpec::default()
    });
    let churned = rig.run();
    assert_eq!(churned.summary.status, RunStatus::Success);
    assert_eq!(reported(&churned), expected);
    let reloaded = rig.run_fresh();
    assert_eq!(reloaded.summary.status, RunStatus::Success);
    assert_eq!(reloaded.changes.as_ref().unwrap().total(), 0);

    // What the rule refuses, refused (and the data still there after).
    assert_the_rule_refuses(&mut user_conn(rig.redis()));
    assert!(
        rig.redis().get("tournament_matches").is_some(),
        "nothing was flushed"
    );
    // The command line as this user: the checks, the history, a clear.
    // This time the user and a password file, as a unit would set them.
    let password_file = rig.harness().dir().join("redis_password");
    std::fs::write(&password_file, format!("{ACL_PASSWORD}\n")).unwrap();
    let cfg = rig.harness().write_config_in(
        "cli",
        &[
            ("redis", "username", quoted("precache")),
            (
                "redis",
                "password_file",
                quoted(password_file.to_str().unwrap()),
            ),
        ],
    );
    for args in [
        &["check-config", "--connect"][..],
        &["status"],
        &["season", "200001"],
    ] {
        let (code, _, stderr) = run_cli(&cfg, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains(ACL_PASSWORD), "{args:?} shows no password");
    }
    let (code, cleared, stderr) = run_cli(&cfg, &["clear"]);
    assert_eq!(code, Some(0), "clear: {stderr}");
    assert!(
        cleared["deleted_keys"]
            .as_array()
            .is_some_and(|k| k.len() >= 9)
    );
    assert_eq!(rig.redis().get("tournament_matches"), None);
    // The rule can be applied again (an operator's re-run) and still holds.
    apply_readme_acl(&mut rig.redis().conn());
    assert_refused(
        redis::cmd("FLUSHALL").query(&mut user_conn(rig.redis())),
        "FLUSHALL again",
    );
}
