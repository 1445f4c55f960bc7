//! Pure planning of a compute: desired state (from the spec) and observed state (from Azure) in, the actions to
//! take now out. No I/O, so every rule is a unit test.
//!
//! Rules, in order:
//! - absent → check the quota ([`quota_check`]): it cannot hold the compute → stall `QuotaExceeded` (no create);
//!   else create it;
//! - present but not tagged as ours, or of the other type → stall `AlreadyExists`;
//! - being provisioned → wait; failed → stall `ProvisioningFailed` with Azure's errors;
//! - a property Azure sets at creation only differs (VM priority, remote login, identity, assigned user, setup
//!   script; VM size and subnet are refused at admission) → stall `RecreateRequired` naming the fields, never
//!   delete;
//! - mutable properties differ → the smallest call: a cluster's scale settings with one PATCH, an instance's idle
//!   shutdown with updateIdleShutdownSetting, its schedules with one PUT of the same body;
//! - a new value of the `azml.dev/compute-action` annotation → one start, stop or restart (none when the instance
//!   is already where the action leads);
//! - nothing differs → no action: steady state makes no write.

use crate::api::conditions::Reason;
use crate::api::v1alpha1::{
    ComputeIdentity, ComputeIdentityType, ComputeSchedule, OWNER_TAG, RemoteLogin, SetupScript, VmPriority,
    owner_tag_value,
};
use crate::azure::computes::{
    AmlComputeProperties, AssignedUser, ClusterUpdateParameters, ClusterUpdateProperties, Compute,
    ComputeInstanceProperties, ComputeProperties, ComputeSchedules, ComputeStartStopSchedule, CronTrigger,
    IdleShutdownSetting, PersonalSettings, PowerAction, ResourceIdRef, ScaleSettings, ScaleSettingsInformation,
    ScriptReference, ScriptsToExecute, SetupScripts, SshSettings, Usage, VirtualMachineSize,
};
use crate::azure::models::{ManagedServiceIdentity, Tags, UserAssignedIdentity};

/// A declared compute cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCluster {
    /// VM size.
    pub vm_size: String,
    /// Priority.
    pub vm_priority: VmPriority,
    /// Fewest nodes.
    pub min_nodes: i64,
    /// Most nodes.
    pub max_nodes: i64,
    /// Idle time before scale-down, in seconds.
    pub idle_before_scale_down: Option<i64>,
    /// SSH from the internet.
    pub remote_login: RemoteLogin,
    /// Subnet id.
    pub subnet: Option<String>,
    /// Identity.
    pub identity: Option<ComputeIdentity>,
}

/// A declared compute instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredInstance {
    /// VM size.
    pub vm_size: String,
    /// Object id of the user.
    pub assigned_to: String,
    /// Tenant of the user (the binding's).
    pub tenant_id: String,
    /// Idle shutdown, in seconds.
    pub idle_shutdown_after: Option<i64>,
    /// Schedules.
    pub schedules: Vec<ComputeSchedule>,
    /// Creation script.
    pub setup_script: Option<SetupScript>,
    /// Subnet id.
    pub subnet: Option<String>,
}

/// Which kind of compute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DesiredKind {
    /// AmlCompute.
    Cluster(DesiredCluster),
    /// ComputeInstance.
    Instance(DesiredInstance),
}

/// What the spec asks of Azure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCompute {
    /// Location (the workspace's).
    pub location: String,
    /// Value of the owner tag (`<namespace>/<name>/<uid>`).
    pub owner: String,
    /// The compute.
    pub kind: DesiredKind,
}

impl DesiredCompute {
    /// `AmlCompute` or `ComputeInstance`.
    pub fn compute_type(&self) -> &'static str {
        match self.kind {
            DesiredKind::Cluster(_) => "AmlCompute",
            DesiredKind::Instance(_) => "ComputeInstance",
        }
    }

    /// The VM size.
    pub fn vm_size(&self) -> &str {
        match &self.kind {
            DesiredKind::Cluster(c) => &c.vm_size,
            DesiredKind::Instance(i) => &i.vm_size,
        }
    }
}

