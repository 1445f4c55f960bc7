//! Scale benchmark (issue 20), not a timed test: the release operator binary (`azml-operator run`, its own process,
//! watching one namespace) against the Kubernetes API emulator and the ARM simulator (with ARM's per-subscription
//! buckets and the storage provider's limits), in scaled time. Prints ONE table.
//!
//! 1. Blind-PUT baseline (`--baseline blind-put`, the default; `--baseline none` skips it): the same number of
//!    workspaces (each with one role assignment) driven the way Azure Service Operator does: per resource and resync
//!    period one GET and one unconditional PUT. One scaled hour: ARM reads, writes, 429s; drift of `description`
//!    made "in the portal" on 20 workspaces and how long until it is put back.
//! 2. The operator: RSS idle; `--workspaces` (1,000) created in 10 subscriptions (10 storage accounts each): time to
//!    all Ready, ARM calls per workspace, RSS; one steady scaled hour with the same drift (reads, writes, 429s, drift
//!    latency); a key regeneration of one account, then of all 100 at once: time until every affected workspace
//!    holds the new key (p50/p99/max), with the ARM writes per subscription against the write bucket. The
//!    regenerations run with time scaled by `--regeneration-scale` (default 3): the operator restarts with its
//!    intervals so scaled and the simulator's durations and limits follow. At 1/30 every real millisecond the
//!    emulators spend (two thirds of the two cores: CEL admission of each status write, TLS, JSON) would count 30 ms
//!    against a latency that, in production, the API server's and Azure's own machines absorb.
//! 3. Memory: `--memory-workspaces` (10,000) in total: RSS when all are Ready, and of a restarted operator after it
//!    has read every workspace again (a full resync wave), bytes per object.
//!
//! Time: every duration Azure or the operator uses is divided by `--scale` (default 30: the 1 h resync period is
//! 2 min, the 60 s key-signal interval 2 s, the 20 s resyncKeys 0.67 s), and so are the throttling windows (the
//! buckets refill `--scale` times faster). Reported times are scaled back (real ms x scale). Long-running operations
//! are polled every 10 s (scaled), as Azure asks ML clients to. A 429's `Retry-After` has a floor of 1 s real, i.e.
//! `--scale` seconds scaled: throttled calls look slower here than in Azure.
//!
//! `cargo bench --bench scale -- [--workspaces N] [--memory-workspaces N] [--scale S] [--regeneration-scale S]
//! [--baseline blind-put|none]
//! [--concurrency N] [--no-steady-hour]` (the operator's `--concurrency`, its default when not given; skipping the
//! steady hour looks at the other phases two minutes sooner, its rows then say nothing);
//! the operator binary is `AZML_OPERATOR_BIN`, else the production image's build (`cargo build --profile image -p
//! azml-operator`), else `azml-operator` beside the bench (`cargo build --release -p azml-operator`), else
//! `azml-sandbox run`; the table's first line names it. CI compiles it
//! (clippy builds every target); `tests/scale.rs` runs it at a tiny size (ignored by default: about a minute in debug).

#[path = "../tests/operator/common/mod.rs"]
mod common;

use common::scale;

const MIN_WORKSPACES: usize = 100;

fn parse() -> scale::Options {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let num = |name: &str, default: usize| arg(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let operator = scale::operator_binary(env!("CARGO_BIN_EXE_azml-sandbox"));
    let workspaces = num("--workspaces", 1000).max(MIN_WORKSPACES);
    scale::Options {
        workspaces,
        memory_workspaces: num("--memory-workspaces", 10_000).max(workspaces),
        scale: u32::try_from(num("--scale", 30)).unwrap_or(30).max(1),
        regeneration_scale: u32::try_from(num("--regeneration-scale", 3)).unwrap_or(3).max(1),
        baseline: arg("--baseline").is_none_or(|b| b == "blind-put"),
        operator,
        concurrency: arg("--concurrency").and_then(|c| c.parse().ok()),
        steady_hour: !args.iter().any(|a| a == "--no-steady-hour"),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let report = scale::run(parse()).await;
    print!("{}", report.table);
    let targets = report.targets();
    for (target, met) in &targets {
        println!("target {target}: {}", if *met { "met" } else { "MISSED" });
    }
    let _ = (report.drift_corrected, report.baseline_steady);
    if targets.iter().any(|(_, met)| !met) {
        std::process::exit(1);
    }
}
