//! `azml-operator sandbox`: the Kubernetes API emulator, the ARM + Entra ID simulator and the controller in one
//! process, with a seeded Azure world, so the operator can be tried without a cluster or an Azure account.
//!
//! The controller runs exactly as under `azml-operator run`: it talks HTTP to the Kubernetes emulator through a
//! kubeconfig and HTTPS to the simulator (trusting the sandbox CA), with a client-secret SubscriptionBinding.
//!
//! The state survives a crash: both stores are saved to `--state-dir` as they change ([`crate::persist`]), and a
//! restart reuses the saved state, CA and ports, so the operation URLs the operator keeps in status stay valid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{Namespace, Secret as KubeSecret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use azml_arm_simulator::tls::SandboxCa;
use azml_arm_simulator::{ArmSimulator, FaultRule, RunningSim, SavedTokens, SimConfig, SimError, SimHandle, SimState};
use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions, Store};
use azml_operator::api::v1alpha1::SubscriptionBinding;
use azml_operator::azure::AzureCloud;
use azml_operator::reconciler::ControllerConfig;

use crate::persist::{self, StateWriter, Visibility};
use crate::world::{self, SandboxWorld};

/// Namespace the sandbox's operator "runs in": its credential Secret lives here.
pub const OPERATOR_NAMESPACE: &str = "azml-system";
/// Name of the SubscriptionBinding the sandbox creates for the `default` namespace.
pub const BINDING_NAME: &str = "sandbox";
/// The operator's client-secret Secret: the one `examples/subscriptionbinding.yaml` names, so that binding works
/// when `kubectl apply -f examples/` adds it (it sorts before `sandbox` and is then the one used), with the same
/// credential as `sandbox` (same client id, same Secret: no AmbiguousBinding warning).
const CREDENTIAL_SECRET: &str = "risk-prod-sp";
const FIELD_MANAGER: &str = "azml-sandbox";

// Files of the state dir. The ones marked private hold secrets and are created mode 0600.

/// Every Kubernetes object (Secrets too): private.
const KUBE_STATE: &str = "kube-state.json";
/// The simulated Azure (storage keys, client secrets, pending operations, access tokens issued): private.
const AZURE_STATE: &str = "azure-state.json";
/// Where the servers listen (their ports are reused by a restart).
const INFO_FILE: &str = "sandbox.json";
/// The CA certificate clients trust.
const CA_CERT: &str = "ca.pem";
/// The CA's private key: private.
const CA_KEY: &str = "ca-key.pem";
/// Settings for Azure tools, with the sandbox user's client secret: private.
const AZURE_ENV: &str = "azure.env";
/// Least time between two saves of the same file: a burst of changes is written once or twice.
const SAVE_INTERVAL: Duration = Duration::from_millis(200);

/// Settings of `azml-operator sandbox`.
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub action: Option<SandboxAction>,

    /// Where to write the kubeconfig that points kubectl at the sandbox.
    #[arg(long, default_value = "sandbox.kubeconfig", global = true)]
    pub kubeconfig: PathBuf,

    /// Where the sandbox keeps its CA, azure.env and saved state (a restart continues from it).
    #[arg(long, default_value = ".sandbox", global = true)]
    pub state_dir: PathBuf,

    /// Port of the Kubernetes API emulator. Default: the port of the previous run saved in --state-dir (so the
    /// kubeconfig stays valid), else any free port; 0: any free port.
    #[arg(long)]
    pub kube_port: Option<u16>,

    /// Port of the ARM + Entra ID simulator. Default: the port of the previous run saved in --state-dir (so the
    /// operation URLs the operator stored in status keep working), else any free port; 0: any free port.
    #[arg(long)]
    pub arm_port: Option<u16>,

    /// How long every simulated long-running Azure operation takes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub lro_duration: Duration,

    /// Simulated seconds per real second for the waits the simulated Azure asks for (`Retry-After`): 1 answers
    /// as Azure does (10 s for ML operations), 0.1 a tenth of it; never less than 1 s.
    #[arg(long, default_value_t = 0.1)]
    pub time_scale: f64,

    /// How long a simulated activity-log event takes to become visible (Azure's ingestion delay; the operator
    /// must not depend on the log being prompt).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub activity_log_delay: Duration,

    /// How often the controller compares an unchanged workspace with Azure (short, so edits made behind the
    /// operator's back show quickly).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync_period: Duration,

    /// How often the controller lists each subscription's storage accounts and queries its activity log for key
    /// regenerations (`azml-operator run`'s `--key-signal-interval`; production's default is 60 s). Never longer
    /// than --resync-period.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub key_signal_interval: Duration,

    /// Start from a freshly seeded world instead of the state saved in --state-dir (the ports and the CA are kept).
    #[arg(long)]
    pub fresh: bool,
}

