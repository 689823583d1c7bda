//! Pure builders: `Clinic` model in, Kubernetes objects out. No I/O here; this is what
//! `clinic-operator render` prints and what the reconciler applies.
//!
//! One module per child family; `ls src/desired` shows where any child is made, and
//! [`pod`] what every pod shares.

pub mod autoscaling;
pub mod backend;
pub mod backup;
pub mod database;
pub mod database_cluster;
pub mod frontend;
pub mod gateway;
pub mod ingress;
pub mod internal_tls;
pub mod mesh;
pub mod monitoring;
pub mod network;
pub mod pod;
pub mod route;
pub mod secrets;
pub mod tls_proxy;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::DynamicObject;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Clinic, Component};

pub use pod::all_containers;
pub(crate) use pod::*;
pub use secrets::SecretValues;

/// Annotation on pod templates with the hash of the configuration they mount, so a changed
/// ConfigMap rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "clinic.audioprothese.fr/config-hash";

/// Every object the operator wants for `clinic`, in apply order (config and Services before the
/// workloads that use them).
pub fn objects(clinic: &Clinic, secret_values: &SecretValues) -> Vec<DynamicObject> {
    let mut out = Vec::with_capacity(24);
    for secret in secrets::build(clinic, secret_values) {
        push(&mut out, &secret);
    }
    for secret in internal_tls::placeholders(clinic) {
        push(&mut out, &secret);
    }
    for policy in network::build(clinic) {
        push(&mut out, &policy);
    }
    // A replicated database is the mariadb-operator's to run: its `MariaDB` comes with the
    // children of optional APIs below.
    if clinic.database_cluster.is_none() {
        let db_config = database::config_map(clinic);
        push(&mut out, &db_config);
        push(&mut out, &database::service(clinic));
        push(&mut out, &database::stateful_set(clinic, &db_config));
    }

    for service in backend::services(clinic) {
        push(&mut out, &service);
    }
    let tls_proxy = tls_proxy::config_map(clinic);
    if let Some(config) = &tls_proxy {
        push(&mut out, config);
    }
    push(&mut out, &backend::stateful_set(clinic, tls_proxy.as_ref()));

    push(&mut out, &frontend::service(clinic));
    push(&mut out, &frontend::deployment(clinic));

    let nginx = gateway::config_map(clinic);
    push(&mut out, &nginx);
    push(&mut out, &gateway::service(clinic));
    push(&mut out, &gateway::deployment(clinic, &nginx));

    for hpa in autoscaling::horizontal_pod_autoscalers(clinic) {
        push(&mut out, &hpa);
    }
    for pdb in autoscaling::pod_disruption_budgets(clinic) {
        push(&mut out, &pdb);
    }
    if let Some(ingress) = ingress::build(clinic) {
        push(&mut out, &ingress);
    }
    for service in monitoring::metrics_services(clinic) {
        push(&mut out, &service);
    }
    if !monitoring::dashboard_outside(clinic)
        && let Some(dashboard) = monitoring::dashboard(clinic)
    {
        push(&mut out, &dashboard);
    }
    if let Some(rules) = monitoring::loki_rules(clinic) {
        push(&mut out, &rules);
    }
    if let Some(certificate) = ingress::certificate(clinic) {
        out.push(certificate);
    }
    out.extend(database_cluster::build(clinic));
    out.extend(internal_tls::certificates(clinic));
    out.extend(route::build(clinic));
    out.extend(mesh::build(clinic));
    out.extend(autoscaling::vertical_pod_autoscalers(clinic));
    out.extend(monitoring::service_monitor(clinic));
    out.extend(monitoring::prometheus_rule(clinic));
    out.extend(monitoring::alertmanager_config(clinic));
    out
}

/// What the operator writes for a clinic outside its namespace, by their own paths (they cannot
/// be owned children): the Velero Schedule in Velero's namespace and a dashboard in Grafana's.
/// Part of `render`, so a GitOps review sees every object.
pub fn outside(clinic: &Clinic) -> Vec<DynamicObject> {
    let mut out = Vec::new();
    out.extend(backup::schedule(clinic));
    if let Some(dashboard) = monitoring::external_dashboard(clinic) {
        out.push(to_dynamic(&dashboard));
    }
    out
}

