//! `azml-operator run`.
//!
//! Until the controller issue lands this only proves connectivity: it serves health endpoints, checks that the CRDs
//! are installed and waits for a termination signal.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::cli::RunArgs;

/// Errors of the `run` command.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster configuration was found.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server could not be reached or refused a request.
    #[error("Kubernetes API request failed: {0}")]
    Api(#[source] kube::Error),
    /// The health endpoint could not listen.
    #[error("cannot serve health endpoints on {addr}: {source}")]
    Health {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the termination signal failed.
    #[error("cannot listen for termination signals: {0}")]
    Signal(#[source] std::io::Error),
}

/// Serves health, connects, checks the CRDs and waits for Ctrl-C / SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.health_addr)
        .await
        .map_err(|source| RunError::Health { addr: args.health_addr, source })?;
    tokio::spawn(serve_health(listener, ready.clone()));

    let client = Client::try_default().await.map_err(RunError::Client)?;
    let version = client.apiserver_version().await.map_err(RunError::Api)?;
    info!(server = %version.git_version, "connected to the Kubernetes API server");
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for expected in crate::api::all_crds() {
        let name = expected.name_any();
        match crds.get_opt(&name).await.map_err(RunError::Api)? {
            Some(_) => info!(crd = %name, "CRD installed"),
            None => warn!(crd = %name, "CRD missing: install it with `azml-operator crd | kubectl apply -f -`"),
        }
    }
    ready.store(true, Ordering::Release);
    info!(
        resync_period = ?args.resync_period,
        concurrency = args.concurrency,
        arm_endpoint = %args.arm_endpoint,
        watch_namespaces = ?args.watch_namespaces,
        "the MlWorkspace controller is not implemented in this build; waiting for a termination signal"
    );
    shutdown_signal().await.map_err(RunError::Signal)?;
    info!("shutting down");
    Ok(())
}

async fn serve_health(listener: tokio::net::TcpListener, ready: Arc<AtomicBool>) {
    let app = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).with_state(ready);
    if let Err(err) = axum::serve(listener, app).await {
        warn!(error = %err, "health endpoint stopped");
    }
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::Acquire) { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "starting") }
}

/// Ctrl-C, or SIGTERM (what Kubernetes sends on pod deletion).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
