//! Mutual TLS through the platform's mesh (`spec.security.mtls`, Istio in ambient mode): the
//! pods join the mesh by a label, and each component gets a STRICT `PeerAuthentication` and an
//! `AuthorizationPolicy` that admits, by mesh identity, exactly the flows its NetworkPolicy
//! admits by address. Ambient's node proxy (ztunnel) carries the traffic between meshed pods
//! over port 15008 (HBONE); [`super::network`] opens that port along the same edges.
//!
//! All of a clinic's pods run as its namespace's `default` ServiceAccount, so the identity a
//! policy can name is the namespace's; which pod may open which flow stays the NetworkPolicy's
//! to decide (the HBONE port is opened only between the pods a flow joins).

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::*;
use crate::policy::MeshPolicy;

pub const GROUP: &str = "security.istio.io";

/// The label that puts a pod in Istio's ambient mesh.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";

/// The port ztunnel tunnels meshed traffic through (HBONE).
pub const HBONE_PORT: i32 = 15008;

/// The address ambient gives the kubelet's probes (they bypass ztunnel, plain, from the node):
/// a NetworkPolicy that does not admit it fails every probe of a meshed pod where the CNI
/// enforces policies on the node's own traffic.
pub const PROBE_SOURCE: &str = "169.254.7.127/32";

pub fn peer_authentication_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "PeerAuthentication"),
        "peerauthentications",
    )
}

pub fn authorization_policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "AuthorizationPolicy"),
        "authorizationpolicies",
    )
}

/// The labels a pod template of `clinic` gets to join the mesh (none without `spec.security.mtls`).
pub fn pod_labels(clinic: &Clinic) -> BTreeMap<String, String> {
    match &clinic.mesh {
        Some(_) => BTreeMap::from([(DATAPLANE_MODE_LABEL.to_string(), "ambient".to_string())]),
        None => BTreeMap::new(),
    }
}

/// Who may open a flow into a meshed component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Meshed pods of these namespaces, authenticated by their mesh certificates.
    Namespaces(Vec<String>),
    /// Plain traffic from outside the mesh (the port is PERMISSIVE); the NetworkPolicy alone
    /// says from where.
    OutsideMesh,
}

/// A flow into a component: its ports and who may open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub ports: Vec<i32>,
    pub source: Source,
}

/// The flows into `component`, the same as its NetworkPolicy admits.
pub fn inbound(clinic: &Clinic, mesh: &MeshPolicy, component: Component) -> Vec<Inbound> {
    let peers = || Source::Namespaces(vec![clinic.namespace.clone()]);
    let prometheus = || match mesh.prometheus_in_mesh {
        true => Source::Namespaces(vec![clinic.spec.monitoring.prometheus_namespace.clone()]),
        false => Source::OutsideMesh,
    };
    let monitored = super::monitoring::enabled(clinic);
    let mut flows = Vec::new();
    match component {
        Component::Database => {
            flows.push(Inbound { ports: vec![super::database::PORT], source: peers() });
            if monitored {
                flows.push(Inbound {
                    ports: vec![super::monitoring::MYSQLD_EXPORTER_PORT],
                    source: prometheus(),
                });
            }
        }
        Component::Backend => {
            let mut ports = vec![super::backend::serving_port(clinic)];
            if clinic.spec.openmrs.backend.clustering.is_some() {
                ports.extend(super::backend::JGROUPS_PORTS);
            }
            flows.push(Inbound { ports, source: peers() });
        }
        Component::Frontend => flows.push(Inbound { ports: vec![super::frontend::PORT], source: peers() }),
        Component::Gateway => {
            let edge = edge_namespaces(clinic);
            if !edge.is_empty() {
                let source = if mesh.edge_in_mesh { Source::Namespaces(edge) } else { Source::OutsideMesh };
                flows.push(Inbound { ports: vec![super::gateway::PORT], source });
            }
            if monitored {
                flows.push(Inbound {
                    ports: vec![super::monitoring::NGINX_EXPORTER_PORT],
                    source: prometheus(),
                });
            }
        }
        Component::Platform => {}
    }
    flows
}

/// Where the clinic's users come from: the Ingress controller's namespace and the Gateway
/// proxies' namespace, as the NetworkPolicy of the gateway admits them.
pub fn edge_namespaces(clinic: &Clinic) -> Vec<String> {
    let mut namespaces = Vec::new();
    if let Some(ingress) = &clinic.spec.ingress {
        namespaces.push(ingress.controller_namespace.clone());
    }
    if let Some(gateway) = &clinic.gateway {
        namespaces.push(gateway.proxy_namespace().to_string());
    }
    namespaces.dedup();
    namespaces
}

/// The clinic's PeerAuthentications and AuthorizationPolicies; none without `spec.security.mtls`.
pub fn build(clinic: &Clinic) -> Vec<DynamicObject> {
    let Some(mesh) = &clinic.mesh else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(8);
    // Named after the workload, as its NetworkPolicy is: the three that decide who reaches a
    // component read side by side.
    for (component, _, name) in workloads(clinic) {
        let flows = inbound(clinic, mesh, component);
        out.push(peer_authentication(clinic, component, name.clone(), &flows));
        out.push(authorization_policy(clinic, component, name, &flows));
    }
    out
}

fn workload_selector(clinic: &Clinic, component: Component) -> Value {
    json!({ "matchLabels": clinic.selector_labels(component) })
}

/// STRICT, but for the ports plain traffic from outside the mesh may reach.
fn peer_authentication(
    clinic: &Clinic,
    component: Component,
    name: String,
    flows: &[Inbound],
) -> DynamicObject {
    let permissive: BTreeMap<String, Value> = flows
        .iter()
        .filter(|f| f.source == Source::OutsideMesh)
        .flat_map(|f| f.ports.iter())
        .map(|port| (port.to_string(), json!({ "mode": "PERMISSIVE" })))
        .collect();
    let mut spec = json!({
        "selector": workload_selector(clinic, component),
        "mtls": { "mode": "STRICT" },
    });
    if !permissive.is_empty() {
        spec["portLevelMtls"] = json!(permissive);
    }
    object(clinic, &peer_authentication_resource(), name, component, spec)
}

/// ALLOW exactly the flows: anything else that reaches the component through the mesh is
/// refused (an ALLOW policy with no rule admits nothing).
fn authorization_policy(
    clinic: &Clinic,
    component: Component,
    name: String,
    flows: &[Inbound],
) -> DynamicObject {
    let rules: Vec<Value> = flows
        .iter()
        .map(|flow| {
            let ports: Vec<String> = flow.ports.iter().map(i32::to_string).collect();
            let mut rule = json!({ "to": [{ "operation": { "ports": ports } }] });
            if let Source::Namespaces(namespaces) = &flow.source {
                rule["from"] = json!([{ "source": { "namespaces": namespaces } }]);
            }
            rule
        })
        .collect();
    let mut spec = json!({ "selector": workload_selector(clinic, component), "action": "ALLOW" });
    if !rules.is_empty() {
        spec["rules"] = json!(rules);
    }
    object(clinic, &authorization_policy_resource(), name, component, spec)
}

fn object(
    clinic: &Clinic,
    resource: &ApiResource,
    name: String,
    component: Component,
    spec: Value,
) -> DynamicObject {
    let mut object = DynamicObject::new(&name, resource).within(&clinic.namespace);
    object.metadata = metadata(clinic, name, component);
    object.data = json!({ "spec": spec });
    object
}
