//! The ARM request pipeline and the per-resource-family handlers, all working on the locked in-memory state.

use std::time::Duration;

use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::auth::{Caller, Tokens, authorization_failed, granting_role, is_authorized};
use super::control::{CallLog, Faults, Throttle};
use super::lro::{PollStyle, scaled_retry_after};
use super::model::{
    ActivityEvent, OpError, OpKind, OpStatus, Operation, Resource, ResourceExt, RoleAssignment, Secret, SimState,
    id_key, scope_contains, sub_and_rg,
};
use super::reply::{ArmError, Reply};
use super::route::{
    COMPONENTS, DEPLOYMENTS, ENDPOINTS, REGISTRIES, RType, Routed, STORAGE, Target, VAULTS, WORKSPACES, resource_id,
};
use super::shapes;
use super::throttle::StorageThrottle;

// Azure ML computes and the ML per-location lists (usages, VM sizes).
#[path = "compute.rs"]
pub(super) mod compute;
// Azure ML workspace connections.
#[path = "connection.rs"]
pub(super) mod connection;

/// What a workspace PUT meets.
pub(crate) enum PutCheck {
    /// Nothing soft-deleted under this name: an ordinary create or update.
    Proceed,
    /// The PUT recovers the soft-deleted workspace.
    Recover,
    /// The create fails (its operation ends in Failed with this error).
    Blocked(OpError),
}

/// Runtime knobs (not persisted).
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    pub lro_duration: Duration,
    /// How long an activity-log event takes to become visible ([`super::activity_log`]).
    pub activity_log_delay: Duration,
    /// A fixed `Retry-After` (0 allowed), instead of Azure's values scaled by `time_scale`.
    pub retry_after_secs: Option<u64>,
    /// Simulated seconds per real second for the delays Azure asks clients to wait (`Retry-After`).
    pub time_scale: f64,
    pub token_lifetime: Duration,
    pub page_size: usize,
}

/// Everything behind the simulator's lock.
#[derive(Debug)]
pub(crate) struct Inner {
    pub state: SimState,
    pub calls: CallLog,
    pub faults: Faults,
    pub throttle: Throttle,
    pub storage_throttle: StorageThrottle,
    pub tokens: Tokens,
    pub knobs: Knobs,
    pub endpoint: String,
}

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub segs: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: bytes::Bytes,
    pub correlation_id: String,
    pub client_request_id: Option<String>,
}

impl Req {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Result<Value, ArmError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        let v: Value = serde_json::from_slice(&self.body).map_err(|e| {
            ArmError::bad_request(
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: '{e}'."),
            )
        })?;
        if !v.is_object() {
            return Err(ArmError::bad_request("InvalidRequestContent", "The request content must be a JSON object."));
        }
        Ok(v)
    }
}

fn is_busy(state: Option<&str>) -> bool {
    matches!(state, Some("Creating" | "Updating" | "Deleting"))
}

