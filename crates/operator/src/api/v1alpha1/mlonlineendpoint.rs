//! `MlOnlineEndpoint`: an Azure ML managed online endpoint (a workspace's web service) with its deployments,
//! traffic split and exported keys.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AccessEntry, AccessScope, BuiltinRole, DeletionPolicy, PrincipalType, PublicNetworkAccess};
use super::mlworkspace::AccessState;
use crate::api::patterns;

/// Annotation on an `MlOnlineEndpoint`: `primary:<token>` or `secondary:<token>` (any new token) regenerates that
/// key once and updates the keys Secret. The value last honoured is kept in `status.keys.lastRegenerateRequest`.
pub const ANNOTATION_REGENERATE_KEYS: &str = "azml.dev/regenerate-keys";
/// Finalizer of online endpoints (the same name as the workspaces').
pub const ENDPOINT_FINALIZER: &str = super::FINALIZER;
/// Keys of the exported Secret.
pub const SECRET_PRIMARY_KEY: &str = "primaryKey";
/// See [`SECRET_PRIMARY_KEY`].
pub const SECRET_SECONDARY_KEY: &str = "secondaryKey";
/// See [`SECRET_PRIMARY_KEY`].
pub const SECRET_SCORING_URI: &str = "scoringUri";

/// An online endpoint or deployment name: 3-32 letters, digits or `-`, starting with a letter, not ending with `-`
/// (the Azure ML naming rules; narrower than the ARM path pattern, so no value can change an ARM path).
pub const ENDPOINT_NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$";

/// Desired state of an Azure ML managed online endpoint.
// The derive's printcolumn(...) lists repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[kube(
    group = "azml.dev",
    version = "v1alpha1",
    kind = "MlOnlineEndpoint",
    plural = "mlonlineendpoints",
    singular = "mlonlineendpoint",
    namespaced,
    status = "MlOnlineEndpointStatus",
    derive = "PartialEq",
    shortname = "mlep",
    category = "azure",
    category = "azml",
    doc = "An Azure ML managed online endpoint of an MlWorkspace: its deployments, traffic split and keys, kept in sync with Azure by azml-operator.",
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspaceRef.name"),
    printcolumn(name = "Auth", type_ = "string", json_path = ".spec.authMode", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Scoring URI", type_ = "string", json_path = ".status.scoringUri", priority = 1),
    printcolumn(name = "Binding", type_ = "string", json_path = ".status.binding", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.azureName) || self.metadata.name.matches('^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$')").message("metadata.name is not a valid online endpoint name (3-32 letters, digits or '-', starting with a letter); set spec.azureName").field_path(".spec.azureName")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.azureName) == has(oldSelf.azureName) && (!has(self.azureName) || self.azureName == oldSelf.azureName)").message("azureName is immutable").field_path(".azureName"))]
#[x_kube(validation = Rule::new("!has(self.traffic) || self.traffic.all(k, has(self.deployments) && self.deployments.exists(d, d.name == k))").message("every traffic entry must name a deployment of spec.deployments").field_path(".traffic"))]
#[x_kube(validation = Rule::new("!has(self.traffic) || self.traffic.map(k, self.traffic[k]).sum() in [0, 100]").message("traffic percentages must add up to 100 (or 0: no traffic)").field_path(".traffic"))]
#[x_kube(validation = Rule::new("!has(self.keysSecret) || self.authMode == 'Key'").message("keysSecret needs authMode Key (token auth modes have no endpoint keys)").field_path(".keysSecret"))]
#[x_kube(validation = Rule::new("!has(self.exports) || !has(self.exports.secret) || self.authMode == 'Key'").message("exports.secret needs authMode Key (token auth modes have no endpoint keys)").field_path(".exports.secret"))]
#[x_kube(validation = Rule::new("!has(self.exports) || !has(self.exports.secret) || !has(self.keysSecret) || self.exports.secret.name != self.keysSecret.name").message("exports.secret.name must differ from keysSecret.name").field_path(".exports.secret.name"))]
pub struct MlOnlineEndpointSpec {
    /// The MlWorkspace (same namespace) the endpoint belongs to. The endpoint waits until it is Ready, uses its
    /// subscription, resource group, location and SubscriptionBinding, and is deleted before it. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("workspaceRef is immutable"))]
    pub workspace_ref: WorkspaceReference,

