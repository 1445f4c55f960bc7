//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`) for the built-in kinds typed clients write.
//!
//! kubectl's `create` subcommands and Helm's release storage use client-go's typed clients, which send protobuf: the
//! magic `k8s\0` followed by a `runtime.Unknown` envelope whose `raw` holds the object's message. This module decodes
//! the kinds the emulator serves (with the `k8s-pb` message types) into the JSON the JSON path would have received,
//! so the rest of the server sees no difference. Custom resources have no protobuf form: a real API server answers
//! 415 for them, and so does the emulator for them and for the built-in kinds not decoded here.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::events::v1 as events;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::registry::ResourceType;

/// The protobuf media type of the Kubernetes API.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What a real API server accepts for bodies it cannot read as protobuf (custom resources).
pub const JSON_MEDIA_TYPES: &str = "application/json, application/yaml";

/// The four bytes that start every protobuf-encoded Kubernetes object.
const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with the `k8s\0` magic.
    #[error("provided object is not a protobuf-encoded Kubernetes object (missing the k8s magic prefix)")]
    NoMagic,
    /// The `runtime.Unknown` envelope is malformed.
    #[error("malformed protobuf envelope: {0}")]
    Envelope(#[source] prost::DecodeError),
    /// The envelope's `raw` is compressed or otherwise encoded.
    #[error("unsupported protobuf content encoding \"{0}\"")]
    ContentEncoding(String),
    /// The envelope names another kind than the URL.
    #[error("the kind in the body ({found}) does not match the resource ({expected})")]
    KindMismatch {
        /// `apiVersion, Kind=...` of the URL's resource.
        expected: String,
        /// `apiVersion, Kind=...` from the envelope.
        found: String,
    },
    /// The object message is malformed.
    #[error("malformed {kind} message: {source}")]
    Object {
        /// Kind being decoded.
        kind: String,
        /// The decoder's complaint.
        #[source]
        source: prost::DecodeError,
    },
    /// This kind has no protobuf decoding here (custom resources, or built-in kinds not covered).
    #[error("no protobuf decoding for {0}")]
    Unsupported(String),
}

impl ProtobufError {
    /// The API error a real server would answer with for a body of `rt` at `version`.
    pub fn to_api_error(&self, rt: &ResourceType, version: &str) -> ApiError {
        match self {
            Self::Unsupported(_) => ApiError::unsupported_body(JSON_MEDIA_TYPES),
            other => ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {other}",
                kind = rt.kind
            )),
        }
    }
}

/// Whether a `Content-Type` header value names the Kubernetes protobuf encoding.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

/// The `runtime.Unknown` envelope of a protobuf body: `(apiVersion, kind, raw object message)`.
fn envelope(body: &[u8]) -> Result<(String, String, Vec<u8>), ProtobufError> {
    let payload = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let unknown = Unknown::decode(payload).map_err(ProtobufError::Envelope)?;
    if let Some(enc) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ProtobufError::ContentEncoding(enc));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    Ok((type_meta.api_version.unwrap_or_default(), type_meta.kind.unwrap_or_default(), unknown.raw.unwrap_or_default()))
}

/// Decodes a protobuf object body for resource `rt` at `version` into its JSON form (with apiVersion and kind).
pub fn decode_object(body: &[u8], rt: &ResourceType, version: &str) -> Result<Value, ProtobufError> {
    let expected_api_version = rt.api_version(version);
    // Decoding needs the kind's message type; refuse unknown kinds before looking at the body, as the real server
    // refuses media types a resource has no serializer for.
    if rt.custom || !decodes(&rt.group, &rt.kind) {
        return Err(ProtobufError::Unsupported(format!("{expected_api_version}, Kind={}", rt.kind)));
    }
    let (api_version, kind, raw) = envelope(body)?;
    // client-go always fills the type meta; an empty one means "the URL's kind", as with JSON bodies.
    let api_version = if api_version.is_empty() { expected_api_version.clone() } else { api_version };
    let kind = if kind.is_empty() { rt.kind.clone() } else { kind };
    if kind != rt.kind || api_version != expected_api_version {
        return Err(ProtobufError::KindMismatch {
            expected: format!("{expected_api_version}, Kind={}", rt.kind),
            found: format!("{api_version}, Kind={kind}"),
        });
    }
    let object = |source| ProtobufError::Object { kind: kind.clone(), source };
    let mut out = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => namespace(core::Namespace::decode(raw.as_slice()).map_err(object)?),
        ("", "Secret") => secret(core::Secret::decode(raw.as_slice()).map_err(object)?),
        ("", "ConfigMap") => config_map(core::ConfigMap::decode(raw.as_slice()).map_err(object)?),
        ("", "ServiceAccount") => service_account(core::ServiceAccount::decode(raw.as_slice()).map_err(object)?),
        ("", "Event") => core_event(core::Event::decode(raw.as_slice()).map_err(object)?),
        ("events.k8s.io", "Event") => events_event(events::Event::decode(raw.as_slice()).map_err(object)?),
        ("coordination.k8s.io", "Lease") => lease(coordination::Lease::decode(raw.as_slice()).map_err(object)?),
        ("rbac.authorization.k8s.io", "Role") => {
            let r = rbac::Role::decode(raw.as_slice()).map_err(object)?;
            with_rules(r.metadata, r.rules)
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            cluster_role(rbac::ClusterRole::decode(raw.as_slice()).map_err(object)?)
        }
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            let b = rbac::RoleBinding::decode(raw.as_slice()).map_err(object)?;
            binding(b.metadata, b.subjects, b.role_ref)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            let b = rbac::ClusterRoleBinding::decode(raw.as_slice()).map_err(object)?;
            binding(b.metadata, b.subjects, b.role_ref)
        }
        ("apps", "Deployment") => {
            workload(&kind, |left| deployment(apps::Deployment::decode(raw.as_slice()).map_err(object)?, left))?
        }
        ("batch", "Job") => workload(&kind, |left| job(batch::Job::decode(raw.as_slice()).map_err(object)?, left))?,
        ("batch", "CronJob") => {
            workload(&kind, |left| cron_job(batch::CronJob::decode(raw.as_slice()).map_err(object)?, left))?
        }
        // `decodes` lists exactly the arms above.
        _ => return Err(ProtobufError::Unsupported(format!("{expected_api_version}, Kind={}", rt.kind))),
    };
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    Ok(Value::Object(out))
}

