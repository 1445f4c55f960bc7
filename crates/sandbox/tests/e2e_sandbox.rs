//! End-to-end: start `azml-operator sandbox` as a user would and drive it only with the real `kubectl` and the
//! sandbox's own `azure` helpers (HTTPS calls to the simulator).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/sandbox_cli.rs"]
mod sandbox_cli;

use sandbox_cli::BIN;

const WORKSPACE_ID: &str = "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg-risk-ml/providers/Microsoft.MachineLearningServices/workspaces/fraud-ws";

/// A running sandbox process plus an isolated kubectl home.
struct Sandbox {
    child: Child,
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn start(dir: tempfile::TempDir) -> Self {
        let mut child = Command::new(BIN)
            .args(["sandbox", "--lro-duration", "200ms", "--resync-period", "2s"])
            .arg("--kubeconfig")
            .arg(dir.path().join("kubeconfig"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("AZML_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the sandbox: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        sandbox_cli::wait_ready(stdout, Some(Duration::from_secs(60))).unwrap_or_else(|e| panic!("{e}"));
        Sandbox { child, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        sandbox_cli::kubectl(self.dir.path(), args)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        sandbox_cli::kubectl_ok(self.dir.path(), args)
    }

    /// `azml-operator sandbox azure ...` against this sandbox.
    fn azure(&self, args: &[&str]) -> String {
        sandbox_cli::azure_ok(self.dir.path(), args)
    }

    /// Calls per ARM operation since the simulator started.
    fn calls(&self, operation: &str) -> u64 {
        sandbox_cli::calls(self.dir.path(), operation)
    }

    /// Stops the sandbox the way Ctrl-C or `kill` does, and waits for it to save its state and exit.
    fn stop(mut self) -> tempfile::TempDir {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "the sandbox exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "the sandbox did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn example() -> String {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("examples/mlworkspace.yaml").display().to_string()
}

#[test]
fn walkthrough_with_kubectl() {
    let sandbox = Sandbox::start(tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")));

    // The generated settings for Azure tools point at the simulator and trust its CA.
    let env = std::fs::read_to_string(sandbox.path("state/azure.env")).unwrap_or_default();
    for key in [
        "AZURE_TENANT_ID=",
        "AZURE_CLIENT_SECRET=",
        "AZURE_AUTHORITY_HOST=https://127.0.0.1:",
        "SSL_CERT_FILE=",
        "AZML_SANDBOX_PRINCIPALS=risk-data-scientists=",
    ] {
        assert!(env.contains(key), "azure.env lacks {key}");
    }

    // kubectl explain documents the API.
    let explain = sandbox.kubectl_ok(&["explain", "mlworkspace.spec.access"]);
    assert!(explain.contains("complete desired set of role assignments"), "{explain}");

    // An invalid spec is rejected at admission with a readable message.
    let bad = sandbox.path("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(example()).unwrap_or_default().replace("location: westeurope", "location: West Europe"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = sandbox.kubectl(&["apply", "-f", bad.to_str().unwrap_or_default()]);
    assert!(!ok);
    assert!(stderr.contains("spec.location") && stderr.contains("should match"), "{stderr}");

    // Apply the example and wait for Ready.
    sandbox.kubectl_ok(&["apply", "-f", &example()]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=60s"]);
    let table = sandbox.kubectl_ok(&["get", "mlws"]);
    assert!(table.contains("fraud-detection") && table.contains("rg-risk-ml") && table.contains("True"), "{table}");
    let resource_id = sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.status.resourceId}"]);
    assert_eq!(resource_id, WORKSPACE_ID);
    assert_eq!(sandbox.calls("Workspaces_CreateOrUpdate"), 1);

    // Invite alice as Reader, then take it back: exactly one assignment created, then deleted.
    let granted = |sandbox: &Sandbox| -> usize {
        let access = sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.status.access}"]);
        let entries: Vec<Value> = serde_json::from_str(&access).unwrap_or_default();
        entries.iter().filter(|e| e["state"] == "Granted").count()
    };
    eventually("the example's two grants", Duration::from_secs(30), || granted(&sandbox) == 2);
    sandbox.kubectl_ok(&[
        "patch",
        "mlws",
        "fraud-detection",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/spec/access/-","value":{"principalId":"a11ce000-0000-4000-8000-000000000001","principalType":"User","role":"Reader"}}]"#,
    ]);
    eventually("alice's grant", Duration::from_secs(30), || granted(&sandbox) == 3);
    assert_eq!(sandbox.calls("RoleAssignments_Create"), 3);
    sandbox.kubectl_ok(&[
        "patch",
        "mlws",
        "fraud-detection",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/access/2"}]"#,
    ]);
    eventually("alice's grant to be revoked", Duration::from_secs(30), || sandbox.calls("RoleAssignments_Delete") == 1);
    eventually("status to drop alice", Duration::from_secs(30), || granted(&sandbox) == 2);

    // Rotate the storage account's key behind the operator's back: the workspace is resynced and reports the facts.
    let keys_in_sync = |sandbox: &Sandbox| {
        sandbox.kubectl_ok(&[
            "get",
            "mlws",
            "fraud-detection",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="StorageKeysInSync")].status}"#,
        ]) == "True"
    };
    eventually("the keys to be reported in sync", Duration::from_secs(30), || keys_in_sync(&sandbox));
    // The example's azml.dev/resync-keys annotation asked for one resync at creation already.
    let resyncs_before = sandbox.calls("Workspaces_ResyncKeys");
    assert_eq!(resyncs_before, 1, "the example's annotation requests exactly one resync");
    sandbox.azure(&["regenerate-key", "--account", "riskmlsa", "--key", "key1"]);
    eventually("the workspace to be resynced", Duration::from_secs(60), || {
        sandbox.calls("Workspaces_ResyncKeys") > resyncs_before
    });
    eventually("the resync to be reported", Duration::from_secs(30), || {
        sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.status.storageKeys.lastResyncReason}"])
            == "Drift"
            && keys_in_sync(&sandbox)
    });
    assert!(sandbox.kubectl_ok(&["get", "events"]).contains("KeysResynced"));
    assert_eq!(sandbox.calls("Workspaces_ResyncKeys"), resyncs_before + 1, "one regeneration, one resync");

    // Someone edits the workspace in the portal: the operator puts the spec back with one PATCH and says so.
    sandbox.azure(&[
        "edit",
        "--id",
        WORKSPACE_ID,
        "--patch",
        r#"{"properties":{"description":"edited in the portal"}}"#,
    ]);
    eventually("the drift to be corrected", Duration::from_secs(30), || sandbox.calls("Workspaces_Update") >= 1);
    eventually("a DriftCorrected event", Duration::from_secs(10), || {
        sandbox.kubectl_ok(&["get", "events"]).contains("DriftCorrected")
    });
    assert_eq!(sandbox.calls("Workspaces_Update"), 1, "more than one PATCH for one drift");

    // Deleting with the default Retain policy leaves Azure as is.
    sandbox.kubectl_ok(&["delete", "mlworkspace", "fraud-detection", "--timeout=60s"]);
    assert_eq!(sandbox.calls("Workspaces_Delete"), 0);

    // Re-applying takes the workspace back (same namespace/name); with deletionPolicy Delete, deleting deletes it.
    sandbox.kubectl_ok(&["apply", "-f", &example()]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=60s"]);

    // Moving it to another resource group: validated, moved with its named dependencies, found at its new id.
    sandbox.kubectl_ok(&[
        "patch",
        "mlworkspace",
        "fraud-detection",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"resourceGroup":"rg-risk-ml-2"}}"#,
    ]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Moved", "mlworkspace/fraud-detection", "--timeout=60s"]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=60s"]);
    let moved_id = sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.status.resourceId}"]);
    assert!(moved_id.contains("/resourceGroups/rg-risk-ml-2/"), "{moved_id}");
    assert_eq!(sandbox.calls("Resources_ValidateMoveResources"), 1);
    assert_eq!(sandbox.calls("Resources_MoveResources"), 1);
    assert!(sandbox.kubectl_ok(&["get", "events"]).contains("MoveStarted"));

