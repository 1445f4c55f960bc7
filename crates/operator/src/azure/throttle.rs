//! Client-side, per-subscription limiter fed by ARM's `x-ms-ratelimit-remaining-subscription-*` headers.
//!
//! ARM throttles per subscription (and principal) with token buckets. Every response tells how many requests of
//! that kind remain; when that number drops below a threshold the client delays further calls of the same kind, in
//! proportion to how close it is to zero, so the bucket can refill before ARM answers 429. A 429's `Retry-After`
//! blocks the whole subscription for that long.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;

use super::ids::SubscriptionId;

/// Header carrying the remaining subscription reads.
pub const REMAINING_READS: &str = "x-ms-ratelimit-remaining-subscription-reads";
/// Header carrying the remaining subscription writes.
pub const REMAINING_WRITES: &str = "x-ms-ratelimit-remaining-subscription-writes";
/// Header carrying the remaining subscription deletes (newer ARM throttling counts deletes separately).
pub const REMAINING_DELETES: &str = "x-ms-ratelimit-remaining-subscription-deletes";

/// Tuning of the limiter.
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottlePolicy {
    /// Start slowing reads when fewer than this many remain.
    pub read_threshold: u32,
    /// Start slowing writes (and deletes) when fewer than this many remain.
    pub write_threshold: u32,
    /// Delay applied when the remaining count reaches zero; scaled linearly above it.
    pub max_delay: Duration,
    /// A remaining count older than this is ignored (the bucket has refilled meanwhile).
    pub stale_after: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        // ARM's buckets: 250 reads / 200 writes, refilled in about 20 s (CONTRACTS.md §2).
        Self {
            read_threshold: 50,
            write_threshold: 40,
            max_delay: Duration::from_secs(5),
            stale_after: Duration::from_secs(20),
        }
    }
}

/// Kind of request, for picking the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// GET.
    Read,
    /// PUT, PATCH, POST.
    Write,
    /// DELETE.
    Delete,
}

#[derive(Debug, Default)]
struct Remaining {
    count: u32,
    at: Option<Instant>,
}

#[derive(Debug, Default)]
struct SubState {
    reads: Remaining,
    writes: Remaining,
    deletes: Remaining,
    blocked_until: Option<Instant>,
}

/// Shared per-subscription limiter state.
#[derive(Debug, Default)]
pub struct SubscriptionLimiter {
    policy: ThrottlePolicy,
    subs: Mutex<HashMap<SubscriptionId, SubState>>,
}

