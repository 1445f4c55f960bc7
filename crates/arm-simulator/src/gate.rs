//! Call holds: stop one chosen request at a chosen side of the simulator until a test releases it.
//!
//! A crash test needs to stop the operator at an exact ARM call boundary, on both sides of it:
//!
//! * [`HoldPhase::Received`]: the request has reached the simulator but nothing was done yet. Released with
//!   [`Release::Drop`], it is never carried out (as if the connection died on the way) and is not written to the call
//!   log; released with [`Release::Deliver`] it is handled normally.
//! * [`HoldPhase::Answered`]: the simulator has carried the request out and logged it (Azure did it), but the reply
//!   has not left yet. Whatever the release says, the reply is then sent to whoever is still listening: a crashed
//!   operator never reads it, so it never learns that Azure acted.
//!
//! A [`HoldRule`] names the request: the `nth` call (1-based) of an operation whose path contains a given text
//! (case-insensitive), counted from the moment the rule is added. A rule fires once and is then removed. Calls the
//! simulator refuses before handling them (authentication, api-version, throttling) are counted at `Received` only.
//!
//! In-process: [`super::SimHandle::hold`] returns a [`CallHold`] whose [`CallHold::fired`] resolves with the held
//! call; [`super::SimHandle::release`] lets it go. Admin API (loopback only): `POST /_sim/holds` with a `HoldRule`
//! answers `{"id": n}`; `GET /_sim/holds` lists the rules waiting and the calls held; `POST
//! /_sim/holds/{id}/release` with `{"drop": true|false}` releases a held call (404 when none is held under `id`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::SimHandle;
use super::reply::{ArmError, Reply};

/// Which side of the simulator's work a hold stops a request on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HoldPhase {
    /// Received, not carried out yet.
    Received,
    /// Carried out and logged, reply not sent yet.
    Answered,
}

/// Which request to hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldRule {
    /// Operation name as in the call log (case-insensitive), e.g. `Workspaces_CreateOrUpdate`.
    pub operation: String,
    /// Text the request path must contain (case-insensitive), e.g. a subscription id; empty matches every path.
    #[serde(default)]
    pub path_contains: String,
    /// Hold the nth matching call (1-based).
    pub nth: u32,
    /// Which side to hold it on.
    pub phase: HoldPhase,
}

impl HoldRule {
    fn matches(&self, operation: &str, path: &str) -> bool {
        self.operation.eq_ignore_ascii_case(operation)
            && path.to_ascii_lowercase().contains(&self.path_contains.to_ascii_lowercase())
    }
}

/// A call stopped by a hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldCall {
    /// Id of the rule that fired.
    pub id: u64,
    /// HTTP method.
    pub method: String,
    /// Operation name.
    pub operation: String,
    /// Request path.
    pub path: String,
    /// The side it is held on.
    pub phase: HoldPhase,
}

/// What a released call does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Release {
    /// Go on: handle it (`Received`) or send the reply (`Answered`).
    Deliver,
    /// Forget it: never handled (`Received`); at `Answered` the reply is sent all the same (Azure has acted).
    Drop,
}

/// A hold added in-process; [`CallHold::fired`] waits for its call.
#[derive(Debug)]
pub struct CallHold {
    /// The rule's id (for [`super::SimHandle::release`]).
    pub id: u64,
    fired: oneshot::Receiver<HeldCall>,
}

impl CallHold {
    /// Waits until the rule fires and returns the held call (`None` if the rule was cancelled).
    pub async fn fired(&mut self) -> Option<HeldCall> {
        (&mut self.fired).await.ok()
    }
}

struct Rule {
    spec: HoldRule,
    seen: u32,
    notify: Option<oneshot::Sender<HeldCall>>,
}

struct Held {
    call: HeldCall,
    release: oneshot::Sender<Release>,
}

#[derive(Default)]
struct HoldState {
    next: u64,
    rules: BTreeMap<u64, Rule>,
    held: BTreeMap<u64, Held>,
}

/// The holds of one simulator.
#[derive(Default)]
pub(crate) struct Holds(Mutex<HoldState>);

impl Holds {
    fn state(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a rule; `notify` (in-process callers) learns of the held call.
    fn add(&self, spec: HoldRule, notify: Option<oneshot::Sender<HeldCall>>) -> u64 {
        let mut s = self.state();
        s.next += 1;
        let id = s.next;
        s.rules.insert(id, Rule { spec, seen: 0, notify });
        id
    }

    /// An in-process hold.
    pub(crate) fn hold(&self, spec: HoldRule) -> CallHold {
        let (tx, rx) = oneshot::channel();
        CallHold { id: self.add(spec, Some(tx)), fired: rx }
    }

    /// Removes a rule that has not fired; true if there was one.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        self.state().rules.remove(&id).is_some()
    }

    /// Releases the call held under `id`; false if none is.
    pub(crate) fn release(&self, id: u64, how: Release) -> bool {
        match self.state().held.remove(&id) {
            Some(held) => {
                // The request may have gone (its connection closed): nothing left to release then.
                let _ = held.release.send(how);
                true
            }
            None => false,
        }
    }

    /// The rules waiting (with how many matching calls they have seen) and the calls held.
    pub(crate) fn list(&self) -> (Vec<(u64, HoldRule, u32)>, Vec<HeldCall>) {
        let s = self.state();
        let rules = s.rules.iter().map(|(id, r)| (*id, r.spec.clone(), r.seen)).collect();
        (rules, s.held.values().map(|h| h.call.clone()).collect())
    }

