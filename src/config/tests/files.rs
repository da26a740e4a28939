//! The settings that name files: Redis credentials and TLS, the
//! listener's TLS and users. Each is read and checked at load, and neither
//! a secret nor where a private key lies is ever shown.

use std::path::{Path, PathBuf};

use super::super::*;
use super::{MINIMAL, load};

#[test]
fn a_redis_user_and_password_file_go_into_the_url_and_nowhere_shown() {
    let dir = std::env::temp_dir().join(format!("precache-redis-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("redis_password");
    std::fs::write(&pw, "p@ss:w/rd-xyz\n").unwrap();
    let text = format!(
        "{MINIMAL}[redis]\nurl = \"rediss://cache.example:6380/2\"\nusername = \"precache\"\npassword_file = {pw:?}\n"
    );
    let c = load(&text, &[]).unwrap();
    assert_eq!(
        c.redis.url.expose(),
        "rediss://precache:p%40ss%3Aw%2Frd-xyz@cache.example:6380/2"
    );
    let info = ::redis::IntoConnectionInfo::into_connection_info(c.redis.url.expose()).unwrap();
    assert_eq!(info.redis_settings().username(), Some("precache"));
    assert_eq!(info.redis_settings().password(), Some("p@ss:w/rd-xyz"));
    let shown = c.effective_toml();
    assert!(!shown.contains("xyz") && !shown.contains("p%40"), "{shown}");
    assert!(shown.contains("username = \"precache\""), "{shown}");
    // The environment names the file as well; a user alone is a user.
    let env_pw = pw.to_str().unwrap();
    let c = load(
        MINIMAL,
        &[
            ("PRECACHE_REDIS_PASSWORD_FILE", env_pw),
            ("PRECACHE_REDIS_USERNAME", "u"),
        ],
    )
    .unwrap();
    assert!(c.redis.url.expose().starts_with("redis://u:p%40ss"));
    let c = load(&format!("{MINIMAL}[redis]\nusername = \"u\"\n"), &[]).unwrap();
    assert_eq!(c.redis.url.expose(), "redis://u@127.0.0.1:6379/0");
    // Credentials in two places, or a socket URL: named, never echoed.
    for url in [
        "redis://old:secret-xyz@host:6379/0",
        "unix:///run/redis.sock",
    ] {
        let text = format!("{MINIMAL}[redis]\nurl = {url:?}\npassword_file = {pw:?}\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("redis.url") && !err.contains("xyz"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A private CA, a client certificate and a password file in a fresh
/// directory, for the `[redis]` TLS settings.
struct RedisFiles {
    dir: PathBuf,
    ca: crate::sim::local::LocalCa,
    client: crate::sim::local::Issued,
    pw: PathBuf,
}

impl RedisFiles {
    fn new(tag: &str) -> RedisFiles {
        let dir = std::env::temp_dir().join(format!("precache-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = crate::sim::local::LocalCa::create(&dir.join("ca"), "test CA").unwrap();
        let client = ca.issue_client("client").unwrap();
        let pw = dir.join("redis_password");
        std::fs::write(&pw, "pw-xyz\n").unwrap();
        RedisFiles {
            dir,
            ca,
            client,
            pw,
        }
    }
}

impl Drop for RedisFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A path as a TOML string.
fn file(p: &Path) -> String {
    format!("{:?}", p.to_str().unwrap())
}

#[test]
fn sentinels_and_tls_files_are_read_at_load_and_the_key_never_shown() {
    let RedisFiles { ca, client, pw, .. } = &RedisFiles::new("redis-tls");
    let sentinel_tls = format!(
        "{MINIMAL}[redis]\nsentinels = [\"10.0.0.5:26379\", \"[::1]:26380\"]\nmaster_name = \"cache\"\n\
         tls = true\ntls_ca_file = {}\ntls_cert_file = {}\ntls_key_file = {}\n\
         username = \"precache\"\npassword_file = {}\n",
        file(&ca.ca_pem),
        file(&client.cert_pem),
        file(&client.key_pem),
        file(pw),
    );
    let c = load(&sentinel_tls, &[]).unwrap();
    assert!(c.redis.uses_sentinel() && c.redis.uses_tls());
    assert_eq!(
        c.redis.password.as_ref().map(Secret::expose),
        Some("pw-xyz")
    );
    // The URL is not where a sentinel set's credentials go.
    assert!(!c.redis.url.expose().contains("pw-xyz"));
    assert!(c.redis.tls_files.key.is_some() && c.redis.tls_files.ca.is_some());
    let shown = c.effective_toml();
    let key_path = client.key_pem.to_str().unwrap();
    assert!(
        !shown.contains(key_path) && !shown.contains("pw-xyz"),
        "{shown}"
    );
    assert!(shown.contains("tls_key_file = \"<redacted>\""), "{shown}");
    assert!(shown.contains("master_name = \"cache\""), "{shown}");
    assert!(
        !format!("{c:?}").contains("PRIVATE KEY"),
        "Debug shows no key"
    );
    assert!(!format!("{c:?}").contains(key_path), "nor its path");
    // The environment lists sentinels comma-separated.
    let c = load(
        MINIMAL,
        &[
            ("PRECACHE_REDIS_SENTINELS", "a:1, b:2"),
            ("PRECACHE_REDIS_MASTER_NAME", "m"),
        ],
    )
    .unwrap();
    assert_eq!(c.redis.sentinels, ["a:1", "b:2"]);
    assert_eq!(
        sentinel_address("[2001:db8::5]:26379").map_err(|p| p.to_string()),
        Ok(("2001:db8::5".to_string(), 26379))
    );
    assert_eq!(c.redis.describe(), "master \"m\" of sentinels a:1,b:2");
}

#[test]
fn bad_sentinel_and_tls_settings_are_named_at_load_never_echoed() {
    let files = RedisFiles::new("redis-tls-bad");
    let (ca, client) = (&files.ca, &files.client);
    let bad = |redis: &str| -> String {
        load(&format!("{MINIMAL}[redis]\n{redis}"), &[])
            .unwrap_err()
            .to_string()
    };
    for (redis, key, says) in [
        (
            "sentinels = [\"a:1\"]\n",
            "redis.master_name",
            "must be set",
        ),
        ("master_name = \"m\"\n", "redis.sentinels", "must list"),
        (
            "sentinels = [\"nohost\"]\nmaster_name = \"m\"\n",
            "redis.sentinels",
            "host:port",
        ),
        (
            "sentinels = [\"a:0\"]\nmaster_name = \"m\"\n",
            "redis.sentinels",
            "host:port",
        ),
        (
            "sentinels = \"a:1\"\nmaster_name = \"m\"\n",
            "redis.sentinels",
            "list of strings",
        ),
        (
            "sentinels = [\"2001:db8::1\"]\nmaster_name = \"m\"\n",
            "redis.sentinels",
            "host:port",
        ),
        (
            "sentinels = [\"redis://:pw-xyz@h:1\"]\nmaster_name = \"m\"\n",
            "redis.sentinels",
            "host:port",
        ),
        (
            "url = \"redis://h:1/0\"\nsentinels = [\"a:1\"]\nmaster_name = \"m\"\n",
            "redis.url",
            "not used with redis.sentinels",
        ),
        ("tls = true\n", "redis.tls", "rediss://"),
        (
            &format!("tls_ca_file = {}\n", file(&ca.ca_pem)),
            "redis.tls_ca_file",
            "TLS is off",
        ),
        (
            &format!(
                "sentinels = [\"a:1\"]\nmaster_name = \"m\"\ntls_ca_file = {}\n",
                file(&ca.ca_pem)
            ),
            "redis.tls_ca_file",
            "redis.tls = true",
        ),
        (
            &format!(
                "url = \"rediss://h:1/0\"\ntls_cert_file = {}\n",
                file(&client.cert_pem)
            ),
            "redis.tls_key_file",
            "must be set with redis.tls_cert_file",
        ),
        (
            &format!(
                "url = \"rediss://h:1/0\"\ntls_ca_file = {}\n",
                file(&client.key_pem)
            ),
            "redis.tls_ca_file",
            "holds no certificate",
        ),
        (
            &format!(
                "url = \"rediss://h:1/0\"\ntls_cert_file = {}\ntls_key_file = {}\n",
                file(&client.cert_pem),
                file(&client.cert_pem)
            ),
            "redis.tls_key_file",
            "holds no private key",
        ),
    ] {
        let err = bad(redis);
        assert!(err.contains(key) && err.contains(says), "{redis}: {err}");
        assert!(!err.contains("pw-xyz"), "{err}");
    }
    // An unreadable key file: the key named, not its path.
    let missing = files.dir.join("no-such.key");
    let err = bad(&format!(
        "url = \"rediss://h:1/0\"\ntls_cert_file = {}\ntls_key_file = {}\n",
        file(&client.cert_pem),
        file(&missing)
    ));
    assert!(err.contains("redis.tls_key_file"), "{err}");
    assert!(!err.contains("no-such.key"), "{err}");
}

#[test]
fn the_listeners_tls_and_users_are_checked_and_never_shown() {
    let dir = std::env::temp_dir().join(format!("precache-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = crate::sim::local::LocalCa::create(&dir.join("ca"), "web CA").unwrap();
    let cert = ca.issue_server("web").unwrap();
    let hash = bcrypt::hash_with_salt("pw", 4, [1u8; 16])
        .unwrap()
        .to_string();
    let text = format!(
        "{MINIMAL}[metrics]\ntls_cert_file = {}\ntls_key_file = {}\nbasic_auth_users = [\"prom:{hash}\"]\n",
        file(&cert.cert_pem),
        file(&cert.key_pem),
    );
    let c = load(&text, &[]).unwrap();
    assert!(c.metrics.web.tls_pem.is_some());
    assert_eq!(c.metrics.web.basic_auth_users[0].0, "prom");
    let shown = c.effective_toml();
    assert!(!shown.contains(&hash) && !shown.contains(cert.key_pem.to_str().unwrap()));
    assert!(shown.contains("prom:<bcrypt hash>"), "{shown}");
    assert!(!format!("{c:?}").contains(&hash), "Debug shows no hash");
    let bad = |metrics: &str| {
        load(&format!("{MINIMAL}[metrics]\n{metrics}"), &[])
            .unwrap_err()
            .to_string()
    };
    for (metrics, key, says) in [
        (
            format!("tls_cert_file = {}\n", file(&cert.cert_pem)),
            "metrics.tls_key_file",
            "must be set",
        ),
        (
            format!("tls_key_file = {}\n", file(&cert.key_pem)),
            "metrics.tls_cert_file",
            "must be set",
        ),
        (
            format!(
                "tls_cert_file = {}\ntls_key_file = {}\n",
                file(&cert.key_pem),
                file(&cert.key_pem)
            ),
            "metrics.tls_cert_file",
            "holds no certificate",
        ),
        (
            "basic_auth_users = [\"prom:plaintext-pw\"]\n".to_string(),
            "metrics.basic_auth_users",
            "user:bcrypt-hash",
        ),
        (
            "basic_auth_users = [\"no-colon\"]\n".to_string(),
            "metrics.basic_auth_users",
            "user:bcrypt-hash",
        ),
    ] {
        let err = bad(&metrics);
        assert!(err.contains(key) && err.contains(says), "{metrics}: {err}");
        assert!(!err.contains("plaintext-pw"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_ca_file_must_hold_a_certificate() {
    let dir = std::env::temp_dir().join(format!("precache-ca-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (path, expect) in [
        (dir.join("missing.pem"), "cannot read"),
        (not_pem, "holds no certificate"),
    ] {
        let text = format!("{MINIMAL}ca_file = {:?}\n", path.display().to_string());
        let msg = load(&text, &[]).unwrap_err().to_string();
        assert!(msg.contains("upstream.ca_file"), "{msg}");
        assert!(msg.contains(expect), "{msg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
