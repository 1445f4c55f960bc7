//! Storage-key drift, resync, manual requests and rotation: the real controller against the Kubernetes API emulator
//! and the ARM simulator (both on port 0), with a 200 ms drift-signal interval.
//!
//! Every test also checks that no storage key value reached the captured logs or any object of the Kubernetes
//! store.

use std::time::Duration;

use crate::common::{self, condition, is_current};
use crate::env::{OPERATOR_NS, TestEnv, env_type};
use azml_arm_simulator::{CallKind, FaultAction, FaultRule};
use azml_kube_emulator::store::{ListQuery, Target};
use azml_operator::api::conditions::{self, Reason, events as event_reasons};
use azml_operator::api::v1alpha1::{ANNOTATION_RESYNC_KEYS, MlWorkspace, MlWorkspaceSpec, ResyncReason};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "team-a";
// An upper bound for slow CI machines, kept below the resync and stalled-requeue periods these tests configure, so
// only the mechanism under test (watch, signal) can end a wait in time.
const WAIT: Duration = Duration::from_secs(45);

env_type!(Env);

impl Env {
    /// A 200 ms key-signal interval; logs are captured (no key value may reach them).
    async fn start() -> Env {
        let env = TestEnv::builder()
            .lro(Duration::from_millis(200))
            // Long enough that no periodic resync falls into a measured window.
            .resync(Duration::from_secs(60))
            .configure(|c| c.key_signal_interval = Duration::from_millis(200))
            .capture_logs()
            .start()
            .await;
        Env(env)
    }

    fn api(&self) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn spec(&self) -> MlWorkspaceSpec {
        common::workspace_spec(&self.world, json!({}))
    }

    async fn create(&self, name: &str, spec: MlWorkspaceSpec) {
        self.api().create(&PostParams::default(), &MlWorkspace::new(name, spec)).await.unwrap();
    }

    async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&MlWorkspace) -> bool) -> MlWorkspace {
        let check = async || match self.api().get_opt(name).await.unwrap() {
            Some(ws) if done(&ws) => Ok(ws),
            other => Err(other.map(|ws| ws.status)),
        };
        common::wait_until(WAIT, Duration::from_millis(25), check, |status| {
            let calls = self.sim.handle.call_summary();
            format!("{name}: timed out waiting for {what}; status: {status:#?}; calls: {calls:?}")
        })
        .await
    }

    /// Ready with a verified key.
    async fn wait_in_sync(&self, name: &str) -> MlWorkspace {
        self.wait_for(name, "Ready and keys in sync", |w| is_ready(w) && keys_in_sync(w)).await
    }

    fn workspace_id(&self, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{name}",
            self.world.subscription_id, self.world.resource_group
        )
    }

    fn count(&self, op: &str) -> usize {
        self.sim.handle.count(op)
    }

    fn key(&self, name: &str) -> String {
        self.sim.handle.storage_key(&self.world.storage_account_id, name).unwrap().expose().to_owned()
    }

    fn cached_key(&self, ws: &str) -> Option<String> {
        self.sim.handle.workspace_cached_key(&self.workspace_id(ws)).map(|k| k.expose().to_owned())
    }

    async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.api().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    async fn events(&self, reason: &str) -> Vec<String> {
        common::event_notes(&self.client, NS, reason).await
    }

    /// How many times an event with `reason` was emitted (the recorder folds repeats into a series).
    async fn event_count(&self, reason: &str) -> i32 {
        let list = common::events(&self.client, NS).await;
        list.iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map_or(1, |s| s.count))
            .sum()
    }

    /// Asserts that none of `keys` appears in the captured logs or in any object of the Kubernetes store.
    fn assert_no_leak(&self, keys: &[String]) {
        assert!(!keys.is_empty());
        let logs = self.logs();
        assert!(logs.contains("resyncKeys accepted") || logs.contains("storage keys"), "logs were not captured");
        let store = self.kube.store();
        let mut dump = String::new();
        for rt in store.registry().all() {
            for version in &rt.versions {
                let t = Target {
                    group: rt.group.clone(),
                    version: version.clone(),
                    plural: rt.plural.clone(),
                    ..Default::default()
                };
                if let Ok(page) = store.list(&t, &ListQuery::default()) {
                    for item in page.items {
                        dump.push_str(&item.to_string());
                    }
                }
            }
        }
        assert!(dump.contains("storageKeys"), "the store dump holds the workspaces");
        for k in keys {
            assert!(k.len() > 8);
            assert!(!logs.contains(k.as_str()), "a storage key value is in the logs");
            assert!(!dump.contains(k.as_str()), "a storage key value is in the Kubernetes store");
        }
    }
}

