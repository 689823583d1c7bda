//! The children in the clinic's namespace: each skipped when its cached metadata shows it
//! verified, else read, compared and written by server-side apply with one field manager only
//! when it differs; children the clinic owns and no longer wants are pruned.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::api::FIELD_MANAGER;
use crate::desired::hash_of;
use crate::model::Clinic;
use crate::reconcile::caches::{child_kinds, marker};
use crate::reconcile::compare::{converged, first_difference};
use crate::reconcile::context::Context;
use crate::reconcile::error::{Error, Result};
use crate::reconcile::events::Notice;
use crate::reconcile::ledger::digest;
use crate::reconcile::memory::{ChildKey, ClinicKey};

/// Annotation holding the hash of what the operator last declared for a child. Equal hash but
/// different content means someone else changed the object: drift, not a spec change.
pub const DESIRED_HASH_ANNOTATION: &str = "clinic.audioprothese.fr/desired-hash";

/// What one apply pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub created: usize,
    pub updated: usize,
    pub drift_corrected: usize,
    pub pruned: usize,
}

impl Applied {
    pub fn changed_anything(&self) -> bool {
        self.created + self.updated + self.drift_corrected + self.pruned > 0
    }
}

/// A child of one clinic by kind and name (its namespace is the clinic's).
type KindAndName = (String, String);

fn key(object: &DynamicObject) -> KindAndName {
    let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
    (kind, object.name_any())
}

fn api_resource(object: &DynamicObject) -> Option<ApiResource> {
    let types = object.types.as_ref()?;
    child_kinds().into_iter().find(|ar| ar.kind == types.kind && ar.api_version == types.api_version)
}

/// StatefulSet volume claim templates cannot change once created. Keep the live ones and say so,
/// rather than have every apply refused.
fn keep_immutable_fields(desired: &mut Value, live: &DynamicObject, notices: &mut Vec<Notice>) {
    let Some(live_templates) = live.data.get("spec").and_then(|s| s.get("volumeClaimTemplates")) else {
        return;
    };
    let Some(spec) = desired.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(wanted) = spec.get("volumeClaimTemplates") else {
        return;
    };
    if converged(&json!({ "kind": "", "t": wanted }), &json!({ "kind": "", "t": live_templates })) {
        return;
    }
    notices.push(Notice::warning(
        "ImmutableField",
        format!(
            "StatefulSet {}: volume claims cannot change after creation (storage size or class); the existing claims are kept - expand the PersistentVolumeClaim instead",
            live.name_any()
        ),
    ));
    let mut kept = live_templates.clone();
    if let Some(list) = kept.as_array_mut() {
        for template in list {
            if let Some(t) = template.as_object_mut() {
                t.remove("status");
            }
        }
    }
    spec.insert("volumeClaimTemplates".into(), kept);
}

/// A StatefulSet whose governing Service (`spec.serviceName`, which cannot change in place) is
/// not the declared one: the notice that says it is being moved.
fn governed_elsewhere(desired: &Value, live: &DynamicObject) -> Option<Notice> {
    let wanted = desired.pointer("/spec/serviceName").and_then(Value::as_str)?;
    let current = live.data.pointer("/spec/serviceName").and_then(Value::as_str)?;
    (wanted != current).then(|| {
        Notice::normal(
            "GoverningServiceMoved",
            format!(
                "StatefulSet {}: governed by Service {wanted} instead of {current}; serviceName cannot change in place, so the StatefulSet is made again and adopts its running pods (they are not restarted)",
                live.name_any()
            ),
        )
    })
}

/// Deletes a StatefulSet leaving its pods and claims in place (`Orphan`), for one with the same
/// selector to adopt them, and waits a little for it to be gone. True when it is.
async fn replace_keeping_pods(
    ctx: &Context,
    api: &Api<DynamicObject>,
    name: &str,
    uid: Option<String>,
) -> Result<bool> {
    use kube::api::{DeleteParams, Preconditions};
    ctx.metrics.record_write("delete");
    let params = DeleteParams {
        // Only the object that was read: one made again meanwhile is not touched.
        preconditions: Some(Preconditions { uid, resource_version: None }),
        ..DeleteParams::orphan()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        // The uid precondition failed: another StatefulSet stands there now, which the next pass
        // reads and compares (waiting for it to go would be waiting for nothing).
        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(false),
        Err(source) => {
            return Err(Error::Replace { kind: "StatefulSet".into(), name: name.to_string(), source });
        }
    }
    // The garbage collector removes the orphan finalizer once the pods are let go: well under a
    // second on a healthy control plane.
    for _ in 0..20 {
        match api.get_metadata_opt(name).await {
            Ok(None) => return Ok(true),
            Ok(Some(_)) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            Err(source) => return Err(Error::Read { what: format!("StatefulSet {name}"), source }),
        }
    }
    Ok(false)
}

