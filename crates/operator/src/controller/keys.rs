//! Storage-key drift: detect it cheaply, confirm it, resync the workspace, verify; manual resync; scheduled rotation.
//!
//! The workspace caches one access key of its storage account. When the account's keys change (someone pressed
//! "Regenerate" in the portal, or a rotation ran), the workspace breaks until its keys are resynced. This module
//! is the per-workspace half of the feature; [`super::key_signals`] is the per-subscription watcher that wakes the
//! affected workspaces.
//!
//! # Detection (no secrets read in steady state)
//! - The watcher lists each subscription's storage accounts once per `--key-signal-interval` and wakes each
//!   registered workspace whose account's `keyCreationTime` differs from the value recorded in
//!   `status.storageKeys.keyCreationTime` at its last sync (once per change). The activity log, which Azure fills
//!   minutes late, is a hint queried in the same round with a look-back that covers the delay. Cost grows with the
//!   number of subscriptions, not workspaces.
//! - A woken workspace confirms the drift: the workspace's `listKeys` userStorageKey is compared in memory with the
//!   account's keys. Only WHICH key matches (`key1`/`key2`/none) is kept; the values are dropped at once. The
//!   account's keys are read once per change of its keyCreationTime and shared by all its workspaces (listKeys is a
//!   POST, counted as a write by ARM), against the keyCreationTime the watcher listed (the account is read again
//!   only when the workspace holds none of those keys).
//! - When the LIST shows that the very key a workspace held was regenerated, nothing needs confirming: the
//!   workspace is woken [`Signal::Stale`] and resyncs at once. A regeneration of N workspaces' key costs 1 + 2N
//!   writes (account listKeys; resyncKeys and the verifying listKeys per workspace); a change of the other key
//!   1 + N (a confirmation each, no resync).
//! - A workspace whose datastores use identity-based access (`systemDatastoresAuthMode: Identity`, read from the
//!   workspace GET the reconcile makes anyway) holds no key: reported `IdentityBased`, no call at all.
//! - A reconcile without a signal, a request or a due rotation makes no call at all here.
//!
//! # Resync
//! `resyncKeys` is a long-running operation. Like the controller's other writes it is started, recorded in
//! `status.pendingOperation` (kind `ResyncKeys/<Reason>`) and polled once per reconcile, so no reconcile blocks and a
//! restarted operator resumes polling. When it ends, the workspace's key is verified again; only a verified resync
//! updates `status.storageKeys` and emits `KeysResynced` with the reason. A failed resync emits a Warning and is
//! retried with the controller's backoff (the intent is kept until a verified resync).
//!
//! # Manual resync
//! A new value of the annotation `azml.dev/resync-keys` starts exactly one resync; the value is recorded in
//! `status.storageKeys.lastResyncRequest` once the resync is verified, so the same value again does nothing.
//!
//! # Rotation (`storageKeys.rotateEvery`)
//! Order of operations for one storage account, whichever of its workspaces finds the rotation due first:
//! 1. Take the account's in-process lock and GET the account: if a key was (re)generated within the period (another
//!    workspace, or a person, rotated already), do not rotate again: this workspace only resyncs. Hence several
//!    workspaces on one account cause ONE regeneration.
//! 2. Pick the key to regenerate: the older one by `keyCreationTime`; on a tie, the one no known workspace of the
//!    account uses. Azure ML's resyncKeys always takes the account's first key, so "always the unused key" would
//!    never rotate key1; alternating by age rotates both keys, each living at most two periods.
//! 3. Regenerate it (a write that is never retried blindly by the client), then wake every other registered
//!    workspace of the account (reason Rotation) and resync this one immediately.
//! 4. Every woken workspace resyncs (reason Rotation) and verifies.
//!
//! Why it is safe: when the regenerated key is one no workspace holds (the first rotation, and every second one),
//! no workspace ever holds an invalid key. When it is the key the workspaces hold, they hold an invalid key only
//! from the regeneration to the end of their own resync, which was started right after it: never longer than one
//! resync. A crash between 3 and 4 is repaired by the normal drift path: the account's `keyCreationTime` no longer
//! matches the recorded one, so the next LIST (at the latest one resync period later, immediately after a restart)
//! wakes every workspace of the account.
//!
//! # Secrets
//! Key values live only inside [`crate::azure::Secret`] during [`which_key`] and are never logged, stored in
//! status, events, errors or metrics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::Context;
use super::outcome::{KeysUpdate, Outcome};
use super::plan::Desired;
use crate::api::conditions::{self, Reason, events};
use crate::api::v1alpha1::{
    ANNOTATION_RESYNC_KEYS, MlWorkspace, MlWorkspaceStatus, PendingOperation, ResyncReason, StorageKeysStatus,
};
use crate::azure::storage::{KeyCreationTime, StorageAccountKey, StorageKeyName};
use crate::azure::workspaces::{Workspace, WorkspaceKeys};
use crate::azure::{ArmClient, LroHandle, LroPoll, LroStart, StorageAccountRef, SubscriptionId};
use crate::intern::Interner;
use crate::reconciler::Phase;
use crate::reconciler::error::Error;
use crate::reconciler::lock;

/// `status.pendingOperation.kind` prefix of a key resync (`ResyncKeys/Drift`, ...).
pub const RESYNC_OPERATION: &str = "ResyncKeys";

/// Why a workspace was woken by the watcher. Ordered by strength: a stronger signal is not downgraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    /// The account's keys changed (activity log, or the keyCreationTime of a key the workspace is not known to
    /// hold): confirm, then resync if needed.
    Drift,
    /// The keyCreationTime of the very key the workspace held at its last sync changed: that key is gone, so the
    /// workspace's copy is stale without asking (resync at once, with autoResync; confirm and report without).
    Stale,
    /// The operator rotated the account's keys: resync.
    Rotation,
}

/// The `keyCreationTime` of an account's two keys, parsed: what the watcher compares. Two optional timestamps
/// instead of a map of four strings (the registry holds one per workspace; issue 20 counts its bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyTimes {
    /// Creation time of key1.
    pub key1: Option<Timestamp>,
    /// Creation time of key2.
    pub key2: Option<Timestamp>,
}

