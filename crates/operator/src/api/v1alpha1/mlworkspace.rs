//! `MlWorkspace`: an Azure Machine Learning workspace declared as a Kubernetes resource.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AccessEntry, AccessScope, DependentResource, MovePolicy, PublicNetworkAccess};
use crate::api::patterns;

/// Annotation: any new value requests one storage-key resync (the portal's "Resync keys" button).
pub const ANNOTATION_RESYNC_KEYS: &str = "azml.dev/resync-keys";
/// Annotation: `"true"` makes the controller observe and report only, never change Azure.
pub const ANNOTATION_PAUSED: &str = "azml.dev/paused";
/// Annotation: `"true"` lets the controller take over an existing workspace that it did not create.
pub const ANNOTATION_ADOPT: &str = "azml.dev/adopt";
/// Annotation: `"true"` recovers the soft-deleted workspace that holds this workspace's name (Azure keeps a deleted
/// workspace for up to 14 days), instead of creating a new one.
pub const ANNOTATION_RECOVER_SOFT_DELETED: &str = "azml.dev/recover-soft-deleted";
/// Annotation: `"true"` purges the soft-deleted workspace that holds this workspace's name and creates a new one;
/// only a workspace whose owner tag names this resource (or one adopted with `azml.dev/adopt`) is purged.
pub const ANNOTATION_PURGE_SOFT_DELETED: &str = "azml.dev/purge-soft-deleted";
/// Finalizer that lets the controller clean up Azure before the resource disappears.
pub const FINALIZER: &str = "azml.dev/cleanup";
/// Tag the operator puts on what it creates in Azure: `<namespace>/<name>/<uid>`.
pub const OWNER_TAG: &str = "azml.dev-owner";

/// The value of the owner tag in `tags`, whatever the spelling of its name: Azure treats tag names
/// case-insensitively, so `AZML.DEV-OWNER` set by hand in the portal is the same tag.
pub fn owner_tag_value(tags: &BTreeMap<String, String>) -> Option<&str> {
    tags.get(OWNER_TAG)
        .or_else(|| tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(OWNER_TAG)).map(|(_, v)| v))
        .map(String::as_str)
}

/// Desired state of an Azure Machine Learning workspace.
// The derive's printcolumn(...) lists repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[kube(
    group = "azml.dev",
    version = "v1alpha1",
    kind = "MlWorkspace",
    plural = "mlworkspaces",
    singular = "mlworkspace",
    namespaced,
    status = "MlWorkspaceStatus",
    derive = "PartialEq",
    shortname = "mlws",
    category = "azure",
    category = "azml",
    doc = "An Azure Machine Learning workspace, its dependent resources, storage keys and role assignments, kept in sync with Azure by azml-operator.",
    printcolumn(name = "Subscription", type_ = "string", json_path = ".spec.subscriptionId", priority = 1),
    printcolumn(name = "Resource Group", type_ = "string", json_path = ".spec.resourceGroup"),
    printcolumn(name = "Location", type_ = "string", json_path = ".spec.location"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Keys", type_ = "string", json_path = ".status.conditions[?(@.type==\"StorageKeysInSync\")].status", description = "Whether the workspace holds a current storage account key"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Binding", type_ = "string", json_path = ".status.binding", priority = 1, description = "The SubscriptionBinding whose credential the workspace uses (the lowest name among those that allow it)"),
    printcolumn(name = "Move", type_ = "string", json_path = ".status.move.phase", description = "Phase of the move to another subscription or resource group in progress (or the last one)"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.azureName) || self.metadata.name.matches('^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$')").message("metadata.name is not a valid Azure ML workspace name (3-33 letters, digits, '-' or '_'); set spec.azureName").field_path(".spec.azureName")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.azureName) == has(oldSelf.azureName) && (!has(self.azureName) || self.azureName == oldSelf.azureName)").message("azureName is immutable").field_path(".azureName"))]
#[x_kube(validation = Rule::new("self.movePolicy != 'Refuse' || (self.subscriptionId == oldSelf.subscriptionId && self.resourceGroup == oldSelf.resourceGroup)").message("subscriptionId and resourceGroup cannot change while movePolicy is Refuse").field_path(".movePolicy"))]
pub struct MlWorkspaceSpec {
    /// Azure subscription (GUID) the workspace lives in. A SubscriptionBinding must allow this namespace to use it.
    /// Changing it moves the workspace to the other subscription (see movePolicy).
    #[schemars(regex(pattern = patterns::GUID))]
    pub subscription_id: String,

    /// Resource group the workspace lives in (1-90 letters, digits, '_', '(', ')', '-', '.'; not ending in '.').
    /// Changing it moves the workspace to the other resource group (see movePolicy).
    #[schemars(regex(pattern = patterns::RESOURCE_GROUP))]
    pub resource_group: String,

    /// Azure region of the workspace, e.g. westeurope. Immutable: Azure cannot move a workspace across regions.
    #[schemars(regex(pattern = "^[a-z][a-z0-9]{1,39}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("location is immutable"))]
    pub location: String,

