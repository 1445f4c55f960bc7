//! Generic ARM that users' tools call besides the typed resource APIs: resource lists by subscription and resource
//! group (`Resources_List`, `Resources_ListByResourceGroup`), resource providers and their registration
//! (`Providers_List`, `Providers_Get`, `Providers_Register`), and the errors ARM gives for namespaces a subscription
//! has not registered or that do not exist.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::engine::{Inner, Req};
use super::namespaces::{SERVED, missing_registration};
use super::reply::{ArmError, Reply};

/// The `GenericResourceExpanded` form of a resource in a resource list.
fn generic(body: &Value) -> Value {
    let mut out = json!({});
    for k in ["id", "name", "type", "location", "kind", "sku", "identity", "managedBy", "tags"] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            out[k] = v.clone();
        }
    }
    out
}

impl Inner {
    /// `Resources_List` (`rg: None`) and `Resources_ListByResourceGroup`: top-level resources, `$filter` on
    /// `resourceType eq '…'` or `name eq '…'`, `$top`, paged with `nextLink`.
    pub(crate) fn resource_list(&self, req: &Req, sub: &str, rg: Option<&str>) -> Result<Reply, ArmError> {
        let scope = match rg {
            Some(rg) => {
                let (sub, rg) = self.ensure_rg(sub, rg)?;
                format!("/subscriptions/{sub}/resourceGroups/{rg}")
            }
            None => format!("/subscriptions/{}", self.ensure_sub(sub)?),
        };
        let (mut by_type, mut by_name) = (None, None);
        if let Some(f) = req.q("$filter").map(str::trim).filter(|f| !f.is_empty()) {
            let lower = f.to_ascii_lowercase();
            let quoted = f.split('\'').nth(1).map(String::from);
            match (lower.split_whitespace().take(2).collect::<Vec<_>>().as_slice(), quoted) {
                (["resourcetype", "eq"], Some(q)) => by_type = Some(q),
                (["name", "eq"], Some(q)) => by_name = Some(q),
                _ => {
                    return Err(ArmError::bad_request(
                        "InvalidFilterInQueryString",
                        format!("Invalid $filter '{f}' specified in the query string."),
                    ));
                }
            }
        }
        let top: Option<usize> = req.q("$top").and_then(|t| t.parse().ok());
        let mut items: Vec<Value> = self
            .state
            .resources_under(&scope)
            // Only top-level (tracked) resources: children such as online endpoints are not listed.
            .filter(|r| r.rtype.matches('/').count() == 1)
            .filter(|r| by_type.as_ref().is_none_or(|t| t.eq_ignore_ascii_case(&r.rtype)))
            .filter(|r| {
                by_name.as_ref().is_none_or(|n| r.id.rsplit('/').next().is_some_and(|own| own.eq_ignore_ascii_case(n)))
            })
            .map(|r| generic(&r.body))
            .collect();
        if let Some(top) = top {
            items.truncate(top);
        }
        Ok(Reply::ok(self.page(req, items)))
    }

    /// `Providers_List` / `Providers_Get` / `Providers_Register` for a subscription.
    pub(crate) fn providers(
        &mut self,
        req: &Req,
        sub: &str,
        ns: Option<&str>,
        register: bool,
    ) -> Result<Reply, ArmError> {
        let sub = self.ensure_sub(sub)?;
        let key = sub.to_ascii_lowercase();
        let unregistered =
            self.state.subscriptions.get(&key).map(|s| s.unregistered_providers.clone()).unwrap_or_default();
        let render = |ns: &str, types: &[&str], unregistered: &[String]| {
            let state =
                if unregistered.iter().any(|u| u.eq_ignore_ascii_case(ns)) { "NotRegistered" } else { "Registered" };
            json!({
                "id": format!("/subscriptions/{sub}/providers/{ns}"),
                "namespace": ns,
                "registrationState": state,
                "registrationPolicy": "RegistrationRequired",
                "resourceTypes": types.iter().map(|t| json!({"resourceType": t, "locations": [], "apiVersions": []})).collect::<Vec<_>>(),
            })
        };
        match ns {
            None => {
                let items = SERVED.iter().map(|(n, t)| render(n, t, &unregistered)).collect();
                Ok(Reply::ok(self.page(req, items)))
            }
            Some(ns) => {
                let Some((canonical, types)) = SERVED.iter().find(|(n, _)| n.eq_ignore_ascii_case(ns)) else {
                    return Err(ArmError::new(
                        StatusCode::NOT_FOUND,
                        "InvalidResourceNamespace",
                        format!("The resource namespace '{ns}' is invalid."),
                    ));
                };
                if register && req.method == Method::POST {
                    if let Some(s) = self.state.subscriptions.get_mut(&key) {
                        s.unregistered_providers.retain(|u| !u.eq_ignore_ascii_case(canonical));
                    }
                    return Ok(Reply::ok(render(canonical, types, &[])));
                }
                Ok(Reply::ok(render(canonical, types, &unregistered)))
            }
        }
    }

    /// 409 `MissingSubscriptionRegistration` when the subscription of `path` has not registered `ns`.
    pub(crate) fn check_registered(&self, sub: &str, ns: &str) -> Result<(), ArmError> {
        match self.state.subscriptions.get(&sub.to_ascii_lowercase()) {
            Some(s) if s.unregistered_providers.iter().any(|u| u.eq_ignore_ascii_case(ns)) => {
                Err(missing_registration(ns))
            }
            _ => Ok(()),
        }
    }
}
