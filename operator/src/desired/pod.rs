//! What every pod of the platform shares: restricted security contexts, resources, volumes,
//! environment, probes, placement and residency, the pod template's metadata, and the
//! Deployment around the stateless web components (frontend, gateway).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction,
    Lifecycle, LifecycleHandler, LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, SleepAction, Sysctl, TCPSocketAction,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{CONFIG_HASH_ANNOTATION, backup, hash_of, metadata, non_empty_map, non_empty_vec, selector};
use crate::api::Placement;
use crate::model::{Clinic, Component};

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

/// The node labels replicas spread over by default: nodes, then zones (a zone lost takes one
/// replica, not all).
pub const SPREAD_TOPOLOGY_KEYS: [&str; 2] = ["kubernetes.io/hostname", "topology.kubernetes.io/zone"];

/// Topology spread: the user's constraints, or by default replicas prefer distinct nodes and
/// distinct zones. Both are preferences (`ScheduleAnyway`): a cluster whose nodes carry no zone
/// label, or has one zone, schedules as before.
pub(crate) fn topology_spread(
    clinic: &Clinic,
    component: Component,
    placement: &Placement,
) -> Option<Vec<TopologySpreadConstraint>> {
    if !placement.topology_spread_constraints.is_empty() {
        return Some(placement.topology_spread_constraints.clone());
    }
    let spread = |key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(selector(clinic, component)),
        ..Default::default()
    };
    Some(SPREAD_TOPOLOGY_KEYS.iter().map(|key| spread(key)).collect())
}

/// An environment variable with a literal value.
pub(crate) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() }
}

/// An environment variable read from a Secret key.
pub(crate) fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    use k8s_openapi::api::core::v1::{EnvVarSource, SecretKeySelector};
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

pub(crate) fn empty_dir(name: &str, size_limit: &str) -> Volume {
    use k8s_openapi::api::core::v1::EmptyDirVolumeSource;
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size_limit.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() }
}

pub(crate) fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..Default::default() }
}

/// Every container of a pod gets the same hardening; used by tests and `render` checks.
pub fn all_containers(spec: &PodSpec) -> Vec<&Container> {
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
    pub sysctls: Vec<Sysctl>,
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
    pub volumes: Vec<Volume>,
    /// Spread the component's replicas over nodes (not for single-replica databases).
    pub spread: Option<Component>,
    pub grace_seconds: Option<i64>,
    /// Behind a Service: each container waits [`DRAIN_SECONDS`] before it is signalled to stop.
    pub drains: bool,
}

/// How long a serving pod's containers keep running once the pod is being deleted, before they
/// are signalled: the time for kube-proxy and the Ingress controller to stop sending it new
/// requests (the endpoint is withdrawn at once, the rules follow within a second or two), so
/// that a pod's end (a rollout, a drain, a scale-down) fails no request. The kubelet's own
/// `sleep` action: no binary needed in the image.
pub(crate) const DRAIN_SECONDS: i64 = 5;