/// The subscription's ML vCPU quota in the location, read before a create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaView {
    /// VirtualMachineSizes_List.
    pub vm_sizes: Vec<VirtualMachineSize>,
    /// Usages_List.
    pub usages: Vec<Usage>,
}

/// What Azure holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedCompute {
    /// The compute, when it exists.
    pub compute: Option<Compute>,
    /// The quota, read only when the compute does not exist.
    pub quota: Option<QuotaView>,
}

/// The `azml.dev/compute-action` annotation against what was last honoured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionRequest {
    /// The annotation's value, when set.
    pub value: Option<String>,
    /// `status.lastActionRequest`.
    pub honoured: Option<String>,
}

/// One write.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Action {
    /// Compute_CreateOrUpdate of a new compute.
    Create {
        /// The body.
        body: Box<Compute>,
    },
    /// Compute_Update: a cluster's scale settings.
    UpdateScale {
        /// The body.
        body: ClusterUpdateParameters,
        /// Old → new, for events.
        change: String,
    },
    /// Compute_UpdateIdleShutdownSetting of an instance.
    UpdateIdleShutdown {
        /// The body.
        body: IdleShutdownSetting,
    },
    /// Compute_CreateOrUpdate of an existing instance: its schedules.
    UpdateSchedules {
        /// The body.
        body: Box<Compute>,
    },
    /// Compute_Start / Stop / Restart.
    Power {
        /// Which.
        action: PowerAction,
        /// The annotation value it honours.
        request: String,
    },
    /// No call: the instance is already where the requested action leads; the annotation value is recorded as
    /// honoured, so it never acts later.
    Honour {
        /// The annotation value.
        request: String,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Create { body } => {
                write!(f, "create the {} (Compute_CreateOrUpdate)", body.properties.compute_type)
            }
            Action::UpdateScale { change, .. } => write!(f, "update the scale settings: {change} (Compute_Update)"),
            Action::UpdateIdleShutdown { body } => {
                write!(f, "set idle shutdown to {} (Compute_UpdateIdleShutdownSetting)", body.idle_time_before_shutdown)
            }
            Action::UpdateSchedules { .. } => write!(f, "update the schedules (Compute_CreateOrUpdate)"),
            Action::Power { action, request } => write!(f, "{action} the instance (annotation value {request})"),
            Action::Honour { request } => {
                write!(f, "record annotation value {request} as honoured (the instance is already there; no call)")
            }
        }
    }
}

/// The compute's plan: THE plan shape ([`crate::reconciler::plan::Plan`]) of its actions.
pub type Plan = crate::reconciler::plan::Plan<Action>;

impl crate::reconciler::plan::PlanAction for Action {
    fn calls_azure(&self) -> bool {
        !matches!(self, Action::Honour { .. })
    }
}

/// Seconds of a Kubernetes-style duration (`1h30m`, `90s`); `None` for anything else.
pub fn parse_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: i64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
        any = true;
    }
    (any && number.is_empty()).then_some(total)
}

/// An ISO 8601 duration as Azure writes it (`PT1H30M`).
pub fn iso_duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut out = "PT".to_owned();
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if s > 0 || (h == 0 && m == 0) {
        out.push_str(&format!("{s}S"));
    }
    out
}

/// Seconds of an ISO 8601 duration Azure reports (`PT5M`, `PT120S`, `P1DT2H`).
pub fn parse_iso_duration(s: &str) -> Option<i64> {
    s.parse::<jiff::SignedDuration>().ok().map(|d| d.as_secs())
}

/// The owner tag of a compute.
pub fn owner_tags(owner: &str) -> Tags {
    let mut tags = Tags::new();
    tags.insert(OWNER_TAG.to_owned(), owner.to_owned());
    tags
}

