//! Typed, validated ARM identifiers.
//!
//! Every value that ends up in a request path is validated here, segment by segment, against the ARM naming rules
//! (or a stricter subset of them), so no input can add a path segment, a query string or an encoded separator
//! (`/`, `..`, `?`, `#`, `%2F` are all rejected). ARM ids are case-insensitive: equality and hashing ignore ASCII case.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A name does not follow the naming rules of its kind.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        /// What was being parsed (e.g. "resource group name").
        kind: &'static str,
        /// The rejected input (names are not secret).
        value: String,
        /// Which rule was broken.
        reason: &'static str,
    },
    /// A full resource id does not have the expected structure.
    #[error("invalid resource id {value:?}: {reason}")]
    InvalidId {
        /// The rejected input.
        value: String,
        /// Which rule was broken.
        reason: &'static str,
    },
}

fn name_err(kind: &'static str, value: &str, reason: &'static str) -> IdError {
    IdError::InvalidName { kind, value: value.to_owned(), reason }
}

/// Characters ARM accepts in generic resource names that are also harmless in a URL path.
fn is_generic_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')')
}

/// Generic path-segment rule used for segments of arbitrary resource ids (provider namespaces, types, names).
fn validate_segment(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(name_err(kind, s, "must not be empty"));
    }
    if s.len() > 260 {
        return Err(name_err(kind, s, "longer than 260 characters"));
    }
    if !s.chars().all(is_generic_name_char) {
        return Err(name_err(kind, s, "only ASCII letters, digits and - _ . ( ) are allowed"));
    }
    if s.chars().all(|c| c == '.') {
        return Err(name_err(kind, s, "must not consist of dots only"));
    }
    if s.ends_with('.') {
        return Err(name_err(kind, s, "must not end with a period"));
    }
    Ok(())
}

fn validate_resource_group(s: &str) -> Result<(), IdError> {
    const KIND: &str = "resource group name";
    if s.is_empty() || s.len() > 90 {
        return Err(name_err(KIND, s, "must be 1 to 90 characters"));
    }
    validate_segment(KIND, s)
}

fn validate_workspace(s: &str) -> Result<(), IdError> {
    const KIND: &str = "workspace name";
    if s.len() < 3 || s.len() > 33 {
        return Err(name_err(KIND, s, "must be 3 to 33 characters"));
    }
    let mut chars = s.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(name_err(KIND, s, "must start with a letter or digit"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(name_err(KIND, s, "only ASCII letters, digits, - and _ are allowed"));
    }
    Ok(())
}

fn validate_storage_account(s: &str) -> Result<(), IdError> {
    const KIND: &str = "storage account name";
    if s.len() < 3 || s.len() > 24 {
        return Err(name_err(KIND, s, "must be 3 to 24 characters"));
    }
    if !s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(name_err(KIND, s, "only lowercase ASCII letters and digits are allowed"));
    }
    Ok(())
}

