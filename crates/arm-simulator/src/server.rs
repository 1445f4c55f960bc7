//! HTTPS serving: accept loop, the axum router (ARM, Entra ID, admin API) and the request pipeline.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::SimHandle;
use super::api_versions;
use super::auth;
use super::control::{CallKind, FaultAction, FaultRule, ThrottleConfig};
use super::engine::Req;
use super::gate::{HoldPhase, Release};
use super::model::{OpError, Principal, SimState};
use super::reply::{ArmError, Reply};
use super::route::route;
use super::throttle::StorageClass;

/// The peer address of a connection, inserted into every request.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

const MAX_BODY: usize = 8 * 1024 * 1024;

/// Runs the accept loop until `cancel` fires; connections are aborted when it ends.
pub(crate) async fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: Router, cancel: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "arm simulator: accept failed");
                    continue;
                }
            },
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        conns.spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "arm simulator: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                router.clone().oneshot(req.map(Body::new))
            });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(error = %e, %peer, "arm simulator: connection ended with error");
            }
        });
    }
}

/// The full router.
pub(crate) fn router(handle: SimHandle) -> Router {
    let admin = Router::new()
        .route("/_sim/calls", get(admin_calls).delete(admin_clear_calls))
        .route("/_sim/calls/summary", get(admin_summary))
        .route("/_sim/faults", get(admin_faults).post(admin_add_fault).delete(admin_clear_faults))
        .route("/_sim/faults/{id}", delete(admin_remove_fault))
        .route("/_sim/storage/regenerateKey", post(admin_regenerate))
        .route("/_sim/resources", put(admin_put_resource).patch(admin_edit_resource))
        .route("/_sim/principals", post(admin_principal))
        .route("/_sim/subscriptions", post(admin_subscription))
        .route("/_sim/resourceGroups", post(admin_resource_group))
        .route("/_sim/roleAssignments", post(admin_role_assignment))
        .route("/_sim/state", get(admin_state).put(admin_restore))
        .route("/_sim/activityLog", get(admin_activity))
        .route("/_sim/throttle", put(admin_throttle))
        .route("/_sim/clock/advance", post(admin_advance_clock))
        .route("/_sim/softDeletedWorkspaces", get(admin_soft_deleted))
        .merge(super::gate::admin_routes())
        .route_layer(middleware::from_fn(loopback_only));
    Router::new()
        .merge(admin)
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(openid))
        .route("/common/discovery/instance", get(instance_discovery))
        .fallback(arm)
        .layer(middleware::from_fn_with_state(handle.clone(), super::gate::hold_answered))
        .with_state(handle)
}

async fn loopback_only(req: Request, next: Next) -> Response {
    let ok = req.extensions().get::<Peer>().is_some_and(|p| p.0.ip().is_loopback());
    if ok {
        next.run(req).await
    } else {
        Reply::from(ArmError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The simulator admin API is only served on loopback.",
        ))
        .into_response()
    }
}

async fn token(State(h): State<SimHandle>, Path(tenant): Path<String>, body: axum::body::Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut g = h.lock();
    let lifetime = g.knobs.token_lifetime;
    let endpoint = g.endpoint.clone();
    let inner = &mut *g;
    let (reply, oid) = inner.tokens.issue(&inner.state, &tenant, &form, lifetime, &endpoint);
    let path = format!("/{tenant}/oauth2/v2.0/token");
    g.calls.push("POST", "Token", &path, reply.status.as_u16(), CallKind::Auth, oid);
    reply.into_response()
}

async fn openid(State(h): State<SimHandle>, Path(tenant): Path<String>) -> Response {
    let mut g = h.lock();
    let path = format!("/{tenant}/v2.0/.well-known/openid-configuration");
    if !tenant.eq_ignore_ascii_case(&g.state.tenant_id) {
        g.calls.push("GET", "OpenIdConfiguration", &path, 400, CallKind::Auth, None);
        return Reply::json(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_tenant", "error_description": format!("AADSTS90002: Tenant '{tenant}' not found.")}),
        )
        .into_response();
    }
    g.calls.push("GET", "OpenIdConfiguration", &path, 200, CallKind::Auth, None);
    Reply::ok(auth::openid_configuration(&g.endpoint, &g.state.tenant_id)).into_response()
}