fn is_ready(ws: &MlWorkspace) -> bool {
    condition(ws, conditions::READY).is_some_and(|c| c.status == "True" && c.reason == Reason::Reconciled)
        && is_current(ws)
}

fn keys_in_sync(ws: &MlWorkspace) -> bool {
    condition(ws, conditions::STORAGE_KEYS_IN_SYNC).is_some_and(|c| c.status == "True")
        && ws.status.as_ref().and_then(|s| s.pending_operation.as_ref()).is_none()
}

fn last_reason(ws: &MlWorkspace) -> Option<ResyncReason> {
    ws.status.as_ref()?.storage_keys.as_ref()?.last_resync_reason
}

fn arm_calls(env: &Env) -> Vec<String> {
    env.sim.handle.calls().into_iter().filter(|c| c.kind != CallKind::Auth).map(|c| c.operation).collect()
}

#[tokio::test]
async fn a_regenerated_key_is_resynced_with_bounded_calls() {
    let env = Env::start().await;
    env.create("ws-drift", env.spec()).await;
    let ws = env.wait_in_sync("ws-drift").await;
    let keys = ws.status.as_ref().and_then(|s| s.storage_keys.clone()).unwrap();
    assert_eq!(keys.workspace_uses_key.as_deref(), Some("key1"));
    assert_eq!(keys.key_creation_time.len(), 2, "{keys:?}");
    assert!(keys.last_resync_time.is_none(), "a fresh workspace needs no resync");
    let old_key = env.key("key1");

    // Steady state: the watcher reads twice per subscription per interval (the storage-account LIST and the
    // activity log), the workspace costs nothing. Counted over at least three intervals, bounded above by the time
    // that really passed (a loaded machine only makes fewer).
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.sim.handle.clear_calls();
    let started = tokio::time::Instant::now();
    let lists = |calls: &[String], op: &str| calls.iter().filter(|c| c.as_str() == op).count();
    let check = async || match arm_calls(&env) {
        calls if lists(&calls, "StorageAccounts_List") >= 3 && lists(&calls, "ActivityLogs_List") >= 3 => Ok(calls),
        calls => Err(calls),
    };
    let calls = common::wait_until(WAIT, Duration::from_millis(25), check, |c| format!("watcher idle: {c:?}")).await;
    let intervals = (started.elapsed().as_millis() / 200) as usize + 2;
    assert!(calls.iter().all(|c| c == "ActivityLogs_List" || c == "StorageAccounts_List"), "{calls:?}");
    assert!(lists(&calls, "StorageAccounts_List") <= intervals, "more LISTs than intervals: {calls:?}");
    assert!(lists(&calls, "ActivityLogs_List") <= intervals, "more activity-log queries than intervals: {calls:?}");

    env.sim.handle.clear_calls();
    // The simulator's activity log shows the event only after Azure's default ingestion delay (5 minutes), far
    // beyond this wait: the storage-account LIST must find the change.
    env.sim.handle.regenerate_storage_key(&env.world.storage_account_id, "key1").unwrap();
    let started = std::time::Instant::now();
    let ws = env
        .wait_for("ws-drift", "resynced", |w| {
            last_reason(w) == Some(ResyncReason::Drift) && keys_in_sync(w) && is_ready(w)
        })
        .await;
    let latency = started.elapsed();
    assert_eq!(env.cached_key("ws-drift"), Some(env.key("key1")), "the workspace holds the new key");
    assert_ne!(env.key("key1"), old_key);
    assert_eq!(ws.status.unwrap().storage_keys.unwrap().workspace_uses_key.as_deref(), Some("key1"));

    // Bounded: the watcher's reads, one resync with its polls (no confirmation first: the LIST showed that key1,
    // the key the workspace held, was regenerated), one verify; the account's keys are read once, against the
    // keyCreationTime the watcher listed (no read of the account per workspace).
    let calls = arm_calls(&env);
    let n = |op: &str| calls.iter().filter(|c| c.as_str() == op).count();
    assert_eq!(n("Workspaces_ResyncKeys"), 1, "{calls:?}");
    assert_eq!(n("Workspaces_ListKeys"), 1, "verify only: {calls:?}");
    assert_eq!(n("StorageAccounts_GetProperties"), 0, "the listed keyCreationTime serves: {calls:?}");
    assert_eq!(n("StorageAccounts_ListKeys"), 1, "once per change of the account's keys: {calls:?}");
    assert_eq!(n("StorageAccounts_RegenerateKey"), 0);
    assert!(n("ActivityLogs_List") <= 2 + (latency.as_millis() / 200) as usize, "{calls:?}");
    assert!(n("StorageAccounts_List") <= 2 + (latency.as_millis() / 200) as usize, "{calls:?}");
    // The watcher's queries follow the clock (bounded above); everything else is bounded by the work.
    let work =
        calls.iter().filter(|c| c.as_str() != "ActivityLogs_List" && c.as_str() != "StorageAccounts_List").count();
    assert!(work <= 15, "{work} ARM calls besides activity-log queries between regeneration and resync: {calls:?}");
    let resynced = env.events(event_reasons::KEYS_RESYNCED).await;
    assert!(resynced.iter().any(|n| n.contains("Drift")), "{resynced:?}");

    // No second resync once in sync.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(env.count("Workspaces_ResyncKeys"), 1);
    env.assert_no_leak(&[old_key, env.key("key1"), env.key("key2")]);
    env.stop().await;
}

