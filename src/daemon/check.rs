//! `precache check-config --connect`: proves that what the configuration
//! names answers, before the service is started with it. Redis (and that
//! it is a master: a replica refuses the writes), the token endpoint (that
//! it accepts the client id and secret) and the API itself (that it
//! accepts the token). Each check names its target as it may be shown: no
//! password, no secret, no token.

use crate::config::Config;
use crate::model::list_from_body;
use crate::model::request::ApiRequest;
use crate::store::{Connector, Keys, Store, StoreErrorKind};
use crate::upstream::{CallLog, Upstream};

/// One check: what was tried, and what it said or why it failed.
#[derive(Debug)]
pub struct Check {
    pub what: String,
    pub outcome: Result<String, String>,
    /// The failure is the configuration's (a refused certificate, CA or
    /// password), not the target's being down: `check-config` exits 2.
    pub config_fault: bool,
}

/// Every check, in order; later ones run even when an earlier one failed,
/// so one invocation shows everything that is wrong.
pub fn connect(config: &Config, this_year: i32) -> Vec<Check> {
    let mut checks = vec![redis(config)];
    match Upstream::new(&config.upstream) {
        Err(e) => checks.push(Check {
            what: format!("upstream {}", config.upstream.api_url),
            outcome: Err(e.to_string()),
            config_fault: false,
        }),
        Ok(upstream) => {
            checks.push(Check {
                what: format!("token endpoint {}", config.upstream.token_url),
                outcome: upstream
                    .check_credentials()
                    .map(|()| {
                        format!(
                            "accepts client {:?} ({})",
                            config.upstream.client_id,
                            upstream.describe()
                        )
                    })
                    .map_err(|e| e.to_string()),
                config_fault: false,
            });
            checks.push(api(&upstream, config, this_year));
        }
    }
    checks
}

fn redis(config: &Config) -> Check {
    let what = format!("redis {}", config.redis.describe());
    let mut store = match Connector::new(&config.redis) {
        Ok(connector) => Store::connected_by(connector, Keys::of(config)),
        Err(e) => {
            return Check {
                what,
                outcome: Err(e.to_string()),
                config_fault: true,
            };
        }
    };
    let answered = store.ping().and_then(|()| store.role());
    let config_fault = answered
        .as_ref()
        .is_err_and(|e| e.kind == StoreErrorKind::Rejected);
    let outcome = answered.map_err(|e| e.to_string()).and_then(|role| {
        match (role.as_str(), store.master()) {
            ("master", Some(at)) => Ok(format!("master found at {at}, answers, role master")),
            ("master", None) => Ok("answers, role master".to_string()),
            (other, _) => Err(format!(
                "answers, but its role is {other}: precache writes, and needs the master"
            )),
        }
    });
    Check {
        what,
        outcome,
        config_fault,
    }
}

/// One seasons call, as a run's first: the API takes the token and answers
/// a list.
fn api(upstream: &Upstream, config: &Config, this_year: i32) -> Check {
    let sport = config.sync.sport_ids.first().copied().unwrap_or(72);
    let request = ApiRequest::seasons(this_year, sport);
    let what = format!(
        "api {}/{}",
        config.upstream.api_url,
        request.path_and_query()
    );
    let outcome = upstream
        .get(&request, &CallLog::default())
        .map_err(|e| e.to_string())
        .and_then(|response| {
            list_from_body(&response.body, &["seasons"], false)
                .map(|list| format!("HTTP {}, {} season(s)", response.status, list.len()))
                .map_err(|e| format!("HTTP {}, but {e}", response.status))
        });
    Check {
        what,
        outcome,
        config_fault: false,
    }
}