    sandbox.kubectl_ok(&[
        "patch",
        "mlworkspace",
        "fraud-detection",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"deletionPolicy":"Delete"}}"#,
    ]);
    sandbox.kubectl_ok(&["delete", "mlworkspace", "fraud-detection", "--timeout=60s"]);
    assert!(sandbox.calls("Workspaces_Delete") >= 1);
    assert_eq!(sandbox.calls("Workspaces_CreateOrUpdate"), 1, "the workspace was created twice");
}

#[test]
fn restart_continues_from_the_saved_state() {
    let sandbox = Sandbox::start(tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")));
    sandbox.kubectl_ok(&["apply", "-f", &example()]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=60s"]);
    let uid = sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.metadata.uid}"]);
    let dir = sandbox.stop();

    let sandbox = Sandbox::start(dir);
    let again = sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(uid, again, "the workspace resource did not survive the restart");
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=60s"]);
    // The restarted operator finds the workspace in the restored Azure: no second create.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sandbox.calls("Workspaces_CreateOrUpdate"), 0, "the workspace was created again after the restart");
    assert!(sandbox.calls("Workspaces_Get") >= 1);
}

/// The compute walkthrough of the README: a cluster and an instance from examples/mlcompute.yaml, a scale change, the
/// instance stopped and started by annotation, then both deleted; only kubectl and the sandbox's helpers.
#[test]
fn compute_walkthrough_with_kubectl() {
    let sandbox = Sandbox::start(tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")));
    let computes =
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("examples/mlcompute.yaml").display().to_string();

    let explain = sandbox.kubectl_ok(&["explain", "mlcompute.spec.amlCompute.scale.maxNodes"]);
    assert!(explain.contains("maxNodesPerCluster"), "{explain}");
    let explain = sandbox.kubectl_ok(&["explain", "mlcompute.spec.computeInstance.schedules"]);
    assert!(explain.contains("cron"), "{explain}");

    sandbox.kubectl_ok(&["apply", "-f", &example()]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=60s"]);
    sandbox.kubectl_ok(&["apply", "-f", &computes]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlcompute/cpu-cluster", "--timeout=60s"]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlcompute/alice-notebook", "--timeout=60s"]);
    let table = sandbox.kubectl_ok(&["get", "mlc"]);
    assert!(table.contains("AmlCompute") && table.contains("ComputeInstance") && table.contains("Running"), "{table}");
    assert_eq!(sandbox.calls("Compute_CreateOrUpdate"), 2);
    let field = |name: &str, path: &str| sandbox.kubectl_ok(&["get", "mlc", name, "-o", &format!("jsonpath={path}")]);

    // Scale change: the cluster keeps one node warm.
    sandbox.kubectl_ok(&[
        "patch",
        "mlcompute",
        "cpu-cluster",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"amlCompute":{"scale":{"minNodes":1}}}}"#,
    ]);
    eventually("one node", Duration::from_secs(30), || field("cpu-cluster", "{.status.currentNodeCount}") == "1");
    assert_eq!(sandbox.calls("Compute_Update"), 1);

    // Stop the instance, then start it: one call each.
    sandbox.kubectl_ok(&["annotate", "--overwrite", "mlcompute", "alice-notebook", "azml.dev/compute-action=stop:1"]);
    eventually("the instance to stop", Duration::from_secs(30), || {
        field("alice-notebook", "{.status.state}") == "Stopped"
    });
    sandbox.kubectl_ok(&["annotate", "--overwrite", "mlcompute", "alice-notebook", "azml.dev/compute-action=start:2"]);
    eventually("the instance to run", Duration::from_secs(30), || {
        field("alice-notebook", "{.status.state}") == "Running"
    });
    assert_eq!((sandbox.calls("Compute_Stop"), sandbox.calls("Compute_Start")), (1, 1));
    assert!(sandbox.kubectl_ok(&["get", "events"]).contains("InstanceAction"));

    // Delete both (deletionPolicy Delete): gone in Azure too.
    sandbox.kubectl_ok(&["delete", "-f", &computes, "--timeout=60s"]);
    assert_eq!(sandbox.calls("Compute_Delete"), 2);
    assert_eq!(sandbox.kubectl_ok(&["get", "mlc", "-o", "name"]).trim(), "");
}

