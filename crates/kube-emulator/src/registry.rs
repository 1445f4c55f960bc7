//! The resource types the emulator serves: built-in kinds plus kinds defined by CustomResourceDefinitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::error::{ApiError, ApiResult, Cause};

/// A printer column of a CRD version (`additionalPrinterColumns`).
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: String,
    /// Optional format hint.
    pub format: String,
    /// Column description.
    pub description: String,
    /// 0 shows by default; higher shows with `-o wide`.
    pub priority: i64,
    /// Simple JSONPath into the object.
    pub json_path: String,
}

/// Per-version facts of a resource type.
#[derive(Debug, Clone, Default)]
pub struct VersionInfo {
    /// The structural `openAPIV3Schema` of a CRD version.
    pub schema: Option<Arc<Value>>,
    /// Compiled structural validator for `schema` (metadata relaxed, OpenAPI quirks translated).
    pub validator: Option<Arc<jsonschema::Validator>>,
    /// The `x-kubernetes-validations` rules of `schema`, compiled once (as the API server compiles them when the
    /// CRD is written, not on every request).
    pub cel: Option<Arc<kube_cel::CompiledSchema>>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<PrinterColumn>,
}

/// One resource type (group + plural) and how it is served.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<String>,
    /// Plural resource name (URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (`kubectl get all`-style groupings).
    pub categories: Vec<String>,
    /// Whether `/status` is a separate subresource.
    pub has_status: bool,
    /// Defined by a CRD (custom resource semantics: generation, schema validation, JSON patches only).
    pub custom: bool,
    /// Per-version schema and columns.
    pub version_info: BTreeMap<String, VersionInfo>,
}

impl ResourceType {
    /// Key under which objects of this type are stored.
    pub fn key(&self) -> ResKey {
        ResKey { group: self.group.clone(), plural: self.plural.clone() }
    }

    /// `group/version` or `version` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{version}", self.group) }
    }

    /// The preferred (storage) version.
    pub fn preferred_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    fn builtin(group: &str, plural: &str, singular: &str, kind: &str, namespaced: bool, short: &[&str]) -> Self {
        Self {
            group: group.into(),
            versions: vec!["v1".into()],
            plural: plural.into(),
            singular: singular.into(),
            kind: kind.into(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            has_status: false,
            custom: false,
            version_info: BTreeMap::from([("v1".to_string(), VersionInfo::default())]),
        }
    }
}

/// Identity of a stored resource type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResKey {
    /// API group.
    pub group: String,
    /// Plural name.
    pub plural: String,
}