fn identity_body(identity: Option<&ComputeIdentity>) -> Option<ManagedServiceIdentity> {
    identity.map(|i| match i.type_ {
        ComputeIdentityType::SystemAssigned => {
            ManagedServiceIdentity { type_: "SystemAssigned".into(), ..Default::default() }
        }
        ComputeIdentityType::UserAssigned => ManagedServiceIdentity {
            type_: "UserAssigned".into(),
            user_assigned_identities: Some(
                i.user_assigned_identities.iter().map(|id| (id.clone(), UserAssignedIdentity::default())).collect(),
            ),
            ..Default::default()
        },
    })
}

fn scale_settings(c: &DesiredCluster) -> ScaleSettings {
    ScaleSettings {
        max_node_count: c.max_nodes,
        min_node_count: Some(c.min_nodes),
        node_idle_time_before_scale_down: c.idle_before_scale_down.map(iso_duration),
    }
}

fn schedules_body(schedules: &[ComputeSchedule]) -> Option<ComputeSchedules> {
    (!schedules.is_empty()).then(|| ComputeSchedules {
        compute_start_stop: schedules
            .iter()
            .map(|s| ComputeStartStopSchedule {
                id: None,
                action: s.action.as_str().to_owned(),
                trigger_type: "Cron".into(),
                status: if s.enabled { "Enabled" } else { "Disabled" }.into(),
                cron: Some(CronTrigger {
                    expression: s.cron.clone(),
                    time_zone: s.time_zone.clone(),
                    start_time: None,
                }),
            })
            .collect(),
    })
}

/// The create body for `desired`.
pub fn compute_body(desired: &DesiredCompute) -> Compute {
    let (identity, properties) = match &desired.kind {
        DesiredKind::Cluster(c) => {
            let props = AmlComputeProperties {
                os_type: Some("Linux".into()),
                vm_size: Some(c.vm_size.clone()),
                vm_priority: Some(c.vm_priority.as_str().into()),
                scale_settings: Some(scale_settings(c)),
                subnet: c.subnet.clone().map(|id| ResourceIdRef { id }),
                remote_login_port_public_access: Some(c.remote_login.as_str().into()),
                ..Default::default()
            };
            (identity_body(c.identity.as_ref()), serde_json::to_value(props).ok())
        }
        DesiredKind::Instance(i) => {
            let props = ComputeInstanceProperties {
                vm_size: Some(i.vm_size.clone()),
                subnet: i.subnet.clone().map(|id| ResourceIdRef { id }),
                application_sharing_policy: Some("Personal".into()),
                compute_instance_authorization_type: Some("personal".into()),
                personal_compute_instance_settings: Some(PersonalSettings {
                    assigned_user: Some(AssignedUser {
                        object_id: i.assigned_to.clone(),
                        tenant_id: i.tenant_id.clone(),
                    }),
                }),
                ssh_settings: Some(SshSettings { ssh_public_access: Some("Disabled".into()) }),
                setup_scripts: i.setup_script.as_ref().map(|s| SetupScripts {
                    scripts: Some(ScriptsToExecute {
                        creation_script: Some(ScriptReference {
                            script_source: Some("workspaceStorage".into()),
                            script_data: Some(s.path.clone()),
                            script_arguments: s.arguments.clone(),
                            timeout: s.timeout.clone(),
                        }),
                        startup_script: None,
                    }),
                }),
                idle_time_before_shutdown: i.idle_shutdown_after.map(iso_duration),
                schedules: schedules_body(&i.schedules),
                ..Default::default()
            };
            (None, serde_json::to_value(props).ok())
        }
    };
    Compute {
        location: Some(desired.location.clone()),
        tags: Some(owner_tags(&desired.owner)),
        identity,
        properties: ComputeProperties { compute_type: desired.compute_type().into(), properties, ..Default::default() },
        ..Default::default()
    }
}

/// Whether `c` carries the owner tag `owner` (the tag's name read case-insensitively, as Azure reads it).
pub(crate) fn owned(c: &Compute, owner: &str) -> bool {
    c.tags.as_ref().and_then(owner_tag_value).is_some_and(|v| v == owner)
}

