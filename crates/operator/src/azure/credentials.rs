//! Credentials (azure_identity) and the cloud/TLS settings shared by the token endpoint and ARM.
//!
//! All credentials come from azure_identity and cache tokens per scope until shortly before expiry (its internal
//! `TokenCache`), so the ARM client simply asks for a token before each request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use url::Url;

use super::error::ArmError;
use super::secret::Secret;

/// Public-cloud Entra ID authority.
pub const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// Public-cloud ARM endpoint.
pub const PUBLIC_ARM_ENDPOINT: &str = "https://management.azure.com";

/// Endpoints and trust settings of an Azure cloud (public, sovereign, or the local simulator).
#[derive(Clone, Debug)]
pub struct AzureCloud {
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com`. Must be HTTPS.
    pub authority_host: Url,
    /// ARM endpoint, e.g. `https://management.azure.com`. Must be HTTPS.
    pub arm_endpoint: Url,
    /// Extra trusted root CAs (PEM), added to the platform roots for both ARM and the token endpoint.
    pub extra_root_ca_pem: Option<Vec<u8>>,
}

impl AzureCloud {
    /// The public Azure cloud with platform roots only.
    pub fn public() -> Self {
        Self::custom(PUBLIC_AUTHORITY_HOST, PUBLIC_ARM_ENDPOINT).unwrap_or_else(|_| unreachable!("constant URLs parse"))
    }

    /// A cloud with the given endpoints (both must be HTTPS).
    pub fn custom(authority_host: &str, arm_endpoint: &str) -> Result<Self, ArmError> {
        let parse = |what: &str, s: &str| {
            let url = Url::parse(s).map_err(|e| ArmError::Config(format!("{what} {s:?}: {e}")))?;
            if url.scheme() != "https" {
                return Err(ArmError::Config(format!("{what} {s:?} must use https")));
            }
            Ok(url)
        };
        Ok(Self {
            authority_host: parse("authority host", authority_host)?,
            arm_endpoint: parse("ARM endpoint", arm_endpoint)?,
            extra_root_ca_pem: None,
        })
    }

    /// Adds extra trusted root CAs from PEM text.
    pub fn with_extra_root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Result<Self, ArmError> {
        let pem = pem.into();
        parse_roots(&pem)?;
        self.extra_root_ca_pem = Some(pem);
        Ok(self)
    }

    /// Adds extra trusted root CAs from a PEM file.
    pub fn with_extra_root_ca_file(self, path: &Path) -> Result<Self, ArmError> {
        let pem = std::fs::read(path)
            .map_err(|e| ArmError::Config(format!("cannot read root CA file {}: {e}", path.display())))?;
        self.with_extra_root_ca_pem(pem)
    }

    /// The token scope for ARM: `{arm_endpoint}/.default`.
    pub fn arm_scope(&self) -> String {
        format!("{}/.default", self.arm_endpoint.as_str().trim_end_matches('/'))
    }
}

impl Default for AzureCloud {
    fn default() -> Self {
        Self::public()
    }
}

fn parse_roots(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, ArmError> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| ArmError::Config(format!("invalid root CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ArmError::Config("root CA PEM holds no certificate".into()));
    }
    Ok(certs)
}

/// What a built HTTP client depends on: clients built from equal settings are one client.
#[derive(Clone, PartialEq, Eq, Hash)]
struct HttpClientSettings {
    extra_root_ca_pem: Option<Vec<u8>>,
    https_only: bool,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// The HTTP clients built so far, by their settings. Every SubscriptionBinding has an ARM client and a credential,
/// and each reqwest client holds its own copy of the platform's root store (about 140 KiB) and its own connection
/// pool; shared, there is one of each per setting (a request carries its own token, so sharing connections across
/// bindings is safe) and TLS sessions are reused.
static HTTP_CLIENTS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<HttpClientSettings, reqwest::Client>>,
> = std::sync::LazyLock::new(Default::default);

/// The reqwest client used for ARM and for the token endpoint: rustls (ring), platform roots plus the cloud's extra
/// roots, HTTPS only when `https_only`, no redirects. There is deliberately no way to disable certificate
/// verification. Built once per settings and shared (see [`HTTP_CLIENTS`]).
pub fn build_http_client(
    cloud: &AzureCloud,
    https_only: bool,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<reqwest::Client, ArmError> {
    let settings = HttpClientSettings {
        extra_root_ca_pem: cloud.extra_root_ca_pem.clone(),
        https_only,
        connect_timeout,
        request_timeout,
    };
    let mut clients = crate::sync::lock(&HTTP_CLIENTS);
    if let Some(client) = clients.get(&settings) {
        return Ok(client.clone());
    }
    let client = new_http_client(cloud, https_only, connect_timeout, request_timeout)?;
    clients.insert(settings, client.clone());
    Ok(client)
}

fn new_http_client(
    cloud: &AzureCloud,
    https_only: bool,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<reqwest::Client, ArmError> {
    // reqwest uses the process-default rustls provider; make sure it is ring (both ring and aws-lc are linked).
    crate::tls_provider::install();
    let mut builder = reqwest::Client::builder()
        .https_only(https_only)
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("azml-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &cloud.extra_root_ca_pem {
        builder = builder.tls_certs_merge(parse_roots(pem)?);
    }
    builder.build().map_err(|e| ArmError::Config(format!("cannot build HTTP client: {e}")))
}

/// Which identity the operator authenticates as.
#[derive(Clone, Debug)]
pub enum CredentialConfig {
    /// AKS workload identity: a federated (projected service account) token file exchanged for an Entra token.
    WorkloadIdentity {
        /// Entra tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// Path of the federated token file (`AZURE_FEDERATED_TOKEN_FILE`).
        token_file: PathBuf,
    },
    /// A service principal with a client secret.
    ClientSecret {
        /// Entra tenant id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
    },
    /// Managed identity via IMDS / App Service (system-assigned, or the user-assigned one with this client id).
    ManagedIdentity {
        /// Client id of a user-assigned identity.
        client_id: Option<String>,
    },
}

/// Retries of the token endpoint: the SDK default (8 retries within a minute) would stall a reconcile for a minute
/// on a persistent failure such as a TLS trust error; three quick retries cover transient blips.
fn token_retry() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(200),
        max_retries: 3,
        max_total_elapsed: azure_core::time::Duration::seconds(15),
        ..Default::default()
    })
}

fn client_options(cloud: &AzureCloud, http: reqwest::Client) -> ClientOptions {
    let mut custom = CustomConfiguration::default();
    custom.authority_host = cloud.authority_host.as_str().trim_end_matches('/').to_owned();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        retry: token_retry(),
        ..Default::default()
    }
}

