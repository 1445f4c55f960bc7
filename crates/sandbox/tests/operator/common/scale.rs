//! The scale benchmark of issue 20 (`benches/scale.rs` prints its table; `tests/scale.rs` runs it at a tiny size).
//! See `benches/scale.rs` for what it measures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azml_arm_simulator::{
    ArmSimulator, CallKind, CallRecord, RunningSim, Secret as SimSecret, SimConfig, StorageLimits, ThrottleConfig,
    WindowLimit, World, roles,
};
use azml_kube_emulator::RunningServer;
use azml_operator::api::v1alpha1::MlWorkspace;
use azml_operator::azure::authorization::RoleAssignmentCreate;
use azml_operator::azure::{
    ArmClient, ArmClientOptions, AzureCloud, CredentialConfig, LroOptions, RoleAssignmentRef, RoleDefinitionId, Secret,
    build_credential,
};
use azml_operator::controller::plan::Desired;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::fleet::{self, Account, NS, OPERATOR_NS, RG, percentile};

const BASELINE_RG: &str = "rg-aso";
const DESCRIPTION: &str = "scale benchmark";
const DRIFTED: &str = "changed in the portal";
/// Workspaces whose `description` is changed in the portal during each steady hour.
pub const DRIFTS: usize = 20;
const HOUR: Duration = Duration::from_secs(3600);

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Workspaces of the latency, call-count and baseline phases (at least 100: one per storage account).
    pub workspaces: usize,
    /// Workspaces in total for the memory phase.
    pub memory_workspaces: usize,
    /// Time is divided by this.
    pub scale: u32,
    /// Time is divided by this while storage keys are regenerated (the operator restarts with it, the simulator's
    /// durations and limits follow). Lower than `scale`: there every real millisecond of the emulators' work (2/3 of
    /// the machine) counts `scale` milliseconds against the latency measured.
    pub regeneration_scale: u32,
    /// Run the blind-PUT baseline too.
    pub baseline: bool,
    /// The operator binary (`run` subcommand).
    pub operator: PathBuf,
    /// `--concurrency` of the operator (`None`: its default).
    pub concurrency: Option<u16>,
    /// Run the steady hour (`--no-steady-hour` skips it, to look at the other phases sooner).
    pub steady_hour: bool,
}

impl Options {
    /// A duration of Azure or the operator, as run here.
    fn scaled(&self, d: Duration) -> Duration {
        d / self.scale
    }

    /// A measured real duration, as it would be unscaled.
    fn unscaled(&self, d: Duration) -> Duration {
        d * self.scale
    }
}

/// The emulators and what the benchmark put in them.
struct Env {
    options: Options,
    world: World,
    sim: RunningSim,
    kube: RunningServer,
    client: Client,
    dir: tempfile::TempDir,
    accounts: Vec<Account>,
}

/// ARM calls in a window.
#[derive(Debug, Default)]
struct Calls {
    reads: usize,
    writes: usize,
    throttled: usize,
    per_op: BTreeMap<String, (usize, usize)>,
    writes_per_sub: BTreeMap<String, usize>,
}

impl Calls {
    fn of(records: &[CallRecord]) -> Self {
        let mut c = Calls::default();
        for r in records.iter().filter(|r| r.kind != CallKind::Auth) {
            let e = c.per_op.entry(r.operation.clone()).or_default();
            if r.status == 429 {
                c.throttled += 1;
            }
            match r.kind {
                CallKind::Read => {
                    c.reads += 1;
                    e.0 += 1;
                }
                _ => {
                    c.writes += 1;
                    e.1 += 1;
                    if let Some(sub) = r.path.strip_prefix("/subscriptions/").and_then(|p| p.split('/').next()) {
                        *c.writes_per_sub.entry(sub.to_ascii_lowercase()).or_default() += 1;
                    }
                }
            }
        }
        c
    }

    fn reads_of(&self, op: &str) -> usize {
        self.per_op.get(op).map_or(0, |v| v.0)
    }

    fn writes_of(&self, op: &str) -> usize {
        self.per_op.get(op).map_or(0, |v| v.1)
    }
}

fn last_seq(sim: &RunningSim) -> u64 {
    sim.handle.calls().last().map_or(0, |c| c.seq)
}

fn calls_since(sim: &RunningSim, seq: u64) -> Calls {
    Calls::of(&sim.handle.calls_after(seq))
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn workspace_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{name}")
}

/// The workspaces of the benchmark: name, account, subscription (10 per account, then round-robin).
fn placement(env: &Env, count: usize) -> Vec<(String, Account)> {
    (0..count)
        .map(|i| {
            let account = env.accounts[i % env.accounts.len()].clone();
            (format!("ws-{i:05}"), account)
        })
        .collect()
}

