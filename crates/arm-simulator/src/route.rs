//! Case-insensitive routing of ARM paths to operations, RBAC actions and api-version families.

use http::{Method, StatusCode};

use super::reply::ArmError;

pub(crate) mod compute;
pub(crate) mod connection;

/// api-version families (which resource provider's published versions apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Resources,
    Storage,
    MachineLearning,
    Authorization,
    ActivityLog,
    KeyVault,
    Insights,
    ContainerRegistry,
    /// Poll URLs carry the api-version of the originating call; any well-formed version is fine.
    Poll,
}

/// A resource type the simulator serves below resource groups.
#[derive(Debug)]
pub(crate) struct RType {
    /// Canonical full type.
    pub full: &'static str,
    /// Operation-name prefix (swagger operationId prefix).
    pub prefix: &'static str,
    pub family: Family,
}

pub(crate) const STORAGE: &str = "Microsoft.Storage/storageAccounts";
pub(crate) const VAULTS: &str = "Microsoft.KeyVault/vaults";
pub(crate) const COMPONENTS: &str = "Microsoft.Insights/components";
pub(crate) const REGISTRIES: &str = "Microsoft.ContainerRegistry/registries";
pub(crate) const WORKSPACES: &str = "Microsoft.MachineLearningServices/workspaces";
pub(crate) const ENDPOINTS: &str = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints";
pub(crate) const DEPLOYMENTS: &str = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments";

pub(crate) const TYPES: &[RType] = &[
    RType { full: STORAGE, prefix: "StorageAccounts", family: Family::Storage },
    RType { full: VAULTS, prefix: "Vaults", family: Family::KeyVault },
    RType { full: COMPONENTS, prefix: "Components", family: Family::Insights },
    RType { full: REGISTRIES, prefix: "Registries", family: Family::ContainerRegistry },
    RType { full: WORKSPACES, prefix: "Workspaces", family: Family::MachineLearning },
    RType { full: ENDPOINTS, prefix: "OnlineEndpoints", family: Family::MachineLearning },
    RType { full: DEPLOYMENTS, prefix: "OnlineDeployments", family: Family::MachineLearning },
];

fn find_type(full: &str) -> Option<&'static RType> {
    TYPES.iter().find(|t| t.full.eq_ignore_ascii_case(full))
}

/// What a path addresses.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Subscription,
    ResourceGroupList,
    ResourceGroup {
        rg: String,
    },
    MoveAction {
        rg: String,
        validate: bool,
    },
    ActivityLog,
    /// `Resources_List` (`rg: None`) / `Resources_ListByResourceGroup`.
    ResourceList {
        rg: Option<String>,
    },
    /// `Providers_List` (`ns: None`), `Providers_Get`, `Providers_Register`.
    Providers {
        ns: Option<String>,
        register: bool,
    },
    Poll {
        op_id: String,
        status: bool,
    },
    RoleAssignment {
        scope: String,
        name: Option<String>,
    },
    RoleDefinition {
        guid: Option<String>,
    },
    Collection {
        rg: Option<String>,
        rtype: &'static RType,
        parent_names: Vec<String>,
    },
    Resource {
        rg: String,
        rtype: &'static RType,
        names: Vec<String>,
        action: Option<String>,
    },
    /// Azure ML computes and per-location lists (`route::compute`, served by `engine::compute`).
    Compute(compute::ComputeTarget),
    /// Azure ML workspace connections (`route::connection`, served by `engine::connection`).
    Connection(connection::ConnectionTarget),
}

/// A routed request.
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    pub target: Target,
    /// Subscription id as written in the path (throttling key), if any.
    pub sub: Option<String>,
    /// Operation name for the call log and fault matching.
    pub op: String,
    /// RBAC action.
    pub action: String,
    /// RBAC scope (and activity-log resource id).
    pub scope: String,
    pub family: Family,
}

/// Builds the id of a resource of `rtype` with `names` in `sub`/`rg` (type segments in canonical casing).
pub(crate) fn resource_id(sub: &str, rg: &str, rtype: &RType, names: &[String]) -> String {
    let mut parts = rtype.full.split('/');
    let ns = parts.next().unwrap_or_default();
    let mut id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}");
    for (t, n) in parts.zip(names) {
        id.push('/');
        id.push_str(t);
        id.push('/');
        id.push_str(n);
    }
    id
}