impl KeyTimes {
    /// From the status map (`key1`/`key2` to RFC 3339); an unparsable time counts as unknown.
    pub fn of(map: &BTreeMap<String, String>) -> Self {
        let at = |k: &str| map.get(k).and_then(|t| t.parse::<Timestamp>().ok());
        KeyTimes { key1: at("key1"), key2: at("key2") }
    }

    /// Neither time is known (never synced, or identity-based access).
    pub fn is_empty(&self) -> bool {
        self.key1.is_none() && self.key2.is_none()
    }

    /// The newer of the two.
    pub fn newest(&self) -> Option<Timestamp> {
        self.key1.max(self.key2)
    }
}

/// A workspace as the watcher knows it. Kept small: the registry holds one per workspace.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The custom resource (name, namespace, uid; no resourceVersion).
    pub object: ObjectRef<MlWorkspace>,
    /// Its subscription.
    pub subscription: SubscriptionId,
    /// Lowercased ARM id of its storage account, shared by every workspace of the account.
    pub account: Arc<str>,
    /// keyCreationTime recorded at its last sync.
    pub recorded: KeyTimes,
    /// Which key it used at its last sync.
    pub uses: Option<StorageKeyName>,
}

#[derive(Default)]
struct Registry {
    /// By object uid.
    workspaces: HashMap<String, Registered>,
    /// One client per subscription (the binding's credential), for the watcher's reads.
    clients: HashMap<SubscriptionId, ArmClient>,
    /// The account ids in use, each stored once.
    accounts: Interner,
}

/// An account's keys and the keyCreationTime they were read at.
type KeysAt = (BTreeMap<String, String>, Vec<StorageAccountKey>);

/// Shared state of the key feature: who uses which account, pending signals and resync intents, rotation locks.
pub struct KeyState {
    registry: Mutex<Registry>,
    signals: Mutex<HashMap<String, Signal>>,
    intents: Mutex<HashMap<String, ResyncReason>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last key list read per account (lowercased id), with the keyCreationTime it was read at: the keys of an
    /// account change exactly when its keyCreationTime does, so one listKeys serves every workspace of the account
    /// (confirm and verify) until the next change. Values stay inside [`crate::azure::Secret`].
    account_keys: Mutex<HashMap<String, KeysAt>>,
    /// The keyCreationTime of each account (lowercased id) at the watcher's last LIST: what a confirmation compares
    /// with first, instead of reading the account once per workspace.
    listed: Mutex<HashMap<String, BTreeMap<String, String>>>,
    trigger: broadcast::Sender<ObjectRef<MlWorkspace>>,
}

impl Default for KeyState {
    fn default() -> Self {
        // Triggers are consumed at once by the controllers; a lagging receiver only loses wake-ups, and the
        // signal itself stays in `signals` for the next reconcile.
        let (trigger, _) = broadcast::channel(4096);
        KeyState {
            registry: Mutex::default(),
            signals: Mutex::default(),
            intents: Mutex::default(),
            locks: Mutex::default(),
            account_keys: Mutex::default(),
            listed: Mutex::default(),
            trigger,
        }
    }
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState").finish_non_exhaustive()
    }
}

impl KeyState {
    /// A stream of workspaces to reconcile now (for `Controller::reconcile_on`).
    pub fn triggers(&self) -> impl futures::Stream<Item = ObjectRef<MlWorkspace>> + Send + 'static {
        let rx = self.trigger.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(obj) => return Some((obj, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Subscriptions with registered workspaces and their clients.
    pub fn subscriptions(&self) -> Vec<(SubscriptionId, ArmClient)> {
        lock(&self.registry).clients.iter().map(|(s, c)| (*s, c.clone())).collect()
    }

    /// Registered workspaces of a subscription.
    pub fn workspaces_of(&self, sub: SubscriptionId) -> Vec<Registered> {
        lock(&self.registry).workspaces.values().filter(|w| w.subscription == sub).cloned().collect()
    }

    /// Which keys the registered workspaces of `account` (lowercased id) hold.
    fn keys_used_on(&self, account: &str) -> HashSet<String> {
        let r = lock(&self.registry);
        r.workspaces
            .values()
            .filter(|w| &*w.account == account)
            .filter_map(|w| w.uses)
            .map(key_label)
            .map(str::to_owned)
            .collect()
    }

    /// Wakes every registered workspace of `account` (lowercased id) with `signal`, except `except` (a uid).
    /// Returns how many were woken.
    pub fn signal_account(&self, account: &str, signal: Signal, except: Option<&str>) -> usize {
        let targets: Vec<(String, ObjectRef<MlWorkspace>)> = lock(&self.registry)
            .workspaces
            .iter()
            .filter(|(uid, w)| &*w.account == account && Some(uid.as_str()) != except)
            .map(|(uid, w)| (uid.clone(), w.object.clone()))
            .collect();
        for (uid, obj) in &targets {
            self.signal(uid, obj.clone(), signal);
        }
        targets.len()
    }

    /// Wakes one workspace. A signal is not downgraded by a weaker one (a Rotation by a later Drift).
    pub fn signal(&self, uid: &str, obj: ObjectRef<MlWorkspace>, signal: Signal) {
        {
            let mut m = lock(&self.signals);
            let entry = m.entry(uid.to_owned()).or_insert(signal);
            *entry = (*entry).max(signal);
        }
        // No receiver (controller not running yet) is fine: the signal is picked up by the next reconcile.
        let _ = self.trigger.send(obj);
    }

    /// Registers a workspace of subscription `sub` with the client its reconcile just used. That client is the
    /// current one of its binding (the credential cache rebuilds it when the binding or its Secret changes), so it
    /// replaces the one the watcher reads the subscription with: a changed credential reaches the watcher with the
    /// next reconcile, which the binding change itself triggers.
    fn register(
        &self,
        ws: &MlWorkspace,
        sub: SubscriptionId,
        arm: &ArmClient,
        account: &str,
        keys: Option<&StorageKeysStatus>,
    ) {
        let Some(uid) = ws.uid() else { return };
        let mut object = ObjectRef::from_obj(ws);
        // Not needed to wake it, and different after every write: no reason to hold it.
        object.extra.resource_version = None;
        let mut r = lock(&self.registry);
        let entry = Registered {
            object,
            subscription: sub,
            account: r.accounts.intern(account),
            recorded: keys.map(|k| KeyTimes::of(&k.key_creation_time)).unwrap_or_default(),
            uses: keys.and_then(|k| k.workspace_uses_key.as_deref()).and_then(parse_key_label),
        };
        r.clients.insert(sub, arm.clone());
        r.workspaces.insert(uid, entry);
    }

    /// Forgets every workspace whose uid is not in `live`.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        {
            let mut r = lock(&self.registry);
            r.workspaces.retain(|uid, _| live.contains(uid));
            r.accounts.prune();
        }
        lock(&self.signals).retain(|uid, _| live.contains(uid));
        lock(&self.intents).retain(|uid, _| live.contains(uid));
    }

