//! Condition types and reasons: constants, so that code, tests and documentation agree on the spelling.
//!
//! `Ready`, `Reconciling` and `Stalled` follow kstatus, so `kubectl wait --for=condition=Ready`, Argo CD and Flux
//! understand the resources without custom health checks; the others are domain conditions.

/// kstatus: the resource matches its spec in Azure.
pub const READY: &str = "Ready";
/// kstatus: the controller is working towards the spec.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the controller cannot make progress without a change to the spec (or the environment).
pub const STALLED: &str = "Stalled";
/// The Azure ML workspace exists and its provisioning succeeded.
pub const WORKSPACE_PROVISIONED: &str = "WorkspaceProvisioned";
/// The workspace holds a current key of its storage account.
pub const STORAGE_KEYS_IN_SYNC: &str = "StorageKeysInSync";
/// Every `spec.access` entry holds in Azure.
pub const ACCESS_GRANTED: &str = "AccessGranted";
/// A move to another subscription or resource group is pending or running.
pub const MOVED: &str = "Moved";
/// Online endpoints: every declared deployment is provisioned and the traffic is as declared.
pub const DEPLOYMENTS_READY: &str = "DeploymentsReady";
/// Online endpoints: the keys Secret holds the endpoint's current keys.
pub const KEYS_PUBLISHED: &str = "KeysPublished";
/// Computes: whether the compute can run work now; the reason says why not (InstanceStopped, ComputeErrors,
/// QuotaExceeded, NotPermitted, WorkspaceNotReady, ...).
pub const USABLE: &str = "Usable";
/// Workspaces: which SubscriptionBinding is used (reason BindingSelected, or AmbiguousBinding when others allow the
/// workspace with different credentials).
pub const BINDING_SELECTED: &str = "BindingSelected";
/// MlWorkspace: whether spec.exports (ConfigMap, Secret) is written and current. Does not affect Ready: a
/// name clash of an export does not keep computes, endpoints and connections from using the workspace.
pub const EXPORTED: &str = "Exported";