/// N workspaces on one account whose key changed: the account's keys are read once for all of them (listKeys is a
/// POST, which ARM counts against the subscription's write limit). The key they held was regenerated, so each
/// resyncs without a confirmation first: the drift costs 1 + 2N writes (1 + 3N when another key changed, below).
#[tokio::test]
async fn one_change_reads_the_account_keys_once_for_all_its_workspaces() {
    let env = Env::start().await;
    let names = ["ws-n-1", "ws-n-2", "ws-n-3"];
    for name in names {
        env.create(name, env.spec()).await;
    }
    for name in names {
        env.wait_in_sync(name).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.sim.handle.clear_calls();
    env.sim.handle.regenerate_storage_key(&env.world.storage_account_id, "key1").unwrap();
    for name in names {
        env.wait_for(name, "resynced", |w| last_reason(w) == Some(ResyncReason::Drift) && keys_in_sync(w)).await;
        assert_eq!(env.cached_key(name), Some(env.key("key1")));
    }
    let writes: Vec<String> = env
        .sim
        .handle
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.kind != CallKind::Auth)
        .map(|c| c.operation)
        .collect();
    let n = |op: &str| writes.iter().filter(|c| c.as_str() == op).count();
    assert_eq!(n("StorageAccounts_ListKeys"), 1, "{writes:?}");
    assert_eq!(n("Workspaces_ListKeys"), names.len(), "verify each: {writes:?}");
    assert_eq!(n("Workspaces_ResyncKeys"), names.len(), "{writes:?}");
    assert_eq!(writes.len(), 1 + 2 * names.len(), "{writes:?}");

    // The other key (key2, which none of them holds) regenerated: each confirms (one listKeys each, the account's
    // keys once more) and none resyncs.
    env.sim.handle.clear_calls();
    let before: Vec<_> = names.iter().map(|n| env.cached_key(n)).collect();
    env.sim.handle.regenerate_storage_key(&env.world.storage_account_id, "key2").unwrap();
    let confirmed = async || {
        let writes = env.sim.handle.calls().into_iter().filter(|c| c.method == "POST" && c.kind != CallKind::Auth);
        match writes.filter(|c| c.operation == "Workspaces_ListKeys").count() {
            n if n >= names.len() => Ok(n),
            n => Err(n),
        }
    };
    common::wait_until(WAIT, Duration::from_millis(25), confirmed, |n| format!("{n} confirmations")).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let writes: Vec<String> = env
        .sim
        .handle
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.kind != CallKind::Auth)
        .map(|c| c.operation)
        .collect();
    let n = |op: &str| writes.iter().filter(|c| c.as_str() == op).count();
    assert_eq!(n("Workspaces_ResyncKeys"), 0, "key1 still holds: {writes:?}");
    assert_eq!(n("Workspaces_ListKeys"), names.len(), "one confirmation each: {writes:?}");
    assert_eq!(n("StorageAccounts_ListKeys"), 1, "{writes:?}");
    let after: Vec<_> = names.iter().map(|n| env.cached_key(n)).collect();
    assert_eq!(before, after);
    env.stop().await;
}

