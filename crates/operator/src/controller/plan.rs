//! The plan: a pure function from what the spec wants and what Azure has to the actions that close the gap.
//!
//! No I/O here. [`plan`] is what `azml-operator plan` prints and what `apply` executes, so the dry run and the
//! controller can never disagree. The rule for writes is "the smallest call": a missing resource group or
//! workspace is created with a PUT; differing mutable properties are sent in one PATCH holding only the changed
//! fields; nothing differing means no action at all.

use std::collections::BTreeMap;
use std::fmt;

use kube::ResourceExt;

pub use crate::reconciler::annotation_true;
use serde::Serialize;

use crate::api::conditions::Reason;
use crate::api::v1alpha1::{
    ANNOTATION_ADOPT, ANNOTATION_PAUSED, DependentResource, MlWorkspace, MlWorkspaceSpec, OWNER_TAG,
    PublicNetworkAccess, owner_tag_value,
};
use crate::azure::ids::{ResourceGroupName, ResourceId, WorkspaceName};
use crate::azure::lro::LroHandle;
use crate::azure::models::{ManagedServiceIdentity, ProvisioningState, Tags};
use crate::azure::workspaces::{Workspace, WorkspaceProperties, WorkspaceUpdate, WorkspaceUpdateProperties};
use crate::azure::{ResourceGroupRef, SubscriptionId, WorkspaceRef};
use crate::reconciler::binding::Place;

/// Who owns a workspace in Azure: the value of the `azml.dev-owner` tag is `<namespace>/<name>/<uid>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// Namespace of the custom resource.
    pub namespace: String,
    /// Name of the custom resource.
    pub name: String,
    /// UID of the custom resource (tells incarnations of the same name apart).
    pub uid: String,
}

impl Owner {
    /// The tag value.
    pub fn tag_value(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.name, self.uid)
    }

    /// Reads an owner tag value: `None` when it is not `<namespace>/<name>/<uid>` (then no custom resource owns it).
    pub fn parse(tag: &str) -> Option<Owner> {
        let mut parts = tag.split('/');
        let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
        let ok = parts.next().is_none() && [namespace, name, uid].iter().all(|p| !p.is_empty());
        ok.then(|| Owner { namespace: namespace.to_owned(), name: name.to_owned(), uid: uid.to_owned() })
    }

    /// How a workspace tagged with `tag` relates to this owner.
    pub fn classify(&self, tag: Option<&str>) -> Ownership {
        match tag {
            None => Ownership::Unowned,
            Some(t) if t == self.tag_value() => Ownership::Ours,
            Some(t) => match t.rsplit_once('/') {
                Some((prefix, uid)) if prefix == format!("{}/{}", self.namespace, self.name) => {
                    Ownership::PreviousIncarnation { uid: uid.to_owned() }
                }
                _ => Ownership::Foreign(t.to_owned()),
            },
        }
    }
}

/// Relation between a workspace found in Azure and the custom resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Tagged with this resource's namespace, name and uid.
    Ours,
    /// Tagged by an earlier custom resource of the same namespace and name (deleted with Retain, re-created).
    PreviousIncarnation {
        /// The earlier uid.
        uid: String,
    },
    /// Tagged by another custom resource (or anything else): the tag value.
    Foreign(String),
    /// No owner tag.
    Unowned,
}

/// Why the spec cannot be turned into Azure requests. Found before any Azure call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A value that reaches an ARM path failed validation.
    #[error("spec.{field}: {source}")]
    InvalidId {
        /// The offending field.
        field: &'static str,
        /// The id layer's verdict.
        #[source]
        source: crate::azure::ids::IdError,
    },
    /// The custom resource has no namespace or uid (never true for objects read from the API server).
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    /// A tag Azure would refuse, or the reserved owner tag (admission checks the same; this is the second check).
    #[error("spec.tags: {0}")]
    Tags(String),
}

/// Azure's limits on the tags of one resource (the owner tag included).
pub const MAX_TAGS: usize = 50;
/// Azure's limit on the length of a tag name (storage accounts: 128; the operator does not tag them).
pub const MAX_TAG_NAME: usize = 512;
/// Azure's limit on the length of a tag value.
pub const MAX_TAG_VALUE: usize = 256;
/// Characters Azure refuses in tag names.
pub const FORBIDDEN_TAG_NAME_CHARS: &[char] = &['<', '>', '%', '&', '\\', '?', '/'];