/// Reasons (CamelCase, as Kubernetes expects).
pub mod reasons {
    /// Azure matches the spec.
    pub const RECONCILED: &str = "Reconciled";
    /// The controller took the resource in and has not compared it with Azure yet.
    pub const PENDING: &str = "Pending";
    /// The workspace is being created.
    pub const CREATING: &str = "Creating";
    /// Mutable properties are being updated.
    pub const UPDATING: &str = "Updating";
    /// A long-running Azure operation is in progress.
    pub const OPERATION_IN_PROGRESS: &str = "OperationInProgress";
    /// The workspace is being deleted.
    pub const DELETING: &str = "Deleting";
    /// No SubscriptionBinding allows what the spec asks for.
    pub const NOT_PERMITTED: &str = "NotPermitted";
    /// A workspace of that name exists and is owned by someone else.
    pub const ALREADY_EXISTS: &str = "AlreadyExists";
    /// Adoption refused: the workspace's owner tag names another MlWorkspace that still exists.
    pub const OWNED_ELSEWHERE: &str = "OwnedElsewhere";
    /// Azure rejected the spec; the message carries the ARM code and message.
    pub const AZURE_REJECTED: &str = "AzureRejected";
    /// The spec is invalid in a way the schema could not catch.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A transient Azure error; the controller retries with backoff.
    pub const TRANSIENT_ERROR: &str = "TransientError";
    /// The `azml.dev/paused` annotation is set: observe only.
    pub const PAUSED: &str = "Paused";
    /// A dependent resource (storage account, key vault, ...) does not exist.
    pub const DEPENDENCY_MISSING: &str = "DependencyMissing";
    /// The resource group does not exist and `createResourceGroup` is false.
    pub const RESOURCE_GROUP_MISSING: &str = "ResourceGroupMissing";
    /// The workspace holds a current storage key.
    pub const KEYS_IN_SYNC: &str = "KeysInSync";
    /// The workspace holds a key the storage account no longer has.
    pub const KEYS_DRIFTED: &str = "KeysDrifted";
    /// StorageKeysInSync: the workspace's datastores use identity-based access; it holds no account key to resync.
    pub const IDENTITY_BASED: &str = "IdentityBased";
    /// Stalled: the workspace's name is taken by a soft-deleted workspace (recover or purge it).
    pub const SOFT_DELETED: &str = "SoftDeleted";
    /// A key resync is running.
    pub const KEYS_RESYNCING: &str = "KeysResyncing";
    /// An endpoint key regeneration is running (polled, not awaited).
    pub const KEYS_REGENERATING: &str = "KeysRegenerating";
    /// Every declared role assignment holds.
    pub const ACCESS_GRANTED: &str = "AccessGranted";
    /// Some role assignments are pending or failed.
    pub const ACCESS_PENDING: &str = "AccessPending";
    /// Some role assignments failed for good (until the spec or Azure changes); the message says why.
    pub const ACCESS_FAILED: &str = "AccessFailed";
    /// `movePolicy: Refuse` and the subscription or resource group changed.
    pub const MOVE_REFUSED: &str = "MoveRefused";
    /// Azure's move validation failed.
    pub const MOVE_VALIDATION_FAILED: &str = "MoveValidationFailed";
    /// A move is running.
    pub const MOVING: &str = "Moving";
    /// Azure is validating a move.
    pub const VALIDATING_MOVE: &str = "ValidatingMove";
    /// The move finished: the workspace is at the destination.
    pub const MOVED: &str = "Moved";
    /// The move itself (after a successful validation) failed, or its result cannot be found.
    pub const MOVE_FAILED: &str = "MoveFailed";
    /// The operator knows beforehand that the move cannot succeed (see `controller::moves::known_blockers`).
    pub const MOVE_BLOCKED: &str = "MoveBlocked";
    /// Online endpoints: the referenced MlWorkspace is missing or not Ready; nothing is sent to Azure.
    pub const WORKSPACE_NOT_READY: &str = "WorkspaceNotReady";
    /// Online endpoints: Azure failed to provision the endpoint or a deployment with the declared body.
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    /// Online endpoints: deployments or traffic are being provisioned.
    pub const DEPLOYMENTS_PENDING: &str = "DeploymentsPending";
    /// Online endpoints: deployments and traffic match the spec.
    pub const DEPLOYMENTS_READY: &str = "DeploymentsReady";
    /// Online endpoints: the keys Secret is current.
    pub const KEYS_PUBLISHED: &str = "KeysPublished";
    /// Online endpoints: no keys Secret is declared (or the auth mode has no keys).
    pub const KEYS_NOT_EXPORTED: &str = "KeysNotExported";
    /// Online endpoints: the keys Secret exists and was not created by the operator for this endpoint.
    pub const SECRET_NOT_OWNED: &str = "SecretNotOwned";
    /// Online endpoints: the azml.dev/regenerate-keys value is not `primary:<token>` or `secondary:<token>`.
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    /// Computes: the subscription's vCPU quota for the VM family in the location cannot hold the compute; nothing
    /// is created.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// Computes: the spec changed a property Azure sets at creation only; the compute must be re-created (the
    /// operator never deletes it on its own).
    pub const RECREATE_REQUIRED: &str = "RecreateRequired";
    /// Computes: Azure reports errors on the compute (e.g. it cannot scale for lack of quota).
    pub const COMPUTE_ERRORS: &str = "ComputeErrors";
    /// Computes: the compute instance is stopped (by the annotation, a schedule or idle shutdown).
    pub const INSTANCE_STOPPED: &str = "InstanceStopped";
    /// Computes: a start, stop or restart asked for by the azml.dev/compute-action annotation is running.
    pub const INSTANCE_ACTION: &str = "InstanceAction";
    /// The SubscriptionBinding's credential cannot work: its Secret or key is missing, or Entra ID refuses it
    /// (unknown client id, wrong or expired secret). Re-checked when the binding or the Secret changes.
    pub const CREDENTIAL_UNAVAILABLE: &str = "CredentialUnavailable";
    /// One SubscriptionBinding allows the workspace (or several with the same credential).
    pub const BINDING_SELECTED: &str = "BindingSelected";
    /// Several SubscriptionBindings allow the workspace with different credentials; the lowest name is used.
    pub const AMBIGUOUS_BINDING: &str = "AmbiguousBinding";
    /// Connections: the credentials Secret, or a key the auth type needs in it, does not exist (the message names
    /// it); nothing is sent to Azure until it does.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// Exports: the ConfigMap exists and was not created by the operator for this resource; it is left untouched.
    pub const CONFIG_MAP_NOT_OWNED: &str = "ConfigMapNotOwned";
    /// Exports: the ConfigMap and Secret are written and current.
    pub const EXPORTED: &str = "Exported";
    /// Exports: nothing to export (no spec.exports).
    pub const NOT_EXPORTED: &str = "NotExported";
}

