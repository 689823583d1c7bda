//! Sync what the children's caches do not hold: the Velero Schedule and a dashboard outside
//! the clinic's namespace ([`outside`]), and the children of optional APIs ([`optional`]), each
//! through the one write path of [`write`]. They never block the platform: what failed is
//! reported in `BackupReady` and `MonitoringReady`. They are checked at most once per
//! [`UNCACHED_RECHECK`](crate::reconcile::memory::UNCACHED_RECHECK) while the ClinicPlatform
//! is unchanged (passes triggered by its children's events reuse the last check); any change
//! to the ClinicPlatform, or a failure, checks them on the next pass. Those of them the caches
//! watch where their API is served (the Prometheus Operator's, the Schedule) are checked at
//! once when their cached marker moves, and a check reads only those whose marker moved since
//! they were last verified: by this process, or (after a restart) by the one before it, as
//! its [`ledger`] says.

pub mod optional;
pub mod outside;
mod write;

use kube::api::DynamicObject;

use super::context::Context;
use super::error::Problem;
use super::events::Notice;
use super::exposure;
use super::finalizer;
use super::ledger;
use super::memory::ChildKey;
use crate::api::ClinicPlatform;
use crate::desired::OptionalApi;
use crate::model::Clinic;

/// What one check of the uncached objects found.
#[derive(Debug, Clone, Default)]
pub struct Uncached {
    /// The Schedule and a dashboard elsewhere; `None` when they were not looked at this pass.
    pub outside: Option<outside::Outcome>,
    pub certificates: optional::OptionalState,
    /// The clinic's HTTPRoutes; `None` when they were not looked at this pass (a clinic with
    /// no route).
    pub routes: Option<optional::OptionalState>,
    pub monitors: optional::OptionalState,
    /// The clinic's mesh policies (Istio); `None` when they were not looked at this pass.
    pub mesh: Option<optional::OptionalState>,
    /// The clinic's VerticalPodAutoscalers; `None` when they were not looked at this pass.
    pub vertical: Option<optional::OptionalState>,
    /// The clinic's AlertmanagerConfig (the policy's `alertRouting`); `None` when it was not
    /// looked at this pass.
    pub alert_routing: Option<optional::OptionalState>,
    /// The clinic's `MariaDB` (`spec.database.highAvailability`); `None` without it, or when it
    /// was not looked at this pass.
    pub database_cluster: Option<optional::OptionalState>,
    /// The clinic's routes are not accepted by their Gateway yet (or are refused): its answer
    /// is read again on the next pass.
    pub route_unsettled: bool,
}

impl Uncached {
    /// Nothing failed or waits on a Gateway: worth reusing. (A missing API is not a failure;
    /// discovery is re-asked with the next check anyway.)
    pub fn is_clean(&self) -> bool {
        !self.route_unsettled
            && self
                .outside
                .as_ref()
                .is_some_and(|o| o.schedule_error.is_none() && o.dashboard_error.is_none())
            && self.certificates.error.is_none()
            && self.routes.as_ref().is_none_or(|r| r.error.is_none())
            && self.monitors.error.is_none()
            && self.mesh.as_ref().is_none_or(|m| m.error.is_none())
            && self.vertical.as_ref().is_none_or(|v| v.error.is_none())
            && self.alert_routing.as_ref().is_none_or(|a| a.error.is_none())
            && self.database_cluster.as_ref().is_none_or(|d| d.error.is_none())
    }

    /// Names held by something else, for Warning events.
    pub fn clashes(&self) -> Vec<Notice> {
        self.outside.iter().flat_map(|o| o.notices.iter().cloned()).collect()
    }
}

/// Whether the clinic wants a child of `api` (one is among `desired`).
fn wants(clinic: &Clinic, desired: &[DynamicObject], api: OptionalApi) -> bool {
    crate::desired::optional_children(clinic).into_iter().filter(|(a, _, _)| *a == api).any(
        |(_, resource, name)| {
            desired.iter().any(|o| {
                o.metadata.name.as_deref() == Some(name.as_str())
                    && o.types.as_ref().is_some_and(|t| t.kind == resource.kind)
            })
        },
    )
}

