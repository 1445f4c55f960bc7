//! The Azure world `azml-operator sandbox` starts with: the subscription, resource group, dependent resources and
//! principals that `examples/mlworkspace.yaml` names, so the README walkthrough works by copy-paste.

use serde_json::json;

use azml_arm_simulator::{Principal, SimState, model::Secret, roles};

/// Tenant of the sandbox (the one `examples/subscriptionbinding.yaml` names).
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The seeded subscription (the one `examples/mlworkspace.yaml` names).
pub const SUBSCRIPTION_ID: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";
/// A second subscription in the same tenant: a target for subscription moves.
pub const OTHER_SUBSCRIPTION_ID: &str = "0b1f6471-1bf0-4dda-aec3-444455556666";
/// Region of everything seeded.
pub const LOCATION: &str = "westeurope";
/// The seeded resource group, holding the dependent resources.
pub const RESOURCE_GROUP: &str = "rg-risk-ml";
/// A second resource group: a target for resource-group moves.
pub const OTHER_RESOURCE_GROUP: &str = "rg-risk-ml-2";
/// Storage account of the example workspace.
pub const STORAGE_ACCOUNT: &str = "riskmlsa";
/// Key vault of the example workspace.
pub const KEY_VAULT: &str = "risk-ml-kv";
/// Application Insights of the example workspace.
pub const APP_INSIGHTS: &str = "risk-ml-ai";
/// Client id of the service principal the operator authenticates as (the example binding's).
pub const OPERATOR_CLIENT_ID: &str = "3c5e7a90-1b2d-4e6f-8a0b-1c2d3e4f5a6b";
const OPERATOR_OBJECT_ID: &str = "3c5e7a90-0000-4000-8000-00000000a001";
/// Client id of the sandbox user (Owner on the subscription) that `azure.env` hands to Azure tools.
pub const USER_CLIENT_ID: &str = "5d7f9b10-2c3e-4f50-9a1b-2c3d4e5f6a7b";
const USER_OBJECT_ID: &str = "5d7f9b10-0000-4000-8000-00000000a002";

/// A seeded principal that `access` entries can name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPrincipal {
    /// Display name.
    pub display_name: &'static str,
    /// Entra object id.
    pub object_id: &'static str,
    /// User, Group or ServicePrincipal.
    pub principal_type: &'static str,
}

/// Principals the walkthrough grants roles to (`examples/mlworkspace.yaml` names the first two).
pub const PRINCIPALS: &[NamedPrincipal] = &[
    NamedPrincipal {
        display_name: "risk-data-scientists",
        object_id: "6f1c2a34-5b6c-4d7e-8f90-a1b2c3d4e5f6",
        principal_type: "Group",
    },
    NamedPrincipal {
        display_name: "risk-deploy-pipeline",
        object_id: "9a2d4c6e-8f01-4a23-b456-c789d0e1f2a3",
        principal_type: "ServicePrincipal",
    },
    NamedPrincipal { display_name: "alice", object_id: "a11ce000-0000-4000-8000-000000000001", principal_type: "User" },
    NamedPrincipal { display_name: "bob", object_id: "b0b00000-0000-4000-8000-000000000002", principal_type: "User" },
];

/// The seeded world and the credentials minted for it (fresh random secrets per world).
#[derive(Clone, Debug)]
pub struct SandboxWorld {
    /// The simulator state.
    pub state: SimState,
    /// The operator's client secret (Contributor + User Access Administrator on both subscriptions).
    pub operator_secret: Secret,
    /// The sandbox user's client secret (Owner on both subscriptions).
    pub user_secret: Secret,
}

/// ARM id of a resource group of the seeded subscription.
pub fn resource_group_id(subscription: &str, resource_group: &str) -> String {
    format!("/subscriptions/{subscription}/resourceGroups/{resource_group}")
}

