//! The compute plan: quota before create, ownership, re-creation, the smallest update, instance actions.

use serde_json::json;

use super::*;
use crate::azure::computes::UsageName;

const OWNER: &str = "team-a/cpu/uid-1";

fn cluster(min: i64, max: i64) -> DesiredCompute {
    DesiredCompute {
        location: "westeurope".into(),
        owner: OWNER.into(),
        kind: DesiredKind::Cluster(DesiredCluster {
            vm_size: "Standard_DS3_v2".into(),
            vm_priority: VmPriority::Dedicated,
            min_nodes: min,
            max_nodes: max,
            idle_before_scale_down: Some(120),
            remote_login: RemoteLogin::Disabled,
            subnet: None,
            identity: None,
        }),
    }
}

fn instance() -> DesiredCompute {
    DesiredCompute {
        location: "westeurope".into(),
        owner: OWNER.into(),
        kind: DesiredKind::Instance(DesiredInstance {
            vm_size: "Standard_DS11_v2".into(),
            assigned_to: "a11ce000-0000-4000-8000-000000000001".into(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            idle_shutdown_after: Some(3600),
            schedules: vec![ComputeSchedule {
                action: crate::api::v1alpha1::ScheduleAction::Stop,
                cron: "0 19 * * 1-5".into(),
                time_zone: "UTC".into(),
                enabled: true,
            }],
            setup_script: None,
            subnet: None,
        }),
    }
}

/// What Azure holds after creating `desired` and provisioning it (`state` for instances).
fn provisioned(desired: &DesiredCompute, state: &str) -> Compute {
    let mut c = compute_body(desired);
    c.properties.provisioning_state = Some("Succeeded".into());
    if let Some(p) = c.properties.properties.as_mut() {
        p["state"] = json!(state);
        p["allocationState"] = json!("Steady");
    }
    c
}

fn usage(name: &str, current: i64, limit: i64) -> Usage {
    Usage {
        id: Some(format!("/subscriptions/s/usages/{}", name.replace(' ', "_"))),
        type_: Some("Microsoft.MachineLearningServices/vmFamily/usages".into()),
        current_value: current,
        limit,
        name: UsageName { value: name.into(), localized_value: None },
    }
}

fn quota(family_current: i64, family_limit: i64) -> QuotaView {
    QuotaView {
        vm_sizes: vec![
            VirtualMachineSize {
                name: "Standard_DS3_v2".into(),
                family: Some("standardDSv2Family".into()),
                v_cpus: Some(4),
                low_priority_capable: Some(true),
            },
            VirtualMachineSize {
                name: "Standard_DS11_v2".into(),
                family: Some("standardDSv2Family".into()),
                v_cpus: Some(2),
                low_priority_capable: Some(true),
            },
        ],
        usages: vec![
            usage("Total Cluster Dedicated Regional vCPUs", 10, 100),
            usage("Standard DSv2 Family Cluster Dedicated vCPUs", family_current, family_limit),
            usage("Standard DSv2 Family Cluster LowPriority vCPUs", 0, -1),
            usage("Total Cluster LowPriority Regional vCPUs", 0, 8),
        ],
    }
}

fn absent(q: QuotaView) -> ObservedCompute {
    ObservedCompute { compute: None, quota: Some(q) }
}

fn present(c: Compute) -> ObservedCompute {
    ObservedCompute { compute: Some(c), quota: None }
}

#[test]
fn durations_convert_both_ways() {
    assert_eq!(parse_duration("1h30m"), Some(5400));
    assert_eq!(parse_duration("120s"), Some(120));
    assert_eq!(parse_duration("2m"), Some(120));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration(""), None);
    assert_eq!(iso_duration(5400), "PT1H30M");
    assert_eq!(iso_duration(120), "PT2M");
    assert_eq!(iso_duration(0), "PT0S");
    assert_eq!(parse_iso_duration("PT120S"), Some(120));
    assert_eq!(parse_iso_duration(&iso_duration(3725)), Some(3725));
}

