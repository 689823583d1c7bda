//! NetworkPolicies: deny everything for the platform's pods, then allow exactly the flows the
//! platform needs: ingress controller (or the Gateway's proxies) -> gateway -> frontend and
//! backend (its TLS port with `spec.openmrs.backend.tls`) -> MariaDB (with
//! `spec.database.highAvailability` also server <-> server, the mariadb-operator's namespace
//! -> servers and its exporter -> servers), DNS, and
//! the extra egress the spec declares, backend -> the trace collector the policy names (with
//! `spec.tracing`), Prometheus' namespace -> the exporters' ports, and the operator's namespace
//! -> the gateway's port when the policy has the operator probe the clinics.
//!
//! With `spec.security.mtls` the same flows between meshed pods also open the mesh's tunnel port
//! (HBONE), and the kubelet's probes are admitted from the address the mesh gives them
//! ([`super::mesh`]); nothing else widens.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(port)), protocol: Some("TCP".into()), end_port: None }
}

fn udp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(port)), protocol: Some("UDP".into()), end_port: None }
}

fn pods_of(clinic: &Clinic, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(selector(clinic, component)), ..Default::default() }
}

fn namespace_named(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])),
        ..Default::default()
    }
}

/// Every pod of the platform (all components share the instance label).
fn platform_pods(clinic: &Clinic) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("app.kubernetes.io/instance".to_string(), clinic.name.clone())])),
        ..Default::default()
    }
}

fn policy(
    clinic: &Clinic,
    suffix: &str,
    pods: LabelSelector,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: metadata(clinic, clinic.child_name(suffix), Component::Platform),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

fn from(peers: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule { from: Some(peers), ports: Some(ports) }
}

fn to(peers: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule { to: Some(peers), ports: Some(ports) }
}

/// `ports` of a flow between meshed pods: in the mesh the flow arrives on the tunnel port
/// (HBONE), the destination port inside it (which the AuthorizationPolicy holds to `ports`).
fn meshed(clinic: &Clinic, mut ports: Vec<NetworkPolicyPort>) -> Vec<NetworkPolicyPort> {
    if clinic.mesh.is_some() {
        ports.push(tcp(super::mesh::HBONE_PORT));
    }
    ports
}

/// `ports` of a flow from the edge or Prometheus: tunnelled too when the policy says they are
/// in the mesh.
fn meshed_if(clinic: &Clinic, in_mesh: bool, ports: Vec<NetworkPolicyPort>) -> Vec<NetworkPolicyPort> {
    if in_mesh { meshed(clinic, ports) } else { ports }
}

pub fn build(clinic: &Clinic) -> Vec<NetworkPolicy> {
    let mut policies = vec![
        policy(clinic, "default-deny", platform_pods(clinic), vec![], vec![]),
        allow_dns(clinic),
        gateway(clinic),
        policy(
            clinic,
            "frontend",
            selector(clinic, Component::Frontend),
            vec![from(
                vec![pods_of(clinic, Component::Gateway)],
                meshed(clinic, vec![tcp(super::frontend::PORT)]),
            )],
            vec![],
        ),
        backend(clinic),
        database(clinic),
    ];
    policies.extend(database_exporter(clinic));
    if clinic.mesh.is_some() {
        policies.push(mesh_probes(clinic));
    }
    policies
}

/// The kubelet's probes of meshed pods come from the address the mesh rewrites them to (they
/// are plain and bypass the mesh); where the CNI holds the node's own traffic to the
/// NetworkPolicies, the probes need this rule. Istio documents it for any port: the address is
/// link-local and only the node's own rewrite produces it.
fn mesh_probes(clinic: &Clinic) -> NetworkPolicy {
    let probes = NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr: super::mesh::PROBE_SOURCE.into(), except: None }),
        ..Default::default()
    };
    let rule = NetworkPolicyIngressRule { from: Some(vec![probes]), ports: None };
    NetworkPolicy {
        metadata: metadata(clinic, clinic.child_name("mesh-probes"), Component::Platform),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(platform_pods(clinic)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![rule]),
            egress: None,
        }),
    }
}

