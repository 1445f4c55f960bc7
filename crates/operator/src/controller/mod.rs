//! The MlWorkspace controller: observe → plan → apply → report, inside the reconciler shell ([`crate::reconciler`]).
//!
//! - The shell watches MlWorkspaces (all namespaces, or the configured ones), handles the `azml.dev/cleanup`
//!   finalizer, `deletionPolicy: Retain`, `azml.dev/paused` on deletion, status memory and the error policy; this
//!   module is what is particular to workspaces ([`Context`] implements [`Reconciler`]). SubscriptionBinding changes
//!   and the storage-key watcher ([`key_signals`]) wake the workspaces they concern ([`Reconciler::watch`]).
//! - Each reconcile checks the bindings ([`crate::policy`]) before any Azure call, observes Azure ([`observe`]),
//!   plans ([`plan::plan`], pure), applies ([`apply`]) and reports status ([`status`]).
//! - Steady state costs one ARM GET per workspace per resync period and no writes: the watch ignores the
//!   controller's own status patches (only generation, annotations, finalizers and deletion pass), and status is
//!   patched only when something other than a timestamp changed.
//! - Errors are classified in one place ([`crate::reconciler::error::classify`]).
//! - Deletion runs behind the `azml.dev/cleanup` finalizer ([`cleanup`]).
//! - A changed subscription or resource group moves the workspace ([`moves`]), before the pipeline runs.

pub mod access;
pub mod apply;
pub mod binding_choice;
pub mod cleanup;
pub mod credential_watch;
pub mod dependencies;
pub mod key_signals;
pub mod keys;
pub mod moves;
pub mod observe;
pub mod ownership;
pub mod plan;
pub mod soft_delete;
pub mod status;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use self::apply::{Progress, converge};
use self::cleanup::CleanupOutcome;
use self::plan::Desired;
use self::status::{Report, WorkspaceFacts};
use crate::api::conditions::Reason;
use crate::api::v1alpha1::{
    FINALIZER, MlWorkspace, MlWorkspaceStatus, PendingOperation, SubscriptionBinding, WorkspaceDeletionPolicy,
};
use crate::azure::ArmClient;
use crate::metrics::ControllerScope;
use crate::policy::{self, Grantor};
use crate::reconciler::binding::{self, Ask, Place, Verdict};
use crate::reconciler::credentials::CredentialCache;
pub use crate::reconciler::error;
use crate::reconciler::error::Error;
pub use crate::reconciler::{ControllerConfig, Phase};
use crate::reconciler::{Deletion, Kind, Reconciler, Shell};

impl Kind for MlWorkspace {
    type Status = MlWorkspaceStatus;
    const NOUN: &'static str = "workspace";
    const FINALIZER: &'static str = FINALIZER;
    const METRICS_SCOPE: Option<&'static str> = Some("mlworkspaces");
    const ANNOUNCE_FAILED_STALL: bool = false;
    const FEEDS_CHILDREN: bool = true;

    fn status(&self) -> Option<&MlWorkspaceStatus> {
        self.status.as_ref()
    }

    fn retains(&self) -> bool {
        self.spec.deletion_policy == WorkspaceDeletionPolicy::Retain
    }

    fn set_phase(status: &mut MlWorkspaceStatus, phase: &Phase, generation: Option<i64>, now: &Time) {
        status::set_phase(status, phase, generation, now);
    }
}

/// The workspace controller's state: the shell's, plus what the access and key steps remember.
pub struct Context {
    shell: Shell<MlWorkspace>,
    /// What the access step remembers per workspace (last listing, principal-replication windows).
    access: access::AccessMemory,
    /// Storage-key drift signals, intents and the registry the key watcher reads.
    pub keys: Arc<keys::KeyState>,
    /// The SubscriptionBinding chosen per workspace uid, for `status.binding`.
    bindings: binding_choice::BindingMemory,
}

impl Deref for Context {
    type Target = Shell<MlWorkspace>;

    fn deref(&self) -> &Shell<MlWorkspace> {
        &self.shell
    }
}

