//! Which SubscriptionBinding a resource may use, asked with a typed question ([`Ask`]) before any Azure call, and
//! the ARM client of that binding ([`super::credentials`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, ResourceExt};

use super::config::ControllerConfig;
use super::credentials::CredentialCache;
use super::error::Error;
use crate::api::v1alpha1::{AccessEntry, MlWorkspaceSpec, SubscriptionBinding};
use crate::azure::ArmClient;
use crate::policy::{self, Grantor, Intent};

/// Where a workspace is asked about: its subscription and resource group. The spec's ([`Place::of`]) unless the
/// workspace is known to be elsewhere in Azure (a move refused, failed or not permitted: see
/// `controller::moves::located`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place<'a> {
    /// Subscription id.
    pub subscription_id: &'a str,
    /// Resource group name.
    pub resource_group: &'a str,
}

impl<'a> Place<'a> {
    /// The place `spec` declares.
    pub fn of(spec: &'a MlWorkspaceSpec) -> Self {
        Place { subscription_id: &spec.subscription_id, resource_group: &spec.resource_group }
    }
}

/// What a resource asks of the bindings: the place of its workspace, the roles it grants where, and what it names
/// by ARM id. Built from borrowed fields of the objects: nothing is cloned or rewritten to ask.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// Namespace of the resource.
    pub namespace: &'a str,
    /// Where its workspace is.
    pub place: Place<'a>,
    /// The spec of the workspace it lives in (the dependent resources it names by id).
    pub workspace: &'a MlWorkspaceSpec,
    /// Its `spec.access` entries, in the workspace's terms.
    pub access: &'a [AccessEntry],
    /// Which resource those entries grant roles at.
    pub grantor: Grantor,
    /// Further resources it names by id: (spec field, id, intent).
    pub extra: &'a [(String, String, Intent)],
}

/// The binding's verdict.
pub enum Verdict {
    /// A binding allows everything asked.
    Permitted {
        /// Its ARM client.
        arm: ArmClient,
        /// The binding (a kind may check more against it).
        binding: Box<SubscriptionBinding>,
    },
    /// No binding allows it: the message names the missing permission (the `NotPermitted` condition's message).
    Denied(String),
}

/// All SubscriptionBindings, and the labels of `namespace` when a binding of one of `subscriptions` selects
/// namespaces by label (otherwise the namespace is not read).
pub async fn bindings_and_labels(
    client: &Client,
    namespace: &str,
    subscriptions: &[&str],
) -> Result<(Vec<SubscriptionBinding>, Option<BTreeMap<String, String>>), Error> {
    let bindings: Api<SubscriptionBinding> = Api::all(client.clone());
    // Listed fresh on every reconcile so that a binding change is never judged against a stale cache.
    let bindings = bindings.list(&Default::default()).await.map_err(Error::kube("list SubscriptionBindings"))?.items;
    let labels = if subscriptions.iter().any(|sub| policy::needs_namespace_labels(&bindings, sub)) {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces.get_opt(namespace).await.map_err(Error::kube("read namespace"))?.map(|n| n.labels().clone())
    } else {
        None
    };
    Ok((bindings, labels))
}

/// The policy request of `ask` with the namespace's `labels`.
pub fn request<'a>(ask: &Ask<'a>, labels: Option<&'a BTreeMap<String, String>>) -> policy::Request<'a> {
    policy::Request {
        namespace: ask.namespace,
        namespace_labels: labels,
        subscription_id: ask.place.subscription_id,
        resource_group: ask.place.resource_group,
        access: ask.access,
        grantor: ask.grantor,
    }
}

/// Finds the binding that allows `ask` ([`policy::authorize_with_resources`]), then `also` (a kind's own rules,
/// e.g. a compute's VM size), and returns its ARM client. No Azure call is made; the client is built only for a
/// permitted request.
pub async fn authorize(
    client: &Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ask: &Ask<'_>,
    also: impl FnOnce(&SubscriptionBinding) -> Result<(), String>,
) -> Result<Verdict, Error> {
    authorize_selecting(client, credentials, config, ask, also).await.1
}

/// [`authorize`], also saying which binding was chosen and which others allow the request with other credentials
/// ([`policy::selection`]; known even when the chosen binding's credential then fails; `None` when no binding
/// allows it or the bindings could not be read).
pub async fn authorize_selecting(
    client: &Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ask: &Ask<'_>,
    also: impl FnOnce(&SubscriptionBinding) -> Result<(), String>,
) -> (Option<policy::selection::Selection>, Result<Verdict, Error>) {
    let (bindings, labels) = match bindings_and_labels(client, ask.namespace, &[ask.place.subscription_id]).await {
        Ok(found) => found,
        Err(e) => return (None, Err(e)),
    };
    let request = request(ask, labels.as_ref());
    // Everything named by id must be in the binding's subscription and in a resource group it allows for the use the
    // operator makes of it (writes only in resourceGroups).
    let binding = match policy::authorize_with_resources(&bindings, &request, ask.workspace, ask.extra) {
        Ok(binding) => binding,
        Err(refusal) => return (None, Ok(Verdict::Denied(refusal.to_string()))),
    };
    if let Err(denial) = also(binding) {
        return (None, Ok(Verdict::Denied(denial)));
    }
    let selection = policy::selection::select(&bindings, &request, ask.workspace, ask.extra, binding);
    let arm = credentials.client_for(client, binding, &config.credential_sources(), &config.arm).await;
    (Some(selection), arm.map(|arm| Verdict::Permitted { arm, binding: Box::new(binding.clone()) }))
}
