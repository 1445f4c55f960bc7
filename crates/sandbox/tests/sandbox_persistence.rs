//! The sandbox survives a crash: `azml-operator sandbox` is started as a child process, used with the real
//! `kubectl`, killed with SIGKILL and started again on the same state dir. Every wait is on a condition (state saved,
//! process ready, condition reached), never on the clock.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/sandbox_cli.rs"]
mod sandbox_cli;

use sandbox_cli::BIN;

const WORKSPACE_ID: &str = "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/rg-risk-ml/providers/Microsoft.MachineLearningServices/workspaces/fraud-ws";

/// A running sandbox process. Its state dir and kubeconfig live in `dir`, which outlives the process.
struct Sandbox {
    child: Child,
    dir: PathBuf,
}

/// Starts the sandbox; `Err(stderr)` when it exits before printing `sandbox ready`.
fn start(dir: &Path, extra: &[&str]) -> Result<Sandbox, String> {
    let mut child = Command::new(BIN)
        .args(["sandbox", "--resync-period", "2s"])
        .args(extra)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("AZML_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the sandbox: {e}"));
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let sink = stderr.clone();
    // Drain stderr (so the sandbox never blocks on a full pipe) and keep it for the failure message.
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    if sandbox_cli::wait_ready(stdout, None).is_err() {
        let _ = child.wait();
        let _ = drain.join();
        return Err(stderr.lock().map(|s| s.clone()).unwrap_or_default());
    }
    Ok(Sandbox { child, dir: dir.to_path_buf() })
}

impl Sandbox {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        sandbox_cli::kubectl_ok(&self.dir, args)
    }

    /// `azml-operator sandbox azure ...`: (success, stdout, stderr).
    fn azure(&self, args: &[&str]) -> (bool, String, String) {
        sandbox_cli::azure(&self.dir, args)
    }

    /// Calls per ARM operation since this process started.
    fn calls(&self, operation: &str) -> u64 {
        sandbox_cli::calls(&self.dir, operation)
    }

    /// The server URL of the kubeconfig and the ARM endpoint of sandbox.json.
    fn endpoints(&self) -> (String, String) {
        let kubeconfig = std::fs::read_to_string(self.path("kubeconfig")).unwrap_or_default();
        let kube = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap_or_else(|| panic!("no server in the kubeconfig: {kubeconfig}"))
            .to_string();
        let info = read_json(&self.path("state/sandbox.json"));
        (kube, info["armEndpoint"].as_str().unwrap_or_default().to_string())
    }

    /// SIGKILL: no signal handler runs, nothing is flushed on the way out.
    fn kill_9(mut self) {
        self.child.kill().unwrap_or_else(|e| panic!("kill: {e}"));
        let status = self.child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
        assert!(!status.success(), "the sandbox was not killed: {status}");
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
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_json(path: &Path) -> Value {
    // Files are replaced atomically: whatever is read is a complete document.
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not a complete JSON document: {e}", path.display()))
}

/// The saved Kubernetes object of `plural`/`name`, if the state file holds it.
fn saved_object(state: &Path, plural: &str, name: &str) -> Option<Value> {
    let path = state.join("kube-state.json");
    if !path.exists() {
        return None;
    }
    let snapshot = read_json(&path);
    snapshot["objects"]
        .as_array()?
        .iter()
        .find_map(|e| (e["plural"] == plural && e["object"]["metadata"]["name"] == name).then(|| e["object"].clone()))
}

/// The saved simulated Azure (null until the first save).
fn saved_azure(state: &Path) -> Value {
    let path = state.join("azure-state.json");
    if path.exists() { read_json(&path) } else { Value::Null }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn example() -> String {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("examples/mlworkspace.yaml").display().to_string()
}

#[test]
fn kill_9_and_restart_keep_objects_azure_resources_ports_and_pending_operations() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path();
    let state = dir.join("state");
    // Simulated operations take long enough that the create is still running when the sandbox is killed.
    let lro = ["--lro-duration", "12s"];
    let sandbox = start(dir, &lro).unwrap_or_else(|e| panic!("the sandbox did not start: {e}"));
    let (kube_url, arm_endpoint) = sandbox.endpoints();
    let ca = std::fs::read_to_string(state.join("ca.pem")).unwrap_or_default();

    sandbox.kubectl_ok(&["create", "configmap", "settings", "--from-literal=colour=blue"]);
    sandbox.kubectl_ok(&["create", "secret", "generic", "db", "--from-literal=password=hunter2"]);
    sandbox.kubectl_ok(&["apply", "-f", &example()]);
    let uid = sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.metadata.uid}"]);
    eventually("the create operation to be recorded in status", Duration::from_secs(60), || {
        sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.status.pendingOperation.kind}"])
            == "CreateWorkspace"
    });
    // Wait for the state to be on disk: the objects, the pending operation in status and, in Azure, the workspace
    // with its operation still running.
    eventually("the state to be saved", Duration::from_secs(30), || {
        let ws = saved_object(&state, "mlworkspaces", "fraud-detection");
        let azure = saved_azure(&state);
        let running = azure["operations"].as_object().is_some_and(|ops| {
            ops.values().any(|op| {
                op["status"] == "InProgress"
                    && op["resourceId"].as_str().is_some_and(|id| id.eq_ignore_ascii_case(WORKSPACE_ID))
            })
        });
        saved_object(&state, "configmaps", "settings").is_some()
            && saved_object(&state, "secrets", "db").is_some()
            && ws.is_some_and(|ws| ws["status"]["pendingOperation"]["kind"] == "CreateWorkspace")
            && azure["resources"].as_object().is_some_and(|r| r.contains_key(&WORKSPACE_ID.to_ascii_lowercase()))
            && running
    });
    sandbox.kill_9();

    let sandbox = start(dir, &lro).unwrap_or_else(|e| panic!("the sandbox did not restart: {e}"));
    assert_eq!(sandbox.endpoints(), (kube_url, arm_endpoint), "a restart keeps its ports");
    assert_eq!(std::fs::read_to_string(state.join("ca.pem")).unwrap_or_default(), ca, "a restart keeps its CA");

    // Every Kubernetes object is back.
    assert_eq!(sandbox.kubectl_ok(&["get", "configmap", "settings", "-o", "jsonpath={.data.colour}"]), "blue");
    assert_eq!(sandbox.kubectl_ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]), "aHVudGVyMg==");
    assert_eq!(sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.metadata.uid}"]), uid);
    // The Azure resource is back: the simulator knows it.
    let (found, body, err) = sandbox.azure(&["edit", "--id", WORKSPACE_ID, "--patch", "{}"]);
    assert!(found, "the workspace is gone from the simulated Azure: {err}");
    assert!(body.contains("fraud-ws"), "{body}");

    // The restarted operator polls the saved operation to its end instead of creating the workspace again.
    sandbox.kubectl_ok(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=90s"]);
    assert!(
        sandbox.calls("Operations_GetStatus") + sandbox.calls("Operations_GetResult") >= 1,
        "the saved operation was not polled"
    );
    assert_eq!(sandbox.calls("Workspaces_CreateOrUpdate"), 0, "the workspace was created again");
    assert_eq!(
        sandbox.kubectl_ok(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.status.pendingOperation}"]),
        ""
    );

    // Files holding secrets are private.
    #[cfg(unix)]
    for name in ["kube-state.json", "azure-state.json", "azure.env", "ca-key.pem"] {
        assert_eq!(mode(&state.join(name)), 0o600, "{name} must be readable by its owner only");
    }
    #[cfg(unix)]
    assert_eq!(mode(&state) & 0o077, 0, "the state dir must be private");
}

