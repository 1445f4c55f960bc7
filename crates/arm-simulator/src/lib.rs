//! Azure Resource Manager + Entra ID simulator.
//!
//! One HTTPS server on `127.0.0.1:0` (certificate from a generated [`SandboxCa`]) serves three things:
//!
//! * **ARM** at the root (`/subscriptions/...`): resource groups, storage accounts, key vaults, app insights,
//!   container registries, ML workspaces, online endpoints and deployments, role assignments and definitions,
//!   validateMoveResources/moveResources, resource lists, providers, the activity log, and LRO poll URLs shaped
//!   per resource provider as recorded (see `lro.rs`).
//!   Ids are case-insensitive; the ARM error envelope is used everywhere.
//! * **Entra ID**: the same server is the authority host: `POST /{tenant}/oauth2/v2.0/token` (client credentials with
//!   `client_secret` or a JWT-shaped `client_assertion` for federated apps), `GET
//!   /{tenant}/v2.0/.well-known/openid-configuration` and `GET /common/discovery/instance`.
//! * **Admin API** under `/_sim/...` (no ARM auth, loopback peers only). The same operations exist on [`SimHandle`].
//!
//! Tests drive it in-process through [`RunningSim`] / [`SimHandle`].
//!
//! It answers as Azure does, not as our client expects: `SIMULATOR.md` at this crate's root lists each behaviour with
//! its source (recorded traffic first, then the specs, then Learn), and `crates/sandbox/tests/recordings.rs` keeps the simulator and
//! the recordings from drifting apart. Azure's waits (`Retry-After`) are scaled by [`SimConfig::time_scale`].
#![forbid(unsafe_code)]

mod activity_log;
mod api_versions;
mod auth;
pub mod control;
mod engine;
mod federation;
pub mod gate;
mod generic;
mod lro;
pub mod model;
mod namespaces;
mod reply;
mod route;
mod secret;
mod server;
mod shapes;
pub mod soft_delete;
mod tags;
mod throttle;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use control::{CallKind, CallRecord, FaultAction, FaultRule, OpCount, ThrottleConfig};
pub use federation::{FederatedCredential, OidcIssuerKey, TOKEN_EXCHANGE_AUDIENCE};
pub use gate::{CallHold, HeldCall, HoldPhase, HoldRule, Release};
pub use model::{Principal, PrincipalKind, Secret, SeededSp, SimState, World, roles};
pub use throttle::{StorageLimits, WindowLimit};

use crate::tls::{SandboxCa, TlsError};
use engine::{Inner, Knobs};

/// Errors of the simulator's public API.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Generating the CA / server certificate failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding the listener failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// IO error.
        #[source]
        source: std::io::Error,
    },
    /// A resource the caller named does not exist.
    #[error("resource not found: {0}")]
    NotFound(String),
    /// A storage key name other than key1/key2.
    #[error("unknown storage key name '{0}' (expected key1 or key2)")]
    BadKeyName(String),
    /// Saving or loading state failed.
    #[error("state file {path}: {message}")]
    StateFile {
        /// File path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Initial world.
    pub state: SimState,
    /// Listen address; default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// How long every LRO takes; default 100 ms.
    pub lro_duration: Duration,
    /// Simulated seconds per real second for the waits Azure asks of clients: the `Retry-After` values Azure sends
    /// (10 s for ML operations, 17 s for storage account creation, ...) are multiplied by it and rounded up to whole
    /// seconds, never below 1. 1.0 answers as Azure does; default 0.01 (every `Retry-After` is then 1 s).
    pub time_scale: f64,
    /// A fixed `Retry-After` (seconds) for every LRO answer and poll instead of Azure's scaled values. Only this can
    /// make the simulator answer `Retry-After: 0`; default `None`.
    pub retry_after_secs: Option<u64>,
    /// Lifetime of issued access tokens; default 3599 s.
    pub token_lifetime: Duration,
    /// Throttling buckets; default ARM's (reads 250 @ 25/s, writes 200 @ 10/s).
    pub throttle: ThrottleConfig,
    /// Page size of list operations (nextLink paging); default 100.
    pub page_size: usize,
    /// The storage resource provider's own limits (default: Learn's scalability targets).
    pub storage_limits: StorageLimits,
    /// The CA that signs the server certificate; default: a fresh one. The sandbox passes the CA it saved, so
    /// clients trusting the old CA file keep working after a restart.
    pub ca: Option<Arc<SandboxCa>>,
    /// Access tokens issued by an earlier run (see [`SimHandle::persistent_json`]); default: none.
    pub tokens: SavedTokens,
    /// How long an activity-log event takes to become visible (Azure's ingestion delay); default 5 minutes.
    pub activity_log_delay: Duration,
}

