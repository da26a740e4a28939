//! The README's least-privilege Redis user, as an operator applies it.

/// The password the tests give the README's user.
pub const ACL_PASSWORD: &str = "s3cret-acl-pw";

/// The `ACL SETUSER` line of the README, as written there.
fn readme_acl_rule() -> String {
    let readme = std::fs::read_to_string(crate::repo_path("README.md")).expect("README.md");
    let block = readme
        .split("```acl\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README gives the ACL rule in an ```acl block");
    block.trim().to_string()
}

/// Runs the README's rule (its password replaced by [`ACL_PASSWORD`]) on
/// `conn`, the default user's.
pub fn apply_readme_acl(conn: &mut redis::Connection) {
    let rule = readme_acl_rule().replace("CHANGE-ME", ACL_PASSWORD);
    let mut words = rule.split_whitespace();
    assert_eq!(words.next(), Some("ACL"));
    let mut cmd = redis::cmd("ACL");
    for word in words {
        cmd.arg(word);
    }
    let _: () = cmd.query(conn).expect("the README's rule is valid ACL");
}

/// Asserts that Redis refused `result` for want of permissions.
pub fn assert_refused(result: redis::RedisResult<redis::Value>, what: &str) {
    let err = result.expect_err(what);
    assert!(err.to_string().contains("no permissions"), "{what}: {err}");
}

/// What the README's rule must refuse, refused on `user` (a connection
/// logged in as that user): the flushes, `CONFIG`, `KEYS`, keys outside it.
pub fn assert_the_rule_refuses(user: &mut redis::Connection) {
    assert_refused(redis::cmd("FLUSHALL").query(user), "FLUSHALL");
    assert_refused(redis::cmd("FLUSHDB").query(user), "FLUSHDB");
    assert_refused(
        redis::cmd("CONFIG").arg("GET").arg("*").query(user),
        "CONFIG GET",
    );
    assert_refused(redis::cmd("KEYS").arg("*").query(user), "KEYS");
    assert_refused(
        redis::cmd("SET").arg("someone:else").arg("x").query(user),
        "a key outside the rule",
    );
    assert_refused(
        redis::cmd("GET").arg("session:42").query(user),
        "reading outside the rule",
    );
}