    /// Counts the call against the rules of `phase`; when one fires, waits for its release. Without rules this
    /// returns at once.
    pub(crate) async fn pass(&self, phase: HoldPhase, method: &str, operation: &str, path: &str) -> Release {
        let waiting = {
            let mut s = self.state();
            if s.rules.is_empty() {
                return Release::Deliver;
            }
            let fired = s.rules.iter_mut().find_map(|(id, rule)| {
                if rule.spec.phase != phase || !rule.spec.matches(operation, path) {
                    return None;
                }
                rule.seen += 1;
                (rule.seen == rule.spec.nth).then_some(*id)
            });
            let Some(id) = fired else { return Release::Deliver };
            let Some(rule) = s.rules.remove(&id) else { return Release::Deliver };
            let call = HeldCall { id, method: method.into(), operation: operation.into(), path: path.into(), phase };
            let (tx, rx) = oneshot::channel();
            s.held.insert(id, Held { call: call.clone(), release: tx });
            if let Some(notify) = rule.notify {
                let _ = notify.send(call);
            }
            rx
        };
        tracing::debug!(operation, path, ?phase, "arm simulator: holding a call");
        // A release dropped unsent (the simulator shutting down) lets the call go on.
        waiting.await.unwrap_or(Release::Deliver)
    }
}

// ------------------------------------------------------------------------------------------------ admin API

/// `/_sim/holds` routes, merged into the admin router (loopback only).
pub(crate) fn admin_routes() -> axum::Router<SimHandle> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/_sim/holds", get(admin_list).post(admin_add))
        .route("/_sim/holds/{id}/release", post(admin_release))
}

async fn admin_add(State(h): State<SimHandle>, axum::Json(rule): axum::Json<HoldRule>) -> Response {
    let id = h.0.holds.add(rule, None);
    Reply::json(StatusCode::CREATED, json!({"id": id})).into_response()
}

async fn admin_list(State(h): State<SimHandle>) -> Response {
    let (rules, held) = h.0.holds.list();
    let rules: Vec<Value> =
        rules.into_iter().map(|(id, rule, seen)| json!({"id": id, "rule": rule, "seen": seen})).collect();
    Reply::ok(json!({"waiting": rules, "held": held})).into_response()
}

#[derive(Deserialize)]
struct ReleaseBody {
    #[serde(default)]
    drop: bool,
}

async fn admin_release(
    State(h): State<SimHandle>,
    Path(id): Path<u64>,
    axum::Json(b): axum::Json<ReleaseBody>,
) -> Response {
    let how = if b.drop { Release::Drop } else { Release::Deliver };
    let status = if h.0.holds.release(id, how) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND };
    Reply::empty(status).into_response()
}

/// What the ARM pipeline tells [`hold_answered`] about a request it carried out (a response extension).
#[derive(Clone, Debug)]
pub(crate) struct Answered {
    pub method: String,
    pub operation: String,
    pub path: String,
}

/// Middleware: holds the response of a carried-out ARM request when a rule at [`HoldPhase::Answered`] says so.
pub(crate) async fn hold_answered(State(h): State<SimHandle>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(a) = response.extensions().get::<Answered>().cloned() {
        h.0.holds.pass(HoldPhase::Answered, &a.method, &a.operation, &a.path).await;
    }
    response
}

/// The answer to a request dropped at `Received` (nobody reads it: the test crashed the caller).
pub(crate) fn dropped() -> Response {
    Reply::from(ArmError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "RequestDropped",
        "The simulator dropped this request before handling it (crash test).",
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(nth: u32, phase: HoldPhase) -> HoldRule {
        HoldRule { operation: "Workspaces_Get".into(), path_contains: "SUB-1".into(), nth, phase }
    }

    #[tokio::test]
    async fn the_nth_matching_call_is_held_until_released() {
        let holds = std::sync::Arc::new(Holds::default());
        let mut hold = holds.hold(rule(2, HoldPhase::Received));
        let path = "/subscriptions/sub-1/x";
        // Other operations, other paths and the other phase do not count.
        assert_eq!(holds.pass(HoldPhase::Received, "GET", "Workspaces_List", path).await, Release::Deliver);
        assert_eq!(
            holds.pass(HoldPhase::Received, "GET", "Workspaces_Get", "/subscriptions/sub-2").await,
            Release::Deliver
        );
        assert_eq!(holds.pass(HoldPhase::Answered, "GET", "Workspaces_Get", path).await, Release::Deliver);
        assert_eq!(holds.pass(HoldPhase::Received, "GET", "workspaces_get", path).await, Release::Deliver);
        let h = holds.clone();
        let second = tokio::spawn(async move { h.pass(HoldPhase::Received, "GET", "Workspaces_Get", path).await });
        let call = hold.fired().await.expect("fired");
        assert_eq!((call.id, call.operation.as_str(), call.phase), (hold.id, "Workspaces_Get", HoldPhase::Received));
        assert_eq!(holds.list().1.len(), 1);
        assert!(!second.is_finished());
        assert!(holds.release(hold.id, Release::Drop));
        assert_eq!(second.await.unwrap(), Release::Drop);
        // Fired once, then gone.
        assert!(holds.list().0.is_empty() && holds.list().1.is_empty());
        assert_eq!(holds.pass(HoldPhase::Received, "GET", "Workspaces_Get", path).await, Release::Deliver);
        assert!(!holds.release(hold.id, Release::Deliver));
    }

    #[test]
    fn a_cancelled_rule_never_fires() {
        let holds = Holds::default();
        let hold = holds.hold(rule(1, HoldPhase::Answered));
        assert!(holds.cancel(hold.id));
        assert!(!holds.cancel(hold.id));
        assert!(holds.list().0.is_empty());
    }
}