    /// Forgets a workspace (deleted).
    pub fn forget(&self, uid: &str) {
        {
            lock(&self.registry).workspaces.remove(uid);
        }
        lock(&self.signals).remove(uid);
        lock(&self.intents).remove(uid);
    }

    fn take_signal(&self, uid: &str) -> Option<Signal> {
        lock(&self.signals).get(uid).copied()
    }

    fn clear_signal(&self, uid: &str) {
        lock(&self.signals).remove(uid);
    }

    fn intent(&self, uid: &str) -> Option<ResyncReason> {
        lock(&self.intents).get(uid).copied()
    }

    fn set_intent(&self, uid: &str, reason: Option<ResyncReason>) {
        let mut m = lock(&self.intents);
        match reason {
            Some(r) => m.insert(uid.to_owned(), r),
            None => m.remove(uid),
        };
    }

    /// Records the keyCreationTime of accounts as the watcher just listed them (lowercased id to the status map).
    pub fn listed(&self, accounts: impl IntoIterator<Item = (String, BTreeMap<String, String>)>) {
        lock(&self.listed).extend(accounts);
    }

    fn listed_times(&self, account: &str) -> Option<BTreeMap<String, String>> {
        lock(&self.listed).get(account).cloned()
    }

    fn account_lock(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks).entry(account.to_owned()).or_default().clone()
    }
}

/// Parses `rotateEvery` (`90d`, `12h`, `30m`).
pub fn parse_period(text: &str) -> Option<Duration> {
    let (num, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = num.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "d" => n.checked_mul(86_400)?,
        "h" => n.checked_mul(3_600)?,
        "m" => n.checked_mul(60)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// What the key step does in this reconcile. Pure decision, see [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeysDecision {
    /// No call at all.
    Nothing,
    /// Read the account and both key sets; resync only when the workspace holds no current key.
    Check,
    /// Resync without checking first.
    Resync(ResyncReason),
    /// Rotate the account's keys (once per account), then resync.
    Rotate,
}

/// Inputs of [`decide`].
#[derive(Clone, Debug)]
pub struct DecideInput<'a> {
    /// `spec.storageKeys.autoResync`.
    pub auto_resync: bool,
    /// Parsed `spec.storageKeys.rotateEvery`.
    pub rotate_every: Option<Duration>,
    /// `status.storageKeys`.
    pub status: Option<&'a StorageKeysStatus>,
    /// The `azml.dev/resync-keys` annotation.
    pub request: Option<&'a str>,
    /// A watcher signal for this workspace.
    pub signal: Option<Signal>,
    /// A resync that failed earlier and must be retried.
    pub intent: Option<ResyncReason>,
    /// `azml.dev/paused`.
    pub paused: bool,
    /// Whether the StorageKeysInSync condition is True (with no key held: the workspace uses no account key).
    pub in_sync: bool,
    /// Now.
    pub now: Timestamp,
}

/// Whether a rotation is due: no key of the account was (re)generated within the period.
pub fn rotation_due(recorded: &BTreeMap<String, String>, period: Duration, now: Timestamp) -> bool {
    let newest = recorded.values().filter_map(|t| t.parse::<Timestamp>().ok()).max();
    match (newest, jiff::SignedDuration::try_from(period)) {
        (Some(newest), Ok(p)) => newest.checked_add(p).is_ok_and(|due| due <= now),
        // Unknown creation times: check first, which records them.
        _ => false,
    }
}

/// How long after `now` a rotation is due (so the reconcile is requeued in time), when rotation is on.
pub fn until_rotation(
    period: Option<Duration>,
    recorded: &BTreeMap<String, String>,
    now: Timestamp,
) -> Option<Duration> {
    let period = jiff::SignedDuration::try_from(period?).ok()?;
    let newest = recorded.values().filter_map(|t| t.parse::<Timestamp>().ok()).max()?;
    let due = newest.checked_add(period).ok()?;
    let left = now.duration_until(due);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// The key step's decision for one reconcile.
pub fn decide(input: &DecideInput<'_>) -> KeysDecision {
    if input.paused {
        return KeysDecision::Nothing;
    }
    let status = input.status;
    if let Some(request) = input.request.filter(|r| !r.is_empty())
        && status.and_then(|s| s.last_resync_request.as_deref()) != Some(request)
    {
        return KeysDecision::Resync(ResyncReason::Requested);
    }
    if let Some(reason) = input.intent {
        return KeysDecision::Resync(reason);
    }
    match input.signal {
        Some(Signal::Rotation) => return KeysDecision::Resync(ResyncReason::Rotation),
        Some(Signal::Stale) if input.auto_resync => return KeysDecision::Resync(ResyncReason::Drift),
        Some(Signal::Stale | Signal::Drift) => return KeysDecision::Check,
        None => {}
    }
    let Some(status) = status else {
        return KeysDecision::Check;
    };
    // Known drifted (reported, not resynced): look again each period, someone may have fixed it.
    if status.workspace_uses_key.is_none() && !input.in_sync {
        return KeysDecision::Check;
    }
    if let Some(period) = input.rotate_every
        && input.auto_resync
        && rotation_due(&status.key_creation_time, period, input.now)
    {
        return KeysDecision::Rotate;
    }
    KeysDecision::Nothing
}

/// Which account key `workspace` holds, compared in memory. The values are not kept.
pub fn which_key(account: &[StorageAccountKey], workspace: &WorkspaceKeys) -> Option<StorageKeyName> {
    let held = workspace.user_storage_key.as_ref().filter(|k| !k.is_empty())?;
    account.iter().find(|k| k.value.expose() == held.expose()).and_then(|k| match k.key_name.as_str() {
        n if n.eq_ignore_ascii_case("key1") => Some(StorageKeyName::Key1),
        n if n.eq_ignore_ascii_case("key2") => Some(StorageKeyName::Key2),
        _ => None,
    })
}

fn key_label(k: StorageKeyName) -> &'static str {
    match k {
        StorageKeyName::Key1 => "key1",
        StorageKeyName::Key2 => "key2",
    }
}

