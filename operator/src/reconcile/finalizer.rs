//! The clean-up finalizer: added before anything is written outside the clinic's namespace
//! (which no owner reference can reach), and released once that is removed when the clinic is
//! deleted. Same-namespace children go with the garbage collector.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::context::Context;
use super::error::{Error, Result};
use super::events::{Notice, publish};
use super::uncached::outside;
use super::{publish as status_write, status};
use crate::api::{ABANDON_CLEANUP_ANNOTATION, ClinicPlatform, FINALIZER, OutsideObject};
use crate::desired::backup::{self, backup_resource};
use crate::model::{self, Clinic};

/// Adds the clean-up finalizer when the clinic is about to have objects outside its namespace.
/// One finalizer patch per pass, before anything is written there: a second patch from the
/// same (then stale) object would be refused as a conflict.
pub async fn ensure(ctx: &Context, cp: &ClinicPlatform, needed: bool) -> Result<()> {
    if !needed || cp.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = cp.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    patch_finalizers(ctx, &cp.metadata, finalizers).await
}

/// A deleted clinic: its clean-up (when the finalizer is still there), then everything this
/// process remembers of it is forgotten.
pub async fn on_deletion(ctx: &Context, cp: &ClinicPlatform) -> Result<Action> {
    if cp.finalizers().iter().any(|f| f == FINALIZER) {
        release(ctx, cp).await?;
    }
    let key = (cp.namespace().unwrap_or_default(), cp.name_any());
    ctx.metrics.forget_clinic(&key.0, &key.1);
    ctx.memory.forget_clinic(&key);
    ctx.ledger.forget(&key);
    ctx.probes.forget(&key.0, &key.1);
    Ok(Action::await_change())
}

/// A deleted ClinicPlatform whose spec cannot be read: only the default names are known, so
/// the Schedule it would have in `velero` is removed, and the object is let go rather than
/// blocking its deletion.
pub async fn release_unreadable(ctx: &Context, meta: &ObjectMeta, namespace: &str, name: &str) -> Result<()> {
    if !meta.finalizers.iter().flatten().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let schedule = OutsideObject {
        kind: "Schedule".into(),
        namespace: "velero".into(),
        name: backup::outside_name(namespace, name),
    };
    if let Err(e) = outside::remove(ctx, namespace, name, &schedule).await {
        warn!(error = %e, "Schedule of an unreadable ClinicPlatform not removed");
    }
    let remaining = meta.finalizers.iter().flatten().filter(|f| *f != FINALIZER).cloned().collect();
    patch_finalizers(ctx, meta, remaining).await
}

/// Sets the finalizers of the ClinicPlatform `meta` describes, only if it is still at that
/// version (resourceVersion makes the merge patch conditional: no other finalizer is lost).
async fn patch_finalizers(ctx: &Context, meta: &ObjectMeta, finalizers: Vec<String>) -> Result<()> {
    let name = meta.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        meta.namespace.as_deref().unwrap_or_default(),
        &ApiResource::erase::<ClinicPlatform>(&()),
    );
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": meta.resource_version } });
    ctx.metrics.record_write("finalizer");
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Finalizer { name: name.clone(), source })?;
    Ok(())
}

/// Clean-up, then the finalizer released. A clean-up that fails keeps the finalizer and is
/// retried with backoff; meanwhile `CleanupBlocked` says why and how to let the clinic go
/// without it (the abandon annotation), and a metric feeds the alert (its series goes with
/// `forget_clinic` once the clinic is released).
async fn release(ctx: &Context, cp: &ClinicPlatform) -> Result<()> {
    let reference = cp.object_ref(&());
    if cp.annotations().get(ABANDON_CLEANUP_ANNOTATION).is_some_and(|v| v == "true") {
        return abandon(ctx, cp, &reference).await;
    }
    let clinic = model::unchecked(cp);
    match cleanup(ctx, cp, &clinic).await {
        Ok(notices) => {
            publish(ctx, &reference, &notices).await;
            Ok(())
        }
        Err(error) => {
            ctx.metrics.cleanup_blocked(&cp.namespace().unwrap_or_default(), &cp.name_any());
            let previous = cp.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
            let blocked = status::cleanup_blocked(&error, cp.metadata.generation, previous);
            let mut new_status = cp.status.clone().unwrap_or_default();
            status::merge_conditions(&mut new_status, vec![blocked]);
            if status::differs(cp.status.as_ref(), &new_status) {
                // The object may be gone already (another replica released it): the error that
                // matters is the clean-up's.
                if let Err(e) = status_write::write_status(ctx, cp, &new_status).await {
                    debug!(error = %e, "CleanupBlocked not written");
                }
                publish(ctx, &reference, &[Notice::warning("CleanupBlocked", error.to_string())]).await;
            }
            Err(error)
        }
    }
}

