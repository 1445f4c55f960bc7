//! `spec.exports` of MlWorkspace: a ConfigMap of the workspace's facts and, opt-in per item, a Secret of its
//! listKeys values, for applications in its namespace that hold no Azure rights.
//!
//! - Pure builders ([`desired_config_map`], [`desired_secret`], [`secret_fingerprint`]) decide the content; the
//!   I/O ([`export_workspace`]) writes it. Both objects are created with an owner reference to the workspace
//!   (deleted with it by the garbage collector) and the label `app.kubernetes.io/managed-by: azml-operator`; an
//!   object of that name the operator did not create is never touched (condition `Exported`, reason
//!   `ConfigMapNotOwned` / `SecretNotOwned`, one Warning event).
//! - The ConfigMap is rebuilt from what the workspace GET of the same reconcile returned, so it follows a move at
//!   once. Rewritten only when its data differs.
//! - The Secret costs a `listKeys` (a POST, counted as a write by ARM) only when what its values depend on changed:
//!   its fingerprint (workspace id, dependency ids, items, the storage key in use and its creation time, the last
//!   key resync) is kept in the Secret's annotation `azml.dev/exported-from`, so a steady state makes no call. Azure
//!   changes a workspace's listKeys values only at creation and at resyncKeys (storage key, registry password), both
//!   of which change the fingerprint; annotate `azml.dev/resync-keys` after regenerating a registry password.
//! - Values never reach logs, events, status or errors; status keeps the objects' names only.
//! - Removing `spec.exports` (or renaming an object) deletes the object the operator owns.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret as KubeSecret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::api::conditions::{self, events, reasons};
use crate::api::v1alpha1::{
    EndpointSecretExport, EndpointSecretItem, ExportsStatus, MlOnlineEndpoint, MlOnlineEndpointStatus, MlWorkspace,
    MlWorkspaceStatus, WorkspaceSecretExport, WorkspaceSecretItem, config_keys, endpoint_config_keys,
};
use crate::azure::OnlineEndpointRef;
use crate::azure::online_endpoints::EndpointKeys;
use crate::azure::workspaces::{Workspace, WorkspaceKeys};
use crate::azure::{ArmClient, WorkspaceRef};
use crate::reconciler::status::set_condition;

/// Annotation on the exported Secret: the fingerprint of the inputs its values were read for.
pub const FINGERPRINT_ANNOTATION: &str = "azml.dev/exported-from";
/// Label on the exported objects.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The ConfigMap's data: the workspace's facts, as Azure reported them in this reconcile.
pub fn desired_config_map(ws_ref: &WorkspaceRef, workspace: &Workspace) -> BTreeMap<String, String> {
    let p = &workspace.properties;
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            data.insert(k.to_owned(), v.to_owned());
        }
    };
    let id = workspace.id.clone().unwrap_or_else(|| ws_ref.id());
    put(config_keys::WORKSPACE_NAME, Some(ws_ref.name.as_ref()));
    put(config_keys::RESOURCE_ID, Some(&id));
    put(config_keys::SUBSCRIPTION_ID, Some(&ws_ref.subscription().to_string()));
    put(config_keys::RESOURCE_GROUP, Some(ws_ref.resource_group.name.as_str()));
    put(config_keys::LOCATION, workspace.location.as_deref());
    put(config_keys::WORKSPACE_ID, p.workspace_id.as_deref());
    put(config_keys::DISCOVERY_URL, p.discovery_url.as_deref());
    put(config_keys::MLFLOW_TRACKING_URI, p.ml_flow_tracking_uri.as_deref());
    put(config_keys::STORAGE_ACCOUNT_ID, p.storage_account.as_deref());
    put(config_keys::KEY_VAULT_ID, p.key_vault.as_deref());
    put(config_keys::CONTAINER_REGISTRY_ID, p.container_registry.as_deref());
    put(config_keys::APPLICATION_INSIGHTS_ID, p.application_insights.as_deref());
    data
}

