//! Command-line interface: every setting is parsed here, once, at start (flags, with environment fallbacks).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// azml-operator: manage Azure Machine Learning workspaces, their storage keys, role assignments and web services
/// as Kubernetes resources.
#[derive(Parser, Debug)]
#[command(name = "azml-operator", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster of the current kubeconfig (or the in-cluster service account).
    ///
    /// Reconciles every MlWorkspace (of the watched namespaces) with Azure until SIGTERM or Ctrl-C, and serves
    /// /healthz and /readyz.
    Run(Box<RunArgs>),
    /// Print the actions the controller would take for a workspace, without taking them.
    ///
    /// Reads the SubscriptionBindings and Azure exactly as the controller does (same policy, observe and plan code),
    /// then prints the plan. Nothing is written to Azure or Kubernetes.
    Plan(Box<PlanArgs>),
    /// Print every CustomResourceDefinition of the operator as a multi-document YAML stream.
    Crd,
}

/// Log output.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format: text for people, json for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "AZML_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `azml_operator=debug,kube=info`.
    #[arg(long, global = true, default_value = "info", env = "AZML_LOG")]
    pub log_filter: String,
}

/// Log format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How the operator reaches Azure; shared by `run` and `plan`.
#[derive(Args, Debug, Clone)]
pub struct AzureArgs {
    /// Azure Resource Manager endpoint (change it for sovereign clouds).
    #[arg(long, default_value = "https://management.azure.com", env = "AZURE_RESOURCE_MANAGER_ENDPOINT")]
    pub arm_endpoint: url::Url,

    /// Entra ID authority host that issues tokens (change it for sovereign clouds).
    #[arg(long, default_value = "https://login.microsoftonline.com", env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: url::Url,

    /// Extra PEM file of root certificates to trust for ARM and the authority host (e.g. a corporate proxy's CA).
    #[arg(long, env = "AZML_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,

    /// Namespace the operator runs in: the only namespace it reads credential Secrets from.
    #[arg(long, default_value = "azml-system", env = "POD_NAMESPACE")]
    pub operator_namespace: String,

    /// Projected service account token exchanged for Entra ID tokens by workload-identity bindings.
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub federated_token_file: Option<PathBuf>,
}

/// Settings of the controller.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub azure: AzureArgs,

    /// How often an unchanged workspace is compared with Azure (one GET per workspace per period).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "AZML_RESYNC_PERIOD")]
    pub resync_period: Duration,

    /// How many workspaces are reconciled at the same time (the same workspace is never reconciled twice at once).
    /// Reconciles mostly wait for ARM (tens to hundreds of milliseconds per call), so this bounds how fast a wave
    /// (a storage key regenerated under a thousand workspaces, a restart) is worked through; ARM's own limits are
    /// kept by the client-side limiter, not by this.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..), env = "AZML_CONCURRENCY")]
    pub concurrency: u16,

    /// Shortest delay between two polls of a long-running Azure operation.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "AZML_LRO_POLL_MIN")]
    pub lro_poll_min: Duration,

    /// Longest delay the operator chooses by itself while it waits on Azure. A `Retry-After` Azure sends (up to 10
    /// minutes) is always honoured in full: the operator never polls an operation before Azure asked it to.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "AZML_LRO_POLL_MAX")]
    pub lro_poll_max: Duration,

    /// How long a long-running Azure operation is polled before the controller stops waiting for it and reads
    /// the resource afresh (the write is never sent again because of this).
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration, env = "AZML_LRO_TIMEOUT")]
    pub lro_timeout: Duration,

    /// How long a role assignment whose principal Azure does not know yet (PrincipalNotFound, e.g. a service
    /// principal created moments ago) is retried before it is reported Failed.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, env = "AZML_PRINCIPAL_WAIT")]
    pub principal_wait: Duration,

    /// How often the storage-key watcher queries each subscription's activity log for key regenerations (one
    /// query per subscription per interval).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "AZML_KEY_SIGNAL_INTERVAL")]
    pub key_signal_interval: Duration,

    /// Address of the health and metrics endpoints: /healthz (process alive), /readyz (connected to the API server,
    /// CRDs checked; leader or standby) and /metrics (Prometheus).
    #[arg(long, default_value = "0.0.0.0:8080", env = "AZML_HEALTH_ADDR")]
    pub health_addr: std::net::SocketAddr,

    /// Namespaces to watch (repeat the flag or separate with commas); none means all namespaces.
    #[arg(long = "watch-namespace", value_delimiter = ',', env = "AZML_WATCH_NAMESPACES")]
    pub watch_namespaces: Vec<String>,

    #[command(flatten)]
    pub leader: LeaderArgs,

    /// On SIGTERM, how long in-flight reconciles may finish before they are dropped (they resume from status);
    /// keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, env = "AZML_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Duration,
}

/// Leader election, for running several replicas.
#[derive(Args, Debug, Clone)]
pub struct LeaderArgs {
    /// Elect a leader on a coordination.k8s.io Lease: only the leader reconciles (needed with more than one replica).
    #[arg(long, env = "AZML_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader-election Lease (in the operator namespace).
    #[arg(long, default_value = "azml-operator", env = "AZML_LEADER_ELECTION_LEASE")]
    pub leader_election_lease: String,