/// The connection and exports walkthrough of the README: the example workspace's exports read as an application
/// would (ConfigMap and Secret), the example connections (a Git PAT from a Secret, Azure OpenAI with AAD), the PAT
/// rotated by editing the Secret (sent again once), then deleted; only kubectl and the sandbox's helpers.
#[test]
fn connection_and_exports_walkthrough_with_kubectl() {
    let sandbox = Sandbox::start(tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")));
    let connections = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join("examples/mlconnection.yaml")
        .display()
        .to_string();

    let explain = sandbox.kubectl_ok(&["explain", "mlconnection.spec.credentialsFrom"]);
    assert!(explain.contains("pat") && explain.contains("clientSecret"), "{explain}");
    let explain = sandbox.kubectl_ok(&["explain", "mlworkspace.spec.exports.configMap"]);
    assert!(explain.contains("mlflowTrackingUri") && explain.contains("ConfigMapNotOwned"), "{explain}");
    let explain = sandbox.kubectl_ok(&["explain", "mlworkspace.spec.exports.secret.items"]);
    assert!(explain.contains("userStorageKey"), "{explain}");

    sandbox.kubectl_ok(&["apply", "-f", &example()]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=60s"]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Exported", "mlworkspace/fraud-detection", "--timeout=60s"]);
    let facts = |key: &str| {
        sandbox.kubectl_ok(&["get", "configmap", "fraud-detection-ml", "-o", &format!("jsonpath={{.data.{key}}}")])
    };
    assert_eq!(facts("resourceId"), WORKSPACE_ID);
    assert_eq!(facts("resourceGroup"), "rg-risk-ml");
    assert!(!facts("workspaceId").is_empty() && facts("mlflowTrackingUri").starts_with("azureml://"));
    let key =
        sandbox.kubectl_ok(&["get", "secret", "fraud-detection-ml-keys", "-o", "jsonpath={.data.userStorageKey}"]);
    assert!(!key.is_empty(), "the storage key is exported");

    sandbox.kubectl_ok(&["apply", "-f", &connections]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlconnection/fraud-git", "--timeout=60s"]);
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlconnection/fraud-openai", "--timeout=60s"]);
    let table = sandbox.kubectl_ok(&["get", "mlconn"]);
    assert!(table.contains("Git") && table.contains("AzureOpenAI") && table.contains("PAT"), "{table}");
    assert_eq!(sandbox.calls("WorkspaceConnections_Create"), 2);
    let hash = |name: &str| sandbox.kubectl_ok(&["get", "mlconn", name, "-o", "jsonpath={.status.credentialsHash}"]);
    let before = hash("fraud-git");
    assert_eq!(before.len(), 64);

    // Rotate the PAT: the connection is sent again once.
    sandbox.kubectl_ok(&[
        "patch",
        "secret",
        "fraud-git-pat",
        "--type",
        "merge",
        "-p",
        r#"{"stringData":{"pat":"ghp_sandboxRotatedToken111111111111111111"}}"#,
    ]);
    eventually("the rotated PAT to be sent", Duration::from_secs(30), || hash("fraud-git") != before);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(sandbox.calls("WorkspaceConnections_Create"), 3, "one PUT per Secret change");
    assert!(sandbox.kubectl_ok(&["get", "events"]).contains("CredentialsUpdated"));

    // Delete: fraud-git (deletionPolicy Delete) goes in Azure, fraud-openai (Retain) stays.
    sandbox.kubectl_ok(&["delete", "-f", &connections, "--timeout=60s"]);
    assert_eq!(sandbox.calls("WorkspaceConnections_Delete"), 1);
    assert_eq!(sandbox.kubectl_ok(&["get", "mlconn", "-o", "name"]).trim(), "");
}