/// A step's own status changes, applied after the report (see [`Context::report_edit`]).
pub type StatusEdit<'a> = Box<dyn FnOnce(&mut MlWorkspaceStatus, Option<i64>, &Time) + Send + 'a>;

impl Context {
    /// A context for `client` with `config`.
    pub fn new(client: Client, config: ControllerConfig) -> Self {
        Context {
            shell: Shell::new(client, config),
            access: access::AccessMemory::default(),
            keys: Arc::default(),
            bindings: binding_choice::BindingMemory::default(),
        }
    }

    /// What every status the workspace steps write also carries: the chosen binding, and the stalled gauge.
    fn after_compute(&self, ws: &MlWorkspace, s: &mut MlWorkspaceStatus, generation: Option<i64>, now: &Time) {
        self.bindings.report(ws.uid(), s, generation, now);
        if let Some(uid) = ws.uid() {
            self.config.metrics.workspace_stalled(&uid, status::stalled_reason(s));
        }
    }

    /// Writes the status computed from `report` plus `edit` (a step's own fields and conditions), when it differs
    /// from the current one in more than timestamps. Returns whether it wrote.
    async fn write_report(
        &self,
        ws: &MlWorkspace,
        report: &Report,
        edit: impl FnOnce(&mut MlWorkspaceStatus, Option<i64>, &Time),
    ) -> Result<bool, Error> {
        self.write_status(ws, |s, generation, now| {
            *s = status::compute(Some(s), generation, report, now);
            self.after_compute(ws, s, generation, now);
            edit(s, generation, now);
        })
        .await
    }

    /// Ends a reconcile that made progress (or stalled cleanly): status from `report`, then the requeue.
    async fn report(&self, ws: &MlWorkspace, report: Report, requeue: Duration) -> Result<Requeue, Error> {
        self.report_edit(ws, report, requeue, |_, _, _| {}).await
    }

    /// [`Context::report`] plus a step's own status changes.
    async fn report_edit(
        &self,
        ws: &MlWorkspace,
        report: Report,
        requeue: Duration,
        edit: impl FnOnce(&mut MlWorkspaceStatus, Option<i64>, &Time),
    ) -> Result<Requeue, Error> {
        let phase = report.phase.clone();
        self.finish(ws, phase, requeue, |s, _, generation, now| {
            *s = status::compute(Some(s), generation, &report, now);
            self.after_compute(ws, s, generation, now);
            edit(s, generation, now);
        })
        .await
    }

    /// Ends a reconcile that failed: THE error policy decides between Stalled (wait for a change) and retry; status
    /// keeps `facts` and records `pending` as the operation in flight.
    async fn fail_report(
        &self,
        ws: &MlWorkspace,
        err: Error,
        facts: WorkspaceFacts,
        pending: Option<PendingOperation>,
    ) -> Result<Requeue, Error> {
        self.fail_report_edit(ws, err, facts, pending, |_, _, _| {}).await
    }

    /// [`Context::fail_report`] plus a step's own status changes when the failure stalls.
    async fn fail_report_edit(
        &self,
        ws: &MlWorkspace,
        err: Error,
        facts: WorkspaceFacts,
        pending: Option<PendingOperation>,
        edit: impl FnOnce(&mut MlWorkspaceStatus, Option<i64>, &Time),
    ) -> Result<Requeue, Error> {
        self.fail(ws, err, |s, phase, generation, now| {
            let report = Report { phase: phase.clone(), workspace: facts, workspace_ref: None, pending, access: None };
            *s = status::compute(Some(s), generation, &report, now);
            self.after_compute(ws, s, generation, now);
            if matches!(phase, Phase::Stalled { .. }) {
                edit(s, generation, now);
            }
        })
        .await
    }
}

impl Reconciler for Context {
    type Kind = MlWorkspace;

    fn shell(&self) -> &Shell<MlWorkspace> {
        &self.shell
    }

    async fn apply(&self, ws: &MlWorkspace) -> Result<Requeue, Error> {
        reconcile_apply(ws, self).await
    }

