//! `MlCompute`: a compute cluster (AmlCompute) or a compute instance of an Azure ML workspace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DeletionPolicy;
use super::mlonlineendpoint::WorkspaceReference;
use crate::api::patterns;

/// Annotation on an `MlCompute` with a compute instance: `start:<token>`, `stop:<token>` or `restart:<token>` (any
/// new token; a bare `start`, `stop` or `restart` works once) starts, stops or restarts the instance once, as the
/// portal's buttons do. The value last honoured is kept in `status.lastActionRequest`.
pub const ANNOTATION_COMPUTE_ACTION: &str = "azml.dev/compute-action";

/// A compute cluster name: 2-16 letters, digits or `-`, starting with a letter, not ending with `-` (Azure ML's
/// rule for AmlCompute).
pub const CLUSTER_NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9-]{0,14}[a-zA-Z0-9]$";
/// A compute instance name: 3-24 letters, digits or `-`, starting with a letter, not ending with `-` (Azure ML's
/// rule for compute instances, whose names are unique per region).
pub const INSTANCE_NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$";
/// A compute name as far as ARM paths go: the union of both rules (the per-type rule is a CEL check).
pub const COMPUTE_NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9-]{0,22}[a-zA-Z0-9]$";
/// A duration as Kubernetes writes them: hours, minutes and seconds, e.g. `30m`, `1h30m`, `120s`.
pub const DURATION_PATTERN: &str = "^([0-9]{1,4}h)?([0-9]{1,5}m)?([0-9]{1,6}s)?$";
/// A subnet's ARM id: `/subscriptions/{guid}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}`.
pub const SUBNET_ID_PATTERN: &str = "^/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/[rR]esource[gG]roups/[A-Za-z0-9_().-]{0,89}[A-Za-z0-9_()-]/providers/[mM]icrosoft\\.[nN]etwork/virtualNetworks/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/subnets/[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$";
/// A user-assigned identity's ARM id.
pub const USER_IDENTITY_ID_PATTERN: &str = "^/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/[rR]esource[gG]roups/[A-Za-z0-9_().-]{0,89}[A-Za-z0-9_()-]/providers/[mM]icrosoft\\.[mM]anaged[iI]dentity/userAssignedIdentities/[A-Za-z0-9][A-Za-z0-9_-]{2,127}$";
/// An Azure VM size, e.g. `Standard_DS3_v2`.
pub const VM_SIZE_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_]{1,63}$";

/// Desired state of an Azure ML compute: exactly one of a compute cluster (`amlCompute`) or a compute instance
/// (`computeInstance`).
// The derive's printcolumn(...) lists repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[kube(
    group = "azml.dev",
    version = "v1alpha1",
    kind = "MlCompute",
    plural = "mlcomputes",
    singular = "mlcompute",
    namespaced,
    status = "MlComputeStatus",
    derive = "PartialEq",
    shortname = "mlc",
    category = "azure",
    category = "azml",
    doc = "A compute cluster or compute instance of an MlWorkspace, kept in sync with Azure by azml-operator within the limits its SubscriptionBinding sets (VM sizes, node caps, quota).",
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspaceRef.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.computeType"),
    printcolumn(name = "VM Size", type_ = "string", json_path = ".status.vmSize", priority = 1),
    printcolumn(name = "Binding", type_ = "string", json_path = ".status.binding", priority = 1),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.currentNodeCount"),
    printcolumn(name = "Target", type_ = "integer", json_path = ".status.targetNodeCount", priority = 1),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.azureName) || (has(self.spec.amlCompute) ? self.metadata.name.matches('^[a-zA-Z][a-zA-Z0-9-]{0,14}[a-zA-Z0-9]$') : self.metadata.name.matches('^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$'))").message("metadata.name is not a valid compute name (clusters: 2-16, instances: 3-24 letters, digits or '-', starting with a letter); set spec.azureName").field_path(".spec.azureName")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.amlCompute) != has(self.computeInstance)").message("exactly one of amlCompute or computeInstance must be set"))]
#[x_kube(validation = Rule::new("has(self.amlCompute) == has(oldSelf.amlCompute)").message("the compute type is immutable: Azure cannot turn a cluster into an instance or back; create a new MlCompute"))]
#[x_kube(validation = Rule::new("has(self.azureName) == has(oldSelf.azureName) && (!has(self.azureName) || self.azureName == oldSelf.azureName)").message("azureName is immutable").field_path(".azureName"))]
#[x_kube(validation = Rule::new("!has(self.azureName) || (has(self.amlCompute) ? self.azureName.matches('^[a-zA-Z][a-zA-Z0-9-]{0,14}[a-zA-Z0-9]$') : self.azureName.matches('^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$'))").message("azureName: clusters take 2-16, instances 3-24 letters, digits or '-', starting with a letter").field_path(".azureName"))]
pub struct MlComputeSpec {
    /// The MlWorkspace (same namespace) the compute belongs to. The compute waits until it is Ready, uses its
    /// subscription, resource group, location, SubscriptionBinding and credential, and is deleted before it.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("workspaceRef is immutable"))]
    pub workspace_ref: WorkspaceReference,

