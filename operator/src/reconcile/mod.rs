//! The reconcile loop: observe -> validate -> build -> apply -> prune -> status.

pub mod apply;
pub mod backup;
pub mod compare;
pub mod error;
pub mod observe;
pub mod optional;
pub mod outside;
pub mod security;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret};
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{ClinicPlatform, ClinicPlatformStatus, FIELD_MANAGER};
use crate::build::{self, SecretValues};
use crate::metrics::Metrics;
use crate::model::{self, Clinic};
pub use error::{Error, Result};
use observe::{CacheWriters, Caches};

/// How often a converged clinic is looked at again without any watch event (a safety net:
/// changes to children arrive through the watches).
pub const RESYNC: Duration = Duration::from_secs(600);

/// A status change that leaves `Ready` and `Degraded` as they were (a convergence in progress)
/// waits this long after the previous status write, so a converging clinic is not written on
/// every pod event. Changes of `Ready`, `Degraded` or the generation are written at once.
pub const STATUS_COALESCE: Duration = Duration::from_secs(15);

/// Objects per page when full objects (ClinicPlatforms, workloads) are listed.
const LIST_PAGE: u32 = 50;

/// How often the objects the caches do not hold (Velero Schedule, Certificate, ServiceMonitor,
/// PrometheusRule, a dashboard in another namespace) are read back while the spec is unchanged:
/// drift on them is put back within this time.
pub const EXTERNAL_RECHECK: Duration = Duration::from_secs(60);

/// A clinic by namespace and name.
type ClinicKey = (String, String);

/// Something learnt about a clinic: for which version of its ClinicPlatform, and when.
#[derive(Debug)]
struct Remembered<T> {
    version: Option<String>,
    at: Instant,
    value: T,
}

impl<T> Remembered<T> {
    fn new(version: Option<&String>, value: T) -> Self {
        Self { version: version.cloned(), at: Instant::now(), value }
    }

    /// Learnt for this very version of the ClinicPlatform, less than EXTERNAL_RECHECK ago.
    fn fresh_for(&self, version: Option<&String>) -> bool {
        self.version.as_ref() == version && self.at.elapsed() < EXTERNAL_RECHECK
    }
}

/// What one check of the objects outside the caches found.
#[derive(Debug, Clone, Default)]
pub struct External {
    /// The Schedule and a dashboard elsewhere; `None` when they were not looked at this pass.
    pub outside: Option<outside::Outcome>,
    pub certificates: optional::OptionalState,
    pub monitors: optional::OptionalState,
}

impl External {
    /// Nothing failed: worth reusing. (A missing API is not a failure; discovery is re-asked
    /// with the next check anyway.)
    fn is_clean(&self) -> bool {
        self.outside.as_ref().is_some_and(|o| o.schedule_error.is_none() && o.dashboard_error.is_none())
            && self.certificates.error.is_none()
            && self.monitors.error.is_none()
    }
}

/// Something worth an event on the ClinicPlatform.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
    /// The child the event is about. Events with the same reason are counted as one series per
    /// related object, so each drifted child keeps its own message.
    pub related: Option<ObjectReference>,
}

impl Notice {
    pub fn normal(reason: &'static str, message: String) -> Self {
        Self { type_: EventType::Normal, reason, message, related: None }
    }
    pub fn warning(reason: &'static str, message: String) -> Self {
        Self { type_: EventType::Warning, reason, message, related: None }
    }
    pub fn about(mut self, related: ObjectReference) -> Self {
        self.related = Some(related);
        self
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub caches: Caches,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Last discovery answers about optional APIs, and when they were asked.
    discovery: tokio::sync::Mutex<HashMap<&'static str, (bool, Instant)>>,
    /// Whether the operator sees cluster-scoped objects (namespaces, StorageClasses); false in
    /// namespaced mode.
    pub cluster_scope: bool,
    /// The cluster's StorageClasses (name, default, encrypts), listed at most once a minute.
    storage_classes: tokio::sync::Mutex<Option<security::StorageClasses>>,
    /// Children known to match their declaration, by (kind, namespace, name), with the
    /// [`observe::marker`] they had then. An unchanged marker needs no read; a moved one is read
    /// and compared (drift, or a controller's harmless change).
    verified: Mutex<HashMap<(String, String, String), String>>,
    /// What the last check of each clinic's objects outside the caches found, for which version
    /// of the ClinicPlatform and when (see [`EXTERNAL_RECHECK`]).
    external: Mutex<HashMap<ClinicKey, Remembered<External>>>,
    /// Each clinic's Velero Backups as last listed, for which version of the ClinicPlatform and when.
    backups: Mutex<HashMap<ClinicKey, Remembered<Vec<backup::BackupRecord>>>>,
    /// When each clinic's status was last written, for [`STATUS_COALESCE`].
    status_written: Mutex<HashMap<(String, String), Instant>>,
    /// The platform team's policy: what clinics may point at, what counts as compliant.
    pub policy: Arc<crate::policy::Policy>,
}

impl Context {
    pub fn new(client: Client, caches: Caches, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            caches,
            metrics,
            failures: Mutex::new(HashMap::new()),
            discovery: tokio::sync::Mutex::new(HashMap::new()),
            storage_classes: tokio::sync::Mutex::new(None),
            cluster_scope: true,
            verified: Mutex::new(HashMap::new()),
            external: Mutex::new(HashMap::new()),
            backups: Mutex::new(HashMap::new()),
            status_written: Mutex::new(HashMap::new()),
            policy: Arc::new(crate::policy::Policy::default()),
        }
    }

