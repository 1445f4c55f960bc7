//! Soak benchmark (not a timed test, not CI-blocking at full size): by default 200 workspaces under 20 % injected
//! faults (5xx, 429, failed long-running operations, latency) for one scaled hour, then the faults stop; reported:
//! how many converged, duplicate and orphaned role assignments, and ARM calls per operation. See
//! `tests/common/soak.rs` for what happens during the hour; `tests/soak.rs` runs it at 10 workspaces in CI.
//!
//! `cargo bench --bench soak -- [--workspaces N] [--hour-secs S] [--fault-rate F] [--settle-secs S]`
//! (defaults 200, 120, 0.2, 300). Exits non-zero when something did not converge or a duplicate exists.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/soak.rs"]
mod soak;

use std::time::Duration;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let options = soak::SoakOptions {
        workspaces: arg(&args, "--workspaces", 200),
        hour: Duration::from_secs(arg(&args, "--hour-secs", 120)),
        fault_rate: arg(&args, "--fault-rate", 0.2),
        settle: Duration::from_secs(arg(&args, "--settle-secs", 300)),
    };
    let report = soak::run(&options).await;
    println!("{}", report.render(&options));
    let ok = report.converged == report.expected
        && report.deleted == report.deletions
        && report.duplicates == 0
        && report.orphans == 0
        && report.missing == 0;
    if !ok {
        std::process::exit(1);
    }
}
