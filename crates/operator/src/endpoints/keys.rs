//! Endpoint keys: export to a Secret, and regeneration on request.
//!
//! - The Secret `spec.keysSecret.name` (same namespace) holds `primaryKey`, `secondaryKey` and `scoringUri`. The
//!   operator creates it with an owner reference to the endpoint and updates only a Secret that carries that
//!   reference; any other Secret of that name is left untouched and the endpoint stalls (`SecretNotOwned`).
//! - `azml.dev/regenerate-keys: primary[:token]` or `secondary[:token]`: a value not yet honoured regenerates that
//!   key once. Azure answers with a long-running operation (Retry-After 10..600 s, minutes in all): it is started,
//!   recorded in `status.keys.pendingRegeneration` and polled by later reconciles, never awaited in a worker and
//!   never sent again once recorded (a restart resumes polling). The request is written to
//!   `status.keys.regenerateInFlight` before it is sent: an operator stopped between the call and recording the
//!   operation compares Azure's key with the exported one and sends it again only if it did not happen. When it succeeds the Secret is updated and the
//!   value is recorded in `status.keys.lastRegenerateRequest`, so the same value never regenerates again; when it
//!   fails, a Warning event says so and the request is tried again with backoff. Zero-downtime roll: callers
//!   use the primary key; regenerate the secondary, switch callers to it, then regenerate the primary.
//! - Key values never reach logs, events, errors or status.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::Context;
use crate::api::conditions::{self, events, reasons};
use crate::api::v1alpha1::{
    ANNOTATION_REGENERATE_KEYS, EndpointAuthMode, EndpointKeysStatus, MlOnlineEndpoint, MlOnlineEndpointStatus,
    PendingRegeneration, SECRET_PRIMARY_KEY, SECRET_SCORING_URI, SECRET_SECONDARY_KEY,
};
use crate::azure::OnlineEndpointRef;
use crate::azure::online_endpoints::{EndpointKeyType, RegenerateEndpointKeys};
use crate::azure::{ArmClient, ArmError, LroHandle, LroPoll, LroStart, Secret};
use crate::reconciler::Phase;
use crate::reconciler::error::{Error, scrub};
use crate::reconciler::status::set_condition;
use serde::de::IgnoredAny;

/// Label the operator puts on the Secrets it creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Reads an `azml.dev/regenerate-keys` value: `primary` or `secondary`, optionally followed by `:` and any token
/// (case-insensitive).
pub fn parse_request(value: &str) -> Result<EndpointKeyType, BadRegenerateRequest> {
    let key = value.split_once(':').map_or(value, |(k, _)| k).trim();
    if key.eq_ignore_ascii_case("primary") {
        Ok(EndpointKeyType::Primary)
    } else if key.eq_ignore_ascii_case("secondary") {
        Ok(EndpointKeyType::Secondary)
    } else {
        Err(BadRegenerateRequest(value.to_owned()))
    }
}

/// An `azml.dev/regenerate-keys` value that names no key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {ANNOTATION_REGENERATE_KEYS} must be primary[:<token>] or secondary[:<token>], not {0:?}")]
pub struct BadRegenerateRequest(pub String);

/// The annotation value to honour now, if any: set, and not the one last honoured.
pub fn pending_request<'a>(annotation: Option<&'a str>, previous: Option<&EndpointKeysStatus>) -> Option<&'a str> {
    let value = annotation?;
    let done = previous.and_then(|k| k.last_regenerate_request.as_deref());
    (done != Some(value)).then_some(value)
}

/// What the Secret must contain.
pub fn secret_data(primary: &Secret, secondary: &Secret, scoring_uri: Option<&str>) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::new();
    data.insert(SECRET_PRIMARY_KEY.to_owned(), ByteString(primary.expose().as_bytes().to_vec()));
    data.insert(SECRET_SECONDARY_KEY.to_owned(), ByteString(secondary.expose().as_bytes().to_vec()));
    data.insert(SECRET_SCORING_URI.to_owned(), ByteString(scoring_uri.unwrap_or_default().as_bytes().to_vec()));
    data
}

/// Whether `secret` carries an owner reference to the endpoint with `uid`.
pub fn owned_by(secret: &KubeSecret, uid: &str) -> bool {
    secret.owner_references().iter().any(|r| r.uid == uid)
}

