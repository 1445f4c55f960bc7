//! The official Kubernetes Python client (`kubernetes` on PyPI, pinned in .ci/run) against the Kubernetes API
//! emulator: tests/sdk/kube_client.py. Skipped, with a notice, when `$AZML_SDK_PYTHON` (default `python3`) cannot
//! import it.

use std::path::Path;
use std::time::Duration;

use azml_kube_emulator::{KubeApiServer, ServerOptions};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

#[tokio::test]
async fn official_python_client_against_the_emulator() {
    let python = std::env::var("AZML_SDK_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = tokio::process::Command::new(&python).args(["-c", "import kubernetes, yaml"]).output().await;
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED official_python_client_against_the_emulator: {python} cannot import kubernetes \
             (pip install kubernetes==33.1.0, or set AZML_SDK_PYTHON)"
        );
        return;
    }
    let opts = ServerOptions { bookmark_interval: Duration::from_millis(300), ..ServerOptions::default() };
    let server = KubeApiServer::start(opts).await.unwrap_or_else(|e| panic!("start: {e}"));
    let client = server.client().unwrap_or_else(|e| panic!("{e}"));
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let text = std::fs::read_to_string(root.join("crds/azml.dev.yaml")).unwrap_or_else(|e| panic!("{e}"));
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("CRD: {e}"));
        crds.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("create CRD: {e}"));
    }
    let run = tokio::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/kube_client.py"))
        .env("KUBE_URL", server.url())
        .env("WORKSPACE_YAML", root.join("examples/mlworkspace.yaml"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("the Python client script timed out"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Python client script failed ({}):\n{stdout}\n{stderr}", out.status);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(summary["pages"], 3, "{summary}");
    assert_eq!(summary["apply_conflict"], 409, "{summary}");
    assert_eq!(summary["generation"], 2, "{summary}");
    assert_eq!(summary["watch"], serde_json::json!(["ADDED", "BOOKMARK"]), "{summary}");
    assert_eq!(summary["watch_workspace"], serde_json::json!(["BOOKMARK", "MODIFIED"]), "{summary}");
    assert_eq!(summary["apply_conflict_workspace"], 409, "{summary}");
    assert_eq!(summary["foreground"], "released", "{summary}");
}