/// Lower-case letters and digits only, for matching usage names against VM families.
fn squash(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase()
}

/// Why a compute cannot fit the subscription's quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaShortfall {
    /// The quota's name, e.g. `Standard DSv2 Family Cluster Dedicated vCPUs`.
    pub quota: String,
    /// Its limit.
    pub limit: i64,
    /// vCPUs in use.
    pub current: i64,
    /// vCPUs the compute needs.
    pub needed: i64,
}

/// Checks the compute against the quota: its VM family's quota and the regional total for its priority. `Err`
/// with the message of the stall. A VM size Azure ML does not offer in the location is an error too; a quota Azure
/// does not list is not judged (Azure decides at creation).
pub fn quota_check(desired: &DesiredCompute, quota: &QuotaView) -> Result<(), (Reason, String)> {
    let vm_size = desired.vm_size();
    let Some(size) = quota.vm_sizes.iter().find(|s| s.name.eq_ignore_ascii_case(vm_size)) else {
        return Err((
            Reason::InvalidSpec,
            format!("VM size {vm_size} is not offered by Azure ML in {}; choose another vmSize", desired.location),
        ));
    };
    let vcpus = size.v_cpus.unwrap_or(0);
    let (nodes, priority) = match &desired.kind {
        DesiredKind::Cluster(c) => (c.max_nodes, c.vm_priority),
        DesiredKind::Instance(_) => (1, VmPriority::Dedicated),
    };
    let needed = vcpus.saturating_mul(nodes);
    let prio = match priority {
        VmPriority::Dedicated => "dedicated",
        VmPriority::LowPriority => "lowpriority",
    };
    let family = size.family.as_deref().map(squash).unwrap_or_default();
    let family_key = format!("{family}cluster{prio}vcpus");
    let total_key = format!("totalcluster{prio}regionalvcpus");
    let subscription_level =
        |u: &&Usage| !u.id.as_deref().unwrap_or_default().to_ascii_lowercase().contains("/workspaces/");
    let shortfall = |key: &str| -> Option<QuotaShortfall> {
        let u = quota.usages.iter().filter(subscription_level).find(|u| squash(&u.name.value) == key)?;
        (u.limit >= 0 && u.current_value.saturating_add(needed) > u.limit).then(|| QuotaShortfall {
            quota: u.name.value.clone(),
            limit: u.limit,
            current: u.current_value,
            needed,
        })
    };
    match shortfall(&family_key).or_else(|| shortfall(&total_key)) {
        None => Ok(()),
        Some(s) => Err((
            Reason::QuotaExceeded,
            format!(
                "quota {} in {}: limit {}, current usage {}, this compute needs {} ({} x {vm_size} with {vcpus} vCPUs); \
                 nothing was created: ask for more quota, or lower maxNodes or the VM size",
                s.quota, desired.location, s.limit, s.current, s.needed, nodes
            ),
        )),
    }
}

/// Parses the `azml.dev/compute-action` value: `start`, `stop` or `restart`, optionally followed by `:<token>`.
pub fn parse_action(value: &str) -> Option<PowerAction> {
    let verb = value.split(':').next().unwrap_or_default().trim();
    match verb.to_ascii_lowercase().as_str() {
        "start" => Some(PowerAction::Start),
        "stop" => Some(PowerAction::Stop),
        "restart" => Some(PowerAction::Restart),
        _ => None,
    }
}

fn same_opt_id(a: Option<&str>, b: Option<&ResourceIdRef>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(&b.id),
        _ => false,
    }
}

/// Identity as a comparable (type, sorted lower-case ids).
fn identity_key(i: Option<&ManagedServiceIdentity>) -> (String, Vec<String>) {
    let Some(i) = i else { return ("none".into(), vec![]) };
    let mut ids: Vec<String> =
        i.user_assigned_identities.iter().flat_map(|m| m.keys().map(|k| k.to_ascii_lowercase())).collect();
    ids.sort();
    (i.type_.to_ascii_lowercase().replace(' ', ""), ids)
}

