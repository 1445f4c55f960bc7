//! OpenAPI documents: v3 per group-version (what `kubectl explain` and kubectl's query-parameter checks read) and
//! the v2 document (the older clients' fallback). Custom resources are described by their CRD's schema; built-in
//! kinds by the published v1.33 definitions the emulator validates them with (`typed.rs`), descriptions included.

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::registry::{Registry, ResourceType};
use super::version::KUBE_VERSION;

/// A short stable hex hash of a string.
pub fn short_hash(s: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:016X}", h.finish())
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// `GET /openapi/v3`: one entry per served group-version, with a content hash kubectl caches by.
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs = vec![(String::new(), "v1".to_string())];
    for (g, vs) in registry.groups() {
        gvs.extend(vs.into_iter().map(|v| (g.clone(), v)));
    }
    for (g, v) in gvs {
        let doc = group_version_doc(registry, &g, &v);
        let p = gv_path(&g, &v);
        let hash = short_hash(&doc.to_string());
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
    }
    json!({"paths": paths})
}

/// Reverse-DNS schema name, e.g. `dev.azml.v1alpha1.MlWorkspace` or `io.k8s.api.core.v1.Secret`.
fn schema_name(rt: &ResourceType, version: &str) -> String {
    if rt.custom {
        let reversed: Vec<&str> = rt.group.split('.').rev().collect();
        format!("{}.{version}.{}", reversed.join("."), rt.kind)
    } else {
        let group = match rt.group.as_str() {
            "" => "core".to_string(),
            g => g.trim_end_matches(".k8s.io").replace('.', "_"),
        };
        if rt.group == "apiextensions.k8s.io" {
            format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{}", rt.kind)
        } else {
            format!("io.k8s.api.{group}.{version}.{}", rt.kind)
        }
    }
}

fn builtin_description(rt: &ResourceType) -> &'static str {
    match rt.kind.as_str() {
        "Secret" => {
            "Secret holds secret data of a certain type. The total bytes of the values in the Data field must be less than MaxSecretSize bytes."
        }
        "ConfigMap" => "ConfigMap holds configuration data for pods to consume.",
        "Namespace" => "Namespace provides a scope for Names. Use of multiple namespaces is optional.",
        "ServiceAccount" => {
            "ServiceAccount binds together: * a name, understood by users, and perhaps by peripheral systems, for an identity * a principal that can be authenticated and authorized * a set of secrets"
        }
        "Event" => "Event is a report of an event somewhere in the cluster.",
        "Lease" => "Lease defines a lease concept.",
        "CustomResourceDefinition" => {
            "CustomResourceDefinition represents a resource that should be exposed on the API server.  Its name MUST be in the format <.spec.name>.<.spec.group>."
        }
        _ => "",
    }
}

fn kind_schema(rt: &ResourceType, version: &str) -> Value {
    let mut schema = rt
        .version_info
        .get(version)
        .and_then(|v| v.schema.as_deref().cloned())
        .unwrap_or_else(|| json!({"type": "object", "description": builtin_description(rt)}));
    if !schema.is_object() {
        schema = json!({"type": "object"});
    }
    if schema.get("type").is_none() {
        schema["type"] = json!("object");
    }
    if !schema.get("properties").is_some_and(Value::is_object) {
        schema["properties"] = json!({});
    }
    let props = &mut schema["properties"];
    props["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values."});
    props["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase."});
    props["metadata"] = json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"});
    schema["x-kubernetes-group-version-kind"] = json!([{"group": rt.group, "version": version, "kind": rt.kind}]);
    schema
}

fn object_meta_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "generateName": s("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": {"type": "string", "format": "date-time", "description": "CreationTimestamp is a timestamp representing the server time when this object was created."},
            "deletionTimestamp": {"type": "string", "format": "date-time", "description": "DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize (scope and select) objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations is an unstructured key value map stored with a resource."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
        },
    })
}

fn patch_operation(rt: &ResourceType, version: &str) -> Value {
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    json!({
        "operationId": format!("patch{}", rt.kind),
        "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": version, "kind": rt.kind},
    })
}

/// A vendored JSON Schema definition as an OpenAPI schema: references point at `prefix` (`#/components/schemas/` or
/// `#/definitions/`), the nullable type lists become the single type, and the strict `additionalProperties: false`
/// the validator uses is left out (the published documents do not carry it).
fn openapi_schema(def: &Value, prefix: &str) -> Value {
    match def {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let target = json!(format!("{prefix}{}", r.rsplit('/').next().unwrap_or(r)));
                        // OpenAPI 3.0 ignores the siblings of a `$ref`: the published v3 documents wrap it in `allOf`
                        // so that the field's own description stays (Swagger 2.0 keeps the siblings).
                        if m.len() > 1 && prefix.starts_with("#/components/") {
                            out.insert("allOf".into(), json!([{"$ref": target}]));
                        } else {
                            out.insert(k.clone(), target);
                        }
                    }
                    ("type", Value::Array(types)) => {
                        if let Some(t) = types.iter().find(|t| t.as_str() != Some("null")) {
                            out.insert(k.clone(), t.clone());
                        }
                    }
                    ("additionalProperties", Value::Bool(false)) => {}
                    (_, v) => {
                        out.insert(k.clone(), openapi_schema(v, prefix));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| openapi_schema(v, prefix)).collect()),
        other => other.clone(),
    }
}

/// The schemas describing `rt`: its published definitions for a built-in kind, its CRD's schema otherwise.
fn kind_schemas(rt: &ResourceType, version: &str, prefix: &str) -> Vec<(String, Value)> {
    let published = super::typed::definitions(rt, version);
    if published.is_empty() {
        return vec![(schema_name(rt, version), kind_schema(rt, version))];
    }
    published.into_iter().map(|(name, def)| (name.to_string(), openapi_schema(def, prefix))).collect()
}

/// `GET /openapi/v2`: every served kind's definitions in one Swagger 2.0 document.
pub fn v2_doc(registry: &Registry) -> Value {
    let mut definitions = Map::new();
    definitions.insert("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(), object_meta_schema());
    for rt in registry.all() {
        for version in &rt.versions {
            let mut schemas = kind_schemas(rt, version, "#/definitions/");
            for (_, schema) in &mut schemas {
                if let Some(Value::Object(props)) = schema.get_mut("properties")
                    && let Some(meta) = props.get_mut("metadata")
                    && meta.get("allOf").is_some()
                {
                    *meta = json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
                }
            }
            definitions.extend(schemas);
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": {},
        "definitions": definitions,
    })
}

/// `GET /openapi/v3/apis/{group}/{version}`.
pub fn group_version_doc(registry: &Registry, group: &str, version: &str) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.insert("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(), object_meta_schema());
    for rt in registry.all().filter(|t| t.group == group && t.versions.iter().any(|v| v == version)) {
        schemas.extend(kind_schemas(rt, version, "#/components/schemas/"));
        let base = format!("/{}", gv_path(group, version));
        let item = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", rt.plural)
        } else {
            format!("{base}/{}/{{name}}", rt.plural)
        };
        paths.insert(item, json!({"patch": patch_operation(rt, version)}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
