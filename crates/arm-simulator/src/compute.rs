//! Azure ML computes in the simulator: compute clusters (AmlCompute) and compute instances below a workspace, their
//! VM sizes and the subscription's ML vCPU usages per location. A child module of `engine` (it uses the engine's
//! LRO plumbing); routed by [`crate::route::compute`] before the generic resource routing.
//!
//! Shapes follow the azure-rest-api-specs examples of Microsoft.MachineLearningServices 2025-09-01
//! (`Compute/createOrUpdate/*`, `Compute/get/*`, `Compute/patch.json`, `Compute/delete.json`, `Compute/stop.json`,
//! `Compute/listNodes.json`, `Usage/list.json`):
//! - PUT: 201 (new) / 200 (existing) with the body in state `Creating`/`Updating` and `Azure-AsyncOperation`. An
//!   existing compute accepts only changes Azure makes in place (scale settings; an instance's schedules and idle
//!   time); a change of VM size, priority, subnet, remote login, identity, assigned user or setup script is a 400.
//! - PATCH (Compute_Update): a cluster's `scaleSettings` only; 200 with the body and `Azure-AsyncOperation`.
//! - DELETE needs `underlyingResourceAction`; 202 with `Azure-AsyncOperation` and `Location`, 204 when absent.
//! - start / stop / restart (instances): 202 with `Azure-AsyncOperation`; 409 from a state they do not apply to.
//! - Node counts follow the scale settings: an idle cluster holds `minNodeCount` nodes, as many as the quota
//!   allows; the shortfall is reported in `properties.properties.errors` (code `QuotaExceeded`). An instance that
//!   the quota cannot hold fails to provision with that error.
//! - Usages_List reports the quota's limits (seeded with [`SimState::set_ml_quota`], else defaults) and the vCPUs
//!   the simulated computes hold (cluster nodes, running instances) plus any seeded outside usage.
//!
//! The exact error codes of quota failures are not in the spec's examples; `QuotaExceeded` is the documented name
//! of the condition.

use http::StatusCode;
use serde_json::{Value, json};

use super::{Inner, Req, busy, is_busy};
use crate::auth::Caller;
use crate::model::{OpError, OpKind, Resource, id_key};
use crate::reply::{ArmError, Reply};
use crate::route::compute::{COMPUTES, ComputeTarget, LocationList};
use crate::route::{Routed, WORKSPACES};

/// One VM size Azure ML offers: (name, family, vCPUs, GPUs, memory GB).
const VM_SIZES: &[(&str, &str, i64, i64, f64)] = &[
    ("Standard_DS11_v2", "standardDSv2Family", 2, 0, 14.0),
    ("Standard_DS3_v2", "standardDSv2Family", 4, 0, 14.0),
    ("Standard_DS4_v2", "standardDSv2Family", 8, 0, 28.0),
    ("Standard_D4s_v3", "standardDSv3Family", 4, 0, 16.0),
    ("Standard_D13_v2", "standardDv2Family", 8, 0, 56.0),
    ("Standard_E4ds_v4", "standardEDSv4Family", 4, 0, 32.0),
    ("Standard_F4s_v2", "standardFSv2Family", 4, 0, 8.0),
    ("Standard_NC6s_v3", "standardNCSv3Family", 6, 1, 112.0),
    ("Standard_NC24ads_A100_v4", "StandardNCADSA100v4Family", 24, 1, 220.0),
    ("Standard_ND96asr_v4", "standardNDASv4_A100Family", 96, 8, 900.0),
];

fn vm_size(name: &str) -> Option<&'static (&'static str, &'static str, i64, i64, f64)> {
    VM_SIZES.iter().find(|s| s.0.eq_ignore_ascii_case(name))
}

/// `Standard DSv2 Family Cluster Dedicated vCPUs` for family `standardDSv2Family`.
pub(crate) fn family_usage_name(family: &str, low_priority: bool) -> String {
    let core = family.get(8..).filter(|_| family.to_ascii_lowercase().starts_with("standard")).unwrap_or(family);
    let core = core.strip_suffix("Family").unwrap_or(core);
    let prio = if low_priority { "LowPriority" } else { "Dedicated" };
    format!("Standard {core} Family Cluster {prio} vCPUs")
}