/// Whether the Secret's data already holds `want` (other keys of the Secret are left alone).
pub fn up_to_date(secret: &KubeSecret, want: &BTreeMap<String, ByteString>) -> bool {
    let have = secret.data.as_ref();
    want.iter().all(|(k, v)| have.and_then(|d| d.get(k)) == Some(v))
}

/// What the key step decided.
#[derive(Debug, Default)]
pub struct KeysResult {
    /// The new `status.keys`.
    pub keys: Option<EndpointKeysStatus>,
    /// The KeysPublished condition (ok, reason, message); `None` removes it (nothing exported).
    pub condition: Option<(bool, &'static str, String)>,
    /// Replaces Ready when the key step cannot complete.
    pub outcome: Option<Phase>,
    /// A regeneration is in flight: look again this soon (the rest of the reconcile waits for it).
    pub requeue: Option<std::time::Duration>,
}

impl KeysResult {
    /// Writes the result into `status`.
    pub fn apply(&self, status: &mut MlOnlineEndpointStatus, generation: Option<i64>, now: &Time) {
        status.keys = self.keys.clone();
        match &self.condition {
            Some((ok, reason, message)) => {
                set_condition(&mut status.conditions, conditions::KEYS_PUBLISHED, *ok, reason, message, generation, now)
            }
            None => status.conditions.retain(|c| c.type_ != conditions::KEYS_PUBLISHED),
        }
    }
}

/// The key step of a converged endpoint.
#[instrument(skip_all)]
pub async fn reconcile_keys(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    arm: &ArmClient,
    ep_ref: &OnlineEndpointRef,
    scoring_uri: Option<&str>,
    previous: Option<&MlOnlineEndpointStatus>,
) -> Result<KeysResult, Error> {
    let mut keys = previous.and_then(|s| s.keys.clone()).unwrap_or_default();
    let mut result = KeysResult::default();
    if ep.spec.auth_mode != EndpointAuthMode::Key {
        result.keys =
            keys.last_regenerate_request.is_some().then_some(EndpointKeysStatus { secret_name: None, ..keys });
        return Ok(result);
    }
    if let Some(pending) = keys.pending_regeneration.clone() {
        let handle: LroHandle = serde_json::from_str(&pending.poller)
            .map_err(|e| Error::BadPendingOperation(format!("status.keys.pendingRegeneration.poller: {e}")))?;
        match arm.poll_lro::<IgnoredAny>(&handle).await {
            Ok(LroPoll::InProgress(next)) => {
                return Ok(in_flight(ctx, keys, &pending.request, &pending.key_type, &next));
            }
            Ok(LroPoll::Done(_)) => regenerated(ctx, ep, &mut keys, &pending.request, &pending.key_type).await,
            Err(err @ ArmError::LroFailed { .. }) => {
                // Azure says it failed: the request stays unhonoured and is sent again after a backoff.
                keys.pending_regeneration = None;
                let message = scrub(&format!("regenerating the {} key failed; trying again: {err}", pending.key_type));
                warn!(error = %message, "endpoint key regeneration failed");
                ctx.publish(ep, EventType::Warning, events::RECONCILE_FAILED, message.clone()).await;
                result.keys = Some(keys);
                result.outcome = Some(Phase::Transient { message });
                result.requeue = Some(ctx.config.error_backoff_max);
                return Ok(result);
            }
            Err(err) if !err.is_transient() => {
                // The operation's record is gone or unreadable (e.g. 404 once Azure forgot it): whether the key was
                // regenerated is told from the key itself, as for a regeneration found in flight after a restart.
                warn!(error = %scrub(&err.to_string()), "endpoint key regeneration cannot be polled; checking the key");
                keys.pending_regeneration = None;
                keys.regenerate_in_flight = Some(pending.request.clone());
            }
            Err(err) => return Err(Error::Arm { step: "poll endpoint key regeneration", source: Box::new(err) }),
        }
    }
    let annotation = ep.annotations().get(ANNOTATION_REGENERATE_KEYS).map(String::as_str);
    // A regeneration is not idempotent: the request is recorded in flight before it is sent, and one found in flight
    // without an accepted operation (the operator stopped around the call) is sent again only if Azure's key still
    // is the one exported to the Secret.
    let mut send = None;
    if let Some(value) = keys.regenerate_in_flight.take()
        && let Ok(key_type) = parse_request(&value)
    {
        if key_changed(ctx, ep, arm, ep_ref, key_type).await? {
            info!(key = ?key_type, "an unconfirmed endpoint key regeneration had happened");
            regenerated(ctx, ep, &mut keys, &value, &format!("{key_type:?}")).await;
        } else {
            send = Some((value, key_type));
        }
    }
    if send.is_none() {
        let honoured = keys.last_regenerate_request.clone();
        let previous = EndpointKeysStatus { last_regenerate_request: honoured, ..Default::default() };
        match pending_request(annotation, Some(&previous)).map(|value| (value, parse_request(value))) {
            None => {}
            Some((_, Err(bad))) => {
                let message = bad.to_string();
                result.condition = Some((false, reasons::INVALID_ANNOTATION, message.clone()));
                result.outcome = Some(Phase::Stalled { reason: reasons::INVALID_ANNOTATION, message });
                result.keys = Some(keys);
                return Ok(result);
            }
            Some((value, Ok(key_type))) => send = Some((value.to_owned(), key_type)),
        }
    }
    if let Some((value, key_type)) = send {
        let ahead = EndpointKeysStatus { regenerate_in_flight: Some(value.clone()), ..keys.clone() };
        ctx.write_status(ep, |s, _, _| s.keys = Some(ahead)).await?;
        keys.regenerate_in_flight = Some(value.clone());
        let body = RegenerateEndpointKeys { key_type, key_value: None };
        let which = format!("{key_type:?}");
        let start = arm
            .begin_regenerate_online_endpoint_keys(ep_ref, &body)
            .await
            .map_err(Error::arm("regenerate endpoint key"))?;
        match start {
            LroStart::Done(()) => regenerated(ctx, ep, &mut keys, &value, &which).await,
            LroStart::Pending(handle) => {
                info!(key = %which, "endpoint key regeneration accepted");
                return Ok(in_flight(ctx, keys, &value, &which, &handle));
            }
        }
    }
    let Some(target) = &ep.spec.keys_secret else {
        keys.secret_name = None;
        result.keys = (keys != EndpointKeysStatus::default()).then_some(keys);
        return Ok(result);
    };
    let listed = arm.list_online_endpoint_keys(ep_ref).await.map_err(Error::arm("list endpoint keys"))?;
    let (Some(primary), Some(secondary)) = (listed.primary_key, listed.secondary_key) else {
        let message = "Azure returned no keys for the endpoint".to_owned();
        result.condition = Some((false, reasons::TRANSIENT_ERROR, message.clone()));
        result.outcome = Some(Phase::Progressing { reason: reasons::TRANSIENT_ERROR, message });
        result.keys = Some(keys);
        return Ok(result);
    };
    let want = secret_data(&primary, &secondary, scoring_uri);
    let namespace = ep.namespace().unwrap_or_default();
    let written = match write_secret(ctx, ep, &target.name, want).await {
        Ok(SecretWrite::Foreign) => {
            let message = format!(
                "spec.keysSecret.name: Secret {} exists and was not created by azml-operator for this endpoint; it is left untouched (choose another name or delete it)",
                target.name
            );
            result.condition = Some((false, reasons::SECRET_NOT_OWNED, message.clone()));
            result.outcome = Some(Phase::Stalled { reason: reasons::SECRET_NOT_OWNED, message });
            keys.secret_name = None;
            result.keys = Some(keys);
            return Ok(result);
        }
        Ok(SecretWrite::Unchanged) => false,
        Ok(SecretWrite::Written) => true,
        Err(kube::Error::Api(e)) if e.code == 403 => {
            let message = format!(
                "the operator may not manage Secrets in namespace {namespace}: grant its service account get, create, patch and delete on secrets there to export keys (see the README); spec.keysSecret.name {}",
                target.name
            );
            result.condition = Some((false, reasons::NOT_PERMITTED, message.clone()));
            result.outcome = Some(Phase::Stalled { reason: reasons::NOT_PERMITTED, message });
            result.keys = Some(keys);
            return Ok(result);
        }
        Err(e) => return Err(Error::kube("write keys Secret")(e)),
    };
    if written {
        info!(secret = %target.name, "wrote endpoint keys to the Secret");
        let note = format!("Wrote the endpoint's keys to Secret {}", target.name);
        ctx.publish(ep, EventType::Normal, events::KEYS_PUBLISHED, note).await;
    }
    keys.secret_name = Some(target.name.clone());
    result.condition =
        Some((true, reasons::KEYS_PUBLISHED, format!("Secret {} holds the endpoint's current keys", target.name)));
    result.keys = Some(keys);
    Ok(result)
}

/// The result while a regeneration runs: recorded in status, polled again after Azure's Retry-After (within the
/// configured bounds).
fn in_flight(
    ctx: &Context,
    mut keys: EndpointKeysStatus,
    request: &str,
    key_type: &str,
    handle: &LroHandle,
) -> KeysResult {
    keys.regenerate_in_flight = None;
    keys.pending_regeneration = Some(PendingRegeneration {
        request: request.to_owned(),
        key_type: key_type.to_owned(),
        // LroHandle is plain data; serialising it cannot fail.
        poller: serde_json::to_string(handle).unwrap_or_default(),
        started_at: Some(Time(handle.started_at)),
    });
    let (min, max) = (ctx.config.lro_poll_min, ctx.config.lro_poll_max.max(ctx.config.lro_poll_min));
    let requeue = handle.retry_after_secs.map(std::time::Duration::from_secs).unwrap_or(min).clamp(min, max);
    let message = format!("regenerating the {key_type} key (annotation {ANNOTATION_REGENERATE_KEYS}: {request})");
    KeysResult {
        keys: Some(keys),
        condition: Some((false, reasons::KEYS_REGENERATING, message.clone())),
        outcome: Some(Phase::Progressing { reason: reasons::KEYS_REGENERATING, message }),
        requeue: Some(requeue),
    }
}

/// Records a finished regeneration (the request is honoured) and announces it.
async fn regenerated(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    keys: &mut EndpointKeysStatus,
    request: &str,
    key_type: &str,
) {
    info!(key = %key_type, "regenerated endpoint key");
    ctx.publish(ep, EventType::Normal, events::KEYS_REGENERATED, format!("Regenerated the {key_type} key")).await;
    keys.pending_regeneration = None;
    keys.regenerate_in_flight = None;
    keys.last_regenerate_request = Some(request.to_owned());
    keys.last_regenerated_key = Some(key_type.to_owned());
    keys.last_regenerate_time = Some(Time(jiff::Timestamp::now()));
}

/// Whether Azure's `key_type` key differs from the one exported to the endpoint's own keys Secret (it was
/// regenerated since). Without such a Secret nothing tells: taken as regenerated, since sending a regeneration twice
/// breaks the callers of a key roll.
async fn key_changed(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    arm: &ArmClient,
    ep_ref: &OnlineEndpointRef,
    key_type: EndpointKeyType,
) -> Result<bool, Error> {
    let Some(target) = &ep.spec.keys_secret else { return Ok(true) };
    let api: Api<KubeSecret> = Api::namespaced(ctx.client.clone(), &ep.namespace().unwrap_or_default());
    let secret = api.get_opt(&target.name).await.map_err(Error::kube("read keys Secret"))?;
    let field = match key_type {
        EndpointKeyType::Primary => SECRET_PRIMARY_KEY,
        EndpointKeyType::Secondary => SECRET_SECONDARY_KEY,
    };
    let exported = secret
        .filter(|s| owned_by(s, &ep.uid().unwrap_or_default()))
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove(field));
    let Some(exported) = exported else { return Ok(true) };
    let listed = arm.list_online_endpoint_keys(ep_ref).await.map_err(Error::arm("list endpoint keys"))?;
    let current = match key_type {
        EndpointKeyType::Primary => listed.primary_key,
        EndpointKeyType::Secondary => listed.secondary_key,
    };
    Ok(current.is_none_or(|k| k.expose().as_bytes() != exported.0.as_slice()))
}