/// The properties Azure sets at creation only that differ, as `field (Azure: x, spec: y)`.
fn recreate_fields(desired: &DesiredCompute, c: &Compute) -> Vec<String> {
    let mut out = Vec::new();
    let mut differs = |field: &str, azure: &str, spec: &str| {
        if !azure.eq_ignore_ascii_case(spec) {
            out.push(format!("{field} (Azure: {azure}, spec: {spec})"));
        }
    };
    match &desired.kind {
        DesiredKind::Cluster(d) => {
            let p = c.aml().unwrap_or_default();
            differs("amlCompute.vmSize", p.vm_size.as_deref().unwrap_or("-"), &d.vm_size);
            differs("amlCompute.vmPriority", p.vm_priority.as_deref().unwrap_or("Dedicated"), d.vm_priority.as_str());
            let remote = match p.remote_login_port_public_access.as_deref() {
                Some("Enabled") => "Enabled",
                _ => "Disabled",
            };
            differs("amlCompute.remoteLogin", remote, d.remote_login.as_str());
            if !same_opt_id(d.subnet.as_deref(), p.subnet.as_ref()) {
                let azure = p.subnet.as_ref().map_or("none", |s| s.id.as_str());
                out.push(format!(
                    "amlCompute.subnet (Azure: {azure}, spec: {})",
                    d.subnet.as_deref().unwrap_or("none")
                ));
            }
            let want = identity_key(identity_body(d.identity.as_ref()).as_ref());
            let have = identity_key(c.identity.as_ref());
            if want != have {
                out.push(format!("amlCompute.identity (Azure: {}, spec: {})", have.0, want.0));
            }
        }
        DesiredKind::Instance(d) => {
            let p = c.instance().unwrap_or_default();
            differs("computeInstance.vmSize", p.vm_size.as_deref().unwrap_or("-"), &d.vm_size);
            let user = p
                .personal_compute_instance_settings
                .as_ref()
                .and_then(|s| s.assigned_user.as_ref())
                .map_or("none", |u| u.object_id.as_str());
            differs("computeInstance.assignedTo", user, &d.assigned_to);
            let script = p
                .setup_scripts
                .as_ref()
                .and_then(|s| s.scripts.as_ref())
                .and_then(|s| s.creation_script.as_ref())
                .and_then(|s| s.script_data.as_deref());
            let want = d.setup_script.as_ref().map(|s| s.path.as_str());
            if script != want {
                out.push(format!(
                    "computeInstance.setupScript (Azure: {}, spec: {})",
                    script.unwrap_or("none"),
                    want.unwrap_or("none")
                ));
            }
            if !same_opt_id(d.subnet.as_deref(), p.subnet.as_ref()) {
                out.push("computeInstance.subnet".into());
            }
        }
    }
    out
}

/// Normalised schedules for comparison: (action, cron, time zone, enabled), sorted.
fn schedule_keys(s: Option<&ComputeSchedules>) -> Vec<(String, String, String, bool)> {
    let mut keys: Vec<_> = s
        .map(|s| s.compute_start_stop.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let cron = s.cron.clone().unwrap_or_default();
            (
                s.action.to_ascii_lowercase(),
                cron.expression.split_whitespace().collect::<Vec<_>>().join(" "),
                cron.time_zone.to_ascii_lowercase(),
                s.status.eq_ignore_ascii_case("Enabled"),
            )
        })
        .collect();
    keys.sort();
    keys
}

fn busy(state: &str) -> bool {
    matches!(state.to_ascii_lowercase().as_str(), "creating" | "updating" | "deleting")
}

/// The compute's errors as Azure reports them (provisioning errors and the type's own), as `code: message`.
pub fn compute_errors(c: &Compute) -> Vec<String> {
    let mut errors: Vec<String> = c.properties.provisioning_errors.iter().flatten().map(error_line).collect();
    let own = match c.properties.compute_type.as_str() {
        "AmlCompute" => c.aml().and_then(|p| p.errors),
        "ComputeInstance" => c.instance().and_then(|p| p.errors),
        _ => None,
    };
    errors.extend(own.iter().flatten().map(error_line));
    errors
}

