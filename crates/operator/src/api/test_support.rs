//! What the tests of the API types share: a CRD's schema, the errors the API server's admission reports for an object
//! (the structural schema, then the CEL rules with defaults applied) and the documents of an example file.

use kube::CustomResourceExt;
use serde::Deserialize as _;
use serde_json::Value;

/// The OpenAPI v3 schema of `K`'s CRD (its first version).
pub(crate) fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let version = &crd.spec.versions[0];
    let schema = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("schema");
    serde_json::to_value(schema).expect("schema is JSON")
}

/// Structural and CEL errors of `object` (an update from `old` when given), as the API server checks them: the
/// schema first, then the CEL rules with defaults applied.
pub(crate) fn admission_errors<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema_of::<K>();
    let validator = jsonschema::validator_for(&schema).expect("the generated schema compiles");
    let mut out: Vec<String> = validator.iter_errors(object).map(|e| e.to_string()).collect();
    let object = kube::core::cel::apply_defaults(&schema, object);
    let old = old.map(|o| kube::core::cel::apply_defaults(&schema, o));
    if let Err(e) = kube::core::cel::Validator::new().validate(&schema, &object, old.as_ref()) {
        out.extend(e.into_vec().into_iter().map(|e| e.to_string()));
    }
    out
}

/// The YAML documents of `examples/{name}` (at the repository root).
pub(crate) fn example_documents(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).expect("example is YAML")).collect()
}