/// Helpers that change the simulated Azure behind the operator's back, as a user would change the real one.
#[derive(Subcommand, Debug, Clone)]
pub enum SandboxAction {
    /// Change the simulated Azure of a running sandbox.
    #[command(subcommand)]
    Azure(AzureAction),
}

/// What to change in the simulated Azure.
#[derive(Subcommand, Debug, Clone)]
pub enum AzureAction {
    /// Regenerate a storage account key (what a key rotation in the portal does).
    RegenerateKey {
        /// Storage account name (in the seeded resource group) or full ARM id.
        #[arg(long, default_value = world::STORAGE_ACCOUNT)]
        account: String,
        /// key1 or key2.
        #[arg(long, default_value = "key1")]
        key: String,
    },
    /// Edit a resource with a JSON merge patch, e.g. change a workspace's description "in the portal".
    Edit {
        /// Full ARM id of the resource.
        #[arg(long)]
        id: String,
        /// JSON merge patch, e.g. '{"properties":{"description":"edited"}}'.
        #[arg(long)]
        patch: String,
    },
    /// Make an ARM operation fail, e.g. `--operation Workspaces_CreateOrUpdate --status 500 --code InternalServerError`.
    Fault {
        /// Operation name as in the call log (e.g. Workspaces_Get), or `*` for every operation.
        #[arg(long)]
        operation: String,
        /// HTTP status to answer with.
        #[arg(long, default_value_t = 500)]
        status: u16,
        /// ARM error code to answer with.
        #[arg(long, default_value = "InternalServerError")]
        code: String,
        /// Fail this many times, then behave again (default: until cleared).
        #[arg(long)]
        times: Option<u32>,
    },
    /// Remove every injected fault.
    ClearFaults,
    /// Print how many calls the operator made, per ARM operation (a table; `-o json` for machines).
    Calls {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = CallsOutput::Table)]
        output: CallsOutput,
    },
    /// List the soft-deleted ML workspaces (what the portal's "Recently deleted" shows; Azure has no ARM list).
    SoftDeleted,
    /// Move the simulated Azure's clock forward, e.g. past a soft-deleted workspace's retention (`15d`).
    AdvanceClock {
        /// How far, e.g. `15d`, `6m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        by: Duration,
    },
}

/// Output of `sandbox azure calls`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallsOutput {
    /// Aligned columns: operation, calls, reads, writes, errors, and a total line.
    Table,
    /// The simulator's JSON summary: `{"<operation>": {"calls", "reads", "writes", "errors"}}`.
    Json,
}