#[tokio::test]
async fn drift_is_found_through_key_creation_time_when_the_activity_log_is_unavailable() {
    let env = Env::start().await;
    env.sim.handle.inject_fault(FaultRule::error("ActivityLogs_List", 403, "AuthorizationFailed"));
    env.create("ws-kct", env.spec()).await;
    env.wait_in_sync("ws-kct").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.sim.handle.clear_calls();
    env.sim.handle.regenerate_storage_key(&env.world.storage_account_id, "key1").unwrap();
    env.wait_for("ws-kct", "resynced", |w| last_reason(w) == Some(ResyncReason::Drift) && keys_in_sync(w)).await;
    assert_eq!(env.cached_key("ws-kct"), Some(env.key("key1")));
    assert!(env.count("ActivityLogs_List") >= 1, "the activity log was tried");
    assert!(env.count("StorageAccounts_List") >= 1, "keyCreationTime was compared through the LIST");
    assert_eq!(env.count("Workspaces_ResyncKeys"), 1);
    env.stop().await;
}

#[tokio::test]
async fn the_annotation_requests_exactly_one_resync_per_value() {
    let env = Env::start().await;
    env.create("ws-req", env.spec()).await;
    env.wait_in_sync("ws-req").await;
    assert_eq!(env.count("Workspaces_ResyncKeys"), 0);

    env.annotate("ws-req", ANNOTATION_RESYNC_KEYS, "2026-11-25T10:00Z").await;
    let ws = env
        .wait_for("ws-req", "requested resync", |w| {
            w.status.as_ref().and_then(|s| s.storage_keys.as_ref()).and_then(|k| k.last_resync_request.as_deref())
                == Some("2026-11-25T10:00Z")
                && keys_in_sync(w)
        })
        .await;
    assert_eq!(last_reason(&ws), Some(ResyncReason::Requested));
    assert_eq!(env.count("Workspaces_ResyncKeys"), 1);

    // The same value again (and an unrelated annotation change that wakes the controller): nothing.
    env.annotate("ws-req", ANNOTATION_RESYNC_KEYS, "2026-11-25T10:00Z").await;
    env.annotate("ws-req", "example.com/unrelated", "x").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.count("Workspaces_ResyncKeys"), 1, "{:?}", env.sim.handle.call_summary());

    env.annotate("ws-req", ANNOTATION_RESYNC_KEYS, "second").await;
    env.wait_for("ws-req", "second request", |w| {
        w.status.as_ref().and_then(|s| s.storage_keys.as_ref()).and_then(|k| k.last_resync_request.as_deref())
            == Some("second")
    })
    .await;
    assert_eq!(env.count("Workspaces_ResyncKeys"), 2);
    assert_eq!(env.event_count(event_reasons::KEYS_RESYNCED).await, 2);
    let resynced = env.events(event_reasons::KEYS_RESYNCED).await;
    assert!(resynced.iter().all(|n| n.contains("Requested")), "{resynced:?}");
    env.stop().await;
}

