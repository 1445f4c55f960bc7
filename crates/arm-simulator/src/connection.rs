//! Azure ML workspace connections in the simulator (`.../workspaces/{ws}/connections[/{name}[/listsecrets]]`). A
//! child module of `engine`; routed by [`crate::route::connection`] before the generic resource routing.
//!
//! Shapes follow the azure-rest-api-specs examples of Microsoft.MachineLearningServices 2025-09-01
//! (`WorkspaceConnection/{create,get,update,delete,list,listSecrets}.json`) and the swagger (`workspaceRP.json`):
//! - PUT (WorkspaceConnections_Create) answers 200 with the connection, synchronously (no LRO); it replaces the
//!   connection, credentials included. The name follows `^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$`; `authType` is required
//!   and picks the credentials' shape (the swagger's discriminator; the shapes marked `additionalProperties: false`
//!   refuse other fields); `category` is one of ConnectionCategory; the parent workspace must exist.
//! - Credentials are write-only: GET, list, PUT and PATCH responses never carry them; `listsecrets` (POST) does.
//! - PATCH (WorkspaceConnections_Update) merges `properties` (credentials replaced when given); 200.
//! - DELETE answers 200, or 204 when the connection does not exist.
//! - List filters by `target` and `category` and pages with `nextLink`.

use http::StatusCode;
use serde_json::{Value, json};

use super::{Inner, Req};
use crate::model::{ResourceExt, Secret, id_key, scope_contains};
use crate::reply::{ArmError, Reply};
use crate::route::connection::{CONNECTIONS, ConnectionTarget};
use crate::route::{Routed, WORKSPACES};

/// ConnectionAuthType values and the credential fields each takes (`None`: any fields, as the swagger leaves the
/// shape open; `Some(fields)`: those only).
const AUTH_TYPES: &[(&str, Option<&[&str]>)] = &[
    ("PAT", Some(&["pat"])),
    ("ManagedIdentity", Some(&["resourceId", "clientId"])),
    ("UsernamePassword", Some(&["username", "password", "securityToken"])),
    ("None", Some(&[])),
    ("SAS", Some(&["sas"])),
    ("AccountKey", Some(&["key"])),
    ("ServicePrincipal", None),
    ("AccessKey", None),
    ("ApiKey", None),
    ("CustomKeys", None),
    ("OAuth2", None),
    ("AAD", Some(&[])),
];