fn parent_type(rtype: &RType) -> Option<&'static RType> {
    let (parent, _) = rtype.full.rsplit_once('/')?;
    find_type(parent)
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

fn not_found_type(ns: &str, t: &str) -> ArmError {
    super::namespaces::unknown_type(ns, t)
}

/// Routes `method` + decoded path segments.
pub(crate) fn route(method: &Method, segs: &[String]) -> Result<Routed, ArmError> {
    let is = |i: usize, s: &str| segs.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
    let verb = match *method {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        _ => "write",
    };
    // Role assignments/definitions are extension resources: `{scope}/providers/Microsoft.Authorization/...`.
    if let Some(p) =
        (0..segs.len().saturating_sub(1)).rev().find(|&i| is(i, "providers") && is(i + 1, "Microsoft.Authorization"))
    {
        let scope = format!("/{}", segs[..p].join("/"));
        let sub = if is(0, "subscriptions") { segs.get(1).cloned() } else { None };
        let rest = &segs[p + 2..];
        let kind = rest.first().map(|s| s.to_ascii_lowercase());
        let name = rest.get(1).cloned();
        let (target, op, action) = match (kind.as_deref(), rest.len()) {
            (Some("roleassignments"), 1 | 2) => {
                let op = match (method.as_str(), rest.len()) {
                    ("GET", 1) => "RoleAssignments_ListForScope",
                    ("GET", _) => "RoleAssignments_Get",
                    ("PUT", _) => "RoleAssignments_Create",
                    ("DELETE", _) => "RoleAssignments_Delete",
                    _ => "RoleAssignments_Unsupported",
                };
                (
                    Target::RoleAssignment { scope: scope.clone(), name },
                    op,
                    format!("Microsoft.Authorization/roleAssignments/{verb}"),
                )
            }
            (Some("roledefinitions"), 1 | 2) => {
                let op = if rest.len() == 1 { "RoleDefinitions_List" } else { "RoleDefinitions_Get" };
                (Target::RoleDefinition { guid: name }, op, format!("Microsoft.Authorization/roleDefinitions/{verb}"))
            }
            _ => return Err(not_found_type("Microsoft.Authorization", &rest.join("/"))),
        };
        return Ok(Routed { target, sub, op: op.into(), action, scope, family: Family::Authorization });
    }
    if let Some(routed) = compute::route(method, segs) {
        return routed;
    }
    if let Some(routed) = connection::route(method, segs) {
        return routed;
    }
    if !is(0, "subscriptions") || segs.len() < 2 {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested path is not an ARM resource path.",
        ));
    }
    let sub = segs[1].clone();
    let sub_scope = format!("/subscriptions/{sub}");
    let mk = |target, op: &str, action: String, scope: String, family| Routed {
        target,
        sub: Some(sub.clone()),
        op: op.into(),
        action,
        scope,
        family,
    };
    if segs.len() == 2 {
        return Ok(mk(
            Target::Subscription,
            "Subscriptions_Get",
            "Microsoft.Resources/subscriptions/read".into(),
            sub_scope,
            Family::Resources,
        ));
    }
    if segs.len() == 3 && is(2, "resources") {
        return Ok(mk(
            Target::ResourceList { rg: None },
            "Resources_List",
            "Microsoft.Resources/subscriptions/resources/read".into(),
            sub_scope,
            Family::Resources,
        ));
    }
    if segs.len() == 5 && is(2, "resourceGroups") && is(4, "resources") {
        let rg = segs[3].clone();
        return Ok(mk(
            Target::ResourceList { rg: Some(rg.clone()) },
            "Resources_ListByResourceGroup",
            "Microsoft.Resources/subscriptions/resourceGroups/resources/read".into(),
            format!("{sub_scope}/resourceGroups/{rg}"),
            Family::Resources,
        ));
    }
    if is(2, "providers") && (segs.len() == 3 || segs.len() == 4 || (segs.len() == 5 && is(4, "register"))) {
        let register = segs.len() == 5;
        let op = match (segs.len(), register) {
            (3, _) => "Providers_List",
            (_, true) => "Providers_Register",
            _ => "Providers_Get",
        };
        let action = if register {
            "Microsoft.Resources/subscriptions/providers/register/action"
        } else {
            "Microsoft.Resources/subscriptions/providers/read"
        };
        return Ok(mk(
            Target::Providers { ns: segs.get(3).cloned(), register },
            op,
            action.into(),
            sub_scope,
            Family::Resources,
        ));
    }
    // ARM's own result monitor (resource group deletion, moves): `/subscriptions/{sub}/operationresults/{id}`.
    if segs.len() == 4 && is(2, "operationresults") {
        return Ok(mk(
            Target::Poll { op_id: segs[3].clone(), status: false },
            "Operations_GetResult",
            "Microsoft.Resources/subscriptions/operationresults/read".into(),
            sub_scope,
            Family::Poll,
        ));
    }
    let (rg, p) = if is(2, "resourceGroups") {
        match segs.len() {
            3 => {
                return Ok(mk(
                    Target::ResourceGroupList,
                    "ResourceGroups_List",
                    "Microsoft.Resources/subscriptions/resourceGroups/read".into(),
                    sub_scope,
                    Family::Resources,
                ));
            }
            4 => {
                let rg = segs[3].clone();
                let op = match *method {
                    Method::GET => "ResourceGroups_Get",
                    Method::HEAD => "ResourceGroups_CheckExistence",
                    Method::PUT => "ResourceGroups_CreateOrUpdate",
                    Method::DELETE => "ResourceGroups_Delete",
                    Method::PATCH => "ResourceGroups_Update",
                    _ => "ResourceGroups_Unsupported",
                };
                return Ok(mk(
                    Target::ResourceGroup { rg: rg.clone() },
                    op,
                    format!("Microsoft.Resources/subscriptions/resourceGroups/{verb}"),
                    format!("{sub_scope}/resourceGroups/{rg}"),
                    Family::Resources,
                ));
            }
            5 if is(4, "moveResources") || is(4, "validateMoveResources") => {
                let rg = segs[3].clone();
                let validate = is(4, "validateMoveResources");
                let (op, act) = if validate {
                    ("Resources_ValidateMoveResources", "validateMoveResources")
                } else {
                    ("Resources_MoveResources", "moveResources")
                };
                return Ok(mk(
                    Target::MoveAction { rg: rg.clone(), validate },
                    op,
                    format!("Microsoft.Resources/subscriptions/resourceGroups/{act}/action"),
                    format!("{sub_scope}/resourceGroups/{rg}"),
                    Family::Resources,
                ));
            }
            _ if is(4, "providers") && segs.len() >= 6 => (Some(segs[3].clone()), 4),
            _ => return Err(not_found_type("Microsoft.Resources", &segs[2..].join("/"))),
        }
    } else if is(2, "providers") && segs.len() >= 4 {
        (None, 2)
    } else {
        return Err(not_found_type("Microsoft.Resources", &segs[2..].join("/")));
    };
    let ns = &segs[p + 1];
    let rest = &segs[p + 2..];
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    if rg.is_none() && ns.eq_ignore_ascii_case("Microsoft.Insights") && lower == ["eventtypes", "management", "values"]
    {
        return Ok(mk(
            Target::ActivityLog,
            "ActivityLogs_List",
            "Microsoft.Insights/eventtypes/values/read".into(),
            sub_scope,
            Family::ActivityLog,
        ));
    }
    let monitor = |kind: &str| match kind {
        "operationstatuses" | "workspaceoperationsstatus" | "mfeoperationsstatus" => Some(true),
        "operationresults" | "mfeoperationresults" | "asyncoperations" => Some(false),
        _ => None,
    };
    if rg.is_none()
        && rest.len() == 4
        && lower[0] == "locations"
        && let Some(status) = monitor(&lower[2])
    {
        return Ok(mk(
            Target::Poll { op_id: rest[3].clone(), status },
            if status { "Operations_GetStatus" } else { "Operations_GetResult" },
            format!("{ns}/locations/{}/read", lower[2]),
            sub_scope,
            Family::Poll,
        ));
    }
    let types: Vec<&str> = rest.iter().step_by(2).map(String::as_str).collect();
    let names: Vec<String> = rest.iter().skip(1).step_by(2).cloned().collect();
    let full = format!("{ns}/{}", types.join("/"));
    if !rest.len().is_multiple_of(2)
        && let Some(rtype) = find_type(&full)
    {
        // A collection: list below the parent (or the resource group / subscription).
        let op = match (rtype.prefix, rg.is_some(), names.is_empty()) {
            (_, _, false) => format!("{}_List", rtype.prefix),
            (_, true, true) => format!("{}_ListByResourceGroup", rtype.prefix),
            ("StorageAccounts", false, true) => "StorageAccounts_List".into(),
            (_, false, true) => format!("{}_ListBySubscription", rtype.prefix),
        };
        let scope = match (&rg, parent_type(rtype)) {
            (Some(rg), Some(pt)) if !names.is_empty() => resource_id(&sub, rg, pt, &names),
            (Some(rg), _) => format!("{sub_scope}/resourceGroups/{rg}"),
            (None, _) => sub_scope.clone(),
        };
        if !names.is_empty() && rg.is_none() {
            return Err(not_found_type(ns, &types.join("/")));
        }
        return Ok(mk(
            Target::Collection { rg, rtype, parent_names: names },
            &op,
            format!("{}/read", rtype.full),
            scope,
            rtype.family,
        ));
    }
    let Some(rg) = rg else {
        return Err(not_found_type(ns, &types.join("/")));
    };
    let (rtype, action) = if rest.len().is_multiple_of(2) {
        (find_type(&full), None)
    } else {
        let res_types = &types[..types.len() - 1];
        (find_type(&format!("{ns}/{}", res_types.join("/"))), rest.last().cloned())
    };
    let Some(rtype) = rtype else {
        return Err(not_found_type(ns, &types.join("/")));
    };
    let id = resource_id(&sub, &rg, rtype, &names);
    let (op, rbac) = match &action {
        Some(a) => (format!("{}_{}", rtype.prefix, cap(a)), format!("{}/{a}/action", rtype.full)),
        None => {
            let op = match (rtype.prefix, method.as_str()) {
                ("StorageAccounts", "GET") => "GetProperties",
                ("StorageAccounts", "PUT") => "Create",
                (_, "GET") => "Get",
                (_, "PUT") => "CreateOrUpdate",
                (_, "PATCH") => "Update",
                (_, "DELETE") => "Delete",
                _ => "Unsupported",
            };
            (format!("{}_{op}", rtype.prefix), format!("{}/{verb}", rtype.full))
        }
    };
    Ok(mk(Target::Resource { rg, rtype, names, action }, &op, rbac, id, rtype.family))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').filter(|s| !s.is_empty()).map(String::from).collect()
    }

    #[test]
    fn routes_resources_actions_collections_case_insensitively() {
        let r = route(
            &Method::POST,
            &segs("/SUBSCRIPTIONS/s/resourcegroups/rg/providers/microsoft.storage/STORAGEACCOUNTS/sa/listKeys"),
        )
        .unwrap();
        assert_eq!(r.op, "StorageAccounts_ListKeys");
        assert_eq!(r.action, "Microsoft.Storage/storageAccounts/listKeys/action");
        assert_eq!(r.scope, "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa");
        let r = route(
            &Method::GET,
            &segs("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/onlineEndpoints"),
        )
        .unwrap();
        assert_eq!(r.op, "OnlineEndpoints_List");
        assert!(r.scope.ends_with("/workspaces/w"));
        let r = route(&Method::GET, &segs("/subscriptions/s/providers/Microsoft.Storage/storageAccounts")).unwrap();
        assert_eq!(r.op, "StorageAccounts_List");
        let r = route(
            &Method::PUT,
            &segs("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Authorization/roleAssignments/x"),
        )
        .unwrap();
        assert_eq!(r.op, "RoleAssignments_Create");
        assert_eq!(r.scope, "/subscriptions/s/resourceGroups/rg");
        assert!(route(&Method::GET, &segs("/subscriptions/s/resourceGroups/rg/providers/Foo.Bar/baz/x")).is_err());
    }
}
