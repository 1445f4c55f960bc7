//! Test controls: the call log, fault injection and ARM-style per-subscription throttling.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Whether ARM counts a call against the read or the write budget (token calls are neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallKind {
    /// GET / HEAD.
    Read,
    /// PUT, PATCH, POST, DELETE.
    Write,
    /// Token endpoint / OpenID configuration.
    Auth,
}

/// One request seen by the simulator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// Sequence number (starts at 1).
    pub seq: u64,
    /// When it arrived.
    pub time: Timestamp,
    /// HTTP method.
    pub method: String,
    /// Operation name, e.g. `Workspaces_Get`, `StorageAccounts_ListKeys`, `Token`.
    pub operation: String,
    /// Request path (no query).
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Read / write / auth.
    pub kind: CallKind,
    /// Caller object id, once authenticated.
    pub principal: Option<String>,
}

/// Per-operation counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpCount {
    /// All calls.
    pub calls: u64,
    /// Calls counted as reads.
    pub reads: u64,
    /// Calls counted as writes.
    pub writes: u64,
    /// Calls answered with status >= 400.
    pub errors: u64,
}

/// The call log.
#[derive(Debug, Default)]
pub struct CallLog {
    records: Vec<CallRecord>,
    next: u64,
}

impl CallLog {
    /// Appends a record.
    pub fn push(
        &mut self,
        method: &str,
        operation: &str,
        path: &str,
        status: u16,
        kind: CallKind,
        principal: Option<String>,
    ) {
        self.next += 1;
        self.records.push(CallRecord {
            seq: self.next,
            time: Timestamp::now(),
            method: method.into(),
            operation: operation.into(),
            path: path.into(),
            status,
            kind,
            principal,
        });
    }

    /// All records, oldest first.
    pub fn records(&self) -> &[CallRecord] {
        &self.records
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// Counters per operation name.
    pub fn summary(&self) -> BTreeMap<String, OpCount> {
        let mut out: BTreeMap<String, OpCount> = BTreeMap::new();
        for r in &self.records {
            let c = out.entry(r.operation.clone()).or_default();
            c.calls += 1;
            match r.kind {
                CallKind::Read => c.reads += 1,
                CallKind::Write => c.writes += 1,
                CallKind::Auth => {}
            }
            if r.status >= 400 {
                c.errors += 1;
            }
        }
        out
    }
}

/// What an injected fault does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum FaultAction {
    /// Answer with this ARM error instead of handling the request.
    #[serde(rename_all = "camelCase")]
    Error {
        /// HTTP status.
        status: u16,
        /// error.code.
        code: String,
        /// error.message.
        #[serde(default)]
        message: Option<String>,
        /// Retry-After seconds to send, if any.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Delay the response; the request is then handled normally.
    Latency {
        /// Added delay in milliseconds.
        millis: u64,
    },
    /// Let the request start its LRO normally, but make the operation end as Failed.
    #[serde(rename_all = "camelCase")]
    LroFailure {
        /// HTTP status the Location poll answers with (default 400; the Azure-AsyncOperation body says `Failed`).
        #[serde(default)]
        status: Option<u16>,
        /// error.code of the failed operation.
        code: String,
        /// error.message.
        #[serde(default)]
        message: Option<String>,
    },
}

/// A fault-injection rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Operation name to match (case-insensitive), or `*` for every ARM operation.
    pub operation: String,
    /// The effect.
    pub action: FaultAction,
    /// Fire only this many times, then remove the rule.
    #[serde(default)]
    pub count: Option<u32>,
    /// Fire with this probability (0..=1); default always.
    #[serde(default)]
    pub rate: Option<f64>,
}

impl FaultRule {
    /// A rule failing `operation` with `status`/`code` every time.
    pub fn error(operation: &str, status: u16, code: &str) -> Self {
        Self {
            operation: operation.into(),
            action: FaultAction::Error { status, code: code.into(), message: None, retry_after: None },
            count: None,
            rate: None,
        }
    }

    /// Limits the rule to `n` firings.
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }
}

/// The faults that fire for one request.
#[derive(Debug, Default)]
pub struct FiredFaults {
    /// Total added latency.
    pub latency: Duration,
    /// First error to answer with.
    pub error: Option<FaultAction>,
    /// LRO failure to attach to an operation this request starts.
    pub lro_failure: Option<(u16, String, String)>,
}

/// Active fault rules, keyed by id.
#[derive(Debug, Default)]
pub struct Faults {
    rules: BTreeMap<u64, FaultRule>,
    next: u64,
}

impl Faults {
    /// Adds a rule, returns its id.
    pub fn add(&mut self, rule: FaultRule) -> u64 {
        self.next += 1;
        self.rules.insert(self.next, rule);
        self.next
    }

