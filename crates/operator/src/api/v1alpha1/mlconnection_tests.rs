//! Admission of MlConnection: the schema and CEL rules as the API server checks them.

use serde_json::{Value, json};

use super::*;
use crate::api::test_support::{admission_errors, example_documents};

/// Structural and CEL errors (defaults applied first), joined.
fn errors(object: &Value, old: Option<&Value>) -> String {
    admission_errors::<MlConnection>(object, old).join("\n")
}

/// The MlConnection documents of examples/mlconnection.yaml: (git, openai).
fn examples() -> (Value, Value) {
    let mut docs = example_documents("mlconnection.yaml").into_iter().filter(|d| d["kind"] == "MlConnection");
    (docs.next().expect("git"), docs.next().expect("openai"))
}

fn with(mut object: Value, field: &str, value: Value) -> Value {
    object["spec"][field] = value;
    object
}

#[test]
fn the_examples_are_valid_and_round_trip() {
    let (git, openai) = examples();
    assert_eq!(errors(&git, None), "");
    assert_eq!(errors(&openai, None), "");
    let c: MlConnection = serde_json::from_value(git).expect("a connection");
    assert_eq!(c.spec.auth_type, ConnectionAuthType::Pat);
    assert!(c.spec.shared_to_all, "shared by default");
    assert_eq!(c.spec.credentials_from.as_ref().map(|c| c.secret_name.as_str()), Some("fraud-git-pat"));
    let again: MlConnection = serde_json::from_value(serde_json::to_value(&c).expect("JSON")).expect("reads");
    assert_eq!(c, again);
    let o: MlConnection = serde_json::from_value(openai).expect("a connection");
    assert_eq!(o.spec.auth_type, ConnectionAuthType::Aad);
    assert_eq!(serde_json::to_value(o.spec.auth_type).expect("JSON"), json!("AAD"));
}

#[test]
fn credentials_from_goes_with_every_auth_type_but_none_and_aad() {
    let (git, openai) = examples();
    let without = {
        let mut g = git.clone();
        g["spec"].as_object_mut().expect("spec").remove("credentialsFrom");
        g
    };
    assert!(errors(&without, None).contains("every other authType needs credentialsFrom"));
    let aad_with = with(openai.clone(), "credentialsFrom", json!({"secretName": "x"}));
    assert!(errors(&aad_with, None).contains("authType None and AAD take no credentialsFrom"));
}

#[test]
fn each_category_takes_its_auth_types_only() {
    let (git, _) = examples();
    let cases = [
        ("Git", "ApiKey", "category Git and PythonFeed take authType PAT, UsernamePassword or None"),
        ("ContainerRegistry", "PAT", "category ContainerRegistry takes authType"),
        ("AzureOpenAI", "PAT", "categories AzureOpenAI, AIServices"),
        ("CustomKeys", "ApiKey", "category CustomKeys takes authType CustomKeys"),
        ("S3", "SAS", "categories S3 and AmazonS3Compatible take authType AccessKey"),
        ("AzureBlob", "PAT", "categories AzureBlob and AzureTableStorage"),
    ];
    for (category, auth, message) in cases {
        let c = with(with(git.clone(), "category", json!(category)), "authType", json!(auth));
        assert!(errors(&c, None).contains(message), "{category}/{auth}: {}", errors(&c, None));
    }
    for (category, auth) in [
        ("Git", "UsernamePassword"),
        ("AzureOpenAI", "ApiKey"),
        ("Snowflake", "UsernamePassword"),
        ("ADLSGen2", "ServicePrincipal"),
    ] {
        let c = with(with(git.clone(), "category", json!(category)), "authType", json!(auth));
        assert_eq!(errors(&c, None), "", "{category}/{auth}");
    }
    // The table the operator documents matches the rules: every listed pair passes.
    for (categories, auths) in CATEGORY_AUTH_TYPES {
        for category in *categories {
            for auth in *auths {
                let mut c = with(with(git.clone(), "category", json!(category)), "authType", json!(auth));
                if *auth == "None" || *auth == "AAD" {
                    c["spec"].as_object_mut().expect("spec").remove("credentialsFrom");
                }
                assert_eq!(errors(&c, None), "", "{category}/{auth}");
            }
        }
    }
}

#[test]
fn unknown_categories_and_auth_types_and_bad_names_are_refused() {
    let (git, _) = examples();
    assert!(!errors(&with(git.clone(), "category", json!("Gitt")), None).is_empty());
    assert!(!errors(&with(git.clone(), "authType", json!("Password")), None).is_empty());
    let mut bad = git.clone();
    bad["metadata"]["name"] = json!("a.b");
    assert!(errors(&bad, None).contains("not a valid connection name"));
    assert_eq!(errors(&with(bad, "azureName", json!("a-b")), None), "");
    let owner = with(git.clone(), "metadata", json!({"azml.dev-owner": "x"}));
    assert!(errors(&owner, None).contains("reserved"));
    assert_eq!(CATEGORIES.len(), 105, "every ConnectionCategory of 2025-09-01");
    let unique: std::collections::BTreeSet<&str> = CATEGORIES.iter().copied().collect();
    assert_eq!(unique.len(), CATEGORIES.len());
}

#[test]
fn workspace_category_and_name_are_immutable_target_and_auth_are_not() {
    let (git, _) = examples();
    let moved = with(git.clone(), "workspaceRef", json!({"name": "other"}));
    assert!(errors(&moved, Some(&git)).contains("workspaceRef is immutable"));
    let recat = with(git.clone(), "category", json!("PythonFeed"));
    assert!(errors(&recat, Some(&git)).contains("category is immutable"));
    let renamed = with(git.clone(), "azureName", json!("other-name"));
    assert!(errors(&renamed, Some(&git)).contains("azureName is immutable"));
    let retarget =
        with(with(git.clone(), "target", json!("https://github.com/contoso/x")), "authType", json!("UsernamePassword"));
    assert_eq!(errors(&retarget, Some(&git)), "");
}