    /// The same context under another policy.
    pub fn with_policy(mut self, policy: Arc<crate::policy::Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// The last check of a clinic's external objects, if it is recent, for this very version of the
    /// ClinicPlatform (any change to it, even an annotation, looks again), and
    /// found nothing wrong.
    fn recent_external(&self, key: &(String, String), version: Option<&String>) -> Option<External> {
        let external = self.external.lock().unwrap_or_else(|p| p.into_inner());
        let seen = external.get(key)?;
        (seen.fresh_for(version) && seen.value.is_clean()).then(|| seen.value.clone())
    }

    fn remember_external(&self, key: (String, String), version: Option<&String>, state: &External) {
        let mut external = self.external.lock().unwrap_or_else(|p| p.into_inner());
        external.insert(key, Remembered::new(version, state.clone()));
    }

    fn recent_backups(
        &self,
        key: &(String, String),
        version: Option<&String>,
    ) -> Option<Vec<backup::BackupRecord>> {
        let backups = self.backups.lock().unwrap_or_else(|p| p.into_inner());
        let seen = backups.get(key)?;
        seen.fresh_for(version).then(|| seen.value.clone())
    }

    fn remember_backups(
        &self,
        key: (String, String),
        version: Option<&String>,
        list: &[backup::BackupRecord],
    ) {
        let mut backups = self.backups.lock().unwrap_or_else(|p| p.into_inner());
        // A reused list keeps the time it was listed: it is never more than EXTERNAL_RECHECK old.
        if !backups.get(&key).is_some_and(|seen| seen.fresh_for(version)) {
            backups.insert(key, Remembered::new(version, list.to_vec()));
        }
    }

    fn forget_backups(&self, key: &(String, String)) {
        let mut backups = self.backups.lock().unwrap_or_else(|p| p.into_inner());
        backups.remove(key);
    }

    /// How long a coalescible status update should still wait, if at all.
    fn status_wait(&self, key: &(String, String)) -> Option<Duration> {
        let written = self.status_written.lock().unwrap_or_else(|p| p.into_inner());
        let since = written.get(key)?.elapsed();
        STATUS_COALESCE.checked_sub(since).filter(|d| !d.is_zero())
    }

    fn status_was_written(&self, key: (String, String)) {
        let mut written = self.status_written.lock().unwrap_or_else(|p| p.into_inner());
        written.insert(key, Instant::now());
    }

    /// Whether the child was verified with this marker.
    pub fn is_verified(&self, key: &(String, String, String), marker: &str) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.get(key).is_some_and(|m| m == marker)
    }

    /// Whether this process wrote or verified the child (with any marker) and has not let it
    /// go since: a remembered child that is gone was deleted by someone else.
    pub fn remembers(&self, key: &(String, String, String)) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.contains_key(key)
    }

    pub fn set_verified(&self, key: (String, String, String), marker: String) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.insert(key, marker);
    }

    pub fn forget_verified(&self, key: &(String, String, String)) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.remove(key);
    }

    /// Drops what is known of a deleted clinic's namespace.
    fn forget_namespace(&self, namespace: &str) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.retain(|(_, ns, _), _| ns != namespace);
    }

    /// Exponential backoff per object: 5 s, 10 s, 20 s ... capped at 5 minutes.
    fn next_backoff(&self, key: (String, String)) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let seconds = 5u64.saturating_mul(1 << (*n - 1).min(6));
        Duration::from_secs(seconds.min(300))
    }

    fn reset_backoff(&self, key: &(String, String)) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// Reconciles one ClinicPlatform (or reports why it cannot be read).