fn allow_dns(clinic: &Clinic) -> NetworkPolicy {
    let kube_dns = NetworkPolicyPeer {
        namespace_selector: Some(namespace_named("kube-system")),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    policy(
        clinic,
        "allow-dns",
        platform_pods(clinic),
        vec![],
        vec![to(vec![kube_dns], vec![udp(53), tcp(53)])],
    )
}

/// An exporter's port, tunnelled too when the policy puts Prometheus in the mesh.
fn exporter_ports(clinic: &Clinic, port: i32) -> Vec<NetworkPolicyPort> {
    let in_mesh = clinic.mesh.as_ref().is_some_and(|m| m.prometheus_in_mesh);
    meshed_if(clinic, in_mesh, vec![tcp(port)])
}

/// Prometheus' namespace, when monitoring is on: it reaches the exporters' ports and nothing else.
fn prometheus(clinic: &Clinic) -> Option<NetworkPolicyPeer> {
    super::monitoring::enabled(clinic).then(|| NetworkPolicyPeer {
        namespace_selector: Some(namespace_named(&clinic.spec.monitoring.prometheus_namespace)),
        ..Default::default()
    })
}

fn gateway(clinic: &Clinic) -> NetworkPolicy {
    let edge_in_mesh = clinic.mesh.as_ref().is_some_and(|m| m.edge_in_mesh);
    let edge_ports = || meshed_if(clinic, edge_in_mesh, vec![tcp(super::gateway::PORT)]);
    let mut ingress = Vec::new();
    if let Some(controller) = &clinic.spec.ingress {
        let controller = NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(&controller.controller_namespace)),
            ..Default::default()
        };
        ingress.push(from(vec![controller], edge_ports()));
    }
    // The Gateway's proxies, where the platform's policy says they run.
    if let Some(platform_gateway) = &clinic.gateway {
        let proxies = NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(platform_gateway.proxy_namespace())),
            ..Default::default()
        };
        ingress.push(from(vec![proxies], edge_ports()));
    }
    if let Some(prometheus) = prometheus(clinic) {
        ingress.push(from(vec![prometheus], exporter_ports(clinic, super::monitoring::NGINX_EXPORTER_PORT)));
    }
    // The operator's own probe (the policy's `clinicProbe`): the gateway's port, plain, as a
    // user's request arrives.
    if let Some(probe) = &clinic.probe {
        let operator = NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(&probe.operator_namespace)),
            ..Default::default()
        };
        ingress.push(from(vec![operator], vec![tcp(super::gateway::PORT)]));
    }
    let egress = vec![
        to(vec![pods_of(clinic, Component::Frontend)], meshed(clinic, vec![tcp(super::frontend::PORT)])),
        to(
            vec![pods_of(clinic, Component::Backend)],
            meshed(clinic, vec![tcp(super::backend::serving_port(clinic))]),
        ),
    ];
    policy(clinic, "gateway", selector(clinic, Component::Gateway), ingress, egress)
}