    /// Name of the workspace in Azure (3-33 letters, digits, '-' or '_'). Defaults to metadata.name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::WORKSPACE_NAME))]
    pub azure_name: Option<String>,

    /// Create the resource group (in `location`) when it does not exist. When false, a missing resource group
    /// stalls the workspace with reason ResourceGroupMissing.
    #[serde(default = "default_true")]
    pub create_resource_group: bool,

    /// Display name of the workspace in the Azure portal and ML studio. Mutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub friendly_name: Option<String>,

    /// Description of the workspace. Mutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub description: Option<String>,

    /// Azure tags of the workspace. Mutable. The operator adds its own ownership tag (azml.dev-owner), which
    /// cannot be set here.
    /// Azure's limits apply: at most 50 tags per resource (49 here, the owner tag is the 50th), names of at most 512
    /// characters without any of < > % & \ ? /, values of at most 256 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 49, "additionalProperties" = {"type": "string", "maxLength": 256}))]
    #[x_kube(validation = Rule::new("!self.exists(k, k.lowerAscii() == 'azml.dev-owner')").message("the azml.dev-owner tag is reserved for the operator (tag names are case-insensitive)"))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) >= 1 && size(k) <= 512)").message("tag names must be 1 to 512 characters long (Azure's limit)"))]
    #[x_kube(validation = Rule::new("self.all(k, !k.matches('[<>%&\\\\\\\\?/]'))").message("tag names must not contain any of < > % & \\ ? / (Azure refuses them)"))]
    pub tags: BTreeMap<String, String>,

    /// Whether the workspace is reachable from public networks: Enabled (default) or Disabled. Mutable.
    #[serde(default)]
    pub public_network_access: PublicNetworkAccess,

    /// Existing storage account the workspace keeps its data in: by `name` (same subscription and resource group;
    /// moves with the workspace) or `id`. Required; immutable in Azure once the workspace exists.
    pub storage_account: DependentResource,

    /// Existing key vault of the workspace: by `name` or `id`. Required; immutable in Azure once the workspace exists.
    pub key_vault: DependentResource,

    /// Existing Application Insights component for workspace telemetry: by `name` or `id`. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_insights: Option<DependentResource>,

    /// Existing container registry for environment images: by `name` or `id`. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_registry: Option<DependentResource>,

    /// The complete desired set of role assignments this workspace grants. Entries are added when declared and,
    /// when the operator created them, removed when no longer declared. Assignments made by others are never removed.
    /// Deploying or managing web services needs Contributor or Owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, self.filter(b, b.principalId.lowerAscii() == a.principalId.lowerAscii() && b.scope == a.scope && (has(b.role) ? b.role : has(b.roleDefinitionId) ? b.roleDefinitionId.lowerAscii() : '') == (has(a.role) ? a.role : has(a.roleDefinitionId) ? a.roleDefinitionId.lowerAscii() : '')).size() == 1)").message("access entries must be unique per principalId, role and scope"))]
    pub access: Vec<AccessEntry>,

    /// Storage-key handling: resync on drift, and optional scheduled rotation.
    #[serde(default)]
    pub storage_keys: StorageKeysSpec,

    /// What a changed subscriptionId or resourceGroup does: Move (default: validate, then move the workspace and
    /// its dependent resources named by `name`) or Refuse (such a change is rejected).
    #[serde(default)]
    pub move_policy: MovePolicy,

    /// What deleting this resource does in Azure: Retain (default: leave everything as is), Delete (delete the
    /// workspace and the role assignments the operator created; Azure soft-deletes the workspace: it can be
    /// recovered, and its name stays taken, for up to 14 days) or Purge (the same, but the workspace is deleted for
    /// good at once, freeing its name: Azure's forceToPurge).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self in ['Retain', 'Delete', 'Purge']").message("deletionPolicy must be Retain (leave Azure as is), Delete (soft-delete: recoverable for up to 14 days, the name stays taken) or Purge (delete for good, freeing the name)"))]
    pub deletion_policy: WorkspaceDeletionPolicy,
    /// What the operator writes for applications in this namespace: a ConfigMap of workspace facts and, opt-in per
    /// item, a Secret of listKeys values (see README "Exports"). Both are owned by the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<super::exports::WorkspaceExports>,
}

/// What deleting an MlWorkspace does in Azure.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WorkspaceDeletionPolicy {
    /// Leave the workspace in Azure.
    #[default]
    Retain,
    /// Delete the workspace; Azure soft-deletes it (recoverable, name taken, for its retention period).
    Delete,
    /// Delete the workspace for good (`forceToPurge=true`): nothing to recover, the name is free at once.
    Purge,
}

fn default_true() -> bool {
    true
}

impl MlWorkspaceSpec {
    /// The name of the workspace in Azure: `azureName`, else the resource's own name.
    pub fn azure_name_or<'a>(&'a self, metadata_name: &'a str) -> &'a str {
        self.azure_name.as_deref().unwrap_or(metadata_name)
    }
}