fn workspace(env: &Env, name: &str, account: &Account, rg: &str) -> MlWorkspace {
    let spec = serde_json::from_value(json!({
        "subscriptionId": account.sub, "resourceGroup": rg, "location": env.world.location,
        "storageAccount": {"id": account.id}, "keyVault": {"id": account.key_vault},
        "description": DESCRIPTION,
        "access": [{"principalId": env.world.users[0], "principalType": "User", "role": "Reader", "scope": "Workspace"}],
    }))
    .expect("spec");
    let mut ws = MlWorkspace::new(name, spec);
    ws.metadata.namespace = Some(NS.into());
    ws
}

impl Env {
    async fn start(options: Options) -> Env {
        let mut world = World::default_sandbox();
        let accounts = fleet::seed(&mut world, roles::OWNER, &[BASELINE_RG]);
        let scale = f64::from(options.scale);
        let (throttle, storage_limits) = scaled_limits(options.scale);
        let base = SimConfig::new(world.state.clone());
        let sim = ArmSimulator::start(SimConfig {
            lro_duration: Duration::from_secs(20) / options.scale,
            activity_log_delay: base.activity_log_delay / options.scale,
            time_scale: 1.0 / scale,
            // Azure asks ML clients to poll every 10 s; whole seconds cannot express that scaled, so the simulator
            // sends no wait and the operator polls at --lro-poll-min (10 s scaled).
            retry_after_secs: Some(0),
            throttle,
            storage_limits,
            ..base
        })
        .await
        .expect("simulator");
        let limits = json!({"allowedRoles": ["Reader"], "allowedScopes": ["Workspace"]});
        let (kube, client) = fleet::start_kube(&world, limits).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kubeconfig"), kube.kubeconfig_yaml()).expect("kubeconfig");
        std::fs::write(dir.path().join("ca.pem"), &sim.ca_pem).expect("ca");
        Env { options, world, sim, kube, client, dir, accounts }
    }

    /// Runs Azure's clock `scale` times faster from now on: durations, throttling refills and windows.
    fn rescale(&self, scale: u32) {
        let (throttle, storage_limits) = scaled_limits(scale);
        self.sim.handle.set_throttle(throttle);
        self.sim.handle.set_storage_limits(storage_limits);
        self.sim.handle.set_lro_duration(Duration::from_secs(20) / scale);
        self.sim.handle.set_activity_log_delay(SimConfig::new(self.world.state.clone()).activity_log_delay / scale);
    }

    fn cloud(&self) -> AzureCloud {
        AzureCloud::custom(&self.sim.endpoint, &self.sim.endpoint)
            .and_then(|c| c.with_extra_root_ca_pem(self.sim.ca_pem.clone()))
            .expect("cloud")
    }