/// Decodes a protobuf `DeleteOptions` body into its JSON form.
pub fn decode_delete_options(body: &[u8]) -> Result<Value, ProtobufError> {
    let (_, kind, raw) = envelope(body)?;
    if !kind.is_empty() && kind != "DeleteOptions" {
        return Err(ProtobufError::KindMismatch { expected: "DeleteOptions".into(), found: kind });
    }
    let o = meta::DeleteOptions::decode(raw.as_slice())
        .map_err(|source| ProtobufError::Object { kind: "DeleteOptions".into(), source })?;
    let mut m = Obj::default();
    m.int("gracePeriodSeconds", o.grace_period_seconds);
    if let Some(p) = o.preconditions {
        let mut pm = Obj::default();
        pm.str("uid", p.uid);
        pm.str("resourceVersion", p.resource_version);
        m.obj("preconditions", pm);
    }
    m.bool("orphanDependents", o.orphan_dependents);
    m.str("propagationPolicy", o.propagation_policy);
    m.strs("dryRun", o.dry_run);
    Ok(Value::Object(m.0))
}

/// Whether [`decode_object`] knows the message type of this built-in kind.
fn decodes(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Namespace" | "Secret" | "ConfigMap" | "ServiceAccount" | "Event")
            | ("events.k8s.io", "Event")
            | ("coordination.k8s.io", "Lease")
            | ("rbac.authorization.k8s.io", "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding")
            | ("apps", "Deployment")
            | ("batch", "Job" | "CronJob")
    )
}