/// The call summary (`/_sim/calls/summary`) as a table, busiest operation first, with a total line.
pub fn calls_table(summary: &serde_json::Value) -> String {
    const COLUMNS: [&str; 4] = ["calls", "reads", "writes", "errors"];
    let count = |v: &serde_json::Value, c: &str| v.get(c).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let mut rows: Vec<(&str, [u64; 4])> = summary
        .as_object()
        .map(|m| m.iter().map(|(op, v)| (op.as_str(), COLUMNS.map(|c| count(v, c)))).collect())
        .unwrap_or_default();
    rows.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then(a.0.cmp(b.0)));
    let mut total = [0u64; 4];
    for (_, counts) in &rows {
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    let width = rows.iter().map(|(op, _)| op.len()).chain(["OPERATION".len()]).max().unwrap_or(9);
    let line = |op: &str, cells: [String; 4]| {
        format!("{op:<width$}  {:>6}  {:>6}  {:>6}  {:>6}\n", cells[0], cells[1], cells[2], cells[3])
    };
    let mut out = line("OPERATION", COLUMNS.map(str::to_ascii_uppercase));
    for (op, counts) in &rows {
        out.push_str(&line(op, counts.map(|c| c.to_string())));
    }
    out.push_str(&line("TOTAL", total.map(|c| c.to_string())));
    out
}