fn parse_key_label(label: &str) -> Option<StorageKeyName> {
    match label {
        "key1" => Some(StorageKeyName::Key1),
        "key2" => Some(StorageKeyName::Key2),
        _ => None,
    }
}

/// `keyCreationTime` as the status map.
pub fn creation_map(k: Option<&KeyCreationTime>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(k) = k {
        if let Some(t) = &k.key1 {
            m.insert("key1".to_owned(), t.clone());
        }
        if let Some(t) = &k.key2 {
            m.insert("key2".to_owned(), t.clone());
        }
    }
    m
}

/// The key to regenerate in a rotation: the older one; on a tie (or unknown times), one no workspace uses.
pub fn key_to_rotate(times: &BTreeMap<String, String>, used: &HashSet<String>) -> StorageKeyName {
    let t = |k: &str| times.get(k).and_then(|v| v.parse::<Timestamp>().ok());
    match (t("key1"), t("key2")) {
        (Some(a), Some(b)) if a < b => StorageKeyName::Key1,
        (Some(a), Some(b)) if b < a => StorageKeyName::Key2,
        _ if used.contains("key2") && !used.contains("key1") => StorageKeyName::Key1,
        _ => StorageKeyName::Key2,
    }
}

fn reason_name(r: ResyncReason) -> &'static str {
    match r {
        ResyncReason::Drift => "Drift",
        ResyncReason::Requested => "Requested",
        ResyncReason::Rotation => "Rotation",
        ResyncReason::Created => "Created",
    }
}

fn parse_reason(s: &str) -> ResyncReason {
    match s {
        "Requested" => ResyncReason::Requested,
        "Rotation" => ResyncReason::Rotation,
        "Created" => ResyncReason::Created,
        _ => ResyncReason::Drift,
    }
}

/// Whether `status.pendingOperation` is a key resync (handled here, not by the workspace pipeline).
pub fn owns_pending(status: Option<&MlWorkspaceStatus>) -> bool {
    status.and_then(|s| s.pending_operation.as_ref()).is_some_and(owns_operation)
}

/// Whether `operation` is a key resync.
pub fn owns_operation(operation: &PendingOperation) -> bool {
    operation.kind.starts_with(RESYNC_OPERATION)
}

fn storage_ref(desired: &Desired) -> Result<StorageAccountRef, Error> {
    StorageAccountRef::parse(desired.storage_account.as_str())
        .map_err(|source| Error::InvalidId { what: "spec.storageAccount", source })
}

fn register(ctx: &Context, ws: &MlWorkspace, desired: &Desired, arm: &ArmClient, keys: Option<&StorageKeysStatus>) {
    let account = desired.storage_account.as_str().to_ascii_lowercase();
    ctx.keys.register(ws, desired.workspace.subscription(), arm, &account, keys);
}

/// Facts read to confirm drift.
struct Confirmed {
    uses: Option<StorageKeyName>,
    /// Whether the workspace holds any key at all.
    holds_key: bool,
    times: BTreeMap<String, String>,
}

/// The account's keys: from the per-account cache when its keyCreationTime is unchanged, else one listKeys (a POST,
/// which ARM counts as a write) under the account's lock, so concurrent workspaces of the account share it.
async fn account_keys(
    ctx: &Context,
    arm: &ArmClient,
    sa: &StorageAccountRef,
    times: &BTreeMap<String, String>,
) -> Result<Vec<StorageAccountKey>, Error> {
    let account = sa.id().to_ascii_lowercase();
    let cached = |state: &KeyState| {
        lock(&state.account_keys)
            .get(&account)
            .filter(|(at, _)| !times.is_empty() && at == times)
            .map(|(_, k)| k.clone())
    };
    if let Some(keys) = cached(&ctx.keys) {
        return Ok(keys);
    }
    // Not the rotation lock: a rotation holds that one while it resyncs (and may verify at once).
    let account_lock = ctx.keys.account_lock(&format!("listKeys:{account}"));
    let _guard = account_lock.lock().await;
    if let Some(keys) = cached(&ctx.keys) {
        return Ok(keys);
    }
    let keys = arm.list_storage_account_keys(sa).await.map_err(Error::arm("list storage account keys"))?;
    if !times.is_empty() {
        lock(&ctx.keys.account_keys).insert(account, (times.clone(), keys.clone()));
    }
    Ok(keys)
}

