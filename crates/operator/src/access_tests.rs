//! Unit tests of the pure access planning.

use proptest::prelude::*;

use super::*;
use crate::api::v1alpha1::BuiltinRole;

const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";
const ALICE: &str = "30000000-0000-4000-8000-000000000001";
const BOB: &str = "30000000-0000-4000-8000-000000000002";
const MARK: &str = "managed by azml-operator for team-a/ws";

fn scopes() -> Scopes {
    let rg = format!("/subscriptions/{SUB}/resourceGroups/rg-a");
    Scopes {
        workspace: ResourceId::parse(&format!("{rg}/providers/Microsoft.MachineLearningServices/workspaces/ws"))
            .unwrap(),
        resource_group: ResourceId::parse(&rg).unwrap(),
        subscription: ResourceId::parse(&format!("/subscriptions/{SUB}")).unwrap(),
    }
}

fn guid(role: BuiltinRole) -> Uuid {
    Uuid::parse_str(role.definition_guid()).unwrap()
}

fn u(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap()
}

fn want(principal: &str, role: BuiltinRole, kind: AccessScope) -> DesiredAssignment {
    let s = scopes();
    let scope = s.get(kind).clone();
    DesiredAssignment {
        principal: u(principal),
        principal_type: None,
        role: guid(role),
        scope_kind: kind,
        name: assignment_name(&scope, guid(role), u(principal)),
        scope,
    }
}

/// An assignment in Azure: ours (deterministic name and marker) or someone else's.
fn ours(d: &DesiredAssignment) -> ExistingAssignment {
    ExistingAssignment {
        name: d.name,
        scope_kind: d.scope_kind,
        role: d.role,
        principal: d.principal,
        description: Some(MARK.into()),
    }
}

fn foreign(d: &DesiredAssignment, name: Uuid, description: Option<&str>) -> ExistingAssignment {
    ExistingAssignment { name, description: description.map(Into::into), ..ours(d) }
}

fn status_of(d: &DesiredAssignment, state: AccessState) -> AccessStatus {
    entry(d.principal, d.role, d.scope_kind, &scopes(), d.name, state, None)
}

fn plan(
    desired: &[DesiredAssignment],
    previous: &[AccessStatus],
    existing: Option<&[ExistingAssignment]>,
) -> AccessPlan {
    let s = scopes();
    plan_access(AccessInput { desired, scopes: &s, marker: MARK, previous, existing })
}

fn creates(p: &AccessPlan) -> Vec<Uuid> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            AccessAction::Create { assignment, .. } => Some(assignment.name),
            AccessAction::Delete { .. } => None,
        })
        .collect()
}

fn deletes(p: &AccessPlan) -> Vec<Uuid> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            AccessAction::Delete { target, .. } => Some(target.name),
            AccessAction::Create { .. } => None,
        })
        .collect()
}

fn states(p: &AccessPlan) -> Vec<AccessState> {
    p.entries.iter().map(|e| e.state).collect()
}

// ------------------------------------------------------------------ names and spec resolution

