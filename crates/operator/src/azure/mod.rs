//! Typed client for Azure Resource Manager.
//!
//! - [`ArmClient`] (in `transport`) sends calls with bearer tokens from an azure_identity credential, retries
//!   transient failures with backoff honouring `Retry-After`, slows down per subscription when ARM's remaining-quota
//!   headers run low, records metrics and traces every call with its ARM request id.
//! - Operations are `ArmClient` methods, one module per resource family, each with its pinned api-version.
//! - Long-running operations: `begin_*` returns [`LroStart`], every resource type through one path (`lro.rs`:
//!   `ArmClient::begin`, `begin_action`, `begin_delete`); a pending [`LroHandle`] is serialisable and can be polled
//!   ([`ArmClient::poll_lro`]) or waited on ([`ArmClient::wait_lro`]) later, also after a restart. A 404 that means
//!   "absent" is answered in one place too (`send_opt`, `get_opt`).
//! - Ids are validated types ([`ids`]); secrets are [`Secret`].

pub mod activity_log;
pub mod authorization;
pub mod computes;
pub mod connections;
pub mod credentials;
pub mod dependencies;
pub mod error;
pub mod ids;
pub mod lro;
pub mod metrics;
pub mod models;
pub(crate) mod nullable;
pub mod online_endpoints;
pub mod resource_groups;
pub mod resources;
pub mod secret;
pub mod storage;
pub mod throttle;
pub mod transport;
pub mod workspaces;

pub use credentials::{AzureCloud, CredentialConfig, build_credential};
pub use error::{ArmError, ArmErrorBody, ErrorClass};
pub use ids::{
    OnlineDeploymentRef, OnlineEndpointRef, ResourceGroupRef, ResourceId, RoleAssignmentRef, RoleDefinitionId,
    StorageAccountRef, SubscriptionId, WorkspaceRef,
};
pub use lro::{FinalStateVia, LroHandle, LroKind, LroOptions, LroPoll, LroStart};
pub use metrics::{ArmMetrics, PrometheusArmMetrics, StatusClass};
pub use secret::Secret;
pub use throttle::ThrottlePolicy;
pub use transport::{ArmClient, ArmClientOptions, RetryPolicy};