#[test]
fn an_absent_compute_is_created_when_the_quota_holds_it() {
    let p = plan(&cluster(0, 4), &absent(quota(8, 24)), &ActionRequest::default());
    assert_eq!(p.stall, None);
    let [Action::Create { body }] = p.actions.as_slice() else { panic!("{p:?}") };
    assert_eq!(body.properties.compute_type, "AmlCompute");
    assert_eq!(body.tags.as_ref().and_then(|t| t.get(OWNER_TAG)).map(String::as_str), Some(OWNER));
    let aml = body.aml().expect("cluster properties");
    assert_eq!(aml.remote_login_port_public_access.as_deref(), Some("Disabled"));
    let scale = aml.scale_settings.expect("scale");
    assert_eq!((scale.min_node_count, scale.max_node_count), (Some(0), 4));
    assert_eq!(scale.node_idle_time_before_scale_down.as_deref(), Some("PT2M"));
}

#[test]
fn a_compute_the_quota_cannot_hold_stalls_without_a_create() {
    // 4 nodes x 4 vCPUs = 16 needed, 24 - 14 = 10 free.
    let p = plan(&cluster(0, 4), &absent(quota(14, 24)), &ActionRequest::default());
    assert!(p.actions.is_empty(), "{p:?}");
    let (reason, message) = p.stall.expect("stalled");
    assert_eq!(reason, Reason::QuotaExceeded);
    assert!(message.contains("Standard DSv2 Family Cluster Dedicated vCPUs"), "{message}");
    assert!(message.contains("limit 24, current usage 14, this compute needs 16"), "{message}");
    // Exactly full still fits.
    let p = plan(&cluster(0, 4), &absent(quota(8, 24)), &ActionRequest::default());
    assert!(p.stall.is_none());
    // Low priority: the family has no limit of its own, the regional low-priority total (8) decides.
    let mut low = cluster(0, 4);
    if let DesiredKind::Cluster(c) = &mut low.kind {
        c.vm_priority = VmPriority::LowPriority;
    }
    let p = plan(&low, &absent(quota(0, 24)), &ActionRequest::default());
    let (_, message) = p.stall.expect("stalled");
    assert!(message.contains("Total Cluster LowPriority Regional vCPUs"), "{message}");
    // An instance needs one VM.
    let p = plan(&instance(), &absent(quota(22, 24)), &ActionRequest::default());
    assert!(p.stall.is_none(), "{p:?}");
    let p = plan(&instance(), &absent(quota(23, 24)), &ActionRequest::default());
    assert_eq!(p.stall.map(|s| s.0), Some(Reason::QuotaExceeded));
}

#[test]
fn an_unknown_vm_size_is_refused_before_create() {
    let mut d = cluster(0, 1);
    if let DesiredKind::Cluster(c) = &mut d.kind {
        c.vm_size = "Standard_Imaginary".into();
    }
    let p = plan(&d, &absent(quota(0, 24)), &ActionRequest::default());
    assert!(p.actions.is_empty());
    assert_eq!(p.stall.map(|s| s.0), Some(Reason::InvalidSpec));
}

#[test]
fn steady_state_makes_no_write() {
    let d = cluster(0, 4);
    let p = plan(&d, &present(provisioned(&d, "Running")), &ActionRequest::default());
    assert!(p.converged(), "{p:?}");
    let i = instance();
    let p = plan(&i, &present(provisioned(&i, "Running")), &ActionRequest::default());
    assert!(p.converged(), "{p:?}");
    // The schedules Azure returns carry ids and provisioning status; those are not a difference.
    let mut c = provisioned(&i, "Running");
    if let Some(p) = c.properties.properties.as_mut() {
        p["schedules"]["computeStartStop"][0]["id"] = json!("3f0c");
        p["schedules"]["computeStartStop"][0]["cron"]["expression"] = json!("0  19 * * 1-5");
    }
    assert!(plan(&i, &present(c), &ActionRequest::default()).converged());
}