    fn workspaces(&self) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Creates the workspaces `names` (16 requests in flight).
    async fn create(&self, names: &[(String, Account)]) {
        use futures::StreamExt;
        let api = self.workspaces();
        futures::stream::iter(names.iter().map(|(name, account)| {
            let (api, ws) = (api.clone(), workspace(self, name, account, RG));
            async move { api.create(&PostParams::default(), &ws).await.expect("create") }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    }

    /// Waits until `count` workspaces are Ready with their keys checked; returns how long it took from `since`.
    /// Follows a watch (each status change is read once) instead of listing every workspace again and again: at
    /// 10,000 workspaces a LIST is tens of megabytes, and repeated ones would take the CPU the operator and the
    /// emulators need.
    async fn wait_ready(&self, count: usize, since: Instant, limit: Duration) -> Result<Duration, usize> {
        use futures::TryStreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let mut ready = std::collections::HashSet::new();
        // One page: the emulator serves each page of a paginated LIST at its current resourceVersion (Kubernetes
        // serves them all from the first page's snapshot), so a change made between two pages would be lost.
        let config = watcher::Config::default().page_size(u32::try_from(count).unwrap_or(u32::MAX).max(500) * 2);
        let mut events = std::pin::pin!(watcher(self.workspaces(), config).applied_objects());
        let deadline = tokio::time::Instant::from_std(since + limit);
        let mut reported = Instant::now();
        while ready.len() < count {
            match tokio::time::timeout_at(deadline, events.try_next()).await {
                Ok(Ok(Some(ws))) => {
                    if is_ready(&ws) {
                        ready.insert(ws.name_any());
                    } else {
                        ready.remove(&ws.name_any());
                    }
                }
                Ok(Ok(None)) => panic!("the workspace watch ended"),
                // The watcher retries by itself on the next poll.
                Ok(Err(err)) => eprintln!("workspace watch: {err}"),
                Err(_) => {
                    let list = self.workspaces().list(&ListParams::default()).await.expect("list").items;
                    for w in list.iter().filter(|w| !is_ready(w)).take(3) {
                        eprintln!("not ready: {} {:?}", w.name_any(), w.status.as_ref().map(|s| &s.conditions));
                    }
                    eprintln!("only {} of {count} workspaces Ready after {limit:?}", ready.len());
                    return Err(ready.len());
                }
            }
            if reported.elapsed() > Duration::from_secs(30) {
                eprintln!("  {} of {count} Ready after {:.0} s", ready.len(), since.elapsed().as_secs_f64());
                reported = Instant::now();
            }
        }
        Ok(since.elapsed())
    }

    /// Changes `description` of `ids` behind the operator's back at spread-out moments over `over`, and returns how
    /// long each took to be put back (unscaled), `None` for those still drifted after `limit`.
    async fn drift(&self, ids: &[String], over: Duration, limit: Duration) -> Vec<Option<Duration>> {
        let mut started = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            tokio::time::sleep(over / u32::try_from(ids.len()).unwrap_or(1) / 2 * u32::from(i > 0)).await;
            self.sim
                .handle
                .edit_resource(id, &json!({"properties": {"description": DRIFTED}}))
                .expect("edit the workspace");
            started.push(Instant::now());
        }
        let mut out: Vec<Option<Duration>> = vec![None; ids.len()];
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && out.iter().any(Option::is_none) {
            for (i, id) in ids.iter().enumerate() {
                if out[i].is_none() && description(&self.sim, id).as_deref() == Some(DESCRIPTION) {
                    out[i] = Some(self.options.unscaled(started[i].elapsed()));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out
    }
}

/// ARM's buckets and the storage provider's windows with time divided by `scale`.
fn scaled_limits(scale: u32) -> (ThrottleConfig, StorageLimits) {
    let defaults = ThrottleConfig::default();
    let throttle = ThrottleConfig {
        read_refill_per_sec: defaults.read_refill_per_sec * f64::from(scale),
        write_refill_per_sec: defaults.write_refill_per_sec * f64::from(scale),
        ..defaults
    };
    let scale_limits = |limits: Vec<WindowLimit>| -> Vec<WindowLimit> {
        let s = u64::from(scale);
        limits
            .into_iter()
            .map(|w| {
                if w.window_secs >= s && w.window_secs % s == 0 {
                    WindowLimit { max: w.max, window_secs: w.window_secs / s }
                } else {
                    let max = (w.max as u64 * s).div_ceil(w.window_secs.max(1));
                    WindowLimit { max: usize::try_from(max).unwrap_or(usize::MAX), window_secs: 1 }
                }
            })
            .collect()
    };
    let limits = StorageLimits::default();
    let storage = StorageLimits {
        read: scale_limits(limits.read),
        write: scale_limits(limits.write),
        list: scale_limits(limits.list),
    };
    (throttle, storage)
}

fn description(sim: &RunningSim, id: &str) -> Option<String> {
    sim.handle.resource(id)?.pointer("/properties/description")?.as_str().map(str::to_owned)
}

fn is_ready(ws: &MlWorkspace) -> bool {
    ws.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
            && s.storage_keys.as_ref().is_some_and(|k| k.workspace_uses_key.is_some())
    })
}

/// The operator binary running as its own process.
struct Operator {
    child: tokio::process::Child,
    pid: u32,
}

impl Operator {
    async fn start(env: &Env, log: &str) -> Operator {
        Self::start_scaled(env, log, env.options.scale).await
    }

    /// The operator with its intervals divided by `scale`.
    async fn start_scaled(env: &Env, log: &str, scale: u32) -> Operator {
        let o = &env.options;
        let health = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr");
        let d = |d: Duration| format!("{}ms", (d / scale).as_millis().max(1));
        // SCALE_BENCH_LOG_DIR keeps the operator's log (warnings and errors) for a look afterwards.
        let log_dir = std::env::var_os("SCALE_BENCH_LOG_DIR").map_or_else(|| env.dir.path().to_owned(), PathBuf::from);
        let log = std::fs::File::create(log_dir.join(log)).expect("log file");
        let mut child = tokio::process::Command::new(&o.operator)
            .arg("run")
            .args(["--arm-endpoint", &env.sim.endpoint, "--authority-host", &env.sim.endpoint])
            .arg("--extra-ca-file")
            .arg(env.dir.path().join("ca.pem"))
            .args(["--operator-namespace", OPERATOR_NS, "--watch-namespace", NS])
            .args(["--health-addr", &health.to_string()])
            .args(["--resync-period", &d(HOUR), "--key-signal-interval", &d(Duration::from_secs(60))])
            .args(["--lro-poll-min", &d(Duration::from_secs(10)), "--lro-poll-max", &d(Duration::from_secs(60))])
            .args(["--log-filter", "warn"])
            .args(o.concurrency.iter().flat_map(|c| ["--concurrency".to_owned(), c.to_string()]))
            .env("KUBECONFIG", env.dir.path().join("kubeconfig"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", o.operator.display()));
        let pid = child.id().expect("pid");
        let url = format!("http://{health}/readyz");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the operator exited: {status}");
            }
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the operator is not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Operator { child, pid }
    }

    fn rss(&self) -> u64 {
        rss_kib(self.pid).unwrap_or_default()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// What Azure Service Operator does per resource and resync period: one GET and one unconditional PUT.
async fn blind_put_hour(env: &Env, names: &[(String, Account)]) -> (Calls, Calls, Duration, Vec<Option<Duration>>) {
    let o = &env.options;
    let credential = build_credential(
        &CredentialConfig::ClientSecret {
            tenant_id: env.world.tenant_id.clone(),
            client_id: env.world.operator.client_id.clone(),
            client_secret: Secret::new(env.world.operator.secret.expose().to_owned()),
        },
        &env.cloud(),
    )
    .expect("credential");
    let arm = ArmClient::new(credential, ArmClientOptions { cloud: env.cloud(), ..Default::default() }).expect("arm");
    let lro = LroOptions {
        timeout: o.scaled(Duration::from_secs(7200)),
        default_poll_interval: o.scaled(Duration::from_secs(10)),
        max_poll_interval: o.scaled(Duration::from_secs(60)),
        cancel: CancellationToken::new(),
    };
    let resources: Vec<(Desired, RoleAssignmentRef, RoleAssignmentCreate)> = names
        .iter()
        .map(|(name, account)| {
            let mut ws = workspace(env, name, account, BASELINE_RG);
            // What Azure Service Operator tags with is its own business; the body is the same.
            ws.metadata.uid = Some(format!("blind-put-{name}"));
            let desired = Desired::from_resource(&ws).expect("desired");
            let scope = desired.workspace.resource_id();
            let principal = Uuid::parse_str(&env.world.users[0]).expect("user");
            let role = Uuid::parse_str("acdd72a7-3385-48ef-bd42-f606fba81ae7").expect("Reader");
            let name = azml_operator::access::assignment_name(&scope, role, principal);
            let sub = desired.workspace.subscription();
            let body = RoleAssignmentCreate {
                role_definition_id: RoleDefinitionId::new(Some(sub), role),
                principal_id: principal,
                principal_type: None,
                description: None,
            };
            (desired, RoleAssignmentRef::new(scope, name), body)
        })
        .collect();
    let count = resources.len();
    let targets: Vec<String> = (0..DRIFTS)
        .map(|i| resources[(i * count / DRIFTS + count / 2) % count].0.workspace.resource_id().to_string())
        .collect();
    let resources = Arc::new(resources);
    // One reconcile: GET, then PUT whatever the GET said (the PUT of a workspace is a long-running operation).
    let reconcile = move |i: usize| {
        let (arm, lro, resources) = (arm.clone(), lro.clone(), resources.clone());
        async move {
            let (desired, ra, body) = &resources[i];
            let _ = arm.get_workspace(&desired.workspace).await;
            let _ = arm.create_or_update_workspace(&desired.workspace, &desired.workspace_body(), &lro).await;
            let _ = arm.get_role_assignment(ra).await;
            let _ = arm.create_role_assignment(ra, body).await;
        }
    };
    // Creation: every resource's first reconcile.
    let seq = last_seq(&env.sim);
    let started = Instant::now();
    {
        use futures::StreamExt;
        futures::stream::iter((0..count).map(reconcile.clone())).buffer_unordered(64).collect::<Vec<_>>().await;
    }
    let created_in = o.unscaled(started.elapsed());
    let creation = calls_since(&env.sim, seq);
    // The steady hour: each resource at its own moment of the period, as requeues spread them, period after period
    // until the drift measurement is over; the calls of the first period are counted.
    let hour = o.scaled(HOUR);
    let seq = last_seq(&env.sim);
    let stop = CancellationToken::new();
    let driver = {
        let (stop, n) = (stop.clone(), count);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let (stop, reconcile) = (stop.clone(), reconcile.clone());
                    tokio::spawn(async move {
                        let mut at = start + hour.mul_f64(i as f64 / n as f64);
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep_until(at) => reconcile(i).await,
                            }
                            at += hour;
                        }
                    })
                })
                .collect();
            futures::future::join_all(tasks).await;
        })
    };
    let hour_started = Instant::now();
    let hour_ends = jiff::Timestamp::now() + hour;
    // Drift made during the hour, on workspaces whose turn comes at all phases of the period.
    let drift = env.drift(&targets, hour / 2, (hour * 3 / 2).max(Duration::from_secs(120))).await;
    if let Some(rest) = hour.checked_sub(hour_started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let steady =
        Calls::of(&env.sim.handle.calls_after(seq).into_iter().filter(|c| c.time <= hour_ends).collect::<Vec<_>>());
    stop.cancel();
    let _ = driver.await;
    (creation, steady, created_in, drift)
}

fn drift_summary(drift: &[Option<Duration>]) -> String {
    let mut done: Vec<Duration> = drift.iter().flatten().copied().collect();
    done.sort();
    let missed = drift.len() - done.len();
    format!(
        "p50 {} / max {}{}",
        mins(percentile(&done, 0.5)),
        mins(done.last().copied().unwrap_or_default()),
        if missed > 0 { format!(" ({missed} of {} not corrected)", drift.len()) } else { String::new() }
    )
}

fn mins(d: Duration) -> String {
    format!("{:.1} min", d.as_secs_f64() / 60.0)
}

/// Regenerates key1 of `accounts` at once and waits until each affected workspace holds the new key.
async fn regenerate(
    env: &Env,
    accounts: &[Account],
    names: &[(String, Account)],
    scale: u32,
) -> (Vec<Duration>, Calls) {
    let limit = (Duration::from_secs(900) / scale).max(Duration::from_secs(120));
    let seq = last_seq(&env.sim);
    for a in accounts {
        env.sim.handle.regenerate_storage_key(&a.id, "key1").expect("regenerate");
    }
    let at = Instant::now();
    let mut waiting: Vec<(String, String)> = names
        .iter()
        .filter(|(_, a)| accounts.iter().any(|x| x.id == a.id))
        .map(|(n, a)| (workspace_id(&a.sub, RG, n), a.id.clone()))
        .collect();
    let keys: BTreeMap<String, SimSecret> =
        accounts.iter().map(|a| (a.id.clone(), env.sim.handle.storage_key(&a.id, "key1").expect("key"))).collect();
    let mut latencies = Vec::new();
    while !waiting.is_empty() && at.elapsed() < limit {
        waiting.retain(|(id, account)| {
            let done = env.sim.handle.workspace_cached_key(id).as_ref() == keys.get(account);
            if done {
                latencies.push(at.elapsed() * scale);
            }
            !done
        });
        // Each look locks the simulator's state once per workspace: often enough for the figures (25 ms real is
        // under a second scaled), rarely enough not to slow the simulator down.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !waiting.is_empty() {
        eprintln!("{} workspaces did not resync within {limit:?}", waiting.len());
    }
    // Let the verifications finish before counting (the last resync is polled within 10 s of its end).
    tokio::time::sleep(Duration::from_secs(40) / scale).await;
    if std::env::var_os("SCALE_BENCH_DETAILS").is_some() {
        // When the calls were made, in scaled 10 s buckets after the regeneration: where the time goes.
        let regenerated = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(at.elapsed()).unwrap_or_default())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let mut timeline: BTreeMap<(String, i64), usize> = BTreeMap::new();
        for r in env.sim.handle.calls_after(seq).iter().filter(|r| r.kind != CallKind::Auth) {
            let scaled = r.time.duration_since(regenerated).as_secs_f64() * f64::from(scale);
            *timeline.entry((r.operation.clone(), (scaled / 10.0).floor() as i64 * 10)).or_default() += 1;
        }
        let mut op = String::new();
        for ((name, bucket), n) in &timeline {
            if *name != op {
                eprint!("\n  {name:<32}");
                op.clone_from(name);
            }
            eprint!(" {bucket}s:{n}");
        }
        eprintln!();
    }
    latencies.sort();
    (latencies, calls_since(&env.sim, seq))
}