#[test]
fn the_name_namespace_is_the_documented_uuid5() {
    assert_eq!(NAME_NAMESPACE, Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://azml.dev/role-assignments"));
}

#[test]
fn assignment_names_are_deterministic_and_depend_on_scope_role_and_principal() {
    let s = scopes();
    let base = assignment_name(&s.workspace, guid(BuiltinRole::Reader), u(ALICE));
    assert_eq!(base, assignment_name(&s.workspace, guid(BuiltinRole::Reader), u(ALICE)));
    assert_eq!(base.get_version_num(), 5);
    let upper =
        ResourceId::parse(&s.workspace.as_str().to_uppercase().replace("SUBSCRIPTIONS", "subscriptions")).unwrap();
    assert_eq!(base, assignment_name(&upper, guid(BuiltinRole::Reader), u(ALICE)), "scope case does not matter");
    assert_ne!(base, assignment_name(&s.resource_group, guid(BuiltinRole::Reader), u(ALICE)));
    assert_ne!(base, assignment_name(&s.workspace, guid(BuiltinRole::Contributor), u(ALICE)));
    assert_ne!(base, assignment_name(&s.workspace, guid(BuiltinRole::Reader), u(BOB)));
}

#[test]
fn marker_names_the_resource() {
    assert_eq!(marker("team-a", "ws"), MARK);
}

fn access_entry(json: serde_json::Value) -> AccessEntry {
    serde_json::from_value(json).unwrap()
}

#[test]
fn spec_entries_resolve_to_scopes_and_role_guids() {
    let s = scopes();
    let custom = "AAAAAAAA-0000-4000-8000-00000000000A";
    let entries = [
        access_entry(serde_json::json!({"principalId": ALICE, "role": "Reader"})),
        access_entry(serde_json::json!({"principalId": BOB, "roleDefinitionId": custom, "scope": "ResourceGroup",
            "principalType": "ServicePrincipal"})),
        access_entry(serde_json::json!({"principalId": ALICE, "role": "Owner", "scope": "Subscription"})),
    ];
    let d = desired_assignments(&s, &entries).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!((d[0].scope_kind, &d[0].scope), (AccessScope::Workspace, &s.workspace));
    assert_eq!(d[0].role, guid(BuiltinRole::Reader));
    assert_eq!(d[1].role, u(&custom.to_ascii_lowercase()));
    assert_eq!(d[1].scope, s.resource_group);
    assert_eq!(d[1].principal_type, Some(PrincipalType::ServicePrincipal));
    assert_eq!(d[2].scope, s.subscription);
    assert_eq!(d[2].name, assignment_name(&s.subscription, guid(BuiltinRole::Owner), u(ALICE)));
}

#[test]
fn entries_naming_the_same_assignment_twice_are_merged() {
    // The CRD's uniqueness rule compares role names and ids as written, so these two pass admission; they are the
    // same assignment and are merged (first wins).
    let entries = [
        access_entry(serde_json::json!({"principalId": ALICE, "role": "Reader"})),
        access_entry(
            serde_json::json!({"principalId": ALICE.to_uppercase(), "roleDefinitionId": BuiltinRole::Reader.definition_guid()}),
        ),
    ];
    let d = desired_assignments(&scopes(), &entries).unwrap();
    assert_eq!(d.len(), 1);
}

#[test]
fn unresolvable_entries_are_spec_errors() {
    let bad_principal = [access_entry(serde_json::json!({"principalId": "alice", "role": "Reader"}))];
    assert!(matches!(desired_assignments(&scopes(), &bad_principal), Err(AccessSpecError::Principal { index: 0, .. })));
    let no_role = [
        access_entry(serde_json::json!({"principalId": ALICE, "role": "Reader"})),
        access_entry(serde_json::json!({"principalId": ALICE})),
    ];
    assert_eq!(desired_assignments(&scopes(), &no_role), Err(AccessSpecError::Role { index: 1 }));
    let both = [access_entry(
        serde_json::json!({"principalId": ALICE, "role": "Reader", "roleDefinitionId": BuiltinRole::Owner.definition_guid()}),
    )];
    assert_eq!(desired_assignments(&scopes(), &both), Err(AccessSpecError::Role { index: 0 }));
}

#[test]
fn the_crd_rejects_duplicate_entries_with_cel() {
    let crd = serde_json::to_string(&<crate::api::v1alpha1::MlWorkspace as kube::CustomResourceExt>::crd()).unwrap();
    assert!(crd.contains("access entries must be unique per principalId, role and scope"), "uniqueness rule missing");
}

#[test]
fn listed_assignments_are_read_only_at_the_three_scopes() {
    let s = scopes();
    let ra = |scope: &str| RoleAssignment {
        id: Some(format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{}", u(BOB))),
        name: Some(u(BOB).to_string()),
        properties: authorization::RoleAssignmentProperties {
            role_definition_id: format!(
                "/providers/Microsoft.Authorization/roleDefinitions/{}",
                guid(BuiltinRole::Reader)
            ),
            principal_id: ALICE.into(),
            scope: Some(scope.into()),
            description: Some(MARK.into()),
            ..Default::default()
        },
    };
    let e = ExistingAssignment::from_arm(
        &ra(&s.resource_group.as_str().to_uppercase().replace("SUBSCRIPTIONS", "subscriptions")),
        &s,
    )
    .unwrap();
    assert_eq!(e.scope_kind, AccessScope::ResourceGroup);
    assert_eq!((e.role, e.principal, e.name), (guid(BuiltinRole::Reader), u(ALICE), u(BOB)));
    assert_eq!(e.description.as_deref(), Some(MARK));
    // Root and management-group assignments (returned by atScope()) and other resources are ignored.
    assert!(ExistingAssignment::from_arm(&ra("/providers/Microsoft.Management/managementGroups/mg"), &s).is_none());
    assert!(ExistingAssignment::from_arm(&ra(&format!("{}/x", s.resource_group)), &s).is_none());
}

// ------------------------------------------------------------------ plan: adding

#[test]
fn declared_assignments_missing_in_azure_are_created_pending() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let b = want(BOB, BuiltinRole::Contributor, AccessScope::ResourceGroup);
    let p = plan(&[a.clone(), b.clone()], &[], Some(&[]));
    assert_eq!(creates(&p), [a.name, b.name]);
    assert!(deletes(&p).is_empty());
    assert_eq!(states(&p), [AccessState::Pending, AccessState::Pending]);
    assert_eq!(p.declared, 2);
    assert_eq!(p.entries[1].scope, scopes().resource_group.to_string());
    assert_eq!(p.entries[1].assignment_name, b.name.to_string());
}

#[test]
fn an_assignment_of_ours_found_in_azure_is_adopted_without_a_write() {
    // A crash between create and status update: Azure has it under the deterministic name with our marker.
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let p = plan(std::slice::from_ref(&a), &[], Some(&[ours(&a)]));
    assert!(p.actions.is_empty());
    assert_eq!(states(&p), [AccessState::Granted]);
}

#[test]
fn an_equivalent_assignment_made_by_someone_else_is_unmanaged() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let other = u("99999999-0000-4000-8000-000000000000");
    for existing in [
        foreign(&a, other, None),
        foreign(&a, other, Some(MARK)), // our marker under a name we would not choose: not ours either
        foreign(&a, a.name, Some("managed by azml-operator for team-b/other")), // another resource's
        foreign(&a, a.name, None),
    ] {
        let p = plan(std::slice::from_ref(&a), &[], Some(std::slice::from_ref(&existing)));
        assert!(p.actions.is_empty(), "{existing:?}");
        assert_eq!(states(&p), [AccessState::Unmanaged]);
        assert_eq!(p.entries[0].assignment_name, existing.name.to_string());
        assert!(p.entries[0].message.as_deref().is_some_and(|m| m.contains("never deleted")));
    }
}

