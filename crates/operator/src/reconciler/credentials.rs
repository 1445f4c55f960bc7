//! One ARM client per SubscriptionBinding, built from the binding's credential and cached until the binding (its
//! generation) or its client-secret Secret (its resourceVersion) changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::{Api, Client, ResourceExt};
use tracing::info;

use super::error::Error;
use super::lock;
use crate::api::v1alpha1::SubscriptionBinding;
use crate::azure::{ArmClient, ArmClientOptions, CredentialConfig, Secret, build_credential};

#[derive(Clone, Debug, PartialEq, Eq)]
struct CacheKey {
    uid: Option<String>,
    generation: Option<i64>,
    secret_version: Option<String>,
}

/// Cache of ARM clients by binding name.
#[derive(Default)]
pub struct CredentialCache {
    clients: Mutex<HashMap<String, (CacheKey, ArmClient)>>,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache").finish_non_exhaustive()
    }
}

/// Where credentials come from, besides the binding.
#[derive(Clone, Debug)]
pub struct CredentialSources {
    /// Namespace of the operator: the only one client-secret Secrets are read from.
    pub operator_namespace: String,
    /// The projected service account token for workload identity (`AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<PathBuf>,
}

impl CredentialCache {
    /// The ARM client for `binding`, built (or rebuilt) when needed.
    pub async fn client_for(
        &self,
        kube: &Client,
        binding: &SubscriptionBinding,
        sources: &CredentialSources,
        options: &ArmClientOptions,
    ) -> Result<ArmClient, Error> {
        let name = binding.name_any();
        // What the binding or its Secret must fix (stalls until they change) ...
        let cred_err = |reason: String| Error::CredentialUnavailable { binding: name.clone(), reason };
        // ... and what may pass (the API server did not answer).
        let read_err = |reason: String| Error::Credential { binding: name.clone(), reason };
        let spec = &binding.spec;
        let tenant_id = spec.tenant_id.clone();
        // Read the Secret first: its resourceVersion is part of the cache key, so a rotated secret is picked up.
        let (config, secret_version) = if let Some(cs) = &spec.credential.client_secret {
            if !crate::policy::is_kube_name(&cs.secret_ref.name) {
                return Err(cred_err(format!("secretRef.name {:?} is not a valid Secret name", cs.secret_ref.name)));
            }
            let secrets: Api<KubeSecret> = Api::namespaced(kube.clone(), &sources.operator_namespace);
            let secret = secrets
                .get_opt(&cs.secret_ref.name)
                .await
                .map_err(|e| {
                    read_err(format!("cannot read Secret {}/{}: {e}", sources.operator_namespace, cs.secret_ref.name))
                })?
                .ok_or_else(|| {
                    cred_err(format!(
                        "Secret {}/{} not found (client secrets are read from the operator's namespace)",
                        sources.operator_namespace, cs.secret_ref.name
                    ))
                })?;
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&cs.secret_ref.key))
                .map(|b| String::from_utf8(b.0.clone()))
                .transpose()
                .map_err(|_| {
                    cred_err(format!("key {} of Secret {} is not UTF-8", cs.secret_ref.key, cs.secret_ref.name))
                })?
                .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(&cs.secret_ref.key)).cloned())
                .ok_or_else(|| cred_err(format!("Secret {} has no key {}", cs.secret_ref.name, cs.secret_ref.key)))?;
            let config = CredentialConfig::ClientSecret {
                tenant_id,
                client_id: cs.client_id.clone(),
                client_secret: Secret::new(value.trim_end().to_owned()),
            };
            (config, secret.resource_version())
        } else if let Some(wi) = &spec.credential.workload_identity {
            let token_file = sources.federated_token_file.clone().ok_or_else(|| {
                cred_err("workload identity needs AZURE_FEDERATED_TOKEN_FILE, which the operator was not given".into())
            })?;
            (CredentialConfig::WorkloadIdentity { tenant_id, client_id: wi.client_id.clone(), token_file }, None)
        } else if let Some(mi) = &spec.credential.managed_identity {
            (CredentialConfig::ManagedIdentity { client_id: mi.client_id.clone() }, None)
        } else {
            return Err(cred_err("no credential kind is set".into()));
        };
        let key = CacheKey { uid: binding.uid(), generation: binding.metadata.generation, secret_version };
        if let Some((cached_key, client)) = lock(&self.clients).get(&name)
            && *cached_key == key
        {
            return Ok(client.clone());
        }
        let credential = build_credential(&config, &options.cloud).map_err(|e| cred_err(e.to_string()))?;
        let client = ArmClient::new(credential, options.clone()).map_err(|e| read_err(e.to_string()))?;
        info!(binding = %name, "built ARM client for SubscriptionBinding");
        lock(&self.clients).insert(name, (key, client.clone()));
        Ok(client)
    }

    /// Drops the cached client of a binding (e.g. when it is deleted).
    pub fn forget(&self, binding: &str) {
        lock(&self.clients).remove(binding);
    }
}