/// Errors of the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A file of the state dir could not be written or read.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes API emulator failed to start.
    #[error("cannot start the Kubernetes API emulator: {0}")]
    KubeServer(#[source] std::io::Error),
    /// The ARM simulator failed to start or to save/load state.
    #[error("ARM simulator: {0}")]
    Arm(#[from] azml_arm_simulator::SimError),
    /// The sandbox CA could not be created, saved or loaded.
    #[error("sandbox CA: {0}")]
    Ca(#[source] azml_arm_simulator::tls::TlsError),
    /// Talking to the Kubernetes API emulator failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The Azure client settings are invalid.
    #[error("Azure settings: {0}")]
    Azure(#[source] Box<azml_operator::azure::ArmError>),
    /// Saved state or arguments could not be parsed.
    #[error("{0}")]
    Invalid(String),
    /// A request to the running sandbox failed.
    #[error("request to the sandbox failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The sandbox answered an admin request with an error.
    #[error("the sandbox answered {status}: {body}")]
    Admin { status: u16, body: String },
    /// Waiting for the termination signal failed.
    #[error("cannot listen for termination signals: {0}")]
    Signal(#[source] std::io::Error),
    /// The port a previous run saved is used by another process.
    #[error(
        "the {server} port {port} saved in {info} by the previous run is in use (is another sandbox running on this \
         state dir?): stop the process holding it, or pass {flag} 0 to take any free port (operations the operator \
         stored in status with the old ARM port then cannot be polled and are started again)"
    )]
    PortTaken {
        /// Which server.
        server: &'static str,
        /// The saved port.
        port: u16,
        /// The option that overrides it.
        flag: &'static str,
        /// The file it was saved in.
        info: PathBuf,
    },
}

/// What a running sandbox records in `<state-dir>/sandbox.json` so that `sandbox azure ...` can reach it.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    /// URL of the Kubernetes API emulator.
    pub kube_url: String,
    /// URL of the ARM simulator (also the Entra ID authority host).
    pub arm_endpoint: String,
    /// PEM file of the sandbox CA.
    pub ca_file: PathBuf,
}

impl SandboxInfo {
    /// The saved info of a previous run, if there is a readable one.
    fn read(state_dir: &Path) -> Option<SandboxInfo> {
        let path = state_dir.join(INFO_FILE);
        let text = std::fs::read_to_string(&path).ok()?;
        serde_json::from_str(&text)
            .inspect_err(|e| warn!(path = %path.display(), error = %e, "ignoring an unreadable sandbox info file"))
            .ok()
    }

    fn kube_port(&self) -> Option<u16> {
        url::Url::parse(&self.kube_url).ok()?.port()
    }

    fn arm_port(&self) -> Option<u16> {
        url::Url::parse(&self.arm_endpoint).ok()?.port()
    }
}

/// The port to bind: the one asked for, else the saved one (then `true`), else any.
fn choose_port(asked: Option<u16>, saved: Option<u16>) -> (u16, bool) {
    match (asked, saved) {
        (Some(port), _) => (port, false),
        (None, Some(port)) => (port, true),
        (None, None) => (0, false),
    }
}

/// Runs the sandbox (or one of its helpers) until Ctrl-C / SIGTERM.
pub async fn main(args: SandboxArgs) -> Result<(), SandboxError> {
    match &args.action {
        Some(SandboxAction::Azure(action)) => azure_action(&args.state_dir, action).await,
        None => {
            let shutdown = CancellationToken::new();
            let running = Sandbox::start(&args, shutdown.clone()).await?;
            running.print_welcome(&args);
            azml_operator::run::shutdown_signal().await.map_err(SandboxError::Signal)?;
            info!("shutting down the sandbox");
            running.stop().await
        }
    }
}

/// A started sandbox.
pub struct Sandbox {
    kube: RunningServer,
    arm: RunningSim,
    state_dir: PathBuf,
    controller: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    writers: Vec<StateWriter>,
    kube_changes: tokio::task::JoinHandle<()>,
    /// Where the pieces listen.
    pub info: SandboxInfo,
}

impl Sandbox {
    /// Starts the emulators from the saved state (or a freshly seeded world), keeps the state saved as it changes,
    /// seeds Kubernetes, writes the kubeconfig and azure.env, and starts the controller.
    pub async fn start(args: &SandboxArgs, shutdown: CancellationToken) -> Result<Sandbox, SandboxError> {
        azml_operator::tls_provider::install();
        let state_dir = args.state_dir.clone();
        persist::create_private_dir(&state_dir)
            .map_err(|source| SandboxError::File { path: state_dir.clone(), source })?;
        let saved = SandboxInfo::read(&state_dir);
        let info_path = state_dir.join(INFO_FILE);
        let ca = load_or_create_ca(&state_dir)?;
        let ca_file = state_dir.join(CA_CERT);

        // Azure: the world saved by the previous run, or a fresh one.
        let seeded = SandboxWorld::seed();
        let arm_state_file = state_dir.join(AZURE_STATE);
        let (sim_state, tokens) = if !args.fresh && arm_state_file.exists() {
            read_sim_state(&arm_state_file)?
        } else {
            (seeded.state.clone(), SavedTokens::default())
        };
        let (arm_port, arm_saved) = choose_port(args.arm_port, saved.as_ref().and_then(SandboxInfo::arm_port));
        let mut sim_config = SimConfig::new(sim_state);
        sim_config.bind = ([127, 0, 0, 1], arm_port).into();
        sim_config.lro_duration = args.lro_duration;
        sim_config.time_scale = args.time_scale;
        sim_config.ca = Some(ca);
        sim_config.tokens = tokens;
        sim_config.activity_log_delay = args.activity_log_delay;
        let arm = ArmSimulator::start(sim_config).await.map_err(|e| match e {
            SimError::Bind { source, .. } if arm_saved && source.kind() == std::io::ErrorKind::AddrInUse => {
                SandboxError::PortTaken {
                    server: "ARM simulator",
                    port: arm_port,
                    flag: "--arm-port",
                    info: info_path.clone(),
                }
            }
            other => SandboxError::Arm(other),
        })?;
        let operator_secret = operator_secret(&arm, &seeded);
        let user_secret = user_secret(&arm, &seeded);

        // Kubernetes: the store is restored before the server accepts its first request.
        let kube_options = ServerOptions::default();
        let store = Arc::new(Store::new(kube_options.history_limit));
        let kube_state_file = state_dir.join(KUBE_STATE);
        if !args.fresh && kube_state_file.exists() {
            let text = read_file(&kube_state_file)?;
            store
                .restore_json(&text)
                .map_err(|e| SandboxError::Invalid(format!("{}: {e}", kube_state_file.display())))?;
        }
        let (kube_port, kube_saved) = choose_port(args.kube_port, saved.as_ref().and_then(SandboxInfo::kube_port));
        let kube_options = ServerOptions { addr: ([127, 0, 0, 1], kube_port).into(), ..kube_options };
        let kube = KubeApiServer::start_with_store(kube_options, store).await.map_err(|e| {
            if kube_saved && e.kind() == std::io::ErrorKind::AddrInUse {
                SandboxError::PortTaken {
                    server: "Kubernetes API",
                    port: kube_port,
                    flag: "--kube-port",
                    info: info_path.clone(),
                }
            } else {
                SandboxError::KubeServer(e)
            }
        })?;

        // From here on every change is saved as it happens.
        let (kube_writer, kube_changes) = kube_state_writer(&kube, kube_state_file);
        let writers = vec![kube_writer, arm_state_writer(&arm, arm_state_file)];
        let info = SandboxInfo { kube_url: kube.url(), arm_endpoint: arm.endpoint.clone(), ca_file: ca_file.clone() };
        let info_json = serde_json::to_string_pretty(&info).unwrap_or_default();
        write_file(&info_path, info_json.as_bytes(), Visibility::Public)?;
        write_file(&args.kubeconfig, kube.kubeconfig_yaml().as_bytes(), Visibility::Public)?;

        let client = kube.client()?;
        install_crds(&client).await?;
        seed_kubernetes(&client, &operator_secret).await?;
        write_azure_env(&state_dir, &arm, &ca_file, &user_secret)?;

        // The controller, as `run` would start it.
        let cloud = AzureCloud::custom(&arm.endpoint, &arm.endpoint)
            .and_then(|c| c.with_extra_root_ca_file(&ca_file))
            .map_err(|e| SandboxError::Azure(Box::new(e)))?;
        let mut config = sandbox_controller_config(cloud, args.resync_period);
        config.key_signal_interval = args.key_signal_interval.min(args.resync_period);
        let controller = tokio::spawn(azml_operator::run::controllers(client, config, shutdown.clone()));
        Ok(Sandbox { kube, arm, state_dir, controller, shutdown, writers, kube_changes, info })
    }

    fn print_welcome(&self, args: &SandboxArgs) {
        let kubeconfig = args.kubeconfig.display();
        let state = self.state_dir.display();
        println!("azml-operator sandbox");
        println!("  Kubernetes API      {}   (kubeconfig: {kubeconfig})", self.info.kube_url);
        println!("  Azure ARM + Entra   {}   (CA: {})", self.info.arm_endpoint, self.info.ca_file.display());
        println!("  Azure SDK settings  {state}/{AZURE_ENV}   (source it for az / the Azure SDKs)");
        println!("  State               {state}/   (saved as it changes; a restart continues from it)");
        println!();
        println!("Try:");
        println!("  export KUBECONFIG={kubeconfig}");
        println!("  kubectl apply -f examples/mlworkspace.yaml");
        println!("  kubectl get mlws -w");
        println!("  kubectl apply -f examples/mlonlineendpoint.yaml && kubectl get mlep -w");
        println!("  kubectl apply -f examples/mlcompute.yaml && kubectl get mlc -w");
        println!("  kubectl apply -f examples/mlconnection.yaml && kubectl get mlconn -w");
        println!("  azml-operator sandbox azure regenerate-key --account {}", world::STORAGE_ACCOUNT);
        println!();
        println!("sandbox ready");
    }

    /// Stops the controller, writes the last state and stops the servers.
    pub async fn stop(self) -> Result<(), SandboxError> {
        self.shutdown.cancel();
        if let Err(err) = self.controller.await {
            warn!(error = %err, "the controller task ended abnormally");
        }
        for writer in self.writers {
            writer.finish().await;
        }
        self.kube_changes.abort();
        self.kube.shutdown().await;
        self.arm.shutdown().await;
        Ok(())
    }
}

/// The CA saved by a previous run (so clients that trust `ca.pem` keep working), or a new one, saved.
fn load_or_create_ca(state_dir: &Path) -> Result<Arc<SandboxCa>, SandboxError> {
    let (cert, key) = (state_dir.join(CA_CERT), state_dir.join(CA_KEY));
    if cert.exists() && key.exists() {
        return SandboxCa::load(&cert, &key).map(Arc::new).map_err(SandboxError::Ca);
    }
    let ca = SandboxCa::generate().map_err(SandboxError::Ca)?;
    // The key first, mode 0600 from creation: a certificate without its key is never left behind.
    persist::write_atomic(&key, ca.private_key_pem().as_bytes(), Visibility::Private)
        .map_err(|source| SandboxError::File { path: key.clone(), source })?;
    persist::write_atomic(&cert, ca.ca_pem().as_bytes(), Visibility::Public)
        .map_err(|source| SandboxError::File { path: cert.clone(), source })?;
    Ok(Arc::new(ca))
}

fn read_sim_state(path: &Path) -> Result<(SimState, SavedTokens), SandboxError> {
    let text = read_file(path)?;
    SimHandle::parse_persistent(text.as_bytes()).map_err(|e| SandboxError::Invalid(format!("{}: {e}", path.display())))
}

/// Saves the Kubernetes store after every committed change (the store's own event stream wakes the writer).
fn kube_state_writer(kube: &RunningServer, path: PathBuf) -> (StateWriter, tokio::task::JoinHandle<()>) {
    let changed = Arc::new(Notify::new());
    let mut events = kube.store().subscribe();
    let notify = changed.clone();
    let forward = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        // A lagging receiver missed events, which only means that something changed.
        while let Ok(_) | Err(RecvError::Lagged(_)) = events.recv().await {
            notify.notify_one();
        }
    });
    let store = kube.store().clone();
    let snapshot: persist::SnapshotFn = Arc::new(move || Ok(store.snapshot_json().into_bytes()));
    (StateWriter::spawn(path, Visibility::Private, changed, snapshot, SAVE_INTERVAL), forward)
}