/// Checks `spec.tags` as Azure and the admission rules do: the reserved owner tag under any spelling, at most 49
/// user tags, name and value lengths, forbidden characters.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), SpecError> {
    if tags.keys().any(|k| k.eq_ignore_ascii_case(OWNER_TAG)) {
        return Err(SpecError::Tags(format!(
            "the {OWNER_TAG} tag is reserved for the operator (tag names are case-insensitive)"
        )));
    }
    if tags.len() >= MAX_TAGS {
        return Err(SpecError::Tags(format!(
            "at most {} tags (Azure allows {MAX_TAGS}, the owner tag is one)",
            MAX_TAGS - 1
        )));
    }
    for (name, value) in tags {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_TAG_NAME {
            return Err(SpecError::Tags(format!("tag names must be 1 to {MAX_TAG_NAME} characters long")));
        }
        if name.contains(FORBIDDEN_TAG_NAME_CHARS) {
            return Err(SpecError::Tags(format!("tag name {name:?} contains one of < > % & \\ ? /")));
        }
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(SpecError::Tags(format!(
                "the value of tag {name:?} is longer than {MAX_TAG_VALUE} characters"
            )));
        }
    }
    Ok(())
}

/// What the custom resource asks for, validated and resolved to ARM ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The workspace in Azure.
    pub workspace: WorkspaceRef,
    /// `spec.location`.
    pub location: String,
    /// `spec.createResourceGroup`.
    pub create_resource_group: bool,
    /// `spec.friendlyName`; `None` leaves Azure's value alone.
    pub friendly_name: Option<String>,
    /// `spec.description`; `None` leaves Azure's value alone.
    pub description: Option<String>,
    /// `spec.tags` plus the owner tag: the complete tag set the workspace should have.
    pub tags: Tags,
    /// `spec.publicNetworkAccess`.
    pub public_network_access: PublicNetworkAccess,
    /// Resolved storage account id.
    pub storage_account: ResourceId,
    /// Resolved key vault id.
    pub key_vault: ResourceId,
    /// Resolved Application Insights id; `None` leaves Azure's value alone.
    pub application_insights: Option<ResourceId>,
    /// Resolved container registry id; `None` leaves Azure's value alone.
    pub container_registry: Option<ResourceId>,
    /// The owner tag this resource puts on what it creates.
    pub owner: Owner,
    /// `azml.dev/adopt: "true"`.
    pub adopt: bool,
    /// `azml.dev/paused: "true"`.
    pub paused: bool,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

/// Provider type of each dependent resource, for ids built from a bare `name`.
const STORAGE_TYPE: &str = "Microsoft.Storage/storageAccounts";
const KEY_VAULT_TYPE: &str = "Microsoft.KeyVault/vaults";
const APP_INSIGHTS_TYPE: &str = "Microsoft.Insights/components";
const REGISTRY_TYPE: &str = "Microsoft.ContainerRegistry/registries";

fn resolve(
    field: &'static str,
    dep: &DependentResource,
    rg: &ResourceGroupRef,
    resource_type: &str,
) -> Result<ResourceId, SpecError> {
    let raw = match (&dep.id, &dep.name) {
        (Some(id), _) => id.clone(),
        (None, Some(name)) => format!("{}/providers/{resource_type}/{name}", rg.id()),
        (None, None) => {
            return Err(SpecError::InvalidId {
                field,
                source: crate::azure::ids::IdError::InvalidId { value: String::new(), reason: "set name or id" },
            });
        }
    };
    let id = ResourceId::parse(&raw).map_err(|source| SpecError::InvalidId { field, source })?;
    // The id must name a resource of the right type, not a resource group or a nested child.
    id.top_level(resource_type).map_err(|source| SpecError::InvalidId { field, source })?;
    Ok(id)
}

/// The dependent resources `spec` names by `name`, resolved in `rg`. They live beside the workspace, so a move takes
/// them along (resources given by `id` stay where they are).
pub fn named_dependencies(spec: &MlWorkspaceSpec, rg: &ResourceGroupRef) -> Result<Vec<ResourceId>, SpecError> {
    let mut out = Vec::new();
    for (field, dep) in crate::policy::dependencies(spec) {
        if dep.id.is_some() || dep.name.is_none() {
            continue;
        }
        let resource_type = match field {
            "storageAccount" => STORAGE_TYPE,
            "keyVault" => KEY_VAULT_TYPE,
            "applicationInsights" => APP_INSIGHTS_TYPE,
            _ => REGISTRY_TYPE,
        };
        out.push(resolve(field, dep, rg, resource_type)?);
    }
    Ok(out)
}

