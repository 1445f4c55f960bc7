//! Entra ID stand-in: token endpoint, OpenID configuration, bearer validation and RBAC evaluation.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::federation::check_assertion;
use super::model::{PrincipalKind, SimState, scope_contains};
use super::reply::{ArmError, Reply};

/// Who is calling.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Caller {
    pub object_id: String,
    pub app_id: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TokenInfo {
    caller: Caller,
    /// Wall-clock expiry, as Entra's `exp` claim: a token saved by a sandbox stays valid after its restart.
    expires: Timestamp,
    audience_ok: bool,
}

/// Issued tokens (serialisable, so a restarted sandbox still accepts the tokens its clients hold).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Tokens {
    map: HashMap<String, TokenInfo>,
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Reply {
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": jiff::Timestamp::now().to_string(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

impl Tokens {
    /// Every access token issued so far (for leak tests).
    pub fn values(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Handles `POST /{tenant}/oauth2/v2.0/token` (client credentials).
    pub fn issue(
        &mut self,
        state: &SimState,
        tenant: &str,
        form: &HashMap<String, String>,
        lifetime: Duration,
        endpoint: &str,
    ) -> (Reply, Option<String>) {
        if !tenant.eq_ignore_ascii_case(&state.tenant_id) {
            return (
                aad_error(StatusCode::BAD_REQUEST, "invalid_request", 90002, &format!("Tenant '{tenant}' not found.")),
                None,
            );
        }
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return (
                aad_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    70003,
                    "The app requested an unsupported grant type; only client_credentials is supported here.",
                ),
                None,
            );
        }
        let Some(client_id) = form.get("client_id") else {
            return (
                aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'client_id'.",
                ),
                None,
            );
        };
        let Some(scope) = form.get("scope") else {
            return (
                aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.",
                ),
                None,
            );
        };
        if !scope.split(' ').all(|s| s.ends_with("/.default")) {
            return (
                aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier."
                    ),
                ),
                None,
            );
        }
        let Some(p) = state.principals.values().find(|p| {
            p.kind == PrincipalKind::ServicePrincipal
                && p.app_id.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(client_id))
        }) else {
            return (
                aad_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    700016,
                    &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
                ),
                None,
            );
        };
        if let Some(secret) = form.get("client_secret") {
            if !p.secrets.iter().any(|s| s.expose() == secret) {
                return (
                    aad_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        7000215,
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                    ),
                    None,
                );
            }
        } else if let Some(assertion) = form.get("client_assertion") {
            if form.get("client_assertion_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return (
                    aad_error(StatusCode::BAD_REQUEST, "invalid_request", 50027, "Invalid client_assertion_type."),
                    None,
                );
            }
            if let Err(r) = check_assertion(&state.oidc_issuers, &p.federated_credentials, assertion) {
                let status = if r.code == 50027 { StatusCode::BAD_REQUEST } else { StatusCode::UNAUTHORIZED };
                return (aad_error(status, "invalid_client", r.code, &r.description), None);
            }
        } else {
            return (
                aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                ),
                None,
            );
        }
        let resource = scope.trim_end_matches("/.default").trim_end_matches('/');
        let audience_ok = ["https://management.azure.com", "https://management.core.windows.net", endpoint]
            .iter()
            .any(|a| resource.eq_ignore_ascii_case(a.trim_end_matches('/')));
        let now = jiff::Timestamp::now().as_second();
        let secs = lifetime.as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"azml-sandbox"}"#);
        let claims = json!({
            "aud": resource, "iss": format!("https://sts.windows.net/{}/", state.tenant_id),
            "iat": now, "nbf": now, "exp": now + secs as i64,
            "appid": p.app_id, "oid": p.object_id, "sub": p.object_id, "tid": state.tenant_id,
            "idtyp": "app", "ver": "1.0",
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let token = format!("{header}.{payload}.{sig}");
        let caller = Caller {
            object_id: p.object_id.clone(),
            app_id: p.app_id.clone().unwrap_or_default(),
            name: p.display_name.clone(),
        };
        let oid = caller.object_id.clone();
        let now = Timestamp::now();
        self.map.retain(|_, t| t.expires > now);
        let expires = SignedDuration::try_from(lifetime).ok().and_then(|d| now.checked_add(d).ok()).unwrap_or(now);
        self.map.insert(token.clone(), TokenInfo { caller, expires, audience_ok });
        (
            Reply::ok(
                json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": token}),
            ),
            Some(oid),
        )
    }

    /// Validates an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>, endpoint: &str, tenant: &str) -> Result<Caller, ArmError> {
        let www = |err: &str, desc: &str| {
            format!("Bearer authorization_uri=\"{endpoint}/{tenant}\", error=\"{err}\", error_description=\"{desc}\"")
        };
        let Some(h) = header else {
            let d = "The authentication failed because of missing 'Authorization' header.";
            return Err(ArmError::new(StatusCode::UNAUTHORIZED, "AuthenticationFailed", d)
                .header("WWW-Authenticate", www("invalid_token", d)));
        };
        let token = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")).unwrap_or("").trim();
        let Some(info) = self.map.get(token) else {
            let d = "The access token is invalid.";
            return Err(ArmError::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", d)
                .header("WWW-Authenticate", www("invalid_token", d)));
        };
        if info.expires <= Timestamp::now() {
            let d = "The access token expiry UTC time is earlier than current UTC time.";
            return Err(ArmError::new(StatusCode::UNAUTHORIZED, "ExpiredAuthenticationToken", d)
                .header("WWW-Authenticate", www("invalid_token", d)));
        }
        if !info.audience_ok {
            let d = "The access token has been obtained for wrong audience or resource.";
            return Err(ArmError::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationTokenAudience", d)
                .header("WWW-Authenticate", www("invalid_token", d)));
        }
        Ok(info.caller.clone())
    }
}