/// Saves the simulated Azure after every request that may have changed it.
fn arm_state_writer(arm: &RunningSim, path: PathBuf) -> StateWriter {
    let handle = arm.handle.clone();
    let snapshot: persist::SnapshotFn = Arc::new(move || handle.persistent_json().map_err(|e| e.to_string()));
    StateWriter::spawn(path, Visibility::Private, arm.handle.changes(), snapshot, SAVE_INTERVAL)
}

/// Controller settings for the sandbox: the defaults of `run`, with polls and retries scaled to the simulator.
pub fn sandbox_controller_config(cloud: AzureCloud, resync_period: Duration) -> ControllerConfig {
    let mut config = ControllerConfig::new(cloud);
    config.resync_period = resync_period;
    config.stalled_requeue = resync_period;
    config.operator_namespace = OPERATOR_NAMESPACE.to_string();
    config.lro_poll_min = Duration::from_millis(500);
    config.lro_poll_max = Duration::from_secs(5);
    config.error_backoff_base = Duration::from_secs(1);
    config.error_backoff_max = Duration::from_secs(30);
    // A regenerated key shows up within seconds instead of a minute.
    config.key_signal_interval = Duration::from_secs(10).min(resync_period);
    config
}

/// The operator's client secret as the simulator knows it (after a restore, the saved world's).
fn operator_secret(arm: &RunningSim, seeded: &SandboxWorld) -> String {
    principal_secret(arm, world::OPERATOR_CLIENT_ID).unwrap_or_else(|| seeded.operator_secret.expose().to_string())
}