#[test]
fn scale_changes_and_drift_take_one_patch() {
    let d = cluster(0, 4);
    let azure = provisioned(&cluster(1, 2), "Running");
    let p = plan(&d, &present(azure), &ActionRequest::default());
    let [Action::UpdateScale { body, change }] = p.actions.as_slice() else { panic!("{p:?}") };
    assert_eq!(body.properties.properties.scale_settings.max_node_count, 4);
    assert_eq!(body.properties.properties.scale_settings.min_node_count, Some(0));
    assert_eq!(change, "nodes 1..2 → 0..4");
    // Idle time only (written by Azure as seconds).
    let mut azure = provisioned(&d, "Running");
    if let Some(p) = azure.properties.properties.as_mut() {
        p["scaleSettings"]["nodeIdleTimeBeforeScaleDown"] = json!("PT600S");
    }
    assert!(matches!(
        plan(&d, &present(azure), &ActionRequest::default()).actions.as_slice(),
        [Action::UpdateScale { .. }]
    ));
}

#[test]
fn creation_only_properties_stall_with_recreate_required_and_nothing_is_deleted() {
    let mut d = cluster(0, 4);
    let azure = provisioned(&d, "Running");
    if let DesiredKind::Cluster(c) = &mut d.kind {
        c.vm_priority = VmPriority::LowPriority;
        c.remote_login = RemoteLogin::Enabled;
        c.max_nodes = 6;
    }
    let p = plan(&d, &present(azure), &ActionRequest::default());
    let (reason, message) = p.stall.clone().expect("stalled");
    assert_eq!(reason, Reason::RecreateRequired);
    assert!(message.contains("amlCompute.vmPriority (Azure: Dedicated, spec: LowPriority)"), "{message}");
    assert!(message.contains("amlCompute.remoteLogin"), "{message}");
    // The mutable change still goes through; nothing deletes.
    assert!(matches!(p.actions.as_slice(), [Action::UpdateScale { .. }]), "{p:?}");
    let mut i = instance();
    let azure = provisioned(&i, "Running");
    if let DesiredKind::Instance(x) = &mut i.kind {
        x.assigned_to = "b0b00000-0000-4000-8000-000000000002".into();
    }
    let p = plan(&i, &present(azure), &ActionRequest::default());
    assert!(p.stall.expect("stalled").1.contains("computeInstance.assignedTo"));
}

#[test]
fn instance_idle_time_and_schedules_use_their_own_calls() {
    let i = instance();
    let mut azure = provisioned(&i, "Running");
    if let Some(p) = azure.properties.properties.as_mut() {
        p["idleTimeBeforeShutdown"] = json!("PT30M");
    }
    let p = plan(&i, &present(azure), &ActionRequest::default());
    let [Action::UpdateIdleShutdown { body }] = p.actions.as_slice() else { panic!("{p:?}") };
    assert_eq!(body.idle_time_before_shutdown, "PT1H");
    let mut azure = provisioned(&i, "Running");
    if let Some(p) = azure.properties.properties.as_mut() {
        p["schedules"]["computeStartStop"][0]["cron"]["expression"] = json!("0 18 * * *");
    }
    let p = plan(&i, &present(azure), &ActionRequest::default());
    let [Action::UpdateSchedules { body }] = p.actions.as_slice() else { panic!("{p:?}") };
    let sent = body.instance().and_then(|p| p.schedules).expect("schedules");
    assert_eq!(sent.compute_start_stop[0].cron.as_ref().map(|c| c.expression.as_str()), Some("0 19 * * 1-5"));
}