pub async fn reconcile(object: Arc<DeserializeGuard<ClinicPlatform>>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = match &object.0 {
        Ok(cp) => {
            let span = info_span!("reconcile", namespace = %cp.namespace().unwrap_or_default(), clinic = %cp.name_any());
            reconcile_clinic(cp, &ctx).instrument(span).await
        }
        Err(invalid) => {
            let meta = &invalid.metadata;
            let span = info_span!("reconcile", namespace = %meta.namespace.clone().unwrap_or_default(), clinic = %meta.name.clone().unwrap_or_default());
            report_unreadable(invalid, &ctx).instrument(span).await
        }
    };
    ctx.metrics.observe_reconcile(started.elapsed().as_secs_f64());
    if result.is_ok() {
        let meta = match &object.0 {
            Ok(cp) => &cp.metadata,
            Err(invalid) => &invalid.metadata,
        };
        ctx.reset_backoff(&object_key(meta));
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
    let meta = match &object.0 {
        Ok(cp) => &cp.metadata,
        Err(invalid) => &invalid.metadata,
    };
    warn!(namespace = ?meta.namespace, name = ?meta.name, reason = error.reason(), error = %error, "reconcile failed");
    if error.is_user_error() {
        return Action::requeue(Duration::from_secs(300));
    }
    Action::requeue(ctx.next_backoff(object_key(meta)))
}

async fn reconcile_clinic(cp: &ClinicPlatform, ctx: &Context) -> Result<Action> {
    if cp.metadata.deletion_timestamp.is_some() {
        // Same-namespace children are owned: the garbage collector removes them. What lives in
        // Velero's namespace is ours to remove before the finalizer lets the object go.
        if cp.finalizers().iter().any(|f| f == crate::api::FINALIZER) {
            release_deleted(ctx, cp).await?;
        }
        ctx.metrics.forget_clinic(&cp.namespace().unwrap_or_default(), &cp.name_any());
        ctx.forget_namespace(&cp.namespace().unwrap_or_default());
        ctx.external
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(cp.namespace().unwrap_or_default(), cp.name_any()));
        ctx.forget_backups(&(cp.namespace().unwrap_or_default(), cp.name_any()));
        ctx.status_written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(cp.namespace().unwrap_or_default(), cp.name_any()));
        return Ok(Action::await_change());
    }
    if !ctx.caches.is_ready() {
        // The caches fill as the controller polls the watch streams; blocking here would stall
        // that polling. Nothing may be judged absent before they are complete: come back soon.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let reference = cp.object_ref(&());
    let mut notices = Vec::new();

    let checked = model::validate(cp).map_err(Error::InvalidSpec).and_then(|clinic| {
        ctx.policy.check(&clinic).map_err(Error::NotAllowed)?;
        Ok(clinic)
    });
    let clinic = match checked {
        Ok(clinic) => clinic,
        Err(error) => {
            let conditions = status::unreadable(
                error.reason(),
                &error.to_string(),
                cp.metadata.generation,
                previous_conditions(cp),
            );
            let mut new_status = cp.status.clone().unwrap_or_default();
            new_status.observed_generation = cp.metadata.generation;
            merge_conditions(&mut new_status, conditions);
            if status::differs(cp.status.as_ref(), &new_status) {
                write_status(ctx, cp, &new_status).await?;
                apply::publish(ctx, &reference, &[Notice::warning(error.reason(), error.to_string())]).await;
            }
            info!(error = %error, "spec rejected; nothing applied");
            return Err(error);
        }
    };

    let mut clinic = clinic;
    let velero = ctx.velero_installed().await;
    let backups_key = (clinic.namespace.clone(), clinic.name.clone());
    let backups = if !(clinic.spec.backup.enabled && velero) {
        Ok(Vec::new())
    } else if let Some(recent) = ctx.recent_backups(&backups_key, cp.metadata.resource_version.as_ref()) {
        Ok(recent)
    } else {
        backup::list_backups(ctx, &clinic).await.map_err(|e| e.to_string())
    };
    // The gate decides which images the workloads get, so it runs before building.
    let gate = if clinic.spec.paused {
        Ok(backup::Gate::Open)
    } else {
        let recorded_database = cp.status.as_ref().and_then(|s| s.versions.as_ref()?.database.as_deref());
        backup::upgrade_gate(ctx, &mut clinic, velero, &backups, recorded_database, &mut notices).await
    };
    // Backups change slowly: passes triggered by children's events reuse the list for up to a
    // minute, unless an upgrade waits on one.
    match (&backups, &gate) {
        (Ok(list), Ok(backup::Gate::Open)) => {
            ctx.remember_backups(backups_key, cp.metadata.resource_version.as_ref(), list)
        }
        _ => ctx.forget_backups(&backups_key),
    }
    let desired = build::desired(&clinic, &SecretValues::Placeholder);
    // A gate that could not decide (e.g. its Backup could not be created) has already held the
    // images: everything else is still converged and drift still corrected.
    let outcome = if clinic.spec.paused {
        Ok(apply::Applied::default())
    } else if let Err(switched) = apply::credentials_source_unchanged(ctx, cp, &clinic) {
        Err(switched)
    } else {
        converge(ctx, &clinic, &desired, &mut notices).await
    };
    // A Schedule that cannot be written is a backup problem (BackupReady), not a platform one.
    // Objects outside the caches (the Schedule, optional APIs' children, a dashboard elsewhere)
    // are read and put right at most once a minute per clinic while the ClinicPlatform itself is
    // unchanged (passes triggered by its children's events reuse the last check); any change to
    // the ClinicPlatform, or a failure, checks them on the next pass.
    let converged_ok = outcome.is_ok() && !clinic.spec.paused;
    let external_key = (clinic.namespace.clone(), clinic.name.clone());
    let external = match ctx.recent_external(&external_key, cp.metadata.resource_version.as_ref()) {
        Some(recent) if converged_ok => recent,
        _ if converged_ok => {
            let wanted = outside::wanted(&clinic, velero);
            let recorded = cp.status.as_ref().and_then(|s| s.outside_objects.as_deref());
            // One finalizer patch per pass, before anything is written outside the namespace: a
            // second patch from the same (now stale) object would be refused as a conflict.
            let outside = match backup::ensure_finalizer_if(ctx, cp, !wanted.is_empty()).await {
                Ok(()) => outside::sync(ctx, &clinic, &wanted, recorded, velero).await,
                Err(e) => {
                    let problem = error::Problem::from(&e);
                    outside::Outcome {
                        schedule_error: Some(problem.clone()),
                        dashboard_error: Some(problem),
                        record: recorded.map(<[_]>::to_vec).unwrap_or_default(),
                        notices: Vec::new(),
                    }
                }
            };
            // Optional APIs and the dashboard never block the platform: their state is reported.
            let certificates =
                optional::ensure(ctx, &clinic, build::OptionalApi::CertManager, &desired).await;
            let monitors =
                optional::ensure(ctx, &clinic, build::OptionalApi::PrometheusOperator, &desired).await;
            let external = External { outside: Some(outside), certificates, monitors };
            ctx.remember_external(external_key, cp.metadata.resource_version.as_ref(), &external);
            external
        }
        _ => External::default(),
    };
    let External { outside, certificates, monitors } = external;
    let (schedule_error, dashboard_error) = match &outside {
        Some(o) => (o.schedule_error.clone(), o.dashboard_error.clone()),
        None => (None, None),
    };
    for e in certificates.error.iter().chain(&monitors.error).chain(&dashboard_error) {
        warn!(error = %e, "optional child not applied");
    }
    if let Some(o) = &outside {
        notices.extend(o.notices.iter().cloned());
    }
    let certificate_in_place = certificates.in_place.contains(&clinic.child_name("tls"));
    let monitoring = status::MonitoringState {
        enabled: clinic.spec.monitoring.enabled,
        operator_installed: monitors.installed,
        in_place: monitors.in_place.len(),
        error: monitors.error.clone().or(dashboard_error),
    };
    let outcome = match gate {
        Err(e) => Err(e),
        Ok(gate) => outcome.map(|applied| (applied, gate)),
    };
    let mut health = backup::health(
        &clinic,
        cp.metadata.creation_timestamp.as_ref().map(|t| t.0),
        velero,
        &backups,
        jiff::Timestamp::now(),
    );
    if let Some(e) = schedule_error.filter(|_| clinic.spec.backup.enabled) {
        warn!(error = %e, "Velero Schedule not applied");
        health = backup::schedule_failed(&clinic, &e, health.last_success);
    }
    let tls_at_edge =
        clinic.spec.ingress.as_ref().is_some_and(|i| i.tls.secret_name.is_some() || certificate_in_place);
    let encrypted = security::storage_encrypted(ctx, &clinic).await;
    let mut observed = observe_state(ctx, &clinic, cp, &desired, &outcome, health);
    // A StatefulSet reports no condition when its pods are refused: its events say it. Read only
    // while it has fewer pods than it should (not during a normal start, when they exist).
    for workload in [&mut observed.database, &mut observed.backend] {
        if workload.exists && workload.created < workload.desired.max(1) {
            workload.failure = security::pod_creation_failure(ctx, &clinic.namespace, &workload.name).await;
        }
    }
    observed.namespace_visible = ctx.cluster_scope;
    observed.monitoring = monitoring;
    observed.controls = crate::api::Compliance {
        pod_security_restricted: ctx
            .caches
            .namespace_labels(&clinic.namespace)
            .is_some_and(|l| security::enforces_restricted(&l)),
        default_deny_network: observed.network_policies_enforced,
        tls_at_edge,
        backups_within_rpo: observed.backup.status == "True",
        data_residency: ctx.policy.residency_approved(&clinic.spec),
        encryption_at_rest: encrypted,
    };
    observed.outside = match &outside {
        Some(o) => Some(o.record.clone()),
        None => cp.status.as_ref().and_then(|s| s.outside_objects.clone()),
    };
    let new_status = status::compute(&clinic, &observed, cp.status.as_ref());
    let ready = new_status.conditions.iter().any(|c| c.type_ == status::READY && c.status == "True");
    let last_backup = new_status.last_backup_time.as_ref().map(|t| t.0.as_millisecond() as f64 / 1000.0);
    ctx.metrics.observe_clinic(&clinic.namespace, &clinic.name, ready, last_backup);
    let status_key = (clinic.namespace.clone(), clinic.name.clone());
    let coalesce = if status::may_coalesce(cp.status.as_ref(), &new_status) {
        ctx.status_wait(&status_key)
    } else {
        None
    };
    if let Some(wait) = coalesce
        && status::differs(cp.status.as_ref(), &new_status)
    {
        // Written soon by the requeue below (or an earlier event), with the counts of then.
        apply::publish(ctx, &reference, &notices).await;
        outcome?;
        return Ok(Action::requeue(wait));
    }
    if status::differs(cp.status.as_ref(), &new_status) {
        match &outcome {
            Err(e) => notices.push(Notice::warning(e.reason(), e.to_string())),
            Ok((_, backup::Gate::Blocked { reason, message })) => {
                notices.push(Notice::warning(reason, message.clone()))
            }
            Ok(_) => {}
        }
        let opted_out = |s: &ClinicPlatformStatus| {
            s.conditions
                .iter()
                .any(|c| c.type_ == status::SECURITY_ENFORCED && c.reason == "PodSecurityOptOut")
        };
        notices.extend(deletion_not_confirmed(cp, &clinic, &new_status));
        if opted_out(&new_status) && !cp.status.as_ref().is_some_and(opted_out) {
            notices.push(Notice::warning(
                "PodSecurityNotEnforced",
                "spec.security.enforcePodSecurity is false: the namespace is not held to Pod Security restricted"
                    .into(),
            ));
        }
        write_status(ctx, cp, &new_status).await?;
        ctx.status_was_written(status_key);
    }
    apply::publish(ctx, &reference, &notices).await;
    let (applied, gate) = outcome?;
    debug!(?applied, ?gate, "reconciled");
    Ok(match gate {
        backup::Gate::Waiting { .. } => Action::requeue(Duration::from_secs(15)),
        _ if clinic.spec.backup.enabled && !velero => Action::requeue(Duration::from_secs(60)),
        // Backup age must be re-judged against the RPO as time passes.
        _ if clinic.spec.backup.enabled => Action::requeue(Duration::from_secs(300)),
        _ => Action::requeue(RESYNC),
    })
}