/// Event reasons (the `reason` field of Kubernetes events).
pub mod events {
    /// A workspace was created in Azure.
    pub const CREATED: &str = "Created";
    /// Mutable properties were updated in Azure.
    pub const UPDATED: &str = "Updated";
    /// Someone changed the workspace in Azure; the controller put the spec back.
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    /// The workspace was deleted in Azure.
    pub const DELETED: &str = "Deleted";
    /// An existing workspace was adopted.
    pub const ADOPTED: &str = "Adopted";
    /// The storage keys were resynced.
    pub const KEYS_RESYNCED: &str = "KeysResynced";
    /// A soft-deleted workspace was recovered (annotation azml.dev/recover-soft-deleted).
    pub const RECOVERED: &str = "Recovered";
    /// A workspace was deleted for good (deletionPolicy Purge, or annotation azml.dev/purge-soft-deleted).
    pub const PURGED: &str = "Purged";
    /// A role assignment was created in Azure.
    pub const ACCESS_GRANTED: &str = "AccessGranted";
    /// A role assignment the operator created was deleted (no longer declared).
    pub const ACCESS_REVOKED: &str = "AccessRevoked";
    /// A storage-key resync failed (retried with backoff).
    pub const KEYS_RESYNC_FAILED: &str = "KeysResyncFailed";
    /// A reconcile failed.
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
    /// A move was asked for; Azure validates it.
    pub const MOVE_VALIDATING: &str = "MoveValidating";
    /// Azure accepted the move; the resources are being moved.
    pub const MOVE_STARTED: &str = "MoveStarted";
    /// The move finished.
    pub const MOVED: &str = "Moved";
    /// Online endpoints: a deployment was created or updated in Azure.
    pub const DEPLOYMENT_UPDATED: &str = "DeploymentUpdated";
    /// Online endpoints: a deployment no longer declared was deleted in Azure.
    pub const DEPLOYMENT_DELETED: &str = "DeploymentDeleted";
    /// Online endpoints: the traffic split was changed in Azure.
    pub const TRAFFIC_UPDATED: &str = "TrafficUpdated";
    /// Online endpoints: a key was regenerated (the value is never in the event).
    pub const KEYS_REGENERATED: &str = "KeysRegenerated";
    /// Online endpoints: the keys Secret was created or updated (the values are never in the event).
    pub const KEYS_PUBLISHED: &str = "KeysPublished";
    /// Computes: a compute instance was started, stopped or restarted on request of the annotation.
    pub const INSTANCE_ACTION: &str = "InstanceAction";
    /// More than one SubscriptionBinding allows the object, with different credentials: the lowest name is used.
    pub const AMBIGUOUS_BINDING: &str = "AmbiguousBinding";
    /// Connections: the credentials Secret changed and the connection was sent again (never the values).
    pub const CREDENTIALS_UPDATED: &str = "CredentialsUpdated";
    /// Exports: the ConfigMap or Secret was created or updated (never the values).
    pub const EXPORTED: &str = "Exported";
}
