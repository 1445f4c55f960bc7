//! `spec.access` end to end: the real controller against the Kubernetes API emulator and the ARM simulator.
//!
//! Each test starts both emulators on port 0, installs the CRDs and a SubscriptionBinding that allows the roles and
//! scopes used here, and runs `controller::run` in-process. Role assignments are read from the simulator's state and
//! ARM calls from its call log.

use std::time::Duration;

use crate::common::{self, condition, is_current};
use crate::env::{TestEnv, env_type};
use azml_arm_simulator::model::{RoleAssignment, id_key};
use azml_arm_simulator::{FaultRule, Principal};
use azml_operator::api::conditions::{self, Reason};
use azml_operator::api::v1alpha1::{AccessScope, AccessState, AccessStatus, BuiltinRole, MlWorkspace, MlWorkspaceSpec};
use azml_operator::azure::ResourceId;
use azml_operator::controller::access::{assignment_name, marker};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use uuid::Uuid;

const NS: &str = "team-a";
// An upper bound for slow CI machines, kept below the resync and stalled-requeue periods these tests configure, so
// only the mechanism under test (watch, signal) can end a wait in time.
const WAIT: Duration = Duration::from_secs(25);
const POLL: Duration = Duration::from_millis(50);

env_type!(Env);

impl Env {
    /// The controller runs with `resync` (also the stalled requeue) and `principal_wait`; the binding allows the
    /// roles and scopes used here.
    async fn start(resync: Duration, principal_wait: Duration) -> Env {
        let limits = json!({
            "allowedRoles": ["Reader", "Contributor", "AzureMLDataScientist", "AzureMLComputeOperator"],
            "allowedScopes": ["Workspace", "ResourceGroup", "Subscription"],
        });
        let env = TestEnv::builder()
            .lro(Duration::from_millis(100))
            .bind(&[NS], limits)
            .resync(resync)
            .configure(move |c| {
                c.principal_wait = principal_wait;
                c.error_backoff_max = Duration::from_millis(400);
            })
            .start()
            .await;
        Env(env)
    }

    fn api(&self) -> Api<MlWorkspace> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn spec(&self, access: Value) -> MlWorkspaceSpec {
        common::workspace_spec(&self.world, json!({"deletionPolicy": "Delete", "access": access}))
    }