/// Which of its account's keys the workspace holds. The account's keys are those of the keyCreationTime the
/// watcher listed last (shared by every workspace of the account: no call per workspace); only when the workspace
/// holds none of them, or nothing was listed yet, is the account read now, in case it changed since that LIST.
async fn confirm(
    ctx: &Context,
    arm: &ArmClient,
    desired: &Desired,
    sa: &StorageAccountRef,
) -> Result<Confirmed, Error> {
    let ws_keys = arm.list_workspace_keys(&desired.workspace).await.map_err(Error::arm("list workspace keys"))?;
    let holds_key = ws_keys.user_storage_key.as_ref().is_some_and(|k| !k.is_empty());
    if let Some(times) = ctx.keys.listed_times(&sa.id().to_ascii_lowercase()).filter(|t| !t.is_empty()) {
        let uses = which_key(&account_keys(ctx, arm, sa, &times).await?, &ws_keys);
        if uses.is_some() || !holds_key {
            return Ok(Confirmed { uses, holds_key, times });
        }
    }
    let account = arm.get_storage_account(sa).await.map_err(Error::arm("read storage account"))?;
    let times = creation_map(account.as_ref().and_then(|a| a.properties.key_creation_time.as_ref()));
    let uses = which_key(&account_keys(ctx, arm, sa, &times).await?, &ws_keys);
    // The key values are dropped here: only which key matches leaves.
    Ok(Confirmed { uses, holds_key, times })
}

fn in_sync_message(uses: StorageKeyName) -> String {
    format!("the workspace holds the storage account's current {}", key_label(uses))
}

/// Whether the workspace's system datastores use identity-based access (`properties.systemDatastoresAuthMode:
/// Identity`): then listKeys has no `userStorageKey` and there is no cached account key to keep in sync.
pub fn identity_based(workspace: &Workspace) -> bool {
    workspace.properties.system_datastores_auth_mode.as_deref().is_some_and(|m| m.eq_ignore_ascii_case("Identity"))
}

/// The outcome for a workspace with identity-based storage access: no call at all, nothing claimed.
fn identity_outcome(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    uid: &str,
    keys_status: Option<&StorageKeysStatus>,
) -> Outcome {
    ctx.keys.set_intent(uid, None);
    ctx.keys.clear_signal(uid);
    let mut next = keys_status.cloned().unwrap_or_default();
    next.workspace_uses_key = None;
    next.key_creation_time.clear();
    // Registered without recorded key times: the watcher's keyCreationTime comparison skips it.
    register_recorded(ctx, ws, desired, arm, &next);
    let message = "the workspace's datastores use identity-based access (systemDatastoresAuthMode Identity): it holds \
                   no storage account key, so there is nothing to resync or rotate"
        .to_owned();
    Outcome::unchanged()
        .keys(KeysUpdate { storage_keys: Some(next), condition: Some((true, Reason::IdentityBased, message)) })
}

/// The key step after the workspace pipeline found the workspace Ready (present, no operation in flight).
/// `workspace` is the workspace as this reconcile read it.
pub async fn after_ready(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    status: Option<&MlWorkspaceStatus>,
    workspace: Option<&Workspace>,
) -> Result<Outcome, Error> {
    let uid = ws.uid().unwrap_or_default();
    let keys_status = status.and_then(|s| s.storage_keys.as_ref());
    if workspace.is_some_and(identity_based) {
        return Ok(identity_outcome(ctx, ws, desired, arm, &uid, keys_status));
    }
    register(ctx, ws, desired, arm, keys_status);
    let spec = &ws.spec.storage_keys;
    let input = DecideInput {
        auto_resync: spec.auto_resync,
        rotate_every: spec.rotate_every.as_deref().and_then(parse_period),
        status: keys_status,
        request: ws.annotations().get(ANNOTATION_RESYNC_KEYS).map(String::as_str),
        signal: ctx.keys.take_signal(&uid),
        intent: ctx.keys.intent(&uid),
        paused: desired.paused,
        // In sync as a key holder (an IdentityBased workspace that switched to access keys is checked afresh).
        in_sync: status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == conditions::STORAGE_KEYS_IN_SYNC && c.status == "True" && c.reason == Reason::KeysInSync
            })
        }),
        now: ctx.config.clock().now(),
    };
    let decision = decide(&input);
    debug!(?decision, "storage keys");
    let sa = storage_ref(desired)?;
    let rotate_every = input.rotate_every.filter(|_| spec.auto_resync);
    match decision {
        KeysDecision::Nothing => Ok(Outcome {
            requeue: keys_status.and_then(|k| until_rotation(rotate_every, &k.key_creation_time, input.now)),
            ..Outcome::unchanged()
        }),
        KeysDecision::Check => {
            let confirmed = confirm(ctx, arm, desired, &sa).await?;
            ctx.keys.clear_signal(&uid);
            let mut next = keys_status.cloned().unwrap_or_default();
            next.key_creation_time = confirmed.times.clone();
            if !confirmed.holds_key {
                // Identity-based storage access: the workspace caches no account key, so nothing can drift.
                next.workspace_uses_key = None;
                register_recorded(ctx, ws, desired, arm, &next);
                let message = "the workspace holds no storage account key (identity-based access)".to_owned();
                return Ok(Outcome::unchanged().keys(KeysUpdate {
                    storage_keys: Some(next),
                    condition: Some((true, Reason::KeysInSync, message)),
                }));
            }
            match confirmed.uses {
                Some(k) => {
                    next.workspace_uses_key = Some(key_label(k).to_owned());
                    register_recorded(ctx, ws, desired, arm, &next);
                    // A first sync may find the keys already older than the period: rotate now, not a period later.
                    if let Some(period) = rotate_every
                        && !desired.paused
                        && rotation_due(&next.key_creation_time, period, ctx.config.clock().now())
                    {
                        return rotate(ctx, ws, desired, arm, &uid, Some(&next), &sa).await;
                    }
                    Ok(Outcome {
                        requeue: until_rotation(rotate_every, &next.key_creation_time, ctx.config.clock().now()),
                        ..Outcome::unchanged().keys(KeysUpdate {
                            storage_keys: Some(next),
                            condition: Some((true, Reason::KeysInSync, in_sync_message(k))),
                        })
                    })
                }
                None if spec.auto_resync => {
                    ctx.config.metrics.drift_detected("storageKeys");
                    info!("storage keys drifted; resyncing");
                    start_resync(ctx, ws, desired, arm, &uid, keys_status, ResyncReason::Drift).await
                }
                None => {
                    ctx.config.metrics.drift_detected("storageKeys");
                    next.workspace_uses_key = None;
                    register_recorded(ctx, ws, desired, arm, &next);
                    let message = "the workspace holds a key its storage account no longer has; autoResync is false: \
                                   set a new value of the azml.dev/resync-keys annotation to resync"
                        .to_owned();
                    Ok(Outcome::unchanged().keys(KeysUpdate {
                        storage_keys: Some(next),
                        condition: Some((false, Reason::KeysDrifted, message)),
                    }))
                }
            }
        }
        // start_resync clears the signals this resync answers.
        KeysDecision::Resync(reason) => start_resync(ctx, ws, desired, arm, &uid, keys_status, reason).await,
        KeysDecision::Rotate => rotate(ctx, ws, desired, arm, &uid, keys_status, &sa).await,
    }
}

