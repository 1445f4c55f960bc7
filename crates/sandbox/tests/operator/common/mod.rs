//! Helpers of the operator's integration tests (this binary, `tests/operator`) and of the soak benchmark: the
//! emulators themselves, the CRDs, namespaces and the operator's client-secret credential and SubscriptionBinding,
//! the simulated cloud, a controller configuration with short periods, the controller task, the process's log
//! subscriber and capture, and polling and event helpers. [`crate::env::TestEnv`] composes them.

// The soak benchmark uses a subset of these helpers.
#![allow(dead_code)]

pub mod fleet;
pub mod scale;
pub mod soak;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use azml_arm_simulator::{ArmSimulator, RunningSim, SimConfig, World};
use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions};
use azml_operator::api::v1alpha1::{MlWorkspace, MlWorkspaceSpec, SubscriptionBinding};
use azml_operator::azure::{AzureCloud, RetryPolicy};
use azml_operator::controller::ControllerConfig;
use azml_operator::reconciler::Kind;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::PostParams;
use kube::runtime::wait::{await_condition, conditions as kube_conditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Name of the Secret holding the operator's client secret, and of the binding that names it.
pub const OPERATOR_SECRET: &str = "operator-sp";

/// Creates the CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client, crds: Vec<CustomResourceDefinition>) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.name_any();
        api.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("create {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(5),
            await_condition(api.clone(), &name, kube_conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} not established: {e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Creates namespaces.
pub async fn create_namespaces(client: &Client, names: &[&str]) {
    for name in names {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    }
}

/// The operator's client secret in `operator_ns`, and the binding `sandbox` that lets `namespaces` use the world's
/// subscription in resource groups `rg-*`; `limits` adds spec fields (allowedRoles, allowedScopes, ...).
pub async fn seed_operator_binding(
    client: &Client,
    world: &World,
    operator_ns: &str,
    namespaces: &[&str],
    limits: Value,
) {
    create_operator_secret(client, world, operator_ns).await;
    create_operator_binding(client, world, "sandbox", &world.subscription_id, namespaces, limits).await;
}

/// The operator's client secret (the world's operator service principal) in `operator_ns`, as [`OPERATOR_SECRET`].
pub async fn create_operator_secret(client: &Client, world: &World, operator_ns: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": OPERATOR_SECRET},
        "stringData": {"clientSecret": world.operator.secret.expose()},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), operator_ns).create(&PostParams::default(), &secret).await.unwrap();
}

/// A binding `name` that lets `namespaces` use `subscription_id` (in the world's tenant) in resource groups `rg-*`
/// with the operator's client secret of [`seed_operator_binding`]; `limits` adds spec fields.
pub async fn create_operator_binding(
    client: &Client,
    world: &World,
    name: &str,
    subscription_id: &str,
    namespaces: &[&str],
    limits: Value,
) {
    let mut spec = json!({
        "subscriptionId": subscription_id,
        "tenantId": world.tenant_id,
        "credential": {"clientSecret": {
            "clientId": world.operator.client_id,
            "secretRef": {"name": OPERATOR_SECRET, "key": "clientSecret"},
        }},
        "namespaces": namespaces,
        "resourceGroups": ["rg-*"],
    });
    extend_object(&mut spec, limits);
    let binding: SubscriptionBinding = serde_json::from_value(json!({
        "apiVersion": "azml.dev/v1alpha1",
        "kind": "SubscriptionBinding",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    Api::<SubscriptionBinding>::all(client.clone()).create(&PostParams::default(), &binding).await.unwrap();
}

/// The simulated cloud: ARM and the authority on the simulator, its CA trusted.
pub fn sim_cloud(sim: &RunningSim) -> AzureCloud {
    AzureCloud::custom(&sim.endpoint, &sim.endpoint)
        .and_then(|c| c.with_extra_root_ca_pem(sim.ca_pem.clone()))
        .unwrap_or_else(|e| panic!("cloud: {e}"))
}

/// A workspace spec in the default world's subscription, resource group and location, with the world's storage account
/// and key vault by id; `extra` adds (or replaces) top-level spec fields.
pub fn workspace_spec(world: &World, extra: Value) -> MlWorkspaceSpec {
    let mut spec = json!({
        "subscriptionId": world.subscription_id,
        "resourceGroup": world.resource_group,
        "location": world.location,
        "storageAccount": {"id": world.storage_account_id},
        "keyVault": {"id": world.key_vault_id},
    });
    extend_object(&mut spec, extra);
    serde_json::from_value(spec).unwrap_or_else(|e| panic!("workspace spec: {e}"))
}

/// Adds (or replaces) the top-level fields of the object `extra` in the object `value`.
fn extend_object(value: &mut Value, extra: Value) {
    if let (Some(value), Value::Object(extra)) = (value.as_object_mut(), extra) {
        value.extend(extra);
    }
}

/// The ARM simulator and the Kubernetes API emulator, both on port 0, and a client of the emulator.
pub struct Emulators {
    pub kube: RunningServer,
    pub client: Client,
    pub sim: RunningSim,
}

impl Emulators {
    /// Installs the ring TLS provider, starts the simulator on `world`'s state with `lro_duration` per long-running
    /// operation, then the emulator. Nothing is installed in the emulator yet.
    pub async fn start(world: &World, lro_duration: Duration) -> Emulators {
        azml_operator::tls_provider::install();
        let sim = ArmSimulator::start(SimConfig { lro_duration, ..SimConfig::new(world.state.clone()) })
            .await
            .unwrap_or_else(|e| panic!("simulator: {e}"));
        let kube = KubeApiServer::start(ServerOptions::default()).await.unwrap_or_else(|e| panic!("emulator: {e}"));
        let client = kube.client().unwrap_or_else(|e| panic!("client: {e}"));
        Emulators { kube, client, sim }
    }
}

/// A controller configuration for tests against `sim`: the operator's namespace, and LRO polls, error back-off and ARM
/// retries in milliseconds so no test waits on production periods. Resync, stalled requeue and the other periods a
/// test relies on keep their production defaults: the test sets them.
pub fn fast_config(sim: &RunningSim, operator_ns: &str) -> ControllerConfig {
    let mut config = ControllerConfig::new(sim_cloud(sim));
    config.operator_namespace = operator_ns.into();
    config.lro_poll_min = Duration::from_millis(50);
    config.lro_poll_max = Duration::from_millis(300);
    config.error_backoff_base = Duration::from_millis(100);
    config.error_backoff_max = Duration::from_millis(500);
    config.arm.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(2),
    };
    config
}

/// `run::controllers` on a task of the test's runtime, ended through its cancellation token.
pub struct RunningController {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningController {
    /// Spawns the controller.
    pub fn start(client: Client, config: ControllerConfig) -> RunningController {
        let token = CancellationToken::new();
        let task = tokio::spawn(azml_operator::run::controllers(client, config, token.clone()));
        RunningController { token, task }
    }

    /// Cancels the controller and waits up to `within` for it to end; panics if it does not, or if it panicked.
    pub async fn stop(self, within: Duration) {
        self.token.cancel();
        tokio::time::timeout(within, self.task)
            .await
            .unwrap_or_else(|_| panic!("controller did not stop"))
            .unwrap_or_else(|e| panic!("controller task: {e}"));
    }

    /// Kills the controller as a crash would: its task is aborted at its current await point (no reconcile
    /// finishes, nothing more reaches either API), then the token ends the tasks it spawned (the key watcher).
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
        self.token.cancel();
    }

    /// Cancels the controller and waits up to `within` for it to end, without asserting that it did.
    pub async fn cancel(self, within: Duration) {
        self.token.cancel();
        let _ = tokio::time::timeout(within, self.task).await;
    }
}

/// What a capture records: everything our crate logs, at every level, plus the HTTP and identity libraries it drives
/// (a scan for secrets must see what they log too).
const CAPTURE_FILTER: &str = "trace,hyper=debug,h2=info,rustls=debug,tokio_util=info,tower=debug,mio=info";

/// Installs the process's one log subscriber (later calls do nothing): the test harness's output, filtered by
/// `RUST_LOG` (default `warn`), and [`LogCapture`], which records only while a [`CaptureGuard`] lives.
pub fn init_test_tracing() {
    use tracing_subscriber::filter::{DynFilterFn, EnvFilter, FilterExt as _};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, fmt};

    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let harness = EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let capturing = DynFilterFn::new(|_, _| CAPTURING.load(Ordering::Relaxed) > 0);
        let writer = LogCapture::get().clone();
        let _ = tracing_subscriber::registry()
            .with(fmt::layer().with_test_writer().with_filter(harness))
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .with_filter(EnvFilter::new(CAPTURE_FILTER).and(capturing)),
            )
            .try_init();
    });
}