/// Children of APIs the operator uses only when installed (cert-manager, Gateway API, Istio,
/// Prometheus Operator and its AlertmanagerConfig, Vertical Pod Autoscaler, mariadb-operator):
/// part of [`objects`] and of `render`, applied by their own path once discovery says the CRDs
/// are served. Every one the clinic may have, with its name, so that one no
/// longer wanted can be removed.
pub fn optional_children(clinic: &Clinic) -> Vec<(OptionalApi, kube::api::ApiResource, String)> {
    let mut children = vec![
        (OptionalApi::CertManager, ingress::certificate_resource(), clinic.child_name("tls")),
        (OptionalApi::CertManager, ingress::certificate_resource(), clinic.database_tls_secret()),
        (OptionalApi::CertManager, ingress::certificate_resource(), clinic.backend_tls_secret()),
        (OptionalApi::GatewayApi, route::resource(), route::name(clinic)),
        (OptionalApi::GatewayApi, route::resource(), route::redirect_name(clinic)),
        (
            OptionalApi::PrometheusOperator,
            monitoring::service_monitor_resource(),
            clinic.child_name("metrics"),
        ),
        (
            OptionalApi::PrometheusOperator,
            monitoring::prometheus_rule_resource(),
            clinic.child_name("alerts"),
        ),
    ];
    for (_, _, name) in workloads(clinic) {
        children.push((OptionalApi::Istio, mesh::peer_authentication_resource(), name.clone()));
        children.push((OptionalApi::Istio, mesh::authorization_policy_resource(), name));
    }
    if clinic.database_cluster.is_some() {
        children.push((
            OptionalApi::DatabaseOperator,
            database_cluster::resource(),
            database_cluster::name(clinic),
        ));
    }
    children.push((
        OptionalApi::AlertmanagerConfig,
        monitoring::alertmanager_config_resource(),
        clinic.child_name("alert-routing"),
    ));
    for (_, _, name) in workloads(clinic) {
        children.push((
            OptionalApi::VerticalPodAutoscaler,
            autoscaling::vertical_pod_autoscaler_resource(),
            name,
        ));
    }
    children
}

/// An API the operator uses only when installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalApi {
    CertManager,
    GatewayApi,
    /// Istio's security API (PeerAuthentication, AuthorizationPolicy), for `spec.security.mtls`.
    Istio,
    PrometheusOperator,
    /// The Vertical Pod Autoscaler's API, for `spec.autoscaling.verticalRecommendations`.
    VerticalPodAutoscaler,
    /// The Prometheus Operator's `AlertmanagerConfig` (v1alpha1), for the policy's
    /// `alertRouting`.
    AlertmanagerConfig,
    /// The mariadb-operator's `MariaDB`, for `spec.database.highAvailability`. Unlike the
    /// others it is not optional for a clinic that asks for it: without it nothing is written
    /// (`DatabaseOperatorMissing`).
    DatabaseOperator,
}

/// The clinic's workloads: (component, kind, name). Each one's NetworkPolicy, mesh policies and
/// VerticalPodAutoscaler carry its name.
pub fn workloads(clinic: &Clinic) -> [(Component, &'static str, String); 4] {
    [
        (Component::Database, "StatefulSet", database::name(clinic)),
        (Component::Backend, "StatefulSet", backend::name(clinic)),
        (Component::Frontend, "Deployment", frontend::name(clinic)),
        (Component::Gateway, "Deployment", gateway::name(clinic)),
    ]
}

fn push<K>(out: &mut Vec<DynamicObject>, object: &K)
where
    K: kube::Resource<DynamicType = ()> + Serialize,
{
    out.push(to_dynamic(object));
}

/// Converts a typed object into the uniform form the apply path and `render` use.
pub fn to_dynamic<K>(object: &K) -> DynamicObject
where
    K: kube::Resource<DynamicType = ()> + Serialize,
{
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&()).into());
        map.insert("kind".into(), K::kind(&()).into());
    }
    // A typed k8s-openapi object always has metadata, apiVersion and kind, so this cannot fail;
    // fall back to an empty object rather than panic.
    serde_json::from_value(value)
        .unwrap_or_else(|_| DynamicObject::new("", &kube::api::ApiResource::erase::<K>(&())))
}

/// Metadata of a same-namespace child.
pub(crate) fn metadata(clinic: &Clinic, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(clinic.namespace.clone()),
        labels: Some(clinic.labels(component)),
        owner_references: clinic.owner_references(),
        ..Default::default()
    }
}

pub(crate) fn selector(clinic: &Clinic, component: Component) -> LabelSelector {
    LabelSelector { match_labels: Some(clinic.selector_labels(component)), ..Default::default() }
}

pub(crate) fn non_empty_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    if map.is_empty() { None } else { Some(map.clone()) }
}

pub(crate) fn non_empty_vec<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    if v.is_empty() { None } else { Some(v.to_vec()) }
}

/// Hex SHA-256 of a serializable value (for config-hash annotations).
pub fn hash_of<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A ClusterIP Service exposing the component's `http` container port on `port`.
pub(crate) fn http_service(
    clinic: &Clinic,
    name: String,
    component: Component,
    port: i32,
) -> k8s_openapi::api::core::v1::Service {
    port_service(clinic, name, component, "http", port)
}

/// A ClusterIP Service exposing the component's container port named `port_name` on `port`.
pub(crate) fn port_service(
    clinic: &Clinic,
    name: String,
    component: Component,
    port_name: &str,
    port: i32,
) -> k8s_openapi::api::core::v1::Service {
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    Service {
        metadata: metadata(clinic, name, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(clinic.selector_labels(component)),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
