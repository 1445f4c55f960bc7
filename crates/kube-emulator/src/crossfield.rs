//! Cross-field validation of the common built-in kinds, as the API server's `ValidatePod`, `ValidateDeployment`,
//! `ValidateService`, `ValidateConfigMap`, ... do after the schema-level checks of `typed.rs`: rules that relate one
//! field to another (a workload's selector must select its template's labels, a volume mount must name a volume,
//! names must be unique within a list) or that the schema cannot express (port ranges, label syntax of names, config
//! keys). Each cause carries the real server's field path and message, so `kubectl` prints what a cluster prints.

use serde_json::{Map, Value};

use super::error::Cause;
use super::registry::ResourceType;
use super::typed::{DNS1123_LABEL, is_label};

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// How Go's `field.Invalid` renders a value: strings quoted, numbers and booleans plain, string maps as `%#v`.
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(m) if m.values().all(Value::is_string) => {
            let entries: Vec<String> =
                m.iter().map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default())).collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn invalid(field: String, value: &Value, detail: &str) -> Cause {
    Cause::new("FieldValueInvalid", field, format!("Invalid value: {}: {detail}", render(value)))
}

fn duplicate(field: String, value: &Value) -> Cause {
    Cause::new("FieldValueDuplicate", field, format!("Duplicate value: {}", render(value)))
}

fn required(field: String) -> Cause {
    Cause::new("FieldValueRequired", field, "Required value")
}

fn not_supported(field: String, value: &Value, allowed: &[&str]) -> Cause {
    let list = allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    Cause::new(
        "FieldValueNotSupported",
        field,
        format!("Unsupported value: {}: supported values: {list}", render(value)),
    )
}

fn items<'a>(obj: &'a Value, key: &str) -> impl Iterator<Item = (usize, &'a Value)> {
    obj.get(key).and_then(Value::as_array).into_iter().flatten().enumerate()
}

fn str_of<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn port_ok(v: &Value) -> bool {
    v.as_i64().is_some_and(|p| (1..=65535).contains(&p))
}

const QUALIFIED_NAME: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
/// The total size of an object's annotations (keys and values) the API server accepts.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

fn is_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// apimachinery's `IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain, the name at most 63 characters.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let parts: Vec<&str> = value.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if !is_dns1123_subdomain(prefix) {
                errs.push(format!("prefix part {}", super::typed::DNS1123_SUBDOMAIN));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    if !is_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME}"));
    }
    errs
}

/// `ValidateLabels` and `ValidateAnnotations` of the object metadata at `path` (`metadata`,
/// `spec.template.metadata`): label keys qualified names, values at most 63 characters of the label alphabet,
/// annotation keys qualified names, annotations at most 256 KiB in total.
pub fn metadata(meta: &Value, path: &str, causes: &mut Vec<Cause>) {
    let labels_path = format!("{path}.labels");
    for (k, v) in meta.get("labels").and_then(Value::as_object).into_iter().flatten() {
        for msg in qualified_name_errors(k) {
            causes.push(invalid(labels_path.clone(), &Value::String(k.clone()), &msg));
        }
        let value = v.as_str().unwrap_or_default();
        if value.len() > 63 {
            causes.push(invalid(labels_path.clone(), v, "must be no more than 63 characters"));
        }
        if !value.is_empty() && !is_name_part(value) {
            causes.push(invalid(labels_path.clone(), v, LABEL_VALUE));
        }
    }
    let annotations_path = format!("{path}.annotations");
    let mut size = 0;
    for (k, v) in meta.get("annotations").and_then(Value::as_object).into_iter().flatten() {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            causes.push(invalid(annotations_path.clone(), &Value::String(k.clone()), &msg));
        }
        size += k.len() + v.as_str().map_or(0, str::len);
    }
    if size > ANNOTATIONS_MAX_BYTES {
        causes.push(Cause::new(
            "FieldValueTooLong",
            annotations_path,
            format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes"),
        ));
    }
}