/// The body the operator applies for a desired child: the object plus the annotation with the
/// hash of what was declared. Returns the body and the hash.
pub fn declared(object: &DynamicObject) -> Result<(Value, String)> {
    let what =
        || format!("{} {}", object.types.as_ref().map(|t| t.kind.as_str()).unwrap_or(""), object.name_any());
    let mut value =
        serde_json::to_value(object).map_err(|source| Error::Serialize { what: what(), source })?;
    let hash = hash_of(&value);
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(DESIRED_HASH_ANNOTATION.into(), Value::String(hash.clone()));
        }
    }
    Ok((value, hash))
}

/// Applies every desired child that is not already converged.
pub async fn apply_children(
    ctx: &Context,
    clinic: &Clinic,
    desired: &[DynamicObject],
    notices: &mut Vec<Notice>,
) -> Result<Applied> {
    use futures::StreamExt;
    let (clinic_key, children, child_keys) = cached_children(clinic, desired);
    restore_verified(ctx, &clinic_key, &children, &child_keys);
    // Children are independent objects: several are read or written at once, which divides a
    // first reconcile's latency; results are taken in declaration order (stable events).
    // The futures are made before the stream (not by a closure inside it): a stream of
    // borrowing closures trips the controller's higher-ranked `Send` bound.
    let pending: Vec<_> =
        children.into_iter().map(|(object, ar)| apply_child(ctx, clinic, object, ar)).collect();
    let outcomes: Vec<Result<ChildOutcome>> =
        futures::stream::iter(pending).buffered(APPLY_PARALLELISM).collect().await;
    let mut applied = Applied::default();
    // One refused child must not keep the others from being put right: go on, report the first.
    let mut first_error = None;
    for outcome in outcomes {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        notices.extend(outcome.notices);
        let ChildOutcome { ar, name, change, .. } = outcome;
        match change {
            Change::None => {}
            Change::Created => {
                applied.created += 1;
                debug!(kind = %ar.kind, %name, "created");
            }
            Change::Updated => {
                applied.updated += 1;
                debug!(kind = %ar.kind, %name, "updated");
            }
            Change::DriftCorrected(_) | Change::Deleted => {
                applied.drift_corrected += 1;
                ctx.metrics.record_drift(&ar.kind);
                let message = match &change {
                    Change::DriftCorrected(field) => {
                        warn!(kind = %ar.kind, %name, %field, "reverted a change made outside the operator");
                        format!("{} {name}: {field} was changed outside the operator and put back", ar.kind)
                    }
                    _ => {
                        warn!(kind = %ar.kind, %name, "re-created a child deleted outside the operator");
                        format!("{} {name} was deleted outside the operator and made again", ar.kind)
                    }
                };
                notices.push(Notice::warning("DriftCorrected", message).about(
                    k8s_openapi::api::core::v1::ObjectReference {
                        api_version: Some(ar.api_version.clone()),
                        kind: Some(ar.kind.clone()),
                        name: Some(name.clone()),
                        namespace: Some(clinic.namespace.clone()),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            record_verified(ctx, &clinic_key, &child_keys);
            Ok(applied)
        }
    }
}

/// The desired children the caches hold (all but the Secrets), with their keys.
type CachedChildren<'a> = (ClinicKey, Vec<(&'a DynamicObject, ApiResource)>, Vec<ChildKey>);

fn cached_children<'a>(clinic: &Clinic, desired: &'a [DynamicObject]) -> CachedChildren<'a> {
    let children: Vec<(&DynamicObject, ApiResource)> = desired
        .iter()
        .filter_map(|o| api_resource(o).map(|ar| (o, ar)))
        .filter(|(_, ar)| ar.kind != "Secret")
        .collect();
    let keys =
        children.iter().map(|(o, ar)| (ar.kind.clone(), clinic.namespace.clone(), o.name_any())).collect();
    ((clinic.namespace.clone(), clinic.name.clone()), children, keys)
}

