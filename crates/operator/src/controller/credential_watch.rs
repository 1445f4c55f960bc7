//! Wakes the objects stalled with `CredentialUnavailable` when a Secret in the operator's namespace changes (a
//! binding's change wakes its workspaces through the SubscriptionBinding watch).
//!
//! Only metadata is watched (`PartialObjectMetadata`: names and resourceVersions, never data); the credential is
//! read, by name, in the reconcile this triggers.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// Changes of the Secrets in `operator_namespace` (metadata only).
pub fn secret_changes(
    client: &Client,
    operator_namespace: &str,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), operator_namespace);
    watcher(api, watcher::Config::default()).default_backoff().touched_objects().boxed()
}
