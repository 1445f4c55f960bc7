//! The storage-key drift watcher: per subscription and `--key-signal-interval`, one storage-account LIST (the
//! primary signal) and one activity-log query (a hint).
//!
//! - **Primary: keyCreationTime.** `GET /subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts` returns
//!   every account with `keyCreationTime`, which changes with every regenerateKey. Each registered workspace whose
//!   recorded `keyCreationTime` differs from the listed one is woken, once per change. Detection takes at most one
//!   interval, whatever the activity log does.
//! - **Hint: the activity log.** Azure ingests activity-log events minutes after the operation, so a query that
//!   only looks one interval back misses most of them. Each query reaches [`ACTIVITY_LOG_LOOKBACK`] back, asks only
//!   for `resourceProvider eq 'Microsoft.Storage'` (its cost does not grow with unrelated activity), and acts on
//!   each event id once. A successful regenerateKey wakes the account's workspaces whose recorded key times predate
//!   it (the LIST has usually done so already; the hint matters when the LIST fails).
//!
//! It knows the workspaces through the registry the key step fills ([`super::keys::KeyState`]); the woken
//! workspaces confirm and resync in their own reconcile. Its cost grows with subscriptions, not with workspaces.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::keys::{KeyState, KeyTimes, Registered, Signal, creation_map};
use crate::azure::SubscriptionId;
use crate::azure::activity_log::{ActivityLogFilter, ActivityLogScope, EventData, REGENERATE_KEY_OPERATION};
use crate::azure::storage::StorageKeyName;

/// How far back each activity-log query reaches: Azure documents the activity log's ingestion delay in minutes
/// (typically up to about 15), so events are looked for well after they happened.
pub const ACTIVITY_LOG_LOOKBACK: Duration = Duration::from_secs(20 * 60);

/// A regeneration this close before a workspace's recorded key times is the change the workspace already knows.
const SAME_CHANGE: SignedDuration = SignedDuration::from_secs(60);

/// Settings of the watcher.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// LIST and activity-log interval per subscription (`--key-signal-interval`, default 60 s).
    pub interval: Duration,
    /// How far back each activity-log query reaches ([`ACTIVITY_LOG_LOOKBACK`]).
    pub lookback: Duration,
}

/// Per-subscription memory of the watcher.
#[derive(Default)]
struct SubState {
    /// Activity-log events already acted on, with when they were seen (kept for one look-back).
    seen: HashMap<String, Timestamp>,
    /// The keyCreationTime each workspace (uid) was last woken for: a change wakes once, not every interval.
    woken_for: HashMap<String, KeyTimes>,
}

/// A successful regenerateKey event not seen before: (account id lowercased, when it happened).
pub fn regenerations(
    events: &[EventData],
    seen: &mut HashMap<String, Timestamp>,
    now: Timestamp,
) -> Vec<(String, Option<Timestamp>)> {
    let mut out = Vec::new();
    for e in events {
        if !e.is_operation(REGENERATE_KEY_OPERATION) {
            continue;
        }
        // Only the final event of a request; a failed regeneration changed nothing.
        let succeeded = e.status.as_ref().is_some_and(|s| s.value.eq_ignore_ascii_case("Succeeded"));
        let (Some(id), Some(resource)) = (e.event_data_id.as_ref().or(e.id.as_ref()), e.resource_id.as_ref()) else {
            continue;
        };
        if !succeeded || seen.contains_key(id) {
            continue;
        }
        seen.insert(id.clone(), now);
        let at = e.event_timestamp.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
        out.push((resource.to_ascii_lowercase(), at));
    }
    out
}

/// The accounts (lowercased ids) named by successful regenerateKey events not seen before.
pub fn regenerated_accounts(
    events: &[EventData],
    seen: &mut HashMap<String, Timestamp>,
    now: Timestamp,
) -> HashSet<String> {
    regenerations(events, seen, now).into_iter().map(|(a, _)| a).collect()
}

/// Whether a workspace whose keys were recorded as `recorded` predates a regeneration at `at`.
fn predates(recorded: &KeyTimes, at: Option<Timestamp>) -> bool {
    match (recorded.newest(), at) {
        (Some(newest), Some(at)) => newest.checked_add(SAME_CHANGE).is_ok_and(|n| n < at),
        // Nothing to compare with: wake it, the key step checks.
        _ => true,
    }
}