/// The operator binary to run: `AZML_OPERATOR_BIN` (when set and not empty), else `azml-operator` built beside this program (`cargo build
/// --release -p azml-operator` for the benchmark), else `sandbox_bin` (`azml-sandbox`, which has the same `run`).
pub fn operator_binary(sandbox_bin: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os("AZML_OPERATOR_BIN").filter(|bin| !bin.is_empty()) {
        return PathBuf::from(bin);
    }
    // The bench runs from target/<profile>/deps: the production image's build (profile `image`) first, then the
    // release build beside it.
    let profile_dir =
        std::env::current_exe().ok().and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf));
    let candidates = profile_dir.iter().flat_map(|dir| {
        [dir.parent().map(|target| target.join("image").join("azml-operator")), Some(dir.join("azml-operator"))]
    });
    candidates.flatten().find(|p| p.exists()).unwrap_or_else(|| PathBuf::from(sandbox_bin))
}

/// Rows of the table: what, blind PUT, azml-operator.
type Row = (String, String, String);

fn row(what: impl Into<String>, baseline: impl Into<String>, ours: impl Into<String>) -> Row {
    (what.into(), baseline.into(), ours.into())
}

/// What the benchmark measured: the table, and the figures tests assert on.
#[derive(Debug)]
pub struct Report {
    /// The table (header line, then Markdown rows).
    pub table: String,
    /// Operator RSS in KiB: idle, with `workspaces`, with `memory_workspaces`, restarted after the wave.
    pub rss_kib: [u64; 4],
    /// Steady hour of the operator: ARM reads, writes, workspace GETs.
    pub steady: (usize, usize, usize),
    /// Steady hour of the blind-PUT baseline: ARM reads, writes (zero without the baseline).
    pub baseline_steady: (usize, usize),
    /// Drift corrections seen (operator, baseline) of [`DRIFTS`] each.
    pub drift_corrected: (usize, usize),
    /// Workspaces resynced after the regenerations (one account, all accounts) and how many were affected.
    pub resynced: [(usize, usize); 2],
    /// p99 of regeneration -> resynced (one account, all accounts), unscaled.
    pub p99: [Duration; 2],
}