/// Access tokens issued by a simulator, read back from [`SimHandle::persistent_json`]. `Debug` shows no token.
#[derive(Clone, Default)]
pub struct SavedTokens(auth::Tokens);

impl std::fmt::Debug for SavedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SavedTokens(<redacted>)")
    }
}

/// What [`SimHandle::persistent_json`] writes: the state and the tokens issued.
#[derive(serde::Serialize)]
struct PersistentOut<'a> {
    #[serde(flatten)]
    state: &'a SimState,
    tokens: &'a auth::Tokens,
}

#[derive(serde::Deserialize)]
struct PersistentIn {
    #[serde(flatten)]
    state: SimState,
    #[serde(default)]
    tokens: auth::Tokens,
}

impl SimConfig {
    /// A config with `state` and defaults for everything else.
    pub fn new(state: SimState) -> Self {
        Self {
            state,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            lro_duration: Duration::from_millis(100),
            time_scale: 0.01,
            retry_after_secs: None,
            token_lifetime: Duration::from_secs(3599),
            throttle: ThrottleConfig::default(),
            page_size: 100,
            storage_limits: StorageLimits::default(),
            ca: None,
            tokens: SavedTokens::default(),
            activity_log_delay: activity_log::DEFAULT_DELAY,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new(World::default_sandbox().state)
    }
}

struct Sim {
    inner: Mutex<Inner>,
    /// Notified whenever the state may have changed (see [`SimHandle::changes`]).
    changed: Arc<Notify>,
    /// Requests held at a call boundary for crash tests ([`gate`]).
    holds: gate::Holds,
}

/// In-process control of a running simulator (cheap to clone).
#[derive(Clone)]
pub struct SimHandle(Arc<Sim>);

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").finish_non_exhaustive()
    }
}