async fn instance_discovery(State(h): State<SimHandle>) -> Response {
    let g = h.lock();
    Reply::ok(auth::instance_discovery(&g.endpoint, &g.state.tenant_id)).into_response()
}

fn request_headers(reply: &mut Reply, req: &Req) {
    reply.headers.push(("x-ms-request-id".into(), uuid::Uuid::new_v4().to_string()));
    reply.headers.push(("x-ms-correlation-request-id".into(), req.correlation_id.clone()));
    if let Some(c) = &req.client_request_id {
        reply.headers.push(("x-ms-client-request-id".into(), c.clone()));
    }
}

/// The ARM pipeline: route → authenticate → api-version → throttle → faults → RBAC + handler → log.
async fn arm(State(h): State<SimHandle>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return Reply::from(ArmError::bad_request(
                "InvalidRequestContent",
                "The request body is too large or unreadable.",
            ))
            .into_response();
        }
    };
    let path = parts.uri.path().to_string();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let query: Vec<(String, String)> =
        parts.uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(String::from);
    let req = Req {
        method: parts.method.clone(),
        path: path.clone(),
        segs,
        query,
        body,
        correlation_id: header("x-ms-correlation-request-id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        client_request_id: header("x-ms-client-request-id"),
    };
    let kind =
        if matches!(req.method, http::Method::GET | http::Method::HEAD) { CallKind::Read } else { CallKind::Write };
    let method = req.method.to_string();
    let auth_header = header("authorization");
    // Crash tests may hold the call here, before anything is done ([`super::gate`]).
    let op = route(&req.method, &req.segs).map_or_else(|_| "Unknown".to_string(), |r| r.op);
    if h.0.holds.pass(HoldPhase::Received, &method, &op, &path).await == Release::Drop {
        return super::gate::dropped();
    }

    // Phase 1, under the lock: everything that decides whether the request is admitted.
    let admitted = {
        let mut g = h.lock();
        g.advance();
        let pre = (|| {
            let routed = route(&req.method, &req.segs).map_err(|e| (e, "Unknown".to_string(), None))?;
            let caller = g.authenticate(auth_header.as_deref()).map_err(|e| (e, routed.op.clone(), None))?;
            let oid = Some(caller.object_id.clone());
            api_versions::check(req.q("api-version"), routed.family)
                .map_err(|e| (e, routed.op.clone(), oid.clone()))?;
            let mut remaining = None;
            if let Some(sub) = &routed.sub {
                let write = kind == CallKind::Write;
                match g.throttle.take(sub, write) {
                    Ok(left) => remaining = Some((write, left)),
                    Err(retry) => {
                        let which = if write { "write" } else { "read" };
                        let e = ArmError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "SubscriptionRequestsThrottled",
                            format!("Number of '{which}' requests for subscription '{sub}' actor '{}' exceeded. Please try again after '{retry}' seconds after the last request.", caller.object_id),
                        )
                        .header("Retry-After", retry.to_string())
                        .header(&format!("x-ms-ratelimit-remaining-subscription-{which}s"), "0");
                        return Err((e, routed.op.clone(), oid));
                    }
                }
            }
            if let (Some(sub), Some(class)) = (&routed.sub, StorageClass::of(&routed.op, &req.method)) {
                let region =
                    if class == StorageClass::List { "global".to_string() } else { g.region_of(&routed.scope) };
                g.storage_throttle.take(sub, &region, class).map_err(|e| (e, routed.op.clone(), oid.clone()))?;
            }
            let fired = g.faults.fire(&routed.op);
            Ok((routed, caller, remaining, fired))
        })();
        match pre {
            Ok(a) => Ok(a),
            Err((e, op, oid)) => {
                let mut reply = Reply::from(e);
                request_headers(&mut reply, &req);
                g.calls.push(&method, &op, &path, reply.status.as_u16(), kind, oid);
                Err(reply)
            }
        }
    };
    let (routed, caller, remaining, fired) = match admitted {
        Ok(a) => a,
        Err(reply) => return reply.into_response(),
    };
    if !fired.latency.is_zero() {
        tokio::time::sleep(fired.latency).await;
    }
    let mut g = h.lock();
    g.advance();
    let mut reply = match fired.error {
        Some(FaultAction::Error { status, code, message, retry_after }) => {
            let mut e = ArmError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &code,
                message.unwrap_or_else(|| format!("Fault injected by the simulator for operation '{}'.", routed.op)),
            );
            if let Some(r) = retry_after {
                e = e.header("Retry-After", r.to_string());
            }
            Reply::from(e)
        }
        _ => {
            let failure =
                fired.lro_failure.map(|(status, code, message)| OpError { status, code, message, details: vec![] });
            g.execute(&routed, &req, &caller, failure).unwrap_or_else(Reply::from)
        }
    };
    if kind == CallKind::Write && reply.status != StatusCode::FORBIDDEN && routed.op != "Unknown" {
        g.log_write(&caller, &routed, &req, reply.status);
    }
    if let Some((write, left)) = remaining {
        let which = if write { "writes" } else { "reads" };
        reply.headers.push((format!("x-ms-ratelimit-remaining-subscription-{which}"), left.to_string()));
    }
    request_headers(&mut reply, &req);
    g.calls.push(&method, &routed.op, &path, reply.status.as_u16(), kind, Some(caller.object_id.clone()));
    drop(g);
    if req.method == http::Method::HEAD {
        reply.body = None;
    }
    let mut response = reply.into_response();
    // ... or, by [`super::gate::hold_answered`], once Azure has acted but before the caller hears of it.
    response.extensions_mut().insert(super::gate::Answered { method, operation: op, path });
    response
}