/// The note that a `deletionPolicy: Delete` is not in force yet, when the spec or the outcome of
/// a deletion just changed (once, not at every pass).
fn deletion_not_confirmed(
    cp: &ClinicPlatform,
    clinic: &Clinic,
    new: &ClinicPlatformStatus,
) -> Option<Notice> {
    let old = cp.status.as_ref();
    let spec_changed = old.and_then(|s| s.observed_generation) != cp.metadata.generation;
    let outcome_changed = old.and_then(|s| s.on_deletion.as_ref()) != new.on_deletion.as_ref();
    let unconfirmed =
        clinic.spec.deletion_policy == crate::api::DeletionPolicy::Delete && !clinic.deletion_confirmed;
    (unconfirmed && (spec_changed || outcome_changed)).then(|| {
        let annotation = crate::api::CONFIRM_DELETION_ANNOTATION;
        Notice::normal(
            "DeletionNotConfirmed",
            format!(
                "spec.deletionPolicy is Delete, but deleting this ClinicPlatform keeps its volume claims and credentials (as under Retain) until annotation {annotation} holds its uid: kubectl -n {} annotate clinicplatform {} {annotation}={}",
                clinic.namespace,
                clinic.name,
                cp.metadata.uid.as_deref().unwrap_or_default()
            ),
        )
    })
}

