//! Pure planning of a connection: the spec (resolved against its workspace), the credentials read from its Secret
//! and what Azure holds in, the one write to make now out. No I/O, so every rule is a unit test.
//!
//! Rules, in order:
//! - absent → create it (PUT with the credentials);
//! - present but without this resource's owner mark in `properties.metadata` → stall `AlreadyExists`;
//! - category, target, auth type, metadata or sharing differ from the spec → one PUT (Azure's PUT replaces the
//!   connection, so it carries the credentials too);
//! - the credentials' hash differs from the one recorded in status (the Secret changed, or nothing was recorded
//!   yet) → one PUT;
//! - nothing differs → no write: Azure never returns credentials, so an unchanged Secret sends nothing.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use crate::api::conditions::Reason;
use crate::api::v1alpha1::{CONNECTION_OWNER_KEY, ConnectionAuthType};
use crate::azure::Secret;
use crate::azure::connections::{Connection, ConnectionProperties, Credentials};

/// What the spec asks of Azure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredConnection {
    /// ConnectionCategory.
    pub category: String,
    /// Target.
    pub target: String,
    /// Auth type.
    pub auth_type: ConnectionAuthType,
    /// User metadata (without the owner mark).
    pub metadata: BTreeMap<String, String>,
    /// isSharedToAll.
    pub shared_to_all: bool,
    /// Value of the owner mark (`<namespace>/<name>/<uid>`).
    pub owner: String,
}

/// Credentials read from the Secret, and their salted hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedCredentials {
    /// What is sent (None and AAD: nothing).
    pub credentials: Option<Credentials>,
    /// Hex SHA-256 of the salt and the credentials (None and AAD: `None`).
    pub hash: Option<String>,
}

/// Why the Secret cannot give the credentials: (reason, message naming the Secret or key).
pub type SecretProblem = (Reason, String);

/// Reads the credentials `auth_type` needs from the Secret `secret_name` (`data`: its data, `None` when the Secret
/// does not exist). `salt` (the resource's uid) keeps equal credentials of two resources from hashing alike.
pub fn resolve_credentials(
    auth_type: ConnectionAuthType,
    secret_name: Option<&str>,
    data: Option<&BTreeMap<String, ByteString>>,
    salt: &str,
) -> Result<ResolvedCredentials, SecretProblem> {
    if matches!(auth_type, ConnectionAuthType::None | ConnectionAuthType::Aad) {
        return Ok(ResolvedCredentials::default());
    }
    let Some(name) = secret_name else {
        return Err((
            Reason::InvalidSpec,
            format!("spec.credentialsFrom is required for authType {}", auth_type.as_str()),
        ));
    };
    let Some(data) = data else {
        return Err((
            Reason::SecretNotFound,
            format!(
                "Secret {name} (spec.credentialsFrom.secretName) does not exist in the namespace; create it with the credential fields of authType {}",
                auth_type.as_str()
            ),
        ));
    };
    let text = |key: &str| -> Result<Option<Secret>, SecretProblem> {
        match data.get(key) {
            None => Ok(None),
            Some(v) if v.0.is_empty() => Ok(None),
            Some(v) => String::from_utf8(v.0.clone())
                .map(|s| Some(Secret::new(s)))
                .map_err(|_| (Reason::InvalidSpec, format!("key {key} of Secret {name} is not UTF-8 text"))),
        }
    };
    let mut creds = Credentials::default();
    if auth_type == ConnectionAuthType::CustomKeys {
        creds.custom_keys = true;
        for key in data.keys() {
            if let Some(v) = text(key)? {
                creds.fields.insert(key.clone(), v);
            }
        }
        if creds.fields.is_empty() {
            return Err((
                Reason::SecretNotFound,
                format!("Secret {name} has no keys; CustomKeys sends every key of it"),
            ));
        }
    } else {
        let (required, optional) = auth_type.credential_keys();
        let missing: Vec<&str> =
            required.iter().copied().filter(|k| data.get(*k).is_none_or(|v| v.0.is_empty())).collect();
        if !missing.is_empty() {
            return Err((
                Reason::SecretNotFound,
                format!(
                    "Secret {name} has no key {} (authType {} needs {})",
                    missing.join(", no key "),
                    auth_type.as_str(),
                    required.join(", ")
                ),
            ));
        }
        for key in required.iter().chain(optional) {
            if let Some(v) = text(key)? {
                creds.fields.insert((*key).to_owned(), v);
            }
        }
    }
    let hash = credentials_hash(auth_type, &creds, salt);
    Ok(ResolvedCredentials { credentials: Some(creds), hash: Some(hash) })
}