// ------------------------------------------------------------------------------------------------ admin API

async fn admin_calls(State(h): State<SimHandle>) -> Response {
    Reply::ok(json!(h.calls())).into_response()
}

async fn admin_clear_calls(State(h): State<SimHandle>) -> Response {
    h.clear_calls();
    Reply::empty(StatusCode::NO_CONTENT).into_response()
}

async fn admin_summary(State(h): State<SimHandle>) -> Response {
    Reply::ok(json!(h.call_summary())).into_response()
}

async fn admin_faults(State(h): State<SimHandle>) -> Response {
    let list: Vec<Value> = h.lock().faults.list().into_iter().map(|(id, r)| json!({"id": id, "rule": r})).collect();
    Reply::ok(json!(list)).into_response()
}

async fn admin_add_fault(State(h): State<SimHandle>, axum::Json(rule): axum::Json<FaultRule>) -> Response {
    let id = h.inject_fault(rule);
    Reply::json(StatusCode::CREATED, json!({"id": id})).into_response()
}

async fn admin_clear_faults(State(h): State<SimHandle>) -> Response {
    h.clear_faults();
    Reply::empty(StatusCode::NO_CONTENT).into_response()
}

async fn admin_remove_fault(State(h): State<SimHandle>, Path(id): Path<u64>) -> Response {
    let removed = h.lock().faults.remove(id);
    Reply::empty(if removed { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegenerateBody {
    account_id: String,
    key_name: String,
}

async fn admin_regenerate(State(h): State<SimHandle>, axum::Json(b): axum::Json<RegenerateBody>) -> Response {
    match h.regenerate_storage_key(&b.account_id, &b.key_name) {
        Ok(()) => Reply::empty(StatusCode::NO_CONTENT).into_response(),
        Err(e) => Reply::from(ArmError::bad_request("InvalidRequest", e.to_string())).into_response(),
    }
}

#[derive(Deserialize)]
struct ResourceBody {
    id: String,
    #[serde(rename = "type")]
    rtype: Option<String>,
    #[serde(default)]
    body: Value,
    #[serde(default)]
    patch: Value,
}

async fn admin_put_resource(State(h): State<SimHandle>, axum::Json(b): axum::Json<ResourceBody>) -> Response {
    let Some(rtype) = b.rtype else {
        return Reply::from(ArmError::bad_request("InvalidRequest", "'type' is required")).into_response();
    };
    let body = h.seed_resource(&b.id, &rtype, b.body);
    Reply::ok(body).into_response()
}

async fn admin_edit_resource(State(h): State<SimHandle>, axum::Json(b): axum::Json<ResourceBody>) -> Response {
    match h.edit_resource(&b.id, &b.patch) {
        Ok(body) => Reply::ok(body).into_response(),
        Err(e) => Reply::from(ArmError::new(StatusCode::NOT_FOUND, "ResourceNotFound", e.to_string())).into_response(),
    }
}

async fn admin_principal(State(h): State<SimHandle>, axum::Json(p): axum::Json<Principal>) -> Response {
    h.seed_principal(p);
    Reply::empty(StatusCode::NO_CONTENT).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionBody {
    subscription_id: String,
    #[serde(default)]
    display_name: String,
}

async fn admin_subscription(State(h): State<SimHandle>, axum::Json(b): axum::Json<SubscriptionBody>) -> Response {
    h.with_state(|s| s.add_subscription(&b.subscription_id, &b.display_name));
    Reply::empty(StatusCode::NO_CONTENT).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RgBody {
    subscription_id: String,
    name: String,
    location: String,
}

async fn admin_resource_group(State(h): State<SimHandle>, axum::Json(b): axum::Json<RgBody>) -> Response {
    let id = h.with_state(|s| s.add_resource_group(&b.subscription_id, &b.name, &b.location));
    Reply::ok(json!({"id": id})).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RaBody {
    scope: String,
    role_definition_id: String,
    principal_id: String,
}

async fn admin_role_assignment(State(h): State<SimHandle>, axum::Json(b): axum::Json<RaBody>) -> Response {
    let guid = b.role_definition_id.rsplit('/').next().unwrap_or_default().to_string();
    let id = h.with_state(|s| s.assign_role(&b.scope, &guid, &b.principal_id));
    Reply::ok(json!({"id": id})).into_response()
}

async fn admin_state(State(h): State<SimHandle>) -> Response {
    Reply::ok(json!(h.snapshot())).into_response()
}

async fn admin_restore(State(h): State<SimHandle>, axum::Json(s): axum::Json<SimState>) -> Response {
    h.restore(s);
    Reply::empty(StatusCode::NO_CONTENT).into_response()
}

async fn admin_activity(State(h): State<SimHandle>) -> Response {
    let events: Vec<Value> = h.lock().state.activity.iter().map(|e| e.body.clone()).collect();
    Reply::ok(json!(events)).into_response()
}

async fn admin_throttle(State(h): State<SimHandle>, axum::Json(c): axum::Json<ThrottleConfig>) -> Response {
    h.set_throttle(c);
    Reply::empty(StatusCode::NO_CONTENT).into_response()
}

#[derive(Deserialize)]
struct AdvanceBody {
    /// Seconds to move the simulator's clock forward.
    seconds: u64,
}

async fn admin_advance_clock(State(h): State<SimHandle>, axum::Json(b): axum::Json<AdvanceBody>) -> Response {
    let offset = h.advance_clock(std::time::Duration::from_secs(b.seconds));
    Reply::ok(json!({"offsetSeconds": offset.as_secs()})).into_response()
}

async fn admin_soft_deleted(State(h): State<SimHandle>) -> Response {
    Reply::ok(json!({"value": h.soft_deleted_workspaces()})).into_response()
}