impl Desired {
    /// Validates and resolves the spec. Every value that reaches an ARM path passes the id layer's validation.
    pub fn from_resource(ws: &MlWorkspace) -> Result<Self, SpecError> {
        Self::at(ws, Place::of(&ws.spec))
    }

    /// [`Desired::from_resource`] for the workspace at `place` (where it is in Azure while a move is refused, failed
    /// or not permitted; its dependencies named without an id are in that resource group too).
    pub fn at(ws: &MlWorkspace, place: Place<'_>) -> Result<Self, SpecError> {
        let spec = &ws.spec;
        let namespace = ws.namespace().ok_or(SpecError::MissingMetadata("namespace"))?;
        let uid = ws.uid().ok_or(SpecError::MissingMetadata("uid"))?;
        let id_err = |field| move |source| SpecError::InvalidId { field, source };
        let subscription = SubscriptionId::new(place.subscription_id).map_err(id_err("subscriptionId"))?;
        let rg_name = ResourceGroupName::new(place.resource_group.to_owned()).map_err(id_err("resourceGroup"))?;
        let rg = ResourceGroupRef::new(subscription, rg_name);
        let ws_name = WorkspaceName::new(spec.azure_name.clone().unwrap_or_else(|| ws.name_any()))
            .map_err(id_err("azureName"))?;
        let owner = Owner { namespace, name: ws.name_any(), uid };
        check_tags(&spec.tags)?;
        let mut tags = spec.tags.clone();
        tags.insert(OWNER_TAG.to_owned(), owner.tag_value());
        Ok(Desired {
            workspace: WorkspaceRef::new(rg.clone(), ws_name),
            location: spec.location.clone(),
            create_resource_group: spec.create_resource_group,
            friendly_name: spec.friendly_name.clone(),
            description: spec.description.clone(),
            tags,
            public_network_access: spec.public_network_access,
            storage_account: resolve("storageAccount", &spec.storage_account, &rg, STORAGE_TYPE)?,
            key_vault: resolve("keyVault", &spec.key_vault, &rg, KEY_VAULT_TYPE)?,
            application_insights: spec
                .application_insights
                .as_ref()
                .map(|d| resolve("applicationInsights", d, &rg, APP_INSIGHTS_TYPE))
                .transpose()?,
            container_registry: spec
                .container_registry
                .as_ref()
                .map(|d| resolve("containerRegistry", d, &rg, REGISTRY_TYPE))
                .transpose()?,
            owner,
            adopt: annotation_true(ws, ANNOTATION_ADOPT),
            paused: annotation_true(ws, ANNOTATION_PAUSED),
            generation: ws.metadata.generation,
        })
    }

    /// The PUT body that creates the workspace.
    pub fn workspace_body(&self) -> Workspace {
        Workspace {
            location: Some(self.location.clone()),
            tags: Some(self.tags.clone()),
            // Azure ML requires an identity; the system-assigned one needs no extra resources.
            identity: Some(ManagedServiceIdentity { type_: "SystemAssigned".into(), ..Default::default() }),
            properties: WorkspaceProperties {
                friendly_name: self.friendly_name.clone(),
                description: self.description.clone(),
                public_network_access: Some(self.public_network_access.as_str().to_owned()),
                storage_account: Some(self.storage_account.to_string()),
                key_vault: Some(self.key_vault.to_string()),
                application_insights: self.application_insights.as_ref().map(ToString::to_string),
                container_registry: self.container_registry.as_ref().map(ToString::to_string),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// What the controller knows about the resource group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceGroupState {
    /// Not read (it is read only when the workspace is missing).
    Unknown,
    /// Exists.
    Exists,
    /// Does not exist.
    Missing,
}

/// A long-running operation recorded in status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingOp {
    /// What it does.
    pub kind: OperationKind,
    /// The resumable poller.
    pub handle: LroHandle,
}

/// Kinds of long-running operations the workspace controller starts (the `kind` stored in status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum OperationKind {
    /// Workspace PUT.
    CreateWorkspace,
    /// Workspace PATCH.
    UpdateWorkspace,
    /// Workspace DELETE.
    DeleteWorkspace,
    /// Recovery of a soft-deleted workspace (annotation `azml.dev/recover-soft-deleted`; [`super::soft_delete`]).
    RecoverWorkspace,
    /// Recovery of a soft-deleted workspace in order to purge it (annotation `azml.dev/purge-soft-deleted`): once it
    /// is back, its owner tag decides whether it is purged.
    RecoverToPurge,
    /// `DELETE ?forceToPurge=true` of a recovered workspace, before it is created afresh.
    PurgeWorkspace,
}

impl OperationKind {
    /// The name stored in `status.pendingOperation.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::CreateWorkspace => "CreateWorkspace",
            OperationKind::UpdateWorkspace => "UpdateWorkspace",
            OperationKind::DeleteWorkspace => "DeleteWorkspace",
            OperationKind::RecoverWorkspace => "RecoverWorkspace",
            OperationKind::RecoverToPurge => "RecoverToPurge",
            OperationKind::PurgeWorkspace => "PurgeWorkspace",
        }
    }

    /// Parses a stored kind.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::CreateWorkspace,
            Self::UpdateWorkspace,
            Self::DeleteWorkspace,
            Self::RecoverWorkspace,
            Self::RecoverToPurge,
            Self::PurgeWorkspace,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What the controller observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// An operation in flight, from status. When set, nothing else was read.
    pub pending: Option<PendingOp>,
    /// The workspace as ARM returned it; `None` when it does not exist.
    pub workspace: Option<Workspace>,
    /// The resource group, read only when the workspace is missing.
    pub resource_group: ResourceGroupState,
    /// `status.observedGeneration` before this reconcile: tells a spec change from drift in Azure.
    pub last_observed_generation: Option<i64>,
    /// Whether the custom resource another owner tag names still exists (read only when the workspace carries one).
    pub foreign_owner: ForeignOwner,
}