impl SimHandle {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every request and every mutating method goes through here, so this is where a change is announced.
        self.0.changed.notify_one();
        self.lock_quiet()
    }

    /// The lock without a change notification: for readers that must not wake the state writer (its own snapshot).
    fn lock_quiet(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the plain-data state half-written in a way we could repair;
        // keep serving rather than cascading the panic.
        self.0.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notified (coalesced, like [`Notify::notify_one`]) after anything that may change the state: every request
    /// and every state-changing method. Persistence waits on it and compares snapshots to skip unchanged ones.
    pub fn changes(&self) -> Arc<Notify> {
        self.0.changed.clone()
    }

    /// The call log, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.records().to_vec()
    }

    /// The calls logged after the one numbered `seq` (all of them for 0), oldest first.
    pub fn calls_after(&self, seq: u64) -> Vec<CallRecord> {
        let g = self.lock();
        let records = g.calls.records();
        records[records.partition_point(|r| r.seq <= seq)..].to_vec()
    }

    /// Counters per operation name (e.g. `Workspaces_Get`, `StorageAccounts_ListKeys`, `Token`).
    pub fn call_summary(&self) -> BTreeMap<String, OpCount> {
        self.lock().calls.summary()
    }

    /// Number of calls to `operation` (case-insensitive).
    pub fn count(&self, operation: &str) -> usize {
        self.lock().calls.records().iter().filter(|r| r.operation.eq_ignore_ascii_case(operation)).count()
    }

    /// Clears the call log.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Holds the call `rule` names at its boundary until [`SimHandle::release`] (see [`gate`]).
    pub fn hold(&self, rule: HoldRule) -> CallHold {
        self.0.holds.hold(rule)
    }

    /// Releases the call held by hold `id`; false if none is held under that id.
    pub fn release(&self, id: u64, how: Release) -> bool {
        self.0.holds.release(id, how)
    }

    /// Removes hold `id` before it fires; false if it is not waiting.
    pub fn cancel_hold(&self, id: u64) -> bool {
        self.0.holds.cancel(id)
    }

    /// Adds a fault rule; returns its id.
    pub fn inject_fault(&self, rule: FaultRule) -> u64 {
        self.lock().faults.add(rule)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Replaces the throttling configuration (buckets refill to the new capacity).
    pub fn set_throttle(&self, config: ThrottleConfig) {
        self.lock().throttle.reconfigure(config);
    }

    /// Replaces the storage resource provider's limits (counters restart).
    pub fn set_storage_limits(&self, limits: StorageLimits) {
        self.lock().storage_throttle = throttle::StorageThrottle::new(limits);
    }

    /// Changes the LRO duration for operations started from now on.
    pub fn set_lro_duration(&self, d: Duration) {
        self.lock().knobs.lro_duration = d;
    }

    /// Changes the activity log's ingestion delay (events already logged included).
    pub fn set_activity_log_delay(&self, d: Duration) {
        self.lock().knobs.activity_log_delay = d;
    }

    /// Moves the simulator's clock forward (soft-delete retention, activity-log ingestion); returns the total offset.
    pub fn advance_clock(&self, by: Duration) -> Duration {
        let mut g = self.lock();
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        g.state.clock_offset_secs = g.state.clock_offset_secs.saturating_add(secs);
        g.advance();
        Duration::from_secs(u64::try_from(g.state.clock_offset_secs).unwrap_or(0))
    }

    /// The soft-deleted ML workspaces (what the portal's "Recently deleted" shows; Azure has no ARM list for it).
    pub fn soft_deleted_workspaces(&self) -> Vec<Value> {
        let mut g = self.lock();
        g.advance();
        g.state.soft_deleted.values().map(model::SoftDeletedWorkspace::summary).collect()
    }

    /// Regenerates a storage key "out of band" (as a person in the portal would), with an activity-log event.
    pub fn regenerate_storage_key(&self, account_id: &str, key_name: &str) -> Result<(), SimError> {
        let mut g = self.lock();
        if !g.state.resources.contains_key(&model::id_key(account_id)) {
            return Err(SimError::NotFound(account_id.into()));
        }
        if !g.state.regenerate_storage_key(account_id, key_name) {
            return Err(SimError::BadKeyName(key_name.into()));
        }
        g.log_admin_event(account_id, "Microsoft.Storage/storageAccounts/regenerateKey/action");
        Ok(())
    }

    /// Current value of a storage key.
    pub fn storage_key(&self, account_id: &str, key_name: &str) -> Option<Secret> {
        self.lock().state.storage_key(account_id, key_name)
    }

    /// The storage key a workspace has cached (what its listKeys returns as userStorageKey).
    pub fn workspace_cached_key(&self, workspace_id: &str) -> Option<Secret> {
        self.lock().state.workspace_cached_key(workspace_id)
    }

    /// The credentials stored with a workspace connection (write-only in ARM: what `listsecrets` returns), as sent.
    pub fn connection_credentials(&self, connection_id: &str) -> Option<Value> {
        let g = self.lock();
        match &g.state.resources.get(&model::id_key(connection_id))?.ext {
            model::ResourceExt::Connection { credentials: Some(c) } => serde_json::from_str(c.expose()).ok(),
            _ => None,
        }
    }

    /// Every access token the token endpoint issued and still remembers, so tests can assert none leaks.
    pub fn issued_tokens(&self) -> Vec<Secret> {
        self.lock().tokens.values().into_iter().map(Secret::new).collect()
    }

    /// The ARM body of a resource.
    pub fn resource(&self, id: &str) -> Option<Value> {
        self.lock().state.resources.get(&model::id_key(id)).map(|r| r.body.clone())
    }

    /// Applies a JSON merge patch to a resource's body behind the operator's back; returns the new body.
    pub fn edit_resource(&self, id: &str, merge_patch: &Value) -> Result<Value, SimError> {
        let mut g = self.lock();
        let r = g.state.resources.get_mut(&model::id_key(id)).ok_or_else(|| SimError::NotFound(id.into()))?;
        json_patch::merge(&mut r.body, merge_patch);
        // id/name/type are identity, not editable content.
        let (rid, rtype) = (r.id.clone(), r.rtype.clone());
        r.body["id"] = Value::String(rid);
        r.body["type"] = Value::String(rtype);
        Ok(r.body.clone())
    }

    /// Creates or replaces a resource from an ARM body (kind-specific defaults and keys are generated).
    pub fn seed_resource(&self, id: &str, rtype: &str, body: Value) -> Value {
        self.lock().state.put_resource(id, rtype, body).body.clone()
    }

    /// Adds or replaces a principal.
    pub fn seed_principal(&self, p: Principal) {
        self.lock().state.add_principal(p);
    }

    /// Runs `f` on the state (seeding helpers: `add_subscription`, `add_resource_group`, `assign_role`, ...).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        f(&mut self.lock().state)
    }

    /// The activity log (event JSON), oldest first.
    pub fn activity_log(&self) -> Vec<Value> {
        self.lock().state.activity.iter().map(|e| e.body.clone()).collect()
    }

    /// A copy of the whole state (serialisable).
    pub fn snapshot(&self) -> SimState {
        self.lock_quiet().state.clone()
    }

    /// Replaces the whole state. Issued tokens stay valid.
    pub fn restore(&self, state: SimState) {
        self.lock().state = state;
    }

    /// The state and the access tokens issued, as one JSON document (a [`SimState`] with a `tokens` field), for a
    /// sandbox that must restart where it stopped. Holds secrets: keep it private. Serialised outside the lock.
    pub fn persistent_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let (state, tokens) = {
            let g = self.lock_quiet();
            (g.state.clone(), g.tokens.clone())
        };
        serde_json::to_vec(&PersistentOut { state: &state, tokens: &tokens })
    }

    /// Reads a [`SimHandle::persistent_json`] document (or a bare [`SimHandle::snapshot`] as JSON): the state
    /// and the tokens, to start a simulator with ([`SimConfig::state`], [`SimConfig::tokens`]).
    pub fn parse_persistent(bytes: &[u8]) -> Result<(SimState, SavedTokens), serde_json::Error> {
        let saved: PersistentIn = serde_json::from_slice(bytes)?;
        Ok((saved.state, SavedTokens(saved.tokens)))
    }

    /// Loads a state written as JSON from [`SimHandle::snapshot`].
    pub fn load(&self, path: &Path) -> Result<(), SimError> {
        let err = |m: String| SimError::StateFile { path: path.display().to_string(), message: m };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let state: SimState = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        self.restore(state);
        Ok(())
    }
}

