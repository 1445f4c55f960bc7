//! Kinds that live in a workspace (MlOnlineEndpoint, MlCompute): their MlWorkspace (same namespace,
//! `spec.workspaceRef.name`), its readiness, the owner reference to it, the watch that wakes them when it changes,
//! and the deletion of them all when the workspace goes. Reads and writes Kubernetes objects only; no kind's
//! controller is imported (the workspace's cleanup deletes its children through [`delete_children`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::error::Error;
use super::watch_cache::{Cached, Touched, WakeIndex};
use super::{ControllerConfig, Deletion, Kind, Reconciler, Shell};
use crate::api::conditions;
use crate::api::v1alpha1::{MlCompute, MlOnlineEndpoint, MlWorkspace};
use crate::azure::ids::{IdError, ResourceGroupName, SubscriptionId, WorkspaceName};
use crate::azure::{ResourceGroupRef, WorkspaceRef};
use crate::metrics::ControllerScope;

/// A kind whose objects belong to an MlWorkspace of their namespace.
pub trait WorkspaceChild: Kind {
    /// Step name of listing them (in error messages).
    const LIST_STEP: &'static str;
    /// Step name of deleting one (in error messages).
    const DELETE_STEP: &'static str;
    /// `spec.workspaceRef.name`.
    fn workspace_name(&self) -> &str;
}

impl WorkspaceChild for MlOnlineEndpoint {
    const LIST_STEP: &'static str = "list online endpoints";
    const DELETE_STEP: &'static str = "delete online endpoint";
    fn workspace_name(&self) -> &str {
        &self.spec.workspace_ref.name
    }
}

impl WorkspaceChild for MlCompute {
    const LIST_STEP: &'static str = "list MlComputes";
    const DELETE_STEP: &'static str = "delete MlCompute";
    fn workspace_name(&self) -> &str {
        &self.spec.workspace_ref.name
    }
}

/// The steps of a kind that lives in a workspace. Its controller state is the shell itself (`Shell<K>`: such a kind
/// remembers nothing else between reconciles), and its [`Reconciler`] comes with these steps: the shell's
/// finalizer state machine and reporting, plus the watch of its workspace ([`watch_workspaces`]), so a workspace
/// that becomes Ready, changes or goes re-evaluates its children.
pub trait ChildReconciler: WorkspaceChild {
    /// Observe → plan → apply → report for a live object.
    fn apply(shell: &Shell<Self>, obj: &Self) -> impl Future<Output = Result<Requeue, Error>> + Send;

    /// Deletion with a deletion policy that changes Azure, not paused.
    fn cleanup(shell: &Shell<Self>, obj: &Self) -> impl Future<Output = Result<Deletion, Error>> + Send;

    /// Right before the finalizer is removed.
    fn before_finalizer_removed(shell: &Shell<Self>, obj: &Self) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (shell, obj);
        async { Ok(()) }
    }
}

impl<K: ChildReconciler> Reconciler for Shell<K> {
    type Kind = K;

    fn shell(&self) -> &Shell<K> {
        self
    }

    fn apply(&self, obj: &K) -> impl Future<Output = Result<Requeue, Error>> + Send {
        K::apply(self, obj)
    }

    fn cleanup(&self, obj: &K) -> impl Future<Output = Result<Deletion, Error>> + Send {
        K::cleanup(self, obj)
    }

    fn before_finalizer_removed(&self, obj: &K) -> impl Future<Output = Result<(), Error>> + Send {
        K::before_finalizer_removed(self, obj)
    }

    fn watch(
        &self,
        controller: Controller<Cached<K>>,
        _namespace: Option<&str>,
        _scope: Option<ControllerScope>,
    ) -> Controller<Cached<K>> {
        watch_workspaces(controller, &self.config, self.index.clone())
    }
}

/// A workspace spec value that cannot address Azure (the workspace itself stalls on it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("workspace: spec.{field}: {source}")]
pub struct InvalidWorkspace {
    /// The workspace's spec field.
    pub field: &'static str,
    /// The id layer's verdict.
    #[source]
    pub source: IdError,
}