fn backend(clinic: &Clinic) -> NetworkPolicy {
    // With the backend's TLS, its TLS port alone: OpenMRS's own is reached over loopback only.
    let mut ingress = vec![from(
        vec![pods_of(clinic, Component::Gateway)],
        meshed(clinic, vec![tcp(super::backend::serving_port(clinic))]),
    )];
    let mut egress = vec![to(vec![database_pods(clinic)], meshed(clinic, vec![tcp(super::database::PORT)]))];
    if clinic.spec.openmrs.backend.clustering.is_some() {
        let jgroups = meshed(clinic, super::backend::JGROUPS_PORTS.iter().map(|p| tcp(*p)).collect());
        ingress.push(from(vec![pods_of(clinic, Component::Backend)], jgroups.clone()));
        egress.push(to(vec![pods_of(clinic, Component::Backend)], jgroups));
        // The Elasticsearch the clinic names, when it is a Service of the cluster in a namespace
        // the policy admitted (`searchNamespaces`) or the clinic's own.
        for (namespace, port) in clinic.search_services() {
            let search = NetworkPolicyPeer {
                namespace_selector: Some(namespace_named(&namespace)),
                ..Default::default()
            };
            egress.push(to(vec![search], vec![tcp(i32::from(port))]));
        }
    }
    // The trace collector the platform names, and only it (its pods, when the policy names
    // their labels).
    if let Some(tracing) = &clinic.tracing {
        let collector = &tracing.collector;
        let collector_pods = NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(&collector.namespace)),
            pod_selector: (!collector.pod_labels.is_empty()).then(|| LabelSelector {
                match_labels: Some(collector.pod_labels.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        egress.push(to(vec![collector_pods], vec![tcp(i32::from(collector.port))]));
    }
    for rule in &clinic.spec.security.extra_egress {
        let block = NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: rule.cidr.clone(), except: None }),
            ..Default::default()
        };
        egress.push(to(vec![block], vec![tcp(rule.port)]));
    }
    policy(clinic, "backend", selector(clinic, Component::Backend), ingress, egress)
}

/// MariaDB's pods: ours, or a replicated database's, which carry the mariadb-operator's labels.
fn database_pods(clinic: &Clinic) -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(database_selector(clinic)), ..Default::default() }
}

fn database_selector(clinic: &Clinic) -> LabelSelector {
    match clinic.database_cluster {
        Some(_) => LabelSelector {
            match_labels: Some(super::database_cluster::pod_labels(clinic)),
            ..Default::default()
        },
        None => selector(clinic, Component::Database),
    }
}

fn database(clinic: &Clinic) -> NetworkPolicy {
    let mysql = || meshed(clinic, vec![tcp(super::database::PORT)]);
    let mut ingress = vec![from(vec![pods_of(clinic, Component::Backend)], mysql())];
    let mut egress = Vec::new();
    match &clinic.database_cluster {
        None => {
            if let Some(prometheus) = prometheus(clinic) {
                ingress.push(from(
                    vec![prometheus],
                    exporter_ports(clinic, super::monitoring::MYSQLD_EXPORTER_PORT),
                ));
            }
        }
        Some(cluster) => {
            // Replicas read the primary's binary log; the mariadb-operator's controller runs SQL
            // on every server and calls its agent; its exporter reads the servers' status.
            ingress.push(from(vec![database_pods(clinic)], mysql()));
            egress.push(to(vec![database_pods(clinic)], mysql()));
            let controller = NetworkPolicyPeer {
                namespace_selector: Some(namespace_named(&cluster.operator_namespace)),
                ..Default::default()
            };
            ingress.push(from(
                vec![controller],
                vec![tcp(super::database::PORT), tcp(super::database_cluster::AGENT_PORT)],
            ));
            if super::monitoring::enabled(clinic) {
                ingress.push(from(vec![database_exporter_pods(clinic)], vec![tcp(super::database::PORT)]));
            }
        }
    }
    policy(clinic, "mariadb", database_selector(clinic), ingress, egress)
}

fn database_exporter_selector(clinic: &Clinic) -> LabelSelector {
    LabelSelector {
        match_labels: Some(super::database_cluster::exporter_pod_labels(clinic)),
        ..Default::default()
    }
}

fn database_exporter_pods(clinic: &Clinic) -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(database_exporter_selector(clinic)), ..Default::default() }
}

/// A replicated database's exporter (the mariadb-operator's Deployment): Prometheus in, the
/// MariaDB servers out, nothing else.
fn database_exporter(clinic: &Clinic) -> Option<NetworkPolicy> {
    clinic.database_cluster.as_ref()?;
    let prometheus = prometheus(clinic)?;
    let ingress =
        vec![from(vec![prometheus], exporter_ports(clinic, super::monitoring::MYSQLD_EXPORTER_PORT))];
    let egress = vec![to(vec![database_pods(clinic)], vec![tcp(super::database::PORT)])];
    Some(policy(clinic, "mariadb-exporter", database_exporter_selector(clinic), ingress, egress))
}
