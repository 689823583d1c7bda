//! Objects outside the clinic's namespace: Velero's Schedule in Velero's namespace and a
//! dashboard in Grafana's. No owner reference can point at them, so their owner is written in
//! their labels (the clinic's namespace and name) and checked before every write and delete: a
//! name held by anything else is a clash, reported and left alone, never taken over. Each
//! object written is recorded in `status.outsideObjects`; one no longer wanted (backups
//! disabled, a namespace changed) is removed on the next pass, and the finalizer removes them
//! all.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};

use super::write;
use crate::api::OutsideObject;
use crate::desired::{self, backup::CLINIC_NAMESPACE_LABEL};
use crate::model::{Clinic, MANAGED_BY};
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Problem, Result};
use crate::reconcile::events::Notice;
use crate::reconcile::memory::ChildKey;

/// What one pass over the clinic's outside objects did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The first error about the Schedule (Velero), for `BackupReady`.
    pub schedule_error: Option<Problem>,
    /// The first error about the dashboard, for `MonitoringReady`.
    pub dashboard_error: Option<Problem>,
    /// What is now outside the namespace on the clinic's behalf: for `status.outsideObjects`.
    pub record: Vec<OutsideObject>,
    /// Clashes, for Warning events.
    pub notices: Vec<Notice>,
}

/// Who holds an object, by its labels.
fn holder(labels: &BTreeMap<String, String>) -> Option<String> {
    if labels.get("app.kubernetes.io/managed-by").map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    match (labels.get(CLINIC_NAMESPACE_LABEL), labels.get("app.kubernetes.io/instance")) {
        (Some(namespace), Some(name)) => Some(format!("{namespace}/{name}")),
        _ => None,
    }
}

/// Whether the labels say the object is the clinic's (by its namespace and name).
fn is_ours(labels: &BTreeMap<String, String>, namespace: &str, name: &str) -> bool {
    holder(labels).as_deref() == Some(format!("{namespace}/{name}").as_str())
}

fn resource_of(kind: &str) -> ApiResource {
    match kind {
        "Schedule" => desired::backup::schedule_resource(),
        _ => ApiResource::erase::<ConfigMap>(&()),
    }
}

pub(crate) fn describe(object: &OutsideObject) -> String {
    format!("{} {}/{}", object.kind, object.namespace, object.name)
}

/// The objects the clinic wants outside its namespace now. The Schedule only when Velero's API
/// is served (`velero`).
pub fn wanted(clinic: &Clinic, velero: bool) -> Vec<(OutsideObject, DynamicObject)> {
    let schedule = desired::backup::schedule(clinic).filter(|_| velero);
    let dashboard = desired::monitoring::external_dashboard(clinic).map(|d| desired::to_dynamic(&d));
    schedule
        .into_iter()
        .chain(dashboard)
        .map(|object| {
            let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            let key = OutsideObject {
                kind,
                namespace: object.namespace().unwrap_or_default(),
                name: object.name_any(),
            };
            (key, object)
        })
        .collect()
}

/// Names earlier builds gave the same objects (before the names carried a hash): removed, when
/// they carry this clinic's labels, the first time a clinic without a record is looked at.
fn legacy(clinic: &Clinic) -> Vec<OutsideObject> {
    let schedule = OutsideObject {
        kind: "Schedule".into(),
        namespace: clinic.spec.backup.velero_namespace.clone(),
        name: desired::backup::legacy_base_name(clinic),
    };
    let dashboard_namespace = desired::monitoring::dashboard_namespace(clinic);
    let dashboard = (dashboard_namespace != clinic.namespace).then(|| OutsideObject {
        kind: "ConfigMap".into(),
        namespace: dashboard_namespace,
        name: format!("{}-{}-dashboard", clinic.namespace, clinic.name),
    });
    std::iter::once(schedule).chain(dashboard).collect()
}

/// Keeps the first error about each kind.
fn note_error(outcome: &mut Outcome, kind: &str, error: &Error) {
    let slot = if kind == "Schedule" { &mut outcome.schedule_error } else { &mut outcome.dashboard_error };
    slot.get_or_insert_with(|| Problem::from(error));
}

