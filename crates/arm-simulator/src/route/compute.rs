//! Routing of Azure ML compute paths (`.../workspaces/{ws}/computes[/{name}[/{action}]]`) and the ML per-location
//! lists (usages, VM sizes, quotas); the engine's `compute` module serves what they address.

use http::Method;

use super::{Family, Routed, Target};
use crate::reply::ArmError;

/// Canonical type of computes.
pub(crate) const COMPUTES: &str = "Microsoft.MachineLearningServices/workspaces/computes";

/// What a compute path addresses.
#[derive(Debug, Clone)]
pub(crate) enum ComputeTarget {
    /// `.../workspaces/{ws}/computes`.
    List { rg: String, ws: String },
    /// `.../workspaces/{ws}/computes/{name}[/{action}]`.
    Compute { rg: String, ws: String, name: String, action: Option<String> },
    /// `/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{location}/{usages|vmSizes|quotas}`.
    Location { location: String, what: LocationList },
}

/// The per-location lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocationList {
    Usages,
    VmSizes,
    Quotas,
}

/// Routes compute and ML-location paths; `None` for every other path.
pub(crate) fn route(method: &Method, segs: &[String]) -> Option<Result<Routed, ArmError>> {
    let is = |i: usize, s: &str| segs.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
    if !is(0, "subscriptions") {
        return None;
    }
    let sub = segs.get(1)?.clone();
    let verb = match *method {
        Method::GET | Method::HEAD => "read",
        Method::DELETE => "delete",
        _ => "write",
    };
    let ml = "Microsoft.MachineLearningServices";
    let mk = |target, op: String, action: String, scope: String| Routed {
        target: Target::Compute(target),
        sub: Some(sub.clone()),
        op,
        action,
        scope,
        family: Family::MachineLearning,
    };
    // Per-location lists.
    if segs.len() == 7 && is(2, "providers") && is(3, ml) && is(4, "locations") {
        let location = segs[5].clone();
        let (what, op, rbac) = match segs[6].to_ascii_lowercase().as_str() {
            "usages" => (LocationList::Usages, "Usages_List", "usages"),
            "vmsizes" => (LocationList::VmSizes, "VirtualMachineSizes_List", "vmsizes"),
            "quotas" => (LocationList::Quotas, "Quotas_List", "quotas"),
            _ => return None,
        };
        return Some(Ok(mk(
            ComputeTarget::Location { location, what },
            op.into(),
            format!("{ml}/locations/{rbac}/read"),
            format!("/subscriptions/{sub}"),
        )));
    }
    if !(9..=11).contains(&segs.len())
        || !is(2, "resourceGroups")
        || !is(4, "providers")
        || !is(5, ml)
        || !is(6, "workspaces")
        || !is(8, "computes")
    {
        return None;
    }
    let (rg, ws) = (segs[3].clone(), segs[7].clone());
    let ws_id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{ml}/workspaces/{ws}");
    if segs.len() == 9 {
        let op = if *method == Method::GET { "Compute_List" } else { "Compute_Unsupported" };
        return Some(Ok(mk(ComputeTarget::List { rg, ws }, op.into(), format!("{COMPUTES}/read"), ws_id)));
    }
    let name = segs[9].clone();
    let id = format!("{ws_id}/computes/{name}");
    let action = segs.get(10).cloned();
    let (op, rbac) = match (&action, method.as_str()) {
        (None, "GET") => ("Compute_Get".to_owned(), format!("{COMPUTES}/read")),
        (None, "PUT") => ("Compute_CreateOrUpdate".to_owned(), format!("{COMPUTES}/write")),
        (None, "PATCH") => ("Compute_Update".to_owned(), format!("{COMPUTES}/write")),
        (None, "DELETE") => ("Compute_Delete".to_owned(), format!("{COMPUTES}/delete")),
        (None, _) => ("Compute_Unsupported".to_owned(), format!("{COMPUTES}/{verb}")),
        (Some(a), _) => {
            let mut c = a.chars();
            let cap = c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default();
            (format!("Compute_{cap}"), format!("{COMPUTES}/{a}/action"))
        }
    };
    Some(Ok(mk(ComputeTarget::Compute { rg, ws, name, action }, op, rbac, id)))
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    #[test]
    fn routes_computes_and_location_lists_only() {
        let segs = |p: &str| p.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        let ws = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w";
        let r = route(&Method::POST, &segs(&format!("{ws}/computes/c1/stop"))).expect("routed").expect("ok");
        assert_eq!(r.op, "Compute_Stop");
        assert_eq!(r.action, format!("{COMPUTES}/stop/action"));
        let r = route(&Method::GET, &segs(&format!("{ws}/computes"))).expect("routed").expect("ok");
        assert_eq!(r.op, "Compute_List");
        let r = route(
            &Method::GET,
            &segs("/subscriptions/s/providers/Microsoft.MachineLearningServices/locations/westeurope/usages"),
        )
        .expect("routed")
        .expect("ok");
        assert_eq!(r.op, "Usages_List");
        assert!(route(&Method::GET, &segs(&format!("{ws}/onlineEndpoints/e"))).is_none());
        assert!(route(&Method::GET, &segs(ws)).is_none());
    }
}
