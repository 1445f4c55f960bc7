//! The storage resource provider's own limits, besides ARM's per-subscription buckets (Learn: "Scalability and
//! performance targets for the Azure Storage resource provider"): per subscription and region of the resource,
//! reads 800 per 5 minutes, writes 10 per second and 1200 per hour, lists 100 per 5 minutes. `listKeys` and
//! `regenerateKey` are POST actions and count as writes. Over the limit the RP answers 429 with `Retry-After`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::reply::ArmError;

/// One limit: at most `max` requests in any `window`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowLimit {
    /// Requests allowed per window.
    pub max: usize,
    /// Window length in seconds.
    pub window_secs: u64,
}

/// The storage RP's limits per class of management operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageLimits {
    /// GET of one account.
    pub read: Vec<WindowLimit>,
    /// PUT/PATCH/DELETE and POST actions (listKeys, regenerateKey).
    pub write: Vec<WindowLimit>,
    /// Lists of accounts (per subscription / resource group).
    pub list: Vec<WindowLimit>,
}

impl Default for StorageLimits {
    fn default() -> Self {
        let w = |max, window_secs| WindowLimit { max, window_secs };
        Self { read: vec![w(800, 300)], write: vec![w(10, 1), w(1200, 3600)], list: vec![w(100, 300)] }
    }
}

/// Which budget a storage call takes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StorageClass {
    Read,
    Write,
    List,
}

impl StorageClass {
    /// The class of a storage operation, or `None` for calls outside the storage RP.
    pub(crate) fn of(op: &str, method: &http::Method) -> Option<Self> {
        if !op.starts_with("StorageAccounts_") {
            return None;
        }
        Some(match (op, method) {
            ("StorageAccounts_List" | "StorageAccounts_ListByResourceGroup", _) => Self::List,
            (_, &http::Method::GET | &http::Method::HEAD) => Self::Read,
            _ => Self::Write,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
            Self::List => "List",
        }
    }
}

/// Sliding-window counters per (subscription, region, class).
#[derive(Debug, Default)]
pub(crate) struct StorageThrottle {
    pub limits: StorageLimits,
    seen: HashMap<(String, String, StorageClass), VecDeque<Instant>>,
}

impl StorageThrottle {
    pub(crate) fn new(limits: StorageLimits) -> Self {
        Self { limits, seen: HashMap::new() }
    }

    /// Counts one call, or answers the storage RP's 429 with the seconds until the window frees a slot.
    pub(crate) fn take(&mut self, sub: &str, region: &str, class: StorageClass) -> Result<(), ArmError> {
        let now = Instant::now();
        let limits = match class {
            StorageClass::Read => &self.limits.read,
            StorageClass::Write => &self.limits.write,
            StorageClass::List => &self.limits.list,
        };
        let longest = limits.iter().map(|l| l.window_secs).max().unwrap_or(0);
        let q = self.seen.entry((sub.to_ascii_lowercase(), region.to_ascii_lowercase(), class)).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(longest)) {
            q.pop_front();
        }
        for l in limits {
            let window = Duration::from_secs(l.window_secs);
            let inside: Vec<&Instant> = q.iter().filter(|t| now.duration_since(**t) < window).collect();
            if inside.len() >= l.max {
                // The slot frees when the oldest call inside the window leaves it.
                let oldest = inside.len() - l.max;
                let wait = inside.get(oldest).map_or(window, |t| window.saturating_sub(now.duration_since(**t)));
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let hms =
                    format!("{:02}:{:02}:{:02}", l.window_secs / 3600, (l.window_secs / 60) % 60, l.window_secs % 60);
                return Err(ArmError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    format!(
                        "The request is being throttled as the limit has been reached for operation type - {}_ObservationWindow_{hms}. For more information, see - https://aka.ms/srpthrottlinglimits",
                        class.name()
                    ),
                )
                .header("Retry-After", secs.to_string()));
            }
        }
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_limited_per_second_and_per_subscription_region() {
        let mut t = StorageThrottle::new(StorageLimits::default());
        for _ in 0..10 {
            t.take("s", "eastus", StorageClass::Write).unwrap();
        }
        let e = t.take("s", "eastus", StorageClass::Write).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code, "TooManyRequests");
        assert!(e.message.contains("Write_ObservationWindow_00:00:01"), "{}", e.message);
        assert!(e.extra.headers.iter().any(|(k, v)| k == "Retry-After" && v == "1"));
        // Other regions, subscriptions and classes have their own budgets.
        t.take("s", "westus", StorageClass::Write).unwrap();
        t.take("other", "eastus", StorageClass::Write).unwrap();
        t.take("s", "eastus", StorageClass::Read).unwrap();
    }

    #[test]
    fn lists_have_a_five_minute_budget() {
        let mut t = StorageThrottle::new(StorageLimits::default());
        for _ in 0..100 {
            t.take("s", "global", StorageClass::List).unwrap();
        }
        let e = t.take("s", "global", StorageClass::List).unwrap_err();
        assert!(e.message.contains("List_ObservationWindow_00:05:00"), "{}", e.message);
        let retry: u64 =
            e.extra.headers.iter().find(|(k, _)| k == "Retry-After").map(|(_, v)| v.parse().unwrap()).unwrap();
        assert!((299..=300).contains(&retry), "{retry}");
    }
}