/// The Secret's data: the listed items Azure has a value for (others are left out).
pub fn desired_secret(items: &[WorkspaceSecretItem], keys: &WorkspaceKeys) -> BTreeMap<String, ByteString> {
    let registry = keys.container_registry_credentials.as_ref();
    let password = |name: &str| {
        registry
            .and_then(|r| r.passwords.iter().find(|p| p.name.as_deref() == Some(name)))
            .and_then(|p| p.value.as_ref())
            .map(|v| v.expose().to_owned())
    };
    let mut data = BTreeMap::new();
    for item in items {
        let value = match item {
            WorkspaceSecretItem::UserStorageKey => keys.user_storage_key.as_ref().map(|k| k.expose().to_owned()),
            WorkspaceSecretItem::AppInsightsInstrumentationKey => {
                keys.app_insights_instrumentation_key.as_ref().map(|k| k.expose().to_owned())
            }
            WorkspaceSecretItem::ContainerRegistryUsername => registry.and_then(|r| r.username.clone()),
            WorkspaceSecretItem::ContainerRegistryPassword => password("password"),
            WorkspaceSecretItem::ContainerRegistryPassword2 => password("password2"),
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            data.insert(item.key().to_owned(), ByteString(v.into_bytes()));
        }
    }
    data
}

/// Hex SHA-256 of everything the Secret's values depend on (no secret among it).
pub fn secret_fingerprint(
    workspace: &Workspace,
    export: &WorkspaceSecretExport,
    status: Option<&MlWorkspaceStatus>,
) -> String {
    let p = &workspace.properties;
    let keys = status.and_then(|s| s.storage_keys.as_ref());
    let used = keys.and_then(|k| k.workspace_uses_key.clone());
    let created = used.as_ref().and_then(|u| keys.and_then(|k| k.key_creation_time.get(u).cloned()));
    let mut items: Vec<&str> = export.items.iter().map(|i| i.key()).collect();
    items.sort_unstable();
    let lower = |v: &Option<String>| v.as_deref().unwrap_or("-").to_ascii_lowercase();
    let parts = [
        lower(&workspace.id),
        lower(&p.workspace_id),
        lower(&p.storage_account),
        lower(&p.container_registry),
        lower(&p.application_insights),
        lower(&p.system_datastores_auth_mode),
        items.join(","),
        used.unwrap_or_default(),
        created.unwrap_or_default(),
        keys.and_then(|k| k.last_resync_time.as_ref()).map(|t| t.0.to_string()).unwrap_or_default(),
    ];
    let digest = ring::digest::digest(&ring::digest::SHA256, parts.join("\n").as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What the export step decided: the `Exported` condition and the names written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportsOutcome {
    /// (ok, reason, message); `None` removes the condition (nothing to export).
    pub condition: Option<(bool, &'static str, String)>,
    /// `status.exports`.
    pub exports: Option<ExportsStatus>,
    /// Events to publish on the owner: (type, reason, note); notes name objects, never values.
    pub events: Vec<(EventType, &'static str, String)>,
}

impl ExportsOutcome {
    /// Writes the outcome into the workspace's status.
    pub fn apply(&self, status: &mut MlWorkspaceStatus, generation: Option<i64>, now: &Time) {
        self.apply_to(&mut status.exports, &mut status.conditions, generation, now);
    }

    /// Writes the outcome into a status's `exports` and conditions.
    pub fn apply_to(
        &self,
        exports: &mut Option<ExportsStatus>,
        conds: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
        generation: Option<i64>,
        now: &Time,
    ) {
        exports.clone_from(&self.exports);
        match &self.condition {
            Some((ok, reason, message)) => {
                set_condition(conds, conditions::EXPORTED, *ok, reason, message, generation, now)
            }
            None => conds.retain(|c| c.type_ != conditions::EXPORTED),
        }
    }
}

/// How writing one object went.
enum Write {
    Written,
    Unchanged,
    NotOwned,
}

fn owned(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// The data patch that makes `have` equal `want` (keys not wanted are removed).
fn data_patch<V: serde::Serialize + PartialEq>(
    have: Option<&BTreeMap<String, V>>,
    want: &BTreeMap<String, V>,
) -> Value {
    let mut patch = serde_json::Map::new();
    for k in have.into_iter().flat_map(|h| h.keys()).filter(|k| !want.contains_key(*k)) {
        patch.insert(k.clone(), Value::Null);
    }
    for (k, v) in want {
        patch.insert(k.clone(), serde_json::to_value(v).unwrap_or(Value::Null));
    }
    Value::Object(patch)
}

/// A namespaced custom resource that owns exports (MlWorkspace, MlOnlineEndpoint).
pub trait Exporter: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> {}
impl<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>> Exporter for K {}

fn new_meta<K: Exporter>(owner: &K, name: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.to_owned()),
        namespace: owner.namespace(),
        owner_references: owner.controller_owner_ref(&()).map(|r| vec![r]),
        labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), "azml-operator".to_owned())])),
        ..Default::default()
    }
}