    async fn cleanup(&self, ws: &MlWorkspace) -> Result<Deletion, Error> {
        reconcile_cleanup(ws, self).await
    }

    async fn on_finalizer_added(&self, ws: &MlWorkspace) -> Result<(), Error> {
        if ws.status.is_none() {
            // kstatus (Flux, kubectl wait) reads a resource without status as Current: say at once that work is
            // under way, so GitOps tools wait for the first real reconcile.
            let report = Report {
                phase: Phase::Progressing {
                    reason: Reason::Pending,
                    message: "the controller has not compared the workspace with Azure yet".into(),
                },
                workspace: WorkspaceFacts::Unknown,
                workspace_ref: None,
                pending: None,
                access: None,
            };
            self.write_report(ws, &report, |_, _, _| {}).await?;
        }
        Ok(())
    }

    fn forget(&self, uid: &str) {
        self.access.forget(uid);
        self.keys.forget(uid);
        self.bindings.forget(uid);
        self.config.metrics.workspace_stalled(uid, None);
    }

    fn retain(&self, live: &std::collections::HashSet<String>) {
        self.access.retain(live);
        self.keys.retain(live);
    }

    fn watch(
        &self,
        controller: Controller<MlWorkspace>,
        _namespace: Option<&str>,
        scope: Option<ControllerScope>,
    ) -> Controller<MlWorkspace> {
        let (store, stalled) = (controller.store(), controller.store());
        let (mapped, signalled, woken) = (scope.clone(), scope.clone(), scope);
        let bindings: Api<SubscriptionBinding> = Api::all(self.client.clone());
        let secrets = credential_watch::secret_changes(&self.client, &self.config.operator_namespace);
        controller
            .watches(bindings, watcher::Config::default(), move |binding: SubscriptionBinding| {
                // A binding change re-evaluates the workspaces of its subscription.
                store
                    .state()
                    .into_iter()
                    .filter(|ws| ws.spec.subscription_id.eq_ignore_ascii_case(&binding.spec.subscription_id))
                    .map(|ws| ObjectRef::from_obj(&*ws))
                    .inspect(|r| mapped.iter().for_each(|m| m.requested(r)))
                    .collect::<Vec<_>>()
            })
            // A changed Secret in the operator's namespace re-checks the workspaces stalled on their credential.
            .watches_stream(secrets, move |_| {
                let refs = credential_watch::to_recheck(&stalled);
                refs.iter().for_each(|r| woken.iter().for_each(|w| w.requested(r)));
                refs
            })
            .reconcile_on(self.keys.triggers().inspect(move |r| signalled.iter().for_each(|s| s.requested(r))))
    }
}

/// The ARM client a workspace may use, or why it may not use any.
pub enum WorkspaceClient {
    /// A binding allows the workspace; its client.
    Permitted(ArmClient),
    /// No binding allows it: the message names the missing permission.
    Denied(String),
}

/// The typed policy question of `ws`: its place, its access entries, the resources its spec names by id.
pub(crate) fn ask<'a>(ws: &'a MlWorkspace, namespace: &'a str, place: Place<'a>) -> Ask<'a> {
    Ask { namespace, place, workspace: &ws.spec, access: &ws.spec.access, grantor: Grantor::Workspace, extra: &[] }
}

/// Finds the binding that allows `ws` and returns its ARM client. No Azure call is made.
pub async fn resolve_client(
    client: &Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ws: &MlWorkspace,
) -> Result<WorkspaceClient, Error> {
    resolve_client_at(client, credentials, config, ws, Place::of(&ws.spec)).await
}

/// [`resolve_client`] for `ws` at `place` (where it is in Azure, when that is not where its spec says).
pub async fn resolve_client_at(
    client: &Client,
    credentials: &CredentialCache,
    config: &ControllerConfig,
    ws: &MlWorkspace,
    place: Place<'_>,
) -> Result<WorkspaceClient, Error> {
    let namespace = ws.namespace().unwrap_or_default();
    Ok(match binding::authorize(client, credentials, config, &ask(ws, &namespace, place), |_| Ok(())).await? {
        Verdict::Permitted { arm, .. } => WorkspaceClient::Permitted(arm),
        Verdict::Denied(message) => WorkspaceClient::Denied(message),
    })
}

