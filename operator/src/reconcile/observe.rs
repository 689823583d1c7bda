//! Observe: what the cluster reports after this pass's writes — the workloads' replicas and
//! images from the caches, the NetworkPolicies as verified, backup health, the security
//! controls — gathered into [`status::Observed`], from which the status is computed.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use tracing::warn;

use super::backups::{self, BackupHealth};
use super::context::Context;
use super::converge::{self, Outcome};
use super::error::Error;
use super::exposure::{self, RouteState};
use super::gate::Gate;
use super::gather::{Gathered, running_images};
use super::status::{MeshState, MonitoringState, Observed, WorkloadState};
use super::storage::storage_encrypted;
use super::uncached::Uncached;
use super::uncached::optional::OptionalState;
use crate::api::{ClinicPlatform, Compliance, ComponentVersions};
use crate::desired::{self, OptionalApi};
use crate::model::{BACKEND_IMAGE_PATH, Clinic, MARIADB_IMAGE_PATH};

/// Everything the status of this pass is computed from.
pub async fn observe(
    ctx: &Context,
    cp: &ClinicPlatform,
    clinic: &Clinic,
    desired: &[DynamicObject],
    gathered: &Gathered,
    outcome: &Outcome,
    uncached: Uncached,
) -> Observed {
    let Uncached {
        outside,
        certificates,
        routes,
        monitors,
        mesh,
        vertical,
        alert_routing,
        database_cluster,
        ..
    } = uncached;
    let (schedule_error, dashboard_error) = match &outside {
        Some(o) => (o.schedule_error.clone(), o.dashboard_error.clone()),
        None => (None, None),
    };
    let route_error = routes.as_ref().and_then(|r| r.error.as_ref());
    let mesh_error = mesh.as_ref().and_then(|m| m.error.as_ref());
    let vertical_error = vertical.as_ref().and_then(|v| v.error.as_ref());
    for e in certificates
        .error
        .iter()
        .chain(route_error)
        .chain(&monitors.error)
        .chain(&dashboard_error)
        .chain(mesh_error)
        .chain(vertical_error)
        .chain(alert_routing.as_ref().and_then(|a| a.error.as_ref()))
    {
        warn!(error = %e, "optional child not applied");
    }
    let monitoring = MonitoringState {
        enabled: clinic.spec.monitoring.enabled,
        operator_installed: monitors.installed,
        in_place: monitors.in_place.len(),
        error: monitors.error.clone().or(dashboard_error),
        logs_and_traces: crate::desired::monitoring::logs_and_traces(clinic),
        vertical: vertical_recommendations(clinic, vertical.as_ref(), cp),
        routing: routing(clinic, alert_routing.as_ref(), cp),
    };
    let created = cp.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut backup =
        backups::health(clinic, created, gathered.velero, &gathered.backups, jiff::Timestamp::now());
    if let Some(e) = schedule_error.filter(|_| clinic.spec.backup.enabled) {
        warn!(error = %e, "Velero Schedule not applied");
        backup = backups::schedule_failed(clinic, &e, backup.last_success);
    }
    let certificate_in_place = certificates
        .in_place
        .contains_key(&(desired::ingress::certificate_resource().kind, clinic.child_name("tls")));
    let route = exposure::state(clinic, routes.as_ref());
    // Routes not looked at this pass count as their last answer said.
    let route_accepted = match &route {
        Some(RouteState::Unchecked) => cp.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == exposure::ROUTE_ACCEPTED && c.status == "True")
        }),
        Some(state) => state.is_accepted(),
        None => false,
    };
    // A route's listener is one the platform team attests terminates TLS (its policy).
    let tls_at_edge =
        clinic.spec.ingress.as_ref().is_some_and(|i| i.tls.secret_name.is_some() || certificate_in_place)
            || route_accepted;
    let encrypted = storage_encrypted(ctx, clinic).await;
    let mut observed = workloads(ctx, clinic, cp, desired, gathered, outcome, backup);
    if let Some(problem) = database_cluster.as_ref().and_then(|d| d.error.as_ref()) {
        warn!(error = %problem, "MariaDB not applied");
        observed.database.failure = Some(problem.message.clone());
    }
    // A StatefulSet reports no condition when its pods are refused: its events say it. Read only
    // while it has fewer pods than it should (not during a normal start, when they exist).
    // A replicated database's pods are the mariadb-operator's: its `MariaDB` says why they fail.
    let database = clinic.database_cluster.is_none().then_some(&mut observed.database);
    for workload in database.into_iter().chain([&mut observed.backend]) {
        if workload.exists && workload.created < workload.desired.max(1) {
            workload.failure = pod_creation_failure(ctx, &clinic.namespace, &workload.name).await;
        }
    }
    observed.namespace_visible = ctx.cluster_scope;
    observed.monitoring = monitoring;
    observed.route = route;
    observed.controls = Compliance {
        pod_security_restricted: ctx
            .caches
            .namespace_labels(&clinic.namespace)
            .is_some_and(|l| converge::enforces_restricted(&l)),
        default_deny_network: observed.network_policies_enforced,
        tls_at_edge,
        backups_within_rpo: observed.backup.status == "True",
        data_residency: ctx.policy.residency_approved(&clinic.spec),
        encryption_at_rest: encrypted,
        database_encrypted: clinic.spec.database.encrypt_at_rest && observed.database.is_ready(),
        // The pod template carries the certificate's end of validity: a ready pod runs it.
        database_tls: clinic.database_tls()
            && clinic.database_certificate.is_some()
            && observed.database.is_ready(),
        mutual_tls: false,
        backend_tls: false,
    };
    // Not looked at this pass (paused, or children not converged): as the last status said.
    let was_in_force = cp.status.as_ref().and_then(|s| s.compliance.as_ref()).is_some_and(|c| c.mutual_tls);
    observed.mesh = clinic.mesh.as_ref().map(|_| match (mesh.as_ref(), was_in_force) {
        (None, true) => MeshState::InForce,
        (looked, _) => mesh_state(clinic, looked),
    });
    // Ready workloads run the pod template that carries the mesh label.
    observed.controls.mutual_tls =
        observed.mesh == Some(MeshState::InForce) && observed.database.is_ready() && observed.openmrs_ready();
    // The backend's template carries the proxy and the gateway's the CA: ready pods run them.
    observed.controls.backend_tls = observed.controls.mutual_tls
        || (clinic.backend_tls() && clinic.backend_certificate.is_some() && observed.openmrs_ready());
    observed.probe =
        clinic.probe.as_ref().and_then(|p| ctx.probes.verdict(&clinic.namespace, &clinic.name, p));
    observed.outside = match &outside {
        Some(o) => Some(o.record.clone()),
        None => cp.status.as_ref().and_then(|s| s.outside_objects.clone()),
    };
    observed
}