    async fn create(&self, name: &str, access: Value) {
        let ws = MlWorkspace::new(name, self.spec(access));
        self.api().create(&PostParams::default(), &ws).await.unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    async fn set_access(&self, name: &str, access: Value) {
        let patch = json!({"spec": {"access": access}});
        self.api().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }

    async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&MlWorkspace) -> bool) -> MlWorkspace {
        let check = async || match self.api().get_opt(name).await.unwrap_or_else(|e| panic!("get {name}: {e}")) {
            Some(ws) if done(&ws) => Ok(ws),
            other => Err(other.map(|ws| ws.status)),
        };
        common::wait_until(WAIT, POLL, check, |seen| match seen {
            Some(status) => format!("{name}: timed out waiting for {what}; status: {status:#?}"),
            None => format!("{name}: gone while waiting for {what}"),
        })
        .await
    }

    /// Waits until the current generation is Ready and AccessGranted.
    async fn wait_granted(&self, name: &str) -> MlWorkspace {
        self.wait_for(name, "AccessGranted", |ws| {
            is_current(ws)
                && condition(ws, conditions::READY).is_some_and(|c| c.status == "True")
                && condition(ws, conditions::ACCESS_GRANTED).is_some_and(|c| c.status == "True")
        })
        .await
    }

    async fn wait_gone(&self, name: &str) {
        common::wait_gone(&self.api(), name, WAIT, POLL).await
    }

    fn scope(&self, kind: AccessScope, ws: &str) -> String {
        let rg = &self.world.resource_group_id;
        match kind {
            AccessScope::Workspace => format!("{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"),
            AccessScope::ResourceGroup => rg.clone(),
            AccessScope::Subscription => format!("/subscriptions/{}", self.world.subscription_id),
        }
    }

    /// The deterministic name the operator uses.
    fn name_for(&self, kind: AccessScope, ws: &str, role: BuiltinRole, principal: &str) -> Uuid {
        let scope = ResourceId::parse(&self.scope(kind, ws)).unwrap();
        assignment_name(&scope, Uuid::parse_str(role.definition_guid()).unwrap(), Uuid::parse_str(principal).unwrap())
    }

    /// Assignments in Azure of `role` to `principal` at `kind`'s scope.
    fn assignments(&self, kind: AccessScope, ws: &str, role: BuiltinRole, principal: &str) -> Vec<RoleAssignment> {
        let scope = id_key(&self.scope(kind, ws));
        self.sim.handle.with_state(|s| {
            s.role_assignments
                .values()
                .filter(|ra| {
                    id_key(&ra.scope) == scope
                        && ra.role_definition_guid == role.definition_guid()
                        && ra.principal_id.eq_ignore_ascii_case(principal)
                })
                .cloned()
                .collect()
        })
    }

    /// Every assignment carrying the operator's marker for `ws`.
    fn marked(&self, ws: &str) -> Vec<RoleAssignment> {
        let m = marker(NS, ws);
        self.sim.handle.with_state(|s| {
            s.role_assignments.values().filter(|ra| ra.description.as_deref() == Some(m.as_str())).cloned().collect()
        })
    }

    fn count(&self, operation: &str) -> usize {
        self.sim.handle.count(operation)
    }

    /// Sequence numbers of the calls to `operation`.
    fn seqs(&self, operation: &str) -> Vec<u64> {
        self.sim.handle.calls().iter().filter(|c| c.operation == operation && c.status < 400).map(|c| c.seq).collect()
    }

    /// Seeds an assignment directly in Azure (as someone else, or as a crashed operator would have left it).
    fn seed_assignment(
        &self,
        scope: &str,
        name: Uuid,
        role: BuiltinRole,
        principal: &str,
        description: Option<String>,
    ) {
        let id = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
        let ra = RoleAssignment {
            id: id.clone(),
            name: name.to_string(),
            scope: scope.to_owned(),
            role_definition_guid: role.definition_guid().to_owned(),
            principal_id: principal.to_owned(),
            principal_type: "User".into(),
            description,
            condition: None,
            condition_version: None,
            created_on: jiff::Timestamp::now(),
            created_by: None,
        };
        self.sim.handle.with_state(|s| s.role_assignments.insert(id_key(&id), ra));
    }
}

/// Scope, role and principal of an assignment.
type Grant<'a> = (AccessScope, BuiltinRole, &'a str);

fn access(ws: &MlWorkspace) -> Vec<AccessStatus> {
    ws.status.as_ref().map(|s| s.access.clone()).unwrap_or_default()
}

fn entry(principal: &str, role: &str, scope: &str) -> Value {
    json!({"principalId": principal, "role": role, "scope": scope})
}

