//! The soak at a small size inside the normal test run: 10 workspaces under 20 % injected faults (5xx, 429, failed
//! long-running operations, latency) for a scaled hour of 15 s, then everything converges with no duplicate role
//! assignment and nothing orphaned or missing. The full size is `cargo bench --bench soak`.

mod common;
#[path = "common/soak.rs"]
mod soak;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_workspaces_converge_after_a_scaled_hour_of_faults() {
    common::init_test_tracing();
    let options = soak::SoakOptions {
        workspaces: 10,
        hour: Duration::from_secs(15),
        fault_rate: 0.2,
        settle: Duration::from_secs(90),
    };
    let report = soak::run(&options).await;
    let summary = report.render(&options);
    println!("{summary}");
    assert_eq!(report.converged, report.expected, "{summary}");
    assert_eq!(report.deleted, report.deletions, "{summary}");
    assert!(report.expected >= 9 && report.deletions >= 1, "{summary}");
    assert_eq!((report.duplicates, report.orphans, report.missing), (0, 0, 0), "{summary}");
    assert!(report.faulted > 0, "no fault was injected: {summary}");
}
