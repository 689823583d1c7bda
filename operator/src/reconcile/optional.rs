//! Children of APIs that may not be installed (cert-manager's Certificate, the Prometheus
//! Operator's ServiceMonitor and PrometheusRule) and children outside the clinic's namespace
//! (the Grafana dashboard when it goes to Grafana's namespace). The informer caches cover
//! neither, so each is read, compared and applied on its own; once discovery says an API is
//! served it is picked up without a restart.

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};

use super::Context;
use super::compare::converged;
use super::error::{Error, Problem, Result};
use crate::api::FIELD_MANAGER;
use crate::build::{self, OptionalApi};
use crate::model::{Clinic, MANAGED_BY};

/// What happened to the optional children of one API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionalState {
    /// The API's CRDs are served.
    pub installed: bool,
    /// Names of the wanted children that are in place as declared.
    pub in_place: Vec<String>,
    /// The first error.
    pub error: Option<Problem>,
}

impl Context {
    pub async fn installed(&self, api: OptionalApi) -> bool {
        match api {
            OptionalApi::CertManager => self.cert_manager_installed().await,
            OptionalApi::PrometheusOperator => {
                self.served("monitoring.coreos.com/v1", &["servicemonitors", "prometheusrules"]).await
            }
        }
    }
}

/// Creates, corrects or removes every child of `api` for `clinic`.
pub async fn ensure(
    ctx: &Context,
    clinic: &Clinic,
    api: OptionalApi,
    desired: &[kube::api::DynamicObject],
) -> OptionalState {
    let mut state = OptionalState { installed: ctx.installed(api).await, ..Default::default() };
    if !state.installed {
        return state;
    }
    for (_, resource, name) in build::optional_children(clinic).into_iter().filter(|(a, _, _)| *a == api) {
        let wanted = desired
            .iter()
            .find(|o| o.name_any() == name && o.types.as_ref().is_some_and(|t| t.kind == resource.kind));
        match ensure_one(ctx, &resource, &clinic.namespace, &name, wanted).await {
            Ok(true) => state.in_place.push(name),
            Ok(false) => {}
            Err(e) => {
                state.error.get_or_insert(Problem::from(e));
            }
        }
    }
    state
}

/// Brings one object to `desired` (server-side apply when it differs), or deletes it when it
/// is not wanted and the operator made it. Returns whether a wanted object is in place.
pub async fn ensure_one(
    ctx: &Context,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    desired: Option<&DynamicObject>,
) -> Result<bool> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, resource);
    let live = api
        .get_opt(name)
        .await
        .map_err(|source| Error::Read { what: format!("{} {name}", resource.kind), source })?;
    let Some(desired) = desired else {
        // Only ever delete what the operator made.
        if let Some(live) = live
            && live.labels().get("app.kubernetes.io/managed-by").map(String::as_str) == Some(MANAGED_BY)
        {
            ctx.metrics.record_write("delete");
            api.delete(name, &DeleteParams::background()).await.map_err(|source| Error::Prune {
                kind: resource.kind.clone(),
                name: name.to_string(),
                source,
            })?;
        }
        return Ok(false);
    };
    apply_if_changed(ctx, &api, &resource.kind, desired, live).await?;
    Ok(true)
}

/// Server-side applies `desired` unless `live` (as just read) already carries it. Shared by the
/// optional children and the objects outside the namespace, which read `live` themselves (the
/// latter to check whose it is first).
pub(super) async fn apply_if_changed(
    ctx: &Context,
    api: &Api<DynamicObject>,
    kind: &str,
    desired: &DynamicObject,
    live: Option<DynamicObject>,
) -> Result<()> {
    let name = desired.name_any();
    let (value, _) = super::apply::declared(desired)?;
    if let Some(mut live) = live {
        // A single GET carries no apiVersion/kind on some paths; the comparison needs them.
        live.types = desired.types.clone();
        let live = serde_json::to_value(&live)
            .map_err(|source| Error::Serialize { what: format!("{kind} {name}"), source })?;
        if converged(&value, &live) {
            return Ok(());
        }
    }
    ctx.metrics.record_write("apply");
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value))
        .await
        .map_err(|source| Error::Apply { kind: kind.to_string(), name, source })?;
    Ok(())
}