/// What writing the keys Secret did.
enum SecretWrite {
    /// Created or updated.
    Written,
    /// Already current.
    Unchanged,
    /// A Secret of that name exists without our owner reference: left untouched.
    Foreign,
}

/// Creates the Secret (owned by `ep`) or updates the one `ep` owns; never touches another.
async fn write_secret(
    ctx: &Context,
    ep: &MlOnlineEndpoint,
    name: &str,
    want: BTreeMap<String, ByteString>,
) -> Result<SecretWrite, kube::Error> {
    let namespace = ep.namespace().unwrap_or_default();
    let api: Api<KubeSecret> = Api::namespaced(ctx.client.clone(), &namespace);
    match api.get_opt(name).await? {
        None => {
            let mut secret = KubeSecret { data: Some(want), type_: Some("Opaque".into()), ..Default::default() };
            secret.metadata.name = Some(name.to_owned());
            secret.metadata.namespace = Some(namespace);
            secret.metadata.owner_references = ep.controller_owner_ref(&()).map(|r| vec![r]);
            secret.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), "azml-operator".to_owned())]));
            api.create(&PostParams::default(), &secret).await?;
            Ok(SecretWrite::Written)
        }
        Some(existing) if !owned_by(&existing, &ep.uid().unwrap_or_default()) => Ok(SecretWrite::Foreign),
        Some(existing) if up_to_date(&existing, &want) => Ok(SecretWrite::Unchanged),
        Some(existing) => {
            // resourceVersion: a concurrent change (e.g. someone removing our owner reference) fails with 409 and
            // is looked at again, instead of being overwritten.
            let patch = json!({ "metadata": { "resourceVersion": existing.resource_version() }, "data": want });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            Ok(SecretWrite::Written)
        }
    }
}