/// How many [`CaptureGuard`]s live.
static CAPTURING: AtomicUsize = AtomicUsize::new(0);

/// Everything the process logged while at least one [`CaptureGuard`] lived, for tests that scan the logs (for a
/// secret value, for a message). Tests running in parallel add to the same buffer; that only widens a scan. The
/// buffer is emptied when the last guard goes, so it holds no more than the capturing tests' lifetimes.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

/// Keeps [`LogCapture`] recording; see [`LogCapture::start`].
pub struct CaptureGuard(());

impl LogCapture {
    /// The process's capture.
    pub fn get() -> &'static LogCapture {
        static LOGS: OnceLock<LogCapture> = OnceLock::new();
        LOGS.get_or_init(LogCapture::default)
    }

    /// Records from now until the guard is dropped (and while other guards live).
    pub fn start() -> CaptureGuard {
        init_test_tracing();
        let _buffer = LogCapture::get().lock();
        CAPTURING.fetch_add(1, Ordering::Relaxed);
        CaptureGuard(())
    }

    /// Everything recorded so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A test that panicked while logging must not hide the logs from the others.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        // Under the buffer's lock, so a guard started meanwhile never loses what it recorded.
        let mut buffer = LogCapture::get().lock();
        if CAPTURING.fetch_sub(1, Ordering::Relaxed) == 1 {
            buffer.clear();
            buffer.shrink_to_fit();
        }
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `check` every `every` until it returns `Ok`, and returns that value. Once `within` has passed, panics with
/// the message `timed_out` makes of the last `Err` (what was seen instead), so nothing is formatted while polling.
pub async fn wait_until<T, E>(
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
    timed_out: impl FnOnce(E) -> String,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= deadline => panic!("{}", timed_out(seen)),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Waits until `name` is gone from `api` (its cleanup done and its finalizer removed), polling every `every`;
/// after `within`, panics with the status it still has.
pub async fn wait_gone<K: Kind>(api: &Api<K>, name: &str, within: Duration, every: Duration) {
    let check = async || match api.get_opt(name).await.unwrap_or_else(|e| panic!("read {name}: {e}")) {
        None => Ok(()),
        Some(obj) => Err(obj),
    };
    wait_until(within, every, check, |obj| format!("{name} was not deleted; status: {:#?}", obj.status())).await
}

/// Waits until `name` in `api` satisfies `done` (what `what` names), polling every `every`; panics when it
/// disappears, or after `within` with its status and a summary of the calls ARM has seen.
pub async fn wait_for<K: Kind>(
    api: &Api<K>,
    name: &str,
    what: &str,
    (within, every): (Duration, Duration),
    sim: &RunningSim,
    done: impl Fn(&K) -> bool,
) -> K {
    let check = async || match api.get_opt(name).await.unwrap_or_else(|e| panic!("read {name}: {e}")) {
        Some(obj) if done(&obj) => Ok(obj),
        Some(obj) => Err(obj),
        None => panic!("{name}: gone while waiting for {what}"),
    };
    wait_until(within, every, check, |obj| {
        format!(
            "{name}: timed out waiting for {what}; status: {:#?}; calls: {:?}",
            obj.status(),
            sim.handle.call_summary()
        )
    })
    .await
}

/// The events.k8s.io Events in `ns`.
pub async fn events(client: &Client, ns: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default()).await.unwrap_or_else(|e| panic!("list events in {ns}: {e}")).items
}

/// The notes of the Events in `ns` with `reason`.
pub async fn event_notes(client: &Client, ns: &str, reason: &str) -> Vec<String> {
    let events = events(client, ns).await.into_iter();
    events.filter(|e| e.reason.as_deref() == Some(reason)).map(|e| e.note.unwrap_or_default()).collect()
}

/// The workspace's condition of `type_`.
pub fn condition<'a>(ws: &'a MlWorkspace, type_: &str) -> Option<&'a Condition> {
    ws.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// The workspace's status describes its current generation.
pub fn is_current(ws: &MlWorkspace) -> bool {
    ws.status.as_ref().and_then(|s| s.observed_generation) == ws.metadata.generation
}