/// NetworkPolicies in place as declared: our hash on each, and verified against the API server
/// at its current version (this pass re-applied any that drifted).
fn network_policies_enforced(ctx: &Context, clinic: &Clinic, desired: &[DynamicObject]) -> bool {
    let kind = ApiResource::erase::<NetworkPolicy>(&());
    desired.iter().filter(|o| o.types.as_ref().is_some_and(|t| t.kind == kind.kind)).all(|wanted| {
        let name = wanted.name_any();
        let Some(live) = ctx.caches.get(&kind, &clinic.namespace, &name) else {
            return false;
        };
        let Ok((_, hash)) = converge::declared(wanted) else {
            return false;
        };
        let key = (kind.kind.clone(), clinic.namespace.clone(), name);
        live.declared_hash.as_deref() == Some(hash.as_str()) && ctx.memory.is_verified(&key, live.marker)
    })
}

/// The workloads as the caches show them, the versions they run, and this pass's outcome.
fn workloads(
    ctx: &Context,
    clinic: &Clinic,
    cp: &ClinicPlatform,
    desired: &[DynamicObject],
    gathered: &Gathered,
    outcome: &Outcome,
    backup: BackupHealth,
) -> Observed {
    let ns = &clinic.namespace;
    let sts = |name: String| {
        let live = ctx.caches.workload("StatefulSet", ns, &name);
        WorkloadState::of(name, live.as_ref())
    };
    let deploy = |name: String| {
        let live = ctx.caches.workload("Deployment", ns, &name);
        WorkloadState::of(name, live.as_ref())
    };
    let database = match &gathered.database_cluster {
        Some(cluster) => WorkloadState::of_cluster(desired::database_cluster::name(clinic), cluster),
        None => sts(desired::database::name(clinic)),
    };
    let backend = sts(desired::backend::name(clinic));
    // A version is reported once every pod of its workload runs it; until then, what was. The
    // caches are read again (not the gather's copy): they may have moved during the writes.
    let previous = cp.status.as_ref().and_then(|s| s.versions.clone()).unwrap_or_default();
    let running = running_images(ctx, clinic, gathered.database_cluster.as_ref()).unwrap_or_default();
    let rolled = |workload: &WorkloadState, image: Option<String>, path: &str| {
        image.filter(|_| workload.is_ready()).map(|i| clinic.version_in_image(&i, path))
    };
    let versions = ComponentVersions {
        openmrs: rolled(&backend, running.backend, BACKEND_IMAGE_PATH).or(previous.openmrs),
        database: rolled(&database, running.database, MARIADB_IMAGE_PATH).or(previous.database),
    };
    // Recorded while the database exists, so that a later switch is seen; a refused switch keeps
    // the record.
    let switch_refused = matches!(outcome, Err(Error::CredentialsSwitch { .. }));
    let previous_credentials = cp.status.as_ref().and_then(|s| s.database_credentials_secret.clone());
    let database_credentials = if database.exists && !switch_refused {
        Some(clinic.db_credentials_secret())
    } else {
        previous_credentials
    };
    // Recorded once a MariaDB pod of the encrypting configuration has run (not merely once the
    // StatefulSet exists: an older, unencrypted one whose keys failed to be created has no data
    // encrypted with any), and kept: the record is what guards the keys.
    let database_encryption =
        cp.status.as_ref().and_then(|s| s.database_encryption_secret.clone()).or_else(|| {
            (database.is_ready() && clinic.spec.database.encrypt_at_rest).then(|| clinic.encryption_secret())
        });
    Observed {
        generation: cp.metadata.generation,
        database_credentials,
        database_encryption,
        database,
        backend,
        versions,
        frontend: deploy(desired::frontend::name(clinic)),
        gateway: deploy(desired::gateway::name(clinic)),
        network_policies_enforced: network_policies_enforced(ctx, clinic, desired),
        changed: outcome.as_ref().is_ok_and(|(a, _)| a.changed_anything()),
        error: outcome.as_ref().err().map(Into::into),
        paused: clinic.spec.paused,
        gate: outcome.as_ref().map(|(_, g)| g.clone()).unwrap_or(Gate::Open),
        backup,
        controls: Compliance::default(),
        namespace_visible: true,
        monitoring: MonitoringState::default(),
        route: None,
        mesh: None,
        outside: None,
        probe: None,
    }
}