fn register_recorded(ctx: &Context, ws: &MlWorkspace, desired: &Desired, arm: &ArmClient, next: &StorageKeysStatus) {
    register(ctx, ws, desired, arm, Some(next));
}

async fn rotate(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    uid: &str,
    keys_status: Option<&StorageKeysStatus>,
    sa: &StorageAccountRef,
) -> Result<Outcome, Error> {
    let account_id = desired.storage_account.as_str().to_ascii_lowercase();
    let account_lock = ctx.keys.account_lock(&account_id);
    let _guard = account_lock.lock().await;
    let period =
        ws.spec.storage_keys.rotate_every.as_deref().and_then(parse_period).unwrap_or(Duration::from_secs(u64::MAX));
    let account = arm.get_storage_account(sa).await.map_err(Error::arm("read storage account"))?;
    let times = creation_map(account.as_ref().and_then(|a| a.properties.key_creation_time.as_ref()));
    if rotation_due(&times, period, ctx.config.clock().now()) {
        let used = ctx.keys.keys_used_on(&account_id);
        let key = key_to_rotate(&times, &used);
        arm.regenerate_storage_account_key(sa, key).await.map_err(Error::arm("regenerate storage account key"))?;
        let woken = ctx.keys.signal_account(&account_id, Signal::Rotation, Some(uid));
        info!(key = key_label(key), other_workspaces = woken, "rotated the storage account key");
    } else {
        debug!("the account's keys were rotated within the period already; resyncing only");
    }
    start_resync(ctx, ws, desired, arm, uid, keys_status, ResyncReason::Rotation).await
}

async fn start_resync(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    uid: &str,
    keys_status: Option<&StorageKeysStatus>,
    reason: ResyncReason,
) -> Result<Outcome, Error> {
    // Kept until a verified resync: a failure anywhere below is retried with the same reason.
    ctx.keys.set_intent(uid, Some(reason));
    // This resync covers every signal raised before it starts (a rotation by another workspace of the account
    // included); only a later one needs another.
    ctx.keys.clear_signal(uid);
    let start = arm.begin_resync_workspace_keys(&desired.workspace).await.map_err(Error::arm("resync keys"))?;
    info!(reason = reason_name(reason), "resyncKeys accepted");
    match start {
        LroStart::Done(()) => verify(ctx, ws, desired, arm, uid, keys_status, reason).await,
        LroStart::Pending(handle) => Ok(in_flight(ctx, ws, handle, reason)),
    }
}

fn in_flight(ctx: &Context, ws: &MlWorkspace, handle: LroHandle, reason: ResyncReason) -> Outcome {
    let requeue = super::progress::poll_delay(ctx, &handle);
    let message = format!("resyncing the workspace's storage keys ({})", reason_name(reason));
    let pending = PendingOperation {
        kind: format!("{RESYNC_OPERATION}/{}", reason_name(reason)),
        // LroHandle is plain data; serialising it cannot fail.
        poller: serde_json::to_string(&handle).unwrap_or_default(),
        started_at: Some(Time(handle.started_at)),
        generation: ws.metadata.generation,
    };
    let update = KeysUpdate { storage_keys: None, condition: Some((false, Reason::KeysResyncing, message.clone())) };
    Outcome::progressing(Reason::KeysResyncing, message).keys(update).pending(Some(pending)).requeue(requeue)
}

/// After a finished resync: confirm the workspace holds a current key, then record and announce it.
async fn verify(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    uid: &str,
    keys_status: Option<&StorageKeysStatus>,
    reason: ResyncReason,
) -> Result<Outcome, Error> {
    let sa = storage_ref(desired)?;
    let confirmed = confirm(ctx, arm, desired, &sa).await?;
    let Some(k) = confirmed.uses else {
        // The keys changed again during the resync (or Azure did not pick a current key): retry with backoff.
        warn!(reason = reason_name(reason), "resync finished but the workspace still holds no current storage key");
        ctx.publish(
            ws,
            EventType::Warning,
            events::KEYS_RESYNC_FAILED,
            "resyncKeys finished but the workspace still holds no current storage key; looking again at the next \
             signal or resync period"
                .to_owned(),
        )
        .await;
        // Not retried in a loop: the next signal, or the next resync period, looks again (one resync per period
        // at most for a workspace a resync cannot fix).
        ctx.keys.set_intent(uid, None);
        let mut next = keys_status.cloned().unwrap_or_default();
        next.workspace_uses_key = None;
        next.key_creation_time = confirmed.times;
        register_recorded(ctx, ws, desired, arm, &next);
        let message = "resyncKeys finished but the workspace still holds no current storage account key".to_owned();
        let update = KeysUpdate { storage_keys: Some(next), condition: Some((false, Reason::KeysDrifted, message)) };
        return Ok(Outcome::unchanged().keys(update));
    };
    let now = Time(ctx.config.clock().now());
    let mut next = keys_status.cloned().unwrap_or_default();
    next.workspace_uses_key = Some(key_label(k).to_owned());
    next.key_creation_time = confirmed.times;
    next.last_resync_time = Some(now.clone());
    next.last_resync_reason = Some(reason);
    match reason {
        ResyncReason::Requested => {
            next.last_resync_request = ws.annotations().get(ANNOTATION_RESYNC_KEYS).cloned();
        }
        ResyncReason::Rotation => next.last_rotation_time = Some(now),
        ResyncReason::Drift | ResyncReason::Created => {}
    }
    ctx.keys.set_intent(uid, None);
    ctx.keys.clear_signal(uid);
    register_recorded(ctx, ws, desired, arm, &next);
    let request = match (reason, next.last_resync_request.as_deref()) {
        (ResyncReason::Requested, Some(value)) => format!(" {value:?}"),
        _ => String::new(),
    };
    let note =
        format!("Resynced the storage keys ({}{request}); the workspace holds {}", reason_name(reason), key_label(k));
    ctx.config.metrics.keys_resynced();
    ctx.publish(ws, EventType::Normal, events::KEYS_RESYNCED, note).await;
    Ok(Outcome::unchanged()
        .keys(KeysUpdate { storage_keys: Some(next), condition: Some((true, Reason::KeysInSync, in_sync_message(k))) }))
}