impl Report {
    /// The targets, met or not: RSS at the full size, steady writes, p99 of both regenerations.
    pub fn targets(&self) -> Vec<(String, bool)> {
        let rss = self.rss_kib[2].max(self.rss_kib[3]);
        vec![
            (format!("RSS <= 64 MiB at the full size ({})", mib(rss)), rss <= 64 * 1024),
            (format!("steady writes besides drift corrections = 0 ({})", self.steady.1), self.steady.1 == 0),
            (
                format!("p99 regeneration -> resynced <= 90 s ({} / {})", secs(self.p99[0]), secs(self.p99[1])),
                self.p99.iter().all(|p| *p <= Duration::from_secs(90))
                    && self.resynced.iter().all(|(done, affected)| done == affected),
            ),
        ]
    }
}

/// Runs every phase and returns the table.
pub async fn run(o: Options) -> Report {
    azml_operator::tls_provider::install();
    let bench_started = Instant::now();
    let env = Env::start(o.clone()).await;
    let n = o.workspaces;
    let names = placement(&env, n);
    let mut rows: Vec<Row> = Vec::new();
    let none = "-";

    // 1. The blind-PUT baseline on its own resource group (same subscriptions, buckets and sizes).
    let phase = |what: &str| eprintln!("[{:>4.0} s] {what}", bench_started.elapsed().as_secs_f64());
    if o.baseline {
        phase("blind-PUT baseline: creation and one scaled hour");
    }
    let baseline = if o.baseline { Some(blind_put_hour(&env, &names).await) } else { None };

    // 2. The operator.
    phase(&format!("operator: creating {n} workspaces"));
    let operator = Operator::start(&env, "operator.log").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = operator.rss();
    let seq = last_seq(&env.sim);
    let started = Instant::now();
    env.create(&names).await;
    let created_in = env.wait_ready(n, started, Duration::from_secs(300)).await.expect("every workspace Ready");
    let creation = calls_since(&env.sim, seq);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_small = operator.rss();

    // A steady hour with drift made in the portal.
    phase("operator: one steady scaled hour with drift");
    let hour = o.scaled(HOUR);
    let seq = last_seq(&env.sim);
    let hour_started = Instant::now();
    let spread: Vec<String> = (0..DRIFTS)
        .map(|i| {
            let (name, a) = &names[(i * n / DRIFTS + n / 2) % n];
            workspace_id(&a.sub, RG, name)
        })
        .collect();
    let drift = if o.steady_hour {
        let drift = env.drift(&spread, hour / 2, (hour * 3 / 2).max(Duration::from_secs(120))).await;
        if let Some(rest) = hour.checked_sub(hour_started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        drift
    } else {
        vec![None; DRIFTS]
    };
    let steady = calls_since(&env.sim, seq);

    // Key regenerations: one account, then all of them at once, with time scaled by `regeneration_scale`: the
    // operator restarts with its intervals scaled so, reads every workspace again, then the keys change.
    let rs = o.regeneration_scale;
    phase(&format!("operator restarted with time scaled 1/{rs}: key regeneration of one account, then of all"));
    operator.stop().await;
    env.rescale(rs);
    let seq = last_seq(&env.sim);
    let operator = Operator::start_scaled(&env, "operator-regeneration.log", rs).await;
    let settle = Instant::now();
    while calls_since(&env.sim, seq).reads_of("Workspaces_Get") < n && settle.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The last of them finish their reconcile (each registers with the key watcher there).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (one, one_calls) = regenerate(&env, &env.accounts[..1], &names, rs).await;
    let (all, all_calls) = regenerate(&env, &env.accounts, &names, rs).await;
    operator.stop().await;
    env.rescale(o.scale);
    let operator = Operator::start(&env, "operator-memory.log").await;

    // 3. Memory at the full size.
    phase(&format!("operator: creating {} more workspaces", o.memory_workspaces - n));
    let more = placement(&env, o.memory_workspaces);
    let started = Instant::now();
    env.create(&more[n..]).await;
    // On a loaded machine not all may be Ready in time: the memory figures still hold every object in the cache.
    let big_in = env.wait_ready(o.memory_workspaces, started, Duration::from_secs(480)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_big = operator.rss();
    operator.stop().await;
    let seq = last_seq(&env.sim);
    phase("operator restarted: reading every workspace again");
    let restarted = Operator::start(&env, "operator-restarted.log").await;
    let wave_started = Instant::now();
    let mut wave_reads = 0;
    while wave_reads < o.memory_workspaces && wave_started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        wave_reads = calls_since(&env.sim, seq).reads_of("Workspaces_Get");
    }
    let wave_in = wave_started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_wave = restarted.rss();
    restarted.stop().await;

    // The table.
    let per = |c: &Calls, n: usize| {
        format!("{:.1} reads + {:.1} writes", c.reads as f64 / n as f64, c.writes as f64 / n as f64)
    };
    let period = "per workspace per resync period (1 h)";
    rows.push(row("operator RSS idle (no objects)", none, mib(idle)));
    rows.push(row(format!("operator RSS, {n} MlWorkspaces Ready"), none, mib(rss_small)));
    rows.push(row(format!("operator RSS, {} MlWorkspaces Ready", o.memory_workspaces), none, mib(rss_big)));
    rows.push(row(
        format!(
            "operator RSS, restarted, after reading {wave_reads} of {} again ({:.0} s real)",
            o.memory_workspaces,
            wave_in.as_secs_f64()
        ),
        none,
        mib(rss_wave),
    ));
    let per_object = |rss: u64, count: usize| format!("{:.1} KiB", rss.saturating_sub(idle) as f64 / count as f64);
    rows.push(row(
        format!("bytes per MlWorkspace above idle ({n} / {} / restarted)", o.memory_workspaces),
        none,
        format!(
            "{} / {} / {}",
            per_object(rss_small, n),
            per_object(rss_big, o.memory_workspaces),
            per_object(rss_wave, o.memory_workspaces)
        ),
    ));
    let (b_create, b_steady, b_created_in, b_drift) = match &baseline {
        Some((c, s, t, d)) => (Some(c), Some(s), Some(*t), Some(d)),
        None => (None, None, None, None),
    };
    rows.push(row(
        format!("create {n} workspaces (1 role assignment each): time to all Ready"),
        b_created_in.map_or(none.to_owned(), |t| format!("{} (PUTs done)", secs(t))),
        secs(o.unscaled(created_in)),
    ));
    rows.push(row(
        "  ARM calls per workspace to create",
        b_create.map_or(none.to_owned(), |c| per(c, n)),
        per(&creation, n),
    ));
    rows.push(row(
        "  429s while creating",
        b_create.map_or(none.to_owned(), |c| c.throttled.to_string()),
        creation.throttled.to_string(),
    ));
    rows.push(row(
        format!("steady hour at {n}: ARM reads"),
        b_steady.map_or(none.to_owned(), |c| c.reads.to_string()),
        steady.reads.to_string(),
    ));
    rows.push(row(
        "  of which workspace GETs / role-assignment reads",
        b_steady.map_or(none.to_owned(), |c| {
            format!("{} / {}", c.reads_of("Workspaces_Get"), c.reads_of("RoleAssignments_Get"))
        }),
        format!("{} / {}", steady.reads_of("Workspaces_Get"), steady.reads_of("RoleAssignments_ListForScope")),
    ));
    rows.push(row(
        "  of which the key signal (storage LIST + activity log, per subscription)",
        "0",
        format!("{} + {}", steady.reads_of("StorageAccounts_List"), steady.reads_of("ActivityLogs_List")),
    ));
    rows.push(row(
        format!("  ARM writes (of which PATCHes putting back the {DRIFTS} drifts)"),
        b_steady.map_or(none.to_owned(), |c| format!("{} ({})", c.writes, c.writes_of("Workspaces_Update"))),
        format!("{} ({})", steady.writes, steady.writes_of("Workspaces_Update")),
    ));
    rows.push(row(
        "  ARM reads + writes ".to_owned() + period,
        b_steady.map_or(none.to_owned(), |c| per(c, n)),
        per(&steady, n),
    ));
    rows.push(row(
        "  429s",
        b_steady.map_or(none.to_owned(), |c| c.throttled.to_string()),
        steady.throttled.to_string(),
    ));
    rows.push(row(
        format!("  drift of a property made in the portal ({DRIFTS} workspaces): corrected after"),
        b_drift.map_or(none.to_owned(), |d| drift_summary(d)),
        drift_summary(&drift),
    ));
    let regen = |lat: &[Duration], calls: &Calls, accounts: usize| {
        let max_sub = calls.writes_per_sub.values().copied().max().unwrap_or_default();
        let budget = ThrottleConfig::default();
        let over = (max_sub as f64 - budget.write_capacity).max(0.0) / budget.write_refill_per_sec;
        (
            format!(
                "p50 {} / p99 {} / max {} ({} workspaces on {accounts} accounts)",
                secs(percentile(lat, 0.5)),
                secs(percentile(lat, 0.99)),
                secs(lat.last().copied().unwrap_or_default()),
                lat.len()
            ),
            format!(
                "{} writes ({} per subscription at most: bucket 200 + {:.0} s of 10/s refill), {} 429s",
                calls.writes, max_sub, over, calls.throttled
            ),
        )
    };
    let (one_lat, one_w) = regen(&one, &one_calls, 1);
    let (all_lat, all_w) = regen(&all, &all_calls, env.accounts.len());
    rows.push(row("storage key regenerated (1 account) -> workspaces resynced", "never (no key resync)", one_lat));
    rows.push(row("  ARM cost", none, one_w));
    rows.push(row("storage keys regenerated (all 100 accounts at once) -> resynced", "never (no key resync)", all_lat));
    rows.push(row("  ARM cost", none, all_w));
    rows.push(row(
        format!("create {} more workspaces: time to all Ready", o.memory_workspaces - n),
        none,
        match big_in {
            Ok(t) => format!("{} real", secs(t)),
            Err(ready) => format!("{ready} of {} Ready after 480 s real", o.memory_workspaces),
        },
    ));

    let mut table = String::new();
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let _ = writeln!(
        table,
        "azml-operator scale benchmark: {} cores ({machine}), load average {}, time scaled 1/{} (key regenerations 1/{}), resync 1 h, key signal 60 s, LROs 20 s, concurrency {}, ARM buckets and storage RP limits on; operator binary {}; {} real",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
        o.scale,
        o.regeneration_scale,
        o.concurrency.map_or_else(|| "default (32)".to_owned(), |c| c.to_string()),
        o.operator.display(),
        secs(bench_started.elapsed())
    );
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0).max(4);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0).max(9);
    let _ =
        writeln!(table, "| {:<w0$} | {:<w1$} | azml-operator |", "what", "blind PUT (Azure Service Operator pattern)");
    let _ = writeln!(table, "|{}|{}|---|", "-".repeat(w0 + 2), "-".repeat(w1 + 2));
    for (a, b, c) in &rows {
        let _ = writeln!(table, "| {a:<w0$} | {b:<w1$} | {c} |");
    }
    if std::env::var_os("SCALE_BENCH_DETAILS").is_some() {
        for (name, calls) in [("creation", &creation), ("steady hour", &steady), ("regenerate all", &all_calls)] {
            let _ = writeln!(table, "{name}:");
            for (op, (r, w)) in &calls.per_op {
                let _ = writeln!(table, "  {op:<40} reads {r:>7}  writes {w:>7}");
            }
        }
    }
    let affected =
        |accounts: usize| names.iter().filter(|(_, a)| env.accounts[..accounts].iter().any(|x| x.id == a.id)).count();
    let report = Report {
        table,
        rss_kib: [idle, rss_small, rss_big, rss_wave],
        steady: (
            steady.reads,
            steady.writes - steady.writes_of("Workspaces_Update"),
            steady.reads_of("Workspaces_Get"),
        ),
        baseline_steady: b_steady.map_or((0, 0), |c| (c.reads, c.writes)),
        drift_corrected: (drift.iter().flatten().count(), b_drift.map_or(0, |d| d.iter().flatten().count())),
        resynced: [(one.len(), affected(1)), (all.len(), affected(env.accounts.len()))],
        p99: [percentile(&one, 0.99), percentile(&all, 0.99)],
    };
    env.kube.shutdown().await;
    env.sim.shutdown().await;
    report
}
