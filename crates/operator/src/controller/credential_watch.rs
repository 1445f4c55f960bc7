//! Wakes the objects stalled with `CredentialUnavailable` when a Secret in the operator's namespace changes (a
//! binding's change wakes its workspaces through the SubscriptionBinding watch).
//!
//! Only metadata is watched (`PartialObjectMetadata`: names and resourceVersions, never data); the credential is
//! read, by name, in the reconcile this triggers.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::api::conditions::{Reason, STALLED};
use crate::api::v1alpha1::MlWorkspace;

/// Changes of the Secrets in `operator_namespace` (metadata only).
pub fn secret_changes(
    client: &Client,
    operator_namespace: &str,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), operator_namespace);
    watcher(api, watcher::Config::default()).default_backoff().touched_objects().boxed()
}

/// Whether the workspace is stalled because its binding's credential cannot work.
pub fn stalled_on_credential(ws: &MlWorkspace) -> bool {
    ws.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == STALLED && c.status == "True" && c.reason == Reason::CredentialUnavailable)
    })
}

/// The workspaces of `store` to re-check after a Secret changed.
pub fn to_recheck(store: &Store<MlWorkspace>) -> Vec<ObjectRef<MlWorkspace>> {
    store.state().iter().filter(|ws| stalled_on_credential(ws)).map(|ws| ObjectRef::from_obj(&**ws)).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn stalled(reason: Reason, status: &str) -> MlWorkspace {
        let spec = serde_json::from_value(serde_json::json!({
            "subscriptionId": "0b1f6471-1bf0-4dda-aec3-111122223333", "resourceGroup": "rg", "location": "westeurope",
            "storageAccount": {"name": "sa1"}, "keyVault": {"name": "kv1"},
        }))
        .expect("spec");
        let mut ws = MlWorkspace::new("ws", spec);
        let condition = Condition {
            type_: STALLED.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        ws.status = Some(crate::api::v1alpha1::MlWorkspaceStatus { conditions: vec![condition], ..Default::default() });
        ws
    }

    #[test]
    fn only_workspaces_stalled_on_their_credential_are_rechecked() {
        assert!(stalled_on_credential(&stalled(Reason::CredentialUnavailable, "True")));
        assert!(!stalled_on_credential(&stalled(Reason::CredentialUnavailable, "False")));
        assert!(!stalled_on_credential(&stalled(Reason::NotPermitted, "True")));
        let mut fresh = stalled(Reason::NotPermitted, "True");
        fresh.status = None;
        assert!(!stalled_on_credential(&fresh));
    }
}