/// What the controller knows of the custom resource named by another resource's owner tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForeignOwner {
    /// Not looked up: no foreign owner tag, or not read yet. Adoption is refused (fail closed).
    #[default]
    Unknown,
    /// An MlWorkspace of that namespace and name exists (the same uid, or a later incarnation that takes its
    /// workspace back): the workspace is owned elsewhere and is never adopted.
    Live,
    /// No such MlWorkspace exists (or the tag is not an operator's `<namespace>/<name>/<uid>`): adoptable with
    /// `azml.dev/adopt: "true"`.
    Gone,
}

/// A mutable workspace property the controller keeps in line with the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Field {
    /// `properties.friendlyName`.
    FriendlyName,
    /// `properties.description`.
    Description,
    /// `tags` (including the owner tag).
    Tags,
    /// `properties.publicNetworkAccess`.
    PublicNetworkAccess,
    /// `properties.applicationInsights`.
    ApplicationInsights,
    /// `properties.containerRegistry`.
    ContainerRegistry,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::FriendlyName => "friendlyName",
            Field::Description => "description",
            Field::Tags => "tags",
            Field::PublicNetworkAccess => "publicNetworkAccess",
            Field::ApplicationInsights => "applicationInsights",
            Field::ContainerRegistry => "containerRegistry",
        })
    }
}

/// Why a PATCH is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum UpdateCause {
    /// The spec changed since the last reconcile.
    SpecChanged,
    /// The spec did not change: someone changed Azure.
    Drift,
    /// The workspace is adopted (`azml.dev/adopt`): the owner tag is added.
    Adopt {
        /// The owner tag found, if any.
        previous_owner: Option<String>,
    },
    /// The workspace was created by an earlier resource of the same namespace and name: taken back.
    Reclaim {
        /// The earlier uid.
        previous_uid: String,
    },
}

/// One step the controller takes (or, when paused or stalled, would take / cannot take).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Action {
    /// Poll the operation in flight once.
    PollOperation {
        /// Its kind.
        kind: OperationKind,
    },
    /// Create the resource group (PUT).
    CreateResourceGroup {
        /// Its id.
        id: String,
        /// Its location (the workspace's).
        location: String,
    },
    /// Create (or re-create after a failed provisioning) the workspace (PUT).
    CreateWorkspace {
        /// Its id.
        id: String,
    },
    /// Update the changed mutable properties (PATCH with only those fields).
    UpdateWorkspace {
        /// The changed fields.
        fields: Vec<Field>,
        /// Why.
        cause: UpdateCause,
        /// The PATCH body.
        #[serde(skip)]
        patch: Box<WorkspaceUpdate>,
    },
}

impl crate::reconciler::plan::PlanAction for Action {}

