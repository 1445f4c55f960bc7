//! Admission for custom resources: unknown-field handling, defaulting, structural schema checks and CEL rules.

use serde_json::Value;

use super::error::{ApiError, ApiResult, Cause};
use super::registry::ResourceType;

/// What the client asked the server to do with unknown fields (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Reject unknown fields with 400 BadRequest.
    Strict,
    /// Drop unknown fields and say so in a `Warning` header (the server default).
    #[default]
    Warn,
    /// Drop unknown fields silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter; unknown values are a bad request.
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        match raw {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

/// The `ObjectMeta` fields a client may send.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
}

/// Removes fields the schema does not declare, returning their paths (`spec.foo`).
pub fn prune(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true) {
                // Embedded resources keep apiVersion/kind/metadata.
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keep_unknown = preserves_unknown(schema);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                let child_schema = props.and_then(|p| p.get(&key)).or(match additional {
                    Some(a) if a.is_object() => Some(a),
                    _ => None,
                });
                match child_schema {
                    Some(cs) => {
                        if let Some(child) = map.get_mut(&key) {
                            prune(cs, child, &child_path, unknown);
                        }
                    }
                    None if keep_unknown || additional.and_then(Value::as_bool) == Some(true) => {}
                    None => {
                        map.remove(&key);
                        unknown.push(child_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Drops unknown `metadata` fields, recording their paths.
pub fn prune_metadata(obj: &mut Value, unknown: &mut Vec<String>) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let extra: Vec<String> = meta.keys().filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str())).cloned().collect();
        for k in extra {
            meta.remove(&k);
            unknown.push(format!("metadata.{k}"));
        }
    }
}

/// Applies the `fieldValidation` directive to the unknown fields found: error, warnings, or nothing.
pub fn handle_unknown(
    kind: &str,
    version: &str,
    unknown: Vec<String>,
    mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    match mode {
        FieldValidation::Strict => {
            let list = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect::<Vec<_>>().join(", ");
            Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {list}"
            )))
        }
        FieldValidation::Warn => {
            warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
            Ok(())
        }
        FieldValidation::Ignore => Ok(()),
    }
}

/// Known top-level fields of the built-in kinds (for unknown-field detection).
fn builtin_fields(kind: &str, group: &str) -> Option<&'static [&'static str]> {
    Some(match (group, kind) {
        ("", "Namespace") => &["spec", "status"],
        ("", "Secret") => &["data", "stringData", "type", "immutable"],
        ("", "ConfigMap") => &["data", "binaryData", "immutable"],
        ("", "ServiceAccount") => &["secrets", "imagePullSecrets", "automountServiceAccountToken"],
        ("", "Event") => &[
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        ],
        ("events.k8s.io", "Event") => &[
            "eventTime",
            "series",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "regarding",
            "related",
            "note",
            "type",
            "deprecatedSource",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        ],
        ("coordination.k8s.io", "Lease") => &["spec"],
        ("apiextensions.k8s.io", "CustomResourceDefinition") => &["spec", "status"],
        _ => return None,
    })
}

/// Drops unknown top-level and metadata fields of a built-in object, recording their paths.
pub fn prune_builtin(rt: &ResourceType, obj: &mut Value, unknown: &mut Vec<String>) {
    prune_metadata(obj, unknown);
    let Some(fields) = builtin_fields(&rt.kind, &rt.group) else {
        return;
    };
    if let Some(map) = obj.as_object_mut() {
        let extra: Vec<String> = map
            .keys()
            .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") && !fields.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in extra {
            map.remove(&k);
            unknown.push(k);
        }
    }
}

/// JSON type name as the API server prints it in `Invalid value: "<type>"`.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::Object(_) | Value::Array(_) => format!("\"{}\"", type_name(v)),
        other => other.to_string(),
    }
}