/// `^[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}$` (mfe.json, endpoint and deployment names).
fn validate_endpoint_like(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > 255 {
        return Err(name_err(kind, s, "must be 1 to 255 characters"));
    }
    let mut chars = s.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(name_err(kind, s, "must start with a letter or digit"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(name_err(kind, s, "only ASCII letters, digits, - and _ are allowed"));
    }
    Ok(())
}

/// Declares a validated name newtype that compares and hashes case-insensitively.
macro_rules! ci_name {
    ($(#[$meta:meta])* $name:ident, $validate:expr) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let validate: fn(&str) -> Result<(), IdError> = $validate;
                validate(&value)?;
                Ok(Self(value))
            }

            /// The name as given (original case).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.eq_ignore_ascii_case(&other.0)
            }
        }

        impl Eq for $name {}

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.0.to_ascii_lowercase().hash(state);
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

ci_name!(
    /// A resource group name: 1-90 of ASCII letters, digits, `-_.()`, not ending in a period.
    ResourceGroupName,
    validate_resource_group
);
ci_name!(
    /// An ML workspace name: 3-33 ASCII letters, digits, `-`, `_`, starting with a letter or digit.
    WorkspaceName,
    validate_workspace
);
ci_name!(
    /// A storage account name: 3-24 lowercase ASCII letters and digits.
    StorageAccountName,
    validate_storage_account
);
ci_name!(
    /// An online endpoint name: `^[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}$`.
    OnlineEndpointName,
    |s| validate_endpoint_like("online endpoint name", s)
);
ci_name!(
    /// An online deployment name: `^[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}$`.
    OnlineDeploymentName,
    |s| validate_endpoint_like("online deployment name", s)
);

/// An Azure subscription id (a GUID). Displayed in lowercase hyphenated form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(Uuid);

impl SubscriptionId {
    /// Wraps a GUID.
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// Parses the hyphenated GUID form (the only form ARM paths use).
    pub fn new(s: &str) -> Result<Self, IdError> {
        parse_guid("subscription id", s).map(Self)
    }

    /// The GUID.
    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

fn parse_guid(kind: &'static str, s: &str) -> Result<Uuid, IdError> {
    // Only the 36-character hyphenated form: other forms Uuid accepts (braced, urn:) are not ARM path syntax.
    if s.len() != 36 {
        return Err(name_err(kind, s, "must be a hyphenated GUID"));
    }
    Uuid::try_parse(s).map_err(|_| name_err(kind, s, "must be a hyphenated GUID"))
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.hyphenated())
    }
}