/// Clean-up of a deleted clinic, then the finalizer released. A clean-up that fails keeps the
/// finalizer and is retried with backoff; meanwhile `CleanupBlocked` says why and how to let
/// the clinic go without it (the abandon annotation), and a metric feeds the alert (its series
/// goes with `forget_clinic` once the clinic is released).
async fn release_deleted(ctx: &Context, cp: &ClinicPlatform) -> Result<()> {
    let reference = cp.object_ref(&());
    if cp.annotations().get(crate::api::ABANDON_CLEANUP_ANNOTATION).is_some_and(|v| v == "true") {
        let left: Vec<String> = cp
            .status
            .as_ref()
            .and_then(|s| s.outside_objects.as_ref())
            .into_iter()
            .flatten()
            .map(outside::describe)
            .collect();
        let left = if left.is_empty() { "nothing recorded".to_string() } else { left.join(", ") };
        warn!(%left, "clean-up abandoned on request");
        backup::release_finalizer(ctx, cp).await?;
        let message = format!(
            "clean-up abandoned ({} is true): the finalizer was released without removing what the clinic has outside its namespace; remove it by hand: {left}",
            crate::api::ABANDON_CLEANUP_ANNOTATION
        );
        apply::publish(ctx, &reference, &[Notice::warning("CleanupAbandoned", message)]).await;
        return Ok(());
    }
    let clinic = model::unchecked(cp);
    match backup::cleanup(ctx, cp, &clinic).await {
        Ok(notices) => {
            apply::publish(ctx, &reference, &notices).await;
            Ok(())
        }
        Err(error) => {
            ctx.metrics.cleanup_blocked(&cp.namespace().unwrap_or_default(), &cp.name_any());
            let blocked = status::cleanup_blocked(&error, cp.metadata.generation, previous_conditions(cp));
            let mut new_status = cp.status.clone().unwrap_or_default();
            merge_conditions(&mut new_status, vec![blocked]);
            if status::differs(cp.status.as_ref(), &new_status) {
                // The object may be gone already (another replica released it): the error that
                // matters is the clean-up's.
                if let Err(e) = write_status(ctx, cp, &new_status).await {
                    debug!(error = %e, "CleanupBlocked not written");
                }
                apply::publish(ctx, &reference, &[Notice::warning("CleanupBlocked", error.to_string())])
                    .await;
            }
            Err(error)
        }
    }
}