    /// Removes one rule.
    pub fn remove(&mut self, id: u64) -> bool {
        self.rules.remove(&id).is_some()
    }

    /// Removes all rules.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules, with ids.
    pub fn list(&self) -> Vec<(u64, FaultRule)> {
        self.rules.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Evaluates the rules for one request to `operation`, consuming counted firings.
    pub fn fire(&mut self, operation: &str) -> FiredFaults {
        let mut out = FiredFaults::default();
        let mut exhausted = vec![];
        for (id, rule) in &mut self.rules {
            if rule.operation != "*" && !rule.operation.eq_ignore_ascii_case(operation) {
                continue;
            }
            if let Some(rate) = rule.rate
                && rand::random::<f64>() >= rate
            {
                continue;
            }
            if let Some(n) = rule.count.as_mut() {
                if *n == 0 {
                    continue;
                }
                *n -= 1;
                if *n == 0 {
                    exhausted.push(*id);
                }
            }
            match &rule.action {
                FaultAction::Latency { millis } => out.latency += Duration::from_millis(*millis),
                FaultAction::Error { .. } => {
                    if out.error.is_none() {
                        out.error = Some(rule.action.clone());
                    }
                }
                FaultAction::LroFailure { status, code, message } => {
                    out.lro_failure = Some((
                        status.unwrap_or(400),
                        code.clone(),
                        message.clone().unwrap_or_else(|| "The operation failed (injected by the simulator).".into()),
                    ));
                }
            }
        }
        for id in exhausted {
            self.rules.remove(&id);
        }
        out
    }
}

/// Token-bucket sizes and refill rates (ARM: reads 250 @ 25/s, writes 200 @ 10/s per subscription).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleConfig {
    /// Read bucket capacity.
    pub read_capacity: f64,
    /// Read tokens added per second.
    pub read_refill_per_sec: f64,
    /// Write bucket capacity.
    pub write_capacity: f64,
    /// Write tokens added per second.
    pub write_refill_per_sec: f64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self { read_capacity: 250.0, read_refill_per_sec: 25.0, write_capacity: 200.0, write_refill_per_sec: 10.0 }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, capacity: f64, refill: f64, now: Instant) -> Result<u64, u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * refill).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            // Remaining tokens are reported as a whole number, like ARM's header.
            Ok(self.tokens.floor() as u64)
        } else {
            let wait = if refill > 0.0 { ((1.0 - self.tokens) / refill).ceil() } else { 60.0 };
            Err((wait as u64).max(1))
        }
    }
}

/// Per-subscription read/write buckets.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Current configuration.
    pub config: ThrottleConfig,
    buckets: HashMap<(String, bool), Bucket>,
}

impl Throttle {
    /// A throttle with `config`.
    pub fn new(config: ThrottleConfig) -> Self {
        Self { config, buckets: HashMap::new() }
    }

    /// Takes one token: `Ok(remaining)` or `Err(retry_after_secs)`.
    pub fn take(&mut self, subscription: &str, write: bool) -> Result<u64, u64> {
        let (cap, refill) = if write {
            (self.config.write_capacity, self.config.write_refill_per_sec)
        } else {
            (self.config.read_capacity, self.config.read_refill_per_sec)
        };
        let now = Instant::now();
        self.buckets
            .entry((subscription.to_ascii_lowercase(), write))
            .or_insert(Bucket { tokens: cap, last: now })
            .take(cap, refill, now)
    }

    /// Replaces the configuration and refills every bucket.
    pub fn reconfigure(&mut self, config: ThrottleConfig) {
        self.config = config;
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_reports_retry_after() {
        let mut t = Throttle::new(ThrottleConfig {
            read_capacity: 2.0,
            read_refill_per_sec: 0.5,
            write_capacity: 1.0,
            write_refill_per_sec: 0.1,
        });
        assert_eq!(t.take("S", false), Ok(1));
        assert_eq!(t.take("s", false), Ok(0));
        assert_eq!(t.take("s", false), Err(2));
        assert_eq!(t.take("s", true), Ok(0));
        assert_eq!(t.take("s", true), Err(10));
        assert_eq!(t.take("other", true), Ok(0));
    }

    #[test]
    fn counted_faults_expire_and_match_by_operation() {
        let mut f = Faults::default();
        f.add(FaultRule::error("Workspaces_Get", 500, "InternalServerError").times(1));
        assert!(f.fire("Storage_Get").error.is_none());
        assert!(f.fire("workspaces_get").error.is_some());
        assert!(f.fire("Workspaces_Get").error.is_none());
        assert!(f.list().is_empty());
    }
}