#[tokio::test]
async fn auto_resync_false_reports_drift_only() {
    let env = Env::start().await;
    let mut spec = env.spec();
    spec.storage_keys.auto_resync = false;
    env.create("ws-manual", spec).await;
    env.wait_in_sync("ws-manual").await;
    let old_key = env.key("key1");
    env.sim.handle.regenerate_storage_key(&env.world.storage_account_id, "key1").unwrap();
    let ws = env
        .wait_for("ws-manual", "drift reported", |w| {
            condition(w, conditions::STORAGE_KEYS_IN_SYNC)
                .is_some_and(|c| c.status == "False" && c.reason == Reason::KeysDrifted)
        })
        .await;
    assert!(ws.status.unwrap().storage_keys.unwrap().workspace_uses_key.is_none());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(env.count("Workspaces_ResyncKeys"), 0, "autoResync false never resyncs by itself");
    assert_eq!(env.cached_key("ws-manual"), Some(old_key), "the workspace still holds the old key");

    // A request still works.
    env.annotate("ws-manual", ANNOTATION_RESYNC_KEYS, "now").await;
    let ws = env.wait_in_sync("ws-manual").await;
    assert_eq!(last_reason(&ws), Some(ResyncReason::Requested));
    assert_eq!(env.cached_key("ws-manual"), Some(env.key("key1")));
    env.stop().await;
}