fn error_line(e: &crate::azure::computes::ErrorResponse) -> String {
    format!("{}: {}", e.error.code, e.error.message)
}

/// The plan. Pure; see the module docs for the rules.
pub fn plan(desired: &DesiredCompute, observed: &ObservedCompute, request: &ActionRequest) -> Plan {
    let mut plan = Plan::default();
    let Some(c) = &observed.compute else {
        if let Some(quota) = &observed.quota
            && let Err(stall) = quota_check(desired, quota)
        {
            plan.stall = Some(stall);
            return plan;
        }
        plan.actions.push(Action::Create { body: Box::new(compute_body(desired)) });
        plan.waiting.push(format!("creating the {}", desired.compute_type()));
        return plan;
    };
    if !owned(c, &desired.owner) {
        plan.stall = Some((
            Reason::AlreadyExists,
            format!(
                "a compute of that name exists in the workspace and was not created by this resource (tag {OWNER_TAG} is not {}); choose another azureName",
                desired.owner
            ),
        ));
        return plan;
    }
    if !c.properties.compute_type.eq_ignore_ascii_case(desired.compute_type()) {
        plan.stall = Some((
            Reason::AlreadyExists,
            format!(
                "the compute in Azure is a {}, the spec declares a {}",
                c.properties.compute_type,
                desired.compute_type()
            ),
        ));
        return plan;
    }
    let state = c.properties.provisioning_state.clone().unwrap_or_else(|| "Succeeded".into());
    if busy(&state) {
        plan.waiting.push(format!("the compute is {state}"));
        return plan;
    }
    if state.eq_ignore_ascii_case("Failed") || state.eq_ignore_ascii_case("Canceled") {
        let errors = compute_errors(c);
        let detail = if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) };
        plan.stall = Some((
            Reason::ProvisioningFailed,
            format!("provisioning of the compute {}{detail}; delete the MlCompute to retry", state.to_lowercase()),
        ));
        return plan;
    }
    let recreate = recreate_fields(desired, c);
    if !recreate.is_empty() {
        plan.stall = Some((
            Reason::RecreateRequired,
            format!(
                "Azure sets {} at creation only; to apply the spec, delete this MlCompute (deletionPolicy Delete) and create it again, or restore the field. Nothing was deleted",
                recreate.join(", ")
            ),
        ));
    }
    match &desired.kind {
        DesiredKind::Cluster(d) => plan_cluster(&mut plan, d, c),
        DesiredKind::Instance(d) => plan_instance(&mut plan, desired, d, c, request),
    }
    plan
}

fn plan_cluster(plan: &mut Plan, d: &DesiredCluster, c: &Compute) {
    let p = c.aml().unwrap_or_default();
    let have = p.scale_settings.clone().unwrap_or_default();
    let want = scale_settings(d);
    let idle_have = have.node_idle_time_before_scale_down.as_deref().and_then(parse_iso_duration);
    let idle_differs = d.idle_before_scale_down.is_some() && idle_have != d.idle_before_scale_down;
    if have.max_node_count != want.max_node_count || have.min_node_count.unwrap_or(0) != d.min_nodes || idle_differs {
        let change = format!(
            "nodes {}..{} → {}..{}",
            have.min_node_count.unwrap_or(0),
            have.max_node_count,
            d.min_nodes,
            d.max_nodes
        );
        plan.actions.push(Action::UpdateScale {
            body: ClusterUpdateParameters {
                properties: ClusterUpdateProperties { properties: ScaleSettingsInformation { scale_settings: want } },
            },
            change,
        });
        plan.waiting.push("updating the scale settings".into());
    }
}