/// For a restarted operator's first pass over a clinic: whether the ledger vouches for every
/// desired child as it is cached now (see [`restore_verified`]; they are then remembered as
/// verified). False once this process remembers any of them.
pub fn vouched_for_by_ledger(ctx: &Context, clinic: &Clinic, desired: &[DynamicObject]) -> bool {
    let (clinic_key, children, child_keys) = cached_children(clinic, desired);
    restore_verified(ctx, &clinic_key, &children, &child_keys)
}

/// After a restart (this process remembers none of the clinic's children): children whose
/// cached markers are those of the last time all were verified ([`super::super::ledger`]) are
/// known verified without a read. Returns whether they were.
fn restore_verified(
    ctx: &Context,
    clinic: &ClinicKey,
    children: &[(&DynamicObject, ApiResource)],
    keys: &[ChildKey],
) -> bool {
    // Checked first: every pass of a clinic this process knows stops here, at its first child.
    if keys.iter().any(|key| ctx.memory.remembers(key)) {
        return false;
    }
    let Some(recorded) = ctx.ledger.digest_of(clinic) else {
        return false;
    };
    let mut cached = Vec::with_capacity(keys.len());
    for ((_, ar), key) in children.iter().zip(keys) {
        let Some(record) = ctx.caches.get(ar, &key.1, &key.2) else {
            return false;
        };
        cached.push((key, record.marker));
    }
    let unchanged =
        digest(cached.iter().map(|((kind, _, name), marker)| (kind.as_str(), name.as_str(), *marker)))
            == recorded;
    if unchanged {
        debug!(clinic = %clinic.1, children = cached.len(), "children unchanged since their last verification");
        for (key, marker) in cached {
            ctx.memory.set_verified(key.clone(), marker);
        }
    }
    unchanged
}

/// Every child verified: their markers go to the ledger.
fn record_verified(ctx: &Context, clinic: &ClinicKey, children: &[ChildKey]) {
    let markers: Option<Vec<_>> = children
        .iter()
        .map(|key| ctx.memory.verified_marker(key).map(|m| (key.0.as_str(), key.2.as_str(), m)))
        .collect();
    ctx.ledger.record(clinic, markers.map(digest));
}

/// Children of one clinic read or written at once.
const APPLY_PARALLELISM: usize = 6;

/// What happened to one child.
enum Change {
    None,
    Created,
    Updated,
    /// Someone else changed it; the first differing field.
    DriftCorrected(String),
    /// Someone else deleted it; it was made again.
    Deleted,
}

struct ChildOutcome {
    ar: ApiResource,
    name: String,
    change: Change,
    notices: Vec<Notice>,
}

/// Brings one child to its declaration: skipped when its metadata shows it verified and
/// unchanged, else read, compared, and applied when it differs.
async fn apply_child(
    ctx: &Context,
    clinic: &Clinic,
    object: &DynamicObject,
    ar: ApiResource,
) -> Result<ChildOutcome> {
    let name = object.name_any();
    let (mut value, hash) = declared(object)?;
    let mut outcome =
        ChildOutcome { ar: ar.clone(), name: name.clone(), change: Change::None, notices: Vec::new() };
    let key = (ar.kind.clone(), clinic.namespace.clone(), name.clone());
    let cached = ctx.caches.get(&ar, &clinic.namespace, &name);
    // Written or verified by this process before: if it is gone now, someone deleted it.
    let remembered = ctx.memory.remembers(&key);
    let mut live_hash = None;
    if let Some(cached) = &cached {
        live_hash = cached.declared_hash.as_deref().map(String::from);
        if live_hash.as_ref() == Some(&hash) && ctx.memory.is_verified(&key, cached.marker) {
            return Ok(outcome);
        }
    }
    let mut drifted_field = None;
    let mut exists = false;
    // The cache keeps metadata only: read the object itself to compare it. A child missing
    // from the cache that we remember is read too: the cache may only be late.
    if cached.is_some() || remembered {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &clinic.namespace, &ar);
        let full = api
            .get_opt(&name)
            .await
            .map_err(|source| Error::Read { what: format!("{} {name}", ar.kind), source })?;
        let moved =
            full.as_ref().filter(|_| ar.kind == "StatefulSet").and_then(|f| governed_elsewhere(&value, f));
        if let (Some(moved), Some(live)) = (moved, &full) {
            // Not a deletion by someone else when the next pass finds it gone.
            ctx.memory.forget_verified(&key);
            outcome.notices.push(moved);
            // Still going (its pods being let go): its deletion brings the next pass.
            if replace_keeping_pods(ctx, &api, &name, live.uid()).await? {
                let after = write_child(ctx, clinic, &ar, &name, &value, false).await?;
                ctx.memory.set_verified(key, marker(&ar.kind, &after.metadata));
                outcome.change = Change::Updated;
            }
            return Ok(outcome);
        }
        if let Some(mut full) = full {
            exists = true;
            live_hash = full.annotations().get(DESIRED_HASH_ANNOTATION).cloned();
            full.types = object.types.clone();
            if ar.kind == "StatefulSet" {
                keep_immutable_fields(&mut value, &full, &mut outcome.notices);
            }
            let live_value = serde_json::to_value(&full)
                .map_err(|source| Error::Serialize { what: format!("{} {name}", ar.kind), source })?;
            match first_difference(&value, &live_value) {
                None => {
                    ctx.memory.set_verified(key, marker(&ar.kind, &full.metadata));
                    return Ok(outcome);
                }
                Some(path) => drifted_field = Some(path),
            }
        }
    }
    match write_child(ctx, clinic, &ar, &name, &value, exists).await {
        Ok(after) => ctx.memory.set_verified(key, marker(&ar.kind, &after.metadata)),
        Err(e) => {
            ctx.memory.forget_verified(&key);
            return Err(e);
        }
    }
    outcome.change = match (exists, remembered) {
        (false, true) => Change::Deleted,
        (false, false) => Change::Created,
        (true, _) if live_hash.as_ref() == Some(&hash) => {
            Change::DriftCorrected(drifted_field.unwrap_or_default())
        }
        (true, _) => Change::Updated,
    };
    Ok(outcome)
}