#[test]
fn ours_is_preferred_over_a_foreign_duplicate() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let existing = [foreign(&a, u("99999999-0000-4000-8000-000000000000"), None), ours(&a)];
    let p = plan(std::slice::from_ref(&a), &[], Some(&existing));
    assert_eq!(states(&p), [AccessState::Granted]);
}

#[test]
fn an_assignment_deleted_in_azure_is_created_again() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let p = plan(std::slice::from_ref(&a), &[status_of(&a, AccessState::Granted)], Some(&[]));
    assert_eq!(creates(&p), [a.name]);
}

#[test]
fn an_unmanaged_assignment_that_disappeared_is_created_by_the_operator() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let p = plan(std::slice::from_ref(&a), &[status_of(&a, AccessState::Unmanaged)], Some(&[]));
    assert_eq!(creates(&p), [a.name]);
}

// ------------------------------------------------------------------ plan: removing

#[test]
fn an_undeclared_assignment_of_ours_is_deleted() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let p = plan(&[], &[status_of(&a, AccessState::Granted)], Some(&[ours(&a)]));
    assert_eq!(deletes(&p), [a.name]);
    assert_eq!(p.declared, 0);
    assert_eq!(states(&p), [AccessState::Granted], "kept until the deletion succeeded");
    let AccessAction::Delete { target, entry } = &p.actions[0] else { panic!() };
    assert_eq!((&target.scope, *entry), (&scopes().workspace, 0));
}

#[test]
fn an_orphan_of_ours_missing_from_status_is_deleted() {
    // Created, then the operator crashed before recording it, then the entry was removed from the spec.
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Subscription);
    let p = plan(&[], &[], Some(&[ours(&a)]));
    assert_eq!(deletes(&p), [a.name]);
}