/// Builds the credential for `config`, talking to `cloud.authority_host` through a client that trusts the cloud's
/// extra roots.
pub fn build_credential(config: &CredentialConfig, cloud: &AzureCloud) -> Result<Arc<dyn TokenCredential>, ArmError> {
    let cfg_err = |e: azure_core::Error| ArmError::Config(format!("credential: {e}"));
    let timeout = Duration::from_secs(30);
    match config {
        CredentialConfig::ClientSecret { tenant_id, client_id, client_secret } => {
            let http = build_http_client(cloud, true, timeout, timeout)?;
            let cred = ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                azure_core::credentials::Secret::new(client_secret.expose().to_owned()),
                Some(ClientSecretCredentialOptions { client_options: client_options(cloud, http) }),
            )
            .map_err(cfg_err)?;
            Ok(cred)
        }
        CredentialConfig::WorkloadIdentity { tenant_id, client_id, token_file } => {
            let http = build_http_client(cloud, true, timeout, timeout)?;
            let cred = WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options: client_options(cloud, http) },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(token_file.clone()),
            }))
            .map_err(cfg_err)?;
            Ok(cred)
        }
        CredentialConfig::ManagedIdentity { client_id } => {
            // IMDS is plain HTTP on a link-local address by design, so this client is not HTTPS-only.
            let http = build_http_client(cloud, false, timeout, timeout)?;
            let cred = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: ClientOptions { transport: Some(Transport::new(Arc::new(http))), ..Default::default() },
            }))
            .map_err(cfg_err)?;
            Ok(cred)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_clients_of_equal_settings_are_built_once() {
        // Timeouts no other test uses, so the shared map's entries for them are this test's.
        let (connect, request) = (Duration::from_millis(12_345), Duration::from_millis(54_321));
        let built = |https_only: bool| {
            let settings = HttpClientSettings {
                extra_root_ca_pem: None,
                https_only,
                connect_timeout: connect,
                request_timeout: request,
            };
            crate::sync::lock(&HTTP_CLIENTS).contains_key(&settings)
        };
        assert!(!built(true));
        let cloud = AzureCloud::public();
        build_http_client(&cloud, true, connect, request).expect("client");
        build_http_client(&cloud, true, connect, request).expect("client");
        let count = |map: &std::collections::HashMap<HttpClientSettings, reqwest::Client>| {
            map.keys().filter(|k| k.connect_timeout == connect && k.request_timeout == request).count()
        };
        assert_eq!(count(&crate::sync::lock(&HTTP_CLIENTS)), 1, "the second build reuses the first client");
        assert!(built(true) && !built(false));
        build_http_client(&cloud, false, connect, request).expect("client");
        assert_eq!(count(&crate::sync::lock(&HTTP_CLIENTS)), 2, "other settings, another client");
    }

    #[test]
    fn scope_and_https_rules() {
        assert_eq!(AzureCloud::public().arm_scope(), "https://management.azure.com/.default");
        let c = AzureCloud::custom("https://127.0.0.1:8443/", "https://127.0.0.1:9443/").unwrap();
        assert_eq!(c.arm_scope(), "https://127.0.0.1:9443/.default");
        assert!(AzureCloud::custom("http://login", "https://arm").is_err());
        assert!(AzureCloud::custom("https://login", "http://arm").is_err());
        assert!(AzureCloud::public().with_extra_root_ca_pem(b"not pem".to_vec()).is_err());
    }

    #[test]
    fn credential_config_debug_redacts_secret() {
        let c = CredentialConfig::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Secret::new("very-secret-value"),
        };
        assert!(!format!("{c:?}").contains("very-secret-value"));
    }
}
