//! `azml-operator sandbox`: the Kubernetes API emulator, the ARM + Entra ID simulator and the controller in one
//! process, with a seeded Azure world, so the operator can be tried without a cluster or an Azure account.
//!
//! The controller runs exactly as under `azml-operator run`: it talks HTTP to the Kubernetes emulator through a
//! kubeconfig and HTTPS to the simulator (trusting the sandbox CA), with a client-secret SubscriptionBinding.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{Namespace, Secret as KubeSecret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::arm::{ArmSimulator, FaultRule, RunningSim, SimConfig};
use super::kube_api::{KubeApiServer, RunningServer, ServerOptions};
use super::world::{self, SandboxWorld};
use crate::api::v1alpha1::SubscriptionBinding;
use crate::azure::AzureCloud;
use crate::controller::{self, ControllerConfig};

/// Namespace the sandbox's operator "runs in": its credential Secret lives here.
pub const OPERATOR_NAMESPACE: &str = "azml-system";
/// Name of the SubscriptionBinding the sandbox creates for the `default` namespace.
pub const BINDING_NAME: &str = "sandbox";
const CREDENTIAL_SECRET: &str = "sandbox-operator";
const FIELD_MANAGER: &str = "azml-sandbox";

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

    /// Port of the Kubernetes API emulator (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub kube_port: u16,

    /// Port of the ARM + Entra ID simulator (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub arm_port: u16,

    /// How long every simulated long-running Azure operation takes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub lro_duration: Duration,

    /// How long a simulated activity-log event takes to become visible (Azure's ingestion delay; the operator
    /// must not depend on the log being prompt).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub activity_log_delay: Duration,

    /// How often the controller compares an unchanged workspace with Azure (short, so edits made behind the
    /// operator's back show quickly).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync_period: Duration,

    /// Start from a freshly seeded world instead of the state saved in --state-dir.
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
    /// Print how many calls the operator made, per ARM operation.
    Calls,
    /// List the soft-deleted ML workspaces (what the portal's "Recently deleted" shows; Azure has no ARM list).
    SoftDeleted,
    /// Move the simulated Azure's clock forward, e.g. past a soft-deleted workspace's retention (`15d`).
    AdvanceClock {
        /// How far, e.g. `15d`, `6m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        by: Duration,
    },
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
    Arm(#[from] super::arm::SimError),
    /// Talking to the Kubernetes API emulator failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The Azure client settings are invalid.
    #[error("Azure settings: {0}")]
    Azure(#[source] Box<crate::azure::ArmError>),
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

/// Runs the sandbox (or one of its helpers) until Ctrl-C / SIGTERM.
pub async fn main(args: SandboxArgs) -> Result<(), SandboxError> {
    match &args.action {
        Some(SandboxAction::Azure(action)) => azure_action(&args.state_dir, action).await,
        None => {
            let shutdown = CancellationToken::new();
            let running = Sandbox::start(&args, shutdown.clone()).await?;
            running.print_welcome(&args);
            crate::run::shutdown_signal().await.map_err(SandboxError::Signal)?;
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
    /// Where the pieces listen.
    pub info: SandboxInfo,
}

impl Sandbox {
    /// Starts the emulators, seeds them, writes the kubeconfig and azure.env, and starts the controller.
    pub async fn start(args: &SandboxArgs, shutdown: CancellationToken) -> Result<Sandbox, SandboxError> {
        crate::tls_provider::install();
        let state_dir = args.state_dir.clone();
        create_dir(&state_dir)?;
        let arm_state_file = state_dir.join("azure-state.json");
        let kube_state_file = state_dir.join("kube-state.json");
        let restore = !args.fresh && arm_state_file.exists();

        // Azure: a fresh world, or the one saved by the previous run.
        let seeded = SandboxWorld::seed();
        let mut sim_config = SimConfig::new(seeded.state.clone());
        sim_config.bind = ([127, 0, 0, 1], args.arm_port).into();
        sim_config.lro_duration = args.lro_duration;
        sim_config.activity_log_delay = args.activity_log_delay;
        let arm = ArmSimulator::start(sim_config).await?;
        if restore {
            arm.handle.load(&arm_state_file)?;
        }
        let operator_secret = operator_secret(&arm, &seeded);
        let user_secret = user_secret(&arm, &seeded);
        let ca_file = state_dir.join("ca.pem");
        arm.write_ca(&ca_file)?;

        // Kubernetes.
        let kube_options = ServerOptions { addr: ([127, 0, 0, 1], args.kube_port).into(), ..Default::default() };
        let kube = KubeApiServer::start(kube_options).await.map_err(SandboxError::KubeServer)?;
        if restore && kube_state_file.exists() {
            let text = read_file(&kube_state_file)?;
            kube.store()
                .restore_json(&text)
                .map_err(|e| SandboxError::Invalid(format!("{}: {e}", kube_state_file.display())))?;
        }
        kube.write_kubeconfig(&args.kubeconfig)
            .map_err(|source| SandboxError::File { path: args.kubeconfig.clone(), source })?;
        let client = kube.client()?;
        install_crds(&client).await?;
        seed_kubernetes(&client, &operator_secret).await?;

        write_azure_env(&state_dir, &arm, &ca_file, &user_secret)?;
        let info = SandboxInfo { kube_url: kube.url(), arm_endpoint: arm.endpoint.clone(), ca_file: ca_file.clone() };
        write_file(&state_dir.join("sandbox.json"), &serde_json::to_string_pretty(&info).unwrap_or_default())?;

        // The controller, as `run` would start it.
        let cloud = AzureCloud::custom(&arm.endpoint, &arm.endpoint)
            .and_then(|c| c.with_extra_root_ca_file(&ca_file))
            .map_err(|e| SandboxError::Azure(Box::new(e)))?;
        let config = sandbox_controller_config(cloud, args.resync_period);
        let controller = tokio::spawn(controller::run(client, config, shutdown.clone()));
        Ok(Sandbox { kube, arm, state_dir, controller, shutdown, info })
    }

    fn print_welcome(&self, args: &SandboxArgs) {
        let kubeconfig = args.kubeconfig.display();
        let state = self.state_dir.display();
        println!("azml-operator sandbox");
        println!("  Kubernetes API      {}   (kubeconfig: {kubeconfig})", self.info.kube_url);
        println!("  Azure ARM + Entra   {}   (CA: {})", self.info.arm_endpoint, self.info.ca_file.display());
        println!("  Azure SDK settings  {state}/azure.env   (source it for az / the Azure SDKs)");
        println!();
        println!("Try:");
        println!("  export KUBECONFIG={kubeconfig}");
        println!("  kubectl apply -f examples/mlworkspace.yaml");
        println!("  kubectl get mlws -w");
        println!("  kubectl apply -f examples/mlonlineendpoint.yaml && kubectl get mlep -w");
        println!("  azml-operator sandbox azure regenerate-key --account {}", world::STORAGE_ACCOUNT);
        println!();
        println!("sandbox ready");
    }

    /// Stops the controller, saves the state for the next run and stops the servers.
    pub async fn stop(self) -> Result<(), SandboxError> {
        self.shutdown.cancel();
        if let Err(err) = self.controller.await {
            warn!(error = %err, "the controller task ended abnormally");
        }
        self.arm.handle.save(&self.state_dir.join("azure-state.json"))?;
        let kube_state = self.kube.store().snapshot_json();
        write_file(&self.state_dir.join("kube-state.json"), &kube_state)?;
        self.kube.shutdown().await;
        self.arm.shutdown().await;
        Ok(())
    }
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
    for crd in crate::api::all_crds() {
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
    write_private_file(&state_dir.join("azure.env"), &text)
}

async fn azure_action(state_dir: &Path, action: &AzureAction) -> Result<(), SandboxError> {
    let info_path = state_dir.join("sandbox.json");
    let info: SandboxInfo = serde_json::from_str(&read_file(&info_path)?)
        .map_err(|e| SandboxError::Invalid(format!("{}: {e} (is the sandbox running?)", info_path.display())))?;
    crate::tls_provider::install();
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
        AzureAction::Calls => http.get(format!("{base}/_sim/calls/summary")),
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
    if !body.trim().is_empty() {
        println!("{body}");
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(path).map_err(|source| SandboxError::File { path: path.to_path_buf(), source })
}

fn read_file(path: &Path) -> Result<String, SandboxError> {
    std::fs::read_to_string(path).map_err(|source| SandboxError::File { path: path.to_path_buf(), source })
}

fn write_file(path: &Path, text: &str) -> Result<(), SandboxError> {
    std::fs::write(path, text).map_err(|source| SandboxError::File { path: path.to_path_buf(), source })
}

/// Writes a file only its owner can read: it holds a client secret.
fn write_private_file(path: &Path, text: &str) -> Result<(), SandboxError> {
    write_file(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| SandboxError::File { path: path.to_path_buf(), source })?;
    }
    Ok(())
}