fn user_secret(arm: &RunningSim, seeded: &SandboxWorld) -> String {
    principal_secret(arm, world::USER_CLIENT_ID).unwrap_or_else(|| seeded.user_secret.expose().to_string())
}

fn principal_secret(arm: &RunningSim, client_id: &str) -> Option<String> {
    arm.handle.with_state(|s| {
        s.principals
            .values()
            .find(|p| p.app_id.as_deref() == Some(client_id))
            .and_then(|p| p.secrets.first())
            .map(|s| s.expose().to_string())
    })
}

async fn install_crds(client: &Client) -> Result<(), SandboxError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in azml_operator::api::all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &params, &Patch::Apply(&crd)).await?;
    }
    Ok(())
}

/// Namespaces, the operator's credential Secret and a SubscriptionBinding that lets `default` do everything in the
/// seeded subscriptions.
async fn seed_kubernetes(client: &Client, operator_secret: &str) -> Result<(), SandboxError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in ["default", OPERATOR_NAMESPACE] {
        let ns =
            Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
        namespaces.patch(name, &params, &Patch::Apply(&ns)).await?;
    }
    let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CREDENTIAL_SECRET, "namespace": OPERATOR_NAMESPACE},
        "type": "Opaque",
        "stringData": {"clientSecret": operator_secret},
    });
    secrets.patch(CREDENTIAL_SECRET, &params, &Patch::Apply(&secret)).await?;
    let bindings: Api<SubscriptionBinding> = Api::all(client.clone());
    for (name, subscription) in [(BINDING_NAME, world::SUBSCRIPTION_ID), ("sandbox-2", world::OTHER_SUBSCRIPTION_ID)] {
        let binding = json!({
            "apiVersion": "azml.dev/v1alpha1", "kind": "SubscriptionBinding",
            "metadata": {"name": name},
            "spec": {
                "subscriptionId": subscription,
                "tenantId": world::TENANT_ID,
                "credential": {"clientSecret": {
                    "clientId": world::OPERATOR_CLIENT_ID,
                    "secretRef": {"name": CREDENTIAL_SECRET, "key": "clientSecret"},
                }},
                "namespaces": ["default"],
                "resourceGroups": ["*"],
                "allowedRoles": ["Owner", "Contributor", "Reader", "AzureMLDataScientist", "AzureMLComputeOperator"],
                "allowedScopes": ["Workspace", "ResourceGroup", "Subscription"],
                "allowMoves": true,
                "allowedVmSizes": ["Standard_D*", "Standard_E*", "Standard_F*", "Standard_NC*"],
                "maxNodesPerCluster": 8,
                "allowedConnectionCategories": ["*"],
            }
        });
        bindings.patch(name, &params, &Patch::Apply(&binding)).await?;
    }
    Ok(())
}