/// ConnectionCategory of the 2025-09-01 swagger (`workspaceRP.json`), as Azure spells them.
const CATEGORIES: &[&str] = &[
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

fn bad(message: impl Into<String>) -> ArmError {
    ArmError::bad_request("BadRequest", message)
}

fn name_ok(name: &str) -> bool {
    (3..=33).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks `properties` as the swagger does; returns the credentials (taken out of the properties).
fn check_properties(props: &mut Value, partial: bool) -> Result<Option<Value>, ArmError> {
    let Some(obj) = props.as_object_mut() else {
        return Err(bad("properties must be an object.").target("properties"));
    };
    let credentials = obj.remove("credentials");
    let auth = obj.get("authType").and_then(Value::as_str).map(str::to_owned);
    if auth.is_none() && !partial {
        return Err(bad("The authType field is required.").target("properties.authType"));
    }
    if let Some(category) = obj.get("category") {
        let known = category.as_str().is_some_and(|c| CATEGORIES.iter().any(|k| k.eq_ignore_ascii_case(c)));
        if !known {
            return Err(bad(format!("The category '{category}' is not a valid ConnectionCategory."))
                .target("properties.category"));
        }
    }
    if let Some(m) = obj.get("metadata")
        && !m.as_object().is_some_and(|m| m.values().all(Value::is_string))
    {
        return Err(bad("metadata must be an object of strings.").target("properties.metadata"));
    }
    for ro in ["group", "createdByWorkspaceArmId"] {
        obj.remove(ro);
    }
    let Some(auth) = auth else { return Ok(credentials) };
    let Some((canonical, fields)) = AUTH_TYPES.iter().find(|(a, _)| a.eq_ignore_ascii_case(&auth)) else {
        return Err(
            bad(format!("The authType '{auth}' is not a valid ConnectionAuthType.")).target("properties.authType")
        );
    };
    obj.insert("authType".into(), json!(canonical));
    if let Some(c) = &credentials {
        let Some(c) = c.as_object() else {
            return Err(bad("credentials must be an object.").target("properties.credentials"));
        };
        if let Some(allowed) = fields
            && let Some(extra) = c.keys().find(|k| !allowed.contains(&k.as_str()))
        {
            return Err(bad(format!("Could not find member '{extra}' on object of type '{canonical}' credentials."))
                .target("properties.credentials"));
        }
        if *canonical == "CustomKeys" && !c.get("keys").is_some_and(Value::is_object) {
            return Err(bad("CustomKeys credentials need a keys object.").target("properties.credentials.keys"));
        }
    }
    Ok(credentials)
}

fn stored_credentials(ext: &ResourceExt) -> Option<Value> {
    match ext {
        ResourceExt::Connection { credentials: Some(c) } => serde_json::from_str(c.expose()).ok(),
        _ => None,
    }
}

impl Inner {
    /// Handles a routed connection request.
    pub(super) fn connection(
        &mut self,
        target: &ConnectionTarget,
        routed: &Routed,
        req: &Req,
    ) -> Result<Reply, ArmError> {
        let sub = self.ensure_sub(routed.sub.as_deref().unwrap_or_default())?;
        let (rg, ws) = match target {
            ConnectionTarget::List { rg, ws } | ConnectionTarget::Connection { rg, ws, .. } => (rg, ws),
        };
        let (sub, rg) = self.ensure_rg(&sub, rg)?;
        let ws_id = format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
        );
        let parent = self.state.resources.get(&id_key(&ws_id)).filter(|r| r.rtype.eq_ignore_ascii_case(WORKSPACES));
        let Some(ws_id) = parent.map(|r| r.id.clone()) else {
            return Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "ParentResourceNotFound",
                format!("Can not perform requested operation on nested resource. Parent resource '{ws}' not found."),
            ));
        };
        let ConnectionTarget::Connection { name, action, .. } = target else {
            let category = req.q("category").map(str::to_owned);
            let wanted_target = req.q("target").map(str::to_owned);
            let items: Vec<Value> = self
                .state
                .resources
                .values()
                .filter(|r| r.rtype.eq_ignore_ascii_case(CONNECTIONS) && scope_contains(&ws_id, &r.id))
                .filter(|r| {
                    category.as_ref().is_none_or(|c| {
                        r.body
                            .pointer("/properties/category")
                            .and_then(Value::as_str)
                            .is_some_and(|v| v.eq_ignore_ascii_case(c))
                    })
                })
                .filter(|r| {
                    wanted_target.as_ref().is_none_or(|t| {
                        r.body.pointer("/properties/target").and_then(Value::as_str) == Some(t.as_str())
                    })
                })
                .map(|r| r.body.clone())
                .collect();
            return Ok(Reply::ok(self.page(req, items)));
        };
        let id = format!("{ws_id}/connections/{name}");
        let key = id_key(&id);
        let id = self.state.resources.get(&key).map_or(id, |r| r.id.clone());
        let action = action.as_deref().map(str::to_ascii_lowercase);
        match (req.method.as_str(), action.as_deref()) {
            ("GET", None) => Ok(Reply::ok(self.get_connection(&id)?.0)),
            ("POST", Some("listsecrets")) => {
                let (mut body, credentials) = self.get_connection(&id)?;
                if let Some(c) = credentials {
                    body["properties"]["credentials"] = c;
                }
                Ok(Reply::ok(body))
            }
            ("PUT", None) => {
                if !name_ok(name) {
                    return Err(bad(format!(
                        "The connection name '{name}' is invalid: it must match ^[a-zA-Z0-9][a-zA-Z0-9_-]{{2,32}}$."
                    )));
                }
                let mut body = req.json()?;
                let Some(props) = body.get_mut("properties") else {
                    return Err(bad("The properties field is required.").target("properties"));
                };
                let credentials = check_properties(props, false)?;
                let props = props.clone();
                let now = jiff::Timestamp::now().to_string();
                let created =
                    self.state.resources.get(&key).and_then(|r| r.body.pointer("/systemData/createdAt").cloned());
                let out = json!({"properties": props, "systemData": {
                    "createdAt": created.unwrap_or(json!(now)), "createdBy": "azml-sandbox", "createdByType": "Application",
                    "lastModifiedAt": now, "lastModifiedBy": "azml-sandbox", "lastModifiedByType": "Application",
                }});
                let r = self.state.put_resource(&id, CONNECTIONS, out);
                // Connections have no provisioning state (WorkspaceConnectionPropertiesV2 defines none).
                if let Some(p) = r.body["properties"].as_object_mut() {
                    p.remove("provisioningState");
                }
                r.ext = ResourceExt::Connection { credentials: credentials.map(|c| Secret::new(c.to_string())) };
                Ok(Reply::ok(r.body.clone()))
            }
            ("PATCH", None) => {
                let mut body = req.json()?;
                let mut patch = body.get_mut("properties").cloned().unwrap_or(json!({}));
                let credentials = check_properties(&mut patch, true)?;
                let Some(r) = self.state.resources.get_mut(&key) else {
                    return Err(ArmError::not_found(CONNECTIONS, &id));
                };
                if let (Some(have), Some(new)) = (r.body["properties"].as_object_mut(), patch.as_object()) {
                    for (k, v) in new {
                        have.insert(k.clone(), v.clone());
                    }
                }
                if let Some(c) = credentials {
                    r.ext = ResourceExt::Connection { credentials: Some(Secret::new(c.to_string())) };
                }
                r.body["systemData"]["lastModifiedAt"] = json!(jiff::Timestamp::now().to_string());
                Ok(Reply::ok(r.body.clone()))
            }
            ("DELETE", None) => Ok(match self.state.resources.remove(&key) {
                Some(_) => Reply::empty(StatusCode::OK),
                None => Reply::empty(StatusCode::NO_CONTENT),
            }),
            _ => Err(ArmError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("The requested method {} is not supported for this path.", req.method),
            )),
        }
    }

    /// The connection's GET body and its stored credentials.
    fn get_connection(&self, id: &str) -> Result<(Value, Option<Value>), ArmError> {
        let r = self
            .state
            .resources
            .get(&id_key(id))
            .filter(|r| r.rtype.eq_ignore_ascii_case(CONNECTIONS))
            .ok_or_else(|| ArmError::not_found(CONNECTIONS, id))?;
        Ok((r.body.clone(), stored_credentials(&r.ext)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_checked_against_the_auth_type_and_taken_out() {
        let mut props =
            json!({"category": "Git", "target": "https://x", "authType": "PAT", "credentials": {"pat": "t"}});
        let creds = check_properties(&mut props, false).expect("valid");
        assert_eq!(creds, Some(json!({"pat": "t"})));
        assert!(props.get("credentials").is_none(), "write-only: not stored in the body");
        let mut wrong = json!({"authType": "PAT", "credentials": {"password": "t"}});
        assert!(check_properties(&mut wrong, false).is_err());
        let mut none_with = json!({"authType": "None", "credentials": {"pat": "t"}});
        assert!(check_properties(&mut none_with, false).is_err());
        let mut no_auth = json!({"category": "Git"});
        assert!(check_properties(&mut no_auth, false).is_err());
        let mut bad_category = json!({"authType": "None", "category": "Gitt"});
        assert!(check_properties(&mut bad_category, false).is_err());
        // The spec's update example: AccessKey on ADLSGen2.
        let mut example = json!({"authType": "AccessKey", "credentials": {"accessKeyId": "some_string", "secretAccessKey": "some_string"}, "category": "ADLSGen2", "expiryTime": "2020-01-01T00:00:00Z", "target": "some_string", "metadata": {}});
        assert!(check_properties(&mut example, false).is_ok());
        assert!(!name_ok("ab") && name_ok("connection-1"));
    }
}
