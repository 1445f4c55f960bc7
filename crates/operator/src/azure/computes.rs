//! Azure ML computes (compute clusters and compute instances), their VM sizes and the subscription's ML usages
//! (Microsoft.MachineLearningServices, api-version 2025-09-01; shapes as the spec's `Compute/*`, `Usage/list` and
//! `VirtualMachineSize/list` examples).

use std::fmt;

use http::Method;
use serde::{Deserialize, Serialize};

use super::error::ArmError;
use super::ids::{IdError, SubscriptionId, WorkspaceRef};
use super::lro::{LroSpec, LroStart};
use super::models::{ManagedServiceIdentity, Tags};
use super::transport::{ArmClient, Call};
use super::workspaces::ML_API_VERSION;

/// A compute name: 2-24 ASCII letters, digits or `-`, starting with a letter (the union of Azure ML's cluster and
/// instance rules), so it can never change an ARM path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ComputeName(String);

impl ComputeName {
    /// Validates `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let ok = (2..=24).contains(&s.len())
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !s.ends_with('-');
        if ok {
            Ok(Self(s))
        } else {
            Err(IdError::InvalidName {
                kind: "compute name",
                value: s,
                reason: "must be 2-24 letters, digits or '-', starting with a letter, not ending with '-'",
            })
        }
    }
}

impl fmt::Display for ComputeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Azure location as ARM paths take it (`westeurope`): lower-case letters and digits only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location(String);

impl Location {
    /// Validates `s` (spaces and case are normalised away: "West Europe" → `westeurope`).
    pub fn new(s: &str) -> Result<Self, IdError> {
        let norm: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
        if !norm.is_empty() && norm.len() <= 64 && norm.chars().all(|c| c.is_ascii_alphanumeric()) {
            Ok(Self(norm))
        } else {
            Err(IdError::InvalidName {
                kind: "location",
                value: s.to_owned(),
                reason: "must be letters and digits, e.g. westeurope",
            })
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A compute of a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ComputeRef {
    /// Parent workspace.
    pub workspace: WorkspaceRef,
    /// Compute name.
    pub name: ComputeName,
}

impl ComputeRef {
    /// Builds a reference from validated parts.
    pub fn new(workspace: WorkspaceRef, name: ComputeName) -> Self {
        Self { workspace, name }
    }

    /// The ARM id / request path.
    pub fn id(&self) -> String {
        format!("{}/computes/{}", self.workspace.id(), self.name)
    }

    fn subscription(&self) -> SubscriptionId {
        self.workspace.subscription()
    }
}

/// A compute (request and response of Compute_CreateOrUpdate / Compute_Get).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Compute {
    /// ARM id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Identity of the compute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ManagedServiceIdentity>,
    /// Properties.
    #[serde(default)]
    pub properties: ComputeProperties,
}

/// The compute's common properties; `properties` holds the type-specific ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeProperties {
    /// `AmlCompute`, `ComputeInstance`, `AKS`, ... (required).
    #[serde(default)]
    pub compute_type: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unknown, Updating, Creating, Deleting, Succeeded, Failed, Canceled (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Errors during provisioning (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_errors: Option<Vec<ErrorResponse>>,
    /// Disable local authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_local_auth: Option<bool>,
    /// Type-specific properties: [`AmlComputeProperties`] or [`ComputeInstanceProperties`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

impl Compute {
    /// The cluster properties, when this is an AmlCompute.
    pub fn aml(&self) -> Option<AmlComputeProperties> {
        (self.properties.compute_type.eq_ignore_ascii_case("AmlCompute")).then(|| {
            self.properties.properties.clone().and_then(|p| serde_json::from_value(p).ok()).unwrap_or_default()
        })
    }

    /// The instance properties, when this is a ComputeInstance.
    pub fn instance(&self) -> Option<ComputeInstanceProperties> {
        (self.properties.compute_type.eq_ignore_ascii_case("ComputeInstance")).then(|| {
            self.properties.properties.clone().and_then(|p| serde_json::from_value(p).ok()).unwrap_or_default()
        })
    }
}

/// An error Azure reports on a compute (`{"error": {"code", "message"}}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    #[serde(default)]
    pub error: ErrorDetail,
}

/// Code and message of an [`ErrorResponse`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Error code, e.g. `QuotaExceeded`.
    #[serde(default)]
    pub code: String,
    /// Message.
    #[serde(default)]
    pub message: String,
}

/// A resource id (`{"id": ...}`), as subnets are given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceIdRef {
    /// ARM id.
    pub id: String,
}

/// AmlCompute properties.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmlComputeProperties {
    /// Linux or Windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    /// VM size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,
    /// Dedicated or LowPriority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_priority: Option<String>,
    /// Scale settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_settings: Option<ScaleSettings>,
    /// Subnet the nodes join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<ResourceIdRef>,
    /// Enabled, Disabled or NotSpecified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_login_port_public_access: Option<String>,
    /// Steady or Resizing (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_state: Option<String>,
    /// Errors on the cluster, e.g. a resize that hit the quota (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ErrorResponse>>,
    /// Nodes allocated now (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node_count: Option<i64>,
    /// Nodes being allocated to (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node_count: Option<i64>,
}