#[test]
fn assignments_the_operator_did_not_create_are_never_deleted() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let other = u("99999999-0000-4000-8000-000000000000");
    let cases: Vec<(Vec<AccessStatus>, Vec<ExistingAssignment>)> = vec![
        // Unmanaged in status, removed from the spec.
        (vec![status_of(&a, AccessState::Unmanaged)], vec![foreign(&a, other, None)]),
        // Granted in status but Azure's copy lost our marker (someone took it over).
        (vec![status_of(&a, AccessState::Granted)], vec![foreign(&a, a.name, Some("mine now"))]),
        // Our marker on a name we would not choose.
        (vec![], vec![foreign(&a, other, Some(MARK))]),
        // Another resource's assignment.
        (vec![], vec![foreign(&a, a.name, Some("managed by azml-operator for team-a/other"))]),
        // Pending or failed in status: never created by us as far as we know.
        (
            vec![status_of(&a, AccessState::Pending), status_of(&a, AccessState::Failed)],
            vec![foreign(&a, a.name, None)],
        ),
    ];
    for (previous, existing) in cases {
        let p = plan(&[], &previous, Some(&existing));
        assert!(p.actions.is_empty(), "{previous:?} {existing:?}: {:?}", p.actions);
        assert!(p.entries.is_empty(), "forgotten once not declared and not ours");
        // Not listed: only status Granted counts, the rest is never aimed at.
        let p = plan(&[], &previous, None);
        let granted = previous.iter().any(|s| s.state == AccessState::Granted);
        assert_eq!(deletes(&p).len(), usize::from(granted));
    }
}

#[test]
fn a_gone_assignment_is_forgotten_without_a_call() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let p = plan(&[], &[status_of(&a, AccessState::Granted)], Some(&[]));
    assert!(p.actions.is_empty() && p.entries.is_empty());
}

#[test]
fn status_entries_outside_the_workspace_scopes_are_never_aimed_at() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let mut edited = status_of(&a, AccessState::Granted);
    edited.scope = "/subscriptions/00000000-0000-4000-8000-000000000002".into();
    let p = plan(&[], &[edited.clone()], None);
    assert!(p.actions.is_empty() && p.entries.is_empty());
    edited.scope = scopes().workspace.to_string();
    edited.assignment_name = "not-a-guid".into();
    assert!(plan(&[], &[edited], None).actions.is_empty());
}

// ------------------------------------------------------------------ plan: changing

fn assert_deletes_before_creates(p: &AccessPlan) {
    let first_create = p.actions.iter().position(|a| matches!(a, AccessAction::Create { .. }));
    let last_delete = p.actions.iter().rposition(|a| matches!(a, AccessAction::Delete { .. }));
    if let (Some(c), Some(d)) = (first_create, last_delete) {
        assert!(d < c, "a creation precedes a deletion: {:?}", p.actions);
    }
}

#[test]
fn a_changed_principal_role_or_scope_deletes_the_old_before_creating_the_new() {
    let old = want(ALICE, BuiltinRole::AzureMLDataScientist, AccessScope::Workspace);
    for new in [
        want(BOB, BuiltinRole::AzureMLDataScientist, AccessScope::Workspace),
        want(ALICE, BuiltinRole::AzureMLComputeOperator, AccessScope::Workspace),
        want(ALICE, BuiltinRole::AzureMLDataScientist, AccessScope::ResourceGroup),
    ] {
        for existing in [Some(vec![ours(&old)]), None] {
            let p = plan(std::slice::from_ref(&new), &[status_of(&old, AccessState::Granted)], existing.as_deref());
            assert_eq!(deletes(&p), [old.name]);
            assert_eq!(creates(&p), [new.name]);
            assert_deletes_before_creates(&p);
            assert_eq!(p.declared, 1);
            assert_eq!(p.entries[0].assignment_name, new.name.to_string(), "declared entries come first");
            assert_eq!(p.entries[1].assignment_name, old.name.to_string());
        }
    }
}

#[test]
fn without_a_listing_status_decides() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let b = want(BOB, BuiltinRole::Reader, AccessScope::Workspace);
    let c = want(BOB, BuiltinRole::Owner, AccessScope::Subscription);
    let previous = [
        status_of(&a, AccessState::Granted),
        status_of(&b, AccessState::Unmanaged),
        status_of(&c, AccessState::Failed),
    ];
    let p = plan(&[a.clone(), b.clone(), c.clone()], &previous, None);
    assert_eq!(states(&p), [AccessState::Granted, AccessState::Unmanaged, AccessState::Pending]);
    assert_eq!(creates(&p), [c.name]);
}