/// Where the VerticalPodAutoscalers of a clinic that asks for them stand; when they were not
/// looked at this pass, what the last status said.
fn vertical_recommendations(
    clinic: &Clinic,
    looked: Option<&OptionalState>,
    cp: &ClinicPlatform,
) -> Option<String> {
    if !clinic.spec.autoscaling.vertical_recommendations {
        return None;
    }
    let expected = desired::workloads(clinic).len();
    Some(match looked {
        None => previous_part(cp, "VerticalPodAutoscalers: ")
            .unwrap_or_else(|| "VerticalPodAutoscalers: pending".into()),
        Some(OptionalState { installed: false, .. }) => {
            "VerticalPodAutoscalers: not created, the cluster does not serve autoscaling.k8s.io/v1 (install the Vertical Pod Autoscaler)".into()
        }
        Some(OptionalState { error: Some(e), .. }) => format!("VerticalPodAutoscalers: {}", e.message),
        Some(OptionalState { in_place, .. }) if in_place.len() == expected => {
            format!("VerticalPodAutoscalers: recommendations for the {expected} workloads (updateMode Off)")
        }
        Some(OptionalState { in_place, .. }) => {
            format!("VerticalPodAutoscalers: {} of {expected} in place", in_place.len())
        }
    })
}

/// Where a monitored clinic's alerts go, when the policy names receivers; when they were not
/// looked at this pass, what the last status said.
fn routing(clinic: &Clinic, looked: Option<&OptionalState>, cp: &ClinicPlatform) -> Option<String> {
    desired::monitoring::alertmanager_config(clinic)?;
    let name = clinic.child_name("alert-routing");
    let Some(looked) = looked else {
        return Some(previous_part(cp, "alert routing: ").unwrap_or_else(|| "alert routing: pending".into()));
    };
    Some(match looked {
        OptionalState { installed: false, .. } => {
            "alert routing: not declared, the cluster does not serve monitoring.coreos.com/v1alpha1 AlertmanagerConfig".into()
        }
        OptionalState { error: Some(e), .. } => format!("alert routing: {}", e.message),
        OptionalState { in_place, .. } if in_place.keys().any(|(_, n)| *n == name) => {
            format!("alert routing: AlertmanagerConfig {name} sends critical alerts to the platform's pager, the others to its ticket queue")
        }
        OptionalState { .. } => format!("alert routing: AlertmanagerConfig {name} being applied"),
    })
}

