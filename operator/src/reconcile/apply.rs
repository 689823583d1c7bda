//! The one write path: server-side apply with one field manager, skipped when the live object
//! already carries what we declare; create-once for generated Secrets; prune by ownership.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::compare::{converged, first_difference};
use super::error::{Error, Result};
use super::{Context, Notice};
use crate::api::{DeletionPolicy, FIELD_MANAGER};
use crate::build::hash_of;
use crate::build::secrets::{self, GeneratedSecret, SecretValues};
use crate::model::Clinic;

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

fn key(object: &DynamicObject) -> (String, String) {
    let kind = object.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
    (kind, object.name_any())
}

fn api_resource(object: &DynamicObject) -> Option<ApiResource> {
    let types = object.types.as_ref()?;
    super::observe::child_kinds()
        .into_iter()
        .find(|ar| ar.kind == types.kind && ar.api_version == types.api_version)
}

/// Refuses a credentials source other than the one the running database was initialised with
/// (`status.databaseCredentialsSecret`), unless annotation
/// [`crate::api::CREDENTIALS_MOVED_ANNOTATION`] names the new one: MariaDB keeps its own copy of
/// the passwords, and the new Secret's would not open it.
pub fn credentials_source_unchanged(
    ctx: &Context,
    cp: &crate::api::ClinicPlatform,
    clinic: &Clinic,
) -> Result<()> {
    let Some(from) = cp.status.as_ref().and_then(|s| s.database_credentials_secret.clone()) else {
        return Ok(());
    };
    let to = clinic.db_credentials_secret();
    let database = crate::build::database::name(clinic);
    let initialised = ctx
        .caches
        .get_typed::<k8s_openapi::api::apps::v1::StatefulSet>(&clinic.namespace, &database)
        .is_some();
    let moved = cp.annotations().get(crate::api::CREDENTIALS_MOVED_ANNOTATION) == Some(&to);
    if from == to || !initialised || moved {
        return Ok(());
    }
    Err(Error::CredentialsSwitch { from, to })
}

/// Makes sure the generated Secrets exist, creating each one once. Returns how many were created.
pub async fn ensure_secrets(ctx: &Context, clinic: &Clinic) -> Result<usize> {
    let mut created = 0;
    for generated in secrets::generated(clinic) {
        match ctx.caches.secret(&clinic.namespace, &generated.name) {
            Some(live) => adopt_secret(ctx, clinic, &generated, &live.metadata).await?,
            None => {
                if create_secret(ctx, clinic, &generated).await? {
                    created += 1;
                }
            }
        }
    }
    Ok(created)
}

/// Generated Secrets outlive a `Retain` clinic: they are the only key to the retained data. So
/// they carry an owner reference only under a confirmed `Delete`.
fn secret_owner_references(
    clinic: &Clinic,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    match clinic.deletion_policy() {
        DeletionPolicy::Delete => clinic.owner_references().unwrap_or_default(),
        DeletionPolicy::Retain => vec![],
    }
}

async fn create_secret(ctx: &Context, clinic: &Clinic, generated: &GeneratedSecret) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    // The cache may lag; and a restored namespace brings its Secrets back. Look before creating.
    match api.get_metadata_opt(&generated.name).await {
        Ok(Some(existing)) => {
            adopt_secret(ctx, clinic, generated, &existing.metadata).await?;
            return Ok(false);
        }
        Ok(None) => {}
        Err(source) => {
            return Err(Error::Read { what: format!("Secret {}", generated.name), source });
        }
    }
    // Credentials for a database that already holds data cannot be invented again: neither the
    // database's nor the OpenMRS admin password, which the first start wrote into it.
    let claim = format!("data-{}-0", crate::build::database::name(clinic));
    let guarded = generated.name == clinic.db_credentials_secret()
        || (clinic.generates_admin_password && generated.name == clinic.admin_password().secret);
    if guarded {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
        match pvcs.get_metadata_opt(&claim).await {
            Ok(Some(_)) => {
                return Err(Error::CredentialsLost { secret: generated.name.clone(), claim });
            }
            Ok(None) => {}
            Err(source) => {
                return Err(Error::Read { what: format!("PersistentVolumeClaim {claim}"), source });
            }
        }
    }
    let mut secret = secrets::secret(clinic, generated, SecretValues::Generate);
    secret.metadata.owner_references = Some(secret_owner_references(clinic));
    ctx.metrics.record_write("create");
    match api
        .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &secret)
        .await
    {
        Ok(_) => {
            info!(secret = %generated.name, "generated Secret created");
            Ok(true)
        }
        // Created between our look and our create (another replica, a restore): keep theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::CreateSecret { name: generated.name.clone(), source }),
    }
}

