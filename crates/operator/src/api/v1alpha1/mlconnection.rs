//! `MlConnection`: a connection of an Azure ML workspace (`Microsoft.MachineLearningServices/workspaces/connections`)
//! to a Git repository, a container registry, Azure OpenAI, a storage account, ... with its credentials taken from a
//! Kubernetes Secret, never from the spec.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::DeletionPolicy;
use super::mlonlineendpoint::WorkspaceReference;
use crate::api::patterns;

/// A connection name as Azure takes it (the spec's `ConnectionName` path parameter): 3-33 letters, digits, `_` or
/// `-`, starting with a letter or digit.
pub const CONNECTION_NAME_PATTERN: &str = "^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$";

/// Metadata key under which the operator records which MlConnection owns a connection. Connections carry no tags
/// in ARM (the resource is `properties` only), so the owner mark lives in `properties.metadata`, beside the user's.
pub const CONNECTION_OWNER_KEY: &str = "azml.dev-owner";

/// Every connection category of the 2025-09-01 API (`ConnectionCategory`), as Azure spells them.
pub const CATEGORIES: &[&str] = &[
    "PythonFeed",
    "ContainerRegistry",
    "Git",
    "S3",
    "Snowflake",
    "AzureSqlDb",
    "AzureSynapseAnalytics",
    "AzureMySqlDb",
    "AzurePostgresDb",
    "ADLSGen2",
    "Redis",
    "ApiKey",
    "AzureOpenAI",
    "AIServices",
    "CognitiveSearch",
    "CognitiveService",
    "CustomKeys",
    "AzureBlob",
    "AzureOneLake",
    "CosmosDb",
    "CosmosDbMongoDbApi",
    "AzureDataExplorer",
    "AzureMariaDb",
    "AzureDatabricksDeltaLake",
    "AzureSqlMi",
    "AzureTableStorage",
    "AmazonRdsForOracle",
    "AmazonRdsForSqlServer",
    "AmazonRedshift",
    "Db2",
    "Drill",
    "GoogleBigQuery",
    "Greenplum",
    "Hbase",
    "Hive",
    "Impala",
    "Informix",
    "MariaDb",
    "MicrosoftAccess",
    "MySql",
    "Netezza",
    "Oracle",
    "Phoenix",
    "PostgreSql",
    "Presto",
    "SapOpenHub",
    "SapBw",
    "SapHana",
    "SapTable",
    "Spark",
    "SqlServer",
    "Sybase",
    "Teradata",
    "Vertica",
    "Pinecone",
    "Cassandra",
    "Couchbase",
    "MongoDbV2",
    "MongoDbAtlas",
    "AmazonS3Compatible",
    "FileServer",
    "FtpServer",
    "GoogleCloudStorage",
    "Hdfs",
    "OracleCloudStorage",
    "Sftp",
    "GenericHttp",
    "ODataRest",
    "Odbc",
    "GenericRest",
    "AmazonMws",
    "Concur",
    "Dynamics",
    "DynamicsAx",
    "DynamicsCrm",
    "GoogleAdWords",
    "Hubspot",
    "Jira",
    "Magento",
    "Marketo",
    "Office365",
    "Eloqua",
    "Responsys",
    "OracleServiceCloud",
    "PayPal",
    "QuickBooks",
    "Salesforce",
    "SalesforceServiceCloud",
    "SalesforceMarketingCloud",
    "SapCloudForCustomer",
    "SapEcc",
    "ServiceNow",
    "SharePointOnlineList",
    "Shopify",
    "Square",
    "WebTable",
    "Xero",
    "Zoho",
    "GenericContainerRegistry",
    "Elasticsearch",
    "OpenAI",
    "Serp",
    "BingLLMSearch",
    "Serverless",
    "ManagedOnlineEndpoint",
];