/// The OpenID configuration document MSAL-based clients read first.
pub(crate) fn openid_configuration(endpoint: &str, tenant: &str) -> Value {
    json!({
        "token_endpoint": format!("{endpoint}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{endpoint}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{endpoint}/{tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{endpoint}/oidc/userinfo"),
        "authorization_endpoint": format!("{endpoint}/{tenant}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{endpoint}/{tenant}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{endpoint}/{tenant}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
    })
}

/// MSAL's instance-discovery answer: the simulator is its own (only) alias.
pub(crate) fn instance_discovery(endpoint: &str, tenant: &str) -> Value {
    let host = endpoint.trim_start_matches("https://");
    json!({
        "tenant_discovery_endpoint": format!("{endpoint}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    })
}

fn wildcard(pattern: &str, action: &str) -> bool {
    globset::GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher().is_match(action))
        .unwrap_or(false)
}

/// Name of a role that lets `object_id` perform `action` on `scope` (for activity-log `authorization.role`).
pub(crate) fn granting_role(state: &SimState, object_id: &str, action: &str, scope: &str) -> Option<String> {
    let ids = state.principal_and_groups(object_id);
    state.assignments_around(scope, false).into_iter().find_map(|ra| {
        let rd = state.role_definitions.get(&ra.role_definition_guid)?;
        let grants = ids.iter().any(|id| id.eq_ignore_ascii_case(&ra.principal_id))
            && scope_contains(&ra.scope, scope)
            && rd.actions.iter().any(|a| wildcard(a, action))
            && !rd.not_actions.iter().any(|a| wildcard(a, action));
        grants.then(|| rd.role_name.clone())
    })
}

/// Whether `object_id` (directly or through a group) holds a role allowing `action` at or above `scope`.
pub(crate) fn is_authorized(state: &SimState, object_id: &str, action: &str, scope: &str) -> bool {
    let ids = state.principal_and_groups(object_id);
    state.assignments_around(scope, false).into_iter().any(|ra| {
        ids.iter().any(|id| id.eq_ignore_ascii_case(&ra.principal_id))
            && scope_contains(&ra.scope, scope)
            && state.role_definitions.get(&ra.role_definition_guid).is_some_and(|rd| {
                rd.actions.iter().any(|a| wildcard(a, action)) && !rd.not_actions.iter().any(|a| wildcard(a, action))
            })
    })
}

/// 403 AuthorizationFailed naming principal, action and scope.
pub(crate) fn authorization_failed(caller: &Caller, action: &str, scope: &str) -> ArmError {
    ArmError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            caller.app_id, caller.object_id
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{World, roles};

    #[test]
    fn rbac_semantics_of_builtin_roles_and_groups() {
        let w = World::default_sandbox();
        let mut s = w.state.clone();
        let ws = format!("{}/providers/Microsoft.MachineLearningServices/workspaces/w", w.resource_group_id);
        let op = &w.operator.object_id;
        assert!(is_authorized(&s, op, "Microsoft.MachineLearningServices/workspaces/write", &ws));
        assert!(is_authorized(&s, op, "Microsoft.Authorization/roleAssignments/write", &ws));
        let rd = &w.reader.object_id;
        assert!(is_authorized(&s, rd, "Microsoft.Storage/storageAccounts/read", &ws));
        assert!(!is_authorized(&s, rd, "Microsoft.Storage/storageAccounts/listKeys/action", &ws));
        assert!(!is_authorized(&s, &w.nobody.object_id, "Microsoft.Storage/storageAccounts/read", &ws));
        // Contributor alone cannot write role assignments.
        s.assign_role(&w.resource_group_id, roles::CONTRIBUTOR, &w.group);
        assert!(is_authorized(&s, &w.users[0], "Microsoft.Storage/storageAccounts/write", &ws));
        assert!(!is_authorized(&s, &w.users[0], "Microsoft.Authorization/roleAssignments/write", &ws));
        assert!(!is_authorized(
            &s,
            &w.users[0],
            "Microsoft.Storage/storageAccounts/write",
            &w.storage_account_id.replace("rg-sandbox", "other")
        ));
    }
}
