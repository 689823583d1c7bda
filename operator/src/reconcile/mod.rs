//! One pass over one ClinicPlatform, level-triggered, phase by phase; each phase lives in the
//! module of its name (see `docs/architecture.md`):
//!
//! validate → (resume) → gather → gate → certificates → desired → converge → uncached → observe → status →
//! publish → next.
//!
//! Around it: [`watch`] (the watches and the controller), [`caches`] (what they fill),
//! [`context`], [`memory`] and [`ledger`] (what every pass shares and remembers, and what a
//! restart keeps), [`finalizer`] (clean-up of a deleted clinic), [`events`], [`discovery`] and
//! [`error`].

pub mod backups;
pub mod caches;
pub mod certificates;
pub mod compare;
pub mod context;
pub mod converge;
pub mod discovery;
pub mod error;
pub mod events;
pub mod exposure;
pub mod finalizer;
pub mod gate;
pub mod gather;
pub mod ledger;
pub mod memory;
pub mod observe;
pub mod probe;
pub mod publish;
pub mod resume;
pub mod status;
pub mod storage;
pub mod uncached;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use tracing::{Instrument, debug, info_span, warn};

use crate::api::ClinicPlatform;
use crate::desired::{self, SecretValues};
use crate::model;
pub use context::Context;
pub use error::{Error, Result};
use exposure::RouteState;
use gate::Gate;
use memory::ClinicKey;
use publish::Published;
pub use watch::{RunConfig, run};

/// How often a converged clinic is looked at again without any watch event (a safety net:
/// changes to children arrive through the watches).
pub const RESYNC: Duration = Duration::from_secs(600);

/// The pass over one clinic, top to bottom.
async fn reconcile_clinic(cp: &ClinicPlatform, ctx: &Context) -> Result<Action> {
    if cp.metadata.deletion_timestamp.is_some() {
        return finalizer::on_deletion(ctx, cp).await;
    }
    if !ctx.caches.is_ready() {
        // The caches fill as the controller polls the watch streams; blocking here would stall
        // that polling. Nothing may be judged absent before they are complete: come back soon.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let admitted = validated(ctx, cp)
        .map_err(Error::InvalidSpec)
        .and_then(|clinic| ctx.policy.admit(clinic).map_err(Error::NotAllowed));
    let mut clinic = match admitted {
        Ok(clinic) => clinic,
        Err(refused) => return publish::rejected(ctx, cp, refused).await,
    };
    if clinic.database_cluster.is_some()
        && !ctx.discovery.optional(desired::OptionalApi::DatabaseOperator).await
    {
        return publish::rejected(ctx, cp, Error::DatabaseOperatorMissing).await;
    }
    if let Some(full_pass_in) = resume::deferred(ctx, cp, &clinic) {
        return Ok(Action::requeue(full_pass_in));
    }
    let mut notices = Vec::new();
    let gathered = gather::gather(ctx, cp, &clinic).await;
    let gate = gate::decide(ctx, cp, &mut clinic, &gathered, &mut notices).await;
    let certificate = certificates::ensure(ctx, cp, &mut clinic).await;
    let desired = desired::objects(&clinic, &SecretValues::Placeholder);
    let applied = converge::converge(ctx, cp, &clinic, &desired, &mut notices)
        .await
        .and_then(|a| certificate.map(|()| a));
    let uncached = uncached::sync(ctx, cp, &clinic, &desired, gathered.velero, applied.is_ok()).await;
    notices.extend(uncached.clashes());
    let outcome = converge::outcome(gate, applied);
    let observed = observe::observe(ctx, cp, &clinic, &desired, &gathered, &outcome, uncached).await;
    let new_status = status::compute(&clinic, &observed, cp.status.as_ref());
    let published = publish::status_and_events(ctx, cp, &clinic, &new_status, &outcome, notices).await?;
    let (applied, gate) = outcome?;
    debug!(?applied, ?gate, "reconciled");
    Ok(match published {
        Published::Coalesced(wait) => Action::requeue(wait),
        Published::Done => next_action(&clinic, gathered.velero, &gate, &observed),
    })
}

/// The clinic's model ([`model::validate`]), its CRD's CEL rules evaluated once per version of
/// the ClinicPlatform: they read nothing that version does not cover, and evaluating them at
/// every pass was 5.6 % of a converging operator's CPU (docs/benchmarks.md).
fn validated(ctx: &Context, cp: &ClinicPlatform) -> std::result::Result<model::Clinic, model::InvalidSpec> {
    let key = (cp.namespace().unwrap_or_default(), cp.name_any());
    let version = memory::user_version(&cp.metadata);
    if ctx.memory.cel_passed(&key, &version) {
        return model::validate_beyond_cel(cp);
    }
    let checked = model::validate(cp);
    if checked.is_ok() {
        ctx.memory.remember_cel_passed(&key, version);
    }
    checked
}

/// When to look again without a watch event.
fn next_action(clinic: &model::Clinic, velero: bool, gate: &Gate, observed: &status::Observed) -> Action {
    match gate {
        Gate::Waiting { .. } => Action::requeue(Duration::from_secs(15)),
        // Routes are not watched: their Gateway's answer is read again soon, and a refusal
        // (which the platform team may lift) within a minute.
        _ if observed.route.as_ref().is_some_and(RouteState::is_pending) => {
            Action::requeue(Duration::from_secs(10))
        }
        _ if observed.route.as_ref().is_some_and(|r| !r.is_accepted()) => {
            Action::requeue(Duration::from_secs(60))
        }
        // A replicated database is not watched: its `MariaDB` is read again soon while it is not
        // ready, and every minute once it is (its primary may move).
        _ if clinic.database_cluster.is_some() && !observed.database.is_ready() => {
            Action::requeue(Duration::from_secs(15))
        }
        _ if clinic.database_cluster.is_some() => Action::requeue(Duration::from_secs(60)),
        _ if clinic.spec.backup.enabled && !velero => Action::requeue(Duration::from_secs(60)),
        // Backup age must be re-judged against the RPO as time passes.
        _ if clinic.spec.backup.enabled => Action::requeue(Duration::from_secs(300)),
        _ => Action::requeue(RESYNC),
    }
}

fn clinic_key(object: &DeserializeGuard<ClinicPlatform>) -> ClinicKey {
    let meta = match &object.0 {
        Ok(cp) => &cp.metadata,
        Err(invalid) => &invalid.metadata,
    };
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// Reconciles one ClinicPlatform (or reports why it cannot be read).
pub async fn reconcile(object: Arc<DeserializeGuard<ClinicPlatform>>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let (namespace, name) = clinic_key(&object);
    let span = info_span!("reconcile", %namespace, clinic = %name);
    let result = match &object.0 {
        Ok(cp) => reconcile_clinic(cp, &ctx).instrument(span).await,
        Err(invalid) => publish::unreadable(invalid, &ctx).instrument(span).await,
    };
    ctx.metrics.observe_reconcile(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.memory.reset_backoff(&(namespace, name));
    }
    result
}

/// Requeue with a growing delay; user errors wait longer (a spec change triggers anyway).
pub fn error_policy(
    object: Arc<DeserializeGuard<ClinicPlatform>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.record_error(error.reason());
    let key = clinic_key(&object);
    warn!(namespace = %key.0, name = %key.1, reason = error.reason(), error = %error, "reconcile failed");
    if error.is_user_error() {
        return Action::requeue(Duration::from_secs(300));
    }
    Action::requeue(ctx.memory.next_backoff(&key))
}