/// Polls a resync recorded in `status.pendingOperation` once. Called instead of the workspace pipeline while a
/// resync is in flight.
pub async fn resume(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    status: Option<&MlWorkspaceStatus>,
) -> Result<Outcome, Error> {
    let uid = ws.uid().unwrap_or_default();
    let keys_status = status.and_then(|s| s.storage_keys.as_ref());
    register(ctx, ws, desired, arm, keys_status);
    let Some(op) = status.and_then(|s| s.pending_operation.as_ref()) else {
        return Ok(Outcome::unchanged());
    };
    let reason = parse_reason(op.kind.split_once('/').map_or("", |(_, r)| r));
    let handle: LroHandle =
        serde_json::from_str(&op.poller).map_err(|e| Error::BadPendingOperation(format!("poller: {e}")))?;
    ctx.keys.set_intent(&uid, Some(reason));
    match arm.poll_lro::<serde::de::IgnoredAny>(&handle).await {
        Ok(LroPoll::InProgress(next)) => Ok(in_flight(ctx, ws, next, reason)),
        Ok(LroPoll::Done(_)) => verify(ctx, ws, desired, arm, &uid, keys_status, reason).await,
        Err(err) if crate::reconciler::error::ends_operation(&err) || err.is_not_found() => {
            // The resync is over and failed. Not a reason to stall: the intent stays, retry with backoff.
            let message = crate::reconciler::error::scrub(&format!(
                "resyncKeys ({}) failed; retrying: {err}",
                reason_name(reason)
            ));
            warn!(error = %message, "key resync failed");
            ctx.publish(ws, EventType::Warning, events::KEYS_RESYNC_FAILED, message.clone()).await;
            ctx.config.metrics.keys_resync_failed();
            let attempt = ctx.bump_failures(ws);
            let delay =
                crate::reconciler::error::backoff(attempt, ctx.config.error_backoff_base, ctx.config.error_backoff_max);
            let update =
                KeysUpdate { storage_keys: None, condition: Some((false, Reason::KeysDrifted, message.clone())) };
            Ok(Outcome::phase(Phase::Transient { message }).keys(update).requeue(delay))
        }
        // Azure could not be reached: keep the operation and poll again.
        Err(err) => Err(Error::Arm { step: POLL_STEP, source: Box::new(err) }),
    }
}