/// `<state-dir>/azure.env`: what the official Azure SDKs and az read, pointing them at the simulator.
fn write_azure_env(state_dir: &Path, arm: &RunningSim, ca_file: &Path, user_secret: &str) -> Result<(), SandboxError> {
    let ca = std::fs::canonicalize(ca_file).unwrap_or_else(|_| ca_file.to_path_buf());
    let ca = ca.display();
    let text = format!(
        "# Source this file to point Azure SDKs and tools at the sandbox's simulated Azure.\n\
         export AZURE_TENANT_ID={tenant}\n\
         export AZURE_CLIENT_ID={client}\n\
         export AZURE_CLIENT_SECRET={secret}\n\
         export AZURE_SUBSCRIPTION_ID={sub}\n\
         export AZURE_AUTHORITY_HOST={endpoint}\n\
         export AZURE_RESOURCE_MANAGER_ENDPOINT={endpoint}\n\
         export SSL_CERT_FILE={ca}\n\
         export REQUESTS_CA_BUNDLE={ca}\n\
         export AZML_SANDBOX_PRINCIPALS={principals}\n",
        tenant = world::TENANT_ID,
        client = world::USER_CLIENT_ID,
        secret = user_secret,
        sub = world::SUBSCRIPTION_ID,
        endpoint = arm.endpoint,
        principals = world::principals_env(),
    );
    write_file(&state_dir.join(AZURE_ENV), text.as_bytes(), Visibility::Private)
}