impl SubscriptionLimiter {
    /// Creates a limiter.
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self { policy, subs: Mutex::new(HashMap::new()) }
    }

    /// How long to wait before sending a request of `kind` to `sub`.
    pub fn delay_for(&self, sub: SubscriptionId, kind: RequestKind) -> Duration {
        let now = Instant::now();
        let subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = subs.get(&sub) else {
            return Duration::ZERO;
        };
        let blocked = state.blocked_until.map(|t| t.saturating_duration_since(now)).unwrap_or_default();
        let (remaining, threshold) = match kind {
            RequestKind::Read => (&state.reads, self.policy.read_threshold),
            RequestKind::Write => (&state.writes, self.policy.write_threshold),
            // Deletes have their own bucket when ARM reports `...-deletes`; where it does not (CONTRACTS §2: DELETE
            // responses carry `...-writes`), they count against the write bucket.
            RequestKind::Delete if self.is_fresh(&state.deletes, now) => (&state.deletes, self.policy.write_threshold),
            RequestKind::Delete => (&state.writes, self.policy.write_threshold),
        };
        let fresh = self.is_fresh(remaining, now);
        let proportional = if fresh && threshold > 0 && remaining.count < threshold {
            let missing = f64::from(threshold - remaining.count) / f64::from(threshold);
            self.policy.max_delay.mul_f64(missing)
        } else {
            Duration::ZERO
        };
        blocked.max(proportional)
    }

    fn is_fresh(&self, remaining: &Remaining, now: Instant) -> bool {
        remaining.at.is_some_and(|at| now.duration_since(at) < self.policy.stale_after)
    }

    /// Records the remaining-quota headers of a response from `sub`.
    pub fn observe(&self, sub: SubscriptionId, headers: &HeaderMap) {
        let parse =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u32>().ok());
        let (reads, writes, deletes) = (parse(REMAINING_READS), parse(REMAINING_WRITES), parse(REMAINING_DELETES));
        if reads.is_none() && writes.is_none() && deletes.is_none() {
            return;
        }
        let now = Some(Instant::now());
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        let state = subs.entry(sub).or_default();
        if let Some(count) = reads {
            state.reads = Remaining { count, at: now };
        }
        if let Some(count) = writes {
            state.writes = Remaining { count, at: now };
        }
        if let Some(count) = deletes {
            state.deletes = Remaining { count, at: now };
        }
    }

    /// Blocks every call to `sub` for `duration` (after a 429 with `Retry-After`).
    pub fn block(&self, sub: SubscriptionId, duration: Duration) {
        let until = Instant::now() + duration;
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        let state = subs.entry(sub).or_default();
        state.blocked_until = Some(state.blocked_until.map_or(until, |t| t.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, v.parse().unwrap());
        h
    }

    #[test]
    fn delay_grows_as_remaining_shrinks() {
        let sub = SubscriptionId::new("00000000-1111-2222-3333-444444444444").unwrap();
        let lim = SubscriptionLimiter::new(ThrottlePolicy {
            read_threshold: 100,
            write_threshold: 10,
            max_delay: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
        });
        assert_eq!(lim.delay_for(sub, RequestKind::Read), Duration::ZERO);
        lim.observe(sub, &headers(REMAINING_READS, "200"));
        assert_eq!(lim.delay_for(sub, RequestKind::Read), Duration::ZERO);
        lim.observe(sub, &headers(REMAINING_READS, "50"));
        assert_eq!(lim.delay_for(sub, RequestKind::Read), Duration::from_secs(5));
        lim.observe(sub, &headers(REMAINING_READS, "0"));
        assert_eq!(lim.delay_for(sub, RequestKind::Read), Duration::from_secs(10));
        // Writes are tracked separately.
        assert_eq!(lim.delay_for(sub, RequestKind::Write), Duration::ZERO);
        let other = SubscriptionId::new("00000000-1111-2222-3333-555555555555").unwrap();
        assert_eq!(lim.delay_for(other, RequestKind::Read), Duration::ZERO);
    }

    #[test]
    fn deletes_use_the_write_count_unless_arm_reports_deletes() {
        let sub = SubscriptionId::new("00000000-1111-2222-3333-444444444444").unwrap();
        let lim = SubscriptionLimiter::new(ThrottlePolicy {
            write_threshold: 10,
            max_delay: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
            ..Default::default()
        });
        // A DELETE answered with only `...-writes` (as CONTRACTS §2 describes) slows the next delete.
        lim.observe(sub, &headers(REMAINING_WRITES, "0"));
        assert_eq!(lim.delay_for(sub, RequestKind::Delete), Duration::from_secs(10));
        // Once ARM reports a delete bucket, that one decides.
        lim.observe(sub, &headers(REMAINING_DELETES, "100"));
        assert_eq!(lim.delay_for(sub, RequestKind::Delete), Duration::ZERO);
        assert_eq!(lim.delay_for(sub, RequestKind::Write), Duration::from_secs(10));
    }

    #[test]
    fn stale_counts_are_ignored_and_block_applies() {
        let sub = SubscriptionId::new("00000000-1111-2222-3333-444444444444").unwrap();
        let lim = SubscriptionLimiter::new(ThrottlePolicy { stale_after: Duration::ZERO, ..Default::default() });
        lim.observe(sub, &headers(REMAINING_WRITES, "0"));
        assert_eq!(lim.delay_for(sub, RequestKind::Write), Duration::ZERO);
        lim.block(sub, Duration::from_secs(30));
        let d = lim.delay_for(sub, RequestKind::Read);
        assert!(d > Duration::from_secs(29) && d <= Duration::from_secs(30), "{d:?}");
    }
}
