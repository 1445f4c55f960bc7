//! The README as a user follows it: its sandbox walkthrough's shell blocks run word for word (bash, the real
//! `kubectl`) against a sandbox started as the README says, from a directory laid out like the repository root; the
//! examples folder applies cleanly in the sandbox (everything Ready); and what the operator does reads back, one text
//! per thing done, through `kubectl describe` and `kubectl events`.
//!
//! The only substitution: `cargo run --release -- ARGS` runs this build's binary with ARGS (a release build of the
//! same sources), and `kubectl ... -w` watches for a few seconds instead of until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/sandbox_cli.rs"]
mod sandbox_cli;

use sandbox_cli::BIN;

/// The repository root (holding README.md and examples/), wherever this test's crate lives in the workspace.
fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !(dir.join("README.md").is_file() && dir.join("examples").is_dir()) {
        assert!(dir.pop(), "no README.md above {}", env!("CARGO_MANIFEST_DIR"));
    }
    dir
}

/// The ```sh blocks of the README section titled `heading` (up to the next `## ` heading).
fn shell_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"));
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("\n```").unwrap_or_else(|| panic!("unclosed ```sh block in {heading:?}"));
        blocks.push(body[..close].to_owned());
        rest = &body[close + 4..];
    }
    blocks
}

/// A sandbox started as the README says (`cargo run --release -- sandbox`, here this build's binary), in a
/// directory that looks like the repository root: `examples/` is there, and `sandbox.kubeconfig` and `.sandbox/`
/// are written there.
struct Sandbox {
    child: Child,
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn start() -> Sandbox {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(repo_root().join("examples"), dir.path().join("examples"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(BIN)
            .arg("sandbox")
            .current_dir(dir.path())
            .env("AZML_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the sandbox: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        sandbox_cli::wait_ready(stdout, Some(Duration::from_secs(120))).unwrap_or_else(|e| panic!("{e}"));
        Sandbox { child, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `script` with bash in the sandbox's directory, as a user's second terminal would; fails on the first
    /// failing command. Returns what it printed.
    fn run_script(&self, script: &str, within: Duration) -> String {
        let prelude = r#"set -euo pipefail
export KUBECONFIG="$PWD/sandbox.kubeconfig"
cargo() {
  if [[ "${1:-} ${2:-} ${3:-}" != "run --release --" ]]; then echo "unexpected: cargo $*" >&2; return 2; fi
  shift 3
  "$AZML_BIN" "$@"
}
kubectl() {
  local arg
  for arg in "$@"; do
    if [[ "$arg" == "-w" || "$arg" == "--watch" ]]; then
      local rc=0
      timeout 4 kubectl "$@" || rc=$?
      if [[ $rc == 124 ]]; then return 0; fi
      return $rc
    fi
  done
  command kubectl "$@"
}
export -f kubectl cargo
"#;
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(format!("{prelude}\n{script}"))
            .current_dir(self.path())
            .env("AZML_BIN", BIN)
            .env("HOME", self.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("bash: {e}"));
        let deadline = Instant::now() + within;
        loop {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let out = child.wait_with_output().ok();
                let (stdout, stderr) = out.map_or_else(Default::default, |o| {
                    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
                });
                panic!("the script did not finish within {within:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "the script failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
        stdout
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .current_dir(self.path())
            .env("KUBECONFIG", self.path().join("sandbox.kubeconfig"))
            .env("HOME", self.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn azure(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(["sandbox", "azure"])
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap_or_else(|e| panic!("sandbox azure: {e}"));
        assert!(out.status.success(), "sandbox azure {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Sandbox {
    /// `plan -f file` against this sandbox (its simulated Azure, trusting its CA), as an operator would run it.
    fn plan(&self, file: &str) -> String {
        let info = std::fs::read_to_string(self.path().join(".sandbox/sandbox.json")).unwrap_or_default();
        let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_else(|e| panic!("sandbox.json: {e}"));
        let arm = info["arm_endpoint"].as_str().or(info["armEndpoint"].as_str()).unwrap_or_default().to_owned();
        let out = Command::new(BIN)
            .args(["plan", "-f", file, "--arm-endpoint", &arm, "--authority-host", &arm])
            .args(["--extra-ca-file", ".sandbox/ca.pem", "--operator-namespace", "azml-system"])
            .current_dir(self.path())
            .env("KUBECONFIG", self.path().join("sandbox.kubeconfig"))
            .env_remove("AZURE_RESOURCE_MANAGER_ENDPOINT")
            .env_remove("AZURE_AUTHORITY_HOST")
            .output()
            .unwrap_or_else(|e| panic!("plan: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "plan -f {file}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, for at most `within`; panics with the last value `seen` gives.
fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => panic!("timed out waiting for {what}; last seen:\n{seen}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap_or_else(|e| panic!("README: {e}"));
    let blocks = shell_blocks(&readme, "## Try it: the sandbox");
    assert!(!blocks.is_empty(), "no shell block in the walkthrough");
    let script = blocks.join("\n");
    for command in ["kubectl apply -f examples/mlworkspace.yaml", "cargo run --release -- sandbox azure"] {
        assert!(script.contains(command), "the walkthrough no longer runs {command:?}: update this test");
    }
    let sandbox = Sandbox::start();
    let out = sandbox.run_script(&script, Duration::from_secs(600));
    // `sandbox azure calls` printed its table.
    assert!(out.contains("OPERATION") && out.contains("Workspaces_CreateOrUpdate"), "{out}");
    // The last step recovers the soft-deleted workspace: it ends Ready again.
    sandbox.kubectl(&["wait", "--for=condition=Ready", "mlworkspace/fraud-detection", "--timeout=120s"]);
    let events = sandbox.kubectl(&["events", "--for", "mlworkspace/fraud-detection"]);
    for reason in ["Moved", "SoftDeleted", "Recovered"] {
        assert!(events.contains(reason), "no {reason} event as the walkthrough says:\n{events}");
    }
    let location =
        sandbox.kubectl(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.status.location.resourceGroup}"]);
    assert_eq!(location, "rg-risk-ml");
}

#[test]
fn the_examples_apply_cleanly_and_events_tell_what_happened() {
    let sandbox = Sandbox::start();
    // Everything in examples/, the SubscriptionBinding included (it sorts before the sandbox's own and is used).
    sandbox.kubectl(&["apply", "-f", "examples/"]);
    for kind in ["mlworkspace", "mlonlineendpoint", "mlcompute"] {
        sandbox.kubectl(&["wait", "--for=condition=Ready", kind, "--all", "--timeout=180s"]);
    }
    let wide = sandbox.kubectl(&["get", "mlws", "fraud-detection", "-o", "wide"]);
    assert!(wide.contains("BINDING") && wide.contains("risk-prod"), "the chosen binding is shown:\n{wide}");
    let binding = sandbox.kubectl(&["get", "mlws", "fraud-detection", "-o", "jsonpath={.status.binding}"]);
    assert_eq!(binding, "risk-prod", "the lowest name wins");
    let explain = sandbox.kubectl(&["explain", "subscriptionbinding"]);
    assert!(explain.contains("lowest name"), "kubectl explain states the rule:\n{explain}");

    // Two principals granted: two texts. A requested resync, then a drift resync: both texts.
    sandbox.kubectl(&["annotate", "mlws", "fraud-detection", "azml.dev/resync-keys=by-hand", "--overwrite"]);
    let requested = r#"Resynced the storage keys (Requested "by-hand")"#;
    let describe = || sandbox.kubectl(&["describe", "mlws", "fraud-detection"]);
    eventually("the requested resync's event", Duration::from_secs(120), || {
        let text = describe();
        if text.contains(requested) { Ok(()) } else { Err(text) }
    });
    sandbox.azure(&["regenerate-key", "--account", "riskmlsa", "--key", "key1"]);
    let drift = "Resynced the storage keys (Drift)";
    let wanted = ["Granted AzureMLDataScientist", "Granted Contributor", requested, drift];
    let text = eventually("the drift resync's event beside the earlier ones", Duration::from_secs(180), || {
        let text = describe();
        if wanted.iter().all(|w| text.contains(w)) { Ok(text) } else { Err(text) }
    });
    assert!(!text.contains("AmbiguousBinding"), "both bindings use the same credential:\n{text}");
    let events = sandbox.kubectl(&["events", "--for", "mlworkspace/fraud-detection"]);
    for w in wanted {
        assert!(events.contains(w), "kubectl events lacks {w:?}:\n{events}");
    }
    let table = sandbox.kubectl(&["get", "events", "--field-selector", "involvedObject.name=fraud-detection"]);
    assert!(table.contains("mlworkspace/fraud-detection") && table.contains(drift), "{table}");

    // `plan` covers the endpoint: nothing to do now; a traffic shift in a file is one endpoint PUT.
    assert!(
        sandbox
            .plan("examples/mlonlineendpoint.yaml")
            .contains("MlOnlineEndpoint default/fraud-scoring:\n  no changes")
    );
    let example = std::fs::read_to_string(sandbox.path().join("examples/mlonlineendpoint.yaml")).unwrap_or_default();
    let shifted = example.replace("traffic: {blue: 90, green: 10}", "traffic: {blue: 0, green: 100}");
    assert_ne!(shifted, example, "the example's traffic line changed: update this test");
    std::fs::write(sandbox.path().join("shifted.yaml"), shifted).unwrap_or_else(|e| panic!("{e}"));
    let plan = sandbox.plan("shifted.yaml");
    // A deployment at 0 is left out of the traffic map sent (Azure reads a missing one as 0).
    assert!(plan.contains("1. set the traffic to {green=100} (OnlineEndpoints_CreateOrUpdate)"), "{plan}");
    assert!(!plan.contains("2."), "one write: {plan}");
}
