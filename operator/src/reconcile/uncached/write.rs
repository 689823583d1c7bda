//! The one write path for objects the caches do not hold: read the live object, compare it
//! with the declaration, apply only when it differs; delete only what the given owner check
//! says is ours, and only the version just read.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};

use crate::api::FIELD_MANAGER;
use crate::reconcile::caches::ChildRecord;
use crate::reconcile::compare::converged;
use crate::reconcile::context::Context;
use crate::reconcile::converge::declared;
use crate::reconcile::error::{Error, Result};
use crate::reconcile::memory::ChildKey;

/// Whether a watched object is known as declared without a read: its cached record carries the
/// hash of `desired` and the marker it was last verified with (by this process, or by one
/// before it, [`crate::reconcile::ledger`]).
pub fn vouched(ctx: &Context, key: &ChildKey, desired: &DynamicObject, cached: &ChildRecord) -> Result<bool> {
    if !ctx.memory.is_verified(key, cached.marker) {
        return Ok(false);
    }
    let (_, hash) = declared(desired)?;
    Ok(cached.declared_hash.as_deref() == Some(hash.as_str()))
}

/// The live object, if any. A missing namespace reads as a missing object.
pub async fn read(api: &Api<DynamicObject>, what: &str, name: &str) -> Result<Option<DynamicObject>> {
    match api.get_opt(name).await {
        Ok(live) => Ok(live),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(source) => Err(Error::Read { what: what.to_string(), source }),
    }
}

/// Server-side applies `desired` unless `live` (as just read) already carries it; returns the
/// object as it now stands.
pub async fn put(
    ctx: &Context,
    api: &Api<DynamicObject>,
    kind: &str,
    desired: &DynamicObject,
    live: Option<DynamicObject>,
) -> Result<DynamicObject> {
    let name = desired.name_any();
    let (value, _) = declared(desired)?;
    if let Some(mut live) = live {
        // A single GET carries no apiVersion/kind on some paths; the comparison needs them.
        live.types = desired.types.clone();
        let shown = serde_json::to_value(&live)
            .map_err(|source| Error::Serialize { what: format!("{kind} {name}"), source })?;
        if converged(&value, &shown) {
            return Ok(live);
        }
    }
    ctx.metrics.record_write("apply");
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value))
        .await
        .map_err(|source| Error::Apply { kind: kind.to_string(), name, source })
}

/// Deletes the `kind` object `name` if `ours` says so of its labels; gone or someone else's,
/// it is left as it is. Only the version just read is deleted (uid precondition), so that an
/// object someone else made since is not removed. `shown` is its name in messages.
pub async fn remove_if(
    ctx: &Context,
    api: &Api<DynamicObject>,
    (kind, name, shown): (&str, &str, &str),
    ours: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Result<()> {
    let live = match api.get_metadata_opt(name).await {
        Ok(live) => live,
        // The namespace itself is gone (or never existed): so is the object.
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(source) => return Err(Error::Read { what: format!("{kind} {shown}"), source }),
    };
    let Some(live) = live.filter(|live| ours(live.labels())) else {
        return Ok(());
    };
    ctx.metrics.record_write("delete");
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: live.uid(), resource_version: None }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Prune { kind: kind.to_string(), name: shown.to_string(), source }),
    }
}