async fn write_config_map<K: Exporter>(
    client: &Client,
    ws: &K,
    name: &str,
    want: BTreeMap<String, String>,
) -> Result<Write, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ws.namespace().unwrap_or_default());
    match api.get_opt(name).await? {
        None => {
            let cm = ConfigMap { metadata: new_meta(ws, name), data: Some(want), ..Default::default() };
            api.create(&PostParams::default(), &cm).await?;
            Ok(Write::Written)
        }
        Some(cm) if !owned(&cm.metadata, &ws.uid().unwrap_or_default()) => Ok(Write::NotOwned),
        Some(cm) if cm.data.as_ref() == Some(&want) => Ok(Write::Unchanged),
        Some(cm) => {
            let patch = json!({"metadata": {"resourceVersion": cm.resource_version()}, "data": data_patch(cm.data.as_ref(), &want)});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok(Write::Written)
        }
    }
}

/// Writes the Secret: `fetch` (a `listKeys`) runs only when the Secret is missing or its fingerprint differs.
async fn write_secret<K: Exporter>(
    client: &Client,
    ws: &K,
    name: &str,
    fingerprint: &str,
    fetch: impl AsyncFnOnce() -> Result<BTreeMap<String, ByteString>, crate::azure::ArmError>,
) -> Result<Write, ExportError> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), &ws.namespace().unwrap_or_default());
    let existing = api.get_opt(name).await.map_err(ExportError::Kube)?;
    if let Some(s) = &existing {
        if !owned(&s.metadata, &ws.uid().unwrap_or_default()) {
            return Ok(Write::NotOwned);
        }
        if s.annotations().get(FINGERPRINT_ANNOTATION).map(String::as_str) == Some(fingerprint) {
            return Ok(Write::Unchanged);
        }
    }
    let want = fetch().await.map_err(ExportError::Arm)?;
    let annotations = BTreeMap::from([(FINGERPRINT_ANNOTATION.to_owned(), fingerprint.to_owned())]);
    match existing {
        None => {
            let mut meta = new_meta(ws, name);
            meta.annotations = Some(annotations);
            let secret =
                KubeSecret { metadata: meta, data: Some(want), type_: Some("Opaque".into()), ..Default::default() };
            api.create(&PostParams::default(), &secret).await.map_err(ExportError::Kube)?;
        }
        Some(s) => {
            let patch = json!({
                "metadata": {"resourceVersion": s.resource_version(), "annotations": annotations},
                "data": data_patch(s.data.as_ref(), &want),
            });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(ExportError::Kube)?;
        }
    }
    Ok(Write::Written)
}

/// Why an export could not be written (never carries a value).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A Kubernetes call failed.
    #[error("{0}")]
    Kube(kube::Error),
    /// listKeys failed.
    #[error("list workspace keys: {0}")]
    Arm(crate::azure::ArmError),
}

/// Deletes the object `name` of kind `K` when the workspace owns it.
async fn delete_owned<K, O: Exporter>(client: &Client, ws: &O, name: &str) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &ws.namespace().unwrap_or_default());
    if let Some(obj) = api.get_opt(name).await?
        && owned(obj.meta(), &ws.uid().unwrap_or_default())
    {
        api.delete(name, &DeleteParams::default()).await?;
        info!(object = %name, "deleted an export no longer declared");
    }
    Ok(())
}

/// The ConfigMap's data of an online endpoint: its facts as this reconcile saw them.
pub fn desired_endpoint_config_map(
    ep_ref: &OnlineEndpointRef,
    ep: &MlOnlineEndpoint,
    status: &MlOnlineEndpointStatus,
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            data.insert(k.to_owned(), v.to_owned());
        }
    };
    put(endpoint_config_keys::ENDPOINT_NAME, Some(ep_ref.name.as_ref()));
    put(endpoint_config_keys::RESOURCE_ID, Some(status.resource_id.clone().unwrap_or_else(|| ep_ref.id()).as_str()));
    put(endpoint_config_keys::SCORING_URI, status.scoring_uri.as_deref());
    put(endpoint_config_keys::SWAGGER_URI, status.swagger_uri.as_deref());
    put(endpoint_config_keys::AUTH_MODE, Some(ep.spec.auth_mode.as_str()));
    put(endpoint_config_keys::WORKSPACE_NAME, Some(ep_ref.workspace.name.as_ref()));
    put(endpoint_config_keys::SUBSCRIPTION_ID, Some(&ep_ref.workspace.subscription().to_string()));
    put(endpoint_config_keys::RESOURCE_GROUP, Some(ep_ref.workspace.resource_group.name.as_str()));
    data
}