/// Secrets first (the workloads reference them), then every other child, then prune.
async fn converge(
    ctx: &Context,
    clinic: &Clinic,
    desired: &[DynamicObject],
    notices: &mut Vec<Notice>,
) -> Result<apply::Applied> {
    security::ensure_pod_security(ctx, clinic).await?;
    let created_secrets = apply::ensure_secrets(ctx, clinic).await?;
    let mut applied = apply::apply_children(ctx, clinic, desired, notices).await?;
    applied.created += created_secrets;
    applied.pruned = apply::prune(ctx, clinic, desired, notices).await?;
    // One event per kind of change and pass, not one per object.
    if applied.created > 0 {
        notices.push(Notice::normal("Created", format!("created {} objects", applied.created)));
    }
    if applied.updated > 0 {
        notices
            .push(Notice::normal("Updated", format!("updated {} objects to the new spec", applied.updated)));
    }
    Ok(applied)
}

fn observe_state(
    ctx: &Context,
    clinic: &Clinic,
    cp: &ClinicPlatform,
    desired: &[DynamicObject],
    outcome: &Result<(apply::Applied, backup::Gate)>,
    backup: backup::BackupHealth,
) -> status::Observed {
    let ns = &clinic.namespace;
    let sts = |name: String| {
        let live = ctx.caches.get_typed::<StatefulSet>(ns, &name);
        status::WorkloadState::from_stateful_set(name, live.as_ref())
    };
    let deploy = |name: String| {
        let live = ctx.caches.get_typed::<Deployment>(ns, &name);
        status::WorkloadState::from_deployment(name, live.as_ref())
    };
    let policy_kind = ApiResource::erase::<k8s_openapi::api::networking::v1::NetworkPolicy>(&());
    // In place as declared: our hash on it, and verified against the API server at its current
    // version (this pass re-applied any that drifted).
    let network_policies_enforced = desired
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "NetworkPolicy"))
        .all(|wanted| {
            let name = wanted.name_any();
            let Some(live) = ctx.caches.get(&policy_kind, ns, &name) else {
                return false;
            };
            let Ok((_, hash)) = apply::declared(wanted) else {
                return false;
            };
            let key = (policy_kind.kind.clone(), ns.clone(), name);
            live.annotations().get(apply::DESIRED_HASH_ANNOTATION) == Some(&hash)
                && ctx.is_verified(&key, &observe::marker(&policy_kind.kind, &live.metadata))
        });
    let database = sts(build::database::name(clinic));
    let backend = sts(build::backend::name(clinic));
    // A version is reported once every pod of its workload runs it; until then, what was.
    let previous = cp.status.as_ref().and_then(|s| s.versions.clone()).unwrap_or_default();
    let running = backup::running_images(ctx, clinic).unwrap_or_default();
    let rolled = |workload: &status::WorkloadState, image: Option<String>, path: &str| {
        image.filter(|_| workload.is_ready()).map(|i| clinic.version_in_image(&i, path))
    };
    let versions = crate::api::ComponentVersions {
        openmrs: rolled(&backend, running.backend, crate::model::BACKEND_IMAGE_PATH).or(previous.openmrs),
        database: rolled(&database, running.database, crate::model::MARIADB_IMAGE_PATH).or(previous.database),
    };
    // Recorded while the database exists, so that a later switch is seen; a refused switch keeps
    // the record.
    let switch_refused = matches!(outcome, Err(crate::reconcile::error::Error::CredentialsSwitch { .. }));
    let previous_credentials = cp.status.as_ref().and_then(|s| s.database_credentials_secret.clone());
    let database_credentials = if database.exists && !switch_refused {
        Some(clinic.db_credentials_secret())
    } else {
        previous_credentials
    };
    status::Observed {
        generation: cp.metadata.generation,
        database_credentials,
        database,
        backend,
        versions,
        frontend: deploy(build::frontend::name(clinic)),
        gateway: deploy(build::gateway::name(clinic)),
        network_policies_enforced,
        changed: outcome.as_ref().is_ok_and(|(a, _)| a.changed_anything()),
        error: outcome.as_ref().err().map(|e| (e.reason().to_string(), e.to_string())),
        paused: clinic.spec.paused,
        gate: outcome.as_ref().map(|(_, g)| g.clone()).unwrap_or(backup::Gate::Open),
        backup,
        controls: crate::api::Compliance::default(),
        namespace_visible: true,
        monitoring: status::MonitoringState::default(),
        outside: None,
    }
}