/// Validates what the schema cannot for the kinds that have such rules; an empty list when the object passes.
pub fn validate(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(meta) = obj.get("metadata") {
        metadata(meta, "metadata", &mut causes);
    }
    for template in ["/spec/template/metadata", "/spec/jobTemplate/spec/template/metadata", "/template/metadata"] {
        if let Some(meta) = obj.pointer(template) {
            metadata(meta, &template[1..].replace('/', "."), &mut causes);
        }
    }
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => pod_spec(spec, "spec", &mut causes),
        ("", "PodTemplate") => {
            if let Some(t) = obj.get("template") {
                pod_spec(t.get("spec").unwrap_or(&Value::Null), "template.spec", &mut causes);
            }
        }
        ("", "ReplicationController") => {
            if let Some(t) = spec.get("template") {
                pod_spec(t.get("spec").unwrap_or(&Value::Null), "spec.template.spec", &mut causes);
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            if let Some(r) = spec.get("replicas").filter(|r| r.as_i64().is_some_and(|n| n < 0)) {
                causes.push(invalid("spec.replicas".into(), r, "must be greater than or equal to 0"));
            }
            selector_matches_template(spec, &mut causes);
            if let Some(t) = spec.get("template") {
                let pod = t.get("spec").unwrap_or(&Value::Null);
                pod_spec(pod, "spec.template.spec", &mut causes);
                if let Some(policy) = pod.get("restartPolicy").filter(|p| p.as_str() != Some("Always")) {
                    causes.push(not_supported("spec.template.spec.restartPolicy".into(), policy, &["Always"]));
                }
            }
        }
        ("batch", "Job") => job_spec(spec, "spec", &mut causes),
        ("batch", "CronJob") => {
            if let Some(js) = spec.pointer("/jobTemplate/spec") {
                job_spec(js, "spec.jobTemplate.spec", &mut causes);
            }
        }
        ("", "Service") => service_spec(spec, &mut causes),
        ("", "ConfigMap" | "Secret") => {
            for key in ["data", "binaryData"] {
                for k in obj.get(key).and_then(Value::as_object).map(Map::keys).into_iter().flatten() {
                    let ok = !k.is_empty()
                        && k.len() <= 253
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                        && k != "."
                        && k != ".."
                        && !k.starts_with("..");
                    if !ok {
                        causes.push(invalid(format!("{key}[{k}]"), &Value::String(k.clone()), CONFIG_KEY));
                    }
                }
            }
            if rt.kind == "ConfigMap"
                && let (Some(data), Some(binary)) =
                    (obj.get("data").and_then(Value::as_object), obj.get("binaryData").and_then(Value::as_object))
            {
                for k in binary.keys().filter(|k| data.contains_key(*k)) {
                    causes.push(invalid(
                        format!("data[{k}]"),
                        &Value::String(k.clone()),
                        "duplicate of key present in binaryData",
                    ));
                }
            }
        }
        _ => {}
    }
    causes
}

/// A controller's selector must be present and select its template's labels (`ValidateDeploymentSpec` & co).
fn selector_matches_template(spec: &Value, causes: &mut Vec<Cause>) {
    let Some(selector) = spec.get("selector").filter(|s| s.is_object()) else {
        causes.push(required("spec.selector".into()));
        return;
    };
    let labels = spec.pointer("/template/metadata/labels").cloned().unwrap_or(Value::Object(Map::new()));
    let empty = selector.get("matchLabels").and_then(Value::as_object).is_none_or(Map::is_empty)
        && selector.get("matchExpressions").and_then(Value::as_array).is_none_or(Vec::is_empty);
    if empty {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.selector",
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
        ));
        return;
    }
    let wrapped = serde_json::json!({"metadata": {"labels": labels}});
    if !super::select::LabelSelector::from_label_selector(selector).is_ok_and(|s| s.matches(&wrapped)) {
        causes.push(invalid(
            "spec.template.metadata.labels".into(),
            &labels,
            "`selector` does not match template `labels`",
        ));
    }
}

fn job_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    for key in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"] {
        if let Some(v) = spec.get(key).filter(|v| v.as_i64().is_some_and(|n| n < 0)) {
            causes.push(invalid(format!("{path}.{key}"), v, "must be greater than or equal to 0"));
        }
    }
    if let Some(t) = spec.get("template") {
        let pod = t.get("spec").unwrap_or(&Value::Null);
        pod_spec(pod, &format!("{path}.template.spec"), causes);
        if let Some(policy) = pod.get("restartPolicy")
            && !matches!(policy.as_str(), Some("OnFailure" | "Never"))
        {
            causes.push(not_supported(format!("{path}.template.spec.restartPolicy"), policy, &["OnFailure", "Never"]));
        }
    }
}

