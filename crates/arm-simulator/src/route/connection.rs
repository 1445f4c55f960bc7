//! Routing of Azure ML workspace connection paths (`.../workspaces/{ws}/connections[/{name}[/listsecrets]]`); the
//! engine's `connection` module serves what they address.

use http::Method;

use super::{Family, Routed, Target};
use crate::reply::ArmError;

/// Canonical type of connections.
pub(crate) const CONNECTIONS: &str = "Microsoft.MachineLearningServices/workspaces/connections";

/// What a connection path addresses.
#[derive(Debug, Clone)]
pub(crate) enum ConnectionTarget {
    /// `.../workspaces/{ws}/connections`.
    List { rg: String, ws: String },
    /// `.../workspaces/{ws}/connections/{name}[/{action}]`.
    Connection { rg: String, ws: String, name: String, action: Option<String> },
}

/// Routes connection paths; `None` for every other path.
pub(crate) fn route(method: &Method, segs: &[String]) -> Option<Result<Routed, ArmError>> {
    let is = |i: usize, s: &str| segs.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
    let ml = "Microsoft.MachineLearningServices";
    if !is(0, "subscriptions")
        || !(9..=11).contains(&segs.len())
        || !is(2, "resourceGroups")
        || !is(4, "providers")
        || !is(5, ml)
        || !is(6, "workspaces")
        || !is(8, "connections")
    {
        return None;
    }
    let sub = segs[1].clone();
    let (rg, ws) = (segs[3].clone(), segs[7].clone());
    let ws_id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{ml}/workspaces/{ws}");
    let mk = |target, op: &str, action: String, scope: String| Routed {
        target: Target::Connection(target),
        sub: Some(sub.clone()),
        op: op.into(),
        action,
        scope,
        family: Family::MachineLearning,
    };
    if segs.len() == 9 {
        let op = if *method == Method::GET { "WorkspaceConnections_List" } else { "WorkspaceConnections_Unsupported" };
        return Some(Ok(mk(ConnectionTarget::List { rg, ws }, op, format!("{CONNECTIONS}/read"), ws_id)));
    }
    let name = segs[9].clone();
    let id = format!("{ws_id}/connections/{name}");
    let action = segs.get(10).cloned();
    let (op, rbac) = match (action.as_deref().map(str::to_ascii_lowercase).as_deref(), method.as_str()) {
        (None, "GET") => ("WorkspaceConnections_Get", format!("{CONNECTIONS}/read")),
        (None, "PUT") => ("WorkspaceConnections_Create", format!("{CONNECTIONS}/write")),
        (None, "PATCH") => ("WorkspaceConnections_Update", format!("{CONNECTIONS}/write")),
        (None, "DELETE") => ("WorkspaceConnections_Delete", format!("{CONNECTIONS}/delete")),
        (Some("listsecrets"), "POST") => {
            ("WorkspaceConnections_ListSecrets", format!("{CONNECTIONS}/listsecrets/action"))
        }
        _ => ("WorkspaceConnections_Unsupported", format!("{CONNECTIONS}/write")),
    };
    Some(Ok(mk(ConnectionTarget::Connection { rg, ws, name, action }, op, rbac, id)))
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    #[test]
    fn routes_connections_only() {
        let segs = |p: &str| p.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        let ws = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w";
        let r = route(&Method::POST, &segs(&format!("{ws}/connections/c1/listsecrets"))).expect("routed").expect("ok");
        assert_eq!(r.op, "WorkspaceConnections_ListSecrets");
        let r = route(&Method::PUT, &segs(&format!("{ws}/connections/c1"))).expect("routed").expect("ok");
        assert_eq!(r.op, "WorkspaceConnections_Create");
        let r = route(&Method::GET, &segs(&format!("{ws}/connections"))).expect("routed").expect("ok");
        assert_eq!(r.op, "WorkspaceConnections_List");
        assert!(route(&Method::GET, &segs(&format!("{ws}/computes/c"))).is_none());
    }
}
