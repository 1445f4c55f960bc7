//! Protobuf bodies (`application/vnd.kubernetes.protobuf`) of the built-in kinds, in requests and responses.
//!
//! client-go's typed clients (kubectl's `create` subcommands, `kubectl events`, Helm's release storage, most
//! controllers) send built-in objects as protobuf and ask for protobuf answers: the magic `k8s\0` followed by a
//! `runtime.Unknown` envelope whose `raw` holds the object's message; a watch is a stream of length-prefixed frames,
//! each such an envelope around a `WatchEvent` whose object is itself enveloped.
//!
//! The conversion is generic: the message descriptors of the v1.33 API (`schemas/protobuf-v1.33.fds`, extracted from
//! kubectl 1.33 by `schemas/generate_protobuf.py`) are walked field by field, using each field's JSON name, and the
//! few apimachinery types whose JSON form differs from their message (`Time`, `MicroTime`, `Duration`, `Quantity`,
//! `IntOrString`, `RawExtension`, `FieldsV1`) are converted as their Go `MarshalJSON` does. Go's JSON leaves out the
//! zero value of a non-pointer field (`omitempty`), while protobuf always carries it; the descriptors keep gogo's
//! `nullable=false` option on exactly those fields, so a zero value is dropped there and kept on pointer fields
//! (`replicas: 0`, `automountServiceAccountToken: false`, `emptyDir: {}`).
//!
//! Custom resources have no protobuf form: a real API server answers 415 for such a body and JSON (or 406 when the
//! client accepts nothing else) for such a response, and so does the emulator.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use base64::Engine as _;
use k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::registry::ResourceType;

/// The protobuf media type of the Kubernetes API.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The media type of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// What a real API server accepts for bodies it cannot read as protobuf (custom resources).
pub const JSON_MEDIA_TYPES: &str = "application/json, application/yaml";

/// The four bytes that start every protobuf-encoded Kubernetes object.
const MAGIC: &[u8] = b"k8s\0";

/// The serialized `FileDescriptorSet` of the v1.33 API types.
static DESCRIPTORS: &[u8] = include_bytes!("schemas/protobuf-v1.33.fds");

/// gogoproto's `nullable` field option (`(gogoproto.nullable) = false` marks a non-pointer Go field).
const GOGO_NULLABLE: u32 = 65001;

/// gogoproto's `customname` field option: the Go field's name.
const GOGO_CUSTOMNAME: u32 = 65004;

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// The descriptors, and what Go's JSON does differently from the messages.
struct Catalog {
    pool: DescriptorPool,
    /// Fields (full names) that are not pointers in Go: their zero value is left out of JSON.
    non_nullable: HashSet<String>,
    /// Embedded structs Go's JSON inlines (`json:",inline"`, e.g. `Probe.handler`, `Volume.volumeSource`): their
    /// fields appear in the parent's JSON object.
    inline: HashSet<String>,
}

static CATALOG: LazyLock<Result<Catalog, String>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string())?;
    let mut non_nullable = HashSet::new();
    let mut inline = HashSet::new();
    // `(gogoproto.nullable) = false` is the varint 0 under field 65001 of the field's options.
    let mut not_nullable = Vec::new();
    prost::encoding::encode_key(GOGO_NULLABLE, prost::encoding::WireType::Varint, &mut not_nullable);
    not_nullable.push(0);
    for message in pool.all_messages() {
        for field in message.fields() {
            let options: Vec<Vec<u8>> = field
                .options()
                .unknown_fields()
                .map(|u| {
                    let mut bytes = Vec::new();
                    u.encode(&mut bytes);
                    bytes
                })
                .collect();
            if options.contains(&not_nullable) {
                non_nullable.insert(field.full_name().to_string());
            }
            // An embedded struct: the Go field is named after its type. Go's JSON inlines it unless it has a name
            // of its own (`metadata`), which the OpenAPI definition of the parent then lists.
            if let Some(child) = field.kind().as_message() {
                let mut embedded = Vec::new();
                prost::encoding::string::encode(GOGO_CUSTOMNAME, &child.name().to_string(), &mut embedded);
                if options.contains(&embedded)
                    && super::typed::definition_has_property(message.full_name(), field.json_name()) == Some(false)
                {
                    inline.insert(field.full_name().to_string());
                }
            }
        }
    }
    Ok(Catalog { pool, non_nullable, inline })
});