/// An existing generated Secret keeps its values; only labels and owner references are ours.
async fn adopt_secret(
    ctx: &Context,
    clinic: &Clinic,
    generated: &GeneratedSecret,
    live: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<()> {
    let labels = clinic.labels(crate::model::Component::Platform);
    let owners = secret_owner_references(clinic);
    let live_labels = live.labels.clone().unwrap_or_default();
    let labels_ok = labels.iter().all(|(k, v)| live_labels.get(k) == Some(v));
    let live_owner_uids: BTreeSet<&str> =
        live.owner_references.iter().flatten().map(|o| o.uid.as_str()).collect();
    let owners_ok = owners.iter().all(|o| live_owner_uids.contains(o.uid.as_str()))
        && (clinic.deletion_policy() == DeletionPolicy::Delete
            || clinic.owner.as_ref().is_none_or(|o| !live_owner_uids.contains(o.uid.as_str())));
    if labels_ok && owners_ok {
        return Ok(());
    }
    // A merge patch: labels are added, the owner list is replaced as a whole (so a switch from
    // Delete to Retain really drops the owner reference), and the data is never in the body.
    let patch = json!({ "metadata": { "labels": labels, "ownerReferences": owners } });
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &clinic.namespace);
    ctx.metrics.record_write("merge");
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch(&generated.name, &params, &Patch::Merge(&patch)).await.map_err(|source| Error::Apply {
        kind: "Secret".into(),
        name: generated.name.clone(),
        source,
    })?;
    debug!(secret = %generated.name, "adopted existing Secret");
    Ok(())
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
    let children: Vec<(&DynamicObject, ApiResource)> = desired
        .iter()
        .filter_map(|o| api_resource(o).map(|ar| (o, ar)))
        .filter(|(_, ar)| ar.kind != "Secret")
        .collect();
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
        None => Ok(applied),
    }
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
    let remembered = ctx.remembers(&key);
    let mut live_hash = None;
    if let Some(cached) = &cached {
        live_hash = cached.annotations().get(DESIRED_HASH_ANNOTATION).cloned();
        if live_hash.as_ref() == Some(&hash)
            && ctx.is_verified(&key, &super::observe::marker(&ar.kind, &cached.metadata))
        {
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
                    ctx.set_verified(key, super::observe::marker(&ar.kind, &full.metadata));
                    return Ok(outcome);
                }
                Some(path) => drifted_field = Some(path),
            }
        }
    }
    match write_child(ctx, clinic, &ar, &name, &value, exists).await {
        Ok(after) => ctx.set_verified(key, super::observe::marker(&ar.kind, &after.metadata)),
        Err(e) => {
            ctx.forget_verified(&key);
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
    let fail = |source| Error::Apply { kind: ar.kind.clone(), name: name.to_string(), source };
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
        Err(source) => return Err(fail(source)),
    }
    let mut body = value.clone();
    if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
        // Immutable once created.
        spec.remove("volumeClaimTemplates");
        spec.remove("selector");
    }
    ctx.metrics.record_write("merge");
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch(name, &params, &Patch::Merge(&body)).await.map_err(fail)
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
    let wanted: BTreeSet<(String, String)> = desired.iter().map(key).collect();
    let mut pruned = 0;
    let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ar, object) in ctx.caches.owned_by(&clinic.namespace, &owner.uid) {
        let name = object.name_any();
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
        ctx.forget_verified(&(ar.kind.clone(), clinic.namespace.clone(), name.clone()));
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

/// Events are best effort: a failure to record one must not fail the reconcile.
pub async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    notices: &[Notice],
) {
    for notice in notices {
        let event = kube::runtime::events::Event {
            type_: notice.type_,
            reason: notice.reason.to_string(),
            note: Some(truncate(&notice.message, 1000)),
            action: "Reconcile".to_string(),
            secondary: notice.related.clone(),
        };
        ctx.metrics.record_write("event");
        if let Err(e) = ctx.recorder.publish(&event, reference).await {
            warn!(error = %e, reason = notice.reason, "could not record event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