#[tokio::test]
async fn rotation_regenerates_once_and_resyncs_every_workspace_of_the_account() {
    let env = Env::start().await;
    // Keys made long ago: a rotation is due as soon as the workspaces have synced once.
    let old =
        json!({"properties": {"keyCreationTime": {"key1": "2020-01-01T00:00:00Z", "key2": "2020-01-01T00:00:00Z"}}});
    env.sim.handle.edit_resource(&env.world.storage_account_id, &old).unwrap();
    let (key1, key2) = (env.key("key1"), env.key("key2"));
    // Both workspaces first sync with rotation held back (autoResync false), so both are known users of the account
    // before either finds the rotation due: the rotation then has to wake the other one.
    let mut spec = env.spec();
    spec.storage_keys.rotate_every = Some("30d".into());
    spec.storage_keys.auto_resync = false;
    env.create("ws-rot-a", spec.clone()).await;
    env.create("ws-rot-b", spec).await;
    for name in ["ws-rot-a", "ws-rot-b"] {
        env.wait_in_sync(name).await;
    }
    assert_eq!(env.count("StorageAccounts_RegenerateKey"), 0, "autoResync false never rotates");
    for name in ["ws-rot-a", "ws-rot-b"] {
        let patch = json!({"spec": {"storageKeys": {"autoResync": true}}});
        env.api().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    for name in ["ws-rot-a", "ws-rot-b"] {
        let ws =
            env.wait_for(name, "rotated", |w| last_reason(w) == Some(ResyncReason::Rotation) && keys_in_sync(w)).await;
        assert!(ws.status.unwrap().storage_keys.unwrap().last_rotation_time.is_some());
    }
    assert_eq!(env.count("StorageAccounts_RegenerateKey"), 1, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.count("Workspaces_ResyncKeys"), 2);
    // The unused key was the one regenerated: the workspaces never held an invalid key.
    assert_eq!(env.key("key1"), key1);
    assert_ne!(env.key("key2"), key2);
    for name in ["ws-rot-a", "ws-rot-b"] {
        assert_eq!(env.cached_key(name), Some(key1.clone()));
    }
    // Not due again within the period.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(env.count("StorageAccounts_RegenerateKey"), 1);
    let rotated = env.events(event_reasons::KEYS_RESYNCED).await;
    assert_eq!(rotated.iter().filter(|n| n.contains("Rotation")).count(), 2, "{rotated:?}");
    env.assert_no_leak(&[key1, key2, env.key("key2")]);
    env.stop().await;
}

/// The rotation schedule follows the clock: the operator's clock and Azure's move forward together (no key is
/// edited, nothing sleeps for a period): `rotateEvery: 30d` rotates nothing at 29 days, rotates once after 30, and
/// the next rotation falls 30 days after that one, counted from the new key's creation time.
#[tokio::test]
async fn rotation_follows_the_clock_period_after_period() {
    let env = Env(TestEnv::builder()
        .lro(Duration::from_millis(200))
        .manual_clock()
        // Every resync looks at the schedule.
        .resync(Duration::from_secs(1))
        .configure(|c| c.key_signal_interval = Duration::from_millis(200))
        .capture_logs()
        .start()
        .await);
    let day = Duration::from_secs(86_400);
    let mut spec = env.spec();
    spec.storage_keys.rotate_every = Some("30d".into());
    env.create("ws-clock", spec).await;
    env.wait_in_sync("ws-clock").await;
    let (key1, key2) = (env.key("key1"), env.key("key2"));
    // Two resyncs (each reads the workspace once) after the clock moved: the schedule was looked at since.
    let two_resyncs = async || {
        let start = env.count("Workspaces_Get");
        let check = async || match env.count("Workspaces_Get") {
            n if n >= start + 2 => Ok(()),
            n => Err(n - start),
        };
        common::wait_until(WAIT, Duration::from_millis(25), check, |n| format!("{n} resyncs")).await
    };

    env.advance_clock(29 * day);
    two_resyncs().await;
    assert_eq!(env.count("StorageAccounts_RegenerateKey"), 0, "not due at 29 days");

    env.advance_clock(day + Duration::from_secs(60));
    let rotated = |w: &MlWorkspace| last_reason(w) == Some(ResyncReason::Rotation) && keys_in_sync(w) && is_ready(w);
    let ws = env.wait_for("ws-clock", "rotated", rotated).await;
    let first = ws.status.unwrap().storage_keys.unwrap().last_rotation_time.expect("rotation time");
    assert_eq!(env.count("StorageAccounts_RegenerateKey"), 1, "{:?}", env.sim.handle.call_summary());
    assert_eq!((env.key("key1"), env.cached_key("ws-clock")), (key1.clone(), Some(key1.clone())));
    assert_ne!(env.key("key2"), key2, "the unused key was regenerated");
    let clock = env.clock.as_ref().map(|c| c.offset()).unwrap_or_default();
    assert!(clock >= jiff::SignedDuration::from_hours(30 * 24), "{clock:?}");
    assert!(first.0 >= jiff::Timestamp::now() + jiff::SignedDuration::from_hours(30 * 24 - 1), "stamped by the clock");

    // The period counts from the new key: 29 more days rotate nothing, 30 do.
    env.advance_clock(29 * day);
    two_resyncs().await;
    assert_eq!(env.count("StorageAccounts_RegenerateKey"), 1, "not due 29 days after the rotation");
    env.advance_clock(day + Duration::from_secs(60));
    let rotated_since = |w: &MlWorkspace| {
        let at = w.status.as_ref().and_then(|s| s.storage_keys.as_ref()).and_then(|k| k.last_rotation_time.as_ref());
        rotated(w) && at.is_some_and(|at| at.0 > first.0)
    };
    let ws = env.wait_for("ws-clock", "rotated again", rotated_since).await;
    let second = ws.status.unwrap().storage_keys.unwrap().last_rotation_time.expect("rotation time");
    assert!(second.0 >= first.0 + jiff::SignedDuration::from_hours(30 * 24), "{first:?} -> {second:?}");
    assert_eq!(env.count("StorageAccounts_RegenerateKey"), 2);
    env.assert_no_leak(&[key1, key2, env.key("key1"), env.key("key2")]);
    env.stop().await;
}

#[tokio::test]
async fn a_failed_resync_is_reported_and_retried() {
    let env = Env::start().await;
    env.create("ws-retry", env.spec()).await;
    env.wait_in_sync("ws-retry").await;
    env.sim.handle.inject_fault(FaultRule {
        operation: "Workspaces_ResyncKeys".into(),
        action: FaultAction::LroFailure { status: None, code: "InternalServerError".into(), message: None },
        count: Some(1),
        rate: None,
    });
    env.sim.handle.regenerate_storage_key(&env.world.storage_account_id, "key1").unwrap();
    let ws = env
        .wait_for("ws-retry", "resynced after a failure", |w| {
            last_reason(w) == Some(ResyncReason::Drift) && keys_in_sync(w)
        })
        .await;
    assert!(is_ready(&ws));
    assert_eq!(env.count("Workspaces_ResyncKeys"), 2, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.cached_key("ws-retry"), Some(env.key("key1")));
    assert_eq!(env.event_count(event_reasons::KEYS_RESYNC_FAILED).await, 1);
    assert!(!env.events(event_reasons::KEYS_RESYNCED).await.is_empty());
    env.stop().await;
}

/// Issue 19: the watcher reads each subscription with the client of the binding as it is now. When the binding's
/// credential changes, the next reconcile (which the binding change triggers) hands the watcher the new client;
/// before, the first client registered for a subscription was kept for the life of the process.
#[tokio::test]
async fn the_watcher_uses_the_credential_the_binding_has_now() {
    let env = Env::start().await;
    env.create("ws-cred", env.spec()).await;
    env.wait_in_sync("ws-cred").await;
    let lists_by = |principal: &str, after: u64| {
        env.sim
            .handle
            .calls_after(after)
            .into_iter()
            .filter(|c| c.operation == "StorageAccounts_List" && c.principal.as_deref() == Some(principal))
            .count()
    };
    let operator = env.world.operator.object_id.clone();
    let reader = env.world.reader.clone();
    common::wait_until(
        WAIT,
        Duration::from_millis(25),
        async || match lists_by(&operator, 0) {
            0 => Err(()),
            n => Ok(n),
        },
        |_| "the watcher never listed the storage accounts with the operator's credential".to_owned(),
    )
    .await;

    // The binding now authenticates as another service principal (Reader on the subscription: enough to read).
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "reader-sp"},
        "stringData": {"clientSecret": reader.secret.expose()},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let bindings: Api<azml_operator::api::v1alpha1::SubscriptionBinding> = Api::all(env.client.clone());
    let patch = json!({"spec": {"credential": {"clientSecret": {
        "clientId": reader.client_id,
        "secretRef": {"name": "reader-sp", "key": "clientSecret"},
    }}}});
    bindings.patch("sandbox", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();

    let changed = common::wait_until(
        WAIT,
        Duration::from_millis(25),
        async || {
            let seq = env
                .sim
                .handle
                .calls()
                .iter()
                .filter(|c| c.principal.as_deref() == Some(reader.object_id.as_str()))
                .find(|c| c.operation == "StorageAccounts_List")
                .map(|c| c.seq);
            seq.ok_or(())
        },
        |_| "the watcher kept listing with the credential the binding no longer has".to_owned(),
    )
    .await;
    // From then on the subscription is read with the new credential only.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(lists_by(&operator, changed), 0, "the old credential was used after the new one");
    assert!(lists_by(&reader.object_id, changed) >= 1);
    env.stop().await;
}