fn name_ok(name: &str, min: usize, max: usize, extra: &[char]) -> bool {
    (min..=max).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

fn merge_obj(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

impl Inner {
    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn authorize(&self, caller: &Caller, action: &str, scope: &str) -> Result<(), ArmError> {
        if is_authorized(&self.state, &caller.object_id, action, scope) {
            Ok(())
        } else {
            Err(authorization_failed(caller, action, scope))
        }
    }

    /// Region of the resource a request addresses, for per-region limits (`global` when it has none).
    pub fn region_of(&self, id: &str) -> String {
        self.state
            .resources
            .get(&id_key(id))
            .and_then(|r| r.body.get("location"))
            .and_then(Value::as_str)
            .map_or_else(|| "global".to_string(), |l| l.to_ascii_lowercase())
    }

    /// Authenticates a request's bearer token.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, ArmError> {
        self.tokens.authenticate(header, &self.endpoint, &self.state.tenant_id)
    }

    pub(crate) fn ensure_sub(&self, sub: &str) -> Result<String, ArmError> {
        self.state.subscriptions.get(&sub.to_ascii_lowercase()).map(|s| s.subscription_id.clone()).ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{sub}' could not be found."),
            )
        })
    }

    /// Canonical (sub, rg name) or ResourceGroupNotFound.
    pub(crate) fn ensure_rg(&self, sub: &str, rg: &str) -> Result<(String, String), ArmError> {
        let sub = self.ensure_sub(sub)?;
        let key = id_key(&format!("/subscriptions/{sub}/resourceGroups/{rg}"));
        self.state.resource_groups.get(&key).map(|g| (sub.clone(), g.name.clone())).ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{rg}' could not be found."),
            )
        })
    }

    fn get_resource(&self, id: &str, rtype: &str) -> Result<&Resource, ArmError> {
        self.state.resources.get(&id_key(id)).ok_or_else(|| ArmError::not_found(rtype, id))
    }

    pub(crate) fn page(&self, req: &Req, items: Vec<Value>) -> Value {
        let skip: usize = req.q("$skipToken").and_then(|s| s.parse().ok()).unwrap_or(0);
        let size = self.knobs.page_size.max(1);
        let total = items.len();
        let value: Vec<Value> = items.into_iter().skip(skip).take(size).collect();
        let mut out = json!({"value": value});
        if skip + size < total {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &req.query {
                if !k.eq_ignore_ascii_case("$skipToken") {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("$skipToken", &(skip + size).to_string());
            out["nextLink"] = json!(format!("{}{}?{}", self.endpoint, req.path, q.finish()));
        }
        out
    }

    // ---------------------------------------------------------------- LROs

    fn start_op(
        &mut self,
        routed: &Routed,
        caller: &Caller,
        kind: OpKind,
        resource_id: &str,
        returns_body: bool,
        failure: Option<OpError>,
    ) -> Operation {
        let now = Self::now();
        let ms = i64::try_from(self.knobs.lro_duration.as_millis()).unwrap_or(i64::MAX);
        let due = now.checked_add(SignedDuration::from_millis(ms)).unwrap_or(now);
        let namespace = routed.action.split('/').next().unwrap_or("Microsoft.Resources").to_string();
        let region = self
            .state
            .resources
            .get(&id_key(resource_id))
            .and_then(|r| r.body.get("location"))
            .and_then(Value::as_str)
            .map(|l| l.to_ascii_lowercase().replace(' ', ""))
            .unwrap_or_else(|| "global".into());
        let token = match PollStyle::of(&routed.op) {
            // The recorded workspace operation ids are opaque url-safe tokens, RG deletions a base64 job id.
            PollStyle::MlWorkspace | PollStyle::ArmOperationResults => {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
            }
            PollStyle::MfeCreate | PollStyle::MfeAction => {
                format!(
                    "{}:{}:{}",
                    if routed.op.starts_with("OnlineDeployments") { "odidp" } else { "oeidp" },
                    uuid::Uuid::new_v4(),
                    uuid::Uuid::new_v4()
                )
            }
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let op = Operation {
            id: token,
            subscription_id: routed.sub.clone().unwrap_or_default(),
            namespace,
            resource_id: resource_id.into(),
            operation: routed.op.clone(),
            action: routed.action.clone(),
            caller: caller.object_id.clone(),
            kind,
            started: now,
            due,
            ended: None,
            status: OpStatus::InProgress,
            failure,
            returns_body,
            region,
            api_version: String::new(),
        };
        self.state.operations.insert(op.id.clone(), op.clone());
        op
    }

    /// The status-monitor (`status`) or result-monitor URL of an operation, shaped per its [`PollStyle`].
    fn poll_url(&self, op: &Operation, status: bool, api_version: &str) -> String {
        let v = if op.api_version.is_empty() { api_version } else { op.api_version.as_str() };
        let sub = format!("{}/subscriptions/{}", self.endpoint, op.subscription_id);
        match PollStyle::of(&op.operation) {
            PollStyle::MlWorkspace => format!(
                "{sub}/providers/Microsoft.MachineLearningServices/locations/{}/workspaceOperationsStatus/{}?api-version={v}&type={}",
                op.region,
                op.id,
                if status { "async" } else { "location" }
            ),
            PollStyle::MfeCreate | PollStyle::MfeAction => format!(
                "{sub}/providers/Microsoft.MachineLearningServices/locations/{}/{}/{}?api-version={v}",
                op.region,
                if status { "mfeOperationsStatus" } else { "mfeOperationResults" },
                op.id
            ),
            PollStyle::Storage => format!(
                "{sub}/providers/Microsoft.Storage/locations/{}/asyncoperations/{}?monitor=true&api-version={v}",
                op.region, op.id
            ),
            PollStyle::ArmOperationResults => format!("{sub}/operationresults/{}?api-version={v}", op.id),
            PollStyle::Generic | PollStyle::MlCompute => format!(
                "{sub}/providers/{}/locations/global/{}/{}?api-version={v}",
                op.namespace,
                if status { "operationStatuses" } else { "operationResults" },
                op.id
            ),
        }
    }

    /// `Retry-After` for `style` (None: Azure sends none there).
    fn retry_after(&self, style: PollStyle) -> Option<String> {
        let base = style.retry_after_base()?;
        Some(scaled_retry_after(base, self.knobs.time_scale, self.knobs.retry_after_secs).to_string())
    }

    /// Headers of an operation's first answer, as the recordings show them per style.
    pub(super) fn lro_reply(&mut self, reply: Reply, op: &Operation, req: &Req) -> Reply {
        let v = req.q("api-version").unwrap_or("2025-01-01").to_string();
        if let Some(o) = self.state.operations.get_mut(&op.id) {
            o.api_version = v.clone();
        }
        let mut op = op.clone();
        op.api_version = v.clone();
        let style = PollStyle::of(&op.operation);
        let mut reply = match style {
            PollStyle::MlWorkspace => reply
                .header("Location", self.poll_url(&op, false, &v))
                .header("Azure-AsyncOperation", self.poll_url(&op, true, &v)),
            PollStyle::MfeCreate => reply
                .header("Location", format!("{}{}?api-version={v}", self.endpoint, op.resource_id))
                .header("Azure-AsyncOperation", self.poll_url(&op, true, &v))
                .header("x-ms-async-operation-timeout", "PT30M"),
            PollStyle::MfeAction => {
                let mut r = reply
                    .header("Location", self.poll_url(&op, false, &v))
                    .header("x-ms-async-operation-timeout", "PT1H");
                if op.operation == "OnlineEndpoints_RegenerateKeys" {
                    r = r.header("Azure-AsyncOperation", self.poll_url(&op, true, &v));
                }
                r
            }
            PollStyle::MlCompute => {
                let r = reply.header("Azure-AsyncOperation", self.poll_url(&op, true, &v));
                if op.operation == "Compute_Delete" { r.header("Location", self.poll_url(&op, false, &v)) } else { r }
            }
            PollStyle::Storage | PollStyle::ArmOperationResults | PollStyle::Generic => {
                reply.header("Location", self.poll_url(&op, false, &v))
            }
        };
        if let Some(ra) = self.retry_after(style) {
            reply = reply.header("Retry-After", ra);
        }
        reply
    }

    /// Completes every operation whose time has come.
    pub fn advance(&mut self) {
        self.expire_soft_deleted();
        let now = Self::now();
        let due: Vec<String> = self
            .state
            .operations
            .values()
            .filter(|o| o.status == OpStatus::InProgress && o.due <= now)
            .map(|o| o.id.clone())
            .collect();
        for id in due {
            let Some(mut op) = self.state.operations.remove(&id) else {
                continue;
            };
            if op.failure.is_none()
                && let Err(e) = self.complete(&op)
            {
                op.failure =
                    Some(OpError { status: e.status.as_u16(), code: e.code, message: e.message, details: vec![] });
            }
            if op.failure.is_some() {
                op.status = OpStatus::Failed;
                if let Some(r) = self.state.resources.get_mut(&id_key(&op.resource_id)) {
                    match op.kind {
                        OpKind::Provision => r.set_provisioning_state("Failed"),
                        OpKind::Delete | OpKind::SoftDeleteWorkspace => r.set_provisioning_state("Succeeded"),
                        _ => {}
                    }
                }
            } else {
                op.status = OpStatus::Succeeded;
            }
            op.ended = Some(now);
            let status = if op.status == OpStatus::Succeeded { "Succeeded" } else { "Failed" };
            let caller = Caller { object_id: op.caller.clone(), app_id: String::new(), name: op.caller.clone() };
            self.log_event(&caller, &op.action, &op.resource_id, "EndRequest", status, "", None, &op.id);
            self.state.operations.insert(id, op);
        }
    }

    fn complete(&mut self, op: &Operation) -> Result<(), ArmError> {
        let key = id_key(&op.resource_id);
        match &op.kind {
            OpKind::Provision => {
                let storage = self
                    .state
                    .resources
                    .get(&key)
                    .and_then(|r| r.body.pointer("/properties/storageAccount"))
                    .and_then(Value::as_str)
                    .map(String::from);
                let captured = storage.and_then(|s| self.state.storage_key(&s, "key1"));
                if let Some(r) = self.state.resources.get_mut(&key) {
                    r.set_provisioning_state("Succeeded");
                    if let ResourceExt::Workspace { user_storage_key, .. } = &mut r.ext
                        && user_storage_key.is_none()
                    {
                        *user_storage_key = captured;
                    }
                }
                self.compute_settle(&op.resource_id);
            }
            OpKind::Delete => self.remove_tree(&op.resource_id),
            OpKind::SoftDeleteWorkspace => self.soft_delete_workspace(&op.resource_id),
            OpKind::ResyncKeys => {
                let storage = self
                    .state
                    .resources
                    .get(&key)
                    .and_then(|r| r.body.pointer("/properties/storageAccount"))
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_default();
                let Some(k) = self.state.storage_key(&storage, "key1") else {
                    return Err(ArmError::bad_request(
                        "DependentResourceNotFound",
                        format!("The storage account '{storage}' of the workspace could not be found."),
                    ));
                };
                if let Some(r) = self.state.resources.get_mut(&key)
                    && let ResourceExt::Workspace { user_storage_key, .. } = &mut r.ext
                {
                    *user_storage_key = Some(k);
                }
            }
            OpKind::RegenerateEndpointKey { key_type, key_value } => {
                if let Some(r) = self.state.resources.get_mut(&key)
                    && let ResourceExt::Endpoint { primary, secondary } = &mut r.ext
                {
                    let new = key_value.clone().unwrap_or_else(|| Secret::random(24));
                    if key_type.eq_ignore_ascii_case("Primary") {
                        *primary = new;
                    } else {
                        *secondary = new;
                    }
                }
            }
            OpKind::DeleteResourceGroup => {
                self.remove_tree(&op.resource_id);
                self.state.resource_groups.remove(&key);
            }
            OpKind::ComputePower { action } => self.compute_power_done(&op.resource_id, action),
            OpKind::ValidateMove => {}
            OpKind::Move { resources, target } => self.apply_move(resources, target),
        }
        Ok(())
    }

    /// Removes a resource, everything below it, and role assignments scoped inside it.
    fn remove_tree(&mut self, id: &str) {
        self.state.resources.retain(|_, r| !scope_contains(id, &r.id));
        self.state.role_assignments.retain(|_, ra| !scope_contains(id, &ra.scope));
    }

    fn poll(&self, req: &Req, caller: &Caller, op_id: &str, status: bool) -> Result<Reply, ArmError> {
        let op = self.state.operations.values().find(|o| o.id.eq_ignore_ascii_case(op_id)).ok_or_else(|| {
            ArmError::new(StatusCode::NOT_FOUND, "OperationNotFound", format!("The operation '{op_id}' was not found."))
        })?;
        self.authorize(caller, &format!("{}/locations/operationresults/read", op.namespace), &op.resource_id)?;
        let style = PollStyle::of(&op.operation);
        // One URL serves both monitors of a workspace operation; `type` says which.
        let status = match style {
            PollStyle::MlWorkspace => !req.q("type").is_some_and(|t| t.eq_ignore_ascii_case("location")),
            _ => status,
        };
        let v = req.q("api-version").unwrap_or("2025-01-01").to_string();
        let status_text = match op.status {
            OpStatus::InProgress => "InProgress",
            OpStatus::Succeeded => "Succeeded",
            OpStatus::Failed => "Failed",
        };
        if status {
            let progress = match op.ended {
                Some(_) => 100.0,
                None => {
                    let total = op.due.duration_since(op.started).as_secs_f64().max(0.001);
                    let done = Self::now().duration_since(op.started).as_secs_f64();
                    (done / total * 100.0).clamp(0.0, 99.0).floor()
                }
            };
            let mut body = match style {
                // Recorded: `{"status": "Succeeded", "percentComplete": 100.0}`, nothing else.
                PollStyle::MlWorkspace => json!({"status": status_text, "percentComplete": progress}),
                // Recorded: id, name, status, startTime, endTime, percentComplete (0.0 even when done).
                PollStyle::MfeCreate | PollStyle::MfeAction => {
                    let url = self.poll_url(op, true, &v);
                    let id = url.trim_start_matches(&self.endpoint).split('?').next().unwrap_or_default().to_string();
                    let mut b = json!({"id": id, "name": op.id, "status": status_text, "startTime": op.started.to_string(), "percentComplete": 0.0});
                    if let Some(end) = op.ended {
                        b["endTime"] = json!(end.to_string());
                    }
                    b
                }
                _ => {
                    let url = self.poll_url(op, true, &v);
                    let id = url.trim_start_matches(&self.endpoint).split('?').next().unwrap_or_default().to_string();
                    let mut b = json!({"id": id, "name": op.id, "status": status_text, "startTime": op.started.to_string(), "percentComplete": progress});
                    if let Some(end) = op.ended {
                        b["endTime"] = json!(end.to_string());
                    }
                    b
                }
            };
            if op.status == OpStatus::Failed
                && let Some(f) = &op.failure
            {
                body["error"] = json!({"code": f.code, "message": f.message});
            }
            let mut r = Reply::ok(body);
            if op.status == OpStatus::InProgress
                && let Some(ra) = self.retry_after(style)
            {
                r = r.header("Retry-After", ra);
            }
            return Ok(r);
        }
        match op.status {
            OpStatus::InProgress => {
                // Running: 202 with the same Location again (and Retry-After where the style sends one).
                let mut r = Reply::empty(StatusCode::ACCEPTED).header("Location", self.poll_url(op, false, &v));
                if let Some(ra) = self.retry_after(style) {
                    r = r.header("Retry-After", ra);
                }
                Ok(r)
            }
            OpStatus::Failed => {
                let f = op.failure.clone().unwrap_or(OpError {
                    status: 500,
                    code: "InternalServerError".into(),
                    message: "The operation failed.".into(),
                    details: vec![],
                });
                let mut e = ArmError::new(
                    StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &f.code,
                    f.message,
                );
                e.extra.details = f
                    .details
                    .iter()
                    .map(|(c, m, t)| {
                        let d = ArmError::bad_request(c, m.clone());
                        match t {
                            Some(t) => d.target(t),
                            None => d,
                        }
                    })
                    .collect();
                Err(e)
            }
            OpStatus::Succeeded => {
                let body = op
                    .returns_body
                    .then(|| self.state.resources.get(&id_key(&op.resource_id)).map(|r| self.render(r)))
                    .flatten();
                Ok(match (style, body) {
                    // ARM's own operations: RG delete ends in 200 with an empty body (recorded), validate/move in
                    // 204 (Resources REST reference).
                    (PollStyle::ArmOperationResults, _) => match op.kind {
                        OpKind::DeleteResourceGroup => Reply::empty(StatusCode::OK),
                        _ => Reply::empty(StatusCode::NO_CONTENT),
                    },
                    (PollStyle::Generic | PollStyle::MlCompute, Some(b)) => Reply::ok(b),
                    (PollStyle::Generic | PollStyle::MlCompute, None) => Reply::empty(StatusCode::NO_CONTENT),
                    // Workspace/MFE/storage result monitors: 200 with the resource, or 200 with an empty body
                    // (workspace delete: recorded), never 204.
                    (_, Some(b)) => Reply::ok(b),
                    (_, None) => Reply::empty(StatusCode::OK),
                })
            }
        }
    }

    // ---------------------------------------------------------------- activity log

    #[allow(clippy::too_many_arguments)]
    fn log_event(
        &mut self,
        caller: &Caller,
        action: &str,
        resource_id: &str,
        event_name: &str,
        status: &str,
        method: &str,
        http_status: Option<u16>,
        correlation_id: &str,
    ) {
        let now = Self::now();
        let (sub, rg) = sub_and_rg(resource_id);
        let sub = sub.unwrap_or_default();
        let rg = rg.unwrap_or_default();
        let provider = action.split('/').next().unwrap_or_default();
        let event_id = uuid::Uuid::new_v4().to_string();
        let localized = |v: &str| json!({"value": v, "localizedValue": v});
        let role = granting_role(&self.state, &caller.object_id, action, resource_id).unwrap_or_default();
        let mut body = json!({
            "authorization": {"action": action, "role": role, "scope": resource_id},
            "caller": caller.object_id,
            "channels": "Operation",
            "claims": {
                "aud": "https://management.azure.com",
                "iss": format!("https://sts.windows.net/{}/", self.state.tenant_id),
                "http://schemas.microsoft.com/identity/claims/objectidentifier": caller.object_id,
                "appid": caller.app_id,
                "name": caller.name,
            },
            "correlationId": correlation_id,
            "description": "",
            "eventDataId": event_id,
            "eventName": {"value": event_name, "localizedValue": if event_name == "BeginRequest" { "Begin request" } else { "End request" }},
            "category": localized("Administrative"),
            "httpRequest": {"clientRequestId": correlation_id, "clientIpAddress": "127.0.0.1", "method": method},
            "id": format!("{resource_id}/events/{event_id}/ticks/{}", now.as_nanosecond() / 100),
            "level": "Informational",
            "resourceGroupName": rg,
            "resourceProviderName": localized(provider),
            "resourceId": resource_id,
            "resourceType": localized(action.rsplit_once('/').map_or(action, |(a, _)| a)),
            "operationId": correlation_id,
            "operationName": localized(action),
            "properties": {},
            "status": localized(status),
            "subStatus": localized(""),
            "eventTimestamp": now.to_string(),
            "submissionTimestamp": now.to_string(),
            "subscriptionId": sub,
            "tenantId": self.state.tenant_id,
        });
        if let Some(code) = http_status {
            let reason =
                StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("").replace(' ', "");
            body["properties"] = json!({"statusCode": reason});
            body["subStatus"] =
                json!({"value": reason, "localizedValue": format!("{reason} (HTTP Status Code: {code})")});
        }
        self.state.activity.push(ActivityEvent {
            timestamp: now,
            subscription_id: sub,
            resource_id: resource_id.into(),
            resource_group: rg,
            operation: action.into(),
            body,
        });
    }

    /// Records Begin/End activity-log events for a write.
    pub fn log_write(&mut self, caller: &Caller, routed: &Routed, req: &Req, status: StatusCode) {
        let end = if status.as_u16() >= 400 {
            "Failed"
        } else if status == StatusCode::ACCEPTED || status == StatusCode::CREATED && self.has_pending(&routed.scope) {
            "Accepted"
        } else {
            "Succeeded"
        };
        let m = req.method.as_str().to_string();
        let cid = req.correlation_id.clone();
        self.log_event(caller, &routed.action, &routed.scope, "BeginRequest", "Started", &m, None, &cid);
        self.log_event(caller, &routed.action, &routed.scope, "EndRequest", end, &m, Some(status.as_u16()), &cid);
    }

    /// Activity-log events for a change made through the admin API (someone acting outside the operator).
    pub fn log_admin_event(&mut self, resource_id: &str, action: &str) {
        let caller = Caller {
            object_id: "00000000-0000-0000-0000-00000000ad00".into(),
            app_id: String::new(),
            name: "portal-user".into(),
        };
        let cid = uuid::Uuid::new_v4().to_string();
        self.log_event(&caller, action, resource_id, "BeginRequest", "Started", "POST", None, &cid);
        self.log_event(&caller, action, resource_id, "EndRequest", "Succeeded", "POST", Some(200), &cid);
    }

    fn has_pending(&self, id: &str) -> bool {
        self.pending_op(id).is_some()
    }

    /// The long-running operation still running on the resource `id`, if any (a second DELETE answers with it).
    pub(super) fn pending_op(&self, id: &str) -> Option<Operation> {
        let key = id_key(id);
        self.state
            .operations
            .values()
            .find(|o| o.status == OpStatus::InProgress && id_key(&o.resource_id) == key)
            .cloned()
    }

    // ---------------------------------------------------------------- dispatch

    /// Runs the handler of an authenticated, admitted request. RBAC is checked here.
    pub fn execute(
        &mut self,
        routed: &Routed,
        req: &Req,
        caller: &Caller,
        lro_failure: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        // ARM answers for an unknown subscription, and for a namespace it has not registered, before RBAC.
        if let Some(sub) = &routed.sub
            && !matches!(routed.target, Target::RoleDefinition { .. } | Target::RoleAssignment { .. })
        {
            self.ensure_sub(sub)?;
            if let Target::Resource { rtype, .. } | Target::Collection { rtype, .. } = &routed.target {
                self.check_registered(sub, rtype.full.split('/').next().unwrap_or_default())?;
            }
        }
        // Role definitions are readable by every signed-in principal of the tenant (built-ins live at `/`).
        if !matches!(routed.target, Target::RoleDefinition { .. }) {
            self.authorize(caller, &routed.action, &routed.scope)?;
        }
        if !matches!(req.method, Method::GET | Method::HEAD)
            && let Some(group) = self.moving_group(&req.path)
        {
            // While a move runs, its source and target resource groups are locked for writes and deletes (documented
            // ARM behaviour: the workspace is unavailable). The error code is not documented; ScopeLocked is what ARM
            // answers for a locked scope.
            return Err(ArmError::conflict(
                "ScopeLocked",
                format!(
                    "The scope '{group}' cannot perform write operations: resources are being moved into or out of it."
                ),
            ));
        }
        let sub = routed.sub.clone().unwrap_or_default();
        match &routed.target {
            Target::Subscription => {
                let sub = self.ensure_sub(&sub)?;
                let s = &self.state.subscriptions[&sub.to_ascii_lowercase()];
                Ok(Reply::ok(json!({
                    "id": format!("/subscriptions/{}", s.subscription_id),
                    "subscriptionId": s.subscription_id,
                    "tenantId": self.state.tenant_id,
                    "displayName": s.display_name,
                    "state": "Enabled",
                    "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01", "spendingLimit": "Off"},
                    "authorizationSource": "RoleBased",
                })))
            }
            Target::ResourceGroupList => {
                let sub = self.ensure_sub(&sub)?;
                let prefix = id_key(&format!("/subscriptions/{sub}"));
                let items = self
                    .state
                    .resource_groups
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("{prefix}/")))
                    .map(|(_, g)| g.to_json())
                    .collect();
                Ok(Reply::ok(self.page(req, items)))
            }
            Target::ResourceGroup { rg } => {
                super::tags::check_request(&req.method, &req.body, "Microsoft.Resources/resourceGroups")?;
                self.resource_group(req, routed, caller, &sub, rg)
            }
            Target::MoveAction { rg, validate } => {
                self.move_action(req, routed, caller, &sub, rg, *validate, lro_failure)
            }
            Target::ActivityLog => {
                let sub = self.ensure_sub(&sub)?;
                Ok(self.activity_list(req, &sub))
            }
            Target::Poll { op_id, status } => self.poll(req, caller, op_id, *status),
            Target::ResourceList { rg } => self.resource_list(req, &sub, rg.as_deref()),
            Target::Providers { ns, register } => self.providers(req, &sub, ns.as_deref(), *register),
            Target::RoleAssignment { scope, name } => match (&req.method, name) {
                (&Method::GET, None) => self.ra_list(req, scope),
                (&Method::GET, Some(n)) => self.ra_get(scope, n),
                (&Method::PUT, Some(n)) => self.ra_put(req, caller, scope, n),
                (&Method::DELETE, Some(n)) => self.ra_delete(scope, n),
                _ => Err(method_not_allowed(req)),
            },
            Target::RoleDefinition { guid, .. } => match guid {
                Some(g) => {
                    self.state.role_definitions.get(&g.to_ascii_lowercase()).map(|d| Reply::ok(d.to_json())).ok_or_else(
                        || {
                            ArmError::new(
                                StatusCode::NOT_FOUND,
                                "RoleDefinitionDoesNotExist",
                                format!("The specified role definition with ID '{g}' does not exist."),
                            )
                        },
                    )
                }
                None => {
                    let name_filter = req.q("$filter").and_then(|f| {
                        f.strip_prefix("roleName eq ").map(|v| v.trim().trim_matches('\'').to_ascii_lowercase())
                    });
                    let items = self
                        .state
                        .role_definitions
                        .values()
                        .filter(|d| name_filter.as_ref().is_none_or(|n| d.role_name.to_ascii_lowercase() == *n))
                        .map(|d| d.to_json())
                        .collect();
                    Ok(Reply::ok(self.page(req, items)))
                }
            },
            Target::Compute(target) => self.compute(target, routed, req, caller, lro_failure),
            Target::Connection(target) => self.connection(target, routed, req),
            Target::Collection { rg, rtype, parent_names } => self.list(req, &sub, rg.as_deref(), rtype, parent_names),
            Target::Resource { rg, rtype, names, action } => {
                if action.is_none() {
                    super::tags::check_request(&req.method, &req.body, rtype.full)?;
                }
                let (sub, rg) = self.ensure_rg(&sub, rg)?;
                let id = resource_id(&sub, &rg, rtype, names);
                // Use the stored casing when the resource exists.
                let id = self.state.resources.get(&id_key(&id)).map_or(id, |r| r.id.clone());
                self.resource(req, routed, caller, rtype, &id, action.as_deref(), lro_failure)
            }
        }
    }

    fn render(&self, r: &Resource) -> Value {
        r.body.clone()
    }

    fn list(
        &self,
        req: &Req,
        sub: &str,
        rg: Option<&str>,
        rtype: &RType,
        parent_names: &[String],
    ) -> Result<Reply, ArmError> {
        let scope = match rg {
            Some(rg) => {
                let (sub, rg) = self.ensure_rg(sub, rg)?;
                if parent_names.is_empty() {
                    format!("/subscriptions/{sub}/resourceGroups/{rg}")
                } else {
                    let parent = super::route::TYPES
                        .iter()
                        .find(|t| rtype.full.rsplit_once('/').is_some_and(|(p, _)| p.eq_ignore_ascii_case(t.full)));
                    let Some(pt) = parent else {
                        return Err(ArmError::not_found(rtype.full, ""));
                    };
                    let pid = resource_id(&sub, &rg, pt, parent_names);
                    self.get_resource(&pid, pt.full)?;
                    pid
                }
            }
            None => format!("/subscriptions/{}", self.ensure_sub(sub)?),
        };
        let depth = rtype.full.matches('/').count();
        let items = self
            .state
            .resources_under(&scope)
            .filter(|r| r.rtype.eq_ignore_ascii_case(rtype.full) && r.rtype.matches('/').count() == depth)
            .map(|r| self.render(r))
            .collect();
        Ok(Reply::ok(self.page(req, items)))
    }

    // ---------------------------------------------------------------- resource groups

    fn resource_group(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        sub: &str,
        rg: &str,
    ) -> Result<Reply, ArmError> {
        let sub = self.ensure_sub(sub)?;
        let id = format!("/subscriptions/{sub}/resourceGroups/{rg}");
        let key = id_key(&id);
        match req.method {
            Method::GET | Method::HEAD => match self.state.resource_groups.get(&key) {
                Some(g) if req.method == Method::HEAD => {
                    let _ = g;
                    Ok(Reply::empty(StatusCode::NO_CONTENT))
                }
                Some(g) => Ok(Reply::ok(g.to_json())),
                None if req.method == Method::HEAD => Ok(Reply::empty(StatusCode::NOT_FOUND)),
                None => {
                    Err(self.ensure_rg(&sub, rg).err().unwrap_or_else(|| ArmError::not_found("resourceGroups", &id)))
                }
            },
            Method::PUT | Method::PATCH => {
                let body = req.json()?;
                let existing = self.state.resource_groups.get(&key).cloned();
                if req.method == Method::PATCH && existing.is_none() {
                    return Err(self
                        .ensure_rg(&sub, rg)
                        .err()
                        .unwrap_or_else(|| ArmError::not_found("resourceGroups", &id)));
                }
                let location = body.get("location").and_then(Value::as_str).map(String::from);
                if !name_ok(rg, 1, 90, &['-', '_', '.', '(', ')']) || rg.ends_with('.') {
                    return Err(ArmError::bad_request(
                        "InvalidResourceGroup",
                        format!("The provided resource group name '{rg}' has these invalid characters."),
                    ));
                }
                let mut g = match (existing.clone(), location) {
                    (Some(g), Some(l)) if !g.location.eq_ignore_ascii_case(&l) => {
                        return Err(ArmError::conflict(
                            "InvalidResourceGroupLocation",
                            format!(
                                "Invalid resource group location '{l}'. The Resource group already exists in location '{}'.",
                                g.location
                            ),
                        ));
                    }
                    (Some(g), _) => g,
                    (None, Some(l)) => super::model::ResourceGroup {
                        id: id.clone(),
                        name: rg.into(),
                        location: l,
                        tags: Value::Null,
                        managed_by: None,
                    },
                    (None, None) => {
                        return Err(ArmError::bad_request(
                            "LocationRequired",
                            "The location property is required for this definition.",
                        ));
                    }
                };
                if let Some(t) = body.get("tags") {
                    g.tags = t.clone();
                }
                if let Some(m) = body.get("managedBy").and_then(Value::as_str) {
                    g.managed_by = Some(m.into());
                }
                let out = g.to_json();
                self.state.resource_groups.insert(key, g);
                Ok(Reply::json(if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED }, out))
            }
            Method::DELETE => {
                let g = self.state.resource_groups.get(&key).cloned().ok_or_else(|| {
                    ArmError::new(
                        StatusCode::NOT_FOUND,
                        "ResourceGroupNotFound",
                        format!("Resource group '{rg}' could not be found."),
                    )
                })?;
                let op = self.start_op(routed, caller, OpKind::DeleteResourceGroup, &g.id, false, None);
                Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
            }
            _ => Err(method_not_allowed(req)),
        }
    }

    // ---------------------------------------------------------------- resources

    #[allow(clippy::too_many_arguments)]
    fn resource(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        rtype: &RType,
        id: &str,
        action: Option<&str>,
        lro_failure: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let key = id_key(id);
        let action_l = action.map(str::to_ascii_lowercase);
        match (rtype.full, req.method.as_str(), action_l.as_deref()) {
            (_, "GET", None) => {
                let r = self.get_resource(id, rtype.full)?;
                let mut body = self.render(r);
                if rtype.full == STORAGE
                    && req.q("$expand").is_some_and(|e| e.to_ascii_lowercase().contains("georeplicationstats"))
                {
                    body["properties"]["geoReplicationStats"] =
                        json!({"canFailover": false, "lastSyncTime": Self::now().to_string(), "status": "Live"});
                }
                Ok(Reply::ok(body))
            }
            (STORAGE | VAULTS | COMPONENTS | REGISTRIES, "PUT", None) => {
                self.plain_put(req, routed, caller, rtype, id, lro_failure)
            }
            (STORAGE | VAULTS | COMPONENTS | REGISTRIES, "PATCH", None) => {
                let body = req.json()?;
                let r = self.state.resources.get_mut(&key).ok_or_else(|| ArmError::not_found(rtype.full, id))?;
                for f in ["tags", "sku", "properties", "identity"] {
                    if let Some(v) = body.get(f) {
                        if f == "properties" {
                            let mut v = v.clone();
                            if let Some(o) = v.as_object_mut() {
                                o.remove("keyCreationTime");
                                o.remove("provisioningState");
                            }
                            merge_obj(&mut r.body["properties"], &v);
                        } else {
                            r.body[f] = v.clone();
                        }
                    }
                }
                Ok(Reply::ok(r.body.clone()))
            }
            (STORAGE | VAULTS | COMPONENTS | REGISTRIES, "DELETE", None) => {
                if self.state.resources.contains_key(&key) {
                    self.remove_tree(id);
                    Ok(Reply::empty(StatusCode::OK))
                } else {
                    Ok(Reply::empty(StatusCode::NO_CONTENT))
                }
            }
            (STORAGE, "POST", Some("listkeys")) => {
                self.get_resource(id, rtype.full)?;
                Ok(Reply::ok(self.storage_keys_json(id)))
            }
            (STORAGE, "POST", Some("regeneratekey")) => {
                self.get_resource(id, rtype.full)?;
                let body = req.json()?;
                let name = body.get("keyName").and_then(Value::as_str).unwrap_or_default().to_string();
                if !self.state.regenerate_storage_key(id, &name) {
                    return Err(ArmError::bad_request(
                        "InvalidValuesForRequestParameters",
                        format!(
                            "Values for request parameters are invalid: keyName '{name}'. Valid values are key1, key2."
                        ),
                    )
                    .target("keyName"));
                }
                Ok(Reply::ok(self.storage_keys_json(id)))
            }
            (WORKSPACES, "PUT", None) => self.workspace_put(req, routed, caller, id, lro_failure),
            (WORKSPACES, "PATCH", None) => self.workspace_patch(req, routed, caller, id, lro_failure),
            (WORKSPACES | ENDPOINTS | DEPLOYMENTS, "DELETE", None) => {
                if rtype.full == WORKSPACES
                    && let Some(reply) = self.delete_soft_deleted(req, id)
                {
                    return Ok(reply);
                }
                let Some(r) = self.state.resources.get(&key) else {
                    return Ok(Reply::empty(StatusCode::NO_CONTENT));
                };
                if is_busy(r.provisioning_state())
                    && r.provisioning_state() == Some("Deleting")
                    && let Some(op) = self.pending_op(id)
                {
                    return Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req));
                }
                if rtype.full == DEPLOYMENTS {
                    let name = id.rsplit('/').next().unwrap_or_default();
                    let ep_id = id.rsplit_once("/deployments/").map(|(e, _)| e).unwrap_or_default();
                    let traffic = self
                        .state
                        .resources
                        .get(&id_key(ep_id))
                        .and_then(|e| e.body.pointer("/properties/traffic"))
                        .and_then(Value::as_object)
                        .and_then(|t| {
                            t.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_i64())
                        })
                        .unwrap_or(0);
                    if traffic > 0 {
                        return Err(ArmError::bad_request(
                            "BadArgument",
                            format!(
                                "Deployment '{name}' receives {traffic}% of the endpoint traffic; set its traffic to 0 before deleting it."
                            ),
                        ));
                    }
                }
                if let Some(r) = self.state.resources.get_mut(&key) {
                    r.set_provisioning_state("Deleting");
                }
                let kind = if rtype.full == WORKSPACES { self.workspace_delete_kind(req, id) } else { OpKind::Delete };
                let op = self.start_op(routed, caller, kind, id, false, lro_failure);
                Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
            }
            (WORKSPACES, "POST", Some("listkeys")) => {
                let r = self.get_resource(id, rtype.full)?;
                let storage = r.body.pointer("/properties/storageAccount").cloned().unwrap_or(Value::Null);
                // With identity-based datastores the workspace holds no account key (the official example).
                let identity = r
                    .body
                    .pointer("/properties/systemDatastoresAuthMode")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.eq_ignore_ascii_case("Identity"));
                let key = if identity { None } else { self.state.workspace_cached_key(id) };
                let ai_key = r
                    .body
                    .pointer("/properties/applicationInsights")
                    .and_then(Value::as_str)
                    .and_then(|ai| self.state.resources.get(&id_key(ai)))
                    .and_then(|ai| ai.body.pointer("/properties/InstrumentationKey").cloned())
                    .unwrap_or(Value::Null);
                // The registry's admin passwords as the workspace caches them: stable between calls (Azure returns
                // the same values until they are regenerated), new after a resync that picked up a new storage key.
                let acr = r.body.pointer("/properties/containerRegistry").and_then(Value::as_str).map(|acr| {
                    let name = acr.rsplit('/').next().unwrap_or_default().to_string();
                    let seed =
                        format!("{}|{}|{}", self.state.tenant_id, id_key(acr), key.as_ref().map_or("", Secret::expose));
                    let password = |n: &str| {
                        let d = ring::digest::digest(&ring::digest::SHA256, format!("{seed}|{n}").as_bytes());
                        d.as_ref().iter().take(18).map(|b| format!("{b:02x}")).collect::<String>()
                    };
                    json!({"location": null, "username": name, "passwords": [
                        {"name": "password", "value": password("password")},
                        {"name": "password2", "value": password("password2")}]})
                });
                // Recorded: the storage id under its 2024 name `userStorageArmId` only, `containerRegistryCredentials`
                // null without a registry, notebook keys present.
                Ok(Reply::ok(json!({
                    "userStorageKey": key.as_ref().map(Secret::expose),
                    "userStorageArmId": storage,
                    "appInsightsInstrumentationKey": ai_key,
                    "containerRegistryCredentials": acr,
                    "notebookAccessKeys": {"primaryAccessKey": Secret::random(32).expose(), "secondaryAccessKey": Secret::random(32).expose()},
                })))
            }
            (WORKSPACES, "POST", Some("resynckeys")) => {
                let r = self.get_resource(id, rtype.full)?;
                if is_busy(r.provisioning_state()) {
                    return Err(busy(id));
                }
                // Recorded: the Location poll of a resync ends in 200 with the whole workspace.
                let op = self.start_op(routed, caller, OpKind::ResyncKeys, id, true, lro_failure);
                Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
            }
            (ENDPOINTS | DEPLOYMENTS, "PUT", None) => self.online_put(req, routed, caller, rtype, id, lro_failure),
            (ENDPOINTS | DEPLOYMENTS, "PATCH", None) => {
                let body = req.json()?;
                let r = self.state.resources.get_mut(&key).ok_or_else(|| ArmError::not_found(rtype.full, id))?;
                if is_busy(r.provisioning_state()) {
                    return Err(busy(id));
                }
                for f in ["tags", "identity", "sku", "kind"] {
                    if let Some(v) = body.get(f) {
                        r.body[f] = v.clone();
                    }
                }
                r.set_provisioning_state("Updating");
                let op = self.start_op(routed, caller, OpKind::Provision, id, true, lro_failure);
                Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
            }
            (ENDPOINTS, "POST", Some("listkeys")) => match &self.get_resource(id, rtype.full)?.ext {
                // Recorded: an AADToken endpoint has no keys; listKeys answers both as null.
                _ if self
                    .get_resource(id, rtype.full)?
                    .body
                    .pointer("/properties/authMode")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.eq_ignore_ascii_case("AADToken")) =>
                {
                    Ok(Reply::ok(json!({"primaryKey": null, "secondaryKey": null})))
                }
                ResourceExt::Endpoint { primary, secondary } => {
                    Ok(Reply::ok(json!({"primaryKey": primary.expose(), "secondaryKey": secondary.expose()})))
                }
                _ => Ok(Reply::ok(json!({"primaryKey": null, "secondaryKey": null}))),
            },
            (ENDPOINTS, "POST", Some("regeneratekeys")) => {
                let r = self.get_resource(id, rtype.full)?;
                if is_busy(r.provisioning_state()) {
                    return Err(busy(id));
                }
                let body = req.json()?;
                let key_type = body.get("keyType").and_then(Value::as_str).unwrap_or_default().to_string();
                if !key_type.eq_ignore_ascii_case("Primary") && !key_type.eq_ignore_ascii_case("Secondary") {
                    return Err(ArmError::bad_request("BadArgument", "keyType must be 'Primary' or 'Secondary'.")
                        .target("keyType"));
                }
                let key_value = body.get("keyValue").and_then(Value::as_str).map(Secret::new);
                let op = self.start_op(
                    routed,
                    caller,
                    OpKind::RegenerateEndpointKey { key_type, key_value },
                    id,
                    false,
                    lro_failure,
                );
                Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
            }
            _ => Err(method_not_allowed(req)),
        }
    }

    fn storage_keys_json(&self, id: &str) -> Value {
        match self.state.resources.get(&id_key(id)).map(|r| &r.ext) {
            Some(ResourceExt::Storage { keys, key_times }) => json!({"keys": [
                {"keyName": "key1", "value": keys[0].expose(), "permissions": "FULL", "creationTime": key_times[0].to_string()},
                {"keyName": "key2", "value": keys[1].expose(), "permissions": "FULL", "creationTime": key_times[1].to_string()},
            ]}),
            _ => json!({"keys": []}),
        }
    }

    fn plain_put(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        rtype: &RType,
        id: &str,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let body = req.json()?;
        let name = id.rsplit('/').next().unwrap_or_default();
        if rtype.full == STORAGE
            && !(name.len() >= 3
                && name.len() <= 24
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        {
            return Err(ArmError::bad_request(
                "AccountNameInvalid",
                format!(
                    "{name} is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only."
                ),
            ));
        }
        let key = id_key(id);
        if let Some(existing) = self.state.resources.get_mut(&key) {
            for f in ["tags", "sku", "identity", "kind"] {
                if let Some(v) = body.get(f) {
                    existing.body[f] = v.clone();
                }
            }
            if let Some(p) = body.get("properties") {
                let mut p = p.clone();
                if let Some(o) = p.as_object_mut() {
                    o.remove("keyCreationTime");
                    o.remove("provisioningState");
                }
                merge_obj(&mut existing.body["properties"], &p);
            }
            return Ok(Reply::ok(existing.body.clone()));
        }
        if body.get("location").and_then(Value::as_str).is_none() {
            return Err(ArmError::bad_request(
                "LocationRequired",
                "The location property is required for this definition.",
            ));
        }
        let r = self.state.put_resource(id, rtype.full, body);
        let out = r.body.clone();
        if rtype.full == STORAGE {
            // Storage account creation answers 202 + Location (swagger, and what the storage RP does); the account
            // reads as Creating until the operation ends, and the Location poll then answers 200 with it.
            r.set_provisioning_state("Creating");
            let op = self.start_op(routed, caller, OpKind::Provision, id, true, fail);
            return Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req));
        }
        // Vaults, components and registries answer 201 with the resource.
        Ok(Reply::json(StatusCode::CREATED, out))
    }

    fn check_dependency(
        &self,
        props: &Value,
        field: &str,
        rtype: &str,
        required: bool,
    ) -> Result<Option<String>, ArmError> {
        match props.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            None if required => Err(ArmError::bad_request(
                "InvalidRequestContent",
                format!("The property 'properties.{field}' is required to create a workspace."),
            )
            .target(&format!("properties.{field}"))),
            None => Ok(None),
            Some(dep) => match self.state.resources.get(&id_key(dep)) {
                Some(r) if r.rtype.eq_ignore_ascii_case(rtype) => Ok(Some(r.id.clone())),
                _ => Err(ArmError::bad_request(
                    "DependentResourceNotFound",
                    format!(
                        "The resource '{dep}' referenced by properties.{field} does not exist (expected a {rtype})."
                    ),
                )
                .target(&format!("properties.{field}"))),
            },
        }
    }

    fn workspace_put(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        id: &str,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let name = id.rsplit('/').next().unwrap_or_default().to_string();
        if !name_ok(&name, 3, 33, &['-', '_']) {
            return Err(ArmError::bad_request(
                "InvalidResourceName",
                format!(
                    "Workspace name '{name}' is invalid: 3-33 characters, alphanumerics, hyphens and underscores, starting with an alphanumeric."
                ),
            ));
        }
        let body = req.json()?;
        let location = body.get("location").and_then(Value::as_str).map(String::from).ok_or_else(|| {
            ArmError::bad_request("LocationRequired", "The location property is required for this definition.")
        })?;
        let key = id_key(id);
        let existing = self.state.resources.get(&key).cloned();
        match self.check_workspace_put(id, &body, existing.is_some())? {
            PutCheck::Proceed => {}
            PutCheck::Recover => {
                self.recover_workspace(id);
                let op = self.start_op(routed, caller, OpKind::Provision, id, true, fail);
                return Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req));
            }
            PutCheck::Blocked(failure) => {
                let op = self.start_op(routed, caller, OpKind::Provision, id, true, Some(failure));
                return Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req));
            }
        }
        if let Some(e) = &existing {
            if is_busy(e.provisioning_state()) {
                return Err(busy(id));
            }
            if e.body.get("location").and_then(Value::as_str).is_some_and(|l| !l.eq_ignore_ascii_case(&location)) {
                return Err(ArmError::bad_request(
                    "LocationNotAvailableForResourceType",
                    "The location of an existing workspace cannot be changed.",
                )
                .target("location"));
            }
        }
        let props = body.get("properties").cloned().unwrap_or(json!({}));
        let storage = self.check_dependency(&props, "storageAccount", STORAGE, true)?;
        let vault = self.check_dependency(&props, "keyVault", VAULTS, true)?;
        self.check_dependency(&props, "applicationInsights", COMPONENTS, false)?;
        self.check_dependency(&props, "containerRegistry", REGISTRIES, false)?;
        if let Some(e) = &existing {
            for (field, new) in [("storageAccount", &storage), ("keyVault", &vault)] {
                let old = e.body.pointer(&format!("/properties/{field}")).and_then(Value::as_str).unwrap_or_default();
                if new.as_deref().is_some_and(|n| id_key(n) != id_key(old)) {
                    return Err(ArmError::bad_request(
                        "PropertyChangeNotAllowed",
                        format!("Changing property 'properties.{field}' is not allowed: it cannot be changed once the workspace has been created."),
                    )
                    .target(&format!("properties.{field}")));
                }
            }
        }
        let now = Self::now().to_string();
        let mut out = body.clone();
        let mut p = props;
        let prev = existing.as_ref().map(|e| e.body.clone()).unwrap_or(json!({"properties": {}}));
        if let Some(o) = p.as_object_mut() {
            let prev_props = prev.get("properties").cloned().unwrap_or(json!({}));
            shapes::workspace_properties(o, &prev_props, &name, &location, id, &self.state.tenant_id, &now);
            // Request-only fields: never part of the resource.
            o.remove("provisionNetworkNow");
            o.remove("restore");
            o.insert("provisioningState".into(), json!(if existing.is_some() { "Updating" } else { "Creating" }));
            if let Some(s) = &storage {
                o.insert("storageAccount".into(), json!(s));
            }
        }
        out["properties"] = p;
        out["location"] = json!(location);
        if out.get("sku").is_none() {
            out["sku"] = json!({"name": "Basic", "tier": "Basic"});
        }
        if out.get("kind").is_none() {
            out["kind"] = json!("Default");
        }
        if out.get("tags").is_none() {
            out["tags"] = json!({});
        }
        // Recorded: `etag` is present and null; a workspace always has an identity (system-assigned by default).
        out["etag"] = Value::Null;
        if !out.get("identity").is_some_and(Value::is_object) {
            out["identity"] = prev.get("identity").cloned().unwrap_or(json!({"type": "SystemAssigned"}));
        }
        self.fill_identity(&mut out, prev.get("identity"));
        out["systemData"] = shapes::workspace_system_data(&prev, &caller.object_id, &now);
        let ext = existing.map_or(ResourceExt::Workspace { user_storage_key: None, app_insights_key: None }, |e| e.ext);
        let r = self.state.put_resource(id, WORKSPACES, out);
        r.ext = ext;
        let op = self.start_op(routed, caller, OpKind::Provision, id, true, fail);
        Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
    }

    fn fill_identity(&self, out: &mut Value, prev: Option<&Value>) {
        let Some(identity) = out.get_mut("identity").filter(|i| i.is_object()) else {
            return;
        };
        let t = identity.get("type").and_then(Value::as_str).unwrap_or("None").to_string();
        if t.contains("SystemAssigned") {
            let pid =
                prev.and_then(|p| p.get("principalId")).cloned().unwrap_or(json!(uuid::Uuid::new_v4().to_string()));
            identity["principalId"] = pid;
            identity["tenantId"] = json!(self.state.tenant_id);
        }
        if let Some(uai) = identity.get_mut("userAssignedIdentities").and_then(Value::as_object_mut) {
            for v in uai.values_mut() {
                if v.get("principalId").is_none() {
                    *v = json!({"principalId": uuid::Uuid::new_v4().to_string(), "clientId": uuid::Uuid::new_v4().to_string()});
                }
            }
        }
    }

    fn workspace_patch(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        id: &str,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let body = req.json()?;
        let key = id_key(id);
        let existing = self.get_resource(id, WORKSPACES)?.clone();
        if is_busy(existing.provisioning_state()) {
            return Err(busy(id));
        }
        let mut props = body.get("properties").cloned().unwrap_or(json!({}));
        for field in ["storageAccount", "keyVault"] {
            if let Some(new) = props.get(field).and_then(Value::as_str) {
                let old =
                    existing.body.pointer(&format!("/properties/{field}")).and_then(Value::as_str).unwrap_or_default();
                if id_key(new) != id_key(old) {
                    return Err(ArmError::bad_request(
                        "PropertyChangeNotAllowed",
                        format!("Changing property 'properties.{field}' is not allowed: it cannot be changed once the workspace has been created."),
                    )
                    .target(&format!("properties.{field}")));
                }
            }
        }
        self.check_dependency(&props, "applicationInsights", COMPONENTS, false)?;
        self.check_dependency(&props, "containerRegistry", REGISTRIES, false)?;
        if let Some(o) = props.as_object_mut() {
            for k in ["provisioningState", "workspaceId", "discoveryUrl", "tenantId", "storageAccount", "keyVault"] {
                o.remove(k);
            }
        }
        let mut out = existing.body.clone();
        merge_obj(&mut out["properties"], &props);
        for f in ["tags", "sku", "identity"] {
            if let Some(v) = body.get(f) {
                out[f] = v.clone();
            }
        }
        self.fill_identity(&mut out, existing.body.get("identity"));
        out["systemData"]["lastModifiedAt"] = json!(Self::now().to_string());
        out["systemData"]["lastModifiedBy"] = json!(caller.object_id);
        if let Some(r) = self.state.resources.get_mut(&key) {
            r.body = out;
            r.set_provisioning_state("Updating");
        }
        let op = self.start_op(routed, caller, OpKind::Provision, id, true, fail);
        Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
    }

    fn online_put(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        rtype: &RType,
        id: &str,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let (parent_id, name) =
            id.rsplit_once('/').map(|(p, n)| (p.rsplit_once('/').map_or(p, |(pp, _)| pp), n)).unwrap_or((id, id));
        let (parent_id, name) = (parent_id.to_string(), name.to_string());
        let parent_type = if rtype.full == ENDPOINTS { WORKSPACES } else { ENDPOINTS };
        let parent = self.state.resources.get(&id_key(&parent_id)).cloned().ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "ParentResourceNotFound",
                format!(
                    "Can not perform requested operation on nested resource. Parent resource '{}' not found.",
                    parent_id.rsplit('/').next().unwrap_or_default()
                ),
            )
        })?;
        // A deployment cannot be written while its endpoint is being created, updated or deleted.
        if parent_type == ENDPOINTS && is_busy(parent.provisioning_state()) {
            return Err(busy(&parent_id));
        }
        if !name_ok(&name, 1, 255, &['-', '_']) {
            return Err(ArmError::bad_request(
                "BadArgument",
                format!("The name '{name}' must match ^[a-zA-Z0-9][a-zA-Z0-9\\-_]{{0,254}}$."),
            ));
        }
        let body = req.json()?;
        let location = body.get("location").and_then(Value::as_str).map(String::from).ok_or_else(|| {
            ArmError::bad_request("LocationRequired", "The location property is required for this definition.")
        })?;
        let key = id_key(id);
        let existing = self.state.resources.get(&key).cloned();
        if existing.as_ref().is_some_and(|e| is_busy(e.provisioning_state())) {
            return Err(busy(id));
        }
        let mut props = body.get("properties").cloned().unwrap_or(json!({}));
        let now = Self::now().to_string();
        if rtype.full == ENDPOINTS {
            let auth = props.get("authMode").and_then(Value::as_str).unwrap_or_default();
            if !["Key", "AMLToken", "AADToken"].iter().any(|m| m.eq_ignore_ascii_case(auth)) {
                return Err(ArmError::bad_request(
                    "BadArgument",
                    "properties.authMode must be one of Key, AMLToken, AADToken.",
                )
                .target("properties.authMode"));
            }
            if let Some(traffic) = props.get("traffic").and_then(Value::as_object) {
                let mut sum = 0;
                for (dep, pct) in traffic {
                    let dep_id = format!("{id}/deployments/{dep}");
                    if !self.state.resources.contains_key(&id_key(&dep_id)) {
                        return Err(ArmError::bad_request(
                            "BadArgument",
                            format!("Traffic refers to deployment '{dep}', which does not exist."),
                        )
                        .target("properties.traffic"));
                    }
                    sum += pct.as_i64().unwrap_or(-1000);
                }
                if !traffic.is_empty() && sum != 100 {
                    return Err(ArmError::bad_request(
                        "BadArgument",
                        format!("Traffic percentages must add up to 100 (got {sum})."),
                    )
                    .target("properties.traffic"));
                }
            }
            let ws_location = parent.body.get("location").and_then(Value::as_str).unwrap_or(&location).to_string();
            if let Some(o) = props.as_object_mut() {
                o.insert(
                    "scoringUri".into(),
                    json!(format!("https://{name}.{ws_location}.inference.ml.azure.com/score")),
                );
                o.insert(
                    "swaggerUri".into(),
                    json!(format!("https://{name}.{ws_location}.inference.ml.azure.com/swagger.json")),
                );
            }
        } else {
            if props.get("endpointComputeType").and_then(Value::as_str).is_none() {
                return Err(ArmError::bad_request("BadArgument", "properties.endpointComputeType is required.")
                    .target("properties.endpointComputeType"));
            }
        }
        if let Some(o) = props.as_object_mut() {
            o.insert("provisioningState".into(), json!(if existing.is_some() { "Updating" } else { "Creating" }));
        }
        let mut out = body.clone();
        out["properties"] = props;
        if out.get("tags").is_none() {
            out["tags"] = json!({});
        }
        if out.get("kind").is_none() {
            // Recorded: managed endpoints and deployments answer `kind: Managed`.
            let kubernetes = out.pointer("/properties/endpointComputeType").and_then(Value::as_str)
                == Some("Kubernetes")
                || out.pointer("/properties/compute").is_some_and(|c| !c.is_null());
            out["kind"] = json!(if kubernetes { "Kubernetes" } else { "Managed" });
        }
        if rtype.full == DEPLOYMENTS {
            out["sku"] = shapes::deployment_sku(out.get("sku"));
        }
        self.fill_identity(&mut out, existing.as_ref().and_then(|e| e.body.get("identity")));
        out["systemData"] = shapes::mfe_system_data(existing.as_ref().map(|e| &e.body), &caller.object_id, &now);
        let ext = match (&existing, rtype.full) {
            (Some(e), _) => e.ext.clone(),
            (None, ENDPOINTS) => ResourceExt::Endpoint { primary: Secret::random(24), secondary: Secret::random(24) },
            _ => ResourceExt::Plain,
        };
        let created = existing.is_none();
        let r = self.state.put_resource(id, rtype.full, out);
        r.ext = ext;
        let op = self.start_op(routed, caller, OpKind::Provision, id, true, fail);
        let v = req.q("api-version").unwrap_or_default().to_string();
        let async_uri = self.poll_url(&Operation { api_version: v.clone(), ..op.clone() }, true, &v);
        let stored = self.state.resources.get_mut(&key).ok_or_else(|| ArmError::not_found(rtype.full, id))?;
        let rid = stored.id.clone();
        if let Some(p) = stored.body.get_mut("properties").and_then(Value::as_object_mut) {
            if rtype.full == ENDPOINTS {
                shapes::endpoint_properties(p, &rid, &async_uri);
            } else {
                shapes::deployment_properties(p, &async_uri);
            }
        }
        let answer = if rtype.full == ENDPOINTS && created {
            shapes::endpoint_create_answer(&stored.body, &async_uri)
        } else {
            stored.body.clone()
        };
        // Recorded: 201 with the body in state Creating and both poll headers.
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(self.lro_reply(Reply::json(status, answer), &op, req))
    }

    // ---------------------------------------------------------------- role assignments

    fn ra_scope_exists(&self, scope: &str) -> Result<(), ArmError> {
        let (sub, rg) = sub_and_rg(scope);
        if let Some(sub) = &sub {
            self.ensure_sub(sub)?;
            if let Some(rg) = &rg {
                self.ensure_rg(sub, rg)?;
            }
        }
        let segs = scope.split('/').filter(|s| !s.is_empty()).count();
        if segs > 4 && !self.state.resources.contains_key(&id_key(scope)) {
            return Err(ArmError::not_found("resource", scope));
        }
        Ok(())
    }

    fn ra_get(&self, scope: &str, name: &str) -> Result<Reply, ArmError> {
        let id = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
        self.state.role_assignments.get(&id_key(&id)).map(|ra| Reply::ok(ra.to_json())).ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "RoleAssignmentNotFound",
                format!("The role assignment '{name}' is not found."),
            )
        })
    }

    fn ra_delete(&mut self, scope: &str, name: &str) -> Result<Reply, ArmError> {
        let id = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
        Ok(match self.state.role_assignments.remove(&id_key(&id)) {
            Some(ra) => Reply::ok(ra.to_json()),
            None => Reply::empty(StatusCode::NO_CONTENT),
        })
    }

    fn ra_put(&mut self, req: &Req, caller: &Caller, scope: &str, name: &str) -> Result<Reply, ArmError> {
        if uuid::Uuid::parse_str(name).is_err() {
            return Err(ArmError::bad_request(
                "InvalidRoleAssignmentId",
                format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
            ));
        }
        self.ra_scope_exists(scope)?;
        let body = req.json()?;
        let props = body.get("properties").cloned().unwrap_or(json!({}));
        let rd = props.get("roleDefinitionId").and_then(Value::as_str).unwrap_or_default();
        let guid = rd.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
        if !rd.to_ascii_lowercase().contains("/providers/microsoft.authorization/roledefinitions/")
            || !self.state.role_definitions.contains_key(&guid)
        {
            return Err(ArmError::bad_request(
                "RoleDefinitionDoesNotExist",
                format!("The specified role definition with ID '{guid}' does not exist."),
            ));
        }
        let pid = props.get("principalId").and_then(Value::as_str).unwrap_or_default().to_string();
        let Some(principal) = self.state.principals.get(&pid.to_ascii_lowercase()).cloned() else {
            return Err(ArmError::bad_request(
                "PrincipalNotFound",
                format!(
                    "Principal {} does not exist in the directory {}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.",
                    pid.replace('-', ""),
                    self.state.tenant_id
                ),
            ));
        };
        let ptype = props.get("principalType").and_then(Value::as_str).unwrap_or(principal.kind.as_str()).to_string();
        if !ptype.eq_ignore_ascii_case(principal.kind.as_str()) {
            return Err(ArmError::bad_request(
                "UnmatchedPrincipalType",
                format!(
                    "The PrincipalId '{pid}' has type '{}', which is different from specified PrincipalType '{ptype}'.",
                    principal.kind.as_str()
                ),
            ));
        }
        let canonical_scope = scope.trim_end_matches('/').to_string();
        let id = format!("{canonical_scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
        let key = id_key(&id);
        let description = props.get("description").and_then(Value::as_str).map(String::from);
        let condition = props.get("condition").and_then(Value::as_str).map(String::from);
        let condition_version = props.get("conditionVersion").and_then(Value::as_str).map(String::from);
        if let Some(existing) = self.state.role_assignments.get_mut(&key) {
            if existing.role_definition_guid != guid || !existing.principal_id.eq_ignore_ascii_case(&pid) {
                return Err(ArmError::bad_request(
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                ));
            }
            existing.description = description;
            existing.condition = condition;
            existing.condition_version = condition_version;
            return Ok(Reply::ok(existing.to_json()));
        }
        if self.state.role_assignments.values().any(|ra| {
            ra.role_definition_guid == guid
                && ra.principal_id.eq_ignore_ascii_case(&pid)
                && id_key(&ra.scope) == id_key(&canonical_scope)
        }) {
            return Err(ArmError::conflict("RoleAssignmentExists", "The role assignment already exists."));
        }
        let ra = RoleAssignment {
            id,
            name: name.into(),
            scope: canonical_scope,
            role_definition_guid: guid,
            principal_id: pid,
            principal_type: principal.kind.as_str().into(),
            description,
            condition,
            condition_version,
            created_on: Self::now(),
            created_by: Some(caller.object_id.clone()),
        };
        let mut out = ra.to_json();
        // Recorded: the 201 of a PUT has `createdBy: null`; reads show the creator.
        out["properties"]["createdBy"] = Value::Null;
        self.state.role_assignments.insert(key, ra);
        Ok(Reply::json(StatusCode::CREATED, out))
    }

    fn ra_list(&self, req: &Req, scope: &str) -> Result<Reply, ArmError> {
        self.ra_scope_exists(scope)?;
        enum F {
            All,
            AtScope,
            Principal(String),
            AssignedTo(String),
        }
        let filter = match req.q("$filter").map(str::trim) {
            None | Some("") => F::All,
            Some(f) if f.eq_ignore_ascii_case("atScope()") => F::AtScope,
            Some(f) => {
                let lower = f.to_ascii_lowercase();
                let quoted = f.split('\'').nth(1).unwrap_or_default().to_string();
                if lower.starts_with("principalid eq ") && !quoted.is_empty() {
                    F::Principal(quoted)
                } else if lower.starts_with("assignedto(") && !quoted.is_empty() {
                    F::AssignedTo(quoted)
                } else {
                    return Err(ArmError::bad_request(
                        "UnsupportedQuery",
                        format!("The filter '{f}' is not supported."),
                    ));
                }
            }
        };
        let groups = match &filter {
            F::AssignedTo(p) => self.state.principal_and_groups(p),
            _ => vec![],
        };
        let items = self
            .state
            .assignments_around(scope, true)
            .into_iter()
            .filter(|ra| {
                let above = scope_contains(&ra.scope, scope);
                let below = scope_contains(scope, &ra.scope);
                match &filter {
                    F::All => above || below,
                    F::AtScope => above,
                    F::Principal(p) => (above || below) && ra.principal_id.eq_ignore_ascii_case(p),
                    F::AssignedTo(_) => (above || below) && groups.contains(&ra.principal_id.to_ascii_lowercase()),
                }
            })
            .map(RoleAssignment::to_json)
            .collect();
        Ok(Reply::ok(self.page(req, items)))
    }

    // ---------------------------------------------------------------- move

    #[allow(clippy::too_many_arguments)]
    fn move_action(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        sub: &str,
        rg: &str,
        validate: bool,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let (sub, rg) = self.ensure_rg(sub, rg)?;
        let source = format!("/subscriptions/{sub}/resourceGroups/{rg}");
        let body = req.json()?;
        let resources: Vec<String> = body
            .get("resources")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        let target = body.get("targetResourceGroup").and_then(Value::as_str).unwrap_or_default().to_string();
        if resources.is_empty() || target.is_empty() {
            return Err(ArmError::bad_request(
                "InvalidRequestContent",
                "The request must contain 'resources' and 'targetResourceGroup'.",
            ));
        }
        let (tsub, trg) = sub_and_rg(&target);
        let (Some(tsub), Some(trg)) = (tsub, trg) else {
            return Err(ArmError::bad_request(
                "InvalidTargetResourceGroup",
                format!("The target resource group '{target}' is not a valid resource group id."),
            ));
        };
        let (tsub, trg) = self.ensure_rg(&tsub, &trg)?;
        let target = format!("/subscriptions/{tsub}/resourceGroups/{trg}");
        if id_key(&target) == id_key(&source) {
            return Err(ArmError::bad_request(
                "InvalidTargetResourceGroup",
                "The target resource group is the same as the source resource group.",
            ));
        }
        // The caller also needs write access on the target resource group.
        self.authorize(caller, "Microsoft.Resources/subscriptions/resourceGroups/write", &target)?;
        let mut failure = self.validate_move(&source, &target, &resources).map(|details| OpError {
            status: 409,
            code: "ResourceMoveValidationFailed".into(),
            message: format!(
                "Resource move validation failed. Please see details. Diagnostic information: source group '{source}', target group '{target}'."
            ),
            details,
        });
        if failure.is_none() {
            failure = fail;
        }
        let kind = if validate { OpKind::ValidateMove } else { OpKind::Move { resources, target } };
        let op = self.start_op(routed, caller, kind, &source, false, failure);
        Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
    }

    /// The resource group holding `path` when a running move locks it (as its source or target).
    fn moving_group(&self, path: &str) -> Option<String> {
        let (Some(sub), Some(rg)) = sub_and_rg(path) else {
            return None;
        };
        let group = format!("/subscriptions/{sub}/resourceGroups/{rg}");
        let key = id_key(&group);
        self.state
            .operations
            .values()
            .filter(|o| o.status == OpStatus::InProgress)
            .any(|o| match &o.kind {
                OpKind::Move { target, .. } => id_key(&o.resource_id) == key || id_key(target) == key,
                _ => false,
            })
            .then_some(group)
    }

    /// Returns the blocking conditions (code, message, target), or None when the move is allowed.
    fn validate_move(
        &self,
        source: &str,
        target: &str,
        resources: &[String],
    ) -> Option<Vec<(String, String, Option<String>)>> {
        let mut problems = vec![];
        // Cross-tenant: a move keeps the tenant (Learn: move resources; ML workspace move: not across tenants).
        let tenant_of = |id: &str| {
            let (sub, _) = sub_and_rg(id);
            sub.and_then(|s| self.state.subscriptions.get(&s.to_ascii_lowercase()))
                .and_then(|s| s.tenant_id.clone())
                .unwrap_or_else(|| self.state.tenant_id.clone())
        };
        if !tenant_of(source).eq_ignore_ascii_case(&tenant_of(target)) {
            problems.push((
                "CrossTenantMoveNotSupported".into(),
                format!("The target subscription of '{target}' belongs to another Microsoft Entra tenant; resources cannot be moved across tenants."),
                None,
            ));
        }
        let target_location =
            self.state.resource_groups.get(&id_key(target)).map(|g| g.location.clone()).unwrap_or_default();
        for id in resources {
            let Some(r) = self.state.resources.get(&id_key(id)) else {
                problems.push((
                    "ResourceNotFound".into(),
                    format!("The resource '{id}' was not found."),
                    Some(id.clone()),
                ));
                continue;
            };
            if !scope_contains(source, &r.id) {
                problems.push((
                    "ResourceNotInSourceResourceGroup".into(),
                    format!("The resource '{id}' is not in the source resource group '{source}'."),
                    Some(id.clone()),
                ));
                continue;
            }
            if r.rtype.matches('/').count() > 1 {
                problems.push(("CannotMoveChildResource".into(), format!("'{id}' is a child resource; only top-level resources can be moved (children move with their parent)."), Some(id.clone())));
                continue;
            }
            if is_busy(r.provisioning_state()) {
                problems.push((
                    "ResourceBusy".into(),
                    format!("The resource '{id}' has an operation in progress."),
                    Some(id.clone()),
                ));
            }
            if r.rtype.eq_ignore_ascii_case(WORKSPACES) {
                let endpoints = self
                    .state
                    .resources
                    .values()
                    .filter(|c| c.rtype.eq_ignore_ascii_case(ENDPOINTS) && scope_contains(&r.id, &c.id))
                    .count();
                if endpoints > 0 {
                    problems.push((
                        "ResourceMoveNotSupported".into(),
                        format!("Workspace '{id}' has {endpoints} online endpoint(s); workspaces with online endpoints or deployments cannot be moved. Delete them first."),
                        Some(id.clone()),
                    ));
                }
                problems.extend(self.compute_move_problems(r));
                let cmk = r
                    .body
                    .pointer("/properties/encryption/status")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.eq_ignore_ascii_case("Enabled"));
                if cmk {
                    problems.push((
                        "ResourceMoveNotSupported".into(),
                        format!("Workspace '{id}' is encrypted with a customer-managed key; such workspaces cannot be moved."),
                        Some(id.clone()),
                    ));
                }
                // Learn "Move Azure Machine Learning workspaces" (preview): computes must be deleted first.
                let computes = self
                    .state
                    .resources
                    .values()
                    .filter(|c| {
                        c.rtype.eq_ignore_ascii_case("Microsoft.MachineLearningServices/workspaces/computes")
                            && scope_contains(&r.id, &c.id)
                    })
                    .count();
                if computes > 0 {
                    problems.push((
                        "ResourceMoveNotSupported".into(),
                        format!("Workspace '{id}' has {computes} compute(s); workspaces with computes cannot be moved. Delete or detach them first."),
                        Some(id.clone()),
                    ));
                }
                // ...and a workspace moves only within its region: the target resource group must be in it.
                let location = r.body.get("location").and_then(Value::as_str).unwrap_or_default();
                if !target_location.is_empty() && !location.eq_ignore_ascii_case(&target_location) {
                    problems.push((
                        "ResourceMoveNotSupported".into(),
                        format!("Workspace '{id}' is in '{location}' and the target resource group in '{target_location}'; workspaces cannot be moved across regions."),
                        Some(id.clone()),
                    ));
                }
            }
        }
        if problems.is_empty() { None } else { Some(problems) }
    }

    fn apply_move(&mut self, resources: &[String], target: &str) {
        let mut renames: Vec<(String, String)> = vec![];
        for id in resources {
            if let Some(r) = self.state.resources.get(&id_key(id)) {
                let tail = r.id.split_once("/providers/").map(|(_, t)| t).unwrap_or_default();
                renames.push((r.id.clone(), format!("{target}/providers/{tail}")));
            }
        }
        for (old, new) in &renames {
            // Role assignments scoped to moved resources are not moved (documented ARM behaviour): drop them.
            self.state.role_assignments.retain(|_, ra| !scope_contains(old, &ra.scope));
            let moved: Vec<String> = self
                .state
                .resources
                .iter()
                .filter(|(_, r)| scope_contains(old, &r.id))
                .map(|(k, _)| k.clone())
                .collect();
            for k in moved {
                if let Some(mut r) = self.state.resources.remove(&k) {
                    r.id = format!("{new}{}", &r.id[old.len()..]);
                    r.body["id"] = json!(r.id);
                    self.state.resources.insert(id_key(&r.id), r);
                }
            }
        }
        // Other resources referring to a moved id (a workspace's storageAccount, ...) follow the move.
        for r in self.state.resources.values_mut() {
            if let Some(props) = r.body.get_mut("properties").and_then(Value::as_object_mut) {
                for v in props.values_mut() {
                    if let Some(s) = v.as_str()
                        && let Some((_, new)) = renames.iter().find(|(old, _)| id_key(old) == id_key(s))
                    {
                        *v = json!(new);
                    }
                }
            }
        }
    }
}

fn busy(id: &str) -> ArmError {
    ArmError::conflict(
        "AnotherOperationInProgress",
        format!("Another operation is in progress on '{id}'. Retry after it completes."),
    )
}

fn method_not_allowed(req: &Req) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "HttpMethodNotAllowed",
        format!("The HTTP method '{}' is not supported at '{}'.", req.method, req.path),
    )
}
