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
pub mod outcome;
pub mod ownership;
pub mod plan;
pub mod progress;
pub mod soft_delete;
pub mod status;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::ops::Deref;
use std::sync::Arc;
use tracing::{Instrument, debug, info, info_span, warn};

use self::apply::converge;
use self::cleanup::CleanupOutcome;
use self::outcome::WorkspaceFacts;
use self::outcome::{Outcome, Standing, StatusChanges};
use self::plan::Desired;
use self::progress::Progress;
use crate::api::conditions::Reason;
use crate::api::v1alpha1::{FINALIZER, MlWorkspace, MlWorkspaceStatus, SubscriptionBinding, WorkspaceDeletionPolicy};
use crate::azure::ArmClient;
use crate::metrics::ControllerScope;
use crate::policy::{self, Grantor};
use crate::reconciler::binding::{self, Ask, Place, Verdict};
use crate::reconciler::credentials::CredentialCache;
pub use crate::reconciler::error;
use crate::reconciler::error::Error;
use crate::reconciler::{Cached, Deletion, Kind, Reconciler, Shell};
pub use crate::reconciler::{ControllerConfig, Phase};

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

    fn wake_key(&self) -> Option<String> {
        Some(self.spec.subscription_id.clone())
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

    /// The next status: `changes` in `phase` over the current one, plus what every workspace status carries (the
    /// chosen binding); the stalled gauge follows.
    fn next_status(
        &self,
        ws: &MlWorkspace,
        s: &mut MlWorkspaceStatus,
        phase: &Phase,
        changes: &StatusChanges,
        generation: Option<i64>,
        now: &Time,
    ) {
        *s = status::compute(Some(s), generation, phase, changes, now);
        self.bindings.report(ws.uid(), s, generation, now);
        if let Some(uid) = ws.uid() {
            self.config.metrics.workspace_stalled(&uid, status::stalled_reason(s));
        }
    }

    /// Ends a reconcile with the merged outcome of its steps: THE way a workspace step's result reaches status.
    /// A phase is written by [`Shell::finish`], a failure goes through THE error policy ([`Shell::fail`]).
    async fn conclude(&self, ws: &MlWorkspace, outcome: Outcome) -> Result<Requeue, Error> {
        let Outcome { standing, requeue, status: changes } = outcome;
        let edit = |s: &mut MlWorkspaceStatus, phase: &Phase, generation: Option<i64>, now: &Time| {
            self.next_status(ws, s, phase, &changes, generation, now);
        };
        let phase = match standing {
            Standing::Failed(err) => return self.fail(ws, err, edit).await,
            Standing::Phase(phase) => phase,
            // No step said otherwise: Azure matches the spec.
            Standing::Unchanged => Phase::Ready,
        };
        let requeue = requeue.unwrap_or(match phase {
            Phase::Stalled { .. } => self.config.stalled_requeue,
            _ => self.config.resync_period,
        });
        self.finish(ws, phase, requeue, edit).await
    }

    /// Stores `phase` and `changes` now, without ending the reconcile: a status that must reach the API server
    /// before the next Azure call (the move's write-ahead), or a step's result the next steps read back.
    async fn checkpoint(&self, ws: &MlWorkspace, phase: &Phase, changes: &StatusChanges) -> Result<(), Error> {
        self.write_status(ws, |s, generation, now| self.next_status(ws, s, phase, changes, generation, now)).await?;
        Ok(())
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
            let pending = Phase::Progressing {
                reason: Reason::Pending,
                message: "the controller has not compared the workspace with Azure yet".into(),
            };
            self.checkpoint(ws, &pending, &StatusChanges::default()).await?;
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
        self.bindings.retain(live);
    }

    fn watch(
        &self,
        controller: Controller<Cached<MlWorkspace>>,
        _namespace: Option<&str>,
        scope: Option<ControllerScope>,
    ) -> Controller<Cached<MlWorkspace>> {
        let (by_subscription, stalled) = (self.index.clone(), self.index.clone());
        let (mapped, signalled, woken) = (scope.clone(), scope.clone(), scope);
        let bindings: Api<SubscriptionBinding> = Api::all(self.client.clone());
        let secrets = credential_watch::secret_changes(&self.client, &self.config.operator_namespace);
        // The key registry names workspaces; the controller schedules references to their cached metadata.
        let keys = self.keys.triggers().map(|r| r.into_kind_unchecked::<Cached<MlWorkspace>>(()));
        controller
            .watches(bindings, watcher::Config::default(), move |binding: SubscriptionBinding| {
                // A binding change re-evaluates the workspaces of its subscription.
                let refs = by_subscription.with_key(None, &binding.spec.subscription_id);
                refs.iter().for_each(|r| mapped.iter().for_each(|m| m.requested(r)));
                refs
            })
            // A changed Secret in the operator's namespace re-checks the workspaces stalled on their credential.
            .watches_stream(secrets, move |_| {
                let refs = stalled.stalled_for(Reason::CredentialUnavailable);
                refs.iter().for_each(|r| woken.iter().for_each(|w| w.requested(r)));
                refs
            })
            .reconcile_on(keys.inspect(move |r| signalled.iter().for_each(|s| s.requested(r))))
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
pub async fn dry_run(client: &Client, config: &ControllerConfig, ws: &MlWorkspace) -> Result<DryRun, Error> {
    let stall = |reason, message: String| Ok(DryRun::blocked(reason, message));
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
    Ok(DryRun::Planned(plan::plan(&desired, &observed)))
}

/// The result of [`dry_run`].
pub type DryRun = crate::reconciler::plan::DryRun<plan::Action>;

/// One reconcile of a live workspace: its steps' merged outcome, written once.
async fn reconcile_apply(ws: &MlWorkspace, ctx: &Context) -> Result<Requeue, Error> {
    let outcome = workspace_steps(ws, ctx).await;
    ctx.conclude(ws, outcome).await
}

/// The steps of a live workspace's reconcile: the move step, the key resync in flight, the dependency wait, then
/// observe, plan, apply (the workspace pipeline), the access step, the key step and the exports. Each returns an
/// [`Outcome`]; a step that ends the reconcile returns early, the rest are merged ([`Outcome::then`]).
async fn workspace_steps(ws: &MlWorkspace, ctx: &Context) -> Outcome {
    let mut status = ctx.current_status(ws);
    let recorded = |status: &Option<MlWorkspaceStatus>| status.as_ref().and_then(|s| s.pending_operation.clone());
    // A move's operations run in the subscription the workspace comes from: the move step checks them.
    let moving = moves::involved(&ws.spec, status.as_ref());
    if !moving && let Err(foreign) = policy::check_pending_operation(status.as_ref(), &ws.spec.subscription_id) {
        // Reported, and forgotten (no pending): the next reconcile reads Azure afresh.
        return Outcome::failed(Error::BadPendingOperation(foreign.to_string()));
    }
    let desired = match Desired::from_resource(ws) {
        Ok(d) => d,
        Err(e) => return Outcome::stalled(Reason::InvalidSpec, e.to_string()),
    };
    let arm = match binding_choice::resolve(ctx, ws).await {
        Ok(WorkspaceClient::Permitted(arm)) => arm,
        Ok(WorkspaceClient::Denied(message)) => {
            info!(%message, "not permitted");
            return Outcome::stalled(Reason::NotPermitted, message).pending(recorded(&status));
        }
        Err(e) => return Outcome::failed(e).pending(recorded(&status)),
    };
    if moving {
        match moves::reconcile_move(ctx, ws, &desired, &arm, status.as_ref()).await {
            moves::MoveOutcome::Done(outcome) => return *outcome,
            moves::MoveOutcome::Continue => status = ctx.current_status(ws),
        }
    }
    let stalled_requeue = ctx.config.stalled_requeue;
    if keys::owns_pending(status.as_ref()) {
        // A key resync in flight: poll it; the workspace pipeline runs again once it is over.
        let base = Outcome::phase(Phase::Ready).at(desired.workspace.clone());
        let keys = key_step(keys::resume(ctx, ws, &desired, &arm, status.as_ref()).await, status.as_ref());
        return base.then(keys, stalled_requeue);
    }
    if let Some((dependency, message)) = dependencies::waiting_for(ws, &desired, status.as_ref()) {
        // Stalled for a missing dependency: one GET of it, and the create request only once it exists.
        match arm.dependency_exists(&dependency).await {
            Ok(false) => {
                debug!(%dependency, "the missing dependency still does not exist");
                return Outcome::stalled(Reason::DependencyMissing, message);
            }
            Ok(true) => info!(%dependency, "the missing dependency exists now"),
            Err(e) => return Outcome::failed(Error::arm("read dependent resource")(e)),
        }
    }
    let outcome = workspace_pipeline(ctx, ws, &desired, &arm, status.as_ref()).await;
    if !outcome.is_ready() {
        return outcome;
    }
    let access = access::after_converge(ctx, ws, &desired, &arm, status.as_ref()).await;
    let outcome = outcome.then(access, stalled_requeue);
    let present = match &outcome.status.workspace {
        WorkspaceFacts::Present(w) if outcome.is_ready() && outcome.status.pending.is_none() => w.clone(),
        _ => return outcome,
    };
    let keys = key_step(keys::after_ready(ctx, ws, &desired, &arm, status.as_ref(), Some(&present)).await, None);
    // Exports see the storage-key facts this reconcile records (their Secret depends on them).
    let mut keyed = status.clone().unwrap_or_default();
    if let Some(update) = &keys.status.keys {
        update.apply(&mut keyed, ws.metadata.generation, &Time(ctx.config.clock().now()));
    }
    let exported = crate::exports::export_workspace(&ctx.client, ws, &desired.workspace, &arm, &present, &keyed).await;
    for (type_, reason, note) in &exported.events {
        ctx.publish(ws, *type_, reason, note.clone()).await;
    }
    outcome.then(keys, stalled_requeue).then(Outcome::unchanged().exports(exported), stalled_requeue)
}

/// Observe, plan, apply: the workspace itself. Ends with the facts read or written, and the operation in flight.
async fn workspace_pipeline(
    ctx: &Context,
    ws: &MlWorkspace,
    desired: &Desired,
    arm: &ArmClient,
    status: Option<&MlWorkspaceStatus>,
) -> Outcome {
    let recorded = status.and_then(|s| s.pending_operation.clone());
    let mut observed = match observe::observe(arm, desired, status).await {
        Ok(o) => o,
        Err(e) => return Outcome::failed(e).pending(recorded),
    };
    if let Err(e) = ownership::check_foreign_owner(&ctx.client, desired, &mut observed).await {
        return Outcome::failed(e);
    }
    let mut progress = Progress::new(observed);
    let result = converge(ctx, ws, desired, arm, &mut progress).instrument(info_span!("apply")).await;
    let pending = progress.observed.pending.as_ref().map(|p| observe::pending_to_status(p, ws.metadata.generation));
    match result {
        Ok(applied) => {
            let present = matches!(progress.facts, WorkspaceFacts::Present(_));
            let outcome = Outcome::phase(applied.phase).requeue(applied.requeue).facts(progress.facts).pending(pending);
            if present { outcome.at(desired.workspace.clone()) } else { outcome }
        }
        Err(e) if progress.observed.workspace.is_none() && dependencies::is_dependency_missing(&e) => {
            // Remember which dependency is missing, so the stalled requeues wait for it instead of re-sending the PUT.
            let missing = match dependencies::find_missing(arm, desired, &e).await {
                Ok(missing) => missing,
                Err(probe) => {
                    warn!(error = %error::scrub(&probe.to_string()), "cannot tell which dependency is missing");
                    None
                }
            };
            let record = missing.map(|id| id.to_string());
            Outcome::failed(e).facts(progress.facts).pending(pending).missing_dependency(record)
        }
        Err(e) => Outcome::failed(e).facts(progress.facts).pending(pending),
    }
}

/// The key step's outcome; when it fails, a resync in flight stays recorded in `status` and is polled again (Azure
/// was unreachable, the operation may still run).
fn key_step(result: Result<Outcome, Error>, status: Option<&MlWorkspaceStatus>) -> Outcome {
    result.unwrap_or_else(|e| {
        let in_flight = status.and_then(|s| s.pending_operation.clone()).filter(keys::owns_operation);
        Outcome::failed(e).pending(in_flight)
    })
}

/// The workspace's cleanup: deletionPolicy Delete or Purge, not paused (the shell handled Retain and paused).
async fn reconcile_cleanup(ws: &MlWorkspace, ctx: &Context) -> Result<Deletion, Error> {
    let status = ctx.current_status(ws);
    // A move in flight ends first; a workspace that never got where the spec says (a move refused, failed or not
    // permitted) is deleted where it is.
    if let Some(outcome) = moves::before_cleanup(ctx, ws, status.as_ref()).await {
        return ctx.conclude(ws, outcome).await.map(Deletion::Wait);
    }
    let status = ctx.current_status(ws);
    let place = moves::located(&ws.spec, status.as_ref());
    if let Err(foreign) = policy::check_pending_operation(status.as_ref(), place.subscription_id) {
        let failed = Outcome::failed(Error::BadPendingOperation(foreign.to_string()));
        return ctx.conclude(ws, failed).await.map(Deletion::Wait);
    }
    let pending = status.as_ref().and_then(|s| s.pending_operation.clone());
    let client = match resolve_client_at(&ctx.client, &ctx.credentials, &ctx.config, ws, place).await {
        Ok(c) => c,
        Err(e) => return ctx.conclude(ws, Outcome::failed(e).pending(pending)).await.map(Deletion::Wait),
    };
    // Without a binding Azure cannot be asked; a workspace never seen in Azure and with no operation in flight was
    // never created, so there is nothing to delete.
    let never_created = status.as_ref().is_none_or(|s| s.resource_id.is_none() && s.pending_operation.is_none());
    if matches!(client, WorkspaceClient::Denied(_)) && never_created {
        info!("not permitted and never created in Azure; removing the finalizer");
        return Ok(Deletion::Finished);
    }
    let outcome = match cleanup::cleanup(ctx, ws, place, &client).await {
        Ok(CleanupOutcome::Done) => return Ok(Deletion::Finished),
        Ok(CleanupOutcome::Waiting(outcome)) => *outcome,
        Err(e) => {
            let pending = if cleanup::forgets_operation(&e) { None } else { pending };
            Outcome::failed(e).pending(pending)
        }
    };
    ctx.conclude(ws, outcome).await.map(Deletion::Wait)
}