impl FromStr for SubscriptionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for SubscriptionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SubscriptionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A resource group: `/subscriptions/{sub}/resourceGroups/{rg}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceGroupRef {
    /// Subscription.
    pub subscription: SubscriptionId,
    /// Resource group name.
    pub name: ResourceGroupName,
}

impl ResourceGroupRef {
    /// Builds a reference from validated parts.
    pub fn new(subscription: SubscriptionId, name: ResourceGroupName) -> Self {
        Self { subscription, name }
    }

    /// The ARM id / request path.
    pub fn id(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.subscription, self.name)
    }

    /// As a generic [`ResourceId`] (e.g. as a role assignment scope).
    pub fn resource_id(&self) -> ResourceId {
        ResourceId::from_validated(self.id())
    }
}

/// An ML workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkspaceRef {
    /// Resource group holding the workspace.
    pub resource_group: ResourceGroupRef,
    /// Workspace name.
    pub name: WorkspaceName,
}

impl WorkspaceRef {
    /// Builds a reference from validated parts.
    pub fn new(resource_group: ResourceGroupRef, name: WorkspaceName) -> Self {
        Self { resource_group, name }
    }

    /// Parses `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{name}`.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        let rid = ResourceId::parse(id)?;
        let (rg, name) = rid.top_level("Microsoft.MachineLearningServices/workspaces")?;
        Ok(Self::new(rg, WorkspaceName::new(name)?))
    }

    /// Subscription of the workspace.
    pub fn subscription(&self) -> SubscriptionId {
        self.resource_group.subscription
    }

    /// The ARM id / request path.
    pub fn id(&self) -> String {
        format!("{}/providers/Microsoft.MachineLearningServices/workspaces/{}", self.resource_group.id(), self.name)
    }

    /// As a generic [`ResourceId`].
    pub fn resource_id(&self) -> ResourceId {
        ResourceId::from_validated(self.id())
    }
}

/// A storage account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StorageAccountRef {
    /// Resource group holding the account.
    pub resource_group: ResourceGroupRef,
    /// Account name.
    pub name: StorageAccountName,
}

impl StorageAccountRef {
    /// Builds a reference from validated parts.
    pub fn new(resource_group: ResourceGroupRef, name: StorageAccountName) -> Self {
        Self { resource_group, name }
    }

    /// Parses `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}`.
    ///
    /// Storage names are lowercase by rule, but ids returned by ARM may carry other casing (e.g. in workspace
    /// properties), so the name is lowercased before validation.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        let rid = ResourceId::parse(id)?;
        let (rg, name) = rid.top_level("Microsoft.Storage/storageAccounts")?;
        Ok(Self::new(rg, StorageAccountName::new(name.to_ascii_lowercase())?))
    }

    /// Subscription of the account.
    pub fn subscription(&self) -> SubscriptionId {
        self.resource_group.subscription
    }

    /// The ARM id / request path.
    pub fn id(&self) -> String {
        format!("{}/providers/Microsoft.Storage/storageAccounts/{}", self.resource_group.id(), self.name)
    }

    /// As a generic [`ResourceId`].
    pub fn resource_id(&self) -> ResourceId {
        ResourceId::from_validated(self.id())
    }
}

/// An online endpoint of a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OnlineEndpointRef {
    /// Parent workspace.
    pub workspace: WorkspaceRef,
    /// Endpoint name.
    pub name: OnlineEndpointName,
}

impl OnlineEndpointRef {
    /// Builds a reference from validated parts.
    pub fn new(workspace: WorkspaceRef, name: OnlineEndpointName) -> Self {
        Self { workspace, name }
    }

    /// The ARM id / request path.
    pub fn id(&self) -> String {
        format!("{}/onlineEndpoints/{}", self.workspace.id(), self.name)
    }
}

/// A deployment of an online endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OnlineDeploymentRef {
    /// Parent endpoint.
    pub endpoint: OnlineEndpointRef,
    /// Deployment name.
    pub name: OnlineDeploymentName,
}

impl OnlineDeploymentRef {
    /// Builds a reference from validated parts.
    pub fn new(endpoint: OnlineEndpointRef, name: OnlineDeploymentName) -> Self {
        Self { endpoint, name }
    }

    /// The ARM id / request path.
    pub fn id(&self) -> String {
        format!("{}/deployments/{}", self.endpoint.id(), self.name)
    }
}

/// A role assignment: `{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoleAssignmentRef {
    /// Scope the assignment is made at (subscription, resource group or resource).
    pub scope: ResourceId,
    /// Assignment name (a caller-chosen GUID).
    pub name: Uuid,
}

impl RoleAssignmentRef {
    /// Builds a reference.
    pub fn new(scope: ResourceId, name: Uuid) -> Self {
        Self { scope, name }
    }

    /// The ARM id / request path.
    pub fn id(&self) -> String {
        format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", self.scope, self.name.hyphenated())
    }
}

/// A role definition id, `/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}` or the
/// tenant-level `/providers/Microsoft.Authorization/roleDefinitions/{guid}`. Compared by GUID only, since ARM
/// normalises the subscription-level form to the tenant-level one in responses.
#[derive(Clone, Debug)]
pub struct RoleDefinitionId {
    subscription: Option<SubscriptionId>,
    guid: Uuid,
}

impl RoleDefinitionId {
    /// A role definition in the context of a subscription (the form to send in create bodies).
    pub fn new(subscription: Option<SubscriptionId>, guid: Uuid) -> Self {
        Self { subscription, guid }
    }

    /// Parses either accepted form.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        let bad = |reason| IdError::InvalidId { value: id.to_owned(), reason };
        let segs: Vec<&str> = id.strip_prefix('/').ok_or_else(|| bad("must start with '/'"))?.split('/').collect();
        let (subscription, rest) = match segs.as_slice() {
            [s, sub, rest @ ..] if s.eq_ignore_ascii_case("subscriptions") => (Some(SubscriptionId::new(sub)?), rest),
            rest => (None, rest),
        };
        match rest {
            [p, ns, t, guid]
                if p.eq_ignore_ascii_case("providers")
                    && ns.eq_ignore_ascii_case("Microsoft.Authorization")
                    && t.eq_ignore_ascii_case("roleDefinitions") =>
            {
                Ok(Self { subscription, guid: parse_guid("role definition id", guid)? })
            }
            _ => Err(bad("expected [/subscriptions/{id}]/providers/Microsoft.Authorization/roleDefinitions/{guid}")),
        }
    }

    /// The role definition GUID.
    pub fn guid(&self) -> Uuid {
        self.guid
    }
}