/// ARM id of the seeded storage account.
pub fn storage_account_id() -> String {
    format!(
        "{}/providers/Microsoft.Storage/storageAccounts/{STORAGE_ACCOUNT}",
        resource_group_id(SUBSCRIPTION_ID, RESOURCE_GROUP)
    )
}

impl SandboxWorld {
    /// Builds the world with fresh secrets.
    pub fn seed() -> Self {
        let operator_secret = Secret::random(24);
        let user_secret = Secret::random(24);
        let mut s = SimState::new(TENANT_ID);
        s.add_subscription(SUBSCRIPTION_ID, "risk-prod");
        s.add_subscription(OTHER_SUBSCRIPTION_ID, "risk-prod-2");
        let rg_id = s.add_resource_group(SUBSCRIPTION_ID, RESOURCE_GROUP, LOCATION);
        s.add_resource_group(SUBSCRIPTION_ID, OTHER_RESOURCE_GROUP, LOCATION);
        // Azure ML vCPU quota in the location: room for CPU clusters (some of it used by other teams), none yet
        // for NCv3 GPUs (a GPU cluster stalls with QuotaExceeded until the quota is raised).
        for (name, limit, in_use) in [
            ("Total Cluster Dedicated Regional vCPUs", 64, 8),
            ("Standard DSv2 Family Cluster Dedicated vCPUs", 32, 8),
            ("Standard DSv3 Family Cluster Dedicated vCPUs", 24, 0),
            ("Standard NCSv3 Family Cluster Dedicated vCPUs", 0, 0),
        ] {
            s.set_ml_quota(SUBSCRIPTION_ID, LOCATION, name, limit, in_use);
        }
        s.put_resource(
            &storage_account_id(),
            "Microsoft.Storage/storageAccounts",
            json!({"location": LOCATION, "kind": "StorageV2", "sku": {"name": "Standard_LRS", "tier": "Standard"}}),
        );
        s.put_resource(
            &format!("{rg_id}/providers/Microsoft.KeyVault/vaults/{KEY_VAULT}"),
            "Microsoft.KeyVault/vaults",
            json!({"location": LOCATION}),
        );
        s.put_resource(
            &format!("{rg_id}/providers/Microsoft.Insights/components/{APP_INSIGHTS}"),
            "Microsoft.Insights/components",
            json!({"location": LOCATION, "kind": "web"}),
        );

        s.add_principal(Principal::service_principal(
            OPERATOR_OBJECT_ID,
            OPERATOR_CLIENT_ID,
            "azml-operator",
            Some(operator_secret.expose()),
        ));
        s.add_principal(Principal::service_principal(
            USER_OBJECT_ID,
            USER_CLIENT_ID,
            "sandbox-user",
            Some(user_secret.expose()),
        ));
        for p in PRINCIPALS {
            let principal = match p.principal_type {
                "User" => Principal::user(p.object_id, p.display_name),
                "Group" => Principal::group(p.object_id, p.display_name, &[]),
                _ => Principal::service_principal(p.object_id, p.object_id, p.display_name, None),
            };
            s.add_principal(principal);
        }
        for sub in [SUBSCRIPTION_ID, OTHER_SUBSCRIPTION_ID] {
            let scope = format!("/subscriptions/{sub}");
            s.assign_role(&scope, roles::CONTRIBUTOR, OPERATOR_OBJECT_ID);
            s.assign_role(&scope, roles::USER_ACCESS_ADMINISTRATOR, OPERATOR_OBJECT_ID);
            s.assign_role(&scope, roles::OWNER, USER_OBJECT_ID);
        }
        SandboxWorld { state: s, operator_secret, user_secret }
    }
}

/// `AZML_SANDBOX_PRINCIPALS`: `displayName=objectId:principalType`, comma-separated.
pub fn principals_env() -> String {
    PRINCIPALS
        .iter()
        .map(|p| format!("{}={}:{}", p.display_name, p.object_id, p.principal_type))
        .collect::<Vec<_>>()
        .join(",")
}