#[tokio::test]
async fn add_change_remove_with_deletes_before_creates_and_no_calls_in_steady_state() {
    // A long resync: every reconcile below is triggered by a change, except the ones this test forces.
    let env = Env::start(Duration::from_secs(30), Duration::from_secs(5)).await;
    let (alice, bob) = (env.world.users[0].clone(), env.world.users[1].clone());
    use AccessScope::{ResourceGroup, Workspace};
    use BuiltinRole::{AzureMLComputeOperator, AzureMLDataScientist, Reader};

    // Add.
    env.create("ws-acc", json!([entry(&alice, "AzureMLDataScientist", "Workspace")])).await;
    let ws = env.wait_granted("ws-acc").await;
    let expected = env.name_for(Workspace, "ws-acc", AzureMLDataScientist, &alice);
    let found = env.assignments(Workspace, "ws-acc", AzureMLDataScientist, &alice);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, expected.to_string(), "deterministic name");
    assert_eq!(found[0].description.as_deref(), Some(marker(NS, "ws-acc").as_str()));
    let status = access(&ws);
    assert_eq!(status.len(), 1);
    assert_eq!(
        (status[0].state, status[0].assignment_name.as_str()),
        (AccessState::Granted, expected.to_string().as_str())
    );
    assert_eq!(status[0].role_definition_id, AzureMLDataScientist.definition_guid());
    assert!(status[0].scope.eq_ignore_ascii_case(&env.scope(Workspace, "ws-acc")));
    assert_eq!(condition(&ws, conditions::ACCESS_GRANTED).unwrap().reason, Reason::AccessGranted);

    // Steady state: reconciles triggered before the resync period elapsed make no access call at all.
    env.sim.handle.clear_calls();
    for i in 0..3 {
        let patch = json!({"metadata": {"annotations": {"test/touch": i.to_string()}}});
        env.api().patch("ws-acc", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(env.count("Workspaces_Get") >= 2, "{:?}", env.sim.handle.call_summary());
    for op in ["RoleAssignments_ListForScope", "RoleAssignments_Create", "RoleAssignments_Delete"] {
        assert_eq!(env.count(op), 0, "{op}: {:?}", env.sim.handle.call_summary());
    }
    let now = env.api().get("ws-acc").await.unwrap();
    assert_eq!(now.status, ws.status, "status was rewritten");

    // Change the role (disjoint roles: holding both would exceed either declaration): the old one is deleted first.
    let steps: [(Value, Grant, Grant); 3] = [
        (
            json!([entry(&alice, "AzureMLComputeOperator", "Workspace")]),
            (Workspace, AzureMLDataScientist, &alice),
            (Workspace, AzureMLComputeOperator, &alice),
        ),
        (
            json!([entry(&bob, "AzureMLComputeOperator", "Workspace")]),
            (Workspace, AzureMLComputeOperator, &alice),
            (Workspace, AzureMLComputeOperator, &bob),
        ),
        (
            json!([entry(&bob, "AzureMLComputeOperator", "ResourceGroup")]),
            (Workspace, AzureMLComputeOperator, &bob),
            (ResourceGroup, AzureMLComputeOperator, &bob),
        ),
    ];
    for (spec, (old_kind, old_role, old_p), (new_kind, new_role, new_p)) in steps {
        env.sim.handle.clear_calls();
        env.set_access("ws-acc", spec.clone()).await;
        let ws = env.wait_granted("ws-acc").await;
        assert!(env.assignments(old_kind, "ws-acc", old_role, old_p).is_empty(), "old kept after {spec}");
        assert_eq!(env.assignments(new_kind, "ws-acc", new_role, new_p).len(), 1, "new missing after {spec}");
        let (deleted, created) = (env.seqs("RoleAssignments_Delete"), env.seqs("RoleAssignments_Create"));
        assert_eq!((deleted.len(), created.len()), (1, 1), "{:?}", env.sim.handle.call_summary());
        assert!(deleted[0] < created[0], "created before deleting the old assignment");
        assert_eq!(env.count("RoleAssignments_ListForScope"), 1, "one listing per change");
        let status = access(&ws);
        assert_eq!(status.len(), 1, "{status:?}");
        assert_eq!(status[0].assignment_name, env.name_for(new_kind, "ws-acc", new_role, new_p).to_string());
        assert_eq!(env.marked("ws-acc").len(), 1);
    }

    // Add a second entry, then remove the first.
    env.set_access(
        "ws-acc",
        json!([entry(&bob, "AzureMLComputeOperator", "ResourceGroup"), entry(&alice, "Reader", "Workspace")]),
    )
    .await;
    let ws = env.wait_granted("ws-acc").await;
    assert_eq!(access(&ws).len(), 2);
    assert_eq!(env.marked("ws-acc").len(), 2);
    env.set_access("ws-acc", json!([entry(&alice, "Reader", "Workspace")])).await;
    let ws = env.wait_granted("ws-acc").await;
    assert_eq!(access(&ws).len(), 1);
    assert!(env.assignments(ResourceGroup, "ws-acc", AzureMLComputeOperator, &bob).is_empty());
    assert_eq!(env.assignments(Workspace, "ws-acc", Reader, &alice).len(), 1);

    // Duplicate entries are rejected at admission by the CRD's CEL rule.
    let dup = json!({"spec": {"access": [entry(&alice, "Reader", "Workspace"), entry(&alice, "Reader", "Workspace")]}});
    let err = env.api().patch("ws-acc", &PatchParams::default(), &Patch::Merge(&dup)).await.unwrap_err();
    assert!(err.to_string().contains("access entries must be unique"), "{err}");

    // deletionPolicy Delete: the workspace and the assignments the operator created go.
    env.api().delete("ws-acc", &DeleteParams::default()).await.unwrap();
    env.wait_gone("ws-acc").await;
    assert!(env.marked("ws-acc").is_empty());
}

#[tokio::test]
async fn existing_assignments_are_unmanaged_and_never_deleted() {
    let env = Env::start(Duration::from_secs(30), Duration::from_secs(5)).await;
    let (alice, bob) = (env.world.users[0].clone(), env.world.users[1].clone());
    let rg_scope = env.scope(AccessScope::ResourceGroup, "");
    // Someone else granted alice Reader on the resource group, and bob Contributor (not declared at all).
    let theirs = Uuid::new_v4();
    env.seed_assignment(&rg_scope, theirs, BuiltinRole::Reader, &alice, Some("granted by hand".into()));
    let unrelated = Uuid::new_v4();
    env.seed_assignment(&rg_scope, unrelated, BuiltinRole::Contributor, &bob, None);
    // A race: bob's Reader is assigned by someone else between the listing and the PUT (409 RoleAssignmentExists).
    env.sim.handle.inject_fault(FaultRule::error("RoleAssignments_Create", 409, "RoleAssignmentExists").times(1));

    env.create("ws-ext", json!([entry(&alice, "Reader", "ResourceGroup"), entry(&bob, "Reader", "ResourceGroup")]))
        .await;
    let ws = env.wait_granted("ws-ext").await;
    let status = access(&ws);
    assert_eq!(status.len(), 2, "{status:?}");
    assert_eq!(status[0].state, AccessState::Unmanaged);
    assert_eq!(status[0].assignment_name, theirs.to_string(), "reports the existing assignment");
    assert_eq!(status[1].state, AccessState::Unmanaged, "409 RoleAssignmentExists: {status:?}");
    assert!(status[1].message.as_deref().is_some_and(|m| m.contains("RoleAssignmentExists")));
    assert_eq!(env.count("RoleAssignments_Create"), 1, "no PUT for the assignment found in the listing");
    assert!(condition(&ws, conditions::ACCESS_GRANTED).unwrap().message.contains("outside"));

    // Removed from the spec: forgotten, never deleted. Deleting the resource does not delete them either.
    env.set_access("ws-ext", json!([])).await;
    let ws = env.wait_granted("ws-ext").await;
    assert!(access(&ws).is_empty());
    env.api().delete("ws-ext", &DeleteParams::default()).await.unwrap();
    env.wait_gone("ws-ext").await;
    assert_eq!(env.count("RoleAssignments_Delete"), 0, "{:?}", env.sim.handle.call_summary());
    assert_eq!(env.assignments(AccessScope::ResourceGroup, "", BuiltinRole::Reader, &alice).len(), 1);
    assert_eq!(env.assignments(AccessScope::ResourceGroup, "", BuiltinRole::Contributor, &bob).len(), 1);
}

#[tokio::test]
async fn a_principal_not_yet_replicated_is_retried_then_granted_or_failed() {
    // The principal wait is long enough that the directory "catching up" below always falls inside it on a loaded
    // machine, and short enough for the never-appearing principal to fail within the test's deadline.
    let env = Env::start(Duration::from_secs(30), Duration::from_secs(6)).await;
    let late = "50000000-0000-4000-8000-000000000001";
    let never = "50000000-0000-4000-8000-000000000002";
    env.create("ws-late", json!([entry(late, "Reader", "Workspace")])).await;
    env.create("ws-never", json!([entry(never, "Reader", "Workspace")])).await;

    let ws = env
        .wait_for("ws-late", "Pending", |ws| access(ws).first().is_some_and(|a| a.state == AccessState::Pending))
        .await;
    assert!(access(&ws)[0].message.as_deref().is_some_and(|m| m.contains("not found")), "{:?}", access(&ws));
    let ready = condition(&ws, conditions::READY).unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", Reason::AccessPending.as_str()));
    assert_eq!(condition(&ws, conditions::ACCESS_GRANTED).unwrap().status, "False");

    // The directory catches up.
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.sim.handle.seed_principal(Principal::user(late, "late@contoso.example"));
    let ws = env.wait_granted("ws-late").await;
    assert_eq!(access(&ws)[0].state, AccessState::Granted);
    assert_eq!(env.assignments(AccessScope::Workspace, "ws-late", BuiltinRole::Reader, late).len(), 1);

    // Never appears: Failed with the reason once the wait is over; the workspace is Stalled, not retried in a loop.
    let ws = env
        .wait_for("ws-never", "Failed", |ws| access(ws).first().is_some_and(|a| a.state == AccessState::Failed))
        .await;
    assert!(access(&ws)[0].message.as_deref().is_some_and(|m| m.contains("PrincipalNotFound")), "{:?}", access(&ws));
    let stalled = condition(&ws, conditions::STALLED).unwrap();
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", Reason::AccessFailed.as_str()));
    let attempts = |env: &Env| {
        env.sim
            .handle
            .calls()
            .iter()
            .filter(|c| c.operation == "RoleAssignments_Create" && c.path.contains("ws-never"))
            .count()
    };
    let before = attempts(&env);
    assert!((2..=40).contains(&before), "{before} attempts in 6 s: retried with backoff, not in a hot loop");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(attempts(&env), before, "retried after Failed");
}

#[tokio::test]
async fn a_crash_between_create_and_status_update_leaves_no_duplicate_and_a_new_incarnation_finds_its_assignments() {
    let mut env = Env::start(Duration::from_secs(30), Duration::from_secs(5)).await;
    let alice = env.world.users[0].clone();
    env.create("ws-crash", json!([])).await;
    env.wait_granted("ws-crash").await;
    env.stop_controller().await;

    // The operator PUT the assignment (deterministic name, marker) and died before writing status.
    let name = env.name_for(AccessScope::Workspace, "ws-crash", BuiltinRole::Reader, &alice);
    env.seed_assignment(
        &env.scope(AccessScope::Workspace, "ws-crash"),
        name,
        BuiltinRole::Reader,
        &alice,
        Some(marker(NS, "ws-crash")),
    );
    env.set_access("ws-crash", json!([entry(&alice, "Reader", "Workspace")])).await;
    env.sim.handle.clear_calls();
    env.start_controller();
    let ws = env.wait_granted("ws-crash").await;
    assert_eq!(access(&ws)[0].state, AccessState::Granted, "adopted");
    assert_eq!(access(&ws)[0].assignment_name, name.to_string());
    assert_eq!(env.count("RoleAssignments_Create"), 0);
    assert_eq!(env.assignments(AccessScope::Workspace, "ws-crash", BuiltinRole::Reader, &alice).len(), 1);

    // Deleted with Retain, then re-created: the new resource finds the assignment again (no second one).
    let patch = json!({"spec": {"deletionPolicy": "Retain"}});
    env.api().patch("ws-crash", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    env.wait_granted("ws-crash").await;
    env.api().delete("ws-crash", &DeleteParams::default()).await.unwrap();
    env.wait_gone("ws-crash").await;
    assert_eq!(env.assignments(AccessScope::Workspace, "ws-crash", BuiltinRole::Reader, &alice).len(), 1, "Retain");
    env.sim.handle.clear_calls();
    env.create("ws-crash", json!([entry(&alice, "Reader", "Workspace")])).await;
    let ws = env.wait_granted("ws-crash").await;
    assert_eq!(access(&ws)[0].state, AccessState::Granted);
    assert_eq!(env.count("RoleAssignments_Create"), 0);
    assert_eq!(env.assignments(AccessScope::Workspace, "ws-crash", BuiltinRole::Reader, &alice).len(), 1);
}
