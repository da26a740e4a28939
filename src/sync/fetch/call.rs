//! One list call of the fetch, and a stage of them fanned out on the pool:
//! where the list is in the body, how its records are read, a body read
//! before taken again by its hash, a 304 answered from what the cache
//! holds. A call that fails is a [`FailedCall`] with a typed [`CallError`],
//! never an empty list.

use std::fmt;
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::value::RawValue;

use crate::model::bodies::body_hash;
use crate::model::calls::CallType;
use crate::model::dataset::Dataset;
use crate::model::request::{ApiRequest, Validators};
use crate::model::{self, BodyError, Keyed, Match, Record, Season, SkippedRecord, Tournament};
use crate::upstream::{CallLog, Upstream, UpstreamError};

/// Why one list call gave no list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No usable answer: the upstream did not answer, answered non-2xx,
    /// refused our credentials, or a shutdown stopped the call.
    Upstream(UpstreamError),
    /// An answer whose body holds no list we can read.
    Body { url: String, error: BodyError },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Upstream(e) => write!(f, "{e}"),
            CallError::Body { url, error } => write!(f, "GET {url}: {error}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A call that failed after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCall {
    pub call_type: CallType,
    /// Path and query of the call.
    pub url: String,
    pub error: CallError,
}

impl FailedCall {
    /// The upstream refused our credentials (rather than failing to answer).
    pub fn unauthorized(&self) -> bool {
        matches!(&self.error, CallError::Upstream(e) if e.is_unauthorized())
    }

    /// The upstream answered 404.
    pub fn not_found(&self) -> bool {
        matches!(&self.error, CallError::Upstream(e) if e.status() == Some(404))
    }

    /// A shutdown stopped the call: it says nothing of the upstream.
    pub fn cancelled(&self) -> bool {
        matches!(
            &self.error,
            CallError::Upstream(UpstreamError::Cancelled { .. })
        )
    }
}

/// One list call of the API: where its list is in the body (the names it
/// goes by; none: the whole body), whether an empty body means "none" (the
/// matches endpoint) or a failure, and how a record is read.
pub(super) struct ListCall<T: FromBody> {
    pub body_keys: &'static [&'static str],
    pub empty_is_empty_list: bool,
    pub reader: T::Reader,
}

/// Records a list call reads: the seed's typed records, or a dataset's.
pub(super) trait FromBody: Sized {
    /// What reading needs beyond the texts (a dataset's descriptor).
    type Reader: Copy + Sync;
    fn read(
        reader: Self::Reader,
        buffer: &Arc<String>,
        items: Vec<&RawValue>,
    ) -> (Vec<Self>, Vec<SkippedRecord>);
}

impl<T: Record> FromBody for T {
    type Reader = ();
    fn read((): (), buffer: &Arc<String>, items: Vec<&RawValue>) -> (Vec<T>, Vec<SkippedRecord>) {
        model::read_records::<T>(buffer, items)
    }
}

/// A dataset's records (not a [`Record`]: the identity is the descriptor's).
impl FromBody for Keyed {
    type Reader = &'static Dataset;
    fn read(
        spec: &'static Dataset,
        buffer: &Arc<String>,
        items: Vec<&RawValue>,
    ) -> (Vec<Keyed>, Vec<SkippedRecord>) {
        spec.read_records(buffer, items)
    }
}

pub(super) const SEASONS: ListCall<Season> = ListCall {
    body_keys: &["seasons"],
    empty_is_empty_list: false,
    reader: (),
};
pub(super) const TOURNAMENTS: ListCall<Tournament> = ListCall {
    body_keys: &["tournamentsInSeason"],
    empty_is_empty_list: false,
    reader: (),
};
pub(super) const MATCHES: ListCall<Match> = ListCall {
    // The real API's name first, then the seed's (DESIGN.md section 2).
    body_keys: &["matches", "tournamentMatches"],
    empty_is_empty_list: true,
    reader: (),
};

/// A list call's answer: its records, and the hash of the body they came from.
pub(super) struct Answered<T> {
    pub records: Vec<T>,
    pub body: u128,
    /// The records were taken from the known snapshot.
    pub reused: bool,
    /// The upstream answered 304: the body is the one asked about.
    pub not_modified: bool,
    pub validators: Option<Validators>,
}