/// A simulator serving on a loopback port.
pub struct RunningSim {
    /// `https://127.0.0.1:PORT`: ARM endpoint and authority host.
    pub endpoint: String,
    /// The tenant id of the simulated Entra ID.
    pub tenant_id: String,
    /// PEM of the CA that signed the server certificate (trust it in clients).
    pub ca_pem: String,
    /// In-process control.
    pub handle: SimHandle,
    /// The listening address.
    pub addr: SocketAddr,
    ca: Arc<SandboxCa>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSim").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl RunningSim {
    /// The authority host for Entra ID clients (the same server).
    pub fn authority_host(&self) -> &str {
        &self.endpoint
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.endpoint, self.tenant_id)
    }

    /// Writes the CA PEM to `path` (for clients configured with an extra-CA file).
    pub fn write_ca(&self, path: &Path) -> Result<(), SimError> {
        Ok(self.ca.write_ca(path)?)
    }

    /// Stops accepting and aborts open connections.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Entry point.
#[derive(Debug)]
pub struct ArmSimulator;

impl ArmSimulator {
    /// Generates a CA (unless `config.ca` brings one), binds `config.bind` and starts serving in the background
    /// (call within a Tokio runtime).
    pub async fn start(config: SimConfig) -> Result<RunningSim, SimError> {
        let ca = match config.ca {
            Some(ca) => ca,
            None => Arc::new(SandboxCa::generate()?),
        };
        let tls = ca.server_config(SandboxCa::LOOPBACK_HOSTS)?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| SimError::Bind { addr: config.bind, source })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind { addr: config.bind, source })?;
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
        let endpoint = format!("https://{host}:{}", addr.port());
        let tenant_id = config.state.tenant_id.clone();
        let inner = Inner {
            state: config.state,
            calls: control::CallLog::default(),
            faults: control::Faults::default(),
            throttle: control::Throttle::new(config.throttle),
            storage_throttle: throttle::StorageThrottle::new(config.storage_limits),
            tokens: config.tokens.0,
            knobs: Knobs {
                lro_duration: config.lro_duration,
                retry_after_secs: config.retry_after_secs,
                time_scale: config.time_scale,
                token_lifetime: config.token_lifetime,
                page_size: config.page_size,
                activity_log_delay: config.activity_log_delay,
            },
            endpoint: endpoint.clone(),
        };
        let handle = SimHandle(Arc::new(Sim {
            inner: Mutex::new(inner),
            changed: Arc::new(Notify::new()),
            holds: gate::Holds::default(),
        }));
        let cancel = CancellationToken::new();
        let router = server::router(handle.clone());
        let task = tokio::spawn(server::serve(listener, TlsAcceptor::from(tls), router, cancel.clone()));
        tracing::info!(%endpoint, "ARM simulator listening");
        Ok(RunningSim {
            endpoint,
            tenant_id,
            ca_pem: ca.ca_pem().to_string(),
            handle,
            addr,
            ca,
            cancel,
            task: Some(task),
        })
    }
}