fn plan_instance(plan: &mut Plan, desired: &DesiredCompute, d: &DesiredInstance, c: &Compute, req: &ActionRequest) {
    let p = c.instance().unwrap_or_default();
    let idle_have = p.idle_time_before_shutdown.as_deref().and_then(parse_iso_duration);
    if let Some(want) = d.idle_shutdown_after
        && idle_have != Some(want)
    {
        plan.actions.push(Action::UpdateIdleShutdown {
            body: IdleShutdownSetting { idle_time_before_shutdown: iso_duration(want) },
        });
    }
    if schedule_keys(p.schedules.as_ref()) != schedule_keys(schedules_body(&d.schedules).as_ref()) {
        let mut body = compute_body(desired);
        // The PUT carries what Azure holds for the properties it cannot change, so it only changes the schedules
        // (and the idle time, which is then already set by the call above).
        if let Some(props) = body.properties.properties.as_mut()
            && let Some(idle) = &p.idle_time_before_shutdown
            && d.idle_shutdown_after.is_none()
        {
            props["idleTimeBeforeShutdown"] = serde_json::json!(idle);
        }
        plan.actions.push(Action::UpdateSchedules { body: Box::new(body) });
    }
    if !plan.actions.is_empty() {
        plan.waiting.push("updating the instance".into());
    }
    let state = p.state.clone().unwrap_or_else(|| "Unknown".into());
    let Some(value) = req.value.as_ref().filter(|v| req.honoured.as_ref() != Some(*v)) else {
        if is_transitional(&state) {
            plan.waiting.push(format!("the instance is {state}"));
        }
        return;
    };
    let Some(action) = parse_action(value) else {
        plan.stall = plan.stall.take().or(Some((
            Reason::InvalidAnnotation,
            format!(
                "azml.dev/compute-action {value:?} is not start, stop or restart (optionally followed by :<token>)"
            ),
        )));
        return;
    };
    let lower = state.to_ascii_lowercase();
    let already = matches!((action, lower.as_str()), (PowerAction::Start, "running") | (PowerAction::Stop, "stopped"));
    if already {
        plan.actions.push(Action::Honour { request: value.clone() });
    } else if is_transitional(&state) || !plan.actions.is_empty() {
        plan.waiting.push(format!("{action} waits: the instance is {state}"));
    } else if matches!((action, lower.as_str()), (PowerAction::Restart, "stopped")) {
        plan.actions.push(Action::Power { action: PowerAction::Start, request: value.clone() });
        plan.waiting.push("starting the instance".into());
    } else {
        plan.actions.push(Action::Power { action, request: value.clone() });
        plan.waiting.push(format!("{action} of the instance"));
    }
}

/// Whether an instance state is on its way somewhere.
pub fn is_transitional(state: &str) -> bool {
    matches!(
        state.to_ascii_lowercase().as_str(),
        "creating" | "starting" | "stopping" | "restarting" | "settingup" | "usersettingup" | "deleting" | "resizing"
    )
}

/// The compute's usable state: `Ok(description)` or `Err((reason, message))` saying why it cannot run work.
pub fn usability(c: &Compute) -> Result<String, (Reason, String)> {
    let errors = compute_errors(c);
    if !errors.is_empty() {
        return Err((Reason::ComputeErrors, format!("Azure reports: {}", errors.join("; "))));
    }
    if let Some(p) = c.instance() {
        let state = p.state.unwrap_or_else(|| "Unknown".into());
        return if state.eq_ignore_ascii_case("Running") {
            Ok("the instance is running".into())
        } else if state.eq_ignore_ascii_case("Stopped") {
            Err((
                Reason::InstanceStopped,
                "the instance is stopped; annotate azml.dev/compute-action: start:<token> to start it".into(),
            ))
        } else {
            Err((Reason::OperationInProgress, format!("the instance is {state}")))
        };
    }
    let p = c.aml().unwrap_or_default();
    Ok(format!(
        "{} of {} node(s) allocated ({})",
        p.current_node_count.unwrap_or(0),
        p.scale_settings.map_or(0, |s| s.max_node_count),
        p.allocation_state.unwrap_or_else(|| "Steady".into())
    ))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