/// `ValidatePodSpec`'s relations between containers, ports and volumes.
fn pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut volumes = Vec::new();
    for (i, v) in items(spec, "volumes") {
        let Some(name) = str_of(v, "name") else { continue };
        let field = format!("{path}.volumes[{i}].name");
        if !is_label(name) {
            causes.push(invalid(field, &v["name"], DNS1123_LABEL));
        } else if volumes.contains(&name) {
            causes.push(duplicate(field, &v["name"]));
        }
        volumes.push(name);
    }
    let mut names = Vec::new();
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in items(spec, key) {
            let cpath = format!("{path}.{key}[{i}]");
            if let Some(name) = str_of(c, "name") {
                if !is_label(name) {
                    causes.push(invalid(format!("{cpath}.name"), &c["name"], DNS1123_LABEL));
                } else if names.contains(&name) {
                    causes.push(duplicate(format!("{cpath}.name"), &c["name"]));
                }
                names.push(name);
            }
            let mut port_names = Vec::new();
            for (j, p) in items(c, "ports") {
                let ppath = format!("{cpath}.ports[{j}]");
                match p.get("containerPort") {
                    None | Some(Value::Null) => causes.push(required(format!("{ppath}.containerPort"))),
                    Some(v) if v.as_i64() == Some(0) => causes.push(required(format!("{ppath}.containerPort"))),
                    Some(v) if !port_ok(v) => causes.push(invalid(format!("{ppath}.containerPort"), v, PORT_RANGE)),
                    _ => {}
                }
                if let Some(v) = p.get("hostPort").filter(|v| v.as_i64().is_some_and(|n| n != 0) && !port_ok(v)) {
                    causes.push(invalid(format!("{ppath}.hostPort"), v, PORT_RANGE));
                }
                if let Some(name) = str_of(p, "name") {
                    if port_names.contains(&name) {
                        causes.push(duplicate(format!("{ppath}.name"), &p["name"]));
                    }
                    port_names.push(name);
                }
            }
            let mut mounts = Vec::new();
            for (j, m) in items(c, "volumeMounts") {
                let mpath = format!("{cpath}.volumeMounts[{j}]");
                if let Some(name) = str_of(m, "name")
                    && !volumes.contains(&name)
                {
                    causes.push(Cause::new(
                        "FieldValueNotFound",
                        format!("{mpath}.name"),
                        format!("Not found: {:?}", name),
                    ));
                }
                if let Some(mount) = str_of(m, "mountPath") {
                    if mounts.contains(&mount) {
                        causes.push(Cause::new(
                            "FieldValueInvalid",
                            format!("{mpath}.mountPath"),
                            format!("Invalid value: {mount:?}: must be unique"),
                        ));
                    }
                    mounts.push(mount);
                }
            }
        }
    }
}