/// All served resource types.
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<ResKey, Arc<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut namespaces = ResourceType::builtin("", "namespaces", "namespace", "Namespace", false, &["ns"]);
        namespaces.has_status = true;
        let mut crds = ResourceType::builtin(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
        );
        crds.has_status = true;
        crds.categories = vec!["api-extensions".into()];
        let mut deployments =
            ResourceType::builtin("apps", "deployments", "deployment", "Deployment", true, &["deploy"]);
        deployments.has_status = true;
        // Workload kinds: stored and validated as a real API server stores them; no controller, scheduler or
        // kubelet acts on them (a Pod stays Pending). `status` is a subresource for each, and `kubectl get all`
        // lists those in the `all` category.
        let with_status = |mut t: ResourceType, all: bool| {
            t.has_status = true;
            if all {
                t.categories = vec!["all".into()];
            }
            t
        };
        deployments.categories = vec!["all".into()];
        let mut hpa = ResourceType::builtin(
            "autoscaling",
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            "HorizontalPodAutoscaler",
            true,
            &["hpa"],
        );
        hpa.versions = vec!["v2".into()];
        hpa.version_info = BTreeMap::from([("v2".to_string(), VersionInfo::default())]);
        let workloads = [
            with_status(ResourceType::builtin("", "pods", "pod", "Pod", true, &["po"]), true),
            with_status(ResourceType::builtin("", "services", "service", "Service", true, &["svc"]), true),
            with_status(
                ResourceType::builtin(
                    "",
                    "persistentvolumeclaims",
                    "persistentvolumeclaim",
                    "PersistentVolumeClaim",
                    true,
                    &["pvc"],
                ),
                false,
            ),
            ResourceType::builtin("", "endpoints", "endpoints", "Endpoints", true, &["ep"]),
            with_status(
                ResourceType::builtin(
                    "",
                    "replicationcontrollers",
                    "replicationcontroller",
                    "ReplicationController",
                    true,
                    &["rc"],
                ),
                true,
            ),
            with_status(
                ResourceType::builtin("", "persistentvolumes", "persistentvolume", "PersistentVolume", false, &["pv"]),
                false,
            ),
            ResourceType::builtin("", "podtemplates", "podtemplate", "PodTemplate", true, &[]),
            with_status(ResourceType::builtin("apps", "replicasets", "replicaset", "ReplicaSet", true, &["rs"]), true),
            with_status(
                ResourceType::builtin("apps", "statefulsets", "statefulset", "StatefulSet", true, &["sts"]),
                true,
            ),
            with_status(ResourceType::builtin("apps", "daemonsets", "daemonset", "DaemonSet", true, &["ds"]), true),
            ResourceType::builtin("apps", "controllerrevisions", "controllerrevision", "ControllerRevision", true, &[]),
            with_status(ResourceType::builtin("batch", "jobs", "job", "Job", true, &[]), true),
            with_status(ResourceType::builtin("batch", "cronjobs", "cronjob", "CronJob", true, &["cj"]), true),
            with_status(
                ResourceType::builtin(
                    "policy",
                    "poddisruptionbudgets",
                    "poddisruptionbudget",
                    "PodDisruptionBudget",
                    true,
                    &["pdb"],
                ),
                false,
            ),
            with_status(
                ResourceType::builtin("networking.k8s.io", "ingresses", "ingress", "Ingress", true, &["ing"]),
                false,
            ),
            with_status(hpa, true),
        ];
        let builtins = [
            namespaces,
            ResourceType::builtin("", "secrets", "secret", "Secret", true, &[]),
            ResourceType::builtin("", "configmaps", "configmap", "ConfigMap", true, &["cm"]),
            ResourceType::builtin("", "events", "event", "Event", true, &["ev"]),
            ResourceType::builtin("", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"]),
            ResourceType::builtin("events.k8s.io", "events", "event", "Event", true, &["ev"]),
            ResourceType::builtin("coordination.k8s.io", "leases", "lease", "Lease", true, &[]),
            // Served so the install manifests in deploy/ can be applied (stored as is: no controllers run them).
            deployments,
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "clusterroles",
                "clusterrole",
                "ClusterRole",
                false,
                &[],
            ),
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                "clusterrolebinding",
                "ClusterRoleBinding",
                false,
                &[],
            ),
            ResourceType::builtin("rbac.authorization.k8s.io", "roles", "role", "Role", true, &[]),
            ResourceType::builtin("rbac.authorization.k8s.io", "rolebindings", "rolebinding", "RoleBinding", true, &[]),
            crds,
        ];
        let types = builtins.into_iter().chain(workloads).map(|t| (t.key(), Arc::new(t))).collect();
        Self { types }
    }
}