    /// How long the lease stays valid after its last renewal: the longest fail-over after a leader crash (whole seconds).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, env = "AZML_LEADER_ELECTION_LEASE_DURATION")]
    pub leader_election_lease_duration: Duration,

    /// How long before expiry the leader renews the lease (whole seconds, less than the lease duration).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "AZML_LEADER_ELECTION_RENEW_MARGIN")]
    pub leader_election_renew_margin: Duration,

    /// This replica's identity in the lease (default: POD_NAME, else the host name).
    #[arg(long, env = "AZML_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,
}

/// Which workspace to plan, and how to print the plan.
#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    #[command(flatten)]
    pub azure: AzureArgs,

    /// A YAML (or JSON) file holding one MlWorkspace, MlOnlineEndpoint or MlCompute (its `kind` decides); `-` reads
    /// standard input.
    #[arg(short = 'f', long = "filename", conflicts_with = "name", required_unless_present = "name")]
    pub file: Option<PathBuf>,

    /// Name of a live object to plan (instead of a file); `--kind` says which kind.
    #[arg(long)]
    pub name: Option<String>,

    /// Kind of the live object named by `--name`.
    #[arg(long, value_enum, default_value_t = PlanKind::MlWorkspace)]
    pub kind: PlanKind,

    /// Namespace of the workspace (default: the file's metadata.namespace, else "default").
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = PlanOutput::Text)]
    pub output: PlanOutput,
}

/// Kinds `plan` covers: every namespaced kind of the operator (a unit test checks it against the CRDs).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    #[value(name = "MlWorkspace", alias = "mlworkspace")]
    MlWorkspace,
    #[value(name = "MlOnlineEndpoint", alias = "mlonlineendpoint")]
    MlOnlineEndpoint,
    #[value(name = "MlCompute", alias = "mlcompute")]
    MlCompute,
    #[value(name = "MlConnection", alias = "mlconnection")]
    MlConnection,
}

impl PlanKind {
    /// The kind a manifest's `kind` names, if `plan` covers it.
    pub fn from_kind(kind: &str) -> Option<PlanKind> {
        PlanKind::from_str(kind, false).ok()
    }
}

/// Output format of `plan`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanOutput {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let cli = Cli::try_parse_from(["azml-operator", "run"]).expect("parses");
        let Command::Run(args) = cli.command else { panic!("expected run") };
        assert_eq!(args.resync_period, Duration::from_secs(3600));
        assert_eq!(args.concurrency, 32);
        assert_eq!(args.azure.arm_endpoint.as_str(), "https://management.azure.com/");
        assert_eq!(args.lro_poll_min, Duration::from_secs(5));
        assert!(args.watch_namespaces.is_empty());
        assert!(!args.leader.leader_elect);
        assert_eq!(args.leader.leader_election_lease_duration, Duration::from_secs(15));
        assert_eq!(args.shutdown_timeout, Duration::from_secs(20));
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "azml-operator",
            "--log-format",
            "json",
            "run",
            "--resync-period",
            "90s",
            "--watch-namespace",
            "a,b",
            "--watch-namespace",
            "c",
        ])
        .expect("parses");
        assert_eq!(cli.log.log_format, LogFormat::Json);
        let Command::Run(args) = cli.command else { panic!("expected run") };
        assert_eq!(args.resync_period, Duration::from_secs(90));
        assert_eq!(args.watch_namespaces, ["a", "b", "c"]);
    }

    #[test]
    fn plan_covers_every_namespaced_kind_of_the_operator() {
        let crds = crate::api::all_crds();
        let namespaced: Vec<String> =
            crds.iter().filter(|c| c.spec.scope == "Namespaced").map(|c| c.spec.names.kind.clone()).collect();
        assert!(namespaced.len() >= 3, "{namespaced:?}");
        for kind in &namespaced {
            assert!(PlanKind::from_kind(kind).is_some(), "`azml-operator plan` does not cover {kind}");
        }
        assert_eq!(PlanKind::from_kind("SubscriptionBinding"), None, "cluster-scoped: nothing to plan");
        assert_eq!(PlanKind::value_variants().len(), namespaced.len(), "a kind plan covers has no CRD");
    }

    #[test]
    fn plan_takes_a_file_or_a_name() {
        let cli = Cli::try_parse_from(["azml-operator", "plan", "-f", "ws.yaml", "-o", "json"]).expect("parses");
        let Command::Plan(args) = cli.command else { panic!("expected plan") };
        assert_eq!(args.file.as_deref(), Some(std::path::Path::new("ws.yaml")));
        assert_eq!(args.output, PlanOutput::Json);
        let cli = Cli::try_parse_from(["azml-operator", "plan", "--name", "ws", "-n", "team"]).expect("parses");
        let Command::Plan(args) = cli.command else { panic!("expected plan") };
        assert_eq!((args.name.as_deref(), args.namespace.as_deref()), (Some("ws"), Some("team")));
        assert!(Cli::try_parse_from(["azml-operator", "plan"]).is_err(), "needs -f or --name");
        assert!(Cli::try_parse_from(["azml-operator", "plan", "-f", "x", "--name", "y"]).is_err());
    }

    #[test]
    fn zero_concurrency_is_rejected() {
        assert!(Cli::try_parse_from(["azml-operator", "run", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn bad_duration_is_a_clear_error() {
        let err = Cli::try_parse_from(["azml-operator", "run", "--resync-period", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--resync-period"), "{err}");
    }
}