/// Puts every `wanted` object (from [`wanted`]) in place and removes the recorded ones no longer
/// wanted.
pub async fn sync(
    ctx: &Context,
    clinic: &Clinic,
    wanted: &[(OutsideObject, DynamicObject)],
    recorded: Option<&[OutsideObject]>,
    velero: bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    for (key, desired) in wanted {
        match put(ctx, clinic, key, desired).await {
            Ok(()) => outcome.record.push(key.clone()),
            Err(error @ Error::NameClash { .. }) => {
                outcome.notices.push(Notice::warning(error.reason(), error.to_string()));
                note_error(&mut outcome, &key.kind, &error);
            }
            Err(error) => {
                // It may exist already: keep it on record so that it is found again.
                outcome.record.push(key.clone());
                note_error(&mut outcome, &key.kind, &error);
            }
        }
    }
    let (previous, guessed) = match recorded {
        Some(recorded) => (recorded.to_vec(), false),
        None => (legacy(clinic), true),
    };
    for old in previous {
        if wanted.iter().any(|(key, _)| *key == old) || outcome.record.contains(&old) {
            continue;
        }
        let resource = resource_of(&old.kind);
        if guessed
            && ctx.caches.watches(&resource)
            && ctx.caches.watched(&resource, &old.namespace, &old.name) == Some(None)
        {
            // An earlier build's name that a cache in step does not hold: nothing to remove.
            continue;
        }
        if old.kind == "Schedule" && !velero {
            // Velero's API is not served: nothing can be asked about it now (and without its
            // CRD no Schedule of an earlier build can exist).
            if !guessed {
                outcome.record.push(old);
            }
            continue;
        }
        if let Err(error) = remove(ctx, &clinic.namespace, &clinic.name, &old).await {
            note_error(&mut outcome, &old.kind, &error);
            outcome.record.push(old);
        }
    }
    outcome.record.sort();
    outcome
}

/// Removes every outside object of the clinic (the finalizer's work): the wanted, the recorded
/// and the legacy names, each only if it is the clinic's.
pub async fn remove_all(
    ctx: &Context,
    clinic: &Clinic,
    recorded: Option<&[OutsideObject]>,
    velero: bool,
) -> Result<()> {
    let mut all: Vec<OutsideObject> = wanted(clinic, velero).into_iter().map(|(key, _)| key).collect();
    all.extend(recorded.map(<[OutsideObject]>::to_vec).unwrap_or_default());
    all.extend(legacy(clinic));
    all.sort();
    all.dedup();
    for object in all.iter().filter(|o| velero || o.kind != "Schedule") {
        remove(ctx, &clinic.namespace, &clinic.name, object).await?;
    }
    Ok(())
}

/// The key [`crate::reconcile::memory::Memory`] keeps a verified outside object under: in the
/// clinic's namespace, so that it goes with the clinic.
pub fn memory_key(clinic: &Clinic, key: &OutsideObject) -> ChildKey {
    (key.kind.clone(), clinic.namespace.clone(), key.name.clone())
}

/// Creates the object, or brings it back to `desired`, if it is free or the clinic's. A watched
/// one (the Schedule) whose cached record shows it as last verified is not read.
async fn put(ctx: &Context, clinic: &Clinic, key: &OutsideObject, desired: &DynamicObject) -> Result<()> {
    let resource = resource_of(&key.kind);
    let verified_as = memory_key(clinic, key);
    if ctx.caches.watches(&resource)
        && let Some(Some(record)) = ctx.caches.watched(&resource, &key.namespace, &key.name)
        && write::vouched(ctx, &verified_as, desired, &record)?
    {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &key.namespace, &resource);
    let live = write::read(&api, &describe(key), &key.name).await?;
    if let Some(live) = &live
        && !is_ours(live.labels(), &clinic.namespace, &clinic.name)
    {
        ctx.memory.forget_verified(&verified_as);
        return Err(Error::NameClash { object: describe(key), holder: holder(live.labels()) });
    }
    let after = write::put(ctx, &api, &key.kind, desired, live).await?;
    if ctx.caches.watches(&resource) {
        ctx.memory.set_verified(verified_as, crate::reconcile::caches::marker(&key.kind, &after.metadata));
    }
    Ok(())
}

/// Deletes the object if it is the clinic `<namespace>/<name>`'s; gone or someone else's, it is
/// left as it is.
pub async fn remove(ctx: &Context, namespace: &str, name: &str, object: &OutsideObject) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &object.namespace, &resource_of(&object.kind));
    let shown = format!("{}/{}", object.namespace, object.name);
    write::remove_if(ctx, &api, (&object.kind, &object.name, &shown), |labels| {
        is_ours(labels, namespace, name)
    })
    .await
}