    /// Name of the endpoint in Azure (3-32 letters, digits or '-', starting with a letter; unique in the region).
    /// Defaults to metadata.name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ENDPOINT_NAME_PATTERN))]
    pub azure_name: Option<String>,

    /// How callers authenticate: Key (default; keys can be exported to keysSecret), AMLToken or AADToken.
    /// Immutable: Azure does not switch an existing endpoint between key and token authentication.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("authMode is immutable"))]
    pub auth_mode: EndpointAuthMode,

    /// Description of the endpoint. Mutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Whether the endpoint is reachable from public networks: Enabled (default) or Disabled. Mutable.
    #[serde(default)]
    pub public_network_access: PublicNetworkAccess,

    /// The managed online deployments of the endpoint (names unique). A deployment removed from this list is
    /// deleted in Azure after its traffic has been moved away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new("self.all(d, self.filter(e, e.name == d.name).size() == 1)").message("deployment names must be unique"))]
    pub deployments: Vec<OnlineDeploymentSpec>,

    /// Traffic split: deployment name to percent (0-100). Entries must name deployments of spec.deployments and
    /// add up to 100, or to 0 for no traffic. Applied once every deployment it sends traffic to is ready.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    #[x_kube(validation = Rule::new("self.all(k, self[k] >= 0 && self[k] <= 100)").message("each traffic percentage must be between 0 and 100"))]
    pub traffic: BTreeMap<String, i64>,

    /// Secret (same namespace) the operator writes the endpoint's keys to: primaryKey, secondaryKey, scoringUri.
    /// Needs authMode Key. The operator creates the Secret (owned by this endpoint) and never overwrites a Secret
    /// it did not create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret: Option<SecretReference>,

    /// The complete desired set of role assignments at this endpoint (like MlWorkspace.access, scope Endpoint),
    /// e.g. who may invoke or manage it. Checked against the workspace's SubscriptionBinding: its allowedRoles, and
    /// allowedScopes must contain Workspace (an endpoint is part of its workspace). Assignments made by others are
    /// never removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, self.filter(b, b.principalId.lowerAscii() == a.principalId.lowerAscii() && (has(b.role) ? b.role : has(b.roleDefinitionId) ? b.roleDefinitionId.lowerAscii() : '') == (has(a.role) ? a.role : has(a.roleDefinitionId) ? a.roleDefinitionId.lowerAscii() : '')).size() == 1)").message("access entries must be unique per principalId and role"))]
    pub access: Vec<EndpointAccessEntry>,

    /// What deleting this resource does in Azure: Retain (default: leave the endpoint and its deployments) or
    /// Delete (delete them).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// What the operator writes for applications in this namespace: a ConfigMap of the endpoint's facts and, opt-in
    /// per key, a Secret of its keys (see README "Exports"). Both are owned by the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<super::exports::EndpointExports>,
}

/// Reference to an MlWorkspace in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceReference {
    /// Name of the MlWorkspace (metadata.name), in the endpoint's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::KUBE_NAME))]
    pub name: String,
}

/// Reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret, in the endpoint's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::KUBE_NAME))]
    pub name: String,
}

/// How callers of an online endpoint authenticate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EndpointAuthMode {
    /// Endpoint keys (primary and secondary).
    #[default]
    Key,
    /// Azure ML tokens.
    AMLToken,
    /// Microsoft Entra ID tokens.
    AADToken,
}

impl EndpointAuthMode {
    /// The value as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointAuthMode::Key => "Key",
            EndpointAuthMode::AMLToken => "AMLToken",
            EndpointAuthMode::AADToken => "AADToken",
        }
    }
}

/// Where an endpoint's role assignment applies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EndpointAccessScope {
    /// The online endpoint itself.
    #[default]
    Endpoint,
}

/// One role assignment an endpoint grants: a principal gets a role at the endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.role) != has(self.roleDefinitionId)").message("exactly one of role or roleDefinitionId must be set"))]
pub struct EndpointAccessEntry {
    /// Object id (GUID) of the Entra ID user, group or service principal that gets the role.
    #[schemars(regex(pattern = patterns::GUID))]
    pub principal_id: String,