/// Hex SHA-256 over the salt, the auth type and the fields (length-prefixed, in key order).
pub fn credentials_hash(auth_type: ConnectionAuthType, creds: &Credentials, salt: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut put = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    put(salt.as_bytes());
    put(auth_type.as_str().as_bytes());
    for (k, v) in &creds.fields {
        put(k.as_bytes());
        put(v.expose().as_bytes());
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why the connection is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum WriteReason {
    /// It does not exist.
    Create,
    /// A property differs from the spec.
    Properties,
    /// The credentials changed (or were never recorded as sent).
    Credentials,
}

/// The connection's one action: a PUT of the whole connection (the API has no PATCH), and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Put {
    /// Why it is sent.
    pub reason: WriteReason,
    /// What differs (field names; never a credential).
    pub what: String,
}

impl std::fmt::Display for Put {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PUT the connection ({:?}): {} (WorkspaceConnections_Create)", self.reason, self.what)
    }
}

impl crate::reconciler::plan::PlanAction for Put {}

/// The connection's plan: THE plan shape ([`crate::reconciler::plan::Plan`]) with at most one [`Put`].
pub type Plan = crate::reconciler::plan::Plan<Put>;

/// The metadata sent: the user's plus the owner mark.
fn metadata(desired: &DesiredConnection) -> BTreeMap<String, String> {
    let mut m = desired.metadata.clone();
    m.insert(CONNECTION_OWNER_KEY.to_owned(), desired.owner.clone());
    m
}

