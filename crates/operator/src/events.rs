//! The operator's Kubernetes event recorder (events.k8s.io/v1).
//!
//! kube-runtime's `Recorder` folds every event with the same type, reason and action about the same object into one
//! series and keeps the note of the first: granting two principals shows the first grant "x2" and never the second,
//! and a drift resync after a requested one shows the old "requested" text. client-go's events recorder keys its
//! series on the note too (`eventKey` in `tools/events`, kubernetes/kubernetes#112365), so only identical
//! occurrences are counted together. This recorder does the same: a repeat of the same note within
//! [`SERIES_WINDOW`] bumps the series (`kubectl describe` shows `(x3 over 2m)`), any other note is its own Event.
//!
//! The series logic is pure ([`SeriesCache::record`]); [`Recorder::publish`] only sends what it decides.
//!
//! Memory (issue 20: 10,000 workspaces in 64 MiB): a wave of reconciles writes a few events per object within
//! minutes. The cache keeps a 64-bit digest of each series key (never the note itself) and at most
//! [`MAX_SERIES`] series, client-go's bound (`maxLruCacheEntries`): past it the series seen longest ago end early
//! (their next occurrence is a new Event, which is what happens after [`SERIES_WINDOW`] anyway).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::{Api, Client};

/// How long after its last occurrence an event can still be counted again (client-go and kube-runtime: 6 min).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// The most series remembered at once (client-go's events cache holds 4096 entries).
pub const MAX_SERIES: usize = 4096;

/// How many occurrences may pass between two sweeps of the expired series.
const SWEEP_EVERY: u32 = 256;

/// What identifies a series: client-go's `eventKey` (type, action, reason, note, regarding object).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    type_: &'static str,
    action: String,
    reason: String,
    note: String,
    regarding: Regarding,
}

/// The identity of the object an event is about (an `ObjectReference` without its resourceVersion and fieldPath).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Regarding {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl From<&ObjectReference> for Regarding {
    fn from(r: &ObjectReference) -> Self {
        Regarding {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        }
    }
}

/// An Event already written, and how often it has been seen.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    name: String,
    count: i32,
    last: Timestamp,
}

/// What to send for one occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// A new Event named `name`.
    Create {
        /// Event name: `<object>.<hex nanoseconds>`, as client-go and kube-runtime name them.
        name: String,
    },
    /// One more occurrence of Event `name`: its series now counts `count`.
    Series {
        /// The Event to patch.
        name: String,
        /// `series.count`.
        count: i32,
    },
}

/// The events written recently, by the digest of their series key.
#[derive(Debug, Default)]
pub struct SeriesCache {
    written: HashMap<u64, Written>,
    /// Keys the digests (randomly per process, so no note can be crafted to collide with another).
    digest: RandomState,
    /// Occurrences since the last sweep of expired series.
    since_sweep: u32,
}

impl SeriesCache {
    fn digest(&self, key: &SeriesKey) -> u64 {
        let mut h = self.digest.build_hasher();
        key.hash(&mut h);
        std::hash::Hasher::finish(&h)
    }

    /// Decides what occurrence `key` at `now` becomes, and remembers it. A series whose last occurrence is
    /// [`SERIES_WINDOW`] old has ended; at most [`MAX_SERIES`] are remembered (the oldest go first).
    fn record(&mut self, key: SeriesKey, object_name: &str, now: Timestamp) -> Publish {
        let digest = self.digest(&key);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY || self.written.len() >= MAX_SERIES {
            self.sweep(now);
        }
        match self.written.get_mut(&digest) {
            Some(w) if w.last + SERIES_WINDOW > now => {
                w.count = w.count.saturating_add(1);
                w.last = now;
                Publish::Series { name: w.name.clone(), count: w.count }
            }
            _ => {
                let name = format!("{object_name}.{:x}", now.as_nanosecond());
                self.written.insert(digest, Written { name: name.clone(), count: 1, last: now });
                Publish::Create { name }
            }
        }
    }

    /// Drops the series that ended; when still full, the oldest eighth.
    fn sweep(&mut self, now: Timestamp) {
        self.since_sweep = 0;
        self.written.retain(|_, w| w.last + SERIES_WINDOW > now);
        if self.written.len() >= MAX_SERIES {
            let mut by_age: Vec<(Timestamp, u64)> = self.written.iter().map(|(d, w)| (w.last, *d)).collect();
            let cut = by_age.len() / 8;
            by_age.select_nth_unstable(cut);
            for (_, digest) in &by_age[..cut] {
                self.written.remove(digest);
            }
        }
    }

    /// Forgets `key` (its Event could not be written, or is gone).
    fn forget(&mut self, key: &SeriesKey) {
        let digest = self.digest(key);
        self.written.remove(&digest);
    }

    /// How many series are remembered.
    pub fn len(&self) -> usize {
        self.written.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

/// Publishes events.k8s.io/v1 Events, counting repeats of the same note as a series.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    cache: Mutex<SeriesCache>,
}

impl Recorder {
    /// A recorder reporting as `reporter` (its instance defaults to the controller name, as kube-runtime's does).
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder { client, reporter, cache: Mutex::default() }
    }