    /// Kind of principal: User, Group or ServicePrincipal. Set it for principals created moments ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<PrincipalType>,

    /// Built-in role to grant: Owner, Contributor, Reader, AzureMLDataScientist or AzureMLComputeOperator.
    /// Exactly one of role and roleDefinitionId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<BuiltinRole>,

    /// GUID of any role definition (for custom roles, e.g. one allowing only score requests) instead of a
    /// built-in role name. Exactly one of role and roleDefinitionId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::GUID))]
    pub role_definition_id: Option<String>,

    /// Where the assignment applies: Endpoint (the default and only value).
    #[serde(default)]
    pub scope: EndpointAccessScope,
}

impl EndpointAccessEntry {
    /// The entry in the workspace's terms, for the shared access planning and the binding check: the scope kind
    /// "Workspace" stands for "the resource itself", here the endpoint.
    pub fn as_resource_entry(&self) -> AccessEntry {
        AccessEntry {
            principal_id: self.principal_id.clone(),
            principal_type: self.principal_type,
            role: self.role,
            role_definition_id: self.role_definition_id.clone(),
            scope: AccessScope::Workspace,
        }
    }
}

/// One role assignment at the endpoint as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAccessStatus {
    /// Object id of the principal.
    pub principal_id: String,
    /// Role definition GUID.
    pub role_definition_id: String,
    /// Full ARM scope of the assignment (the endpoint).
    pub scope: String,
    /// Name (GUID) of the role assignment.
    pub assignment_name: String,
    /// Granted (exists, created by the operator), Pending, Unmanaged (exists, created by someone else; never
    /// deleted by the operator) or Failed.
    pub state: AccessState,
    /// Why the assignment is Pending or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One managed online deployment (a model served on dedicated instances).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineDeploymentSpec {
    /// Name of the deployment (3-32 letters, digits or '-', starting with a letter), e.g. blue. Used in traffic.
    #[schemars(regex(pattern = ENDPOINT_NAME_PATTERN))]
    pub name: String,

    /// Model asset to serve, e.g. azureml:fraud-model:3 or a full asset id.
    #[schemars(length(min = 1, max = 1024))]
    pub model: String,

    /// VM size of the instances, e.g. Standard_DS3_v2.
    #[schemars(length(min = 1, max = 128), regex(pattern = "^[A-Za-z0-9_]+$"))]
    pub instance_type: String,

    /// Number of instances (default 1).
    #[serde(default = "default_instance_count")]
    #[schemars(range(min = 1, max = 1000))]
    pub instance_count: i32,

    /// Environment asset to run the model in (optional for MLflow models), e.g. azureml:sklearn-env:1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub environment: Option<String>,

    /// Description of the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

fn default_instance_count() -> i32 {
    1
}

impl MlOnlineEndpointSpec {
    /// The name of the endpoint in Azure: `azureName`, else the resource's own name.
    pub fn azure_name_or<'a>(&'a self, metadata_name: &'a str) -> &'a str {
        self.azure_name.as_deref().unwrap_or(metadata_name)
    }
}

/// Observed state of the endpoint, as the operator last saw it in Azure.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlOnlineEndpointStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// kstatus conditions (Ready, Reconciling, Stalled) and domain conditions (DeploymentsReady, KeysPublished,
    /// AccessGranted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// ARM id of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,

    /// Name of the SubscriptionBinding whose credential the operator uses for it (`kubectl get -o wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,

    /// URI callers send scoring requests to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_uri: Option<String>,

    /// URI of the endpoint's OpenAPI document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swagger_uri: Option<String>,

    /// Provisioning state of the endpoint as Azure reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,

    /// The deployments the operator manages, as Azure reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentStatus>,

    /// Traffic split as Azure reports it (deployment name to percent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traffic: BTreeMap<String, i64>,

    /// The role assignments at the endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<EndpointAccessStatus>,

    /// The ConfigMap and Secret spec.exports names, once written (names only, never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<super::exports::ExportsStatus>,

    /// Facts about the exported keys. Never key material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<EndpointKeysStatus>,

    /// When the operator last compared the endpoint with Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

/// One deployment as Azure reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Deployment name.
    pub name: String,
    /// Provisioning state (Creating, Updating, Succeeded, Failed, Deleting, ...); unset while it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Model served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Number of instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_count: Option<i64>,
}

