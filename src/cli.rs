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
    /// Not yet reconciling: this build connects to the API server, checks that the CRDs are installed, logs what it
    /// would watch and waits for a termination signal. The MlWorkspace reconcile lands with the controller issue.
    Run(Box<RunArgs>),
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

/// Settings of the controller.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// How often an unchanged workspace is compared with Azure (one GET per workspace per period).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, env = "AZML_RESYNC_PERIOD")]
    pub resync_period: Duration,

    /// How many workspaces are reconciled at the same time (the same workspace is never reconciled twice at once).
    #[arg(long, default_value_t = 8, env = "AZML_CONCURRENCY")]
    pub concurrency: u16,

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

    /// Address of the health endpoints: /healthz (process alive) and /readyz (connected to the API server).
    #[arg(long, default_value = "0.0.0.0:8080", env = "AZML_HEALTH_ADDR")]
    pub health_addr: std::net::SocketAddr,

    /// Namespaces to watch (repeat the flag or separate with commas); none means all namespaces.
    #[arg(long = "watch-namespace", value_delimiter = ',', env = "AZML_WATCH_NAMESPACES")]
    pub watch_namespaces: Vec<String>,
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
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.arm_endpoint.as_str(), "https://management.azure.com/");
        assert!(args.watch_namespaces.is_empty());
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
    fn bad_duration_is_a_clear_error() {
        let err = Cli::try_parse_from(["azml-operator", "run", "--resync-period", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--resync-period"), "{err}");
    }
}