/// The finalizer released without clean-up, on request; the event lists what is left.
async fn abandon(
    ctx: &Context,
    cp: &ClinicPlatform,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<()> {
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
    release_finalizer(ctx, cp).await?;
    let message = format!(
        "clean-up abandoned ({ABANDON_CLEANUP_ANNOTATION} is true): the finalizer was released without removing what the clinic has outside its namespace; remove it by hand: {left}"
    );
    publish(ctx, reference, &[Notice::warning("CleanupAbandoned", message)]).await;
    Ok(())
}

/// On deletion: remove what the clinic has outside its namespace (the Schedule, a dashboard
/// elsewhere); when a confirmed `Delete` asks for it (`spec.backup.deleteWithClinic`), set the
/// clinic's backups to expire after the platform's delay, so that Velero's own garbage
/// collection deletes them then (and a mistake can be undone until then); release the
/// finalizer. Same-namespace children go with the garbage collector. Returns what is worth an
/// event.
async fn cleanup(ctx: &Context, cp: &ClinicPlatform, clinic: &Clinic) -> Result<Vec<Notice>> {
    // An unanswered discovery keeps the finalizer: the reconcile fails and is retried.
    let velero = ctx.discovery.velero_or_error().await?;
    let recorded = cp.status.as_ref().and_then(|s| s.outside_objects.as_deref());
    outside::remove_all(ctx, clinic, recorded, velero).await?;
    let mut notices = Vec::new();
    if velero && clinic.backups_expire_on_deletion() {
        let delay = ctx.policy.backup_deletion_delay();
        let due = Timestamp::from_second(Timestamp::now().as_second().saturating_add(delay.as_secs() as i64))
            .unwrap_or(Timestamp::MAX);
        let expiring = expire_backups(ctx, clinic, due).await?;
        if expiring > 0 {
            info!(count = expiring, %due, "the clinic's backups expire");
            notices.push(Notice::warning(
                "BackupsExpiring",
                format!(
                    "deleted under a confirmed deletionPolicy Delete with spec.backup.deleteWithClinic: {expiring} Velero backups of the clinic expire by {due} and Velero deletes them then; to keep one, set a later status.expiration on it before that time (docs/backup.md#deletion)"
                ),
            ));
        }
    } else if !velero {
        warn!("Velero not installed at deletion: no Schedule to remove");
    }
    release_finalizer(ctx, cp).await?;
    Ok(notices)
}

/// Lets the ClinicPlatform go: the clean-up finalizer is removed, any other kept.
async fn release_finalizer(ctx: &Context, cp: &ClinicPlatform) -> Result<()> {
    let remaining: Vec<String> = cp.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    patch_finalizers(ctx, &cp.metadata, remaining).await
}

/// Brings the expiration of each of the clinic's backups forward to `due` (never later than it
/// was). Velero's Backups have no status subresource (since Velero 1.9), so a patch of the
/// object sets it; should a later Velero add one, the status subresource is patched instead.
async fn expire_backups(ctx: &Context, clinic: &Clinic, due: Timestamp) -> Result<usize> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &clinic.spec.backup.velero_namespace, &backup_resource());
    let list = api
        .list(&ListParams::default().labels(&backup::backups_selector(clinic)))
        .await
        .map_err(|source| Error::Read { what: "Velero backups".into(), source })?;
    let expiration =
        |o: &DynamicObject| o.data["status"]["expiration"].as_str().and_then(|t| t.parse::<Timestamp>().ok());
    let patch = json!({ "status": { "expiration": due.to_string() } });
    let mut expiring = 0;
    for b in &list.items {
        expiring += 1;
        if expiration(b).is_some_and(|t| t <= due) {
            continue;
        }
        let name = b.name_any();
        let failed = |source| Error::Patch { kind: "Backup".into(), name: name.clone(), source };
        ctx.metrics.record_write("merge");
        let patched =
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(failed)?;
        if expiration(&patched) != Some(due) {
            ctx.metrics.record_write("merge");
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(failed)?;
        }
    }
    Ok(expiring)
}