/// Facts about the keys exported to the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointKeysStatus {
    /// The Secret the keys were written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The value of the azml.dev/regenerate-keys annotation last honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_regenerate_request: Option<String>,
    /// Which key was last regenerated (Primary or Secondary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_regenerated_key: Option<String>,
    /// When a key was last regenerated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_regenerate_time: Option<Time>,
    /// A key regeneration Azure accepted and the operator is polling (a long-running operation that can take
    /// minutes); never sent again once recorded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_regeneration: Option<PendingRegeneration>,
    /// A value of the azml.dev/regenerate-keys annotation whose regeneration is being sent and not yet confirmed.
    /// Recorded before the call, so that an operator restarted around it regenerates the key exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regenerate_in_flight: Option<String>,
}

/// A key regeneration in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRegeneration {
    /// The azml.dev/regenerate-keys value it answers.
    pub request: String,
    /// Primary or Secondary.
    pub key_type: String,
    /// Resumable poller state (opaque JSON).
    pub poller: String,
    /// When Azure accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::api::test_support::{admission_errors, example_documents};

    /// Structural and CEL errors, as the API server checks them (defaults applied first).
    fn errors(object: &Value, old: Option<&Value>) -> Vec<String> {
        admission_errors::<MlOnlineEndpoint>(object, old)
    }

    fn example() -> Value {
        example_documents("mlonlineendpoint.yaml").remove(0)
    }

    fn with_spec(mut object: Value, key: &str, value: Value) -> Value {
        object["spec"][key] = value;
        object
    }

    #[test]
    fn the_example_is_valid_and_round_trips() {
        let ex = example();
        assert_eq!(errors(&ex, None), Vec::<String>::new());
        let ep: MlOnlineEndpoint = serde_json::from_value(ex).expect("an MlOnlineEndpoint");
        assert_eq!(ep.spec.deployments.len(), 2);
        assert_eq!(ep.spec.traffic.get("blue"), Some(&90));
        let again: MlOnlineEndpoint = serde_json::from_value(serde_json::to_value(&ep).expect("JSON")).expect("reads");
        assert_eq!(ep, again);
    }

    #[test]
    fn traffic_must_add_up_to_100_or_0_and_name_deployments() {
        let joined = |v: Vec<String>| v.join("\n");
        let bad = with_spec(example(), "traffic", json!({"blue": 90, "green": 20}));
        assert!(joined(errors(&bad, None)).contains("add up to 100"));
        let none = with_spec(example(), "traffic", json!({"blue": 0, "green": 0}));
        assert_eq!(errors(&none, None), Vec::<String>::new());
        let unknown = with_spec(example(), "traffic", json!({"blue": 90, "red": 10}));
        assert!(joined(errors(&unknown, None)).contains("must name a deployment"));
        let negative = with_spec(example(), "traffic", json!({"blue": 110, "green": -10}));
        assert!(joined(errors(&negative, None)).contains("between 0 and 100"));
    }

    #[test]
    fn names_auth_mode_and_immutable_fields() {
        let joined = |v: Vec<String>| v.join("\n");
        let dup = with_spec(
            example(),
            "deployments",
            json!([
                {"name": "blue", "model": "m", "instanceType": "Standard_DS3_v2"},
                {"name": "blue", "model": "m", "instanceType": "Standard_DS3_v2"},
            ]),
        );
        let dup = with_spec(dup, "traffic", json!({"blue": 100}));
        assert!(joined(errors(&dup, None)).contains("deployment names must be unique"));
        let token = with_spec(example(), "authMode", json!("AMLToken"));
        assert!(joined(errors(&token, None)).contains("keysSecret needs authMode Key"));
        let old = example();
        let renamed = with_spec(example(), "azureName", json!("other-name"));
        assert!(joined(errors(&renamed, Some(&old))).contains("azureName is immutable"));
        let moved = with_spec(example(), "workspaceRef", json!({"name": "other"}));
        assert!(joined(errors(&moved, Some(&old))).contains("workspaceRef is immutable"));
        let bad_name = with_spec(example(), "azureName", json!("9starts-with-digit"));
        assert!(!errors(&bad_name, None).is_empty());
    }
}