/// The regional total of a priority.
pub(crate) fn total_usage_name(low_priority: bool) -> &'static str {
    if low_priority { "Total Cluster LowPriority Regional vCPUs" } else { "Total Cluster Dedicated Regional vCPUs" }
}

fn norm_location(l: &str) -> String {
    l.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

/// The quota key of `SimState::ml_quotas`.
pub(crate) fn quota_key(subscription: &str, location: &str) -> String {
    format!("{}/{}", subscription.to_ascii_lowercase(), norm_location(location))
}

/// Default limits of a subscription nobody seeded: 24 dedicated vCPUs per family, no low-priority family limits,
/// 100 vCPUs per regional total.
fn default_limit(name: &str) -> i64 {
    if name.starts_with("Total") {
        100
    } else if name.contains("LowPriority") {
        -1
    } else {
        24
    }
}

/// Every usage name the simulator reports, in a stable order.
fn usage_names() -> Vec<String> {
    let mut names = vec![total_usage_name(false).to_owned(), total_usage_name(true).to_owned()];
    let mut families: Vec<&str> = VM_SIZES.iter().map(|s| s.1).collect();
    families.dedup();
    for f in families {
        for lp in [false, true] {
            let n = family_usage_name(f, lp);
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn bad(message: impl Into<String>) -> ArmError {
    ArmError::bad_request("BadRequest", message)
}

fn quota_error(name: &str, limit: i64, used: i64, requested: i64) -> Value {
    json!({"error": {"code": "QuotaExceeded", "message": format!(
        "Operation results in exceeding quota limits of {name}. Maximum allowed: {limit}, Current in use: {used}, Additional requested: {requested}."
    )}})
}

impl Inner {
    /// Handles a routed compute or ML-location request.
    pub(super) fn compute(
        &mut self,
        target: &ComputeTarget,
        routed: &Routed,
        req: &Req,
        caller: &Caller,
        lro_failure: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let sub = self.ensure_sub(routed.sub.as_deref().unwrap_or_default())?;
        match target {
            ComputeTarget::Location { location, what } => Ok(match what {
                LocationList::Usages => Reply::ok(self.page(req, self.usages(&sub, location))),
                LocationList::VmSizes => Reply::ok(json!({"value": VM_SIZES.iter().map(|s| json!({
                    "name": s.0, "family": s.1, "vCPUs": s.2, "gpus": s.3, "osVhdSizeMB": 1_047_552,
                    "maxResourceVolumeMB": 28672, "memoryGB": s.4, "lowPriorityCapable": true, "premiumIO": true,
                    "supportedComputeTypes": ["Compute Instance", "AmlCompute"],
                })).collect::<Vec<_>>()})),
                // Workspace-level quotas: none are configured in the simulator.
                LocationList::Quotas => Reply::ok(self.page(req, vec![])),
            }),
            ComputeTarget::List { rg, ws } => {
                let (sub, rg) = self.ensure_rg(&sub, rg)?;
                let ws_id = super::resource_id(&sub, &rg, self.ws_type(), std::slice::from_ref(ws));
                let ws_id = self.get_resource(&ws_id, WORKSPACES)?.id.clone();
                let items: Vec<Value> = self
                    .state
                    .resources_under(&ws_id)
                    .filter(|r| r.rtype.eq_ignore_ascii_case(COMPUTES))
                    .map(|r| r.body.clone())
                    .collect();
                Ok(Reply::ok(self.page(req, items)))
            }
            ComputeTarget::Compute { rg, ws, name, action } => {
                let (sub, rg) = self.ensure_rg(&sub, rg)?;
                let ws_id = super::resource_id(&sub, &rg, self.ws_type(), std::slice::from_ref(ws));
                let id = format!("{ws_id}/computes/{name}");
                let id = self.state.resources.get(&id_key(&id)).map_or(id, |r| r.id.clone());
                let action = action.as_deref().map(str::to_ascii_lowercase);
                match (req.method.as_str(), action.as_deref()) {
                    ("GET", None) => Ok(Reply::ok(self.get_resource(&id, COMPUTES)?.body.clone())),
                    ("PUT", None) => self.compute_put(req, routed, caller, &ws_id, &id, lro_failure),
                    ("PATCH", None) => self.compute_patch(req, routed, caller, &id, lro_failure),
                    ("DELETE", None) => self.compute_delete(req, routed, caller, &id, lro_failure),
                    ("POST", Some(a @ ("start" | "stop" | "restart"))) => {
                        self.compute_power(req, routed, caller, &id, a, lro_failure)
                    }
                    ("POST", Some("updateidleshutdownsetting")) => self.compute_idle(req, &id),
                    ("POST", Some("listnodes")) => self.compute_nodes(&id),
                    _ => Err(ArmError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "MethodNotAllowed",
                        format!("The requested method {} is not supported for this path.", req.method),
                    )),
                }
            }
        }
    }

    fn ws_type(&self) -> &'static crate::route::RType {
        crate::route::TYPES.iter().find(|t| t.full == WORKSPACES).unwrap_or(&crate::route::TYPES[0])
    }

    /// The usages of `sub` in `location`: limits (seeded or default), vCPUs held by the simulated computes plus
    /// seeded outside usage.
    fn usages(&self, sub: &str, location: &str) -> Vec<Value> {
        let quota = self.state.ml_quotas.get(&quota_key(sub, location));
        let used = self.usage_by_name(sub, location, None);
        usage_names()
            .into_iter()
            .map(|name| {
                let limit = quota.and_then(|q| q.limits.get(&name).copied()).unwrap_or_else(|| default_limit(&name));
                let outside = quota.and_then(|q| q.in_use.get(&name).copied()).unwrap_or(0);
                let current = outside + used.get(&name).copied().unwrap_or(0);
                let (id, kind) = if name.starts_with("Total") {
                    let kind = if name.contains("LowPriority") { "lowPriorityCores" } else { "dedicatedCores" };
                    (format!("/subscriptions/{sub}/usages"), kind)
                } else {
                    (format!("/subscriptions/{sub}/usages/{}", name.replace(' ', "_")), "vmFamily")
                };
                json!({
                    "id": id,
                    "type": format!("Microsoft.MachineLearningServices/{kind}/usages"),
                    "currentValue": current,
                    "limit": limit,
                    "name": {"value": name, "localizedValue": name},
                    "unit": "Count",
                })
            })
            .collect()
    }

    /// vCPUs the simulated computes of `sub` in `location` hold, by usage name (`except`: one compute left out).
    fn usage_by_name(
        &self,
        sub: &str,
        location: &str,
        except: Option<&str>,
    ) -> std::collections::BTreeMap<String, i64> {
        let mut out = std::collections::BTreeMap::new();
        let prefix = id_key(&format!("/subscriptions/{sub}/"));
        for r in self.state.resources.values() {
            if !r.rtype.eq_ignore_ascii_case(COMPUTES)
                || !id_key(&r.id).starts_with(&prefix)
                || except.is_some_and(|e| id_key(e) == id_key(&r.id))
                || str_at(&r.body, "/location").is_none_or(|l| norm_location(l) != norm_location(location))
            {
                continue;
            }
            for (name, vcpus) in compute_usage(r) {
                *out.entry(name).or_insert(0) += vcpus;
            }
        }
        out
    }

    /// How many more vCPUs of `size` with `low_priority` fit in `sub`/`location` (ignoring compute `except`), and
    /// the quota that limits it: (free vCPUs, (name, limit, used)).
    fn free_vcpus(
        &self,
        sub: &str,
        location: &str,
        family: &str,
        low_priority: bool,
        except: &str,
    ) -> (i64, Option<(String, i64, i64)>) {
        let quota = self.state.ml_quotas.get(&quota_key(sub, location));
        let used = self.usage_by_name(sub, location, Some(except));
        let mut free = i64::MAX;
        let mut binding = None;
        for name in [family_usage_name(family, low_priority), total_usage_name(low_priority).to_owned()] {
            let limit = quota.and_then(|q| q.limits.get(&name).copied()).unwrap_or_else(|| default_limit(&name));
            if limit < 0 {
                continue;
            }
            let in_use =
                quota.and_then(|q| q.in_use.get(&name).copied()).unwrap_or(0) + used.get(&name).copied().unwrap_or(0);
            if limit - in_use < free {
                free = limit - in_use;
                binding = Some((name, limit, in_use));
            }
        }
        (free.max(0), binding)
    }

    fn compute_put(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        ws_id: &str,
        id: &str,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let ws = self.state.resources.get(&id_key(ws_id)).cloned().ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "ParentResourceNotFound",
                format!(
                    "Can not perform requested operation on nested resource. Parent resource '{}' not found.",
                    ws_id.rsplit('/').next().unwrap_or_default()
                ),
            )
        })?;
        let name = id.rsplit('/').next().unwrap_or_default().to_owned();
        let body = req.json()?;
        let location = str_at(&body, "/location").map(str::to_owned).ok_or_else(|| {
            ArmError::bad_request("LocationRequired", "The location property is required for this definition.")
        })?;
        let ctype = str_at(&body, "/properties/computeType").unwrap_or_default().to_owned();
        let (max_len, min_len) = match ctype.as_str() {
            "AmlCompute" => (16, 2),
            "ComputeInstance" => (24, 3),
            "" => return Err(bad("properties.computeType is required.").target("properties.computeType")),
            other => {
                return Err(
                    bad(format!("Compute type '{other}' is not supported here.")).target("properties.computeType")
                );
            }
        };
        let name_ok = (min_len..=max_len).contains(&name.len())
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !name.ends_with('-');
        if !name_ok {
            return Err(bad(format!(
                "Compute name '{name}' is invalid: it must be {min_len} to {max_len} letters, digits or '-', start with a letter and not end with '-'."
            )));
        }
        let ws_location = str_at(&ws.body, "/location").unwrap_or(&location).to_owned();
        if norm_location(&ws_location) != norm_location(&location) {
            return Err(bad(format!(
                "Compute location '{location}' must be the workspace's location '{ws_location}'."
            )));
        }
        let mut props = body.pointer("/properties/properties").cloned().unwrap_or(json!({}));
        let size_name = str_at(&props, "/vmSize").unwrap_or_default().to_owned();
        if vm_size(&size_name).is_none() {
            return Err(bad(format!("VM size '{size_name}' is not supported in region '{location}'."))
                .target("properties.properties.vmSize"));
        };
        let key = id_key(id);
        let existing = self.state.resources.get(&key).cloned();
        let now = jiff::Timestamp::now().to_string();
        let mut out = body.clone();
        if let Some(e) = &existing {
            if is_busy(e.provisioning_state()) {
                return Err(busy(id));
            }
            let old_type = str_at(&e.body, "/properties/computeType").unwrap_or_default();
            if !old_type.eq_ignore_ascii_case(&ctype) {
                return Err(bad(format!("Compute '{name}' is a {old_type}; its type cannot be changed.")));
            }
            let old = e.body.pointer("/properties/properties").cloned().unwrap_or(json!({}));
            let fixed: &[&str] = if ctype == "AmlCompute" {
                &["/vmSize", "/vmPriority", "/subnet/id", "/remoteLoginPortPublicAccess"]
            } else {
                &["/vmSize", "/subnet/id", "/personalComputeInstanceSettings/assignedUser/objectId", "/setupScripts"]
            };
            for p in fixed {
                let (a, b) = (old.pointer(p), props.pointer(p));
                // A property the request leaves out keeps its value.
                let same = match (a, b) {
                    (_, None) => true,
                    (Some(Value::String(a)), Some(Value::String(b))) => a.eq_ignore_ascii_case(b),
                    (a, b) => a == b,
                };
                if !same {
                    return Err(bad(format!(
                        "Updating '{}' of an existing compute is not supported; delete the compute and create it again.",
                        p.trim_start_matches('/').replace('/', ".")
                    ))
                    .target(&format!("properties.properties{}", p.replace('/', "."))));
                }
            }
            if let Some(wanted) = body.get("identity")
                && e.body.get("identity").map(strip_identity).as_ref() != Some(&strip_identity(wanted))
            {
                return Err(bad(
                    "Updating the identity of an existing compute is not supported; delete the compute and create it again.",
                ));
            }
            // Keep what Azure computed; take the mutable properties from the request.
            let mut merged = old.clone();
            for f in ["scaleSettings", "schedules", "idleTimeBeforeShutdown"] {
                if let Some(v) = props.get(f) {
                    merged[f] = v.clone();
                }
            }
            props = merged;
            match e.body.get("identity") {
                Some(i) => out["identity"] = i.clone(),
                None => {
                    if let Some(o) = out.as_object_mut() {
                        o.remove("identity");
                    }
                }
            }
            out["properties"]["createdOn"] = e.body.pointer("/properties/createdOn").cloned().unwrap_or(json!(now));
        } else {
            out["properties"]["createdOn"] = json!(now);
            self.fill_identity(&mut out, None);
        }
        if let Some(o) = props.as_object_mut() {
            if ctype == "AmlCompute" {
                o.entry("osType").or_insert(json!("Linux"));
                o.entry("vmPriority").or_insert(json!("Dedicated"));
                o.entry("remoteLoginPortPublicAccess").or_insert(json!("NotSpecified"));
                o.entry("isolatedNetwork").or_insert(json!(false));
                o.entry("enableNodePublicIp").or_insert(json!(true));
                let scale = o.entry("scaleSettings").or_insert(json!({}));
                if scale.get("maxNodeCount").and_then(Value::as_i64).is_none() {
                    return Err(bad("properties.properties.scaleSettings.maxNodeCount is required.")
                        .target("properties.properties.scaleSettings.maxNodeCount"));
                }
                if scale.get("minNodeCount").is_none() {
                    scale["minNodeCount"] = json!(0);
                }
                if scale.get("nodeIdleTimeBeforeScaleDown").is_none() {
                    scale["nodeIdleTimeBeforeScaleDown"] = json!("PT120S");
                }
                let (min, max) =
                    (scale["minNodeCount"].as_i64().unwrap_or(0), scale["maxNodeCount"].as_i64().unwrap_or(0));
                if min < 0 || min > max {
                    return Err(bad(format!("minNodeCount ({min}) must be between 0 and maxNodeCount ({max}).")));
                }
                o.entry("allocationState").or_insert(json!("Resizing"));
                o.entry("currentNodeCount").or_insert(json!(0));
                o.insert("targetNodeCount".into(), json!(min));
                o.entry("errors").or_insert(Value::Null);
                o.entry("nodeStateCounts").or_insert(json!({"idleNodeCount": 0, "runningNodeCount": 0, "preparingNodeCount": 0, "unusableNodeCount": 0, "leavingNodeCount": 0, "preemptedNodeCount": 0}));
            } else {
                if let Some(idle) = o.get("idleTimeBeforeShutdown").and_then(Value::as_str) {
                    check_idle(idle)?;
                }
                o.entry("applicationSharingPolicy").or_insert(json!("Shared"));
                o.entry("computeInstanceAuthorizationType").or_insert(json!("personal"));
                o.entry("connectivityEndpoints")
                    .or_insert(json!({"publicIpAddress": null, "privateIpAddress": "10.0.0.4"}));
                o.entry("osImageMetadata").or_insert(json!({"currentImageVersion": "26.11.02", "latestImageVersion": "26.11.02", "isLatestOsImageVersion": true}));
                o.entry("sshSettings")
                    .or_insert(json!({"sshPublicAccess": "Disabled", "adminUserName": "azureuser", "sshPort": 4001}));
                o.entry("state").or_insert(json!("Creating"));
                o.entry("errors").or_insert(Value::Null);
                o.entry("applications").or_insert(json!([{"displayName": "Jupyter", "endpointUri": format!("https://{name}.{}.instances.azureml.ms/tree/", norm_location(&location))}]));
                o.entry("createdBy").or_insert(
                    json!({"userId": caller.object_id, "userOrgId": self.state.tenant_id, "userName": caller.name}),
                );
                if let Some(list) =
                    o.get_mut("schedules").and_then(|s| s.get_mut("computeStartStop")).and_then(Value::as_array_mut)
                {
                    for s in list {
                        if s.get("id").is_none() {
                            s["id"] = json!(uuid::Uuid::new_v4().to_string());
                        }
                        s["provisioningStatus"] = json!("Completed");
                    }
                }
            }
        }
        out["properties"]["properties"] = props;
        out["properties"]["provisioningState"] = json!(if existing.is_some() { "Updating" } else { "Creating" });
        out["properties"]["modifiedOn"] = json!(now);
        out["properties"]["isAttachedCompute"] = json!(false);
        if let Some(o) = out["properties"].as_object_mut() {
            o.entry("disableLocalAuth").or_insert(json!(true));
            o.entry("provisioningErrors").or_insert(Value::Null);
        }
        out["properties"]["computeLocation"] = json!(location);
        if let Some(o) = out.as_object_mut() {
            o.entry("tags").or_insert(json!({}));
        }
        let created = existing.is_none();
        let r = self.state.put_resource(id, COMPUTES, out);
        let reply_body = r.body.clone();
        let op = self.start_op(routed, caller, OpKind::Provision, id, true, fail);
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        Ok(self.lro_reply(Reply::json(status, reply_body), &op, req))
    }

    fn compute_patch(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        id: &str,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let body = req.json()?;
        let r = self.get_resource(id, COMPUTES)?;
        if is_busy(r.provisioning_state()) {
            return Err(busy(id));
        }
        if str_at(&r.body, "/properties/computeType") != Some("AmlCompute") {
            return Err(bad("Only the scale settings of an AmlCompute can be updated."));
        }
        let Some(scale) = body.pointer("/properties/properties/scaleSettings").cloned() else {
            return Err(
                bad("properties.properties.scaleSettings is required.").target("properties.properties.scaleSettings")
            );
        };
        let Some(max) = scale.get("maxNodeCount").and_then(Value::as_i64) else {
            return Err(bad("scaleSettings.maxNodeCount is required.")
                .target("properties.properties.scaleSettings.maxNodeCount"));
        };
        let min = scale.get("minNodeCount").and_then(Value::as_i64).unwrap_or(0);
        if min < 0 || min > max {
            return Err(bad(format!("minNodeCount ({min}) must be between 0 and maxNodeCount ({max}).")));
        }
        let now = jiff::Timestamp::now().to_string();
        let key = id_key(id);
        let Some(r) = self.state.resources.get_mut(&key) else { return Err(ArmError::not_found(COMPUTES, id)) };
        let current = &mut r.body["properties"]["properties"]["scaleSettings"];
        current["maxNodeCount"] = json!(max);
        current["minNodeCount"] = json!(min);
        if let Some(idle) = scale.get("nodeIdleTimeBeforeScaleDown") {
            current["nodeIdleTimeBeforeScaleDown"] = idle.clone();
        }
        r.body["properties"]["properties"]["targetNodeCount"] = json!(min);
        r.body["properties"]["properties"]["allocationState"] = json!("Resizing");
        r.body["properties"]["modifiedOn"] = json!(now);
        r.set_provisioning_state("Updating");
        let out = r.body.clone();
        let op = self.start_op(routed, caller, OpKind::Provision, id, true, fail);
        Ok(self.lro_reply(Reply::ok(out), &op, req))
    }

    fn compute_delete(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        id: &str,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let how = req.q("underlyingResourceAction").unwrap_or_default();
        if !how.eq_ignore_ascii_case("Delete") && !how.eq_ignore_ascii_case("Detach") {
            return Err(bad("The query parameter underlyingResourceAction (Delete or Detach) is required.")
                .target("underlyingResourceAction"));
        }
        let key = id_key(id);
        let Some(state) = self.state.resources.get(&key).map(|r| r.provisioning_state().map(str::to_owned)) else {
            return Ok(Reply::empty(StatusCode::NO_CONTENT));
        };
        if state.as_deref() == Some("Deleting")
            && let Some(op) = self.pending_op(id)
        {
            return Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req));
        }
        if is_busy(state.as_deref()) {
            return Err(busy(id));
        }
        if let Some(r) = self.state.resources.get_mut(&key) {
            r.set_provisioning_state("Deleting");
        }
        let op = self.start_op(routed, caller, OpKind::Delete, id, false, fail);
        Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
    }

    fn compute_power(
        &mut self,
        req: &Req,
        routed: &Routed,
        caller: &Caller,
        id: &str,
        action: &str,
        fail: Option<OpError>,
    ) -> Result<Reply, ArmError> {
        let r = self.get_resource(id, COMPUTES)?;
        if str_at(&r.body, "/properties/computeType") != Some("ComputeInstance") {
            return Err(bad(format!("Only a compute instance can be {action}ed.")));
        }
        if is_busy(r.provisioning_state()) {
            return Err(busy(id));
        }
        let state = str_at(&r.body, "/properties/properties/state").unwrap_or("Unknown").to_owned();
        let (from, via) = match action {
            "start" => ("Stopped", "Starting"),
            "stop" => ("Running", "Stopping"),
            _ => ("Running", "Restarting"),
        };
        if !state.eq_ignore_ascii_case(from) {
            return Err(ArmError::conflict(
                "Conflict",
                format!(
                    "Compute instance '{}' is in state {state}; it can be {action}ed only when {from}.",
                    id.rsplit('/').next().unwrap_or_default()
                ),
            ));
        }
        if let Some(r) = self.state.resources.get_mut(&id_key(id)) {
            r.body["properties"]["properties"]["state"] = json!(via);
        }
        let op = self.start_op(routed, caller, OpKind::ComputePower { action: action.to_owned() }, id, false, fail);
        Ok(self.lro_reply(Reply::empty(StatusCode::ACCEPTED), &op, req))
    }

    fn compute_idle(&mut self, req: &Req, id: &str) -> Result<Reply, ArmError> {
        let body = req.json()?;
        let r = self.get_resource(id, COMPUTES)?;
        if str_at(&r.body, "/properties/computeType") != Some("ComputeInstance") {
            return Err(bad("Idle shutdown applies to compute instances only."));
        }
        let idle = str_at(&body, "/idleTimeBeforeShutdown").unwrap_or_default().to_owned();
        check_idle(&idle)?;
        if let Some(r) = self.state.resources.get_mut(&id_key(id)) {
            r.body["properties"]["properties"]["idleTimeBeforeShutdown"] = json!(idle);
        }
        Ok(Reply::empty(StatusCode::OK))
    }

    fn compute_nodes(&self, id: &str) -> Result<Reply, ArmError> {
        let r = self.get_resource(id, COMPUTES)?;
        if str_at(&r.body, "/properties/computeType") != Some("AmlCompute") {
            return Err(bad("Nodes can be listed for AmlCompute only."));
        }
        let n = r.body.pointer("/properties/properties/currentNodeCount").and_then(Value::as_i64).unwrap_or(0);
        let nodes: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "nodeId": format!("tvm-{}_{}-20261206t000000z", id_key(id).len(), i + 1),
                    "privateIpAddress": format!("10.0.0.{}", i + 4),
                    "publicIpAddress": null,
                    "port": 50000 + i,
                    "nodeState": "idle",
                })
            })
            .collect();
        Ok(Reply::ok(json!({"nodes": nodes, "nextLink": null})))
    }

    /// After a provisioning operation of a compute: nodes follow the scale settings within the quota; a new
    /// instance runs (or fails for lack of quota). No-op for other resources.
    pub(super) fn compute_settle(&mut self, id: &str) {
        let key = id_key(id);
        let Some(r) = self.state.resources.get(&key) else { return };
        if !r.rtype.eq_ignore_ascii_case(COMPUTES) {
            return;
        }
        let sub = id.split('/').nth(2).unwrap_or_default().to_owned();
        let location = str_at(&r.body, "/location").unwrap_or_default().to_owned();
        let props = r.body.pointer("/properties/properties").cloned().unwrap_or(json!({}));
        let Some(size) = vm_size(str_at(&props, "/vmSize").unwrap_or_default()) else { return };
        let ctype = str_at(&r.body, "/properties/computeType").unwrap_or_default().to_owned();
        if ctype == "AmlCompute" {
            let low = str_at(&props, "/vmPriority") == Some("LowPriority");
            let target = props.pointer("/scaleSettings/minNodeCount").and_then(Value::as_i64).unwrap_or(0);
            let (free, binding) = self.free_vcpus(&sub, &location, size.1, low, id);
            let fits = free / size.2.max(1);
            let current = target.min(fits);
            let errors = match binding {
                Some((name, limit, used)) if current < target => {
                    json!([quota_error(&name, limit, used, target * size.2)])
                }
                _ => Value::Null,
            };
            if let Some(r) = self.state.resources.get_mut(&key) {
                let p = &mut r.body["properties"]["properties"];
                p["currentNodeCount"] = json!(current);
                p["targetNodeCount"] = json!(target);
                p["allocationState"] = json!("Steady");
                p["errors"] = errors;
                p["nodeStateCounts"]["idleNodeCount"] = json!(current);
            }
        } else {
            let state = str_at(&props, "/state").unwrap_or_default().to_owned();
            if state != "Creating" {
                return;
            }
            let (free, binding) = self.free_vcpus(&sub, &location, size.1, false, id);
            if let Some(r) = self.state.resources.get_mut(&key) {
                if free >= size.2 {
                    r.body["properties"]["properties"]["state"] = json!("Running");
                } else if let Some((name, limit, used)) = binding {
                    r.body["properties"]["properties"]["state"] = json!("CreateFailed");
                    r.body["properties"]["provisioningState"] = json!("Failed");
                    r.body["properties"]["provisioningErrors"] = json!([quota_error(&name, limit, used, size.2)]);
                }
            }
        }
    }

    /// Completes a start, stop or restart.
    pub(super) fn compute_power_done(&mut self, id: &str, action: &str) {
        if let Some(r) = self.state.resources.get_mut(&id_key(id)) {
            let end = if action == "stop" { "Stopped" } else { "Running" };
            r.body["properties"]["properties"]["state"] = json!(end);
        }
    }

    /// Why a workspace with computes cannot move (Azure refuses to move a workspace with compute resources).
    pub(super) fn compute_move_problems(&self, ws: &Resource) -> Option<(String, String, Option<String>)> {
        if !ws.rtype.eq_ignore_ascii_case(WORKSPACES) {
            return None;
        }
        let n = self.state.resources_under(&ws.id).filter(|c| c.rtype.eq_ignore_ascii_case(COMPUTES)).count();
        (n > 0).then(|| {
            (
                "ResourceMoveNotSupported".to_owned(),
                format!("Workspace '{}' has {n} compute resource(s); workspaces with computes cannot be moved. Delete them first.", ws.id),
                Some(ws.id.clone()),
            )
        })
    }
}

