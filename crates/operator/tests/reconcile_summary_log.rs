//! The JSON log line that ends each reconcile names the object and the ARM request ids of its calls.
//!
//! Its own test binary, with the subscriber installed as the process default: tracing caches each callsite's
//! interest globally, and a unit test running next to others that hit the same callsite with no subscriber could
//! see the event filtered out before its scoped subscriber was asked.

use std::sync::{Arc, Mutex};

use azml_operator::azure::metrics::note_arm_request_id;
use azml_operator::metrics::{Metrics, instrument_reconcile};
use tracing_subscriber::layer::SubscriberExt;

/// Collects what the JSON formatter writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_json_summary_names_the_object_and_the_arm_request_ids() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(move || writer.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("the only test of this binary sets it");
    let metrics = Metrics::new();
    let done: Result<(), String> = instrument_reconcile(&metrics, "team-a/ws-1", async {
        note_arm_request_id("11111111-aaaa");
        note_arm_request_id("22222222-bbbb");
        Ok(())
    })
    .await;
    assert!(done.is_ok());
    let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
    let line: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "reconcile finished")
        .unwrap_or_else(|| panic!("no summary in {text}"));
    assert_eq!(line["fields"]["arm_request_ids"], "11111111-aaaa,22222222-bbbb", "{line}");
    assert_eq!(line["fields"]["object"], "team-a/ws-1", "{line}");
}