#[test]
fn the_action_annotation_acts_once_per_value() {
    let i = instance();
    let running = present(provisioned(&i, "Running"));
    let stop = ActionRequest { value: Some("stop:1".into()), honoured: None };
    let p = plan(&i, &running, &stop);
    assert!(
        matches!(p.actions.as_slice(), [Action::Power { action: PowerAction::Stop, request }] if request == "stop:1")
    );
    // Honoured: nothing.
    let done = ActionRequest { value: Some("stop:1".into()), honoured: Some("stop:1".into()) };
    assert!(plan(&i, &present(provisioned(&i, "Stopped")), &done).converged());
    // Already where the action leads: honoured without a call.
    let p = plan(&i, &present(provisioned(&i, "Stopped")), &stop);
    assert!(matches!(p.actions.as_slice(), [Action::Honour { request }] if request == "stop:1"), "{p:?}");
    assert!(p.converged(), "recording the value is not a call: {p:?}");
    // In transition: wait, do not honour yet.
    let start = ActionRequest { value: Some("start:2".into()), honoured: Some("stop:1".into()) };
    let p = plan(&i, &present(provisioned(&i, "Stopping")), &start);
    assert!(p.actions.is_empty() && !p.waiting.is_empty());
    let p = plan(&i, &present(provisioned(&i, "Stopped")), &start);
    assert!(matches!(p.actions.as_slice(), [Action::Power { action: PowerAction::Start, .. }]));
    // Restart of a stopped instance starts it.
    let restart = ActionRequest { value: Some("restart".into()), honoured: None };
    let p = plan(&i, &present(provisioned(&i, "Stopped")), &restart);
    assert!(matches!(p.actions.as_slice(), [Action::Power { action: PowerAction::Start, .. }]));
    // Garbage is reported, not acted on.
    let bad = ActionRequest { value: Some("reboot:now".into()), honoured: None };
    let p = plan(&i, &running, &bad);
    assert_eq!(p.stall.map(|s| s.0), Some(Reason::InvalidAnnotation));
    assert!(p.actions.is_empty());
}

#[test]
fn foreign_busy_and_failed_computes() {
    let d = cluster(0, 4);
    let mut foreign = provisioned(&d, "Running");
    foreign.tags = Some(owner_tags("someone/else/uid"));
    assert_eq!(plan(&d, &present(foreign), &ActionRequest::default()).stall.map(|s| s.0), Some(Reason::AlreadyExists));
    let other_type = provisioned(&instance(), "Running");
    assert_eq!(
        plan(&d, &present(other_type), &ActionRequest::default()).stall.map(|s| s.0),
        Some(Reason::AlreadyExists)
    );
    let mut creating = provisioned(&d, "Running");
    creating.properties.provisioning_state = Some("Creating".into());
    let p = plan(&d, &present(creating), &ActionRequest::default());
    assert!(p.actions.is_empty() && !p.waiting.is_empty());
    let mut failed = provisioned(&instance(), "CreateFailed");
    failed.properties.provisioning_state = Some("Failed".into());
    failed.properties.provisioning_errors = Some(vec![crate::azure::computes::ErrorResponse {
        error: crate::azure::computes::ErrorDetail { code: "QuotaExceeded".into(), message: "no cores".into() },
    }]);
    let (reason, message) = plan(&instance(), &present(failed), &ActionRequest::default()).stall.expect("stalled");
    assert_eq!(reason, Reason::ProvisioningFailed);
    assert!(message.contains("QuotaExceeded: no cores"), "{message}");
}

#[test]
fn usability_says_why_a_compute_cannot_run_work() {
    let i = instance();
    assert!(usability(&provisioned(&i, "Running")).is_ok());
    assert_eq!(usability(&provisioned(&i, "Stopped")).unwrap_err().0, Reason::InstanceStopped);
    let mut c = provisioned(&cluster(2, 4), "Running");
    if let Some(p) = c.properties.properties.as_mut() {
        p["errors"] = json!([{"error": {"code": "QuotaExceeded", "message": "cores"}}]);
    }
    let (reason, message) = usability(&c).unwrap_err();
    assert_eq!(reason, Reason::ComputeErrors);
    assert!(message.contains("QuotaExceeded: cores"));
}

#[test]
fn the_owner_tag_is_read_whatever_the_spelling_of_its_name() {
    let d = cluster(0, 2);
    let mut c = provisioned(&d, "Succeeded");
    let value = c.tags.as_mut().and_then(|t| t.remove(OWNER_TAG)).expect("owner tag");
    c.tags.as_mut().expect("tags").insert(OWNER_TAG.to_ascii_uppercase(), value.clone());
    assert!(owned(&c, &value));
    assert!(!owned(&c, "other/owner/uid"));
}