/// The workspaces to wake after a LIST, and why: those whose recorded keyCreationTime differs from the listed one,
/// and that were not already woken for that same value. [`Signal::Stale`] when the changed time is that of the key
/// the workspace held ([`Signal::Drift`] otherwise: the other key changed, or which one it held is unknown). Pure.
pub fn changed_workspaces<'a>(
    workspaces: &'a [Registered],
    listed: &HashMap<String, KeyTimes>,
    woken_for: &HashMap<String, KeyTimes>,
) -> Vec<(&'a Registered, KeyTimes, Signal)> {
    workspaces
        .iter()
        .filter_map(|w| {
            let current = listed.get(&*w.account)?;
            // An empty record (never synced, or identity-based access) is the key step's business, not drift.
            if w.recorded.is_empty() || *current == w.recorded {
                return None;
            }
            let uid = w.object.extra.uid.as_deref()?;
            let time_of = |t: &KeyTimes, k: StorageKeyName| match k {
                StorageKeyName::Key1 => t.key1,
                StorageKeyName::Key2 => t.key2,
            };
            let signal = match w.uses {
                Some(k) if time_of(current, k) != time_of(&w.recorded, k) => Signal::Stale,
                _ => Signal::Drift,
            };
            (woken_for.get(uid) != Some(current)).then_some((w, *current, signal))
        })
        .collect()
}

/// Runs until `shutdown`.
pub async fn watch(state: Arc<KeyState>, config: WatcherConfig, shutdown: CancellationToken) {
    info!(interval = ?config.interval, lookback = ?config.lookback, "starting the storage-key watcher");
    let mut subs: HashMap<SubscriptionId, SubState> = HashMap::new();
    let mut ticker = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // Subscriptions are queried concurrently: one slow subscription does not delay the others' signals.
        let work: Vec<_> = state
            .subscriptions()
            .into_iter()
            .map(|(sub, arm)| {
                let st = subs.remove(&sub).unwrap_or_default();
                (sub, arm, st)
            })
            .collect();
        let rounds = work.into_iter().map(|(sub, arm, mut st)| {
            let (state, config) = (&state, &config);
            async move {
                tick(state, config, sub, &arm, &mut st).await;
                (sub, st)
            }
        });
        subs.extend(futures::future::join_all(rounds).await);
    }
    info!("storage-key watcher stopped");
}