/// The Azure workspace `ws` names (its subscription, resource group and Azure name, validated by the id layer).
pub fn workspace_ref(ws: &MlWorkspace) -> Result<WorkspaceRef, InvalidWorkspace> {
    let invalid = |field| move |source| InvalidWorkspace { field, source };
    let subscription = SubscriptionId::new(&ws.spec.subscription_id).map_err(invalid("subscriptionId"))?;
    let group = ResourceGroupName::new(ws.spec.resource_group.clone()).map_err(invalid("resourceGroup"))?;
    let name = WorkspaceName::new(ws.spec.azure_name.clone().unwrap_or_else(|| ws.name_any()))
        .map_err(invalid("azureName"))?;
    Ok(WorkspaceRef::new(ResourceGroupRef::new(subscription, group), name))
}

/// The workspace of `obj`, if it exists.
pub async fn get_workspace<K: WorkspaceChild>(client: &Client, obj: &K) -> Result<Option<MlWorkspace>, Error> {
    let api: Api<MlWorkspace> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.get_opt(obj.workspace_name()).await.map_err(Error::kube("read workspace"))
}

/// Whether the workspace is Ready (and not being deleted).
pub fn workspace_ready(ws: &MlWorkspace) -> bool {
    ws.metadata.deletion_timestamp.is_none()
        && ws.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True") && s.resource_id.is_some()
        })
}

/// The owner reference a child carries to its workspace: deleting the workspace deletes its children, and with
/// foreground deletion it waits for them.
pub fn workspace_owner_reference(ws: &MlWorkspace) -> Option<OwnerReference> {
    let mut reference = ws.controller_owner_ref(&())?;
    reference.controller = Some(false);
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

/// Gives `obj` the owner reference to its workspace ([`workspace_owner_reference`]) unless it has it; one patch,
/// guarded by the resource version.
pub async fn ensure_workspace_owner<K: WorkspaceChild>(
    client: &Client,
    obj: &K,
    ws: &MlWorkspace,
) -> Result<(), Error> {
    let Some(reference) = workspace_owner_reference(ws) else { return Ok(()) };
    let refs = obj.owner_references();
    if refs.iter().any(|r| r.uid == reference.uid) {
        return Ok(());
    }
    let mut next: Vec<OwnerReference> = refs.iter().filter(|r| r.kind != "MlWorkspace").cloned().collect();
    next.push(reference);
    let patch = json!({ "metadata": { "ownerReferences": next, "resourceVersion": obj.resource_version() } });
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube("set owner reference"))?;
    Ok(())
}

/// Wakes a child kind's controller when a workspace of its objects changes (Ready, deletion), from the workspace
/// controller's watch ([`super::watch_cache::WorkspaceFeed`]): no watch of MlWorkspaces of its own. The children
/// of a workspace are found in `index` (their wake key is their workspace's name).
pub fn watch_workspaces<K: WorkspaceChild>(
    controller: Controller<Cached<K>>,
    config: &ControllerConfig,
    index: Arc<WakeIndex<K>>,
) -> Controller<Cached<K>> {
    let woken = config.workspace_feed.subscribe().flat_map(move |touched| {
        let children = match touched {
            Touched::One { namespace, name } => index.with_key(namespace.as_deref(), &name),
            Touched::All => index.all(),
        };
        futures::stream::iter(children)
    });
    controller.reconcile_on(woken)
}

/// The objects of kind `K` in the namespace of `ws` that belong to it (none when the CRD is not installed).
pub async fn list_children<K: WorkspaceChild>(client: &Client, ws: &MlWorkspace) -> Result<Vec<K>, Error> {
    let api: Api<K> = Api::namespaced(client.clone(), &ws.namespace().unwrap_or_default());
    let items = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return Err(Error::kube(K::LIST_STEP)(e)),
    };
    let name = ws.name_any();
    Ok(items.into_iter().filter(|c| c.workspace_name() == name).collect())
}

