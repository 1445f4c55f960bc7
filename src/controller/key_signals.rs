//! The storage-key drift watcher: one activity-log query per subscription per interval, and one storage-account
//! LIST per subscription per resync period (or at once when the activity log cannot be read).
//!
//! It knows the workspaces through the registry the key step fills ([`super::keys::KeyState`]) and wakes exactly
//! those whose storage account changed; the woken workspaces confirm and resync in their own reconcile. Its cost
//! depends on the number of subscriptions, not of workspaces.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::keys::{KeyState, Signal, creation_map};
use crate::azure::SubscriptionId;
use crate::azure::activity_log::{ActivityLogFilter, ActivityLogScope, EventData, REGENERATE_KEY_OPERATION};

/// Settings of the watcher.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Activity-log query interval per subscription (default 60 s).
    pub interval: Duration,
    /// Storage-account LIST interval per subscription (the controller's resync period).
    pub list_every: Duration,
}

/// Per-subscription memory of the watcher.
#[derive(Default)]
struct SubState {
    /// End of the last successful activity-log window.
    checked_until: Option<Timestamp>,
    /// When the accounts were last listed.
    listed_at: Option<Timestamp>,
    /// Events already acted on (the windows overlap, since the activity log is eventually consistent).
    seen: HashMap<String, Timestamp>,
}

/// How far back each activity-log window reaches before the previous one ended (events arrive late).
fn overlap(interval: Duration) -> SignedDuration {
    SignedDuration::try_from(interval.max(Duration::from_secs(1))).unwrap_or(SignedDuration::from_secs(60))
}

/// The accounts (lowercased ids) named by successful regenerateKey events not seen before.
pub fn regenerated_accounts(
    events: &[EventData],
    seen: &mut HashMap<String, Timestamp>,
    now: Timestamp,
) -> HashSet<String> {
    let mut out = HashSet::new();
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
        out.insert(resource.to_ascii_lowercase());
    }
    out
}

/// Runs until `shutdown`.
pub async fn watch(state: Arc<KeyState>, config: WatcherConfig, shutdown: CancellationToken) {
    info!(interval = ?config.interval, list_every = ?config.list_every, "starting the storage-key watcher");
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
    let now = Timestamp::now();
    let ov = overlap(config.interval);
    let from = st.checked_until.unwrap_or(now).checked_sub(ov).unwrap_or(now);
    let filter = ActivityLogFilter { from, to: now, scope: ActivityLogScope::Subscription };
    let mut must_list = st.listed_at.is_none_or(|t| {
        t.checked_add(SignedDuration::try_from(config.list_every).unwrap_or(SignedDuration::MAX))
            .is_ok_and(|d| d <= now)
    });
    match arm.list_activity_log(sub, &filter).await {
        Ok(events) => {
            st.checked_until = Some(now);
            let cutoff = from.checked_sub(ov).unwrap_or(from);
            st.seen.retain(|_, t| *t >= cutoff);
            for account in regenerated_accounts(&events, &mut st.seen, now) {
                let woken = state.signal_account(&account, Signal::Drift, None);
                debug!(%account, woken, "regenerateKey in the activity log");
            }
        }
        Err(err) => {
            // Not fatal: keyCreationTime catches the same changes, only the LIST costs more per call.
            warn!(subscription = %sub, error = %err, "cannot read the activity log; comparing keyCreationTime instead");
            must_list = true;
        }
    }
    if must_list {
        match arm.list_storage_accounts(sub).await {
            Ok(accounts) => {
                st.listed_at = Some(now);
                let by_id: HashMap<String, _> = accounts
                    .iter()
                    .filter_map(|a| {
                        a.id.as_ref()
                            .map(|id| (id.to_ascii_lowercase(), creation_map(a.properties.key_creation_time.as_ref())))
                    })
                    .collect();
                for w in state.workspaces_of(sub) {
                    let Some(current) = by_id.get(&w.account) else { continue };
                    // An empty record (never synced) is the key step's business, not drift.
                    if !w.recorded.is_empty() && *current != w.recorded {
                        debug!(account = %w.account, workspace = %w.object, "keyCreationTime changed");
                        if let Some(uid) = w.object.extra.uid.as_deref() {
                            state.signal(uid, w.object.clone(), Signal::Drift);
                        }
                    }
                }
            }
            Err(err) => warn!(subscription = %sub, error = %err, "cannot list storage accounts"),
        }
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
}