fn catalog() -> Result<&'static Catalog, ProtobufError> {
    CATALOG.as_ref().map_err(|e| ProtobufError::Descriptors(e.clone()))
}

/// Why a protobuf body could not be decoded or an object encoded.
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
    /// This kind has no protobuf form (custom resources).
    #[error("no protobuf encoding for {0}")]
    Unsupported(String),
    /// A JSON value does not fit the field's message type (a stored object the emulator cannot encode).
    #[error("cannot encode {path} as protobuf: {reason}")]
    Encode {
        /// JSON path of the value.
        path: String,
        /// What did not fit.
        reason: String,
    },
    /// The embedded descriptors did not load (a build defect, reported rather than panicking).
    #[error("the protobuf descriptors did not load: {0}")]
    Descriptors(String),
}

impl ProtobufError {
    /// The API error a real server would answer with for a body of `rt` at `version`.
    pub fn to_api_error(&self, rt: &ResourceType, version: &str) -> ApiError {
        match self {
            Self::Unsupported(_) => ApiError::unsupported_body(JSON_MEDIA_TYPES),
            Self::Encode { .. } | Self::Descriptors(_) => ApiError::internal(self.to_string()),
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

/// The message type of kind `kind` in `group`/`version`, if the built-in API has one.
fn message(group: &str, version: &str, kind: &str) -> Option<MessageDescriptor> {
    let catalog = catalog().ok()?;
    let name = match group {
        "" if kind == "Status" => format!("{META}.Status"),
        "" => format!("k8s.io.api.core.{version}.{kind}"),
        // `rbac.authorization.k8s.io` -> `k8s.io.api.rbac.v1`, `apps` -> `k8s.io.api.apps.v1`.
        g => format!("k8s.io.api.{}.{version}.{kind}", g.split('.').next().unwrap_or(g)),
    };
    catalog.pool.get_message_by_name(&name)
}

/// Whether objects of `rt` have a protobuf form (built-in kinds, not custom resources).
pub fn has_protobuf(rt: &ResourceType, version: &str) -> bool {
    !rt.custom && message(&rt.group, version, &rt.kind).is_some()
}

/// `(group, version)` of an `apiVersion`.
fn group_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
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

/// Wraps a message in the magic and the `runtime.Unknown` envelope.
fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    unknown.encode(&mut out).unwrap_or_default();
    out
}

/// Decodes a protobuf object body for resource `rt` at `version` into its JSON form (with apiVersion and kind).
pub fn decode_object(body: &[u8], rt: &ResourceType, version: &str) -> Result<Value, ProtobufError> {
    let expected_api_version = rt.api_version(version);
    // Refuse kinds without a message type before looking at the body, as the real server refuses media types a
    // resource has no serializer for.
    let desc = if rt.custom { None } else { message(&rt.group, version, &rt.kind) };
    let Some(desc) = desc else {
        catalog()?;
        return Err(ProtobufError::Unsupported(format!("{expected_api_version}, Kind={}", rt.kind)));
    };
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
    let msg = DynamicMessage::decode(desc, raw.as_slice())
        .map_err(|source| ProtobufError::Object { kind: kind.clone(), source })?;
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!(kind));
    out.extend(message_json(&msg, catalog()?));
    Ok(Value::Object(out))
}

/// Decodes a protobuf `DeleteOptions` body into its JSON form.
pub fn decode_delete_options(body: &[u8]) -> Result<Value, ProtobufError> {
    let (_, kind, raw) = envelope(body)?;
    if !kind.is_empty() && kind != "DeleteOptions" {
        return Err(ProtobufError::KindMismatch { expected: "DeleteOptions".into(), found: kind });
    }
    let catalog = catalog()?;
    let desc = catalog
        .pool
        .get_message_by_name(&format!("{META}.DeleteOptions"))
        .ok_or_else(|| ProtobufError::Descriptors("no DeleteOptions message".into()))?;
    let msg = DynamicMessage::decode(desc, raw.as_slice())
        .map_err(|source| ProtobufError::Object { kind: "DeleteOptions".into(), source })?;
    Ok(Value::Object(message_json(&msg, catalog)))
}

/// Encodes an object, a list or a `Status` (its JSON form, with apiVersion and kind) as a protobuf body; `Ok(None)`
/// when its kind has no protobuf form (custom resources, server-side Tables).
pub fn encode(value: &Value) -> Result<Option<Vec<u8>>, ProtobufError> {
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
    let (group, version) = group_version(api_version);
    let Some(desc) = message(group, version, kind) else { return Ok(None) };
    let Some(obj) = value.as_object() else { return Ok(None) };
    let msg = message_from_json(&desc, obj, "")?;
    Ok(Some(wrap(api_version, kind, msg.encode_to_vec())))
}

/// One frame of a protobuf watch stream: the 4-byte big-endian length, then a `WatchEvent` message whose object is
/// the enveloped `object`. The stream itself uses the API server's raw protobuf serializer (no magic, no envelope:
/// the frames can only hold WatchEvents); only the embedded object carries them. `Ok(None)` when the object has no
/// protobuf form.
pub fn watch_frame(type_: &str, object: &Value) -> Result<Option<Vec<u8>>, ProtobufError> {
    let Some(inner) = encode(object)? else { return Ok(None) };
    let event = WatchEvent { r#type: Some(type_.into()), object: Some(RawExtension { raw: Some(inner) }) };
    let body = event.encode_to_vec();
    let len = u32::try_from(body.len())
        .map_err(|_| ProtobufError::Encode { path: "watch event".into(), reason: "larger than 4 GiB".into() })?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend(body);
    Ok(Some(frame))
}

// ---- protobuf -> JSON ----------------------------------------------------------------------------------------------

fn message_json(msg: &DynamicMessage, catalog: &Catalog) -> Map<String, Value> {
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        let Some(v) = field_json(value, catalog) else { continue };
        // A non-pointer Go field: protobuf always carries it, Go's JSON leaves its zero value out.
        if catalog.non_nullable.contains(field.full_name()) && is_zero(&v) {
            continue;
        }
        match v {
            Value::Object(fields) if catalog.inline.contains(field.full_name()) => out.extend(fields),
            v => {
                out.insert(field.json_name().to_string(), v);
            }
        }
    }
    out
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn field_json(value: &prost_reflect::Value, catalog: &Catalog) -> Option<Value> {
    match value {
        prost_reflect::Value::List(items) if !items.is_empty() => {
            Some(Value::Array(items.iter().map(|i| single_json(i, catalog).unwrap_or(Value::Null)).collect()))
        }
        prost_reflect::Value::Map(entries) if !entries.is_empty() => {
            let object =
                entries.iter().map(|(k, v)| (map_key(k), single_json(v, catalog).unwrap_or(Value::Null))).collect();
            Some(Value::Object(object))
        }
        prost_reflect::Value::List(_) | prost_reflect::Value::Map(_) => None,
        single => single_json(single, catalog),
    }
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

fn single_json(v: &prost_reflect::Value, catalog: &Catalog) -> Option<Value> {
    use prost_reflect::Value as P;
    Some(match v {
        P::Bool(b) => json!(b),
        P::I32(n) => json!(n),
        P::I64(n) => json!(n),
        P::U32(n) => json!(n),
        P::U64(n) => json!(n),
        P::F32(n) => json!(n),
        P::F64(n) => json!(n),
        P::String(s) => json!(s),
        // `[]byte` is base64 in Go's JSON.
        P::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        P::EnumNumber(n) => json!(n),
        P::Message(m) => special_json(m).unwrap_or_else(|| Value::Object(message_json(m, catalog))),
        P::List(_) | P::Map(_) => return None,
    })
}

fn int_field(m: &DynamicMessage, name: &str) -> i64 {
    m.get_field_by_name(name).and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from))).unwrap_or_default()
}