const POLL_STEP: &str = "poll key resync";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::Secret;

    fn ts(s: &str) -> String {
        s.to_owned()
    }

    fn status(uses: Option<&str>, times: &[(&str, &str)], request: Option<&str>) -> StorageKeysStatus {
        StorageKeysStatus {
            workspace_uses_key: uses.map(Into::into),
            key_creation_time: times.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            last_resync_request: request.map(Into::into),
            ..Default::default()
        }
    }

    fn input<'a>(status: Option<&'a StorageKeysStatus>) -> DecideInput<'a> {
        DecideInput {
            auto_resync: true,
            rotate_every: None,
            status,
            request: None,
            signal: None,
            intent: None,
            paused: false,
            in_sync: false,
            now: "2026-06-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn steady_state_makes_no_call() {
        let s = status(Some("key1"), &[("key1", "2026-01-01T00:00:00Z")], None);
        assert_eq!(decide(&input(Some(&s))), KeysDecision::Nothing);
        assert_eq!(decide(&input(None)), KeysDecision::Check, "first sync records a baseline");
        let drifted = status(None, &[], None);
        assert_eq!(decide(&input(Some(&drifted))), KeysDecision::Check);
        let mut identity = input(Some(&drifted));
        identity.in_sync = true;
        assert_eq!(decide(&identity), KeysDecision::Nothing, "no key held, in sync: identity-based access");
    }

    #[test]
    fn signals_requests_and_intents() {
        let s = status(Some("key1"), &[], Some("a"));
        let mut i = input(Some(&s));
        i.signal = Some(Signal::Drift);
        assert_eq!(decide(&i), KeysDecision::Check);
        i.signal = Some(Signal::Rotation);
        assert_eq!(decide(&i), KeysDecision::Resync(ResyncReason::Rotation));
        i.signal = Some(Signal::Stale);
        assert_eq!(decide(&i), KeysDecision::Resync(ResyncReason::Drift), "the held key is gone: no confirmation");
        i.auto_resync = false;
        assert_eq!(decide(&i), KeysDecision::Check, "without autoResync it is confirmed and reported");
        i.auto_resync = true;
        i.signal = None;
        i.request = Some("a");
        assert_eq!(decide(&i), KeysDecision::Nothing, "the same request value does nothing");
        i.request = Some("b");
        assert_eq!(decide(&i), KeysDecision::Resync(ResyncReason::Requested));
        i.request = None;
        i.intent = Some(ResyncReason::Drift);
        assert_eq!(decide(&i), KeysDecision::Resync(ResyncReason::Drift));
        i.paused = true;
        assert_eq!(decide(&i), KeysDecision::Nothing);
    }

    #[test]
    fn rotation_is_due_after_the_period_since_the_newest_key() {
        let s = status(Some("key1"), &[("key1", "2026-01-01T00:00:00Z"), ("key2", "2026-05-20T00:00:00Z")], None);
        let mut i = input(Some(&s));
        i.rotate_every = parse_period("30d");
        assert_eq!(decide(&i), KeysDecision::Nothing, "key2 is 12 days old");
        i.rotate_every = parse_period("10d");
        assert_eq!(decide(&i), KeysDecision::Rotate);
        i.auto_resync = false;
        assert_eq!(decide(&i), KeysDecision::Nothing, "no rotation without resync");
    }

    /// The requeue that brings the reconcile back when the rotation falls due shrinks as the clock moves, and is zero
    /// once it is due.
    #[test]
    fn the_rotation_requeue_follows_the_clock() {
        use crate::clock::TimeSource as _;
        let clock = crate::clock::ManualClock::fixed("2026-06-01T00:00:00Z".parse().unwrap());
        let times = status(None, &[("key1", "2026-01-01T00:00:00Z"), ("key2", "2026-05-20T00:00:00Z")], None);
        let recorded = &times.key_creation_time;
        let period = parse_period("30d");
        let day = Duration::from_secs(86_400);
        assert_eq!(until_rotation(period, recorded, clock.now()), Some(18 * day), "due 30 days after key2");
        assert_eq!(until_rotation(None, recorded, clock.now()), None, "no rotation, no requeue");
        clock.advance(17 * day);
        assert_eq!(until_rotation(period, recorded, clock.now()), Some(day));
        assert!(!rotation_due(recorded, 30 * day, clock.now()));
        clock.advance(day);
        assert_eq!(until_rotation(period, recorded, clock.now()), Some(Duration::ZERO));
        assert!(rotation_due(recorded, 30 * day, clock.now()));
        clock.advance(day);
        assert_eq!(until_rotation(period, recorded, clock.now()), Some(Duration::ZERO), "overdue: at once");
    }

    #[test]
    fn periods_parse() {
        assert_eq!(parse_period("90d"), Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_period("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_period("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_period("0m"), None);
        assert_eq!(parse_period("5s"), None);
        assert_eq!(parse_period(""), None);
    }

    #[test]
    fn rotation_picks_the_older_key_then_the_unused_one() {
        let times: BTreeMap<String, String> =
            [("key1".into(), ts("2026-01-01T00:00:00Z")), ("key2".into(), ts("2026-02-01T00:00:00Z"))].into();
        let used: HashSet<String> = ["key1".to_owned()].into();
        assert_eq!(key_to_rotate(&times, &used), StorageKeyName::Key1, "older key first");
        let tie: BTreeMap<String, String> =
            [("key1".into(), ts("2026-01-01T00:00:00Z")), ("key2".into(), ts("2026-01-01T00:00:00Z"))].into();
        assert_eq!(key_to_rotate(&tie, &used), StorageKeyName::Key2, "tie: the unused key");
        let used2: HashSet<String> = ["key2".to_owned()].into();
        assert_eq!(key_to_rotate(&tie, &used2), StorageKeyName::Key1);
    }

    #[test]
    fn which_key_compares_values_without_keeping_them() {
        let account: Vec<StorageAccountKey> = serde_json::from_value(serde_json::json!([
            {"keyName": "key1", "value": "v1", "permissions": "FULL"},
            {"keyName": "key2", "value": "v2", "permissions": "FULL"},
        ]))
        .unwrap();
        let ws = |v: Option<&str>| WorkspaceKeys { user_storage_key: v.map(Secret::from), ..Default::default() };
        assert_eq!(which_key(&account, &ws(Some("v2"))), Some(StorageKeyName::Key2));
        assert_eq!(which_key(&account, &ws(Some("old"))), None);
        assert_eq!(which_key(&account, &ws(None)), None);
        assert_eq!(which_key(&account, &ws(Some(""))), None);
    }

    #[test]
    fn update_sets_the_condition_and_facts() {
        let mut st = MlWorkspaceStatus::default();
        let now = Time(Timestamp::UNIX_EPOCH);
        let u = KeysUpdate {
            storage_keys: Some(status(Some("key1"), &[], None)),
            condition: Some((false, Reason::KeysDrifted, "m".into())),
        };
        u.apply(&mut st, Some(2), &now);
        let c = st.conditions.iter().find(|c| c.type_ == conditions::STORAGE_KEYS_IN_SYNC).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.observed_generation), ("False", "KeysDrifted", Some(2)));
        assert_eq!(st.storage_keys.unwrap().workspace_uses_key.as_deref(), Some("key1"));
    }

    #[test]
    fn signals_wake_only_the_accounts_workspaces() {
        let state = KeyState::default();
        let mut rx = state.trigger.subscribe();
        let obj = |n: &str| ObjectRef::<MlWorkspace>::new(n).within("ns");
        let reg = |uid: &str, account: &str| Registered {
            object: obj(uid),
            subscription: SubscriptionId::from_uuid(uuid::Uuid::nil()),
            account: account.into(),
            recorded: KeyTimes::default(),
            uses: None,
        };
        {
            let mut r = lock(&state.registry);
            r.workspaces.insert("a".into(), reg("a", "/sa1"));
            r.workspaces.insert("b".into(), reg("b", "/sa1"));
            r.workspaces.insert("c".into(), reg("c", "/sa2"));
        }
        assert_eq!(state.signal_account("/sa1", Signal::Drift, Some("a")), 1);
        assert_eq!(rx.try_recv().unwrap().name, "b");
        assert!(rx.try_recv().is_err());
        assert_eq!(state.take_signal("b"), Some(Signal::Drift));
        state.signal("b", obj("b"), Signal::Rotation);
        state.signal("b", obj("b"), Signal::Drift);
        assert_eq!(state.take_signal("b"), Some(Signal::Rotation), "not downgraded");
        assert_eq!(state.take_signal("c"), None);
        state.signal("c", obj("c"), Signal::Stale);
        state.signal("c", obj("c"), Signal::Drift);
        assert_eq!(state.take_signal("c"), Some(Signal::Stale), "not downgraded");
    }
}