fn previous_conditions(cp: &ClinicPlatform) -> &[crate::api::Condition] {
    cp.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
}

fn merge_conditions(status: &mut ClinicPlatformStatus, conditions: Vec<crate::api::Condition>) {
    for c in conditions {
        match status.conditions.iter_mut().find(|e| e.type_ == c.type_) {
            Some(existing) => *existing = c,
            None => status.conditions.push(c),
        }
    }
}

async fn write_status(ctx: &Context, cp: &ClinicPlatform, status: &ClinicPlatformStatus) -> Result<()> {
    let patch = json!({
        "apiVersion": ClinicPlatform::api_version(&()),
        "kind": ClinicPlatform::kind(&()),
        "status": status,
    });
    patch_status(ctx, &cp.namespace().unwrap_or_default(), &cp.name_any(), &patch).await
}

/// The one status write. Untyped, so that the answer for a ClinicPlatform whose spec no longer
/// parses still reads.
async fn patch_status(ctx: &Context, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &ApiResource::erase::<ClinicPlatform>(&()));
    ctx.metrics.record_write("status");
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch))
        .await
        .map_err(Error::Status)?;
    Ok(())
}

/// A ClinicPlatform whose spec does not even deserialize (it bypassed the schema, e.g. written
/// before a schema change): say so in its status and an event, touch nothing else.
async fn report_unreadable(
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action> {
    let meta = &invalid.metadata;
    let (Some(name), Some(namespace)) = (meta.name.clone(), meta.namespace.clone()) else {
        return Ok(Action::await_change());
    };
    if meta.deletion_timestamp.is_some() {
        // Nothing of its spec can be read, so only the default names are known: remove the
        // Schedule it would have in `velero`, then let the object go rather than block deletion.
        if meta.finalizers.iter().flatten().any(|f| f == crate::api::FINALIZER) {
            let schedule = crate::api::OutsideObject {
                kind: "Schedule".into(),
                namespace: "velero".into(),
                name: crate::build::backup::outside_name(&namespace, &name),
            };
            if let Err(e) = outside::remove(ctx, &namespace, &name, &schedule).await {
                warn!(error = %e, "Schedule of an unreadable ClinicPlatform not removed");
            }
            let remaining: Vec<&String> =
                meta.finalizers.iter().flatten().filter(|f| *f != crate::api::FINALIZER).collect();
            let api: Api<DynamicObject> = Api::namespaced_with(
                ctx.client.clone(),
                &namespace,
                &ApiResource::erase::<ClinicPlatform>(&()),
            );
            let patch =
                json!({ "metadata": { "finalizers": remaining, "resourceVersion": meta.resource_version } });
            ctx.metrics.record_write("finalizer");
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|source| {
                Error::Apply { kind: "ClinicPlatform".into(), name: name.clone(), source }
            })?;
        }
        return Ok(Action::await_change());
    }
    let message = format!("spec cannot be read: {}", invalid.error);
    let conditions = status::unreadable("InvalidSpec", &message, meta.generation, &[]);
    let patch = json!({
        "apiVersion": ClinicPlatform::api_version(&()),
        "kind": ClinicPlatform::kind(&()),
        "status": { "observedGeneration": meta.generation, "conditions": conditions },
    });
    patch_status(ctx, &namespace, &name, &patch).await?;
    let reference = ObjectReference {
        api_version: Some(ClinicPlatform::api_version(&()).into()),
        kind: Some(ClinicPlatform::kind(&()).into()),
        name: Some(name),
        namespace: Some(namespace),
        uid: meta.uid.clone(),
        ..Default::default()
    };
    apply::publish(ctx, &reference, &[Notice::warning("InvalidSpec", message)]).await;
    Ok(Action::await_change())
}

/// Maps a child to its ClinicPlatform: by the instance label (present on every child, also on
/// Secrets that carry no owner reference), else by the controller owner reference.
fn owner_of<K: Resource>(child: &K) -> Option<ObjectRef<DeserializeGuard<ClinicPlatform>>> {
    let meta = child.meta();
    let namespace = meta.namespace.as_deref()?;
    let by_label = meta.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/instance")).cloned();
    let by_owner = || {
        meta.owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "ClinicPlatform")
            .map(|o| o.name.clone())
    };
    let name = by_label.or_else(by_owner)?;
    Some(ObjectRef::new(&name).within(namespace))
}

/// Runtime settings of the controller.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Identity in events (the pod name).
    pub instance: Option<String>,
    /// Watch only this namespace (namespaced mode, RBAC through a Role); `None` watches all.
    pub namespace: Option<String>,
    /// The platform team's policy.
    pub policy: Arc<crate::policy::Policy>,
}