/// The workspace's plan: THE plan shape ([`crate::reconciler::plan::Plan`]) of its actions. What it waits for
/// (a provisioning state the controller did not start) is in `waiting`, what blocks it in `stall`; `azml.dev/paused`
/// is the executor's business: the plan says what would be done.
pub type Plan = crate::reconciler::plan::Plan<Action>;

impl Action {
    /// Whether executing this action writes to Azure.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Action::CreateResourceGroup { .. } | Action::CreateWorkspace { .. } | Action::UpdateWorkspace { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::PollOperation { kind } => write!(f, "poll the pending {} operation", kind.as_str()),
            Action::CreateResourceGroup { id, location } => write!(f, "create resource group {id} in {location}"),
            Action::CreateWorkspace { id } => write!(f, "create workspace {id}"),
            Action::UpdateWorkspace { fields, cause, .. } => {
                let names: Vec<String> = fields.iter().map(ToString::to_string).collect();
                let why = match cause {
                    UpdateCause::SpecChanged => "spec changed".to_owned(),
                    UpdateCause::Drift => "changed in Azure".to_owned(),
                    UpdateCause::Adopt { previous_owner: Some(o) } => format!("adopt from owner {o}"),
                    UpdateCause::Adopt { previous_owner: None } => "adopt unowned workspace".to_owned(),
                    UpdateCause::Reclaim { previous_uid } => {
                        format!("reclaim from previous incarnation {previous_uid}")
                    }
                };
                write!(f, "update workspace ({why}): {}", names.join(", "))
            }
        }
    }
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn same_id(desired: &ResourceId, observed: Option<&str>) -> bool {
    observed.is_some_and(|o| eq_ci(desired.as_str(), o.trim_end_matches('/')))
}

/// The actions that bring Azure to the desired state. Pure; see the module docs.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    if let Some(pending) = &observed.pending {
        // The operation in flight is the only thing to do: issuing another write would race it.
        return Plan::of(vec![Action::PollOperation { kind: pending.kind }]);
    }
    let planned = match &observed.workspace {
        None => plan_missing(desired, observed),
        Some(ws) => plan_existing(desired, observed, ws),
    };
    planned.unwrap_or_else(|blocked| blocked)
}

fn plan_missing(desired: &Desired, observed: &Observed) -> Result<Plan, Plan> {
    let rg = &desired.workspace.resource_group;
    let mut actions = Vec::new();
    if observed.resource_group == ResourceGroupState::Missing {
        if !desired.create_resource_group {
            return Err(Plan::stalled(
                Reason::ResourceGroupMissing,
                format!("resource group {} does not exist and spec.createResourceGroup is false", rg.name.as_str()),
            ));
        }
        actions.push(Action::CreateResourceGroup { id: rg.id(), location: desired.location.clone() });
    }
    actions.push(Action::CreateWorkspace { id: desired.workspace.id() });
    Ok(Plan::of(actions))
}