/// `ValidateService`'s port rules.
fn service_spec(spec: &Value, causes: &mut Vec<Cause>) {
    let kind = str_of(spec, "type").unwrap_or("ClusterIP");
    let headless = str_of(spec, "clusterIP") == Some("None");
    let ports: Vec<(usize, &Value)> = items(spec, "ports").collect();
    if ports.is_empty() && kind != "ExternalName" && !headless {
        causes.push(required("spec.ports".into()));
    }
    let mut names = Vec::new();
    let mut seen = Vec::new();
    for (i, p) in &ports {
        let ppath = format!("spec.ports[{i}]");
        match str_of(p, "name").filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => causes.push(required(format!("{ppath}.name"))),
            None => {}
            Some(name) => {
                if !is_label(name) {
                    causes.push(invalid(format!("{ppath}.name"), &p["name"], DNS1123_LABEL));
                } else if names.contains(&name) {
                    causes.push(duplicate(format!("{ppath}.name"), &p["name"]));
                }
                names.push(name);
            }
        }
        let port = p.get("port").unwrap_or(&Value::Null);
        if !port_ok(port) {
            causes.push(invalid(format!("{ppath}.port"), port, PORT_RANGE));
        }
        if let Some(t) = p.get("targetPort").filter(|t| t.is_number() && !port_ok(t)) {
            causes.push(invalid(format!("{ppath}.targetPort"), t, PORT_RANGE));
        }
        if let Some(np) = p.get("nodePort").filter(|n| n.as_i64().is_some_and(|n| n != 0)) {
            if kind == "ClusterIP" {
                causes.push(Cause::new(
                    "FieldValueForbidden",
                    format!("{ppath}.nodePort"),
                    "Forbidden: may not be used when `type` is 'ClusterIP'",
                ));
            } else if !port_ok(np) {
                causes.push(invalid(format!("{ppath}.nodePort"), np, PORT_RANGE));
            }
        }
        let key = (port.as_i64(), str_of(p, "protocol").unwrap_or("TCP"));
        if seen.contains(&key) {
            let text = format!("{}/{}", key.0.unwrap_or_default(), key.1);
            causes.push(Cause::new("FieldValueDuplicate", ppath.clone(), format!("Duplicate value: {text:?}")));
        }
        seen.push(key);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::registry::Registry;
    use super::*;

    fn check(group: &str, plural: &str, obj: Value) -> Vec<String> {
        let rt = Registry::default().find(group, "v1", plural).unwrap_or_else(|| panic!("{plural}"));
        validate(&rt, &obj).into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    fn deployment(selector: Value, labels: Value, pod: Value) -> Value {
        json!({"spec": {"selector": selector, "template": {"metadata": {"labels": labels}, "spec": pod}}})
    }

    #[test]
    fn workloads_selector_must_select_the_template() {
        let pod = json!({"containers": [{"name": "web", "image": "x"}], "restartPolicy": "Always"});
        let ok = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web", "tier": "x"}), pod.clone());
        assert_eq!(check("apps", "deployments", ok), Vec::<String>::new());
        let bad = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "api"}), pod.clone());
        assert_eq!(
            check("apps", "deployments", bad),
            [
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"
            ]
        );
        let expr = deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}),
            json!({"app": "api"}),
            pod.clone(),
        );
        assert_eq!(check("apps", "statefulsets", expr), Vec::<String>::new());
        let mut never = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"}), pod);
        never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        never["spec"]["replicas"] = json!(-1);
        assert_eq!(
            check("apps", "daemonsets", never),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
            ]
        );
        assert_eq!(check("apps", "replicasets", json!({"spec": {}})), ["spec.selector: Required value"]);
    }

    #[test]
    fn pod_specs_relate_containers_ports_and_volumes() {
        let pod = json!({"spec": {
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
            "initContainers": [{"name": "web", "image": "x"}],
            "containers": [
                {"name": "web", "image": "x", "ports": [{"containerPort": 0}, {"containerPort": 70000, "name": "a"}, {"containerPort": 80, "name": "a"}],
                 "volumeMounts": [{"name": "logs", "mountPath": "/l"}, {"name": "data", "mountPath": "/l"}]},
                {"name": "Side_car", "image": "x"},
            ],
        }});
        assert_eq!(
            check("", "pods", pod),
            [
                "spec.volumes[1].name: Duplicate value: \"data\"",
                "spec.containers[0].name: Duplicate value: \"web\"",
                "spec.containers[0].ports[0].containerPort: Required value",
                "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[2].name: Duplicate value: \"a\"",
                "spec.containers[0].volumeMounts[0].name: Not found: \"logs\"",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/l\": must be unique",
                &format!("spec.containers[1].name: Invalid value: \"Side_car\": {DNS1123_LABEL}"),
            ]
        );
        let job = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}], "restartPolicy": "Always"}}}});
        assert_eq!(
            check("batch", "jobs", job),
            [
                "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
            ]
        );
    }

    #[test]
    fn labels_and_annotations_follow_the_qualified_name_rules() {
        let cm = json!({"metadata": {
            "labels": {"app": "web", "example.com/tier": "gold", "bad key": "x", "ok": "bad value!", "long": "a".repeat(64)},
            "annotations": {"Example.com/Note": "fine", "a/b/c": "x"},
        }});
        assert_eq!(
            check("", "configmaps", cm),
            [
                format!("metadata.labels: Invalid value: \"bad key\": name part {QUALIFIED_NAME}"),
                format!("metadata.labels: Invalid value: {:?}: must be no more than 63 characters", "a".repeat(64)),
                format!("metadata.labels: Invalid value: \"bad value!\": {LABEL_VALUE}"),
                format!(
                    "metadata.annotations: Invalid value: \"a/b/c\": a qualified name {QUALIFIED_NAME} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
                ),
            ]
        );
        let template = json!({"spec": {"selector": {"matchLabels": {"app": "x"}},
                                        "template": {"metadata": {"labels": {"app": "x", "-bad": "y"}},
                                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            check("apps", "deployments", template),
            [format!("spec.template.metadata.labels: Invalid value: \"-bad\": name part {QUALIFIED_NAME}")]
        );
        let huge = json!({"metadata": {"annotations": {"big": "x".repeat(300 * 1024)}}});
        assert_eq!(check("", "secrets", huge), ["metadata.annotations: Too long: must have at most 262144 bytes"]);
    }

    #[test]
    fn services_ports_and_config_keys() {
        let svc = json!({"spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"port": 0, "targetPort": 70000, "nodePort": 30000},
            {"name": "http", "port": 80, "protocol": "TCP"},
        ]}});
        assert_eq!(
            check("", "services", svc),
            [
                "spec.ports[1].name: Required value",
                "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[1].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
                "spec.ports[2].name: Duplicate value: \"http\"",
                "spec.ports[2]: Duplicate value: \"80/TCP\"",
            ]
        );
        assert_eq!(check("", "services", json!({"spec": {"type": "ClusterIP"}})), ["spec.ports: Required value"]);
        assert_eq!(check("", "services", json!({"spec": {"clusterIP": "None"}})), Vec::<String>::new());
        let cm = json!({"data": {"ok.key": "v", "bad key": "v"}, "binaryData": {"ok.key": "AA=="}});
        assert_eq!(
            check("", "configmaps", cm),
            [
                &format!("data[bad key]: Invalid value: \"bad key\": {CONFIG_KEY}"),
                "data[ok.key]: Invalid value: \"ok.key\": duplicate of key present in binaryData",
            ]
        );
    }
}