/// The Secret's data of an online endpoint: the listed keys Azure has.
pub fn desired_endpoint_secret(items: &[EndpointSecretItem], keys: &EndpointKeys) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::new();
    for item in items {
        let value = match item {
            EndpointSecretItem::PrimaryKey => keys.primary_key.as_ref(),
            EndpointSecretItem::SecondaryKey => keys.secondary_key.as_ref(),
        };
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            data.insert(item.key().to_owned(), ByteString(v.expose().as_bytes().to_vec()));
        }
    }
    data
}

/// Hex SHA-256 of what an endpoint's exported keys depend on: the endpoint, the items, the last regeneration.
pub fn endpoint_secret_fingerprint(
    ep_ref: &OnlineEndpointRef,
    export: &EndpointSecretExport,
    status: &MlOnlineEndpointStatus,
) -> String {
    let mut items: Vec<&str> = export.items.iter().map(|i| i.key()).collect();
    items.sort_unstable();
    let keys = status.keys.as_ref();
    let parts = [
        status.resource_id.clone().unwrap_or_else(|| ep_ref.id()).to_ascii_lowercase(),
        items.join(","),
        keys.and_then(|k| k.last_regenerate_request.clone()).unwrap_or_default(),
        keys.and_then(|k| k.last_regenerate_time.as_ref()).map(|t| t.0.to_string()).unwrap_or_default(),
    ];
    let digest = ring::digest::digest(&ring::digest::SHA256, parts.join("\n").as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The export step of a converged online endpoint (after its key step, whose facts `status` holds).
pub async fn export_endpoint(
    client: &Client,
    ep: &MlOnlineEndpoint,
    ep_ref: &OnlineEndpointRef,
    arm: &ArmClient,
    status: &MlOnlineEndpointStatus,
) -> ExportsOutcome {
    let exports = ep.spec.exports.clone().unwrap_or_default();
    let request = ExportRequest {
        config_map: exports
            .config_map
            .as_ref()
            .map(|c| (c.name.clone(), desired_endpoint_config_map(ep_ref, ep, status))),
        secret: exports.secret.as_ref().map(|e| {
            let fetch = async || {
                let keys = arm.list_online_endpoint_keys(ep_ref).await?;
                Ok(desired_endpoint_secret(&e.items, &keys))
            };
            (e.name.clone(), endpoint_secret_fingerprint(ep_ref, e, status), fetch)
        }),
    };
    let previous = status.exports.clone().unwrap_or_default();
    let condition = status.conditions.iter().find(|c| c.type_ == conditions::EXPORTED);
    export(client, ep, request, &previous, condition).await
}

/// What one resource asks to export, resolved: the ConfigMap's data, the Secret's name, fingerprint and fetcher.
pub struct ExportRequest<F> {
    /// `(name, data)` of the ConfigMap.
    pub config_map: Option<(String, BTreeMap<String, String>)>,
    /// `(name, fingerprint, fetch)` of the Secret.
    pub secret: Option<(String, String, F)>,
}

/// The export step of a Ready workspace: writes (or removes) the ConfigMap and Secret of `spec.exports`. Never fails
/// the reconcile: a problem is reported in the outcome's condition (and a Warning event, in `events`, when it is
/// new). `status`: the workspace's status with this reconcile's storage-key facts.
pub async fn export_workspace(
    client: &Client,
    ws: &MlWorkspace,
    ws_ref: &WorkspaceRef,
    arm: &ArmClient,
    workspace: &Workspace,
    status: &MlWorkspaceStatus,
) -> ExportsOutcome {
    let exports = ws.spec.exports.clone().unwrap_or_default();
    let request = ExportRequest {
        config_map: exports.config_map.as_ref().map(|c| (c.name.clone(), desired_config_map(ws_ref, workspace))),
        secret: exports.secret.as_ref().map(|e| {
            let fetch = async || {
                let keys = arm.list_workspace_keys(ws_ref).await?;
                Ok(desired_secret(&e.items, &keys))
            };
            (e.name.clone(), secret_fingerprint(workspace, e, Some(status)), fetch)
        }),
    };
    let previous = status.exports.clone().unwrap_or_default();
    let condition = status.conditions.iter().find(|c| c.type_ == conditions::EXPORTED);
    export(client, ws, request, &previous, condition).await
}

/// Writes (or removes) the exports of `owner`: deletes the objects it owned under names no longer declared
/// (`previous`), writes the ConfigMap and the Secret, and reports. `condition`: the current `Exported` condition
/// (a Warning is published only for a problem it does not already report).
pub async fn export<K, F>(
    client: &Client,
    owner: &K,
    request: ExportRequest<F>,
    previous: &ExportsStatus,
    condition: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> ExportsOutcome
where
    K: Exporter,
    F: AsyncFnOnce() -> Result<BTreeMap<String, ByteString>, crate::azure::ArmError>,
{
    let mut done = ExportsStatus::default();
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    let mut written: Vec<String> = Vec::new();
    let namespace = owner.namespace().unwrap_or_default();
    let kind = K::kind(&()).to_string();
    let forbidden = |what: &str| {
        format!(
            "the operator may not manage {what} in namespace {namespace}: grant its service account get, create, patch and delete on {what} there (see the README, Exports)"
        )
    };
    let cm_name = request.config_map.as_ref().map(|c| c.0.clone());
    let secret_name = request.secret.as_ref().map(|s| s.0.clone());
    if let Some(old) = previous.config_map.as_ref().filter(|o| cm_name.as_ref() != Some(*o))
        && let Err(e) = delete_owned::<ConfigMap, K>(client, owner, old).await
    {
        warn!(error = %e, "cannot delete the previous exported ConfigMap");
    }
    if let Some(old) = previous.secret.as_ref().filter(|o| secret_name.as_ref() != Some(*o))
        && let Err(e) = delete_owned::<KubeSecret, K>(client, owner, old).await
    {
        warn!(error = %e, "cannot delete the previous exported Secret");
    }
    let declared = request.config_map.is_some() || request.secret.is_some();

    if let Some((name, data)) = request.config_map {
        match write_config_map(client, owner, &name, data).await {
            Ok(Write::Written) => {
                written.push(format!("ConfigMap {name}"));
                done.config_map = Some(name);
            }
            Ok(Write::Unchanged) => done.config_map = Some(name),
            Ok(Write::NotOwned) => problems.push((
                reasons::CONFIG_MAP_NOT_OWNED,
                format!(
                    "spec.exports.configMap.name: ConfigMap {name} exists and was not created by azml-operator for this {kind}; it is left untouched (choose another name or delete it)"
                ),
            )),
            Err(kube::Error::Api(e)) if e.code == 403 => problems.push((reasons::NOT_PERMITTED, forbidden("configmaps"))),
            Err(e) => problems.push((reasons::TRANSIENT_ERROR, format!("writing ConfigMap {name}: {e}"))),
        }
    }
    if let Some((name, fingerprint, fetch)) = request.secret {
        match write_secret(client, owner, &name, &fingerprint, fetch).await {
            Ok(Write::Written) => {
                written.push(format!("Secret {name}"));
                done.secret = Some(name);
            }
            Ok(Write::Unchanged) => done.secret = Some(name),
            Ok(Write::NotOwned) => problems.push((
                reasons::SECRET_NOT_OWNED,
                format!(
                    "spec.exports.secret.name: Secret {name} exists and was not created by azml-operator for this {kind}; it is left untouched (choose another name or delete it)"
                ),
            )),
            Err(ExportError::Kube(kube::Error::Api(e))) if e.code == 403 => {
                problems.push((reasons::NOT_PERMITTED, forbidden("secrets")))
            }
            Err(e) => problems
                .push((reasons::TRANSIENT_ERROR, crate::reconciler::error::scrub(&format!("writing Secret {name}: {e}")))),
        }
    }

    let mut published = Vec::new();
    if !written.is_empty() {
        let note = format!("Exported {}", written.join(" and "));
        info!(%note, "exports written");
        published.push((EventType::Normal, events::EXPORTED, note));
    }
    let condition = if !declared {
        None
    } else if let Some((reason, _)) = problems.first() {
        let message = problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ");
        let known = condition.is_some_and(|c| c.reason == *reason && c.message == message);
        if !known {
            published.push((EventType::Warning, *reason, message.clone()));
        }
        Some((false, *reason, message))
    } else {
        let names: Vec<String> = [
            done.config_map.as_ref().map(|n| format!("ConfigMap {n}")),
            done.secret.as_ref().map(|n| format!("Secret {n}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        Some((true, reasons::EXPORTED, format!("{} current", names.join(" and "))))
    };
    let exports = (done != ExportsStatus::default()).then_some(done);
    ExportsOutcome { condition, exports, events: published }
}

#[cfg(test)]
mod tests;
