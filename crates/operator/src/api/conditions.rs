//! Condition types (constants) and reasons (the [`Reason`] enum), so that code, tests and documentation agree on
//! the spelling.
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

/// Condition reasons (CamelCase, as Kubernetes expects): a closed set, so a misspelt reason does not compile.
/// `as_str` (and `Display`) give the string written to `status.conditions[].reason`: the variant's own name.
macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A condition reason; the string in status is the variant's name ([`Reason::as_str`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &[Reason] = &[$(Reason::$name,)*];

            /// The string written to `status.conditions[].reason` (and used as a Warning event's reason).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    /// Azure matches the spec.
    Reconciled,
    /// The controller took the resource in and has not compared it with Azure yet.
    Pending,
    /// The workspace is being created.
    Creating,
    /// Mutable properties are being updated.
    Updating,
    /// A long-running Azure operation is in progress.
    OperationInProgress,
    /// The workspace is being deleted.
    Deleting,
    /// No SubscriptionBinding allows what the spec asks for.
    NotPermitted,
    /// A workspace of that name exists and is owned by someone else.
    AlreadyExists,
    /// Adoption refused: the workspace's owner tag names another MlWorkspace that still exists.
    OwnedElsewhere,
    /// Azure rejected the spec; the message carries the ARM code and message.
    AzureRejected,
    /// The spec is invalid in a way the schema could not catch.
    InvalidSpec,
    /// A transient Azure error; the controller retries with backoff.
    TransientError,
    /// The `azml.dev/paused` annotation is set: observe only.
    Paused,
    /// A dependent resource (storage account, key vault, ...) does not exist.
    DependencyMissing,
    /// The resource group does not exist and `createResourceGroup` is false.
    ResourceGroupMissing,
    /// The workspace holds a current storage key.
    KeysInSync,
    /// The workspace holds a key the storage account no longer has.
    KeysDrifted,
    /// StorageKeysInSync: the workspace's datastores use identity-based access; it holds no account key to resync.
    IdentityBased,
    /// Stalled: the workspace's name is taken by a soft-deleted workspace (recover or purge it).
    SoftDeleted,
    /// A key resync is running.
    KeysResyncing,
    /// An endpoint key regeneration is running (polled, not awaited).
    KeysRegenerating,
    /// Every declared role assignment holds.
    AccessGranted,
    /// Some role assignments are pending or failed.
    AccessPending,
    /// Some role assignments failed for good (until the spec or Azure changes); the message says why.
    AccessFailed,
    /// `movePolicy: Refuse` and the subscription or resource group changed.
    MoveRefused,
    /// Azure's move validation failed.
    MoveValidationFailed,
    /// A move is running.
    Moving,
    /// Azure is validating a move.
    ValidatingMove,
    /// The move finished: the workspace is at the destination.
    Moved,
    /// The move itself (after a successful validation) failed, or its result cannot be found.
    MoveFailed,
    /// The operator knows beforehand that the move cannot succeed (see `controller::moves::known_blockers`).
    MoveBlocked,
    /// Online endpoints: the referenced MlWorkspace is missing or not Ready; nothing is sent to Azure.
    WorkspaceNotReady,
    /// Online endpoints: Azure failed to provision the endpoint or a deployment with the declared body.
    ProvisioningFailed,
    /// Online endpoints: deployments or traffic are being provisioned.
    DeploymentsPending,
    /// Online endpoints: deployments and traffic match the spec.
    DeploymentsReady,
    /// Online endpoints: the keys Secret is current.
    KeysPublished,
    /// Online endpoints: no keys Secret is declared (or the auth mode has no keys).
    KeysNotExported,
    /// Online endpoints: the keys Secret exists and was not created by the operator for this endpoint.
    SecretNotOwned,
    /// Online endpoints: the azml.dev/regenerate-keys value is not `primary:<token>` or `secondary:<token>`.
    InvalidAnnotation,
    /// Computes: the subscription's vCPU quota for the VM family in the location cannot hold the compute; nothing
    /// is created.
    QuotaExceeded,
    /// Computes: the spec changed a property Azure sets at creation only; the compute must be re-created (the
    /// operator never deletes it on its own).
    RecreateRequired,
    /// Computes: Azure reports errors on the compute (e.g. it cannot scale for lack of quota).
    ComputeErrors,
    /// Computes: the compute instance is stopped (by the annotation, a schedule or idle shutdown).
    InstanceStopped,
    /// Computes: a start, stop or restart asked for by the azml.dev/compute-action annotation is running.
    InstanceAction,
    /// The SubscriptionBinding's credential cannot work: its Secret or key is missing, or Entra ID refuses it
    /// (unknown client id, wrong or expired secret). Re-checked when the binding or the Secret changes.
    CredentialUnavailable,
    /// One SubscriptionBinding allows the workspace (or several with the same credential).
    BindingSelected,
    /// Several SubscriptionBindings allow the workspace with different credentials; the lowest name is used.
    AmbiguousBinding,
    /// Connections: the credentials Secret, or a key the auth type needs in it, does not exist (the message names
    /// it); nothing is sent to Azure until it does.
    SecretNotFound,
    /// Exports: the ConfigMap exists and was not created by the operator for this resource; it is left untouched.
    ConfigMapNotOwned,
    /// Exports: the ConfigMap and Secret are written and current.
    Exported,
    /// Exports: nothing to export (no spec.exports).
    NotExported,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.as_str().to_owned()
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Reason {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Reason> for str {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, other: &Reason) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
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

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn reasons_are_their_names_camel_case_and_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            let s = reason.as_str();
            assert!(s.chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{s}");
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
            assert_eq!(format!("{reason:?}"), s);
            assert_eq!(reason.to_string(), s);
            assert!(seen.insert(s), "{s} twice");
        }
        assert_eq!(Reason::NotPermitted.as_str(), "NotPermitted");
        assert_eq!(Reason::TransientError, "TransientError");
        assert_eq!(String::from("MoveValidationFailed"), Reason::MoveValidationFailed);
    }
}
