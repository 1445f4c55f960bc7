//! The sandbox as a user drives it, for the tests that start `azml-sandbox sandbox` as a child process
//! (`e2e_sandbox.rs`, `sandbox_persistence.rs`, `readme.rs`): waiting for its `sandbox ready` line, the real
//! `kubectl` with its kubeconfig, and `sandbox azure ...` against its state dir. Included with `#[path]`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// This build's sandbox binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_azml-sandbox");

/// Reads the sandbox's standard output until it prints `sandbox ready`, then keeps draining it on a thread (so the
/// sandbox never blocks on a full pipe). `Err` says why it did not get there: the output ended (the process
/// stopped), or `within` passed (checked at each line).
pub fn wait_ready(stdout: ChildStdout, within: Option<Duration>) -> Result<(), String> {
    let deadline = within.map(|w| Instant::now() + w);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err("the sandbox did not print `sandbox ready` in time".into());
        }
        match lines.next() {
            Some(Ok(line)) if line.trim() == "sandbox ready" => break,
            Some(Ok(_)) => continue,
            other => return Err(format!("the sandbox stopped before it was ready: {other:?}")),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(())
}

/// The real `kubectl` with `dir/kubeconfig`, `dir` as its home and its cache in `dir/kube-cache`: (success, stdout,
/// stderr).
pub fn kubectl(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOME", dir)
        .arg("--cache-dir")
        .arg(dir.join("kube-cache"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("kubectl: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`kubectl`] that must succeed; its standard output.
pub fn kubectl_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl(dir, args);
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
}

/// `azml-sandbox sandbox azure ARGS --state-dir dir/state`: (success, stdout, stderr).
pub fn azure(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["sandbox", "azure"])
        .args(args)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap_or_else(|e| panic!("sandbox azure: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`azure`] that must succeed; its standard output.
pub fn azure_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = azure(dir, args);
    assert!(ok, "sandbox azure {args:?}: {stderr}");
    stdout
}

/// Calls of ARM `operation` the simulator has counted since it started (`sandbox azure calls`).
pub fn calls(dir: &Path, operation: &str) -> u64 {
    let summary: serde_json::Value = serde_json::from_str(&azure_ok(dir, &["calls", "-o", "json"])).unwrap_or_default();
    summary[operation]["calls"].as_u64().unwrap_or(0)
}