/// The actions the controller would take for `ws` right now, without taking them: the same policy check, observe
/// and plan as a reconcile (read-only calls only). Used by `azml-operator plan`.
pub async fn dry_run(client: &Client, config: &ControllerConfig, ws: &MlWorkspace) -> Result<Vec<plan::Action>, Error> {
    let stall = |reason, message| Ok(vec![plan::Action::Stall { reason, message }]);
    let desired = match Desired::from_resource(ws) {
        Ok(d) => d,
        Err(e) => return stall(Reason::InvalidSpec, e.to_string()),
    };
    let arm = match resolve_client(client, &CredentialCache::default(), config, ws).await? {
        WorkspaceClient::Permitted(arm) => arm,
        WorkspaceClient::Denied(message) => return stall(Reason::NotPermitted, message),
    };
    if let Some((reason, message)) = moves::dry_run(&ws.spec, ws.status.as_ref()) {
        return stall(reason, message);
    }
    let mut observed = observe::observe(&arm, &desired, ws.status.as_ref()).await?;
    ownership::check_foreign_owner(client, &desired, &mut observed).await?;
    Ok(plan::plan(&desired, &observed))
}

fn stalled(reason: Reason, message: String) -> Report {
    Report {
        phase: Phase::Stalled { reason, message },
        workspace: WorkspaceFacts::Unknown,
        workspace_ref: None,
        pending: None,
        access: None,
    }
}