/// Scale settings of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSettings {
    /// Most nodes (required).
    pub max_node_count: i64,
    /// Fewest nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_node_count: Option<i64>,
    /// ISO 8601 idle time before a node is released, e.g. `PT5M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_idle_time_before_scale_down: Option<String>,
}

/// ComputeInstance properties.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeInstanceProperties {
    /// VM size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_size: Option<String>,
    /// Subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<ResourceIdRef>,
    /// Personal or Shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_sharing_policy: Option<String>,
    /// `personal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_instance_authorization_type: Option<String>,
    /// The user the instance is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_compute_instance_settings: Option<PersonalSettings>,
    /// SSH settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_settings: Option<SshSettings>,
    /// Setup scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_scripts: Option<SetupScripts>,
    /// ISO 8601 idle time before shutdown, e.g. `PT60M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_time_before_shutdown: Option<String>,
    /// Start/stop schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<ComputeSchedules>,
    /// Running, Stopped, Starting, Stopping, Restarting, Creating, ... (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Errors on the instance (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ErrorResponse>>,
}

/// `personalComputeInstanceSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonalSettings {
    /// The assigned user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_user: Option<AssignedUser>,
}

/// A user by object and tenant id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedUser {
    /// Object id.
    pub object_id: String,
    /// Tenant id.
    pub tenant_id: String,
}

/// SSH settings of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshSettings {
    /// Enabled or Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_access: Option<String>,
}

/// `setupScripts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupScripts {
    /// The scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scripts: Option<ScriptsToExecute>,
}

/// `scripts`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptsToExecute {
    /// Runs once when the instance is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_script: Option<ScriptReference>,
    /// Runs on every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_script: Option<ScriptReference>,
}

/// One script.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptReference {
    /// `workspaceStorage` or `inline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_source: Option<String>,
    /// Path (workspaceStorage) or content (inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_data: Option<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_arguments: Option<String>,
    /// Timeout, e.g. `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `schedules`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeSchedules {
    /// Start/stop schedules.
    #[serde(default)]
    pub compute_start_stop: Vec<ComputeStartStopSchedule>,
}

/// One start/stop schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeStartStopSchedule {
    /// Schedule id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Start or Stop.
    #[serde(default)]
    pub action: String,
    /// `Cron` or `Recurrence`.
    #[serde(default)]
    pub trigger_type: String,
    /// Enabled or Disabled.
    #[serde(default)]
    pub status: String,
    /// The cron trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronTrigger>,
}

/// A cron trigger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronTrigger {
    /// Five-field cron expression.
    #[serde(default)]
    pub expression: String,
    /// Windows time zone name.
    #[serde(default)]
    pub time_zone: String,
    /// First time the trigger is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
}

/// Body of Compute_Update (PATCH): only a cluster's scale settings can change in place.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUpdateParameters {
    /// `{"properties": {"scaleSettings": ...}}`.
    pub properties: ClusterUpdateProperties,
}

/// See [`ClusterUpdateParameters`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUpdateProperties {
    /// The new scale settings.
    pub properties: ScaleSettingsInformation,
}

/// See [`ClusterUpdateParameters`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSettingsInformation {
    /// Scale settings.
    pub scale_settings: ScaleSettings,
}

/// Body of Compute_UpdateIdleShutdownSetting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdleShutdownSetting {
    /// ISO 8601 duration, e.g. `PT60M`.
    pub idle_time_before_shutdown: String,
}

/// Start, stop or restart of a compute instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerAction {
    /// Compute_Start.
    Start,
    /// Compute_Stop.
    Stop,
    /// Compute_Restart.
    Restart,
}

impl PowerAction {
    fn path(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Stop => "stop",
            PowerAction::Restart => "restart",
        }
    }

    fn operation(self) -> &'static str {
        match self {
            PowerAction::Start => "Compute_Start",
            PowerAction::Stop => "Compute_Stop",
            PowerAction::Restart => "Compute_Restart",
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::Start => "start",
            PowerAction::Stop => "stop",
            PowerAction::Restart => "restart",
        })
    }
}

/// One entry of Usages_List.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Id, e.g. `/subscriptions/{sub}/usages/Standard_DSv2_Family_Cluster_Dedicated_vCPUs`.
    #[serde(default)]
    pub id: Option<String>,
    /// Type, e.g. `Microsoft.MachineLearningServices/vmFamily/usages`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// vCPUs in use.
    #[serde(default)]
    pub current_value: i64,
    /// The limit (`-1`: none of its own).
    #[serde(default)]
    pub limit: i64,
    /// Name.
    #[serde(default)]
    pub name: UsageName,
}

/// Name of a [`Usage`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageName {
    /// e.g. `Standard DSv2 Family Cluster Dedicated vCPUs`.
    #[serde(default)]
    pub value: String,
    /// Localized.
    #[serde(default)]
    pub localized_value: Option<String>,
}