// ------------------------------------------------------------------ listing

fn last(fingerprint: u64, secs: u64) -> Option<LastListing> {
    Some(LastListing { fingerprint, age: Duration::from_secs(secs) })
}

#[test]
fn listing_is_skipped_only_in_steady_state() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let b = want(BOB, BuiltinRole::Reader, AccessScope::Workspace);
    let desired = [a.clone(), b.clone()];
    let f = fingerprint(&desired, MARK);
    let settled = [status_of(&a, AccessState::Granted), status_of(&b, AccessState::Unmanaged)];
    let hour = Duration::from_secs(3600);
    assert!(!needs_listing(&desired, &settled, f, last(f, 10), hour), "steady state");
    assert!(needs_listing(&desired, &settled, f, last(f, 3600), hour), "resync elapsed");
    assert!(needs_listing(&desired, &settled, f, None, hour), "never listed (e.g. after a restart)");
    assert!(needs_listing(&desired, &settled, f ^ 1, last(f, 10), hour), "declared set changed");
    let pending = [status_of(&a, AccessState::Granted), status_of(&b, AccessState::Pending)];
    assert!(needs_listing(&desired, &pending, f, last(f, 10), hour), "pending entry");
    let failed = [status_of(&a, AccessState::Granted), status_of(&b, AccessState::Failed)];
    assert!(needs_listing(&desired, &failed, f, last(f, 10), hour), "failed entry");
    let leftover = [
        settled[0].clone(),
        settled[1].clone(),
        status_of(&want(BOB, BuiltinRole::Owner, AccessScope::Workspace), AccessState::Granted),
    ];
    assert!(needs_listing(&desired, &leftover, f, last(f, 10), hour), "an owned leftover");
    // Nothing declared and nothing owned: never listed.
    assert!(!needs_listing(&[], &[], fingerprint(&[], MARK), None, hour));
    assert!(!needs_listing(&[], &[status_of(&a, AccessState::Unmanaged)], 0, None, hour));
    assert!(needs_listing(&[], &[status_of(&a, AccessState::Granted)], 0, None, hour));
}

#[test]
fn the_fingerprint_follows_the_declared_set() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let b = want(BOB, BuiltinRole::Reader, AccessScope::Workspace);
    let f = fingerprint(&[a.clone(), b.clone()], MARK);
    assert_eq!(f, fingerprint(&[a.clone(), b.clone()], MARK));
    assert_ne!(f, fingerprint(std::slice::from_ref(&a), MARK));
    assert_ne!(f, fingerprint(&[a.clone(), b.clone()], "managed by azml-operator for x/y"));
    let typed = DesiredAssignment { principal_type: Some(PrincipalType::User), ..a.clone() };
    assert_ne!(f, fingerprint(&[typed, b], MARK));
}

// ------------------------------------------------------------------ summary

#[test]
fn summary_of_granted_unmanaged_pending_and_failed() {
    let a = want(ALICE, BuiltinRole::Reader, AccessScope::Workspace);
    let b = want(BOB, BuiltinRole::Contributor, AccessScope::ResourceGroup);
    let s = summarize(&[], 0);
    assert!(s.granted && s.reason == reasons::ACCESS_GRANTED && s.message == "no role assignments declared");
    let s = summarize(&[status_of(&a, AccessState::Granted), status_of(&b, AccessState::Unmanaged)], 2);
    assert!(s.granted, "unmanaged counts as granted");
    assert!(s.message.contains("2 role assignment(s)") && s.message.contains("1 assigned outside"), "{}", s.message);

    let mut pending = status_of(&b, AccessState::Pending);
    pending.message = Some("principal not found".into());
    let s = summarize(&[status_of(&a, AccessState::Granted), pending.clone()], 2);
    assert!(!s.granted && s.pending && s.reason == reasons::ACCESS_PENDING);
    assert!(s.message.contains("Contributor for") && s.message.contains("principal not found"), "{}", s.message);

    let failed = status_of(&b, AccessState::Failed);
    let s = summarize(&[status_of(&a, AccessState::Granted), failed.clone()], 2);
    assert!(!s.granted && !s.pending && s.reason == reasons::ACCESS_FAILED);
    let s = summarize(&[pending, failed], 2);
    assert!(s.pending, "pending wins: the controller retries soon");

    // Leftovers: retrying is pending, a permanent refusal is failed.
    let mut left = status_of(&a, AccessState::Granted);
    left.message = Some("removal failed, retrying: HTTP 500".into());
    let s = summarize(std::slice::from_ref(&left), 0);
    assert!(!s.granted && s.pending && s.message.contains("not declared"), "{}", s.message);
    left.message = Some(format!("{CANNOT_REMOVE}: AuthorizationFailed"));
    let s = summarize(&[left], 0);
    assert!(!s.granted && !s.pending && s.reason == reasons::ACCESS_FAILED);
}