    /// Name of the compute in Azure (clusters: 2-16, instances: 3-24 letters, digits or '-', starting with a
    /// letter; instance names are unique in the region). Defaults to metadata.name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = COMPUTE_NAME_PATTERN))]
    pub azure_name: Option<String>,

    /// A compute cluster (AmlCompute): nodes that scale between minNodes and maxNodes with the jobs submitted.
    /// Exactly one of amlCompute and computeInstance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aml_compute: Option<AmlComputeSpec>,

    /// A compute instance: one VM personal to one user (a data scientist's workstation). Exactly one of
    /// amlCompute and computeInstance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_instance: Option<ComputeInstanceSpec>,

    /// What deleting this resource does in Azure: Retain (default: leave the compute) or Delete (delete it,
    /// releasing its nodes).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A compute cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.subnet) == has(oldSelf.subnet) && (!has(self.subnet) || self.subnet == oldSelf.subnet)").message("subnet is immutable: Azure cannot move a cluster to another network; create a new MlCompute").field_path(".subnet"))]
pub struct AmlComputeSpec {
    /// VM size of the nodes, e.g. Standard_DS3_v2 or Standard_NC6s_v3. Must match the binding's allowedVmSizes.
    /// Immutable: Azure cannot change the VM size of an existing cluster.
    #[schemars(regex(pattern = VM_SIZE_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("vmSize is immutable: Azure cannot change the VM size of a cluster; create a new MlCompute"))]
    pub vm_size: String,

    /// Dedicated (default) or LowPriority (cheaper, may be preempted; counted against the low-priority quota).
    /// Azure sets it at creation only: a change stalls with reason RecreateRequired.
    #[serde(default)]
    pub vm_priority: VmPriority,

    /// Node counts and scale-down delay. Updated in place.
    pub scale: ScaleSpec,

    /// Whether the nodes' SSH port is open to the internet: Disabled (default) or Enabled. Azure sets it at
    /// creation only: a change stalls with reason RecreateRequired.
    #[serde(default)]
    pub remote_login: RemoteLogin,

    /// Subnet (ARM id) the nodes join. Must be in the workspace's subscription and in a resource group the
    /// binding allows. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<SubnetReference>,

    /// The managed identity the nodes run jobs as (for data access): system-assigned or user-assigned
    /// identities. Azure sets it at creation only: a change stalls with reason RecreateRequired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ComputeIdentity>,
}

/// How a cluster scales.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minNodes <= self.maxNodes").message("scale.minNodes must not exceed scale.maxNodes"))]
pub struct ScaleSpec {
    /// Nodes kept running even without jobs (default 0: the cluster scales to zero and costs nothing idle).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub min_nodes: i32,

    /// Most nodes the cluster scales out to. Capped by the binding's maxNodesPerCluster; must fit the
    /// subscription's vCPU quota for the VM family.
    #[schemars(range(min = 1, max = 1000))]
    pub max_nodes: i32,

    /// How long a node stays idle before it is released, e.g. 2m or 30m (default: Azure's, 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 2, max = 16))]
    pub idle_before_scale_down: Option<String>,
}

/// Dedicated or low-priority VMs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VmPriority {
    /// Dedicated VMs.
    #[default]
    Dedicated,
    /// Low-priority (spot) VMs: cheaper, may be preempted.
    LowPriority,
}

impl VmPriority {
    /// The value as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            VmPriority::Dedicated => "Dedicated",
            VmPriority::LowPriority => "LowPriority",
        }
    }
}

/// Whether SSH to the nodes is reachable from the internet.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RemoteLogin {
    /// Closed (Azure: remoteLoginPortPublicAccess Disabled).
    #[default]
    Disabled,
    /// Open (Azure: remoteLoginPortPublicAccess Enabled).
    Enabled,
}

impl RemoteLogin {
    /// The value as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteLogin::Disabled => "Disabled",
            RemoteLogin::Enabled => "Enabled",
        }
    }
}

/// A subnet, by ARM id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetReference {
    /// ARM id of the subnet: /subscriptions/{guid}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{name}.
    #[schemars(regex(pattern = SUBNET_ID_PATTERN))]
    pub id: String,
}

/// The identity of a cluster's nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type == 'SystemAssigned' ? (!has(self.userAssignedIdentities) || size(self.userAssignedIdentities) == 0) : (has(self.userAssignedIdentities) && size(self.userAssignedIdentities) > 0)").message("type SystemAssigned takes no userAssignedIdentities; type UserAssigned needs at least one"))]
pub struct ComputeIdentity {
    /// SystemAssigned (Azure creates an identity for the cluster) or UserAssigned (the identities listed).
    #[serde(rename = "type")]
    pub type_: ComputeIdentityType,

    /// ARM ids of user-assigned identities (type UserAssigned). Each must be in the workspace's subscription and in
    /// a resource group the binding allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(regex(pattern = USER_IDENTITY_ID_PATTERN)))]
    pub user_assigned_identities: Vec<String>,
}