/// Server-side apply; if the result still differs from what we declare (server-side apply keeps
/// list entries and fields that another manager added) or the apply is refused because of such
/// entries, a JSON merge patch replaces our lists wholesale.
async fn write_child(
    ctx: &Context,
    clinic: &Clinic,
    ar: &ApiResource,
    name: &str,
    value: &Value,
    exists: bool,
) -> Result<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &clinic.namespace, ar);
    ctx.metrics.record_write("apply");
    match api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(value)).await {
        Ok(result) => {
            let after = serde_json::to_value(&result)
                .map_err(|source| Error::Serialize { what: format!("{} {name}", ar.kind), source })?;
            if converged(value, &after) {
                return Ok(result);
            }
        }
        Err(kube::Error::Api(status)) if exists && status.code == 422 => {
            debug!(kind = %ar.kind, %name, message = %status.message, "apply refused; replacing lists with a merge patch");
        }
        Err(source) => return Err(Error::Apply { kind: ar.kind.clone(), name: name.to_string(), source }),
    }
    let mut body = value.clone();
    if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
        // Immutable once created.
        spec.remove("volumeClaimTemplates");
        spec.remove("selector");
    }
    ctx.metrics.record_write("merge");
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch(name, &params, &Patch::Merge(&body)).await.map_err(|source| Error::Patch {
        kind: ar.kind.clone(),
        name: name.to_string(),
        source,
    })
}

/// Deletes children this ClinicPlatform owns that are no longer desired (e.g. the Ingress after
/// `spec.ingress` was removed). Secrets are never pruned: they may be the only copy of a password.
pub async fn prune(
    ctx: &Context,
    clinic: &Clinic,
    desired: &[DynamicObject],
    notices: &mut Vec<Notice>,
) -> Result<usize> {
    let Some(owner) = &clinic.owner else {
        return Ok(0);
    };
    let wanted: BTreeSet<KindAndName> = desired.iter().map(key).collect();
    let mut pruned = 0;
    let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ar, name) in ctx.caches.owned_by(&clinic.namespace, &owner.uid) {
        if wanted.contains(&(ar.kind.clone(), name.clone())) {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &clinic.namespace, &ar);
        ctx.metrics.record_write("delete");
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune { kind: ar.kind.clone(), name, source });
            }
        }
        ctx.memory.forget_verified(&(ar.kind.clone(), clinic.namespace.clone(), name.clone()));
        pruned += 1;
        by_kind.entry(ar.kind.clone()).or_default().push(name);
    }
    for (kind, names) in by_kind {
        notices.push(Notice::normal(
            "Pruned",
            format!("deleted {kind} {} (no longer in the spec)", names.join(", ")),
        ));
    }
    Ok(pruned)
}
