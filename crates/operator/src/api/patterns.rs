//! Regular expressions for the strings that end up in ARM paths.
//!
//! They are enforced at admission (schema `pattern`) and again by the ARM client, so no spec value can change an
//! ARM path or query (`/`, `..`, `?`, `%` never match). Written in the common subset of RE2 and ECMA-262 that both
//! the Kubernetes API server and JSON Schema validators accept.

/// A GUID such as an Azure subscription, tenant, principal or role definition id.
pub const GUID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// An Azure resource group name: 1-90 letters, digits, `_`, `(`, `)`, `-`, `.`; it must not end with `.`.
pub const RESOURCE_GROUP: &str = "^[A-Za-z0-9_().-]{0,89}[A-Za-z0-9_()-]$";

/// An Azure ML workspace name: 3-33 letters, digits, `-` or `_`, starting with a letter or digit.
pub const WORKSPACE_NAME: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$";

/// The name of a dependent resource (storage account, key vault, ...): starts with a letter or digit, then
/// letters, digits, `-`, `_` or `.`, at most 260 characters. Each resource provider narrows this further itself.
pub const RESOURCE_NAME: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,259}$";

/// A full ARM resource id of a top-level resource: `/subscriptions/{guid}/resourceGroups/{rg}/providers/{ns}/{type}/{name}`.
pub const RESOURCE_ID: &str = "^/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/[rR]esource[gG]roups/[A-Za-z0-9_().-]{0,89}[A-Za-z0-9_()-]/providers/[A-Za-z][A-Za-z0-9.]{0,99}/[A-Za-z][A-Za-z0-9]{0,99}/[A-Za-z0-9][A-Za-z0-9_.-]{0,259}$";

/// A key rotation period: a whole number of days, hours or minutes, e.g. `90d`, `12h`.
pub const ROTATION_PERIOD: &str = "^[1-9][0-9]{0,4}(d|h|m)$";

/// A Kubernetes object name (DNS subdomain, RFC 1123): it becomes a segment of a Kubernetes API path.
pub const KUBE_NAME: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A key of a Secret's data.
pub const SECRET_KEY: &str = "^[-._a-zA-Z0-9]+$";