/// The PUT body.
pub fn body(desired: &DesiredConnection, creds: &ResolvedCredentials) -> Connection {
    Connection {
        properties: ConnectionProperties {
            auth_type: desired.auth_type.as_str().to_owned(),
            category: Some(desired.category.clone()),
            target: Some(desired.target.clone()),
            metadata: Some(metadata(desired)),
            is_shared_to_all: Some(desired.shared_to_all),
            credentials: creds.credentials.clone(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The owner mark of a connection (the key read without regard to case).
pub fn owner_of(c: &Connection) -> Option<&str> {
    c.properties
        .metadata
        .as_ref()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(CONNECTION_OWNER_KEY))
        .map(|(_, v)| v.as_str())
}

/// The properties that differ from the spec, as `field (Azure: x, spec: y)`.
pub fn differences(desired: &DesiredConnection, c: &Connection) -> Vec<String> {
    let p = &c.properties;
    let mut out = Vec::new();
    let mut differs = |field: &str, azure: &str, spec: &str, same: bool| {
        if !same {
            out.push(format!("{field} (Azure: {azure}, spec: {spec})"));
        }
    };
    let category = p.category.as_deref().unwrap_or("-");
    differs("category", category, &desired.category, category.eq_ignore_ascii_case(&desired.category));
    differs(
        "authType",
        &p.auth_type,
        desired.auth_type.as_str(),
        p.auth_type.eq_ignore_ascii_case(desired.auth_type.as_str()),
    );
    let target = p.target.as_deref().unwrap_or("-");
    differs("target", target, &desired.target, target == desired.target);
    let shared = p.is_shared_to_all.unwrap_or(true);
    differs("sharedToAll", &shared.to_string(), &desired.shared_to_all.to_string(), shared == desired.shared_to_all);
    let have: BTreeMap<&str, &str> = p
        .metadata
        .iter()
        .flatten()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(CONNECTION_OWNER_KEY))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let want: BTreeMap<&str, &str> = desired.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if have != want {
        out.push("metadata".to_owned());
    }
    out
}

/// The plan. Pure; see the module docs for the rules. `sent_hash`: `status.credentialsHash`.
pub fn plan(
    desired: &DesiredConnection,
    observed: Option<&Connection>,
    creds: &ResolvedCredentials,
    sent_hash: Option<&str>,
) -> Plan {
    let mut plan = Plan::default();
    let Some(c) = observed else {
        plan.actions.push(Put { reason: WriteReason::Create, what: "creating the connection".into() });
        return plan;
    };
    if owner_of(c) != Some(desired.owner.as_str()) {
        plan.stall = Some((
            Reason::AlreadyExists,
            format!(
                "a connection of that name exists in the workspace and was not created by this resource (metadata {CONNECTION_OWNER_KEY} is not {}); choose another azureName",
                desired.owner
            ),
        ));
        return plan;
    }
    let diff = differences(desired, c);
    if !diff.is_empty() {
        plan.actions.push(Put { reason: WriteReason::Properties, what: diff.join(", ") });
    } else if creds.hash.as_deref() != sent_hash {
        plan.actions.push(Put { reason: WriteReason::Credentials, what: "the credentials Secret changed".into() });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    fn desired() -> DesiredConnection {
        DesiredConnection {
            category: "Git".into(),
            target: "https://github.com/contoso/ml".into(),
            auth_type: ConnectionAuthType::Pat,
            metadata: BTreeMap::from([("team".to_owned(), "risk".to_owned())]),
            shared_to_all: true,
            owner: "team-a/repo/uid-1".into(),
        }
    }

    fn in_azure(d: &DesiredConnection) -> Connection {
        let mut c = body(d, &ResolvedCredentials::default());
        c.id = Some("/x/connections/repo".into());
        c.properties.group = Some("GenericProtocol".into());
        c
    }

    #[test]
    fn credentials_come_from_the_fields_the_auth_type_names() {
        let pat = resolve_credentials(
            ConnectionAuthType::Pat,
            Some("s"),
            Some(&data(&[("pat", "ghp_1"), ("other", "x")])),
            "uid",
        )
        .expect("resolves");
        let creds = pat.credentials.clone().expect("creds");
        assert_eq!(creds.fields.keys().collect::<Vec<_>>(), ["pat"]);
        assert_eq!(pat.hash.as_ref().map(String::len), Some(64));
        assert!(!format!("{pat:?}").contains("ghp_1"), "Debug redacts");
        let up = resolve_credentials(
            ConnectionAuthType::UsernamePassword,
            Some("s"),
            Some(&data(&[("username", "u"), ("password", "p"), ("securityToken", "t")])),
            "uid",
        )
        .expect("resolves");
        assert_eq!(up.credentials.expect("creds").fields.len(), 3);
        let custom = resolve_credentials(
            ConnectionAuthType::CustomKeys,
            Some("s"),
            Some(&data(&[("a", "1"), ("b", "2")])),
            "uid",
        )
        .expect("resolves");
        assert!(custom.credentials.as_ref().is_some_and(|c| c.custom_keys && c.fields.len() == 2));
        assert_eq!(resolve_credentials(ConnectionAuthType::Aad, None, None, "uid"), Ok(ResolvedCredentials::default()));
    }

    #[test]
    fn a_missing_secret_or_key_is_named() {
        let (reason, message) = resolve_credentials(ConnectionAuthType::Pat, Some("git-pat"), None, "uid").unwrap_err();
        assert_eq!(reason, Reason::SecretNotFound);
        assert!(message.starts_with("Secret git-pat (spec.credentialsFrom.secretName) does not exist"), "{message}");
        let (reason, message) = resolve_credentials(
            ConnectionAuthType::ServicePrincipal,
            Some("sp"),
            Some(&data(&[("clientId", "c"), ("clientSecret", "")])),
            "uid",
        )
        .unwrap_err();
        assert_eq!(reason, Reason::SecretNotFound);
        assert_eq!(
            message,
            "Secret sp has no key clientSecret, no key tenantId (authType ServicePrincipal needs clientId, clientSecret, tenantId)"
        );
        let (reason, _) =
            resolve_credentials(ConnectionAuthType::CustomKeys, Some("k"), Some(&data(&[])), "uid").unwrap_err();
        assert_eq!(reason, Reason::SecretNotFound);
    }

    #[test]
    fn the_hash_changes_with_the_content_and_the_salt_only() {
        let a = resolve_credentials(ConnectionAuthType::Pat, Some("s"), Some(&data(&[("pat", "1")])), "uid").unwrap();
        let same =
            resolve_credentials(ConnectionAuthType::Pat, Some("s2"), Some(&data(&[("pat", "1"), ("x", "y")])), "uid")
                .unwrap();
        let rotated =
            resolve_credentials(ConnectionAuthType::Pat, Some("s"), Some(&data(&[("pat", "2")])), "uid").unwrap();
        let other =
            resolve_credentials(ConnectionAuthType::Pat, Some("s"), Some(&data(&[("pat", "1")])), "uid-2").unwrap();
        assert_eq!(a.hash, same.hash, "unused keys and the Secret's name do not count");
        assert_ne!(a.hash, rotated.hash);
        assert_ne!(a.hash, other.hash);
    }

    #[test]
    fn absent_creates_with_the_owner_mark_and_the_credentials() {
        let d = desired();
        let creds = resolve_credentials(ConnectionAuthType::Pat, Some("s"), Some(&data(&[("pat", "1")])), "u").unwrap();
        let p = plan(&d, None, &creds, None);
        assert_eq!(p.actions.first().map(|w| w.reason), Some(WriteReason::Create));
        let b = body(&d, &creds);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["properties"]["metadata"][CONNECTION_OWNER_KEY], "team-a/repo/uid-1");
        assert_eq!(json["properties"]["credentials"]["pat"], "1");
        assert_eq!(json["properties"]["authType"], "PAT");
    }

    #[test]
    fn steady_state_writes_nothing_and_a_changed_secret_writes_once() {
        let d = desired();
        let creds = resolve_credentials(ConnectionAuthType::Pat, Some("s"), Some(&data(&[("pat", "1")])), "u").unwrap();
        let azure = in_azure(&d);
        assert!(plan(&d, Some(&azure), &creds, creds.hash.as_deref()).converged());
        let rotated =
            resolve_credentials(ConnectionAuthType::Pat, Some("s"), Some(&data(&[("pat", "2")])), "u").unwrap();
        let p = plan(&d, Some(&azure), &rotated, creds.hash.as_deref());
        assert_eq!(p.actions.first().map(|w| w.reason), Some(WriteReason::Credentials));
        // Once recorded, the rotated Secret sends nothing more.
        assert!(plan(&d, Some(&azure), &rotated, rotated.hash.as_deref()).converged());
        // A status without a hash (lost, or never written) sends once.
        assert_eq!(
            plan(&d, Some(&azure), &creds, None).actions.first().map(|w| w.reason),
            Some(WriteReason::Credentials)
        );
        // AAD: no credentials, no hash, nothing to send.
        let mut aad = d.clone();
        aad.auth_type = ConnectionAuthType::Aad;
        assert!(plan(&aad, Some(&in_azure(&aad)), &ResolvedCredentials::default(), None).converged());
    }

    #[test]
    fn drift_and_spec_changes_are_one_put_naming_the_fields() {
        let d = desired();
        let creds = ResolvedCredentials { credentials: None, hash: Some("h".into()) };
        let mut azure = in_azure(&d);
        azure.properties.target = Some("https://evil.example".into());
        azure.properties.metadata.as_mut().unwrap().insert("team".into(), "other".into());
        let p = plan(&d, Some(&azure), &creds, Some("h"));
        let [Put { reason, what }] = p.actions.as_slice() else { panic!("one PUT: {p:?}") };
        assert_eq!(*reason, WriteReason::Properties);
        assert_eq!(what, "target (Azure: https://evil.example, spec: https://github.com/contoso/ml), metadata");
    }

    #[test]
    fn a_connection_without_our_mark_is_never_touched() {
        let d = desired();
        let mut azure = in_azure(&d);
        azure.properties.metadata =
            Some(BTreeMap::from([(CONNECTION_OWNER_KEY.to_owned(), "team-b/x/uid-9".to_owned())]));
        let p = plan(&d, Some(&azure), &ResolvedCredentials::default(), None);
        assert!(p.actions.is_empty());
        assert_eq!(p.stall.map(|s| s.0), Some(Reason::AlreadyExists));
        azure.properties.metadata = None;
        assert!(plan(&d, Some(&azure), &ResolvedCredentials::default(), None).stall.is_some());
    }
}