/// The auth types each well-known category takes (checked at admission by CEL; categories not listed take any).
/// Keep in step with the `x_kube` rules on [`MlConnectionSpec`] (a unit test compares them).
pub const CATEGORY_AUTH_TYPES: &[(&[&str], &[&str])] = &[
    (&["Git", "PythonFeed"], &["PAT", "UsernamePassword", "None"]),
    (&["ContainerRegistry"], &["UsernamePassword", "ManagedIdentity", "None"]),
    (&["GenericContainerRegistry"], &["UsernamePassword", "None"]),
    (&["AzureOpenAI", "AIServices", "CognitiveSearch", "CognitiveService"], &["ApiKey", "AAD"]),
    (&["ApiKey", "OpenAI", "Serp", "BingLLMSearch", "Serverless", "Pinecone"], &["ApiKey"]),
    (&["CustomKeys"], &["CustomKeys"]),
    (&["AzureBlob", "AzureTableStorage"], &["AccountKey", "SAS", "AAD", "ManagedIdentity", "ServicePrincipal"]),
    (&["ADLSGen2"], &["ServicePrincipal", "ManagedIdentity", "AAD", "AccountKey", "SAS", "AccessKey"]),
    (&["S3", "AmazonS3Compatible"], &["AccessKey"]),
];

/// Desired state of a workspace connection. Credentials come from `credentialsFrom`, a Secret of the same
/// namespace whose keys are named after Azure's credential fields.
// The derive's printcolumn(...) lists repeat `type_ = "string"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[kube(
    group = "azml.dev",
    version = "v1alpha1",
    kind = "MlConnection",
    plural = "mlconnections",
    singular = "mlconnection",
    namespaced,
    status = "MlConnectionStatus",
    derive = "PartialEq",
    shortname = "mlconn",
    category = "azure",
    category = "azml",
    doc = "A connection of an MlWorkspace (Git, container registry, Azure OpenAI, storage, ...), kept in sync with Azure by azml-operator; credentials come from a Secret and are sent again when it changes.",
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspaceRef.name"),
    printcolumn(name = "Category", type_ = "string", json_path = ".spec.category"),
    printcolumn(name = "Auth", type_ = "string", json_path = ".spec.authType"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target", priority = 1),
    printcolumn(name = "Binding", type_ = "string", json_path = ".status.binding", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.azureName) || self.metadata.name.matches('^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$')").message("metadata.name is not a valid connection name (3-33 letters, digits, '_' or '-'); set spec.azureName").field_path(".spec.azureName")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.credentialsFrom) != (self.authType == 'None' || self.authType == 'AAD')").message("authType None and AAD take no credentialsFrom; every other authType needs credentialsFrom (a Secret holding the credential fields)").field_path(".credentialsFrom"))]
#[x_kube(validation = Rule::new("!(self.category in ['Git', 'PythonFeed']) || self.authType in ['PAT', 'UsernamePassword', 'None']").message("category Git and PythonFeed take authType PAT, UsernamePassword or None").field_path(".authType"))]
#[x_kube(validation = Rule::new("self.category != 'ContainerRegistry' || self.authType in ['UsernamePassword', 'ManagedIdentity', 'None']").message("category ContainerRegistry takes authType UsernamePassword, ManagedIdentity or None").field_path(".authType"))]
#[x_kube(validation = Rule::new("self.category != 'GenericContainerRegistry' || self.authType in ['UsernamePassword', 'None']").message("category GenericContainerRegistry takes authType UsernamePassword or None").field_path(".authType"))]
#[x_kube(validation = Rule::new("!(self.category in ['AzureOpenAI', 'AIServices', 'CognitiveSearch', 'CognitiveService']) || self.authType in ['ApiKey', 'AAD']").message("categories AzureOpenAI, AIServices, CognitiveSearch and CognitiveService take authType ApiKey or AAD").field_path(".authType"))]
#[x_kube(validation = Rule::new("!(self.category in ['ApiKey', 'OpenAI', 'Serp', 'BingLLMSearch', 'Serverless', 'Pinecone']) || self.authType == 'ApiKey'").message("categories ApiKey, OpenAI, Serp, BingLLMSearch, Serverless and Pinecone take authType ApiKey").field_path(".authType"))]
#[x_kube(validation = Rule::new("self.category != 'CustomKeys' || self.authType == 'CustomKeys'").message("category CustomKeys takes authType CustomKeys").field_path(".authType"))]
#[x_kube(validation = Rule::new("!(self.category in ['AzureBlob', 'AzureTableStorage']) || self.authType in ['AccountKey', 'SAS', 'AAD', 'ManagedIdentity', 'ServicePrincipal']").message("categories AzureBlob and AzureTableStorage take authType AccountKey, SAS, AAD, ManagedIdentity or ServicePrincipal").field_path(".authType"))]
#[x_kube(validation = Rule::new("self.category != 'ADLSGen2' || self.authType in ['ServicePrincipal', 'ManagedIdentity', 'AAD', 'AccountKey', 'SAS', 'AccessKey']").message("category ADLSGen2 takes authType ServicePrincipal, ManagedIdentity, AAD, AccountKey, SAS or AccessKey").field_path(".authType"))]
#[x_kube(validation = Rule::new("!(self.category in ['S3', 'AmazonS3Compatible']) || self.authType == 'AccessKey'").message("categories S3 and AmazonS3Compatible take authType AccessKey").field_path(".authType"))]
#[x_kube(validation = Rule::new("has(self.azureName) == has(oldSelf.azureName) && (!has(self.azureName) || self.azureName == oldSelf.azureName)").message("azureName is immutable").field_path(".azureName"))]
pub struct MlConnectionSpec {
    /// The MlWorkspace (same namespace) the connection belongs to. The connection waits until it is Ready, uses
    /// its subscription, resource group and SubscriptionBinding, and is deleted before it. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("workspaceRef is immutable"))]
    pub workspace_ref: WorkspaceReference,