/// How the operator treats the storage account keys the workspace caches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageKeysSpec {
    /// Resync the workspace when the storage account's keys change (default true). When false, drift is only
    /// reported (condition StorageKeysInSync False, reason KeysDrifted).
    #[serde(default = "default_true")]
    pub auto_resync: bool,

    /// Rotate the storage account keys on this schedule (e.g. 90d, 12h, 30m), then resync the workspace.
    /// Unset: never rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::ROTATION_PERIOD))]
    pub rotate_every: Option<String>,
}

impl Default for StorageKeysSpec {
    fn default() -> Self {
        StorageKeysSpec { auto_resync: true, rotate_every: None }
    }
}

/// Observed state of the workspace, as the operator last saw it in Azure.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlWorkspaceStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// kstatus conditions (Ready, Reconciling, Stalled) and domain conditions (WorkspaceProvisioned,
    /// StorageKeysInSync, AccessGranted, Moved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// ARM resource id of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,

    /// The SubscriptionBinding the operator uses for this workspace, credential included: of the bindings that allow
    /// it, the one with the lowest name. Condition BindingSelected says when others allow it with other credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,

    /// The workspace's immutable GUID in Azure ML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,

    /// Azure's provisioning state: Creating, Updating, Succeeded, Failed, Deleting, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,

    /// URL of the workspace's discovery endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,

    /// MLflow tracking URI of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ml_flow_tracking_uri: Option<String>,

    /// Resolved ARM id of the storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account_id: Option<String>,

    /// Resolved ARM id of the key vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_id: Option<String>,

    /// Resolved ARM id of the Application Insights component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_insights_id: Option<String>,

    /// Resolved ARM id of the container registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_registry_id: Option<String>,

    /// Facts about the storage keys (never key material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_keys: Option<StorageKeysStatus>,

    /// State of every role assignment the workspace declares or the operator still owns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<AccessStatus>,

    /// ARM id of the dependent resource whose absence stalls the workspace (reason DependencyMissing). Until the spec
    /// changes, the operator only checks whether this resource exists (one GET per stalled requeue) and sends the
    /// create request again once it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_dependency: Option<String>,

    /// A long-running Azure operation the operator started and is waiting for; kept so that a restarted operator
    /// resumes polling it instead of starting it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_operation: Option<PendingOperation>,

    /// The subscription and resource group the workspace was last seen in (differs from the spec while a move is
    /// pending or running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<WorkspaceLocation>,

    /// The move to another subscription or resource group in progress, or the last one.
    #[serde(default, rename = "move", skip_serializing_if = "Option::is_none")]
    pub move_status: Option<MoveStatus>,

    /// The ConfigMap and Secret spec.exports names, once written (names only, never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<super::exports::ExportsStatus>,

    /// When the operator last compared the workspace with Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

/// Phase of a move.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MovePhase {
    /// Azure is checking whether the resources can move (validateMoveResources).
    Validating,
    /// Azure is moving the resources (moveResources); the workspace is unavailable.
    Moving,
    /// The resources are at the destination.
    Succeeded,
    /// Validation or the move failed; nothing moved. The message says why.
    Failed,
}

/// A move of the workspace (and its dependent resources named by `name`) to another subscription or resource group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveStatus {
    /// Validating, Moving, Succeeded or Failed.
    pub phase: MovePhase,
    /// Where the resources were.
    pub from: WorkspaceLocation,
    /// Where they go: fixed when the move starts, whatever the spec says later.
    pub to: WorkspaceLocation,
    /// ARM ids (at the source) of the resources moved together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Why the move failed, with the ARM code and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where the workspace lives in Azure.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceLocation {
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
}

/// A long-running operation in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingOperation {
    /// What the operation does: CreateWorkspace, UpdateWorkspace, DeleteWorkspace, ResyncKeys, Move, ...
    pub kind: String,
    /// The serialized poller (status URL and final-state rule); contains no credentials.
    pub poller: String,
    /// When the operation was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// The metadata.generation that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// Why the workspace's storage keys were last resynced.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ResyncReason {
    Drift,
    Requested,
    Rotation,
    Created,
}

/// Facts about the storage keys: which key the workspace uses and when the keys were made. Never key material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageKeysStatus {
    /// Which storage account key (key1 or key2) the workspace currently holds; unset when it holds neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_uses_key: Option<String>,
    /// Creation time of each storage account key, as Azure reports it (keyCreationTime).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_creation_time: BTreeMap<String, String>,
    /// When the operator last resynced the workspace's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resync_time: Option<Time>,
    /// Why: Drift, Requested, Rotation or Created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resync_reason: Option<ResyncReason>,
    /// The value of the azml.dev/resync-keys annotation last honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resync_request: Option<String>,
    /// When the operator last rotated the storage account keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
}

/// State of one role assignment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessState {
    Granted,
    Pending,
    Unmanaged,
    Failed,
}

/// One role assignment as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessStatus {
    /// Object id of the principal.
    pub principal_id: String,
    /// Role definition GUID.
    pub role_definition_id: String,
    /// The scope kind as declared (Workspace, ResourceGroup, Subscription).
    pub scope_kind: AccessScope,
    /// Full ARM scope of the assignment.
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
