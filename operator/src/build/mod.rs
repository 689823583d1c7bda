//! Pure builders: `Clinic` model in, Kubernetes objects out. No I/O here; this is what
//! `clinic-operator render` prints and what the reconciler applies.
//!
//! One module per child family; `ls src/build` shows where any child is made.

pub mod autoscaling;
pub mod backend;
pub mod backup;
pub mod database;
pub mod frontend;
pub mod gateway;
pub mod ingress;
pub mod monitoring;
pub mod network;
pub mod secrets;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, LocalObjectReference, PodSecurityContext, ResourceRequirements, SeccompProfile,
    SecurityContext, Sysctl, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::DynamicObject;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::Placement;
use crate::model::{Clinic, Component};

pub use secrets::SecretValues;

/// Annotation on pod templates with the hash of the configuration they mount, so a changed
/// ConfigMap rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "clinic.audioprothese.fr/config-hash";

/// Every object the operator wants for `clinic`, in apply order (config and Services before the
/// workloads that use them).
pub fn desired(clinic: &Clinic, secret_values: &SecretValues) -> Vec<DynamicObject> {
    let mut out = Vec::with_capacity(24);
    for secret in secrets::build(clinic, secret_values) {
        push(&mut out, &secret);
    }
    for policy in network::build(clinic) {
        push(&mut out, &policy);
    }
    let db_config = database::config_map(clinic);
    push(&mut out, &db_config);
    push(&mut out, &database::service(clinic));
    push(&mut out, &database::stateful_set(clinic, &db_config));

    for service in backend::services(clinic) {
        push(&mut out, &service);
    }
    push(&mut out, &backend::stateful_set(clinic));

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
    if let Some(certificate) = ingress::certificate(clinic) {
        out.push(certificate);
    }
    out.extend(monitoring::service_monitor(clinic));
    out.extend(monitoring::prometheus_rule(clinic));
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

/// Children of APIs the operator uses only when installed (cert-manager, Prometheus
/// Operator): part of [`desired`] and of `render`, applied by their own path once discovery
/// says the CRDs are served. Every one the clinic may have, with its name, so that one no
/// longer wanted can be removed.
pub fn optional_children(clinic: &Clinic) -> Vec<(OptionalApi, kube::api::ApiResource, String)> {
    vec![
        (OptionalApi::CertManager, ingress::certificate_resource(), clinic.child_name("tls")),
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
    ]
}

/// An API the operator uses only when installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalApi {
    CertManager,
    PrometheusOperator,
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

/// Pod-level security settings that pass Pod Security "restricted". Volumes belong to group
/// `uid` (fsGroup); processes run with primary group `gid`.
pub(crate) fn pod_security_context(uid: i64, gid: i64, sysctls: Vec<Sysctl>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(gid),
        fs_group: Some(uid),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        sysctls: if sysctls.is_empty() { None } else { Some(sysctls) },
        ..Default::default()
    }
}

/// Container-level security settings: restricted, read-only root, every capability dropped.
/// `privileged: false` is written out so that a change to it is drift we can see.
pub(crate) fn container_security_context(uid: i64) -> SecurityContext {
    container_security_context_as(uid, uid)
}

/// [`container_security_context`] with a primary group other than the user's own.
pub(crate) fn container_security_context_as(uid: i64, gid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(gid),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

pub(crate) fn resources(
    override_: Option<&ResourceRequirements>,
    requests: (&str, &str),
    limits: (&str, &str),
) -> ResourceRequirements {
    if let Some(r) = override_ {
        return r.clone();
    }
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])
    };
    ResourceRequirements { requests: Some(pair(requests)), limits: Some(pair(limits)), ..Default::default() }
}

pub(crate) fn image_pull_secrets(clinic: &Clinic) -> Option<Vec<LocalObjectReference>> {
    let secrets = &clinic.spec.images.pull_secrets;
    if secrets.is_empty() {
        None
    } else {
        Some(secrets.iter().map(|name| LocalObjectReference { name: name.clone() }).collect())
    }
}

pub(crate) fn pull_policy(clinic: &Clinic) -> String {
    format!("{:?}", clinic.spec.images.pull_policy)
}

/// Topology spread: the user's constraints, or by default replicas prefer distinct nodes.
pub(crate) fn topology_spread(
    clinic: &Clinic,
    component: Component,
    placement: &Placement,
) -> Option<Vec<TopologySpreadConstraint>> {
    if !placement.topology_spread_constraints.is_empty() {
        return Some(placement.topology_spread_constraints.clone());
    }
    Some(vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(selector(clinic, component)),
        ..Default::default()
    }])
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