async fn azure_action(state_dir: &Path, action: &AzureAction) -> Result<(), SandboxError> {
    let info_path = state_dir.join(INFO_FILE);
    let info: SandboxInfo = serde_json::from_str(&read_file(&info_path)?)
        .map_err(|e| SandboxError::Invalid(format!("{}: {e} (is the sandbox running?)", info_path.display())))?;
    azml_operator::tls_provider::install();
    let ca = read_file(&info.ca_file)?;
    let cert = reqwest::Certificate::from_pem(ca.as_bytes())?;
    let http = reqwest::Client::builder().add_root_certificate(cert).build()?;
    let base = info.arm_endpoint.trim_end_matches('/');
    let request = match action {
        AzureAction::RegenerateKey { account, key } => {
            let account_id = if account.starts_with('/') {
                account.clone()
            } else {
                format!(
                    "{}/providers/Microsoft.Storage/storageAccounts/{account}",
                    world::resource_group_id(world::SUBSCRIPTION_ID, world::RESOURCE_GROUP)
                )
            };
            http.post(format!("{base}/_sim/storage/regenerateKey"))
                .json(&json!({"accountId": account_id, "keyName": key}))
        }
        AzureAction::Edit { id, patch } => {
            let patch: serde_json::Value =
                serde_json::from_str(patch).map_err(|e| SandboxError::Invalid(format!("--patch is not JSON: {e}")))?;
            http.patch(format!("{base}/_sim/resources")).json(&json!({"id": id, "patch": patch}))
        }
        AzureAction::Fault { operation, status, code, times } => {
            let mut rule = FaultRule::error(operation, *status, code);
            if let Some(n) = times {
                rule = rule.times(*n);
            }
            http.post(format!("{base}/_sim/faults")).json(&rule)
        }
        AzureAction::ClearFaults => http.delete(format!("{base}/_sim/faults")),
        AzureAction::Calls { .. } => http.get(format!("{base}/_sim/calls/summary")),
        AzureAction::SoftDeleted => http.get(format!("{base}/_sim/softDeletedWorkspaces")),
        AzureAction::AdvanceClock { by } => {
            http.post(format!("{base}/_sim/clock/advance")).json(&json!({"seconds": by.as_secs()}))
        }
    };
    let response = request.send().await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        return Err(SandboxError::Admin { status: status.as_u16(), body });
    }
    if let AzureAction::Calls { output: CallsOutput::Table } = action {
        let summary: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| SandboxError::Invalid(format!("the simulator's call summary is not JSON: {e}")))?;
        print!("{}", calls_table(&summary));
    } else if !body.trim().is_empty() {
        println!("{body}");
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, SandboxError> {
    std::fs::read_to_string(path).map_err(|source| SandboxError::File { path: path.to_path_buf(), source })
}

/// Replaces a file atomically (private files are mode 0600 from creation).
fn write_file(path: &Path, bytes: &[u8], visibility: Visibility) -> Result<(), SandboxError> {
    persist::write_atomic(path, bytes, visibility)
        .map_err(|source| SandboxError::File { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_call_table_lists_the_busiest_operation_first_and_totals() {
        let summary = json!({
            "Workspaces_Get": {"calls": 3, "reads": 3, "writes": 0, "errors": 1},
            "Workspaces_CreateOrUpdate": {"calls": 1, "reads": 0, "writes": 1, "errors": 0},
        });
        let table = calls_table(&summary);
        let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines,
            [
                vec!["OPERATION", "CALLS", "READS", "WRITES", "ERRORS"],
                vec!["Workspaces_Get", "3", "3", "0", "1"],
                vec!["Workspaces_CreateOrUpdate", "1", "0", "1", "0"],
                vec!["TOTAL", "4", "3", "1", "1"],
            ]
        );
        assert_eq!(calls_table(&json!({})).lines().count(), 2, "header and total only");
    }
}