/// One reconcile of a live workspace: the move step, the key resync in flight, the dependency wait, then observe,
/// plan, apply, the access step and the key step.
async fn reconcile_apply(ws: &MlWorkspace, ctx: &Context) -> Result<Requeue, Error> {
    let stall_requeue = ctx.config.stalled_requeue;
    let mut status = ctx.current_status(ws);
    // A move's operations run in the subscription the workspace comes from: the move step checks them.
    let moving = moves::involved(&ws.spec, status.as_ref());
    if !moving && let Err(foreign) = policy::check_pending_operation(status.as_ref(), &ws.spec.subscription_id) {
        // Reported, and forgotten (pending: None): the next reconcile reads Azure afresh.
        return ctx
            .fail_report(ws, Error::BadPendingOperation(foreign.to_string()), WorkspaceFacts::Unknown, None)
            .await;
    }
    let desired = match Desired::from_resource(ws) {
        Ok(d) => d,
        Err(e) => return ctx.report(ws, stalled(Reason::InvalidSpec, e.to_string()), stall_requeue).await,
    };
    let arm = match binding_choice::resolve(ctx, ws).await {
        Ok(WorkspaceClient::Permitted(arm)) => arm,
        Ok(WorkspaceClient::Denied(message)) => {
            info!(%message, "not permitted");
            let mut report = stalled(Reason::NotPermitted, message);
            report.pending = status.as_ref().and_then(|s| s.pending_operation.clone());
            return ctx.report(ws, report, stall_requeue).await;
        }
        Err(e) => {
            return ctx.fail_report(ws, e, WorkspaceFacts::Unknown, status.and_then(|s| s.pending_operation)).await;
        }
    };
    if moving {
        match moves::reconcile_move(ctx, ws, &desired, &arm, status.as_ref()).await {
            moves::MoveOutcome::Done(result) => return result,
            moves::MoveOutcome::Continue => status = ctx.current_status(ws),
        }
    }
    if keys::owns_pending(status.as_ref()) {
        // A key resync in flight: poll it; the workspace pipeline runs again once it is over.
        let result = keys::resume(ctx, ws, &desired, &arm, status.as_ref()).await;
        let base = Report {
            phase: Phase::Ready,
            workspace: WorkspaceFacts::Unknown,
            workspace_ref: Some(desired.workspace.clone()),
            pending: None,
            access: None,
        };
        return finish_keys(ctx, ws, status, result, base, None, None).await;
    }
    if let Some((dependency, message)) = dependencies::waiting_for(ws, &desired, status.as_ref()) {
        // Stalled for a missing dependency: one GET of it, and the create request only once it exists.
        match arm.dependency_exists(&dependency).await {
            Ok(false) => {
                debug!(%dependency, "the missing dependency still does not exist");
                return ctx.report(ws, stalled(Reason::DependencyMissing, message), stall_requeue).await;
            }
            Ok(true) => info!(%dependency, "the missing dependency exists now"),
            Err(e) => {
                let err = Error::arm("read dependent resource")(e);
                return ctx.fail_report(ws, err, WorkspaceFacts::Unknown, None).await;
            }
        }
    }
    let mut observed = match observe::observe(&arm, &desired, status.as_ref()).await {
        Ok(o) => o,
        Err(e) => {
            return ctx.fail_report(ws, e, WorkspaceFacts::Unknown, status.and_then(|s| s.pending_operation)).await;
        }
    };
    if let Err(e) = ownership::check_foreign_owner(&ctx.client, &desired, &mut observed).await {
        return ctx.fail_report(ws, e, WorkspaceFacts::Unknown, None).await;
    }
    let mut progress = Progress::new(observed);
    let result = converge(ctx, ws, &desired, &arm, &mut progress).instrument(info_span!("apply")).await;
    let pending = progress.observed.pending.as_ref().map(|p| observe::pending_to_status(p, ws.metadata.generation));
    match result {
        Ok(applied) => {
            let (mut phase, mut requeue) = (applied.phase, Some(applied.requeue));
            let access = match access::after_converge(ctx, ws, &desired, &arm, status.as_ref(), &phase).await {
                Ok(Some((report, verdict))) => {
                    (phase, requeue) = apply::merge(phase, requeue, verdict, ctx.config.stalled_requeue);
                    Some(report)
                }
                Ok(None) => None,
                Err(e) => return ctx.fail_report(ws, e, progress.facts, pending).await,
            };
            let workspace_ref = matches!(progress.facts, WorkspaceFacts::Present(_)).then(|| desired.workspace.clone());
            let report = Report { phase, workspace: progress.facts, workspace_ref, pending, access };
            if report.phase == Phase::Ready
                && report.pending.is_none()
                && matches!(report.workspace, WorkspaceFacts::Present(_))
            {
                let observed = match &report.workspace {
                    WorkspaceFacts::Present(w) => Some(w.as_ref()),
                    _ => None,
                };
                let result = keys::after_ready(ctx, ws, &desired, &arm, status.as_ref(), observed).await;
                // Exports see the storage-key facts this reconcile records (their Secret depends on them).
                let mut keyed = status.clone().unwrap_or_default();
                if let Ok(outcome) = &result {
                    outcome.update.apply(&mut keyed, ws.metadata.generation, &Time(jiff::Timestamp::now()));
                }
                let exported = match observed {
                    Some(w) => {
                        let e = crate::exports::export_workspace(&ctx.client, ws, &desired.workspace, &arm, w, &keyed);
                        Some(e.await)
                    }
                    None => None,
                };
                if let Some(e) = &exported {
                    for (type_, reason, note) in &e.events {
                        ctx.publish(ws, *type_, reason, note.clone()).await;
                    }
                }
                return finish_keys(ctx, ws, status, result, report, requeue, exported).await;
            }
            ctx.report(ws, report, requeue.unwrap_or(ctx.config.resync_period)).await
        }
        Err(e) if progress.observed.workspace.is_none() && dependencies::is_dependency_missing(&e) => {
            // Remember which dependency is missing, so the stalled requeues wait for it instead of re-sending the PUT.
            let missing = match dependencies::find_missing(&arm, &desired, &e).await {
                Ok(missing) => missing,
                Err(probe) => {
                    warn!(error = %error::scrub(&probe.to_string()), "cannot tell which dependency is missing");
                    None
                }
            };
            let record = missing.map(|id| id.to_string());
            ctx.fail_report_edit(ws, e, progress.facts, pending, move |s, _, _| s.missing_dependency = record).await
        }
        Err(e) => ctx.fail_report(ws, e, progress.facts, pending).await,
    }
}

