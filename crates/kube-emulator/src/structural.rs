//! A CRD version's structural schema (OpenAPI v3 with Kubernetes extensions) as a JSON Schema validator: the registry
//! compiles one per served version when a CRD is written, and admission (`validation.rs`) checks objects with it.

use serde_json::{Map, Value, json};

/// Translates a CRD's OpenAPI v3 schema into a JSON Schema (draft 4) validator.
///
/// Metadata is relaxed to "an object" (the server validates it separately), `nullable` becomes a null type and
/// `x-kubernetes-int-or-string` becomes integer-or-string.
pub fn compile_structural(schema: &Value) -> Result<jsonschema::Validator, String> {
    let mut translated = translate(schema);
    if let Some(props) = translated.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("metadata".into(), json!({"type": "object"}));
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(true)
        .build(&translated)
        .map_err(|e| e.to_string())
}

fn translate(schema: &Value) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "properties" | "patternProperties" => {
                let props = v
                    .as_object()
                    .map(|m| m.iter().map(|(pk, pv)| (pk.clone(), translate(pv))).collect())
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(k.clone(), translate(v));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = v.as_array().map(|a| a.iter().map(translate).collect()).unwrap_or_default();
                out.insert(k.clone(), Value::Array(list));
            }
            // Kubernetes extensions and annotations are not JSON Schema keywords.
            k if k.starts_with("x-kubernetes-") => {}
            "default" | "example" | "externalDocs" | "nullable" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if obj.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        out.remove("type");
        out.insert("anyOf".into(), json!([{"type": "integer"}, {"type": "string"}]));
    }
    if obj.get("nullable").and_then(Value::as_bool) == Some(true)
        && let Some(t) = out.get("type").and_then(Value::as_str).map(String::from)
    {
        out.insert("type".into(), json!([t, "null"]));
    }
    Value::Object(out)
}