    /// Name of the connection in Azure (3-33 letters, digits, '_' or '-'). Defaults to metadata.name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CONNECTION_NAME_PATTERN))]
    pub azure_name: Option<String>,

    /// What the connection points at, as Azure ML's ConnectionCategory names it: ContainerRegistry, Git,
    /// AzureOpenAI, AzureBlob, ADLSGen2, CustomKeys, PythonFeed, S3, Snowflake, AzureSqlDb, ... (every value of
    /// the 2025-09-01 API). Immutable: Azure keys a connection's credentials by category; create a new MlConnection.
    #[schemars(schema_with = "category_schema")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("category is immutable; create a new MlConnection"))]
    pub category: String,

    /// The endpoint the connection reaches: a Git or registry URL, an Azure OpenAI endpoint, a storage URL, ...
    /// The SubscriptionBinding's allowedConnectionTargets (globs) limit it. Mutable.
    #[schemars(length(min = 1, max = 2048))]
    pub target: String,

    /// How Azure ML authenticates to the target: None, AAD (the caller's Entra identity), PAT, UsernamePassword,
    /// ApiKey, AccountKey, AccessKey, SAS, ServicePrincipal, ManagedIdentity, CustomKeys or OAuth2. Each category
    /// takes only some (checked at admission). Every authType but None and AAD needs credentialsFrom. Mutable.
    pub auth_type: ConnectionAuthType,

    /// Free-form settings Azure ML keeps with the connection (e.g. ApiType, ApiVersion, Kind, ResourceId for
    /// AzureOpenAI). Not secret: visible to every reader of the workspace. Mutable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new("self.all(k, k != 'azml.dev-owner')").message("metadata key azml.dev-owner is reserved for the operator's owner mark"))]
    pub metadata: BTreeMap<String, String>,

    /// Whether every user of the workspace may use the connection (Azure: isSharedToAll; default true).
    #[serde(default = "default_true")]
    pub shared_to_all: bool,

    /// The Secret (same namespace) holding the credentials, its keys named after Azure's credential fields: `pat`
    /// (PAT); `username`, `password` and optionally `securityToken` (UsernamePassword); `key` (ApiKey,
    /// AccountKey); `accessKeyId`, `secretAccessKey` (AccessKey); `sas` (SAS); `clientId`, `clientSecret`,
    /// `tenantId` (ServicePrincipal); `clientId`, `resourceId` (ManagedIdentity); `clientId`, `clientSecret` and
    /// optionally `authUrl`, `developerToken`, `password`, `refreshToken`, `tenantId`, `username` (OAuth2); every
    /// key of the Secret (CustomKeys). A change of the Secret's content sends the connection to Azure again once;
    /// the Secret is read by name (get), never listed or watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_from: Option<CredentialsFrom>,

    /// What deleting this resource does in Azure: Retain (default: leave the connection) or Delete (delete it).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_true() -> bool {
    true
}

fn category_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": CATEGORIES,
        "description": "What the connection points at, as Azure ML's ConnectionCategory names it.",
    })
}