/// Checks (or reuses the last check of) the clinic's uncached objects. Nothing is looked at
/// when the children did not converge or the clinic is paused.
pub async fn sync(
    ctx: &Context,
    cp: &ClinicPlatform,
    clinic: &Clinic,
    desired: &[DynamicObject],
    velero: bool,
    converged: bool,
) -> Uncached {
    if !converged || clinic.spec.paused {
        return Uncached::default();
    }
    let key = (clinic.namespace.clone(), clinic.name.clone());
    let version = crate::reconcile::memory::user_version(&cp.metadata);
    let version = Some(&version);
    let wanted = outside::wanted(clinic, velero);
    let watched = watched_wanted(ctx, clinic, desired, &wanted);
    if let Some(recent) = ctx.memory.recent_uncached(&key, version)
        && !any_moved(ctx, &watched)
    {
        return recent;
    }
    let recorded = cp.status.as_ref().and_then(|s| s.outside_objects.as_deref());
    let outside = async {
        match finalizer::ensure(ctx, cp, !wanted.is_empty()).await {
            Ok(()) => outside::sync(ctx, clinic, &wanted, recorded, velero).await,
            Err(e) => {
                let problem = Problem::from(&e);
                outside::Outcome {
                    schedule_error: Some(problem.clone()),
                    dashboard_error: Some(problem),
                    record: recorded.map(<[_]>::to_vec).unwrap_or_default(),
                    notices: Vec::new(),
                }
            }
        }
    };
    // The children of an API are read only where the clinic wants one of them, or when this
    // check may find some it no longer wants: its ClinicPlatform changed since the last check
    // (turned off: they go with this one), or this process never checked a clinic reconciled
    // before and the ledger shows no clean check of this very version (what an older spec, the
    // platform's policy or another operator version left goes then). A new clinic has none to
    // remove: the default clinic never reads a Certificate, an HTTPRoute or an
    // AlertmanagerConfig.
    let ledger_version = version.map(|v| ledger::uncached_version(v, &ctx.policy));
    let leftovers_possible = match ctx.memory.uncached_checked_for(&key) {
        Some(checked_for) => checked_for.as_ref() != version,
        None => match ctx.ledger.uncached_version_of(&key) {
            Some(checked_for) if Some(&checked_for) == ledger_version.as_ref() => {
                restore_verified(ctx, &key, &watched);
                false
            }
            Some(_) => true,
            None => cp.status.is_some(),
        },
    };
    let opt_in = |api: OptionalApi| async move {
        match leftovers_possible || wants(clinic, desired, api) {
            true => Some(optional::ensure(ctx, clinic, api, desired).await),
            false => None,
        }
    };
    // Independent objects: read (and written) at once, so a check costs one round trip of the
    // API server, not one per API.
    let (outside, certificates, routes, monitors, mesh, vertical, alert_routing, database_cluster) = futures::join!(
        outside,
        opt_in(OptionalApi::CertManager),
        opt_in(OptionalApi::GatewayApi),
        opt_in(OptionalApi::PrometheusOperator),
        opt_in(OptionalApi::Istio),
        opt_in(OptionalApi::VerticalPodAutoscaler),
        opt_in(OptionalApi::AlertmanagerConfig),
        opt_in(OptionalApi::DatabaseOperator),
    );
    let certificates = certificates.unwrap_or_default();
    let monitors = monitors.unwrap_or_default();
    let route_unsettled = exposure::state(clinic, routes.as_ref()).is_some_and(|r| !r.is_accepted());
    let checked = Uncached {
        outside: Some(outside),
        certificates,
        routes,
        monitors,
        mesh,
        vertical,
        alert_routing,
        database_cluster,
        route_unsettled,
    };
    ctx.memory.remember_uncached(&key, version, &checked);
    if let (true, Some(v)) = (checked.is_clean(), ledger_version) {
        ctx.ledger.record_uncached(&key, v, verified_digest(ctx, &watched));
    }
    checked
}

/// A wanted object the caches watch where its API is served: the key it is verified under,
/// and where the cache holds it.
struct Watched {
    verified_as: ChildKey,
    resource: kube::api::ApiResource,
    namespace: String,
    name: String,
}

/// The clinic's wanted objects of watched kinds: its Prometheus Operator children, its Schedule.
fn watched_wanted(
    ctx: &Context,
    clinic: &Clinic,
    desired: &[DynamicObject],
    outside: &[(crate::api::OutsideObject, DynamicObject)],
) -> Vec<Watched> {
    let resource_of = |object: &DynamicObject| {
        let types = object.types.as_ref().filter(|t| ctx.caches.watches_type(&t.api_version, &t.kind))?;
        let gvk = kube::api::GroupVersionKind::try_from(types).ok()?;
        Some(kube::api::ApiResource::from_gvk(&gvk))
    };
    let in_namespace = desired.iter().filter_map(|object| {
        let resource = resource_of(object)?;
        let name = object.metadata.name.clone()?;
        Some(Watched {
            verified_as: (resource.kind.clone(), clinic.namespace.clone(), name.clone()),
            namespace: clinic.namespace.clone(),
            name,
            resource,
        })
    });
    let elsewhere = outside.iter().filter_map(|(key, object)| {
        Some(Watched {
            verified_as: outside::memory_key(clinic, key),
            resource: resource_of(object)?,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        })
    });
    in_namespace.chain(elsewhere).collect()
}

/// Whether a watched object moved (or went) since it was last verified, as far as a cache in
/// step shows: the last check is stale then.
fn any_moved(ctx: &Context, watched: &[Watched]) -> bool {
    watched.iter().any(|w| match ctx.caches.watched(&w.resource, &w.namespace, &w.name) {
        Some(Some(record)) => !ctx.memory.is_verified(&w.verified_as, record.marker),
        Some(None) => true,
        None => false,
    })
}

/// The digest of the watched objects' verified markers, for the ledger (`None`: one is not
/// verified).
fn verified_digest(ctx: &Context, watched: &[Watched]) -> Option<String> {
    let markers: Option<Vec<_>> = watched
        .iter()
        .map(|w| {
            ctx.memory.verified_marker(&w.verified_as).map(|m| (w.resource.kind.as_str(), w.name.as_str(), m))
        })
        .collect();
    markers.map(ledger::digest)
}

/// A restarted operator's first check of a clinic whose uncached objects were last checked
/// clean for this very version: the watched ones whose cached markers are those the ledger
/// recorded then are known verified, and not read.
fn restore_verified(ctx: &Context, key: &super::memory::ClinicKey, watched: &[Watched]) {
    let Some(recorded) = ctx.ledger.watched_digest_of(key) else {
        return;
    };
    let mut cached = Vec::with_capacity(watched.len());
    for w in watched {
        let Some(Some(record)) = ctx.caches.watched(&w.resource, &w.namespace, &w.name) else {
            return;
        };
        cached.push((w, record.marker));
    }
    if ledger::digest(cached.iter().map(|(w, marker)| (w.resource.kind.as_str(), w.name.as_str(), *marker)))
        == recorded
    {
        for (w, marker) in cached {
            ctx.memory.set_verified(w.verified_as.clone(), marker);
        }
    }
}