/// The part of the last `MonitoringReady` message that starts with `prefix`.
fn previous_part(cp: &ClinicPlatform, prefix: &str) -> Option<String> {
    let conditions = &cp.status.as_ref()?.conditions;
    let message = &conditions.iter().find(|c| c.type_ == super::status::MONITORING_READY)?.message;
    message.split("; ").find(|part| part.starts_with(prefix)).map(String::from)
}

/// The mesh policies of a clinic with `spec.security.mtls`, from this pass's look at them.
fn mesh_state(clinic: &Clinic, looked: Option<&OptionalState>) -> MeshState {
    let Some(looked) = looked else {
        return MeshState::Pending;
    };
    let expected =
        desired::optional_children(clinic).iter().filter(|(api, _, _)| *api == OptionalApi::Istio).count();
    match looked {
        OptionalState { installed: false, .. } => MeshState::NotInstalled,
        OptionalState { in_place, error: None, .. } if in_place.len() == expected => MeshState::InForce,
        OptionalState { in_place, error, .. } => {
            MeshState::Incomplete { in_place: in_place.len(), expected, error: error.clone() }
        }
    }
}

/// The message of the StatefulSet's newest `FailedCreate` event of the last two minutes: its
/// controller is being refused pods now (e.g. by Pod Security, after a field of the pod
/// template was changed outside the operator). Read only for a StatefulSet short of pods.
async fn pod_creation_failure(ctx: &Context, namespace: &str, statefulset: &str) -> Option<String> {
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), namespace);
    let selector =
        format!("involvedObject.kind=StatefulSet,involvedObject.name={statefulset},reason=FailedCreate");
    let events = api.list(&ListParams::default().fields(&selector)).await.ok()?;
    let recent = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120);
    events
        .items
        .into_iter()
        .filter_map(|e| {
            let at = e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0))?;
            Some((at, e.message.unwrap_or_default()))
        })
        .filter(|(at, _)| *at >= recent)
        .max_by_key(|(at, _)| *at)
        .map(|(_, message)| message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClinicPlatformSpec, ClinicPlatformStatus, Condition};
    use crate::reconcile::uncached::optional::InPlace;

    fn clinic_platform(vertical: bool) -> ClinicPlatform {
        let mut spec = ClinicPlatformSpec::default();
        spec.autoscaling.vertical_recommendations = vertical;
        let mut cp = ClinicPlatform::new("lyon", spec);
        cp.metadata.namespace = Some("clinic-lyon".into());
        cp
    }

    /// `cp` whose last status has `MonitoringReady` with `message`.
    fn monitored_with(cp: &ClinicPlatform, message: &str) -> ClinicPlatform {
        let mut settled = cp.clone();
        settled.status = Some(ClinicPlatformStatus {
            conditions: vec![Condition {
                type_: super::super::status::MONITORING_READY.into(),
                status: "True".into(),
                reason: "Monitored".into(),
                message: message.into(),
                last_transition_time: None,
                observed_generation: None,
            }],
            ..Default::default()
        });
        settled
    }

    fn state(installed: bool, in_place: usize) -> OptionalState {
        let names = ["lyon-mariadb", "lyon-backend", "lyon-frontend", "lyon-gateway"];
        OptionalState {
            installed,
            in_place: names
                .iter()
                .take(in_place)
                .map(|n| (("VerticalPodAutoscaler".to_string(), n.to_string()), InPlace::default()))
                .collect(),
            error: None,
        }
    }

    /// A component's PeerAuthentication and AuthorizationPolicy share its name: both count.
    #[test]
    fn the_mesh_is_in_force_once_all_eight_policies_are() {
        let mut spec = ClinicPlatformSpec::default();
        spec.security.mtls = true;
        let mut cp = ClinicPlatform::new("lyon", spec);
        cp.metadata.namespace = Some("clinic-lyon".into());
        let mut clinic = crate::model::validate(&cp).unwrap();
        clinic.mesh = Some(crate::policy::MeshPolicy::default());
        let looked = |kinds: &[&str]| OptionalState {
            installed: true,
            in_place: desired::workloads(&clinic)
                .into_iter()
                .flat_map(|(_, _, name)| {
                    kinds.iter().map(move |k| ((k.to_string(), name.clone()), InPlace::default()))
                })
                .collect(),
            error: None,
        };
        assert_eq!(
            mesh_state(&clinic, Some(&looked(&["PeerAuthentication", "AuthorizationPolicy"]))),
            MeshState::InForce
        );
        assert_eq!(
            mesh_state(&clinic, Some(&looked(&["PeerAuthentication"]))),
            MeshState::Incomplete { in_place: 4, expected: 8, error: None }
        );
        assert_eq!(mesh_state(&clinic, Some(&OptionalState::default())), MeshState::NotInstalled);
        assert_eq!(mesh_state(&clinic, None), MeshState::Pending);
    }

    #[test]
    fn alert_routing_says_where_the_alerts_go() {
        let cp = clinic_platform(false);
        let mut clinic = crate::model::validate(&cp).unwrap();
        assert_eq!(routing(&clinic, None, &cp), None, "no routing in the policy: nothing said");
        clinic.alert_routing = Some(crate::policy::AlertRouting {
            critical_webhook: "https://alerts.example.fr/pager".into(),
            warning_webhook: "https://alerts.example.fr/tickets".into(),
        });
        let looked = |installed: bool, in_place: bool| OptionalState {
            installed,
            in_place: in_place
                .then(|| {
                    (("AlertmanagerConfig".to_string(), "lyon-alert-routing".to_string()), InPlace::default())
                })
                .into_iter()
                .collect(),
            error: None,
        };
        let said = routing(&clinic, Some(&looked(true, true)), &cp).unwrap();
        assert!(
            said.starts_with("alert routing: AlertmanagerConfig lyon-alert-routing sends critical"),
            "{said}"
        );
        let missing = routing(&clinic, Some(&looked(false, false)), &cp).unwrap();
        assert!(missing.contains("does not serve monitoring.coreos.com/v1alpha1"), "{missing}");
        // Not looked at this pass (children not converged): the last word stands, never a
        // "not served" the pass did not see.
        let settled =
            monitored_with(&cp, &format!("exporters are in place; logs: none shipped; traces: off; {said}"));
        assert_eq!(routing(&clinic, None, &settled), Some(said));
        assert_eq!(routing(&clinic, None, &cp).as_deref(), Some("alert routing: pending"));
    }

    #[test]
    fn vertical_recommendations_say_where_they_stand() {
        let cp = clinic_platform(true);
        let clinic = crate::model::validate(&cp).unwrap();
        let say = |looked: Option<&OptionalState>, cp: &ClinicPlatform| {
            vertical_recommendations(&clinic, looked, cp)
        };
        assert_eq!(
            say(Some(&state(true, 4)), &cp).as_deref(),
            Some("VerticalPodAutoscalers: recommendations for the 4 workloads (updateMode Off)")
        );
        assert_eq!(
            say(Some(&state(true, 1)), &cp).as_deref(),
            Some("VerticalPodAutoscalers: 1 of 4 in place")
        );
        assert!(say(Some(&state(false, 0)), &cp).unwrap().contains("does not serve autoscaling.k8s.io/v1"));
        // Not looked at this pass: the last status' word stands.
        assert_eq!(say(None, &cp).as_deref(), Some("VerticalPodAutoscalers: pending"));
        let settled = monitored_with(
            &cp,
            "exporters, ServiceMonitor and PrometheusRule are in place; logs: none shipped; traces: off; VerticalPodAutoscalers: recommendations for the 4 workloads (updateMode Off)",
        );
        assert_eq!(
            say(None, &settled).as_deref(),
            Some("VerticalPodAutoscalers: recommendations for the 4 workloads (updateMode Off)")
        );
        // Not asked: nothing said.
        let quiet = clinic_platform(false);
        let quiet_clinic = crate::model::validate(&quiet).unwrap();
        assert_eq!(vertical_recommendations(&quiet_clinic, Some(&state(true, 0)), &quiet), None);
    }
}