#[test]
fn a_saved_port_in_use_is_reported_and_can_be_overridden() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path();
    let sandbox = start(dir, &[]).unwrap_or_else(|e| panic!("the sandbox did not start: {e}"));
    sandbox.kubectl_ok(&["create", "configmap", "kept", "--from-literal=a=b"]);
    eventually("the config map to be saved", Duration::from_secs(30), || {
        saved_object(&dir.join("state"), "configmaps", "kept").is_some()
    });
    let (kube_url, _) = sandbox.endpoints();
    sandbox.kill_9();

    // Another process takes the saved port while the sandbox is down.
    let addr = kube_url.trim_start_matches("http://").to_string();
    let squatter = std::net::TcpListener::bind(&addr).unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
    let port = addr.rsplit(':').next().unwrap_or_default();
    let err = start(dir, &[]).err().unwrap_or_else(|| panic!("the sandbox started on a taken port"));
    assert!(err.contains(&format!("port {port}")) && err.contains("--kube-port 0"), "unclear error: {err}");

    // `--kube-port 0` takes any free port and keeps the state.
    let sandbox = start(dir, &["--kube-port", "0"]).unwrap_or_else(|e| panic!("the sandbox did not start: {e}"));
    assert_ne!(sandbox.endpoints().0, kube_url);
    assert_eq!(sandbox.kubectl_ok(&["get", "configmap", "kept", "-o", "jsonpath={.data.a}"]), "b");
    drop(squatter);
}

#[tokio::test]
async fn a_restarted_simulator_accepts_the_tokens_it_issued_before() {
    use azml_arm_simulator::{ArmSimulator, SimConfig, SimHandle, World};
    azml_operator::tls_provider::install();
    let world = World::default_sandbox();
    let first = ArmSimulator::start(SimConfig::new(world.state.clone())).await.unwrap_or_else(|e| panic!("{e}"));
    let http = |ca: &str| {
        let cert = reqwest::Certificate::from_pem(ca.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        reqwest::Client::builder().add_root_certificate(cert).build().unwrap_or_else(|e| panic!("{e}"))
    };
    let client = http(&first.ca_pem);
    let form = [
        ("client_id", world.operator.client_id.as_str()),
        ("client_secret", world.operator.secret.expose()),
        ("scope", "https://management.azure.com/.default"),
        ("grant_type", "client_credentials"),
    ];
    let token_answer: Value = client
        .post(first.token_url())
        .form(&form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let token = token_answer["access_token"].as_str().unwrap_or_default().to_string();
    let saved = first.handle.persistent_json().unwrap_or_else(|e| panic!("{e}"));
    first.shutdown().await;

    let (state, tokens) = SimHandle::parse_persistent(&saved).unwrap_or_else(|e| panic!("{e}"));
    let mut config = SimConfig::new(state);
    config.tokens = tokens;
    let second = ArmSimulator::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let client = http(&second.ca_pem);
    let get = |token: &str| {
        client
            .get(format!("{}/subscriptions/{}?api-version=2022-12-01", second.endpoint, world.subscription_id))
            .bearer_auth(token)
            .send()
    };
    let status = get(&token).await.unwrap_or_else(|e| panic!("{e}")).status();
    assert_eq!(status, 200, "a token issued before the restart is refused");
    let status = get("made-up").await.unwrap_or_else(|e| panic!("{e}")).status();
    assert_eq!(status, 401);
    // A bare state (the format `SimHandle::save` writes) still loads, without tokens.
    let bare = serde_json::to_vec(&second.handle.snapshot()).unwrap_or_else(|e| panic!("{e}"));
    assert!(SimHandle::parse_persistent(&bare).is_ok());
}