/// One entry of VirtualMachineSizes_List.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSize {
    /// e.g. `Standard_DS3_v2`.
    #[serde(default)]
    pub name: String,
    /// e.g. `standardDSv2Family`.
    #[serde(default)]
    pub family: Option<String>,
    /// vCPUs.
    #[serde(default, rename = "vCPUs")]
    pub v_cpus: Option<i64>,
    /// Whether low-priority VMs of this size exist.
    #[serde(default)]
    pub low_priority_capable: Option<bool>,
}

#[derive(Deserialize)]
struct VmSizeList {
    #[serde(default)]
    value: Vec<VirtualMachineSize>,
}

impl ArmClient {
    /// Compute_Get. `None` when absent.
    pub async fn get_compute(&self, c: &ComputeRef) -> Result<Option<Compute>, ArmError> {
        let call = Call::new("Compute_Get", Method::GET, c.id(), ML_API_VERSION, Some(c.subscription()));
        self.get_opt(&call).await
    }

    /// Compute_List: the computes of a workspace.
    pub async fn list_computes(&self, ws: &WorkspaceRef) -> Result<Vec<Compute>, ArmError> {
        let call = Call::new(
            "Compute_List",
            Method::GET,
            format!("{}/computes", ws.id()),
            ML_API_VERSION,
            Some(ws.subscription()),
        );
        self.list_all(&call).await
    }

    /// Compute_CreateOrUpdate: 200 or 201 + Azure-AsyncOperation (final state: GET compute).
    pub async fn begin_create_or_update_compute(
        &self,
        c: &ComputeRef,
        body: &Compute,
    ) -> Result<LroStart<Compute>, ArmError> {
        let call = Call::new("Compute_CreateOrUpdate", Method::PUT, c.id(), ML_API_VERSION, Some(c.subscription()))
            .json(body)?;
        self.begin(&call, LroSpec::ORIGINAL_URI).await
    }

    /// Compute_Update (PATCH): a cluster's scale settings. 200 + Azure-AsyncOperation.
    pub async fn begin_update_compute(
        &self,
        c: &ComputeRef,
        body: &ClusterUpdateParameters,
    ) -> Result<LroStart<Compute>, ArmError> {
        let call =
            Call::new("Compute_Update", Method::PATCH, c.id(), ML_API_VERSION, Some(c.subscription())).json(body)?;
        self.begin(&call, LroSpec::ORIGINAL_URI).await
    }

    /// Compute_Delete with `underlyingResourceAction=Delete` (the VMs go too): 200/204 (or 404) done, 202 pending.
    pub async fn begin_delete_compute(&self, c: &ComputeRef) -> Result<LroStart<()>, ArmError> {
        let call = Call::new("Compute_Delete", Method::DELETE, c.id(), ML_API_VERSION, Some(c.subscription()))
            .query("underlyingResourceAction", "Delete");
        self.begin_delete(&call).await
    }

    /// Compute_Start / Compute_Stop / Compute_Restart of a compute instance: 202 + Azure-AsyncOperation.
    pub async fn begin_compute_power(&self, c: &ComputeRef, action: PowerAction) -> Result<LroStart<()>, ArmError> {
        let call = Call::new(
            action.operation(),
            Method::POST,
            format!("{}/{}", c.id(), action.path()),
            ML_API_VERSION,
            Some(c.subscription()),
        );
        self.begin_action(&call).await
    }

    /// Compute_UpdateIdleShutdownSetting of a compute instance (200, no body).
    pub async fn update_idle_shutdown(&self, c: &ComputeRef, body: &IdleShutdownSetting) -> Result<(), ArmError> {
        let call = Call::new(
            "Compute_UpdateIdleShutdownSetting",
            Method::POST,
            format!("{}/updateIdleShutdownSetting", c.id()),
            ML_API_VERSION,
            Some(c.subscription()),
        )
        .json(body)?;
        self.send(&call).await.map(|_| ())
    }

    /// Usages_List: the subscription's ML vCPU usages and limits in `location`.
    pub async fn list_ml_usages(&self, sub: SubscriptionId, location: &Location) -> Result<Vec<Usage>, ArmError> {
        let call = Call::new(
            "Usages_List",
            Method::GET,
            format!("/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{location}/usages"),
            ML_API_VERSION,
            Some(sub),
        );
        self.list_all(&call).await
    }

    /// VirtualMachineSizes_List: the VM sizes Azure ML offers in `location` (family and vCPUs).
    pub async fn list_ml_vm_sizes(
        &self,
        sub: SubscriptionId,
        location: &Location,
    ) -> Result<Vec<VirtualMachineSize>, ArmError> {
        let call = Call::new(
            "VirtualMachineSizes_List",
            Method::GET,
            format!("/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{location}/vmSizes"),
            ML_API_VERSION,
            Some(sub),
        );
        let list: VmSizeList = self.get_json(&call).await?;
        Ok(list.value)
    }
}
