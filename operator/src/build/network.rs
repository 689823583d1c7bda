//! NetworkPolicies: deny everything for the platform's pods, then allow exactly the flows the
//! platform needs: ingress controller -> gateway -> frontend and backend -> MariaDB, DNS, and
//! the extra egress the spec declares, and Prometheus' namespace -> the exporters' ports.

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

pub fn build(clinic: &Clinic) -> Vec<NetworkPolicy> {
    let backend_port = super::backend::PORT;
    let clustered = clinic.spec.openmrs.backend.clustering.is_some();

    let default_deny = policy(clinic, "default-deny", platform_pods(clinic), vec![], vec![]);

    let dns = policy(
        clinic,
        "allow-dns",
        platform_pods(clinic),
        vec![],
        vec![to(
            vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_named("kube-system")),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            vec![udp(53), tcp(53)],
        )],
    );

    let mut gateway_ingress = match &clinic.spec.ingress {
        Some(ingress) => vec![from(
            vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_named(&ingress.controller_namespace)),
                ..Default::default()
            }],
            vec![tcp(super::gateway::PORT)],
        )],
        None => vec![],
    };
    let mut database_ingress =
        vec![from(vec![pods_of(clinic, Component::Backend)], vec![tcp(super::database::PORT)])];
    if super::monitoring::enabled(clinic) {
        // Prometheus' namespace reaches the exporters' ports and nothing else.
        let prometheus = || NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(&clinic.spec.monitoring.prometheus_namespace)),
            ..Default::default()
        };
        gateway_ingress.push(from(vec![prometheus()], vec![tcp(super::monitoring::NGINX_EXPORTER_PORT)]));
        database_ingress.push(from(vec![prometheus()], vec![tcp(super::monitoring::MYSQLD_EXPORTER_PORT)]));
    }
    let gateway = policy(
        clinic,
        "gateway",
        selector(clinic, Component::Gateway),
        gateway_ingress,
        vec![
            to(vec![pods_of(clinic, Component::Frontend)], vec![tcp(super::frontend::PORT)]),
            to(vec![pods_of(clinic, Component::Backend)], vec![tcp(backend_port)]),
        ],
    );

    let frontend = policy(
        clinic,
        "frontend",
        selector(clinic, Component::Frontend),
        vec![from(vec![pods_of(clinic, Component::Gateway)], vec![tcp(super::frontend::PORT)])],
        vec![],
    );

    let mut backend_ingress = vec![from(vec![pods_of(clinic, Component::Gateway)], vec![tcp(backend_port)])];
    let mut backend_egress =
        vec![to(vec![pods_of(clinic, Component::Database)], vec![tcp(super::database::PORT)])];
    if clustered {
        let jgroups: Vec<_> = super::backend::JGROUPS_PORTS.iter().map(|p| tcp(*p)).collect();
        backend_ingress.push(from(vec![pods_of(clinic, Component::Backend)], jgroups.clone()));
        backend_egress.push(to(vec![pods_of(clinic, Component::Backend)], jgroups));
    }
    for rule in &clinic.spec.security.extra_egress {
        backend_egress.push(to(
            vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock { cidr: rule.cidr.clone(), except: None }),
                ..Default::default()
            }],
            vec![tcp(rule.port)],
        ));
    }
    let backend =
        policy(clinic, "backend", selector(clinic, Component::Backend), backend_ingress, backend_egress);

    let database = policy(clinic, "mariadb", selector(clinic, Component::Database), database_ingress, vec![]);

    vec![default_deny, dns, gateway, frontend, backend, database]
}