/// The names of the children of workspace `name` among `children`, sorted.
pub fn names_of<K: WorkspaceChild>(name: &str, children: &[K]) -> Vec<String> {
    let mut names: Vec<String> =
        children.iter().filter(|c| c.workspace_name() == name).map(ResourceExt::name_any).collect();
    names.sort();
    names
}

/// Deletes the children of kind `K` of `ws` and returns how many still exist (their own cleanup runs first). Used
/// by the workspace's cleanup with a deletion policy that deletes.
pub async fn delete_children<K: WorkspaceChild>(client: &Client, ws: &MlWorkspace) -> Result<usize, Error> {
    let api: Api<K> = Api::namespaced(client.clone(), &ws.namespace().unwrap_or_default());
    let mine: Vec<K> = list_children(client, ws).await?;
    for child in mine.iter().filter(|c| c.meta().deletion_timestamp.is_none()) {
        info!(kind = %K::kind(&()), name = %child.name_any(), "deleting a child of the deleted workspace");
        match api.delete(&child.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::kube(K::DELETE_STEP)(e)),
        }
    }
    Ok(mine.len())
}

/// What the tests of the kinds that live in a workspace start from.
#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::json;

    use crate::api::v1alpha1::MlWorkspace;

    /// Workspace `team-a/fraud` (uid `ws-uid`) in subscription `0b1f6471-...`, resource group `rg-risk`, westeurope,
    /// with storage account `sa1` and key vault `kv1`.
    pub(crate) fn workspace() -> MlWorkspace {
        let spec = serde_json::from_value(json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333",
            "resourceGroup": "rg-risk",
            "location": "westeurope",
            "storageAccount": {"name": "sa1"},
            "keyVault": {"name": "kv1"},
        }))
        .expect("workspace spec");
        let mut ws = MlWorkspace::new("fraud", spec);
        ws.metadata.namespace = Some("team-a".into());
        ws.metadata.uid = Some("ws-uid".into());
        ws
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::workspace;
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn the_owner_reference_to_the_workspace_blocks_its_deletion_but_does_not_control() {
        let r = workspace_owner_reference(&workspace()).expect("reference");
        assert_eq!((r.kind.as_str(), r.name.as_str(), r.uid.as_str()), ("MlWorkspace", "fraud", "ws-uid"));
        assert_eq!((r.controller, r.block_owner_deletion), (Some(false), Some(true)));
    }

    #[test]
    fn the_workspace_is_ready_only_with_ready_true_and_a_resource_id() {
        let mut ws = workspace();
        assert!(!workspace_ready(&ws));
        let now = Time(jiff::Timestamp::now());
        let mut status = crate::api::v1alpha1::MlWorkspaceStatus::default();
        let reconciled = crate::api::conditions::Reason::Reconciled;
        super::super::status::set_condition(
            &mut status.conditions,
            conditions::READY,
            true,
            reconciled,
            "",
            Some(1),
            &now,
        );
        ws.status = Some(status.clone());
        assert!(!workspace_ready(&ws), "no resource id yet");
        status.resource_id = Some("/subscriptions/x".into());
        ws.status = Some(status);
        assert!(workspace_ready(&ws));
        ws.metadata.deletion_timestamp = Some(now);
        assert!(!workspace_ready(&ws), "a workspace being deleted is not ready");
    }

    #[test]
    fn the_workspace_ref_names_the_azure_workspace_or_the_invalid_field() {
        let mut ws = workspace();
        let r = workspace_ref(&ws).expect("valid");
        assert!(
            r.id().ends_with("/resourceGroups/rg-risk/providers/Microsoft.MachineLearningServices/workspaces/fraud")
        );
        ws.spec.resource_group = "bad/group".into();
        let err = workspace_ref(&ws).unwrap_err();
        assert!(err.to_string().starts_with("workspace: spec.resourceGroup: "), "{err}");
    }
}
