//! Name resolution for the upstream agent, remembered for a short while.
//!
//! ureq resolves the host before every request, even one that goes out on
//! a pooled keep-alive connection, and with a timeout set it does so on a
//! freshly spawned thread. At norway scale that is 1,500 threads and
//! `getaddrinfo` calls per run, a fifth of a no-change run's CPU. Answers
//! are kept per scheme and authority for [`TTL`], so a moved upstream is
//! followed within that time; failures are never kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a resolved address is used before it is looked up again.
pub const TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    answers: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl CachingResolver {
    fn remembered(&self, key: &str, now: Instant) -> Option<ResolvedSocketAddrs> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < TTL)
            .map(|(_, addrs)| addrs.clone())
    }
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        let now = Instant::now();
        if let Some(addrs) = self.remembered(&key, now) {
            return Ok(addrs);
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        // Only a few hosts are ever asked (the API and its token endpoint);
        // the bound keeps a misconfiguration from growing the map.
        if answers.len() >= 16 {
            answers.clear();
        }
        answers.insert(key, (now, addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_for_its_host_and_port_only() {
        let resolver = CachingResolver::default();
        let config = Config::default();
        let uri: Uri = "http://127.0.0.1:8080/a".parse().unwrap();
        let first = resolver
            .resolve(&uri, &config, NextTimeout::default())
            .unwrap();
        assert_eq!(first[0], "127.0.0.1:8080".parse().unwrap());
        let now = Instant::now();
        assert!(resolver.remembered("http://127.0.0.1:8080", now).is_some());
        assert!(resolver.remembered("http://127.0.0.1:8081", now).is_none());
        assert!(
            resolver
                .remembered("http://127.0.0.1:8080", now + TTL)
                .is_none(),
            "an answer older than the TTL is looked up again"
        );
        let other: Uri = "http://127.0.0.1:8081/a".parse().unwrap();
        let second = resolver
            .resolve(&other, &config, NextTimeout::default())
            .unwrap();
        assert_eq!(second[0], "127.0.0.1:8081".parse().unwrap());
    }
}