/// An environment variable with a literal value.
pub(crate) fn env(name: &str, value: impl Into<String>) -> k8s_openapi::api::core::v1::EnvVar {
    k8s_openapi::api::core::v1::EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// An environment variable read from a Secret key.
pub(crate) fn env_from_secret(name: &str, secret: &str, key: &str) -> k8s_openapi::api::core::v1::EnvVar {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn empty_dir(name: &str, size_limit: &str) -> k8s_openapi::api::core::v1::Volume {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size_limit.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn mount(name: &str, path: &str) -> k8s_openapi::api::core::v1::VolumeMount {
    k8s_openapi::api::core::v1::VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

pub(crate) fn read_only_mount(name: &str, path: &str) -> k8s_openapi::api::core::v1::VolumeMount {
    k8s_openapi::api::core::v1::VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Every container of a pod gets the same hardening; used by tests and `render` checks.
pub fn all_containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<&Container> {
    spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect()
}

/// Required node affinity on the region/zone labels of `spec.residency`: data stays there.
pub(crate) fn residency_affinity(clinic: &Clinic) -> Option<k8s_openapi::api::core::v1::Affinity> {
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    };
    let residency = clinic.spec.residency.as_ref()?;
    let mut requirements = Vec::new();
    for (key, values) in [
        ("topology.kubernetes.io/region", &residency.regions),
        ("topology.kubernetes.io/zone", &residency.zones),
    ] {
        if !values.is_empty() {
            requirements.push(NodeSelectorRequirement {
                key: key.into(),
                operator: "In".into(),
                values: Some(values.clone()),
            });
        }
    }
    Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(requirements),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// What differs between the components' pods; everything else is shared by `pod_spec`.
#[derive(Default)]
pub(crate) struct PodParts {
    pub uid: i64,
    /// Primary group of the processes when it is not `uid` (the OpenMRS backend runs with 0).
    pub gid: Option<i64>,
    pub sysctls: Vec<k8s_openapi::api::core::v1::Sysctl>,
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
    pub volumes: Vec<k8s_openapi::api::core::v1::Volume>,
    /// Spread the component's replicas over nodes (not for single-replica databases).
    pub spread: Option<Component>,
    pub grace_seconds: Option<i64>,
}

/// A pod of the platform: restricted security context, no API token, no service links, the
/// image pull secrets, placement and residency.
pub(crate) fn pod_spec(
    clinic: &Clinic,
    placement: &Placement,
    parts: PodParts,
) -> k8s_openapi::api::core::v1::PodSpec {
    k8s_openapi::api::core::v1::PodSpec {
        init_containers: non_empty_vec(&parts.init_containers),
        containers: parts.containers,
        security_context: Some(pod_security_context(
            parts.uid,
            parts.gid.unwrap_or(parts.uid),
            parts.sysctls,
        )),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // Declared although they are the defaults: a field the operator declares is one it owns,
        // so drift detection sees a `true` patched in by anyone and puts it back (otherwise Pod
        // Security refuses every new pod while the template looks converged).
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        share_process_namespace: Some(false),
        image_pull_secrets: image_pull_secrets(clinic),
        node_selector: non_empty_map(&placement.node_selector),
        affinity: residency_affinity(clinic),
        tolerations: non_empty_vec(&placement.tolerations),
        topology_spread_constraints: parts.spread.and_then(|c| topology_spread(clinic, c, placement)),
        termination_grace_period_seconds: parts.grace_seconds,
        volumes: non_empty_vec(&parts.volumes),
        ..Default::default()
    }
}

/// Metadata of a component's pod template: its labels, `annotations` (e.g. [`config_hash`]),
/// and Velero's volume annotations, derived from the pod's own volumes so that a volume added
/// to a pod is excluded from backups without a second list to keep in step (`keep_in_backups`
/// names the emptyDirs a backup must hold).
pub(crate) fn pod_template_metadata(
    clinic: &Clinic,
    component: Component,
    pod: &k8s_openapi::api::core::v1::PodSpec,
    mut annotations: BTreeMap<String, String>,
    keep_in_backups: &[&str],
) -> ObjectMeta {
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    annotations.extend(backup::pod_volume_annotations(clinic, volumes, keep_in_backups));
    ObjectMeta {
        labels: Some(clinic.labels(component)),
        annotations: non_empty_map(&annotations),
        ..Default::default()
    }
}

/// The annotation that rolls a pod when the ConfigMap it mounts changes.
pub(crate) fn config_hash(config: &k8s_openapi::api::core::v1::ConfigMap) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash_of(&config.data))])
}

/// A volume from a ConfigMap.
pub(crate) fn config_volume(
    name: &str,
    config: &k8s_openapi::api::core::v1::ConfigMap,
) -> k8s_openapi::api::core::v1::Volume {
    k8s_openapi::api::core::v1::Volume {
        name: name.into(),
        config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
            name: config.metadata.name.clone().unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    }
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