    /// Publishes one occurrence of (`type_`, `reason`, `action`, `note`) about `regarding`.
    pub async fn publish(
        &self,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = SeriesKey {
            type_,
            action: action.to_owned(),
            reason: reason.to_owned(),
            note: note.to_owned(),
            regarding: Regarding::from(regarding),
        };
        let now = Timestamp::now();
        let object_name = regarding.name.clone().unwrap_or_else(|| self.reporter.controller.clone());
        let decision = self.cache.lock().map(|mut c| c.record(key.clone(), &object_name, now));
        // A poisoned cache only loses the series: every occurrence becomes its own Event.
        let decision =
            decision.unwrap_or_else(|_| Publish::Create { name: format!("{object_name}.{:x}", now.as_nanosecond()) });
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let result = match decision {
            Publish::Series { name, count } => {
                let series = EventSeries { count, last_observed_time: MicroTime(now) };
                let patch = serde_json::json!({ "series": series });
                match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    // Deleted meanwhile (the API server expires events after an hour): start a new series.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        let name = match self.cache.lock() {
                            Ok(mut c) => {
                                c.forget(&key);
                                match c.record(key.clone(), &object_name, now) {
                                    Publish::Create { name } | Publish::Series { name, .. } => name,
                                }
                            }
                            Err(_) => format!("{object_name}.{:x}", now.as_nanosecond()),
                        };
                        let event = self.event(&name, &namespace, type_, reason, action, note, regarding, now);
                        api.create(&PostParams::default(), &event).await.map(|_| ())
                    }
                    other => other.map(|_| ()),
                }
            }
            Publish::Create { name } => {
                let event = self.event(&name, &namespace, type_, reason, action, note, regarding, now);
                api.create(&PostParams::default(), &event).await.map(|_| ())
            }
        };
        if result.is_err()
            && let Ok(mut c) = self.cache.lock()
        {
            c.forget(&key);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        name: &str,
        namespace: &str,
        type_: &str,
        reason: &str,
        action: &str,
        note: &str,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> K8sEvent {
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note.to_owned()),
            type_: Some(type_.to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str, note: &str) -> SeriesKey {
        SeriesKey {
            type_: "Normal",
            action: "Reconcile".into(),
            reason: reason.into(),
            note: note.into(),
            regarding: Regarding {
                api_version: Some("azml.dev/v1alpha1".into()),
                kind: Some("MlWorkspace".into()),
                namespace: Some("ns".into()),
                name: Some("ws".into()),
                uid: Some("uid".into()),
            },
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
    }

    #[test]
    fn a_different_note_is_a_new_event_and_the_same_note_a_series() {
        let mut cache = SeriesCache::default();
        let first = cache.record(key("AccessGranted", "Granted Reader for alice"), "ws", at(0));
        let Publish::Create { name: alice } = first else { panic!("first occurrence creates: {first:?}") };
        let second = cache.record(key("AccessGranted", "Granted Contributor for bob"), "ws", at(1));
        let Publish::Create { name: bob } = second else { panic!("another note creates: {second:?}") };
        assert_ne!(alice, bob);
        assert_eq!(
            cache.record(key("AccessGranted", "Granted Reader for alice"), "ws", at(2)),
            Publish::Series { name: alice.clone(), count: 2 }
        );
        assert_eq!(
            cache.record(key("AccessGranted", "Granted Reader for alice"), "ws", at(3)),
            Publish::Series { name: alice, count: 3 }
        );
    }

    #[test]
    fn a_series_ends_after_the_window_without_occurrence() {
        let mut cache = SeriesCache::default();
        let k = key("KeysResynced", "Resynced the storage keys (requested)");
        assert!(matches!(cache.record(k.clone(), "ws", at(0)), Publish::Create { .. }));
        let window = SERIES_WINDOW.as_secs();
        assert!(matches!(cache.record(k.clone(), "ws", at(window - 1)), Publish::Series { count: 2, .. }));
        // The window counts from the last occurrence.
        assert!(matches!(cache.record(k.clone(), "ws", at(2 * window - 2)), Publish::Series { count: 3, .. }));
        assert!(matches!(cache.record(k, "ws", at(3 * window)), Publish::Create { .. }));
        assert_eq!(cache.len(), 1, "an ended series is replaced");
    }

    #[test]
    fn ended_series_are_swept_and_the_cache_stays_bounded() {
        let mut cache = SeriesCache::default();
        for i in 0..(2 * SWEEP_EVERY as usize) {
            cache.record(key("Created", &format!("Created workspace {i}")), "ws", at(0));
        }
        let window = SERIES_WINDOW.as_secs();
        for i in 0..(SWEEP_EVERY as usize) {
            cache.record(key("Created", &format!("again {i}")), "ws", at(window + 1));
        }
        assert!(cache.len() <= SWEEP_EVERY as usize + 1, "ended series are dropped: {}", cache.len());
        for i in 0..(3 * MAX_SERIES) {
            let second = i64::try_from(i).expect("small");
            cache.record(key("Created", &format!("burst {i}")), "ws", at(2 * window + second / 100));
        }
        assert!(cache.len() <= MAX_SERIES, "{} series remembered", cache.len());
        // The newest series still count.
        let newest = key("Created", &format!("burst {}", 3 * MAX_SERIES - 1));
        let last = 2 * window + i64::try_from(3 * MAX_SERIES - 1).expect("small") / 100;
        assert!(matches!(cache.record(newest, "ws", at(last)), Publish::Series { count: 2, .. }));
    }

    #[test]
    fn forgetting_a_failed_write_creates_again() {
        let mut cache = SeriesCache::default();
        let k = key("Created", "Created workspace x");
        assert!(matches!(cache.record(k.clone(), "ws", at(0)), Publish::Create { .. }));
        cache.forget(&k);
        assert!(cache.is_empty());
        assert!(matches!(cache.record(k, "ws", at(1)), Publish::Create { .. }));
    }
}