impl<T: FromBody> ListCall<T> {
    /// GETs `request` and reads its list; a failed call is never an empty
    /// list. `known` gives the records of a body read before (by its hash),
    /// which are then not read again. `asked_about` is the hash of the body
    /// the request's validators came with: a 304 means that body again.
    fn call(
        &self,
        upstream: &Upstream,
        log: &CallLog,
        request: &ApiRequest,
        asked_about: Option<u128>,
        known: impl Fn(u128) -> Option<Vec<T>>,
    ) -> Result<Answered<T>, FailedCall> {
        let url = format!("/{}", request.path_and_query());
        let failed = |error: CallError| FailedCall {
            call_type: request.call_type,
            url: url.clone(),
            error,
        };
        let refused = |e: UpstreamError| failed(CallError::Upstream(e));
        let unreadable = |error: BodyError| {
            failed(CallError::Body {
                url: url.clone(),
                error,
            })
        };
        let mut response = upstream.get(request, log).map_err(refused)?;
        if response.not_modified() {
            let validators = request
                .validators
                .clone()
                .map(|asked| asked.updated_by(response.validators()));
            if let Some(body) = asked_about
                && let Some(records) = known(body)
            {
                return Ok(Answered {
                    records,
                    body,
                    reused: true,
                    not_modified: true,
                    validators,
                });
            }
            // A 304 for a body we do not hold (the caller pairs validators
            // with held bodies, so only a confused upstream): ask plainly.
            log::warn!(
                "GET {url} answered 304 for a list we do not hold; asking again without validators"
            );
            let plain = request.clone().if_changed(None);
            response = upstream.get(&plain, log).map_err(refused)?;
        }
        let validators = response.validators();
        let body_hash = body_hash(&response.body);
        if let Some(records) = known(body_hash) {
            return Ok(Answered {
                records,
                body: body_hash,
                reused: true,
                not_modified: false,
                validators,
            });
        }
        // The records keep slices of the body rather than copies of them.
        let mut body = String::from_utf8(response.body)
            .map_err(|e| unreadable(BodyError::NotUtf8(e.to_string())))?;
        // The read grew the buffer by doubling; it is kept for a while.
        body.shrink_to_fit();
        let body = Arc::new(body);
        let items =
            model::list_from_body(body.as_bytes(), self.body_keys, self.empty_is_empty_list)
                .map_err(unreadable)?;
        let (records, skipped) = T::read(self.reader, &body, items);
        for why in &skipped {
            log::warn!("skipping a {} record from {url}: {}", why.kind, why.reason);
        }
        Ok(Answered {
            records,
            body: body_hash,
            reused: false,
            not_modified: false,
            validators,
        })
    }
}

/// What every stage of the fetch asks through: the client and the run's
/// call log.
#[derive(Clone, Copy)]
pub(super) struct Asker<'a> {
    pub upstream: &'a Upstream,
    pub log: &'a CallLog,
}

impl Asker<'_> {
    /// One stage of the fan-out: a call per key on the pool, then the
    /// answers of the calls that answered (in key order) and the keys whose
    /// call failed; the failures are added to `failed_calls`.
    pub fn stage<K: Send + Sync, T: FromBody + Send>(
        self,
        keys: Vec<K>,
        request: impl Fn(&K) -> ApiRequest + Sync,
        list: &ListCall<T>,
        conditional: impl Fn(&K) -> Option<(u128, Validators)> + Sync,
        known: impl Fn(&K, u128) -> Option<Vec<T>> + Sync,
        failed_calls: &mut Vec<FailedCall>,
    ) -> (Vec<(K, Answered<T>)>, Vec<K>) {
        let results: Vec<(K, Result<Answered<T>, FailedCall>)> = keys
            .into_par_iter()
            .map(|key| {
                let (asked_about, validators) = conditional(&key).unzip();
                let request = request(&key).if_changed(validators);
                let asked_about = asked_about.filter(|_| request.validators.is_some());
                let result = list.call(self.upstream, self.log, &request, asked_about, |body| {
                    known(&key, body)
                });
                (key, result)
            })
            .collect();
        let (mut answered, mut failed) = (Vec::new(), Vec::new());
        for (key, result) in results {
            match result {
                Ok(answer) => answered.push((key, answer)),
                Err(call) => {
                    failed_calls.push(call);
                    failed.push(key);
                }
            }
        }
        (answered, failed)
    }
}

/// Nothing read before: every body is read.
pub(super) fn unknown<K, T>(_: &K, _: u128) -> Option<Vec<T>> {
    None
}

/// No validators: the call is asked plainly.
pub(super) fn unconditional<K>(_: &K) -> Option<(u128, Validators)> {
    None
}