/// Where the credentials come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsFrom {
    /// Name of a Secret in the connection's namespace. The operator needs `get` on it (see the README's RBAC).
    #[schemars(length(min = 1, max = 253), regex(pattern = patterns::KUBE_NAME))]
    pub secret_name: String,
}

/// Azure ML's ConnectionAuthType.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum ConnectionAuthType {
    /// No credentials (public targets).
    None,
    /// The caller's Microsoft Entra identity; no stored credentials.
    #[serde(rename = "AAD")]
    Aad,
    /// A personal access token (`pat`).
    #[serde(rename = "PAT")]
    Pat,
    /// `username`, `password` (and `securityToken`).
    UsernamePassword,
    /// An API key (`key`).
    ApiKey,
    /// A storage account key (`key`).
    AccountKey,
    /// `accessKeyId` and `secretAccessKey`.
    AccessKey,
    /// A shared access signature (`sas`).
    #[serde(rename = "SAS")]
    Sas,
    /// `clientId`, `clientSecret`, `tenantId`.
    ServicePrincipal,
    /// A user-assigned identity: `clientId`, `resourceId`.
    ManagedIdentity,
    /// Any named keys (every key of the Secret).
    CustomKeys,
    /// OAuth2 client credentials and tokens.
    OAuth2,
}

impl ConnectionAuthType {
    /// The value as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionAuthType::None => "None",
            ConnectionAuthType::Aad => "AAD",
            ConnectionAuthType::Pat => "PAT",
            ConnectionAuthType::UsernamePassword => "UsernamePassword",
            ConnectionAuthType::ApiKey => "ApiKey",
            ConnectionAuthType::AccountKey => "AccountKey",
            ConnectionAuthType::AccessKey => "AccessKey",
            ConnectionAuthType::Sas => "SAS",
            ConnectionAuthType::ServicePrincipal => "ServicePrincipal",
            ConnectionAuthType::ManagedIdentity => "ManagedIdentity",
            ConnectionAuthType::CustomKeys => "CustomKeys",
            ConnectionAuthType::OAuth2 => "OAuth2",
        }
    }

    /// The Secret keys this auth type needs, then those it may take (Azure's credential field names). CustomKeys
    /// takes every key of the Secret.
    pub fn credential_keys(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            ConnectionAuthType::None | ConnectionAuthType::Aad | ConnectionAuthType::CustomKeys => (&[], &[]),
            ConnectionAuthType::Pat => (&["pat"], &[]),
            ConnectionAuthType::UsernamePassword => (&["username", "password"], &["securityToken"]),
            ConnectionAuthType::ApiKey | ConnectionAuthType::AccountKey => (&["key"], &[]),
            ConnectionAuthType::AccessKey => (&["accessKeyId", "secretAccessKey"], &[]),
            ConnectionAuthType::Sas => (&["sas"], &[]),
            ConnectionAuthType::ServicePrincipal => (&["clientId", "clientSecret", "tenantId"], &[]),
            ConnectionAuthType::ManagedIdentity => (&["clientId", "resourceId"], &[]),
            ConnectionAuthType::OAuth2 => (
                &["clientId", "clientSecret"],
                &["authUrl", "developerToken", "password", "refreshToken", "tenantId", "username"],
            ),
        }
    }
}

impl MlConnectionSpec {
    /// The name of the connection in Azure: `azureName`, else the resource's own name.
    pub fn azure_name_or<'a>(&'a self, metadata_name: &'a str) -> &'a str {
        self.azure_name.as_deref().unwrap_or(metadata_name)
    }
}

/// Observed state of the connection, as the operator last saw it in Azure. Never holds a credential.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlConnectionStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// kstatus conditions (Ready, Reconciling, Stalled). Reasons include SecretNotFound (the Secret or a key is
    /// missing: the message names it), NotPermitted, AlreadyExists, WorkspaceNotReady, AzureRejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// ARM id of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,

    /// Category as Azure reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,

    /// Auth type as Azure reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<String>,

    /// Group Azure puts the category in (Azure, AzureAI, Database, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,

    /// SHA-256 (salted with the resource's uid) of the credentials last sent to Azure: the Secret is sent again
    /// only when this changes. Not the credentials; empty for None and AAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_hash: Option<String>,

    /// Name of the SubscriptionBinding that allowed the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,

    /// When the credentials were last sent to Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_credentials_sent: Option<Time>,

    /// When the operator last compared the connection with Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}