/// A pod of the platform: restricted security context, no API token, no service links, the
/// image pull secrets, placement and residency.
pub(crate) fn pod_spec(clinic: &Clinic, placement: &Placement, mut parts: PodParts) -> PodSpec {
    for container in parts.init_containers.iter_mut().chain(parts.containers.iter_mut()) {
        bound_ephemeral_storage(container, &parts.volumes);
    }
    if parts.drains {
        for container in &mut parts.containers {
            container.lifecycle = Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    sleep: Some(SleepAction { seconds: DRAIN_SECONDS }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    PodSpec {
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
        priority_class_name: placement.priority_class_name.clone(),
        volumes: non_empty_vec(&parts.volumes),
        ..Default::default()
    }
}

/// What a container's logs may take on the node: the kubelet rotates them at 10 MiB and keeps
/// five files.
const LOG_ALLOWANCE_MIB: u64 = 64;

/// Requests and bounds a container's ephemeral storage (so that it is not the first evicted under
/// disk pressure, and cannot fill the node): its logs plus the size limits of the emptyDirs it
/// mounts, which count towards its pod's total (a bound below them would evict the pod when, say,
/// the backup dump fills its volume). An override that names ephemeral storage is kept.
fn bound_ephemeral_storage(container: &mut Container, volumes: &[Volume]) {
    const KEY: &str = "ephemeral-storage";
    let mounted_mib: u64 = container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| volumes.iter().find(|v| v.name == m.name))
        .filter_map(|v| v.empty_dir.as_ref()?.size_limit.as_ref())
        .filter_map(|q| crate::model::quantity_value(&q.0))
        .map(|bytes| (bytes / (1024.0 * 1024.0)).ceil() as u64)
        .sum();
    let resources = container.resources.get_or_insert_with(Default::default);
    resources
        .requests
        .get_or_insert_with(BTreeMap::new)
        .entry(KEY.into())
        .or_insert_with(|| Quantity(format!("{LOG_ALLOWANCE_MIB}Mi")));
    resources
        .limits
        .get_or_insert_with(BTreeMap::new)
        .entry(KEY.into())
        .or_insert_with(|| Quantity(format!("{}Mi", LOG_ALLOWANCE_MIB + mounted_mib)));
}

/// Metadata of a component's pod template: its labels, `annotations` (e.g. [`config_hash`]),
/// and Velero's volume annotations, derived from the pod's own volumes so that a volume added
/// to a pod is excluded from backups without a second list to keep in step (`keep_in_backups`
/// names the emptyDirs a backup must hold).
pub(crate) fn pod_template_metadata(
    clinic: &Clinic,
    component: Component,
    pod: &PodSpec,
    mut annotations: BTreeMap<String, String>,
    keep_in_backups: &[&str],
) -> ObjectMeta {
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    annotations.extend(backup::pod_volume_annotations(clinic, volumes, keep_in_backups));
    let mut labels = clinic.labels(component);
    labels.extend(super::mesh::pod_labels(clinic));
    ObjectMeta { labels: Some(labels), annotations: non_empty_map(&annotations), ..Default::default() }
}

/// The annotation that rolls a pod when the ConfigMap it mounts changes.
pub(crate) fn config_hash(config: &ConfigMap) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash_of(&config.data))])
}

/// A volume from a ConfigMap.
pub(crate) fn config_volume(name: &str, config: &ConfigMap) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config.metadata.name.clone().unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn unprivileged_ports() -> Vec<Sysctl> {
    vec![Sysctl { name: "net.ipv4.ip_unprivileged_port_start".into(), value: "0".into() }]
}

pub(crate) fn web_probe(port: IntOrString, path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port,
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// A TCP connection to a named port: the liveness check ("the process still accepts
/// connections"), never the readiness one — a liveness probe that fails when the pod is merely
/// busy restarts it and turns slowness into an outage.
pub(crate) fn tcp_probe(port: &str, period: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::String(port.into()), host: None }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Rolling updates never take the last serving pod away.
pub(crate) fn rolling_update() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// A named TCP port of a container.
pub(crate) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The Deployment of a stateless web component (frontend, gateway): rolling updates that never
/// take the last serving pod away, `replicas` unless an HPA owns them, and `annotations` on the
/// pod template (a config hash, say).
pub(crate) fn web_deployment(
    clinic: &Clinic,
    component: Component,
    name: String,
    replicas: i32,
    pod: PodSpec,
    annotations: BTreeMap<String, String>,
) -> Deployment {
    Deployment {
        metadata: metadata(clinic, name, component),
        spec: Some(DeploymentSpec {
            replicas: replicas_unless_autoscaled(clinic, replicas),
            selector: selector(clinic, component),
            strategy: Some(rolling_update()),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(pod_template_metadata(clinic, component, &pod, annotations, &[])),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// With an HPA the operator must not own `spec.replicas`, or every apply would fight it.
pub(crate) fn replicas_unless_autoscaled(clinic: &Clinic, replicas: i32) -> Option<i32> {
    if clinic.spec.autoscaling.enabled { None } else { Some(replicas) }
}