impl Registry {
    /// Looks up a type served at `group/version` with this plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let key = ResKey { group: group.to_string(), plural: plural.to_string() };
        self.types.get(&key).filter(|t| t.versions.iter().any(|v| v == version)).cloned()
    }

    /// Looks up a type by storage key.
    pub fn get(&self, key: &ResKey) -> Option<Arc<ResourceType>> {
        self.types.get(key).cloned()
    }

    /// All types, ordered by group then plural.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Group → served versions (preferred first), core group excluded.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values().filter(|t| !t.group.is_empty()) {
            let entry = groups.entry(t.group.clone()).or_default();
            for v in &t.versions {
                if !entry.contains(v) {
                    entry.push(v.clone());
                }
            }
        }
        groups
    }

    /// Whether the group/version is served at all.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.types.values().any(|t| t.group == group && t.versions.iter().any(|v| v == version))
    }

    /// Registers (or replaces) the type a CRD defines.
    pub fn register_crd(&mut self, crd: &Value) -> ApiResult<Arc<ResourceType>> {
        let rt = Arc::new(resource_type_from_crd(crd)?);
        self.types.insert(rt.key(), rt.clone());
        Ok(rt)
    }

    /// Serves (or replaces) a type already built from a CRD with [`resource_type_from_crd`].
    pub fn insert(&mut self, rt: Arc<ResourceType>) {
        self.types.insert(rt.key(), rt);
    }

    /// Removes the type a CRD defined; returns its key.
    pub fn unregister_crd(&mut self, crd: &Value) -> Option<ResKey> {
        let group = crd.pointer("/spec/group")?.as_str()?;
        let plural = crd.pointer("/spec/names/plural")?.as_str()?;
        let key = ResKey { group: group.into(), plural: plural.into() };
        self.types.get(&key).filter(|t| t.custom)?;
        self.types.remove(&key);
        Some(key)
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn strings_at(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default()
}

/// Validates a CRD enough to serve it and builds its [`ResourceType`].
pub fn resource_type_from_crd(crd: &Value) -> ApiResult<ResourceType> {
    let name = str_at(crd, "/metadata/name");
    let group = str_at(crd, "/spec/group");
    let plural = str_at(crd, "/spec/names/plural");
    let kind = str_at(crd, "/spec/names/kind");
    let scope = str_at(crd, "/spec/scope");
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push(Cause::new("FieldValueRequired", "spec.group", "Required value"));
    }
    if plural.is_empty() {
        causes.push(Cause::new("FieldValueRequired", "spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        causes.push(Cause::new("FieldValueRequired", "spec.names.kind", "Required value"));
    }
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "spec.scope",
            format!("Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""),
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let empty = Vec::new();
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).unwrap_or(&empty);
    if versions.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    let mut served = Vec::new();
    let mut version_info = BTreeMap::new();
    let mut has_status = false;
    let mut storage_count = 0;
    for (i, v) in versions.iter().enumerate() {
        let vname = str_at(v, "/name").to_string();
        if vname.is_empty() {
            causes.push(Cause::new("FieldValueRequired", format!("spec.versions[{i}].name"), "Required value"));
            continue;
        }
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage_count += 1;
            served.insert(0, vname.clone());
        } else if v.get("served").and_then(Value::as_bool) != Some(false) {
            served.push(vname.clone());
        }
        if v.pointer("/subresources/status").is_some() {
            has_status = true;
        }
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        let validator = match &schema {
            Some(s) => Some(Arc::new(super::structural::compile_structural(s).map_err(|msg| {
                ApiError::invalid(
                    "CustomResourceDefinition",
                    "apiextensions.k8s.io",
                    name,
                    vec![Cause::new(
                        "FieldValueInvalid",
                        format!("spec.versions[{i}].schema.openAPIV3Schema"),
                        format!("Invalid value: \"object\": {msg}"),
                    )],
                )
            })?)),
            None => None,
        };
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: str_at(c, "/name").into(),
                        type_: str_at(c, "/type").into(),
                        format: str_at(c, "/format").into(),
                        description: str_at(c, "/description").into(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: str_at(c, "/jsonPath").into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cel = schema.as_ref().map(|s| Arc::new(kube_cel::compile_schema(s)));
        version_info.insert(vname, VersionInfo { schema: schema.map(Arc::new), validator, cel, columns });
    }
    if !versions.is_empty() && storage_count != 1 {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            format!("Invalid value: {storage_count}: must have exactly one version marked as storage version"),
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes));
    }
    let singular = match str_at(crd, "/spec/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    Ok(ResourceType {
        group: group.into(),
        versions: served,
        plural: plural.into(),
        singular,
        kind: kind.into(),
        namespaced: scope == "Namespaced",
        short_names: strings_at(crd, "/spec/names/shortNames"),
        categories: strings_at(crd, "/spec/names/categories"),
        has_status,
        custom: true,
        version_info,
    })
}

/// The status a freshly accepted CRD reports (Established, NamesAccepted).
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or_else(|| json!({}));
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    })
}