/// The identity as stored, without what Azure fills in, for comparison with a request.
fn strip_identity(i: &Value) -> Value {
    let mut i = i.clone();
    if let Some(o) = i.as_object_mut() {
        o.remove("principalId");
        o.remove("tenantId");
        if let Some(u) = o.get_mut("userAssignedIdentities").and_then(Value::as_object_mut) {
            for v in u.values_mut() {
                *v = json!({});
            }
        }
    }
    i
}

fn check_idle(idle: &str) -> Result<(), ArmError> {
    let secs = idle.parse::<jiff::SignedDuration>().map(|d| d.as_secs()).unwrap_or(-1);
    if !(15 * 60..=3 * 24 * 3600).contains(&secs) {
        return Err(bad(format!(
            "idleTimeBeforeShutdown '{idle}' is invalid: it must be an ISO 8601 duration between PT15M and P3D."
        ))
        .target("idleTimeBeforeShutdown"));
    }
    Ok(())
}

/// The vCPUs a compute holds, by usage name.
fn compute_usage(r: &Resource) -> Vec<(String, i64)> {
    let props = r.body.pointer("/properties/properties").cloned().unwrap_or(json!({}));
    let Some(size) = vm_size(str_at(&props, "/vmSize").unwrap_or_default()) else { return vec![] };
    let ctype = str_at(&r.body, "/properties/computeType").unwrap_or_default();
    let (vcpus, low) = if ctype == "AmlCompute" {
        let nodes = props.get("currentNodeCount").and_then(Value::as_i64).unwrap_or(0);
        (nodes * size.2, str_at(&props, "/vmPriority") == Some("LowPriority"))
    } else {
        let holding = matches!(str_at(&props, "/state"), Some("Running" | "Starting" | "Stopping" | "Restarting"));
        (if holding { size.2 } else { 0 }, false)
    };
    if vcpus == 0 {
        return vec![];
    }
    vec![(family_usage_name(size.1, low), vcpus), (total_usage_name(low).to_owned(), vcpus)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_names_follow_the_spec_examples() {
        assert_eq!(family_usage_name("standardDSv2Family", false), "Standard DSv2 Family Cluster Dedicated vCPUs");
        assert_eq!(family_usage_name("standardNCSv3Family", true), "Standard NCSv3 Family Cluster LowPriority vCPUs");
        assert_eq!(total_usage_name(false), "Total Cluster Dedicated Regional vCPUs");
        assert_eq!(quota_key("0B1F", "West Europe"), "0b1f/westeurope");
    }
}