/// Kind of compute identity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ComputeIdentityType {
    /// An identity Azure creates and deletes with the compute.
    SystemAssigned,
    /// Identities given by id.
    UserAssigned,
}

/// A compute instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.subnet) == has(oldSelf.subnet) && (!has(self.subnet) || self.subnet == oldSelf.subnet)").message("subnet is immutable: Azure cannot move an instance to another network; create a new MlCompute").field_path(".subnet"))]
pub struct ComputeInstanceSpec {
    /// VM size, e.g. Standard_DS11_v2. Must match the binding's allowedVmSizes. Immutable (Azure resizes only a
    /// stopped instance, which the operator does not do behind the user's back).
    #[schemars(regex(pattern = VM_SIZE_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("vmSize is immutable; create a new MlCompute for another size"))]
    pub vm_size: String,

    /// Object id (GUID) of the Entra ID user the instance is personal to: only that user can use it. Azure sets
    /// it at creation only: a change stalls with reason RecreateRequired.
    #[schemars(regex(pattern = patterns::GUID))]
    pub assigned_to: String,

    /// Stop the instance after it has been idle this long, e.g. 60m (15m to 72h). Unset: never. Updated in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 2, max = 16))]
    pub idle_shutdown_after: Option<String>,

    /// Start and stop the instance on a schedule, e.g. stop every weekday at 19:00. Updated in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub schedules: Vec<ComputeSchedule>,

    /// A script the instance runs once when it is created (e.g. to install packages). Azure runs it at creation
    /// only: a change stalls with reason RecreateRequired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_script: Option<SetupScript>,

    /// Subnet (ARM id) the instance joins. Must be in the workspace's subscription and in a resource group the
    /// binding allows. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<SubnetReference>,
}

/// A start or stop schedule of a compute instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeSchedule {
    /// Start or Stop.
    pub action: ScheduleAction,
    /// When, as a five-field cron expression (minute hour day-of-month month day-of-week), e.g. "0 19 * * 1-5".
    #[schemars(regex(pattern = "^\\S+ \\S+ \\S+ \\S+ \\S+$"), length(max = 100))]
    pub cron: String,
    /// Time zone the cron expression is read in, as Windows names them (e.g. "UTC", "W. Europe Standard Time").
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = "^[A-Za-z0-9 ._()+-]+$"))]
    pub time_zone: String,
    /// Whether the schedule is active (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

fn default_true() -> bool {
    true
}

/// What a schedule does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum ScheduleAction {
    /// Start the instance.
    Start,
    /// Stop the instance.
    Stop,
}

impl ScheduleAction {
    /// The value as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleAction::Start => "Start",
            ScheduleAction::Stop => "Stop",
        }
    }
}

/// A setup script stored in the workspace's file share.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetupScript {
    /// Path of the script in the workspace's default file share, e.g. Users/admin/setup.sh.
    #[schemars(length(min = 1, max = 512), regex(pattern = "^[A-Za-z0-9_./ -]+$"))]
    pub path: String,
    /// Command-line arguments passed to the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub arguments: Option<String>,
    /// How long the script may run, e.g. 10m (Azure's default when unset: 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(min = 2, max = 16))]
    pub timeout: Option<String>,
}

impl MlComputeSpec {
    /// The name of the compute in Azure: `azureName`, else the resource's own name.
    pub fn azure_name_or<'a>(&'a self, metadata_name: &'a str) -> &'a str {
        self.azure_name.as_deref().unwrap_or(metadata_name)
    }

    /// The VM size, whichever the type.
    pub fn vm_size(&self) -> Option<&str> {
        match (&self.aml_compute, &self.compute_instance) {
            (Some(c), _) => Some(&c.vm_size),
            (None, Some(i)) => Some(&i.vm_size),
            (None, None) => None,
        }
    }
}

/// Observed state of the compute, as the operator last saw it in Azure.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlComputeStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// kstatus conditions (Ready, Reconciling, Stalled). The Ready reason says why a compute is not usable, e.g.
    /// QuotaExceeded, NotPermitted, RecreateRequired, ComputeErrors, InstanceStopped, WorkspaceNotReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// ARM id of the compute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,

    /// Name of the SubscriptionBinding whose credential the operator uses for it (`kubectl get -o wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,

    /// AmlCompute or ComputeInstance, as Azure reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_type: Option<String>,

    /// VM size as Azure reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,

    /// Provisioning state as Azure reports it (Creating, Updating, Succeeded, Failed, Deleting, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,

    /// Clusters: nodes allocated now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node_count: Option<i64>,

    /// Clusters: nodes Azure is scaling to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node_count: Option<i64>,

    /// Clusters: Steady or Resizing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_state: Option<String>,

    /// Instances: Running, Stopped, Starting, Stopping, Restarting, Creating, ...; clusters: the allocation state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,

    /// Errors Azure reports on the compute (e.g. a quota that stops the cluster from scaling), as `code: message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,

    /// The value of the azml.dev/compute-action annotation last honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action_request: Option<String>,

    /// When the operator last compared the compute with Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

#[cfg(test)]
#[path = "mlcompute_tests.rs"]
mod tests;