/// Watches and reconciles until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
    caches: Caches,
    writers: CacheWriters,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let scope = config.namespace.clone();
    let clinics = match &scope {
        Some(ns) => Api::<DeserializeGuard<ClinicPlatform>>::namespaced(client.clone(), ns),
        None => Api::<DeserializeGuard<ClinicPlatform>>::all(client.clone()),
    };
    let children_config = watcher::Config::default().labels(&observe::managed_selector()).any_semantic();
    // The ClinicPlatforms' own cache without managedFields: those entries (kubectl's, ours for
    // the status) describe every field and would be most of each cached object.
    let (clinics_reader, clinics_writer) = kube::runtime::reflector::store();
    // Full objects are listed in pages (a resourceVersion=0 list is served whole, whatever the
    // fleet's size, and its decoding was the operator's peak memory); metadata-only lists are
    // small and served from the API server's cache.
    let clinic_stream = watcher(clinics, watcher::Config::default().page_size(LIST_PAGE))
        .modify(|cp: &mut DeserializeGuard<ClinicPlatform>| match &mut cp.0 {
            Ok(cp) => cp.metadata.managed_fields = None,
            Err(invalid) => invalid.metadata.managed_fields = None,
        })
        .default_backoff()
        .reflect(clinics_writer)
        .applied_objects();
    let mut controller = Controller::for_stream(clinic_stream, clinics_reader);
    for (ar, writer) in writers.children {
        let api = match &scope {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &ar),
        };
        let types = kube::core::TypeMeta { api_version: ar.api_version.clone(), kind: ar.kind.clone() };
        // Workloads are watched whole (status and images are read from them) and slimmed on
        // arrival; every other kind as metadata only, so that the API server never sends, and
        // the operator never decodes, their bodies (dashboards, nginx configurations...).
        let events: futures::stream::BoxStream<
            'static,
            Result<watcher::Event<DynamicObject>, watcher::Error>,
        > = if matches!(ar.kind.as_str(), "StatefulSet" | "Deployment") {
            watcher(api, watcher::Config::default().labels(&observe::managed_selector()).page_size(LIST_PAGE))
                .modify(move |o| {
                    // List items carry no apiVersion/kind; slimming needs them.
                    o.types = Some(types.clone());
                    observe::slim(o);
                })
                .boxed()
        } else {
            use futures::TryStreamExt;
            // An Api of PartialObjectMeta asks the API server for metadata only.
            let metadata_api = match &scope {
                Some(ns) => Api::<PartialObjectMeta<DynamicObject>>::namespaced_with(client.clone(), ns, &ar),
                None => Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &ar),
            };
            watcher(metadata_api, children_config.clone())
                .map_ok(move |event| observe::metadata_event(event, &types))
                .boxed()
        };
        let stream = events.default_backoff().reflect(writer).touched_objects();
        controller = controller.watches_stream_with(stream, |o: DynamicObject| owner_of(&o), ar);
    }
    let secrets_api = match &scope {
        Some(ns) => Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
        None => Api::<PartialObjectMeta<Secret>>::all(client.clone()),
    };
    let secrets = watcher(secrets_api, children_config)
        .modify(|o| o.managed_fields_mut().clear())
        .default_backoff()
        .reflect(writers.secrets)
        .touched_objects();
    controller = controller.watches_stream(secrets, |o: PartialObjectMeta<Secret>| owner_of(&o));
    // Namespace labels (Pod Security) are part of the secure state: a change re-reconciles
    // every clinic of that namespace. A namespaced operator cannot see namespaces (they are
    // cluster-scoped): its namespace cache stays empty and the platform team labels them.
    let mut namespace_writer = writers.namespaces;
    if scope.is_some() {
        use kube::runtime::watcher::Event;
        namespace_writer.apply_watcher_event(&Event::Init);
        namespace_writer.apply_watcher_event(&Event::InitDone);
        std::mem::forget(namespace_writer);
    } else {
        let clinics_store = controller.store();
        let namespaces = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .modify(|o| o.managed_fields_mut().clear())
        .default_backoff()
        .reflect(namespace_writer)
        .touched_objects();
        controller = controller.watches_stream(namespaces, move |ns: PartialObjectMeta<Namespace>| {
            let name = ns.name_any();
            clinics_store
                .state()
                .into_iter()
                .filter(|cp| cp.meta().namespace.as_deref() == Some(name.as_str()))
                .map(|cp| ObjectRef::from_obj(cp.as_ref()))
                .collect::<Vec<_>>()
        });
    }

    {
        let caches = caches.clone();
        tokio::spawn(async move {
            caches.wait_ready().await;
            info!("watches synced");
        });
    }
    let mut context = Context::new(client, caches, metrics, config.instance).with_policy(config.policy);
    context.cluster_scope = scope.is_none();
    let ctx = Arc::new(context);
    controller
        .with_config(ControllerConfig::default().concurrency(config.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        })
        .await;
    info!("controller stopped");
}
