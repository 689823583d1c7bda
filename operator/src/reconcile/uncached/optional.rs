//! Children of APIs that may not be installed: cert-manager's Certificate, Gateway API's
//! HTTPRoutes, Istio's policies, the Vertical Pod Autoscaler's, the mariadb-operator's MariaDB,
//! the Prometheus Operator's ServiceMonitor, PrometheusRule and AlertmanagerConfig. Each is
//! read, compared and applied on its own; once discovery says an API is served it is picked up
//! without a restart. The Prometheus Operator's are also watched: while their cache is in step,
//! one it shows as last verified is not read again.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject};

use super::write;
use crate::desired::{self, OptionalApi};
use crate::model::{Clinic, MANAGED_BY};
use crate::reconcile::context::Context;
use crate::reconcile::error::{Problem, Result};

const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// What happened to the optional children of one API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionalState {
    /// The API's CRDs are served.
    pub installed: bool,
    /// The wanted children that are in place as declared, by kind and name (Istio's
    /// PeerAuthentication and AuthorizationPolicy of a component share a name).
    pub in_place: BTreeMap<(String, String), InPlace>,
    /// The first error.
    pub error: Option<Problem>,
}

/// What their controllers report of a child in place: its `metadata.generation` and `status`
/// (an HTTPRoute's is where its Gateway says whether it is accepted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InPlace {
    pub generation: Option<i64>,
    pub status: Option<serde_json::Value>,
}

/// Creates, corrects or removes every child of `api` for `clinic`.
pub async fn ensure(
    ctx: &Context,
    clinic: &Clinic,
    api: OptionalApi,
    desired: &[DynamicObject],
) -> OptionalState {
    let mut state = OptionalState { installed: ctx.discovery.optional(api).await, ..Default::default() };
    if !state.installed {
        return state;
    }
    let children = desired::optional_children(clinic).into_iter().filter(|(a, _, _)| *a == api);
    // Each object on its own: read (and written) at once.
    let outcomes = futures::future::join_all(children.map(|(_, resource, name)| async move {
        let wanted = desired
            .iter()
            .find(|o| o.name_any() == name && o.types.as_ref().is_some_and(|t| t.kind == resource.kind));
        let outcome = ensure_one(ctx, &resource, &clinic.namespace, &name, wanted).await;
        (resource, name, outcome)
    }))
    .await;
    for (resource, name, outcome) in outcomes {
        match outcome {
            Ok(Some(in_place)) => {
                state.in_place.insert((resource.kind.clone(), name), in_place);
            }
            Ok(None) => {}
            Err(e) => {
                state.error.get_or_insert(Problem::from(e));
            }
        }
    }
    state
}

/// Brings one object to `desired`, or deletes it when it is not wanted and the operator made
/// it. Returns what is known of a wanted object as it now stands (a watched one vouched for by
/// its cache: neither generation nor status, which are only read where they are needed).
async fn ensure_one(
    ctx: &Context,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    desired: Option<&DynamicObject>,
) -> Result<Option<InPlace>> {
    let key = (resource.kind.clone(), namespace.to_string(), name.to_string());
    let cached = ctx.caches.watched(resource, namespace, name);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, resource);
    let Some(desired) = desired else {
        ctx.memory.forget_verified(&key);
        if matches!(cached, Some(None)) {
            // The cache is in step and holds none: nothing to remove.
            return Ok(None);
        }
        let made_by_us = |labels: &BTreeMap<String, String>| {
            labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        };
        write::remove_if(ctx, &api, (&resource.kind, name, name), made_by_us).await?;
        return Ok(None);
    };
    if let Some(Some(record)) = &cached
        && write::vouched(ctx, &key, desired, record)?
    {
        return Ok(Some(InPlace::default()));
    }
    // A cache in step that holds none: nothing to compare with, the apply creates it (a
    // server-side apply, so a cache a moment late costs nothing but that write).
    let live = match cached {
        Some(None) => None,
        _ => write::read(&api, &format!("{} {name}", resource.kind), name).await?,
    };
    let after = write::put(ctx, &api, &resource.kind, desired, live).await?;
    if ctx.caches.watches(resource) {
        ctx.memory.set_verified(key, crate::reconcile::caches::marker(&resource.kind, &after.metadata));
    }
    let status = after.data.get("status").filter(|s| !s.is_null()).cloned();
    Ok(Some(InPlace { generation: after.metadata.generation, status }))
}