/// The plan for a workspace that exists; `Err` for a plan that only stalls or waits.
fn plan_existing(desired: &Desired, observed: &Observed, ws: &Workspace) -> Result<Plan, Plan> {
    let tags = ws.tags.clone().unwrap_or_default();
    let ownership = desired.owner.classify(owner_tag_value(&tags));
    let claim = match ownership {
        Ownership::Ours => None,
        Ownership::PreviousIncarnation { uid } => Some(UpdateCause::Reclaim { previous_uid: uid }),
        // Adoption takes only what nobody owns: never the workspace of another live MlWorkspace.
        Ownership::Foreign(owner) if observed.foreign_owner != ForeignOwner::Gone => {
            let why = match observed.foreign_owner {
                ForeignOwner::Live => "which still exists",
                _ => "which could not be checked",
            };
            return Err(Plan::stalled(
                Reason::OwnedElsewhere,
                format!(
                    "workspace {} is owned by MlWorkspace {owner} ({OWNER_TAG} tag), {why}; it is never adopted while its owner exists: choose another azureName, or delete that MlWorkspace (deletionPolicy Retain) first",
                    desired.workspace.name.as_str()
                ),
            ));
        }
        Ownership::Foreign(owner) if desired.adopt => Some(UpdateCause::Adopt { previous_owner: Some(owner) }),
        Ownership::Unowned if desired.adopt => Some(UpdateCause::Adopt { previous_owner: None }),
        Ownership::Foreign(owner) => {
            return Err(Plan::stalled(
                Reason::AlreadyExists,
                format!(
                    "workspace {} already exists and is owned by {owner}, which no longer exists; set annotation {ANNOTATION_ADOPT}: \"true\" to take it over",
                    desired.workspace.name.as_str()
                ),
            ));
        }
        Ownership::Unowned => {
            return Err(Plan::stalled(
                Reason::AlreadyExists,
                format!(
                    "workspace {} already exists and has no {OWNER_TAG} tag (not created by this operator); set annotation {ANNOTATION_ADOPT}: \"true\" to take it over",
                    desired.workspace.name.as_str()
                ),
            ));
        }
    };
    let props = &ws.properties;
    if let Some(location) = &ws.location
        && !eq_ci(&normalise_location(location), &normalise_location(&desired.location))
    {
        return Err(immutable("location", &desired.location, location));
    }
    if props.storage_account.is_some() && !same_id(&desired.storage_account, props.storage_account.as_deref()) {
        return Err(immutable(
            "storageAccount",
            desired.storage_account.as_str(),
            props.storage_account.as_deref().unwrap_or_default(),
        ));
    }
    if props.key_vault.is_some() && !same_id(&desired.key_vault, props.key_vault.as_deref()) {
        return Err(immutable("keyVault", desired.key_vault.as_str(), props.key_vault.as_deref().unwrap_or_default()));
    }
    match &props.provisioning_state {
        Some(ProvisioningState::Failed) | Some(ProvisioningState::Canceled) if claim.is_none() => {
            // A PUT is how ARM resources recover from a failed provisioning.
            return Ok(Plan::of(vec![Action::CreateWorkspace { id: desired.workspace.id() }]));
        }
        Some(state) if !state.is_terminal() => {
            return Err(Plan::waiting_for(format!("Azure reports provisioning state {state:?}")));
        }
        _ => {}
    }
    let (fields, patch) = diff(desired, ws, &tags);
    if fields.is_empty() {
        return Ok(Plan::default());
    }
    let cause = claim.unwrap_or_else(|| {
        if observed.last_observed_generation.is_some() && observed.last_observed_generation == desired.generation {
            UpdateCause::Drift
        } else {
            UpdateCause::SpecChanged
        }
    });
    Ok(Plan::of(vec![Action::UpdateWorkspace { fields, cause, patch: Box::new(patch) }]))
}

/// "West Europe" and "westeurope" are the same region.
fn normalise_location(l: &str) -> String {
    l.chars().filter(|c| !c.is_whitespace()).collect()
}

fn immutable(field: &str, desired: &str, actual: &str) -> Plan {
    Plan::stalled(
        Reason::InvalidSpec,
        format!(
            "spec.{field} is {desired} but the workspace in Azure has {actual}, which Azure cannot change; restore the value or delete the workspace"
        ),
    )
}

/// The changed mutable fields and a PATCH holding exactly those.
fn diff(desired: &Desired, ws: &Workspace, observed_tags: &BTreeMap<String, String>) -> (Vec<Field>, WorkspaceUpdate) {
    let props = &ws.properties;
    let mut fields = Vec::new();
    let mut update = WorkspaceUpdateProperties::default();
    if let Some(name) = &desired.friendly_name
        && props.friendly_name.as_ref() != Some(name)
    {
        fields.push(Field::FriendlyName);
        update.friendly_name = Some(name.clone());
    }
    if let Some(description) = &desired.description
        && props.description.as_ref() != Some(description)
    {
        fields.push(Field::Description);
        update.description = Some(description.clone());
    }
    let tags_differ = observed_tags != &desired.tags;
    if tags_differ {
        fields.push(Field::Tags);
    }
    let pna = desired.public_network_access.as_str();
    // Azure reports Enabled when the property was never set.
    if !eq_ci(props.public_network_access.as_deref().unwrap_or(PublicNetworkAccess::Enabled.as_str()), pna) {
        fields.push(Field::PublicNetworkAccess);
        update.public_network_access = Some(pna.to_owned());
    }
    if let Some(id) = &desired.application_insights
        && !same_id(id, props.application_insights.as_deref())
    {
        fields.push(Field::ApplicationInsights);
        update.application_insights = Some(id.to_string());
    }
    if let Some(id) = &desired.container_registry
        && !same_id(id, props.container_registry.as_deref())
    {
        fields.push(Field::ContainerRegistry);
        update.container_registry = Some(id.to_string());
    }
    let properties = (update != WorkspaceUpdateProperties::default()).then_some(update);
    let patch = WorkspaceUpdate { tags: tags_differ.then(|| desired.tags.clone()), properties, ..Default::default() };
    (fields, patch)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