fn pointer_to_path(segments: impl Iterator<Item = String>, indices: &[bool]) -> String {
    let mut out = String::new();
    for (seg, is_index) in segments.zip(indices.iter().copied()) {
        if is_index {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Runs the structural schema and returns causes in the API server's wording.
pub fn structural_causes(validator: &jsonschema::Validator, obj: &Value) -> Vec<Cause> {
    use jsonschema::error::ValidationErrorKind as K;
    use jsonschema::paths::LocationSegment;
    let mut causes = Vec::new();
    for err in validator.iter_errors(obj) {
        let segments: Vec<(String, bool)> = err
            .instance_path()
            .iter()
            .map(|s| match s {
                LocationSegment::Property(p) => (p.to_string(), false),
                LocationSegment::Index(i) => (i.to_string(), true),
            })
            .collect();
        let indices: Vec<bool> = segments.iter().map(|(_, i)| *i).collect();
        let path = pointer_to_path(segments.into_iter().map(|(s, _)| s), &indices);
        let inst: &Value = err.instance();
        let cause = match err.kind() {
            K::Required { property } => {
                let prop = property.as_str().unwrap_or_default();
                Cause::new("FieldValueRequired", join(&path, prop), "Required value")
            }
            K::Type { .. } => {
                let expected = validator_type_hint(&err.to_string());
                Cause::new(
                    "FieldValueTypeInvalid",
                    path.clone(),
                    format!(
                        "Invalid value: \"{}\": {path} in body must be of type {expected}: \"{}\"",
                        type_name(inst),
                        type_name(inst)
                    ),
                )
            }
            K::Enum { options } => {
                let supported = options
                    .as_array()
                    .map(|a| a.iter().map(Value::to_string).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                Cause::new(
                    "FieldValueNotSupported",
                    path.clone(),
                    format!("Unsupported value: {}: supported values: {supported}", render_value(inst)),
                )
            }
            K::Pattern { pattern } => Cause::new(
                "FieldValueInvalid",
                path.clone(),
                format!("Invalid value: {}: {path} in body should match '{pattern}'", render_value(inst)),
            ),
            K::Format { format } => Cause::new(
                "FieldValueInvalid",
                path.clone(),
                format!(
                    "Invalid value: {}: {path} in body must be of type {format}: {}",
                    render_value(inst),
                    render_value(inst)
                ),
            ),
            K::Minimum { limit } => Cause::new(
                "FieldValueInvalid",
                path.clone(),
                format!(
                    "Invalid value: {}: {path} in body should be greater than or equal to {limit}",
                    render_value(inst)
                ),
            ),
            K::Maximum { limit } => Cause::new(
                "FieldValueInvalid",
                path.clone(),
                format!(
                    "Invalid value: {}: {path} in body should be less than or equal to {limit}",
                    render_value(inst)
                ),
            ),
            K::MaxLength { limit } => {
                Cause::new("FieldValueTooLong", path.clone(), format!("Too long: may not be more than {limit} bytes"))
            }
            K::MinLength { limit } => Cause::new(
                "FieldValueInvalid",
                path.clone(),
                format!("Invalid value: {}: {path} in body should be at least {limit} chars long", render_value(inst)),
            ),
            K::MaxItems { limit } => Cause::new(
                "FieldValueTooMany",
                path.clone(),
                format!("Too many: {}: must have at most {limit} items", inst.as_array().map_or(0, Vec::len)),
            ),
            _ => Cause::new("FieldValueInvalid", path.clone(), format!("Invalid value: {}: {err}", render_value(inst))),
        };
        causes.push(cause);
    }
    causes
}

/// Extracts the expected type from a jsonschema type error message (`... is not of type "integer"`).
fn validator_type_hint(message: &str) -> String {
    message.rsplit("of type ").next().map(|s| s.trim_matches('"').replace('"', "")).unwrap_or_else(|| "unknown".into())
}

/// Evaluates `x-kubernetes-validations` (including transition rules against `old`) and returns causes.
pub fn cel_causes(compiled: &kube_cel::CompiledSchema, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let Err(errors) = kube_cel::validate_compiled(compiled, obj, old) else {
        return Vec::new();
    };
    errors
        .into_iter()
        .map(|e| {
            let at = value_at_path(obj, &e.field_path);
            let shown = at.map(type_name).unwrap_or("object");
            let reason = e.reason.clone().unwrap_or_else(|| "FieldValueInvalid".into());
            let message = match reason.as_str() {
                "FieldValueForbidden" => format!("Forbidden: {}", e.message),
                "FieldValueRequired" => format!("Required value: {}", e.message),
                "FieldValueDuplicate" => format!("Duplicate value: {}", e.message),
                _ => format!("Invalid value: \"{shown}\": {}", e.message),
            };
            Cause::new(&reason, e.field_path.clone(), message)
        })
        .collect()
}

/// Resolves a dotted path with `[i]` indices (as produced by the CEL validator) against a value.
fn value_at_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            cur = match idx.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(idx.trim_matches('\''))?,
            };
        }
    }
    Some(cur)
}

