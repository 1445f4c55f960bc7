//! The fleet the benchmarks run the operator against (`benches/storage_keys.rs` and the scale benchmark,
//! [`super::scale`]): [`SUBSCRIPTIONS`] subscriptions, each with the resource group [`RG`], a key vault and
//! [`ACCOUNTS_PER_SUB`] storage accounts in the simulator's world; and a Kubernetes API emulator with the CRDs, the
//! namespaces [`NS`] and [`OPERATOR_NS`], the operator's client secret and one SubscriptionBinding per subscription.

use std::time::Duration;

use azml_arm_simulator::World;
use azml_kube_emulator::{KubeApiServer, RunningServer, ServerOptions};
use kube::Client;
use serde_json::{Value, json};

/// Subscriptions of the fleet.
pub const SUBSCRIPTIONS: usize = 10;
/// Storage accounts per subscription.
pub const ACCOUNTS_PER_SUB: usize = 10;
/// The namespace of the benchmark's objects.
pub const NS: &str = "bench";
/// The operator's namespace (its client secret).
pub const OPERATOR_NS: &str = "azml-system";
/// The resource group of the workspaces, storage accounts and key vaults.
pub const RG: &str = "rg-bench";

/// One storage account of the fleet, with its subscription and the key vault of its subscription.
#[derive(Clone, Debug)]
pub struct Account {
    /// Subscription id.
    pub sub: String,
    /// The storage account's ARM id.
    pub id: String,
    /// The key vault's ARM id.
    pub key_vault: String,
}

/// The id of subscription `s` of the fleet.
pub fn subscription_id(s: usize) -> String {
    format!("00000000-0000-4000-9000-{s:012}")
}

/// Adds the fleet to `world`: the operator holds `operator_role` on every subscription; `extra_groups` are created
/// (empty) beside [`RG`]. Returns the storage accounts, subscription by subscription.
pub fn seed(world: &mut World, operator_role: &str, extra_groups: &[&str]) -> Vec<Account> {
    let mut accounts = Vec::new();
    for s in 0..SUBSCRIPTIONS {
        let sub = subscription_id(s);
        world.state.add_subscription(&sub, &format!("bench-{s}"));
        world.state.assign_role(&format!("/subscriptions/{sub}"), operator_role, &world.operator.object_id);
        for rg in std::iter::once(&RG).chain(extra_groups) {
            world.state.add_resource_group(&sub, rg, &world.location);
        }
        let rg_id = format!("/subscriptions/{sub}/resourceGroups/{RG}");
        let kv = format!("{rg_id}/providers/Microsoft.KeyVault/vaults/kv-bench{s}");
        world.state.put_resource(&kv, "Microsoft.KeyVault/vaults", json!({"location": world.location}));
        for a in 0..ACCOUNTS_PER_SUB {
            let sa = format!("{rg_id}/providers/Microsoft.Storage/storageAccounts/stbench{s}x{a}");
            world.state.put_resource(
                &sa,
                "Microsoft.Storage/storageAccounts",
                json!({"location": world.location, "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
            );
            accounts.push(Account { sub: sub.clone(), id: sa, key_vault: kv.clone() });
        }
    }
    accounts
}

/// Starts the Kubernetes API emulator for the fleet (a watch history deep enough for thousands of objects) with the
/// CRDs, [`NS`], [`OPERATOR_NS`], the operator's client secret and a binding `bench-{s}` per subscription that lets
/// [`NS`] use it in resource groups `rg-*`; `binding_limits` adds spec fields (allowedRoles, allowedScopes, ...).
pub async fn start_kube(world: &World, binding_limits: Value) -> (RunningServer, Client) {
    let kube = KubeApiServer::start(ServerOptions { history_limit: 100_000, ..ServerOptions::default() })
        .await
        .expect("emulator");
    let client = kube.client().expect("client");
    super::install_crds(&client, azml_operator::api::all_crds()).await;
    super::create_namespaces(&client, &[NS, OPERATOR_NS]).await;
    super::create_operator_secret(&client, world, OPERATOR_NS).await;
    for s in 0..SUBSCRIPTIONS {
        let name = format!("bench-{s}");
        super::create_operator_binding(&client, world, &name, &subscription_id(s), &[NS], binding_limits.clone()).await;
    }
    (kube, client)
}

/// The `p` quantile (0..=1, nearest rank) of `sorted`; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
