//! Publish: the status (written only when something other than a timestamp changed, and
//! coalesced while only the progress of a convergence moves), the pass's events and the
//! clinic's metrics.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::context::Context;
use super::converge::Outcome;
use super::error::{Error, Result};
use super::events::{Notice, publish};
use super::finalizer;
use super::gate::Gate;
use super::status::{self, SECURITY_ENFORCED};
use crate::api::{
    CONFIRM_DELETION_ANNOTATION, ClinicPlatform, ClinicPlatformStatus, DeletionPolicy, FIELD_MANAGER,
};
use crate::metrics::ClinicTimes;
use crate::model::Clinic;

/// What publishing did with the status.
pub enum Published {
    /// Written, unchanged, or not needed.
    Done,
    /// Held back to coalesce with later progress: the pass comes back after this long.
    Coalesced(Duration),
}

/// Writes `new_status` if it differs (now, or after [`super::memory::STATUS_COALESCE`] when only
/// progress moved), with the events of the pass; on a status change also the events the change
/// itself calls for (the error, a blocked gate, an unconfirmed deletion, a Pod Security opt-out).
pub async fn status_and_events(
    ctx: &Context,
    cp: &ClinicPlatform,
    clinic: &Clinic,
    new_status: &ClinicPlatformStatus,
    outcome: &Outcome,
    mut notices: Vec<Notice>,
) -> Result<Published> {
    let reference = cp.object_ref(&());
    clinic_metrics(ctx, clinic, new_status);
    let key = (clinic.namespace.clone(), clinic.name.clone());
    let changed = status::differs(cp.status.as_ref(), new_status);
    let coalesce =
        status::may_coalesce(cp.status.as_ref(), new_status).then(|| ctx.memory.status_wait(&key)).flatten();
    if let Some(wait) = coalesce.filter(|_| changed) {
        // Written soon by the requeue (or an earlier event), with the counts of then.
        publish(ctx, &reference, &notices).await;
        return Ok(Published::Coalesced(wait));
    }
    if changed {
        notices.extend(status_change_notices(cp, clinic, new_status, outcome));
        write_status(ctx, cp, new_status).await?;
        ctx.memory.status_was_written(&key);
    }
    publish(ctx, &reference, &notices).await;
    Ok(Published::Done)
}

/// The clinic's gauges (ready, last backup, certificates' expiry) as `status` says.
pub fn clinic_metrics(ctx: &Context, clinic: &Clinic, status: &ClinicPlatformStatus) {
    let ready = status.conditions.iter().any(|c| c.type_ == status::READY && c.status == "True");
    let expiry = |certificate: &Option<crate::api::CertificateStatus>| {
        certificate
            .as_ref()
            .and_then(|c| c.not_after.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second() as f64)
    };
    let times = ClinicTimes {
        last_backup: status.last_backup_time.as_ref().map(|t| t.0.as_millisecond() as f64 / 1000.0),
        database_certificate_expiry: expiry(&status.database_certificate),
        backend_certificate_expiry: expiry(&status.backend_certificate),
    };
    ctx.metrics.observe_clinic(&clinic.namespace, &clinic.name, ready, times);
}

/// Events a status change calls for, once (not at every pass while it lasts).
fn status_change_notices(
    cp: &ClinicPlatform,
    clinic: &Clinic,
    new_status: &ClinicPlatformStatus,
    outcome: &Outcome,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    match outcome {
        Err(e) => notices.push(Notice::warning(e.reason(), e.to_string())),
        Ok((_, Gate::Blocked { reason, message })) => notices.push(Notice::warning(reason, message.clone())),
        Ok(_) => {}
    }
    notices.extend(deletion_not_confirmed(cp, clinic, new_status));
    let opted_out = |s: &ClinicPlatformStatus| {
        s.conditions.iter().any(|c| c.type_ == SECURITY_ENFORCED && c.reason == "PodSecurityOptOut")
    };
    if opted_out(new_status) && !cp.status.as_ref().is_some_and(opted_out) {
        notices.push(Notice::warning(
            "PodSecurityNotEnforced",
            "spec.security.enforcePodSecurity is false: the namespace is not held to Pod Security restricted"
                .into(),
        ));
    }
    notices
}

/// The note that a `deletionPolicy: Delete` is not in force yet, when the spec or the outcome of
/// a deletion just changed.
fn deletion_not_confirmed(
    cp: &ClinicPlatform,
    clinic: &Clinic,
    new: &ClinicPlatformStatus,
) -> Option<Notice> {
    let old = cp.status.as_ref();
    let spec_changed = old.and_then(|s| s.observed_generation) != cp.metadata.generation;
    let outcome_changed = old.and_then(|s| s.on_deletion.as_ref()) != new.on_deletion.as_ref();
    let unconfirmed = clinic.spec.deletion_policy == DeletionPolicy::Delete && !clinic.deletion_confirmed;
    (unconfirmed && (spec_changed || outcome_changed)).then(|| {
        let annotation = CONFIRM_DELETION_ANNOTATION;
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

/// A spec refused by validation or the platform's policy: `Degraded` says why (written, with a
/// Warning event, only when that changes); nothing else is touched. Returns the error.
pub async fn rejected(
    ctx: &Context,
    cp: &ClinicPlatform,
    error: Error,
) -> Result<kube::runtime::controller::Action> {
    let previous = cp.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = status::unreadable(error.reason(), &error.to_string(), cp.metadata.generation, previous);
    let mut new_status = cp.status.clone().unwrap_or_default();
    new_status.observed_generation = cp.metadata.generation;
    status::merge_conditions(&mut new_status, conditions);
    if status::differs(cp.status.as_ref(), &new_status) {
        write_status(ctx, cp, &new_status).await?;
        publish(ctx, &cp.object_ref(&()), &[Notice::warning(error.reason(), error.to_string())]).await;
    }
    info!(error = %error, "spec rejected; nothing applied");
    Err(error)
}

/// A ClinicPlatform whose spec does not even deserialize (it bypassed the schema, e.g. written
/// before a schema change): say so in its status and an event, touch nothing else; deleted, it
/// is let go.
pub async fn unreadable(invalid: &InvalidObject, ctx: &Context) -> Result<kube::runtime::controller::Action> {
    use kube::runtime::controller::Action;
    let meta = &invalid.metadata;
    let (Some(name), Some(namespace)) = (meta.name.clone(), meta.namespace.clone()) else {
        return Ok(Action::await_change());
    };
    if meta.deletion_timestamp.is_some() {
        finalizer::release_unreadable(ctx, meta, &namespace, &name).await?;
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
    publish(ctx, &reference, &[Notice::warning("InvalidSpec", message)]).await;
    Ok(Action::await_change())
}

pub async fn write_status(ctx: &Context, cp: &ClinicPlatform, status: &ClinicPlatformStatus) -> Result<()> {
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