async fn tick(
    state: &KeyState,
    config: &WatcherConfig,
    sub: SubscriptionId,
    arm: &crate::azure::ArmClient,
    st: &mut SubState,
) {
    let workspaces = state.workspaces_of(sub);
    // Primary: one LIST, keyCreationTime per account.
    match arm.list_storage_accounts(sub).await {
        Ok(accounts) => {
            let times: Vec<(String, BTreeMap<String, String>)> = accounts
                .iter()
                .filter_map(|a| {
                    let times = creation_map(a.properties.key_creation_time.as_ref());
                    a.id.as_ref().map(|id| (id.to_ascii_lowercase(), times))
                })
                .collect();
            let listed: HashMap<String, KeyTimes> = times.iter().map(|(id, t)| (id.clone(), KeyTimes::of(t))).collect();
            // Recorded before waking anyone: the woken workspaces confirm against exactly these times.
            state.listed(times);
            for (w, current, signal) in changed_workspaces(&workspaces, &listed, &st.woken_for) {
                debug!(account = %w.account, workspace = %w.object, ?signal, "keyCreationTime changed");
                if let Some(uid) = w.object.extra.uid.as_deref() {
                    state.signal(uid, w.object.clone(), signal);
                    st.woken_for.insert(uid.to_owned(), current);
                }
            }
            let known: HashSet<&str> = workspaces.iter().filter_map(|w| w.object.extra.uid.as_deref()).collect();
            st.woken_for.retain(|uid, _| known.contains(uid.as_str()));
        }
        Err(err) => {
            warn!(subscription = %sub, error = %err, "cannot list storage accounts; relying on the activity log")
        }
    }
    // Hint: the activity log, looking back past its ingestion delay.
    let now = arm.clock().now();
    let lookback = SignedDuration::try_from(config.lookback).unwrap_or(SignedDuration::from_secs(1200));
    let from = now.checked_sub(lookback).unwrap_or(now);
    let filter = ActivityLogFilter { from, to: now, scope: ActivityLogScope::ResourceProvider("Microsoft.Storage") };
    match arm.list_activity_log(sub, &filter).await {
        Ok(events) => {
            let keep = from.checked_sub(SignedDuration::try_from(config.interval).unwrap_or_default()).unwrap_or(from);
            st.seen.retain(|_, t| *t >= keep);
            for (account, at) in regenerations(&events, &mut st.seen, now) {
                let mut woken = 0;
                for w in workspaces.iter().filter(|w| *w.account == *account && predates(&w.recorded, at)) {
                    if let Some(uid) = w.object.extra.uid.as_deref() {
                        state.signal(uid, w.object.clone(), Signal::Drift);
                        woken += 1;
                    }
                }
                debug!(%account, woken, "regenerateKey in the activity log");
            }
        }
        // Not fatal: the LIST above is the primary signal.
        Err(err) => debug!(subscription = %sub, error = %err, "cannot read the activity log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::activity_log::LocalizableString;

    fn ev(id: &str, op: &str, status: &str, resource: &str) -> EventData {
        let l = |v: &str| Some(LocalizableString { value: v.into(), localized_value: None });
        EventData {
            event_data_id: Some(id.into()),
            operation_name: l(op),
            status: l(status),
            resource_id: Some(resource.into()),
            ..Default::default()
        }
    }

    #[test]
    fn only_new_successful_regenerations_count() {
        let now = Timestamp::UNIX_EPOCH;
        let mut seen = HashMap::new();
        let events = vec![
            ev("1", REGENERATE_KEY_OPERATION, "Started", "/SA1"),
            ev("2", REGENERATE_KEY_OPERATION, "Succeeded", "/SA1"),
            ev("3", "Microsoft.Storage/storageAccounts/write", "Succeeded", "/sa2"),
            ev("4", REGENERATE_KEY_OPERATION, "Failed", "/sa3"),
        ];
        let got = regenerated_accounts(&events, &mut seen, now);
        assert_eq!(got, HashSet::from(["/sa1".to_owned()]));
        assert!(regenerated_accounts(&events, &mut seen, now).is_empty(), "the overlap does not wake twice");
    }

    fn reg(uid: &str, account: &str, recorded: &[(&str, &str)]) -> Registered {
        let mut object = kube::runtime::reflector::ObjectRef::new(uid).within("ns");
        object.extra.uid = Some(uid.to_owned());
        let recorded: BTreeMap<String, String> = recorded.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Registered {
            object,
            subscription: crate::azure::SubscriptionId::from_uuid(uuid::Uuid::nil()),
            account: account.into(),
            recorded: KeyTimes::of(&recorded),
            uses: Some(StorageKeyName::Key1),
        }
    }

    #[test]
    fn a_listed_change_wakes_each_workspace_once() {
        let old = [("key1", "2026-01-01T00:00:00Z"), ("key2", "2026-01-01T00:00:00Z")];
        let times =
            |pairs: &[(&str, &str)]| KeyTimes::of(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let new = times(&[("key1", "2026-06-01T00:00:00Z"), ("key2", "2026-01-01T00:00:00Z")]);
        let workspaces =
            vec![reg("a", "/sa1", &old), reg("b", "/sa1", &old), reg("c", "/sa2", &old), reg("d", "/sa1", &[])];
        let listed: HashMap<String, KeyTimes> = [("/sa1".to_owned(), new), ("/sa2".to_owned(), times(&old))].into();
        let mut woken_for = HashMap::new();
        let first: Vec<(&str, Signal)> = changed_workspaces(&workspaces, &listed, &woken_for)
            .into_iter()
            .map(|(w, _, signal)| (w.object.name.as_str(), signal))
            .collect();
        assert_eq!(
            first,
            [("a", Signal::Stale), ("b", Signal::Stale)],
            "only the changed account's workspaces with a record; key1, which they hold, changed"
        );
        woken_for.insert("a".to_owned(), new);
        let again: Vec<&str> = changed_workspaces(&workspaces, &listed, &woken_for)
            .into_iter()
            .map(|(w, _, _)| w.object.name.as_str())
            .collect();
        assert_eq!(again, ["b"], "a workspace is not woken twice for the same change");
        let other_key = times(&[("key1", "2026-01-01T00:00:00Z"), ("key2", "2026-06-01T00:00:00Z")]);
        let listed: HashMap<String, KeyTimes> = [("/sa1".to_owned(), other_key)].into();
        let mut unknown = reg("e", "/sa1", &old);
        unknown.uses = None;
        let workspaces = [reg("a", "/sa1", &old), unknown];
        let signals: Vec<Signal> =
            changed_workspaces(&workspaces, &listed, &HashMap::new()).into_iter().map(|(_, _, s)| s).collect();
        assert_eq!(signals, [Signal::Drift, Signal::Drift], "key2 changed, or which key is held is unknown: confirm");
    }

    #[test]
    fn a_late_event_does_not_wake_a_workspace_that_knows_the_change() {
        let at: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let before = KeyTimes::of(&BTreeMap::from([("key1".to_owned(), "2026-05-01T00:00:00Z".to_owned())]));
        let after = KeyTimes::of(&BTreeMap::from([("key1".to_owned(), "2026-06-01T00:00:00.5Z".to_owned())]));
        assert!(predates(&before, Some(at)));
        assert!(!predates(&after, Some(at)));
        assert!(predates(&KeyTimes::default(), Some(at)));
        assert!(predates(&after, None));
    }
}