/// Ends a reconcile whose last step was the key step ([`keys`]).
///
/// `base` carries what the earlier steps found (workspace facts, access); the key step decides phase and pending.
async fn finish_keys(
    ctx: &Context,
    ws: &MlWorkspace,
    status: Option<MlWorkspaceStatus>,
    result: Result<keys::KeysOutcome, Error>,
    base: Report,
    requeue: Option<Duration>,
    exported: Option<crate::exports::ExportsOutcome>,
) -> Result<Requeue, Error> {
    match result {
        Ok(outcome) => {
            let verdict = apply::Verdict { phase: outcome.phase, requeue: outcome.requeue };
            let (phase, requeue) = apply::merge(base.phase.clone(), requeue, verdict, ctx.config.stalled_requeue);
            let report = Report { phase, pending: outcome.pending, ..base };
            let requeue = requeue.unwrap_or(ctx.config.resync_period);
            ctx.report_edit(ws, report, requeue, |s, generation, now| {
                outcome.update.apply(s, generation, now);
                if let Some(exported) = &exported {
                    exported.apply(s, generation, now);
                }
            })
            .await
        }
        Err(e) => {
            // A resync that could not be polled (Azure unreachable) is kept and polled again.
            let pending =
                status.and_then(|s| s.pending_operation).filter(|p| p.kind.starts_with(keys::RESYNC_OPERATION));
            ctx.fail_report(ws, e, base.workspace, pending).await
        }
    }
}

/// The workspace's cleanup: deletionPolicy Delete or Purge, not paused (the shell handled Retain and paused).
async fn reconcile_cleanup(ws: &MlWorkspace, ctx: &Context) -> Result<Deletion, Error> {
    let status = ctx.current_status(ws);
    // A move in flight ends first; a workspace that never got where the spec says (a move refused, failed or not
    // permitted) is deleted where it is.
    if let Some(result) = moves::before_cleanup(ctx, ws, status.as_ref()).await {
        return result.map(Deletion::Wait);
    }
    let status = ctx.current_status(ws);
    let place = moves::located(&ws.spec, status.as_ref());
    if let Err(foreign) = policy::check_pending_operation(status.as_ref(), place.subscription_id) {
        let err = Error::BadPendingOperation(foreign.to_string());
        return ctx.fail_report(ws, err, WorkspaceFacts::Unknown, None).await.map(Deletion::Wait);
    }
    let pending = status.as_ref().and_then(|s| s.pending_operation.clone());
    let client = match resolve_client_at(&ctx.client, &ctx.credentials, &ctx.config, ws, place).await {
        Ok(c) => c,
        Err(e) => return ctx.fail_report(ws, e, WorkspaceFacts::Unknown, pending).await.map(Deletion::Wait),
    };
    // Without a binding Azure cannot be asked; a workspace never seen in Azure and with no operation in flight was
    // never created, so there is nothing to delete.
    let never_created = status.as_ref().is_none_or(|s| s.resource_id.is_none() && s.pending_operation.is_none());
    if matches!(client, WorkspaceClient::Denied(_)) && never_created {
        info!("not permitted and never created in Azure; removing the finalizer");
        return Ok(Deletion::Finished);
    }
    let result = match cleanup::cleanup(ctx, ws, place, &client).await {
        Ok(CleanupOutcome::Done) => return Ok(Deletion::Finished),
        Ok(CleanupOutcome::Waiting { report, requeue }) => ctx.report(ws, *report, requeue).await,
        Err(e) => {
            let pending = if cleanup::forgets_operation(&e) { None } else { pending };
            ctx.fail_report(ws, e, WorkspaceFacts::Unknown, pending).await
        }
    };
    result.map(Deletion::Wait)
}