/// Converts a workload message whose converter records, in `left`, every set field it does not convert: such a body
/// is refused as unsupported (415, the client may send JSON) rather than stored without those fields.
fn workload(
    kind: &str,
    convert: impl FnOnce(&mut Vec<&'static str>) -> Result<Map<String, Value>, ProtobufError>,
) -> Result<Map<String, Value>, ProtobufError> {
    let mut left = Vec::new();
    let out = convert(&mut left)?;
    if left.is_empty() {
        Ok(out)
    } else {
        Err(ProtobufError::Unsupported(format!("{kind} with {} in protobuf", left.join(", "))))
    }
}

/// Records `path` when what is left of a message after its converted fields were taken out is not empty.
fn rest<T: Default + PartialEq>(rest: &T, path: &'static str, left: &mut Vec<&'static str>) {
    if *rest != T::default() {
        left.push(path);
    }
}

fn i32s(v: Option<i32>) -> Option<i64> {
    v.map(i64::from)
}

fn quantities(v: BTreeMap<String, k8s_pb::apimachinery::pkg::api::resource::Quantity>) -> BTreeMap<String, String> {
    v.into_iter().map(|(k, q)| (k, q.string.unwrap_or_default())).collect()
}

fn container(mut c: core::Container, left: &mut Vec<&'static str>) -> Obj {
    let mut o = Obj::default();
    o.str_always("name", c.name.take());
    o.str("image", c.image.take());
    o.strs("command", std::mem::take(&mut c.command));
    o.strs("args", std::mem::take(&mut c.args));
    o.str("workingDir", c.working_dir.take());
    let ports = std::mem::take(&mut c.ports)
        .into_iter()
        .map(|mut p| {
            let mut x = Obj::default();
            x.str("name", p.name.take());
            x.int("hostPort", i32s(p.host_port.take()));
            x.int("containerPort", i32s(p.container_port.take()));
            x.str("protocol", p.protocol.take());
            x.str("hostIP", p.host_ip.take());
            rest(&p, "containers[].ports[]", left);
            x
        })
        .collect();
    o.list("ports", ports);
    let env = std::mem::take(&mut c.env)
        .into_iter()
        .map(|mut e| {
            let mut x = Obj::default();
            x.str_always("name", e.name.take());
            x.str("value", e.value.take());
            rest(&e, "containers[].env[].valueFrom", left);
            x
        })
        .collect();
    o.list("env", env);
    if let Some(mut r) = c.resources.take() {
        let mut x = Obj::default();
        x.map("limits", quantities(std::mem::take(&mut r.limits)));
        x.map("requests", quantities(std::mem::take(&mut r.requests)));
        rest(&r, "containers[].resources.claims", left);
        o.0.insert("resources".into(), Value::Object(x.0));
    }
    o.str("terminationMessagePath", c.termination_message_path.take());
    o.str("terminationMessagePolicy", c.termination_message_policy.take());
    o.str("imagePullPolicy", c.image_pull_policy.take());
    // Go's protobuf always writes its non-pointer booleans; `omitempty` leaves false out of JSON.
    o.bool("stdin", c.stdin.take().filter(|b| *b));
    o.bool("stdinOnce", c.stdin_once.take().filter(|b| *b));
    o.bool("tty", c.tty.take().filter(|b| *b));
    rest(&c, "containers[] fields beyond name, image, command, args, workingDir, ports, env, resources", left);
    o
}

fn pod_template(t: Option<core::PodTemplateSpec>, left: &mut Vec<&'static str>) -> Obj {
    let mut o = Obj::default();
    let Some(t) = t else { return o };
    o.obj("metadata", object_meta(t.metadata));
    let Some(mut s) = t.spec else { return o };
    let mut spec = Obj::default();
    spec.list("containers", std::mem::take(&mut s.containers).into_iter().map(|c| container(c, left)).collect());
    spec.list(
        "initContainers",
        std::mem::take(&mut s.init_containers).into_iter().map(|c| container(c, left)).collect(),
    );
    spec.str("restartPolicy", s.restart_policy.take());
    spec.int("terminationGracePeriodSeconds", s.termination_grace_period_seconds.take());
    spec.str("dnsPolicy", s.dns_policy.take());
    spec.map("nodeSelector", std::mem::take(&mut s.node_selector));
    spec.str("serviceAccountName", s.service_account_name.take());
    spec.str("schedulerName", s.scheduler_name.take());
    // Non-pointer fields Go's protobuf always writes, empty when unset.
    spec.str("serviceAccount", s.service_account.take());
    spec.str("nodeName", s.node_name.take());
    spec.str("hostname", s.hostname.take());
    spec.str("subdomain", s.subdomain.take());
    spec.str("priorityClassName", s.priority_class_name.take());
    spec.bool("hostNetwork", s.host_network.take().filter(|b| *b));
    spec.bool("hostPID", s.host_pid.take().filter(|b| *b));
    spec.bool("hostIPC", s.host_ipc.take().filter(|b| *b));
    if s.security_context.as_ref().is_some_and(|sc| *sc == core::PodSecurityContext::default()) {
        s.security_context = None;
        spec.0.insert("securityContext".into(), json!({}));
    }
    rest(&s, "template.spec fields beyond containers, restartPolicy, nodeSelector, serviceAccountName", left);
    o.0.insert("spec".into(), Value::Object(spec.0));
    o
}

fn deployment(d: apps::Deployment, left: &mut Vec<&'static str>) -> Result<Map<String, Value>, ProtobufError> {
    let mut o = top(d.metadata);
    if let Some(mut s) = d.spec {
        let mut spec = Obj::default();
        spec.int("replicas", i32s(s.replicas.take()));
        if let Some(sel) = s.selector.take() {
            spec.0.insert("selector".into(), Value::Object(label_selector(sel).0));
        }
        spec.0.insert("template".into(), Value::Object(pod_template(s.template.take(), left).0));
        if let Some(mut strategy) = s.strategy.take() {
            let mut x = Obj::default();
            x.str("type", strategy.r#type.take());
            rest(&strategy, "spec.strategy.rollingUpdate", left);
            spec.obj("strategy", x);
        }
        spec.int("minReadySeconds", i32s(s.min_ready_seconds.take()));
        spec.int("revisionHistoryLimit", i32s(s.revision_history_limit.take()));
        spec.bool("paused", s.paused.take());
        spec.int("progressDeadlineSeconds", i32s(s.progress_deadline_seconds.take()));
        rest(&s, "spec", left);
        o.0.insert("spec".into(), Value::Object(spec.0));
    }
    // Status is the server's to set on create; what a client sends is dropped, as with JSON.
    Ok(o.0)
}

fn job_spec(mut s: batch::JobSpec, left: &mut Vec<&'static str>) -> Obj {
    let mut spec = Obj::default();
    spec.int("parallelism", i32s(s.parallelism.take()));
    spec.int("completions", i32s(s.completions.take()));
    spec.int("activeDeadlineSeconds", s.active_deadline_seconds.take());
    spec.int("backoffLimit", i32s(s.backoff_limit.take()));
    spec.int("ttlSecondsAfterFinished", i32s(s.ttl_seconds_after_finished.take()));
    spec.str("completionMode", s.completion_mode.take());
    spec.bool("suspend", s.suspend.take());
    spec.bool("manualSelector", s.manual_selector.take());
    if let Some(sel) = s.selector.take() {
        spec.0.insert("selector".into(), Value::Object(label_selector(sel).0));
    }
    spec.0.insert("template".into(), Value::Object(pod_template(s.template.take(), left).0));
    rest(&s, "job spec fields beyond parallelism, completions, deadlines, backoffLimit, template", left);
    spec
}

fn job(j: batch::Job, left: &mut Vec<&'static str>) -> Result<Map<String, Value>, ProtobufError> {
    let mut o = top(j.metadata);
    if let Some(s) = j.spec {
        o.0.insert("spec".into(), Value::Object(job_spec(s, left).0));
    }
    Ok(o.0)
}

fn cron_job(c: batch::CronJob, left: &mut Vec<&'static str>) -> Result<Map<String, Value>, ProtobufError> {
    let mut o = top(c.metadata);
    if let Some(mut s) = c.spec {
        let mut spec = Obj::default();
        spec.str_always("schedule", s.schedule.take());
        spec.str("timeZone", s.time_zone.take());
        spec.int("startingDeadlineSeconds", s.starting_deadline_seconds.take());
        spec.str("concurrencyPolicy", s.concurrency_policy.take());
        spec.bool("suspend", s.suspend.take());
        if let Some(jt) = s.job_template.take() {
            let mut x = Obj::default();
            x.obj("metadata", object_meta(jt.metadata));
            if let Some(js) = jt.spec {
                x.0.insert("spec".into(), Value::Object(job_spec(js, left).0));
            }
            spec.0.insert("jobTemplate".into(), Value::Object(x.0));
        }
        spec.int("successfulJobsHistoryLimit", i32s(s.successful_jobs_history_limit.take()));
        spec.int("failedJobsHistoryLimit", i32s(s.failed_jobs_history_limit.take()));
        rest(&s, "cronjob spec", left);
        o.0.insert("spec".into(), Value::Object(spec.0));
    }
    Ok(o.0)
}

/// A JSON object under construction that leaves out what Go's `omitempty` would leave out.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    /// A string, left out when absent or empty (every string field decoded here is `omitempty` in Go's JSON).
    fn str(&mut self, key: &str, v: Option<String>) {
        if let Some(s) = v.filter(|s| !s.is_empty()) {
            self.0.insert(key.into(), json!(s));
        }
    }

    /// A string Go's JSON always writes (no `omitempty`).
    fn str_always(&mut self, key: &str, v: Option<String>) {
        self.0.insert(key.into(), json!(v.unwrap_or_default()));
    }

    /// An optional number; protobuf only carries pointer fields that were set.
    fn int(&mut self, key: &str, v: Option<i64>) {
        if let Some(n) = v {
            self.0.insert(key.into(), json!(n));
        }
    }

    /// A non-pointer `omitempty` number: zero is left out.
    fn nonzero(&mut self, key: &str, v: Option<i64>) {
        self.int(key, v.filter(|n| *n != 0));
    }

    fn bool(&mut self, key: &str, v: Option<bool>) {
        if let Some(b) = v {
            self.0.insert(key.into(), json!(b));
        }
    }

    fn strs(&mut self, key: &str, v: Vec<String>) {
        if !v.is_empty() {
            self.0.insert(key.into(), json!(v));
        }
    }

    fn map(&mut self, key: &str, v: BTreeMap<String, String>) {
        if !v.is_empty() {
            self.0.insert(key.into(), json!(v));
        }
    }

    /// Binary values as base64 strings, as `[]byte` is in Go's JSON.
    fn bytes_map(&mut self, key: &str, v: BTreeMap<String, Vec<u8>>) {
        if !v.is_empty() {
            let m: Map<String, Value> =
                v.into_iter().map(|(k, b)| (k, json!(base64::engine::general_purpose::STANDARD.encode(b)))).collect();
            self.0.insert(key.into(), Value::Object(m));
        }
    }

    fn obj(&mut self, key: &str, v: Obj) {
        if !v.0.is_empty() {
            self.0.insert(key.into(), Value::Object(v.0));
        }
    }

    fn list(&mut self, key: &str, v: Vec<Obj>) {
        if !v.is_empty() {
            self.0.insert(key.into(), Value::Array(v.into_iter().map(|o| Value::Object(o.0)).collect()));
        }
    }

    fn time(&mut self, key: &str, t: Option<meta::Time>) {
        // metav1.Time has seconds precision on the wire and in JSON; a zero time is an empty message.
        if let Some(s) = t.and_then(|t| t.seconds).and_then(|s| jiff::Timestamp::from_second(s).ok()) {
            self.0.insert(key.into(), json!(s.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
        }
    }

    fn micro_time(&mut self, key: &str, t: Option<meta::MicroTime>) {
        let Some(t) = t else { return };
        let Some(seconds) = t.seconds else { return };
        let nanos = t.nanos.unwrap_or(0) / 1000 * 1000;
        if let Ok(ts) = jiff::Timestamp::new(seconds, nanos) {
            self.0.insert(key.into(), json!(ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()));
        }
    }
}

fn object_meta(m: Option<meta::ObjectMeta>) -> Obj {
    let mut o = Obj::default();
    let Some(m) = m else { return o };
    o.str("name", m.name);
    o.str("generateName", m.generate_name);
    o.str("namespace", m.namespace);
    o.str("selfLink", m.self_link);
    o.str("uid", m.uid);
    o.str("resourceVersion", m.resource_version);
    o.nonzero("generation", m.generation);
    o.time("creationTimestamp", m.creation_timestamp);
    o.time("deletionTimestamp", m.deletion_timestamp);
    o.int("deletionGracePeriodSeconds", m.deletion_grace_period_seconds);
    o.map("labels", m.labels);
    o.map("annotations", m.annotations);
    let owners = m
        .owner_references
        .into_iter()
        .map(|r| {
            let mut x = Obj::default();
            x.str_always("apiVersion", r.api_version);
            x.str_always("kind", r.kind);
            x.str_always("name", r.name);
            x.str_always("uid", r.uid);
            x.bool("controller", r.controller);
            x.bool("blockOwnerDeletion", r.block_owner_deletion);
            x
        })
        .collect();
    o.list("ownerReferences", owners);
    o.strs("finalizers", m.finalizers);
    let managed = m
        .managed_fields
        .into_iter()
        .map(|f| {
            let mut x = Obj::default();
            x.str("manager", f.manager);
            x.str("operation", f.operation);
            x.str("apiVersion", f.api_version);
            x.time("time", f.time);
            x.str("fieldsType", f.fields_type);
            // FieldsV1 is JSON on the wire too; anything else cannot be represented and is dropped.
            if let Some(v) = f.fields_v1.and_then(|r| r.raw).and_then(|r| serde_json::from_slice::<Value>(&r).ok()) {
                x.0.insert("fieldsV1".into(), v);
            }
            x.str("subresource", f.subresource);
            x
        })
        .collect();
    o.list("managedFields", managed);
    o
}

/// Starts a top-level object with its metadata (always present, as in Go's JSON).
fn top(m: Option<meta::ObjectMeta>) -> Obj {
    let mut o = Obj::default();
    o.0.insert("metadata".into(), Value::Object(object_meta(m).0));
    o
}

fn namespace(n: core::Namespace) -> Map<String, Value> {
    let mut o = top(n.metadata);
    if let Some(spec) = n.spec {
        let mut s = Obj::default();
        s.strs("finalizers", spec.finalizers);
        o.obj("spec", s);
    }
    if let Some(status) = n.status {
        let mut s = Obj::default();
        s.str("phase", status.phase);
        let conditions = status
            .conditions
            .into_iter()
            .map(|c| {
                let mut x = Obj::default();
                x.str_always("type", c.r#type);
                x.str_always("status", c.status);
                x.time("lastTransitionTime", c.last_transition_time);
                x.str("reason", c.reason);
                x.str("message", c.message);
                x
            })
            .collect();
        s.list("conditions", conditions);
        o.obj("status", s);
    }
    o.0
}

fn secret(s: core::Secret) -> Map<String, Value> {
    let mut o = top(s.metadata);
    o.bool("immutable", s.immutable);
    o.bytes_map("data", s.data);
    o.map("stringData", s.string_data);
    o.str("type", s.r#type);
    o.0
}

fn config_map(c: core::ConfigMap) -> Map<String, Value> {
    let mut o = top(c.metadata);
    o.bool("immutable", c.immutable);
    o.map("data", c.data);
    o.bytes_map("binaryData", c.binary_data);
    o.0
}

fn object_reference(r: core::ObjectReference) -> Obj {
    let mut x = Obj::default();
    x.str("kind", r.kind);
    x.str("namespace", r.namespace);
    x.str("name", r.name);
    x.str("uid", r.uid);
    x.str("apiVersion", r.api_version);
    x.str("resourceVersion", r.resource_version);
    x.str("fieldPath", r.field_path);
    x
}

fn service_account(sa: core::ServiceAccount) -> Map<String, Value> {
    let mut o = top(sa.metadata);
    o.list("secrets", sa.secrets.into_iter().map(object_reference).collect());
    let pulls = sa
        .image_pull_secrets
        .into_iter()
        .map(|r| {
            let mut x = Obj::default();
            x.str("name", r.name);
            x
        })
        .collect();
    o.list("imagePullSecrets", pulls);
    o.bool("automountServiceAccountToken", sa.automount_service_account_token);
    o.0
}

fn event_source(s: Option<core::EventSource>) -> Obj {
    let mut x = Obj::default();
    if let Some(s) = s {
        x.str("component", s.component);
        x.str("host", s.host);
    }
    x
}

fn core_event(e: core::Event) -> Map<String, Value> {
    let mut o = top(e.metadata);
    // involvedObject and source have no omitempty: Go always writes them.
    o.0.insert("involvedObject".into(), Value::Object(object_reference(e.involved_object.unwrap_or_default()).0));
    o.str("reason", e.reason);
    o.str("message", e.message);
    o.0.insert("source".into(), Value::Object(event_source(e.source).0));
    o.time("firstTimestamp", e.first_timestamp);
    o.time("lastTimestamp", e.last_timestamp);
    o.nonzero("count", e.count.map(i64::from));
    o.str("type", e.r#type);
    o.micro_time("eventTime", e.event_time);
    if let Some(series) = e.series {
        let mut s = Obj::default();
        s.nonzero("count", series.count.map(i64::from));
        s.micro_time("lastObservedTime", series.last_observed_time);
        o.obj("series", s);
    }
    o.str("action", e.action);
    if let Some(r) = e.related {
        o.obj("related", object_reference(r));
    }
    o.str("reportingComponent", e.reporting_component);
    o.str("reportingInstance", e.reporting_instance);
    o.0
}

fn events_event(e: events::Event) -> Map<String, Value> {
    let mut o = top(e.metadata);
    o.micro_time("eventTime", e.event_time);
    if let Some(series) = e.series {
        let mut s = Obj::default();
        s.int("count", series.count.map(i64::from));
        s.micro_time("lastObservedTime", series.last_observed_time);
        o.obj("series", s);
    }
    o.str("reportingController", e.reporting_controller);
    o.str("reportingInstance", e.reporting_instance);
    o.str("action", e.action);
    o.str("reason", e.reason);
    if let Some(r) = e.regarding {
        o.obj("regarding", object_reference(r));
    }
    if let Some(r) = e.related {
        o.obj("related", object_reference(r));
    }
    o.str("note", e.note);
    o.str("type", e.r#type);
    if e.deprecated_source.is_some() {
        o.obj("deprecatedSource", event_source(e.deprecated_source));
    }
    o.time("deprecatedFirstTimestamp", e.deprecated_first_timestamp);
    o.time("deprecatedLastTimestamp", e.deprecated_last_timestamp);
    o.nonzero("deprecatedCount", e.deprecated_count.map(i64::from));
    o.0
}

fn lease(l: coordination::Lease) -> Map<String, Value> {
    let mut o = top(l.metadata);
    if let Some(spec) = l.spec {
        let mut s = Obj::default();
        s.str("holderIdentity", spec.holder_identity);
        s.int("leaseDurationSeconds", spec.lease_duration_seconds.map(i64::from));
        s.micro_time("acquireTime", spec.acquire_time);
        s.micro_time("renewTime", spec.renew_time);
        s.int("leaseTransitions", spec.lease_transitions.map(i64::from));
        s.str("strategy", spec.strategy);
        s.str("preferredHolder", spec.preferred_holder);
        o.obj("spec", s);
    }
    o.0
}

fn policy_rule(r: rbac::PolicyRule) -> Obj {
    let mut x = Obj::default();
    // `verbs` has no omitempty in Go's JSON.
    x.0.insert("verbs".into(), json!(r.verbs));
    x.strs("apiGroups", r.api_groups);
    x.strs("resources", r.resources);
    x.strs("resourceNames", r.resource_names);
    x.strs("nonResourceURLs", r.non_resource_ur_ls);
    x
}

fn with_rules(m: Option<meta::ObjectMeta>, rules: Vec<rbac::PolicyRule>) -> Map<String, Value> {
    let mut o = top(m);
    o.list("rules", rules.into_iter().map(policy_rule).collect());
    o.0
}

fn label_selector(s: meta::LabelSelector) -> Obj {
    let mut x = Obj::default();
    x.map("matchLabels", s.match_labels);
    let exprs = s
        .match_expressions
        .into_iter()
        .map(|e| {
            let mut r = Obj::default();
            r.str_always("key", e.key);
            r.str_always("operator", e.operator);
            r.strs("values", e.values);
            r
        })
        .collect();
    x.list("matchExpressions", exprs);
    x
}

fn cluster_role(r: rbac::ClusterRole) -> Map<String, Value> {
    let mut o = Obj(with_rules(r.metadata, r.rules));
    if let Some(agg) = r.aggregation_rule {
        let mut a = Obj::default();
        a.list("clusterRoleSelectors", agg.cluster_role_selectors.into_iter().map(label_selector).collect());
        // An aggregation rule with no selectors is still meaningful (the controller fills `rules`).
        o.0.insert("aggregationRule".into(), Value::Object(a.0));
    }
    o.0
}

fn binding(
    m: Option<meta::ObjectMeta>,
    subjects: Vec<rbac::Subject>,
    role_ref: Option<rbac::RoleRef>,
) -> Map<String, Value> {
    let mut o = top(m);
    let subjects = subjects
        .into_iter()
        .map(|s| {
            let mut x = Obj::default();
            x.str_always("kind", s.kind);
            x.str("apiGroup", s.api_group);
            x.str_always("name", s.name);
            x.str("namespace", s.namespace);
            x
        })
        .collect();
    o.list("subjects", subjects);
    let r = role_ref.unwrap_or_default();
    let mut x = Obj::default();
    x.str_always("apiGroup", r.api_group);
    x.str_always("kind", r.kind);
    x.str_always("name", r.name);
    o.0.insert("roleRef".into(), Value::Object(x.0));
    o.0
}

#[cfg(test)]
mod tests {
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    use super::*;
    use crate::registry::Registry;

    fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn rt(group: &str, plural: &str) -> std::sync::Arc<ResourceType> {
        Registry::default().find(group, "v1", plural).unwrap()
    }

    /// ObjectMeta as client-go encodes it: empty strings and an empty creationTimestamp are on the wire.
    fn meta_of(name: &str, ns: &str) -> meta::ObjectMeta {
        meta::ObjectMeta {
            name: Some(name.into()),
            generate_name: Some(String::new()),
            namespace: Some(ns.into()),
            self_link: Some(String::new()),
            uid: Some(String::new()),
            resource_version: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            labels: BTreeMap::from([("app".into(), "x".into())]),
            annotations: BTreeMap::from([("note".into(), "".into())]),
            owner_references: vec![meta::OwnerReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                name: Some("owner".into()),
                uid: Some("u-1".into()),
                controller: Some(true),
                block_owner_deletion: None,
            }],
            finalizers: vec!["example.com/f".into()],
            ..Default::default()
        }
    }

    #[test]
    fn secret_decodes_to_the_json_form() {
        let s = core::Secret {
            metadata: Some(meta_of("s", "default")),
            immutable: Some(false),
            data: BTreeMap::from([("a".into(), b"b\x00\xff".to_vec())]),
            string_data: BTreeMap::from([("c".into(), "d".into())]),
            r#type: Some("Opaque".into()),
        };
        let v = decode_object(&wrap("v1", "Secret", s.encode_to_vec()), &rt("", "secrets"), "v1").unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "s",
                    "namespace": "default",
                    "labels": {"app": "x"},
                    "annotations": {"note": ""},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "u-1", "controller": true}],
                    "finalizers": ["example.com/f"],
                },
                "immutable": false,
                "data": {"a": "YgD/"},
                "stringData": {"c": "d"},
                "type": "Opaque",
            })
        );
    }

    #[test]
    fn namespace_generate_name_and_times() {
        let mut m = meta_of("", "");
        m.generate_name = Some("gen-".into());
        m.labels.clear();
        m.annotations.clear();
        m.owner_references.clear();
        m.finalizers.clear();
        m.creation_timestamp = Some(meta::Time { seconds: Some(1_700_000_000), nanos: Some(5) });
        let n = core::Namespace { metadata: Some(m), spec: Some(core::NamespaceSpec::default()), status: None };
        let v = decode_object(&wrap("v1", "Namespace", n.encode_to_vec()), &rt("", "namespaces"), "v1").unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"generateName": "gen-", "creationTimestamp": "2023-11-14T22:13:20Z"},
            })
        );
    }

    #[test]
    fn rbac_and_lease_decode() {
        let rule = rbac::PolicyRule {
            verbs: vec!["get".into()],
            api_groups: vec!["".into()],
            resources: vec!["secrets".into()],
            ..Default::default()
        };
        let role = rbac::Role { metadata: Some(meta_of("r", "ns")), rules: vec![rule] };
        let v = decode_object(
            &wrap("rbac.authorization.k8s.io/v1", "Role", role.encode_to_vec()),
            &rt("rbac.authorization.k8s.io", "roles"),
            "v1",
        )
        .unwrap();
        assert_eq!(v["rules"], json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]));

        let b = rbac::RoleBinding {
            metadata: Some(meta_of("rb", "ns")),
            subjects: vec![rbac::Subject {
                kind: Some("ServiceAccount".into()),
                api_group: Some(String::new()),
                name: Some("sa".into()),
                namespace: Some("ns".into()),
            }],
            role_ref: Some(rbac::RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: Some("Role".into()),
                name: Some("r".into()),
            }),
        };
        let v = decode_object(
            &wrap("rbac.authorization.k8s.io/v1", "RoleBinding", b.encode_to_vec()),
            &rt("rbac.authorization.k8s.io", "rolebindings"),
            "v1",
        )
        .unwrap();
        assert_eq!(v["subjects"], json!([{"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]));
        assert_eq!(v["roleRef"], json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}));

        let l = coordination::Lease {
            metadata: Some(meta_of("l", "ns")),
            spec: Some(coordination::LeaseSpec {
                holder_identity: Some("me".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(meta::MicroTime { seconds: Some(1_700_000_000), nanos: Some(123_456_789) }),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        let v = decode_object(
            &wrap("coordination.k8s.io/v1", "Lease", l.encode_to_vec()),
            &rt("coordination.k8s.io", "leases"),
            "v1",
        )
        .unwrap();
        assert_eq!(
            v["spec"],
            json!({
                "holderIdentity": "me",
                "leaseDurationSeconds": 15,
                "renewTime": "2023-11-14T22:13:20.123456Z",
                "leaseTransitions": 0,
            })
        );
    }

    #[test]
    fn delete_options_decode() {
        let o = meta::DeleteOptions {
            propagation_policy: Some("Background".into()),
            preconditions: Some(meta::Preconditions { uid: Some("u".into()), resource_version: None }),
            dry_run: vec!["All".into()],
            ..Default::default()
        };
        let v = decode_delete_options(&wrap("v1", "DeleteOptions", o.encode_to_vec())).unwrap();
        assert_eq!(v, json!({"preconditions": {"uid": "u"}, "propagationPolicy": "Background", "dryRun": ["All"]}));
    }

    #[test]
    fn workloads_decode_the_common_fields_and_refuse_the_others() {
        let deployments = rt("apps", "deployments");
        let container = core::Container {
            name: Some("web".into()),
            image: Some("nginx:1.27".into()),
            ports: vec![core::ContainerPort { container_port: Some(80), ..Default::default() }],
            stdin_once: Some(false),
            ..Default::default()
        };
        let template = core::PodTemplateSpec {
            metadata: Some(meta::ObjectMeta {
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(core::PodSpec {
                containers: vec![container.clone()],
                host_network: Some(false),
                ..Default::default()
            }),
        };
        let dep = apps::Deployment {
            metadata: Some(meta_of("web", "default")),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                template: Some(template.clone()),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus::default()),
        };
        let out = decode_object(&wrap("apps/v1", "Deployment", dep.encode_to_vec()), &deployments, "v1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}])
        );
        // A probe is not converted: the body is refused rather than stored without it.
        let mut probed = dep.clone();
        if let Some(spec) = probed.spec.as_mut().and_then(|s| s.template.as_mut()).and_then(|t| t.spec.as_mut()) {
            spec.containers[0].liveness_probe = Some(core::Probe { period_seconds: Some(5), ..Default::default() });
        }
        let e = decode_object(&wrap("apps/v1", "Deployment", probed.encode_to_vec()), &deployments, "v1").unwrap_err();
        assert_eq!(e.to_api_error(&deployments, "v1").code, 415, "{e}");
    }

    #[test]
    fn refusals() {
        let secrets = rt("", "secrets");
        // Not protobuf at all.
        let e = decode_object(b"{}", &secrets, "v1").unwrap_err();
        assert!(matches!(e, ProtobufError::NoMagic), "{e}");
        assert_eq!(e.to_api_error(&secrets, "v1").code, 400);
        // Garbage after the magic.
        let mut body = MAGIC.to_vec();
        body.extend([0x0a, 0xff]);
        assert!(matches!(decode_object(&body, &secrets, "v1"), Err(ProtobufError::Envelope(_))));
        // A ConfigMap sent to the secrets endpoint.
        let cm = core::ConfigMap { metadata: Some(meta_of("c", "ns")), ..Default::default() };
        let e = decode_object(&wrap("v1", "ConfigMap", cm.encode_to_vec()), &secrets, "v1").unwrap_err();
        assert!(matches!(e, ProtobufError::KindMismatch { .. }), "{e}");
        // A kind without decoding here is 415, like a custom resource on a real server.
        let statefulsets = rt("apps", "statefulsets");
        let e = decode_object(&wrap("apps/v1", "StatefulSet", vec![]), &statefulsets, "v1").unwrap_err();
        let api = e.to_api_error(&statefulsets, "v1");
        assert_eq!((api.code, api.reason), (415, "UnsupportedMediaType"));
        assert_eq!(
            api.message,
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml"
        );
    }

    #[test]
    fn content_type_detection() {
        assert!(is_protobuf("application/vnd.kubernetes.protobuf"));
        assert!(is_protobuf("application/vnd.kubernetes.protobuf; charset=utf-8"));
        assert!(!is_protobuf("application/json"));
        assert!(!is_protobuf("application/yaml"));
    }
}