/// Deletes the keys Secret when this endpoint owns it: at once, not when the garbage collector gets to it after the
/// endpoint is gone.
pub async fn delete_owned_secret(ctx: &Context, ep: &MlOnlineEndpoint) -> Result<(), Error> {
    let Some(target) = &ep.spec.keys_secret else { return Ok(()) };
    let api: Api<KubeSecret> = Api::namespaced(ctx.client.clone(), &ep.namespace().unwrap_or_default());
    let uid = ep.uid().unwrap_or_default();
    let Some(secret) = api.get_opt(&target.name).await.map_err(Error::kube("read keys Secret"))? else {
        return Ok(());
    };
    if owned_by(&secret, &uid) {
        api.delete(&target.name, &DeleteParams::default()).await.map_err(Error::kube("delete keys Secret"))?;
        info!(secret = %target.name, "deleted the keys Secret");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn requests_parse_with_or_without_a_token() {
        assert_eq!(parse_request("primary"), Ok(EndpointKeyType::Primary));
        assert_eq!(parse_request("Secondary:2026-11-25T10:00Z"), Ok(EndpointKeyType::Secondary));
        assert!(parse_request("both").is_err());
        assert!(parse_request(":primary").is_err());
    }

    #[test]
    fn a_value_already_honoured_is_not_honoured_again() {
        let done = EndpointKeysStatus { last_regenerate_request: Some("primary:1".into()), ..Default::default() };
        assert_eq!(pending_request(Some("primary:1"), Some(&done)), None);
        assert_eq!(pending_request(Some("primary:2"), Some(&done)), Some("primary:2"));
        assert_eq!(pending_request(Some("primary:1"), None), Some("primary:1"));
        assert_eq!(pending_request(None, Some(&done)), None);
    }

    #[test]
    fn only_a_secret_with_our_owner_reference_is_ours_and_data_is_compared_per_key() {
        let want = secret_data(&Secret::new("p"), &Secret::new("s"), Some("https://x/score"));
        let mut secret = KubeSecret { data: Some(want.clone()), ..Default::default() };
        assert!(!owned_by(&secret, "uid-1"));
        secret.metadata.owner_references = Some(vec![OwnerReference { uid: "uid-1".into(), ..Default::default() }]);
        assert!(owned_by(&secret, "uid-1"));
        assert!(up_to_date(&secret, &want));
        let rotated = secret_data(&Secret::new("p2"), &Secret::new("s"), Some("https://x/score"));
        assert!(!up_to_date(&secret, &rotated));
        // Extra keys someone added do not count as a difference.
        secret.data.as_mut().map(|d| d.insert("extra".into(), ByteString(b"x".to_vec())));
        assert!(up_to_date(&secret, &want));
    }
}