/// Admission for a custom resource: prune/flag unknown fields, apply defaults, check the structural schema and
/// CEL rules. Returns the object to store.
pub fn admit_custom(
    rt: &ResourceType,
    version: &str,
    mut obj: Value,
    old: Option<&Value>,
    mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<Value> {
    let Some(info) = rt.version_info.get(version) else {
        return Ok(obj);
    };
    let mut unknown = Vec::new();
    prune_metadata(&mut obj, &mut unknown);
    if let Some(schema) = &info.schema {
        if let Some(map) = obj.as_object_mut() {
            // apiVersion/kind/metadata are always known, whatever the schema says.
            let meta = map.remove("metadata");
            let api_version = map.remove("apiVersion");
            let kind = map.remove("kind");
            let mut rest = Value::Object(std::mem::take(map));
            prune(schema, &mut rest, "", &mut unknown);
            if let Value::Object(rest) = rest {
                *map = rest;
            }
            for (k, v) in [("apiVersion", api_version), ("kind", kind), ("metadata", meta)] {
                if let Some(v) = v {
                    map.insert(k.into(), v);
                }
            }
        }
        handle_unknown(&rt.kind, version, unknown, mode, warnings)?;
        obj = kube_cel::apply_defaults(schema, &obj);
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let mut causes = info.validator.as_ref().map(|v| structural_causes(v, &obj)).unwrap_or_default();
        if causes.is_empty()
            && let Some(compiled) = &info.cel
        {
            causes = cel_causes(compiled, &obj, old);
        }
        if let Some(meta) = obj.get("metadata") {
            super::crossfield::metadata(meta, "metadata", &mut causes);
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, &name, causes));
        }
    } else {
        handle_unknown(&rt.kind, version, unknown, mode, warnings)?;
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::structural::compile_structural;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["location"],
                    "properties": {
                        "location": {"type": "string", "x-kubernetes-validations": [
                            {"rule": "self == oldSelf", "message": "location is immutable"}]},
                        "sku": {"type": "string", "enum": ["Basic", "Premium"], "default": "Basic"},
                        "name": {"type": "string", "pattern": "^[a-z]+$"},
                        "replicas": {"type": "integer", "minimum": 1},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                },
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
            }
        })
    }

    #[test]
    fn prune_reports_unknown_paths_but_keeps_preserved_subtrees() {
        let mut v = json!({"spec": {"location": "x", "bogus": 1, "free": {"any": 1}}, "extra": true});
        let mut unknown = Vec::new();
        prune(&schema(), &mut v, "", &mut unknown);
        unknown.sort();
        assert_eq!(unknown, vec!["extra".to_string(), "spec.bogus".to_string()]);
        assert_eq!(v, json!({"spec": {"location": "x", "free": {"any": 1}}}));
    }

    #[test]
    fn structural_errors_use_api_server_wording() {
        let validator = compile_structural(&schema()).unwrap_or_else(|e| panic!("{e}"));
        let obj = json!({"spec": {"sku": "Gold", "name": "ABC", "replicas": "x"}});
        let causes = structural_causes(&validator, &obj);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.location"), "{causes:?}");
        let enum_cause = causes.iter().find(|c| c.field == "spec.sku").unwrap_or_else(|| panic!("{causes:?}"));
        assert_eq!(enum_cause.message, "Unsupported value: \"Gold\": supported values: \"Basic\", \"Premium\"");
        let pat = causes.iter().find(|c| c.field == "spec.name").unwrap_or_else(|| panic!("{causes:?}"));
        assert_eq!(pat.message, "Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'");
        let ty = causes.iter().find(|c| c.field == "spec.replicas").unwrap_or_else(|| panic!("{causes:?}"));
        assert_eq!(ty.reason, "FieldValueTypeInvalid");
        assert!(ty.message.contains("must be of type integer"), "{}", ty.message);
    }

    #[test]
    fn cel_transition_rule_rejects_change_only_on_update() {
        let s = schema();
        let new = json!({"spec": {"location": "westeurope"}});
        let s = kube_cel::compile_schema(&s);
        assert!(cel_causes(&s, &new, None).is_empty());
        let old = json!({"spec": {"location": "northeurope"}});
        let causes = cel_causes(&s, &new, Some(&old));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.location");
        assert_eq!(causes[0].message, "Invalid value: \"string\": location is immutable");
    }

    #[test]
    fn defaults_are_applied() {
        let out = kube_cel::apply_defaults(&schema(), &json!({"spec": {"location": "x"}}));
        assert_eq!(out["spec"]["sku"], "Basic");
    }
}