impl fmt::Display for RoleDefinitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(sub) = self.subscription {
            write!(f, "/subscriptions/{sub}")?;
        }
        write!(f, "/providers/Microsoft.Authorization/roleDefinitions/{}", self.guid.hyphenated())
    }
}

impl PartialEq for RoleDefinitionId {
    fn eq(&self, other: &Self) -> bool {
        self.guid == other.guid
    }
}

impl Eq for RoleDefinitionId {}

impl Hash for RoleDefinitionId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.guid.hash(state);
    }
}

impl Serialize for RoleDefinitionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RoleDefinitionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A validated ARM resource id or scope below a subscription:
/// `/subscriptions/{guid}[/resourceGroups/{rg}[/providers/{ns}/{type}/{name}[/{type}/{name}]...]]`.
///
/// Compared and hashed case-insensitively; displayed as given.
#[derive(Clone)]
pub struct ResourceId(String);

impl ResourceId {
    /// Parses and validates every segment of an id.
    pub fn parse(id: &str) -> Result<Self, IdError> {
        let bad = |reason| IdError::InvalidId { value: id.to_owned(), reason };
        let rest = id.strip_prefix('/').ok_or_else(|| bad("must start with '/'"))?;
        let segs: Vec<&str> = rest.split('/').collect();
        match segs.as_slice() {
            [s, sub, rest @ ..] if s.eq_ignore_ascii_case("subscriptions") => {
                SubscriptionId::new(sub)?;
                match rest {
                    [] => {}
                    [g, rg, rest @ ..] if g.eq_ignore_ascii_case("resourceGroups") => {
                        validate_resource_group(rg)?;
                        match rest {
                            [] => {}
                            [p, ns, pairs @ ..] if p.eq_ignore_ascii_case("providers") => {
                                validate_segment("provider namespace", ns)?;
                                if pairs.is_empty() || pairs.len() % 2 != 0 {
                                    return Err(bad("expected {type}/{name} pairs after the provider namespace"));
                                }
                                for pair in pairs.chunks(2) {
                                    validate_segment("resource type", pair[0])?;
                                    validate_segment("resource name", pair[1])?;
                                }
                            }
                            _ => return Err(bad("expected 'providers' after the resource group")),
                        }
                    }
                    _ => return Err(bad("expected 'resourceGroups' after the subscription")),
                }
            }
            _ => return Err(bad("must start with /subscriptions/{id}")),
        }
        Ok(Self(id.to_owned()))
    }

    /// Wraps a string built by this module from validated parts.
    fn from_validated(id: String) -> Self {
        Self(id)
    }