fn bytes_field(m: &DynamicMessage, name: &str) -> Vec<u8> {
    m.get_field_by_name(name).and_then(|v| v.as_bytes().map(|b| b.to_vec())).unwrap_or_default()
}

/// The JSON form of the apimachinery types whose `MarshalJSON` differs from their message; `None` for the others.
fn special_json(m: &DynamicMessage) -> Option<Value> {
    let desc = m.descriptor();
    Some(match desc.full_name() {
        TIME | MICRO_TIME => {
            let (seconds, nanos) = (int_field(m, "seconds"), int_field(m, "nanos"));
            if seconds == 0 && nanos == 0 {
                // The zero time is `null` in Go's JSON.
                return Some(Value::Null);
            }
            let micro = desc.full_name() == MICRO_TIME;
            let nanos = if micro { nanos / 1000 * 1000 } else { 0 };
            let ts = jiff::Timestamp::new(seconds, i32::try_from(nanos).unwrap_or(0)).ok()?;
            let format = if micro { "%Y-%m-%dT%H:%M:%S.%6fZ" } else { "%Y-%m-%dT%H:%M:%SZ" };
            json!(ts.strftime(format).to_string())
        }
        DURATION => json!(go_duration(int_field(m, "duration"))),
        QUANTITY => json!(m.get_field_by_name("string").and_then(|v| v.as_str().map(String::from)).unwrap_or_default()),
        INT_OR_STRING => {
            if int_field(m, "type") == 1 {
                json!(m.get_field_by_name("strVal").and_then(|v| v.as_str().map(String::from)).unwrap_or_default())
            } else {
                json!(int_field(m, "intVal"))
            }
        }
        RAW_EXTENSION => serde_json::from_slice(&bytes_field(m, "raw")).unwrap_or(Value::Null),
        FIELDS_V1 => serde_json::from_slice(&bytes_field(m, "Raw")).unwrap_or(Value::Null),
        _ => return None,
    })
}