// ------------------------------------------------------------------ properties

fn arb_desired() -> impl Strategy<Value = DesiredAssignment> {
    let principals = prop::sample::select(vec![ALICE, BOB, "30000000-0000-4000-8000-000000000003"]);
    let roles = prop::sample::select(BuiltinRole::ALL.to_vec());
    let kinds =
        prop::sample::select(vec![AccessScope::Workspace, AccessScope::ResourceGroup, AccessScope::Subscription]);
    (principals, roles, kinds).prop_map(|(p, r, k)| want(p, r, k))
}

#[derive(Clone, Debug)]
enum Found {
    Ours,
    ForeignName,
    ForeignMarker,
}

fn arb_existing() -> impl Strategy<Value = (DesiredAssignment, Found)> {
    (arb_desired(), prop::sample::select(vec![Found::Ours, Found::ForeignName, Found::ForeignMarker]))
}

fn arb_state() -> impl Strategy<Value = AccessState> {
    prop::sample::select(vec![AccessState::Granted, AccessState::Pending, AccessState::Unmanaged, AccessState::Failed])
}

proptest! {
    #[test]
    fn plans_never_delete_foreign_or_declared_assignments_and_delete_before_creating(
        desired in prop::collection::vec(arb_desired(), 0..5),
        previous in prop::collection::vec((arb_desired(), arb_state()), 0..5),
        existing in prop::collection::vec(arb_existing(), 0..6),
        listed in any::<bool>(),
    ) {
        let mut unique: Vec<DesiredAssignment> = Vec::new();
        for d in desired {
            if unique.iter().all(|x| x.name != d.name) {
                unique.push(d);
            }
        }
        let previous: Vec<AccessStatus> = previous.iter().map(|(d, s)| status_of(d, *s)).collect();
        let other = u("99999999-0000-4000-8000-000000000000");
        let existing: Vec<ExistingAssignment> = existing
            .iter()
            .map(|(d, f)| match f {
                Found::Ours => ours(d),
                Found::ForeignName => foreign(d, other, Some(MARK)),
                Found::ForeignMarker => foreign(d, d.name, Some("someone")),
            })
            .collect();
        let p = plan(&unique, &previous, listed.then_some(existing.as_slice()));
        assert_deletes_before_creates(&p);
        prop_assert_eq!(p.declared, unique.len());
        for (d, e) in unique.iter().zip(&p.entries) {
            prop_assert_eq!(&e.principal_id, &d.principal.to_string());
            prop_assert_eq!(e.scope_kind, d.scope_kind);
        }
        for a in &p.actions {
            match a {
                AccessAction::Delete { target, entry } => {
                    prop_assert!(unique.iter().all(|d| d.name != target.name), "deletes a declared assignment");
                    prop_assert!(*entry >= p.declared);
                    if listed {
                        prop_assert!(existing.iter().any(|e| e.name == target.name && e.description.as_deref() == Some(MARK)
                            && e.name == assignment_name(scopes().get(e.scope_kind), e.role, e.principal)),
                            "deletes what it did not create");
                    } else {
                        prop_assert!(previous.iter().any(|s| s.state == AccessState::Granted && s.assignment_name == target.name.to_string()));
                    }
                }
                AccessAction::Create { assignment, entry } => {
                    prop_assert!(unique.contains(assignment));
                    prop_assert_eq!(p.entries[*entry].state, AccessState::Pending);
                    if listed {
                        prop_assert!(existing.iter().all(|e| !e.matches(assignment)), "creates what exists");
                    }
                }
            }
        }
        // Each deleted name appears once.
        let mut names = deletes(&p);
        names.sort();
        names.dedup();
        prop_assert_eq!(names.len(), deletes(&p).len());
    }
}