    /// A subscription scope.
    pub fn subscription(sub: SubscriptionId) -> Self {
        Self(format!("/subscriptions/{sub}"))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn segments(&self) -> Vec<&str> {
        self.0[1..].split('/').collect()
    }

    /// Subscription the id lives in.
    pub fn subscription_id(&self) -> SubscriptionId {
        // Parsed and validated on construction; a failure here would be a bug in this module.
        SubscriptionId::new(self.segments()[1]).unwrap_or_else(|_| SubscriptionId(Uuid::nil()))
    }

    /// Resource group, when the id is at or below one.
    pub fn resource_group(&self) -> Option<ResourceGroupRef> {
        let segs = self.segments();
        let name = ResourceGroupName::new(*segs.get(3)?).ok()?;
        Some(ResourceGroupRef::new(self.subscription_id(), name))
    }

    /// The full resource type (`Microsoft.Storage/storageAccounts`, nested types joined with `/`), if any.
    pub fn resource_type(&self) -> Option<String> {
        let segs = self.segments();
        if segs.len() < 8 {
            return None;
        }
        let mut t = segs[5].to_owned();
        for pair in segs[6..].chunks(2) {
            t.push('/');
            t.push_str(pair[0]);
        }
        Some(t)
    }

    /// The last name segment (resource name, resource group name or subscription id).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// For a top-level resource of `resource_type` (compared case-insensitively), its resource group and name.
    pub fn top_level(&self, resource_type: &str) -> Result<(ResourceGroupRef, &str), IdError> {
        let segs = self.segments();
        let matches = segs.len() == 8 && self.resource_type().is_some_and(|t| t.eq_ignore_ascii_case(resource_type));
        match (matches, self.resource_group()) {
            (true, Some(rg)) => Ok((rg, self.name())),
            _ => Err(IdError::InvalidId { value: self.0.clone(), reason: "not an id of the expected resource type" }),
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for ResourceId {}

impl Hash for ResourceId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_ascii_lowercase().hash(state);
    }
}

impl FromStr for ResourceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-1111-2222-3333-444444444444";

    #[test]
    fn rejects_path_and_query_injection() {
        for bad in ["..", "a/b", "a?b", "a%2Fb", "a#b", "a b", "", "rg.", "a\\b", "a&api-version=1"] {
            assert!(ResourceGroupName::new(bad).is_err(), "{bad:?} accepted as resource group");
            assert!(WorkspaceName::new(bad).is_err(), "{bad:?} accepted as workspace");
            assert!(OnlineEndpointName::new(bad).is_err(), "{bad:?} accepted as endpoint");
        }
        assert!(SubscriptionId::new("../../x").is_err());
        assert!(SubscriptionId::new("{00000000-1111-2222-3333-444444444444}").is_err());
        assert!(StorageAccountName::new("UpperCase1").is_err());
        assert!(ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg/../x")).is_err());
        assert!(ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/A/b/c%2Fd")).is_err());
        assert!(ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg?x=1")).is_err());
        assert!(ResourceId::parse(&format!("/subscriptions/{SUB}//resourceGroups/rg")).is_err());
        assert!(ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg/providers/A/b")).is_err());
    }

    #[test]
    fn accepts_valid_names() {
        assert!(ResourceGroupName::new("my_rg-(1).x").is_ok());
        assert!(WorkspaceName::new("ws-1_a").is_ok());
        assert!(StorageAccountName::new("acct123").is_ok());
        assert!(OnlineEndpointName::new("testEndpointName").is_ok());
    }

    #[test]
    fn compares_case_insensitively() {
        let a = ResourceId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/acct"
        ))
        .unwrap();
        let b = ResourceId::parse(&format!(
            "/SUBSCRIPTIONS/{SUB}/resourcegroups/rg/providers/microsoft.storage/storageaccounts/ACCT"
        ))
        .unwrap();
        assert_eq!(a, b);
        let mut set = std::collections::HashSet::new();
        set.insert(a.clone());
        assert!(set.contains(&b));
        assert_eq!(ResourceGroupName::new("Rg").unwrap(), ResourceGroupName::new("rG").unwrap());
    }

    #[test]
    fn parses_typed_refs() {
        let id = format!(
            "/subscriptions/{SUB}/resourceGroups/accountcrud-1234/providers/Microsoft.Storage/storageAccounts/testStorageAccount"
        );
        let sa = StorageAccountRef::parse(&id).unwrap();
        assert_eq!(sa.name.as_str(), "teststorageaccount");
        assert_eq!(sa.resource_group.name.as_str(), "accountcrud-1234");
        assert!(WorkspaceRef::parse(&id).is_err());
        let ws = WorkspaceRef::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/workspace-1234/providers/Microsoft.MachineLearningServices/workspaces/testworkspace"
        ))
        .unwrap();
        assert_eq!(
            ws.id(),
            format!(
                "/subscriptions/{SUB}/resourceGroups/workspace-1234/providers/Microsoft.MachineLearningServices/workspaces/testworkspace"
            )
        );
        let rd = RoleDefinitionId::parse(&format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/f6c7c914-8db3-469d-8ca1-694a8f32e121")).unwrap();
        let rd2 = RoleDefinitionId::parse(
            "/providers/Microsoft.Authorization/roleDefinitions/F6C7C914-8DB3-469D-8CA1-694A8F32E121",
        )
        .unwrap();
        assert_eq!(rd, rd2);
    }
}
