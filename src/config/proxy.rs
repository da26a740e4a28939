//! Which proxy the upstream is reached through: `upstream.proxy`, or else
//! the environment's (`HTTPS_PROXY` for an https API, `HTTP_PROXY` for an
//! http one, then `ALL_PROXY`; lower case too), minus the hosts `NO_PROXY`
//! names. Resolved once, when the config loads, so `check-config` shows
//! what the service will use and no library reads the environment behind
//! our back.
//!
//! `NO_PROXY` is matched here, the way curl and Python read it, against
//! the two hosts precache calls (the API's and the token endpoint's): an
//! entry names a host and its subdomains (`example.com`, `.example.com`,
//! `*.example.com`), an IP address or a CIDR range (`10.0.0.0/8`), or
//! everything (`*`); a port on an entry is ignored. The client is then
//! told the matched hosts exactly.

use std::net::IpAddr;

use super::raw::proxy_url;
use super::{Config, ConfigError, EnvLookup, ProxyConfig, Secret};

impl Config {
    pub(super) fn resolve_proxy(&mut self, env: &EnvLookup<'_>) -> Result<(), ConfigError> {
        let var = |name: &str| env(name).ok().filter(|v| !v.trim().is_empty());
        if self.upstream.proxy.is_none() {
            let names: &[&str] = if self.upstream.api_url.starts_with("https://") {
                &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            } else {
                &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            };
            if let Some((name, url)) = names.iter().find_map(|n| Some((*n, var(n)?))) {
                let url = proxy_url(&url).map_err(|problem| ConfigError::Key {
                    key: "upstream.proxy".into(),
                    source: format!("from environment variable {name}"),
                    problem: problem.to_string(),
                })?;
                self.upstream.proxy = Some(ProxyConfig {
                    url: Secret(url),
                    source: name.to_string(),
                    no_proxy: Vec::new(),
                });
            }
        }
        let Some(proxy) = &mut self.upstream.proxy else {
            return Ok(());
        };
        let entries = var("NO_PROXY")
            .or_else(|| var("no_proxy"))
            .unwrap_or_default();
        let entries: Vec<&str> = entries.split(',').map(str::trim).collect();
        let ours = [&self.upstream.api_url, &self.upstream.token_url].map(|u| url_host(u));
        let direct_hosts: Vec<&String> = ours
            .iter()
            .filter(|host| bypasses(&entries, host))
            .collect();
        if direct_hosts.len() == ours.len() {
            // Nothing of ours goes through it.
            self.upstream.proxy = None;
        } else {
            // As the client sees a URL's host: an IPv6 address in brackets.
            let mut direct: Vec<String> = direct_hosts
                .into_iter()
                .map(|h| {
                    if h.contains(':') {
                        format!("[{h}]")
                    } else {
                        h.clone()
                    }
                })
                .collect();
            direct.dedup();
            proxy.no_proxy = direct;
        }
        Ok(())
    }
}

/// The host of an `http(s)://` URL (without port; an IPv6 address without
/// its brackets), lower case.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    host.to_ascii_lowercase()
}

/// Whether a `NO_PROXY` list sends `host` straight there.
fn bypasses(entries: &[&str], host: &str) -> bool {
    let host_ip: Option<IpAddr> = host.parse().ok();
    entries.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry == "*" {
            return true;
        }
        if let Some((net, bits)) = entry.split_once('/') {
            return match (net.parse::<IpAddr>(), bits.parse::<u32>(), host_ip) {
                (Ok(net), Ok(bits), Some(ip)) => in_range(ip, net, bits),
                _ => false,
            };
        }
        // A port on the entry is ignored ("host:8080", "[::1]:8080"), but
        // not an IPv6 address's colons.
        let entry = match entry.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None if entry.parse::<IpAddr>().is_ok() => entry.as_str(),
            None => entry.rsplit_once(':').map_or(entry.as_str(), |(h, _)| h),
        };
        let domain = entry
            .strip_prefix("*.")
            .or_else(|| entry.strip_prefix('.'))
            .unwrap_or(entry);
        !domain.is_empty()
            && (host == domain
                || host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.ends_with('.')))
    })
}

/// Whether `ip` is in `net/bits` (the same family only).
fn in_range(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_reads_as_curl_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("example.com", "example.com", true),
            ("example.com", "api.example.com", true),
            ("example.com", "badexample.com", false),
            (".example.com", "example.com", true),
            (".example.com", "api.example.com", true),
            ("*.example.com", "api.example.com", true),
            ("Example.COM:8443", "example.com", true),
            ("*", "anything.example", true),
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.1.2.3", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.0/8", "localhost", false),
            ("::1", "::1", true),
            ("[::1]", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("", "example.com", false),
        ];
        for (entry, host, expected) in cases {
            assert_eq!(bypasses(&[entry], host), *expected, "{entry:?} vs {host}");
        }
    }

    #[test]
    fn hosts_come_out_of_urls() {
        assert_eq!(url_host("https://Data.NIF.no"), "data.nif.no");
        assert_eq!(url_host("http://127.0.0.1:8099/connect/token"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:8443/x"), "::1");
    }
}