/// A duration as Go's `time.Duration.String` writes it (`1h0m0s`, `1.5s`, `300ms`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(n, div));
    }
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let s = fraction(rest, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// `n / div` with the fraction's trailing zeros removed (`1500, 1000` -> `1.5`).
fn fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    format!("{whole}.{}", format!("{frac:0width$}").trim_end_matches('0'))
}

/// Parses a Go duration string (`1h2m3.5s`, `300ms`) into nanoseconds.
fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    #[allow(clippy::cast_possible_truncation)]
    let n = total.round() as i64;
    Some(if neg { -n } else { n })
}

// ---- JSON -> protobuf ----------------------------------------------------------------------------------------------

fn encode_error(path: &str, reason: impl Into<String>) -> ProtobufError {
    ProtobufError::Encode { path: if path.is_empty() { ".".into() } else { path.into() }, reason: reason.into() }
}

fn message_from_json(
    desc: &MessageDescriptor,
    obj: &Map<String, Value>,
    path: &str,
) -> Result<DynamicMessage, ProtobufError> {
    let mut msg = DynamicMessage::new(desc.clone());
    // The JSON keys of inlined embedded structs belong to those structs' messages.
    if let Ok(catalog) = catalog() {
        for field in desc.fields().filter(|f| catalog.inline.contains(f.full_name())) {
            let Some(child) = field.kind().as_message().cloned() else { continue };
            let part: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| desc.get_field_by_json_name(k).is_none() && child.get_field_by_json_name(k).is_some())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !part.is_empty() {
                msg.set_field(&field, prost_reflect::Value::Message(message_from_json(&child, &part, path)?));
            }
        }
    }
    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        // apiVersion and kind live in the envelope, not in the message.
        let Some(field) = desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key)) else { continue };
        let path = format!("{path}.{key}");
        let kind = field.kind();
        let v = if field.is_map() {
            let entries = value.as_object().ok_or_else(|| encode_error(&path, "not an object"))?;
            let value_kind = kind
                .as_message()
                .map(|m| m.map_entry_value_field().kind())
                .ok_or_else(|| encode_error(&path, "map"))?;
            let mut map = HashMap::new();
            for (k, v) in entries {
                if !v.is_null() {
                    map.insert(MapKey::String(k.clone()), single_from_json(&value_kind, v, &format!("{path}.{k}"))?);
                }
            }
            prost_reflect::Value::Map(map)
        } else if field.is_list() {
            let items = value.as_array().ok_or_else(|| encode_error(&path, "not an array"))?;
            let items: Result<Vec<_>, _> =
                items.iter().enumerate().map(|(i, v)| single_from_json(&kind, v, &format!("{path}[{i}]"))).collect();
            prost_reflect::Value::List(items?)
        } else {
            single_from_json(&kind, value, &path)?
        };
        msg.set_field(&field, v);
    }
    Ok(msg)
}

