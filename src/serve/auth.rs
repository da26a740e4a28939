//! Who may ask what of the HTTP side: the admin endpoints' bearer token
//! (`metrics.admin_token`), and, when `metrics.basic_auth_users` is set,
//! basic auth against bcrypt-hashed passwords for everything else (the
//! manner of Prometheus exporter-toolkit's web configuration).
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), and a
//! scraper sends the same password every 15 s: a password once verified
//! is remembered as a keyed digest (xxh3 with a key of this process), so
//! later requests cost a hash, not a bcrypt. A wrong password always pays
//! the bcrypt.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;

use crate::config::WebConfig;
use crate::util::lock;

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0 && a.len() == b.len()
}

/// Whether an `Authorization` header value carries the bearer `token`.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    header
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// The users allowed to read, and the passwords already verified.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// User → keyed digest of the password last verified for them.
    verified: Mutex<HashMap<String, u128>>,
    key: u64,
}

impl BasicAuth {
    /// `None` when no user is configured (no auth).
    pub fn from_config(web: &WebConfig) -> Option<BasicAuth> {
        (!web.basic_auth_users.is_empty()).then(|| BasicAuth {
            users: web
                .basic_auth_users
                .iter()
                .map(|(user, hash)| (user.clone(), hash.expose().to_string()))
                .collect(),
            verified: Mutex::new(HashMap::new()),
            key: process_key(),
        })
    }

    /// Whether an `Authorization` header value names a user and the
    /// password its hash was made from.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        let digest = xxhash_rust::xxh3::xxh3_128_with_seed(password.as_bytes(), self.key);
        if lock(&self.verified).get(&user) == Some(&digest) {
            return true;
        }
        if bcrypt::verify(&password, hash).unwrap_or(false) {
            lock(&self.verified).insert(user, digest);
            true
        } else {
            false
        }
    }
}

/// `Basic base64(user:password)`; the scheme's name in any case (RFC 9110).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = encoded.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A key no client can know: the time and addresses of this process.
fn process_key() -> u64 {
    let stack = 0u8;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    xxhash_rust::xxh3::xxh3_64(format!("{nanos} {:p} {}", &stack, std::process::id()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        // Lengths that differ by a multiple of 256 are still different.
        assert!(!constant_time_eq(&[0u8; 256], b""));
        assert!(bearer_matches(Some("Bearer t0k"), "t0k"));
        assert!(!bearer_matches(Some("Basic t0k"), "t0k"));
        assert!(!bearer_matches(None, "t0k"));
    }

    #[test]
    fn basic_auth_checks_the_bcrypt_hash_and_remembers_a_verified_password() {
        // Cost 4: the lowest, for a fast test.
        let hash = bcrypt::hash_with_salt("pw:with colon", 4, [7u8; 16])
            .unwrap()
            .to_string();
        let web = WebConfig {
            basic_auth_users: vec![("prom".into(), Secret::new(hash))],
            ..WebConfig::default()
        };
        let auth = BasicAuth::from_config(&web).unwrap();
        let header = |user: &str, pw: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
            )
        };
        assert!(auth.allows(Some(&header("prom", "pw:with colon"))));
        assert!(
            auth.allows(Some(&header("prom", "pw:with colon"))),
            "remembered"
        );
        let lower = header("prom", "pw:with colon").replacen("Basic", "basic", 1);
        assert!(auth.allows(Some(&lower)), "the scheme in any case");
        assert!(!auth.allows(Some(&header("prom", "wrong"))));
        assert!(!auth.allows(Some(&header("other", "pw:with colon"))));
        assert!(!auth.allows(Some("Basic !!!not-base64")));
        assert!(!auth.allows(Some("Bearer x")));
        assert!(!auth.allows(None));
        assert!(BasicAuth::from_config(&WebConfig::default()).is_none());
    }
}