fn single_from_json(kind: &Kind, v: &Value, path: &str) -> Result<prost_reflect::Value, ProtobufError> {
    use prost_reflect::Value as P;
    let int = || v.as_i64().ok_or_else(|| encode_error(path, "not an integer"));
    Ok(match kind {
        Kind::Message(m) => match special_from_json(m, v, path)? {
            Some(msg) => P::Message(msg),
            None => {
                let obj = v.as_object().ok_or_else(|| encode_error(path, "not an object"))?;
                P::Message(message_from_json(m, obj, path)?)
            }
        },
        Kind::String => P::String(v.as_str().ok_or_else(|| encode_error(path, "not a string"))?.to_string()),
        Kind::Bytes => {
            let s = v.as_str().ok_or_else(|| encode_error(path, "not a base64 string"))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| encode_error(path, "not a base64 string"))?;
            P::Bytes(b.into())
        }
        Kind::Bool => P::Bool(v.as_bool().ok_or_else(|| encode_error(path, "not a boolean"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            P::I32(i32::try_from(int()?).map_err(|_| encode_error(path, "out of range"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => P::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => P::U32(u32::try_from(int()?).map_err(|_| encode_error(path, "out of range"))?),
        Kind::Uint64 | Kind::Fixed64 => P::U64(u64::try_from(int()?).map_err(|_| encode_error(path, "out of range"))?),
        #[allow(clippy::cast_possible_truncation)]
        Kind::Float => P::F32(v.as_f64().ok_or_else(|| encode_error(path, "not a number"))? as f32),
        Kind::Double => P::F64(v.as_f64().ok_or_else(|| encode_error(path, "not a number"))?),
        Kind::Enum(_) => P::EnumNumber(i32::try_from(int()?).map_err(|_| encode_error(path, "out of range"))?),
    })
}

fn set(msg: &mut DynamicMessage, name: &str, value: prost_reflect::Value) {
    if let Some(field) = msg.descriptor().get_field_by_name(name) {
        msg.set_field(&field, value);
    }
}

/// The message of the apimachinery types whose JSON form differs from their message; `None` for the others.
fn special_from_json(desc: &MessageDescriptor, v: &Value, path: &str) -> Result<Option<DynamicMessage>, ProtobufError> {
    use prost_reflect::Value as P;
    let mut msg = DynamicMessage::new(desc.clone());
    let text = || v.as_str().ok_or_else(|| encode_error(path, "not a string"));
    match desc.full_name() {
        TIME | MICRO_TIME => {
            let ts: jiff::Timestamp = text()?.parse().map_err(|_| encode_error(path, "not an RFC 3339 time"))?;
            set(&mut msg, "seconds", P::I64(ts.as_second()));
            set(&mut msg, "nanos", P::I32(ts.subsec_nanosecond()));
        }
        DURATION => {
            let nanos = parse_go_duration(text()?).ok_or_else(|| encode_error(path, "not a duration"))?;
            set(&mut msg, "duration", P::I64(nanos));
        }
        QUANTITY => set(&mut msg, "string", P::String(text()?.to_string())),
        INT_OR_STRING => match v {
            Value::String(s) => {
                set(&mut msg, "type", P::I64(1));
                set(&mut msg, "strVal", P::String(s.clone()));
            }
            _ => {
                let n = v.as_i64().and_then(|n| i32::try_from(n).ok());
                set(&mut msg, "type", P::I64(0));
                set(&mut msg, "intVal", P::I32(n.ok_or_else(|| encode_error(path, "not an int or string"))?));
            }
        },
        RAW_EXTENSION => set(&mut msg, "raw", P::Bytes(v.to_string().into_bytes().into())),
        FIELDS_V1 => set(&mut msg, "Raw", P::Bytes(v.to_string().into_bytes().into())),
        _ => return Ok(None),
    }
    Ok(Some(msg))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::coordination::v1 as coordination;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::api::rbac::v1 as rbac;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::registry::Registry;

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
    fn workloads_decode_every_field_and_keep_set_pointer_zeros() {
        let deployments = rt("apps", "deployments");
        let probe = core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: Some("/healthz".into()),
                    port: Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: Some("http".into()) }),
                    host: Some(String::new()),
                    scheme: Some(String::new()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        };
        let container = core::Container {
            name: Some("web".into()),
            image: Some("nginx:1.27".into()),
            ports: vec![core::ContainerPort { container_port: Some(80), ..Default::default() }],
            resources: Some(core::ResourceRequirements {
                limits: BTreeMap::from([("memory".into(), Quantity { string: Some("128Mi".into()) })]),
                ..Default::default()
            }),
            liveness_probe: Some(probe),
            stdin_once: Some(false),
            ..Default::default()
        };
        let template = core::PodTemplateSpec {
            metadata: Some(meta::ObjectMeta {
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(core::PodSpec {
                containers: vec![container],
                volumes: vec![core::Volume {
                    name: Some("scratch".into()),
                    volume_source: Some(core::VolumeSource {
                        empty_dir: Some(core::EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }),
                }],
                host_network: Some(false),
                automount_service_account_token: Some(false),
                ..Default::default()
            }),
        };
        let dep = apps::Deployment {
            metadata: Some(meta_of("web", "default")),
            spec: Some(apps::DeploymentSpec { replicas: Some(0), template: Some(template), ..Default::default() }),
            status: Some(apps::DeploymentStatus::default()),
        };
        let out = decode_object(&wrap("apps/v1", "Deployment", dep.encode_to_vec()), &deployments, "v1")
            .unwrap_or_else(|e| panic!("{e}"));
        // `replicas` is a pointer: a set zero stays; `status` is an empty non-pointer struct: left out.
        assert_eq!(out["spec"]["replicas"], 0);
        assert!(out.get("status").is_none(), "{out}");
        let pod = &out["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"],
            json!([{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"containerPort": 80}],
                "resources": {"limits": {"memory": "128Mi"}},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
            }])
        );
        assert_eq!(pod["volumes"], json!([{"name": "scratch", "emptyDir": {}}]));
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert!(pod.get("hostNetwork").is_none(), "a non-pointer false is Go's omitted zero: {pod}");
    }

    #[test]
    fn objects_lists_and_watch_events_encode_back_to_the_typed_messages() {
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2023-11-14T22:13:20Z",
                         "managedFields": [{"manager": "m", "operation": "Apply", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:spec": {}}, "time": "2023-11-14T22:13:20Z"}]},
            "spec": {"ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}, {"port": 81, "targetPort": 8081}],
                     "clusterIP": "10.96.0.10", "type": "ClusterIP"},
            "status": {"loadBalancer": {}},
        });
        let body = encode(&service).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no protobuf"));
        let (api_version, kind, raw) = envelope(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Service"));
        let typed = core::Service::decode(raw.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        let spec = typed.spec.clone().unwrap_or_default();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.ports[0].target_port.as_ref().and_then(|p| p.str_val.as_deref()), Some("http"));
        assert_eq!(spec.ports[1].target_port.as_ref().and_then(|p| p.int_val), Some(8081));
        let meta = typed.metadata.clone().unwrap_or_default();
        assert_eq!(meta.creation_timestamp.and_then(|t| t.seconds), Some(1_700_000_000));
        let fields = meta.managed_fields[0].fields_v1.clone().and_then(|f| f.raw).unwrap_or_default();
        assert_eq!(serde_json::from_slice::<Value>(&fields).ok(), Some(json!({"f:spec": {}})));
        // And back: the JSON the server stored.
        let again = decode_object(&body, &rt("", "services"), "v1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            again,
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": service["metadata"],
                "spec": service["spec"],
            })
        );

        let list = json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "7"}, "items": [service]});
        let body = encode(&list).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no protobuf"));
        let (_, kind, raw) = envelope(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kind, "ServiceList");
        let typed = core::ServiceList::decode(raw.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(typed.metadata.and_then(|m| m.resource_version).as_deref(), Some("7"));
        assert_eq!(typed.items.len(), 1);

        let frame = watch_frame("ADDED", &list["items"][0]).unwrap_or_else(|e| panic!("{e}")).unwrap_or_default();
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let event = WatchEvent::decode(&frame[4..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event.r#type.as_deref(), Some("ADDED"));
        let inner = event.object.and_then(|o| o.raw).unwrap_or_default();
        let (_, kind, raw) = envelope(&inner).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kind, "Service");
        assert!(core::Service::decode(raw.as_slice()).is_ok());

        // Custom resources and Tables have no protobuf form.
        assert!(
            encode(&json!({"apiVersion": "azml.dev/v1alpha1", "kind": "MlWorkspace"})).unwrap_or_default().is_none()
        );
        assert!(encode(&json!({"apiVersion": "meta.k8s.io/v1", "kind": "Table"})).unwrap_or_default().is_none());
        // A Status has one (error answers and watch ERROR events).
        let status =
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 410, "reason": "Expired"});
        assert!(encode(&status).unwrap_or_default().is_some());
    }

    #[test]
    fn go_durations() {
        for (nanos, text) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (300_000_000, "300ms"),
            (90_000_000_000, "1m30s"),
            (-2_000, "-2µs"),
        ] {
            assert_eq!(go_duration(nanos), text);
            assert_eq!(parse_go_duration(text), Some(nanos), "{text}");
        }
        assert_eq!(parse_go_duration("1x"), None);
    }

    #[test]
    fn the_descriptors_load_and_know_go_pointers() {
        let catalog = catalog().unwrap_or_else(|e| panic!("{e}"));
        for (group, kind) in [
            ("", "Pod"),
            ("", "Service"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("apps", "ReplicaSet"),
            ("batch", "CronJob"),
            ("networking.k8s.io", "Ingress"),
            ("policy", "PodDisruptionBudget"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
        ] {
            assert!(message(group, "v1", kind).is_some(), "{group} {kind}");
        }
        assert!(catalog.non_nullable.contains("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta.name"));
        assert!(!catalog.non_nullable.contains("k8s.io.api.apps.v1.DeploymentSpec.replicas"));
        assert!(catalog.inline.contains("k8s.io.api.core.v1.Probe.handler"));
        assert!(catalog.inline.contains("k8s.io.api.core.v1.Volume.volumeSource"));
        assert!(!catalog.inline.contains("k8s.io.api.core.v1.Pod.metadata"));
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
        // A custom resource has no protobuf form: 415, as on a real server.
        let mut custom = (*rt("apps", "statefulsets")).clone();
        custom.custom = true;
        let e = decode_object(&wrap("apps/v1", "StatefulSet", vec![]), &custom, "v1").unwrap_err();
        let api = e.to_api_error(&custom, "v1");
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
