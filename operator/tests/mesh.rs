//! Mutual TLS through the platform's mesh (issue 16, `spec.security.mtls`): what the policy
//! allows, the pods' mesh label, the PeerAuthentications and AuthorizationPolicies (one of each
//! per component, checked here against the flows the NetworkPolicies admit), and the tunnel port
//! the NetworkPolicies open along the same edges. Istio's released CRDs admit these objects in
//! the e2e suite; ztunnel itself cannot be built here (docs/security.md says so).

mod common;

use std::collections::BTreeSet;

use clinic_operator::desired::{self, OptionalApi, SecretValues, mesh};
use clinic_operator::model::Clinic;
use clinic_operator::policy::Policy;
use common::clinic;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::DynamicObject;
use serde_json::{Value, json};

const MESH: &str = "mesh: {provider: istioAmbient}\n";

fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml, "test").unwrap_or_else(|e| panic!("{e}"))
}

fn meshed(policy_yaml: &str, spec: &str) -> Clinic {
    policy(policy_yaml)
        .admit(clinic(&format!("  security: {{mtls: true}}\n{spec}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn objects(c: &Clinic) -> Vec<DynamicObject> {
    desired::objects(c, &SecretValues::Placeholder)
}

fn find<'a>(objects: &'a [DynamicObject], kind: &str, name: &str) -> &'a DynamicObject {
    objects
        .iter()
        .find(|o| {
            o.types.as_ref().is_some_and(|t| t.kind == kind) && o.metadata.name.as_deref() == Some(name)
        })
        .unwrap_or_else(|| panic!("{kind}/{name} not built"))
}

fn kinds(objects: &[DynamicObject]) -> BTreeSet<String> {
    objects.iter().filter_map(|o| o.types.as_ref().map(|t| t.kind.clone())).collect()
}

/// Every NetworkPolicy's rules, as JSON, by name.
fn network_policies(objects: &[DynamicObject]) -> Vec<(String, Value)> {
    objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "NetworkPolicy"))
        .map(|o| {
            let typed: NetworkPolicy = serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap();
            (o.metadata.name.clone().unwrap(), serde_json::to_value(typed.spec.unwrap()).unwrap())
        })
        .collect()
}

#[test]
fn mutual_tls_is_the_platforms_decision() {
    let refused = Policy::default().admit(clinic("  security: {mtls: true}\n")).unwrap_err();
    assert_eq!(refused.field, "spec.security.mtls");
    assert!(refused.to_string().contains("no service mesh"), "{refused}");
    // Offered but not asked for: nothing of the mesh.
    let quiet = policy(MESH).admit(clinic("  {}\n")).unwrap();
    assert!(quiet.mesh.is_none());
    let built = objects(&quiet);
    assert!(!kinds(&built).contains("PeerAuthentication") && !kinds(&built).contains("AuthorizationPolicy"));
    let text = serde_json::to_string(&built).unwrap();
    assert!(
        !text.contains(mesh::DATAPLANE_MODE_LABEL) && !text.contains("15008"),
        "mesh traces without mtls"
    );
    // A misspelt key or an unknown mesh is refused when the policy is read.
    assert!(Policy::from_yaml("mesh: {provider: linkerd}\n", "test").is_err());
    assert!(Policy::from_yaml("mesh: {edgeMeshed: true}\n", "test").is_err());
}

#[test]
fn every_pod_joins_the_ambient_mesh() {
    let c = meshed(MESH, "");
    let built = objects(&c);
    for (kind, name) in [
        ("StatefulSet", "lyon-mariadb"),
        ("StatefulSet", "lyon-backend"),
        ("Deployment", "lyon-frontend"),
        ("Deployment", "lyon-gateway"),
    ] {
        let labels = &find(&built, kind, name).data["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels[mesh::DATAPLANE_MODE_LABEL], "ambient", "{kind}/{name}: {labels}");
        // The selector is not touched: it is immutable on a StatefulSet.
        let selector = &find(&built, kind, name).data["spec"]["selector"]["matchLabels"];
        assert!(selector.get(mesh::DATAPLANE_MODE_LABEL).is_none(), "{kind}/{name}: {selector}");
    }
}

#[test]
fn each_component_is_strict_but_for_the_ports_outside_the_mesh_reaches() {
    let c = meshed(MESH, "  ingress: {host: emr.lyon.example.fr, tls: {secretName: lyon-cert}}\n");
    let built = objects(&c);
    let peer = |name: &str| find(&built, "PeerAuthentication", name).data["spec"].clone();
    for (name, component) in [
        ("lyon-mariadb", "database"),
        ("lyon-backend", "backend"),
        ("lyon-frontend", "frontend"),
        ("lyon-gateway", "gateway"),
    ] {
        let spec = peer(name);
        assert_eq!(spec["mtls"]["mode"], "STRICT", "{name}");
        assert_eq!(spec["selector"]["matchLabels"]["app.kubernetes.io/component"], component, "{name}");
        assert_eq!(spec["selector"]["matchLabels"]["app.kubernetes.io/instance"], "lyon", "{name}");
    }
    // Plain traffic from the ingress controller and Prometheus (outside the mesh here): only
    // their ports, only on their components.
    assert_eq!(
        peer("lyon-gateway")["portLevelMtls"],
        json!({"8080": {"mode": "PERMISSIVE"}, "9113": {"mode": "PERMISSIVE"}})
    );
    assert_eq!(peer("lyon-mariadb")["portLevelMtls"], json!({"9104": {"mode": "PERMISSIVE"}}));
    assert!(peer("lyon-backend").get("portLevelMtls").is_none());
    assert!(peer("lyon-frontend").get("portLevelMtls").is_none());

    // A meshed edge and Prometheus: STRICT everywhere.
    let all_in = meshed(
        "mesh: {edgeInMesh: true, prometheusInMesh: true}\n",
        "  ingress: {host: emr.lyon.example.fr, tls: {secretName: lyon-cert}}\n",
    );
    for object in objects(&all_in).iter().filter(|o| o.types.as_ref().unwrap().kind == "PeerAuthentication") {
        assert!(object.data["spec"].get("portLevelMtls").is_none(), "{}", object.data);
    }
}

#[test]
fn authorization_follows_the_network_policies() {
    let c = meshed(MESH, "  ingress: {host: emr.lyon.example.fr, tls: {secretName: lyon-cert}}\n");
    let built = objects(&c);
    let rules = |name: &str| {
        let spec = &find(&built, "AuthorizationPolicy", name).data["spec"];
        assert_eq!(spec["action"], "ALLOW", "{name}");
        spec["rules"].clone()
    };
    let own_namespace = json!([{"source": {"namespaces": ["clinic-lyon"]}}]);
    assert_eq!(
        rules("lyon-mariadb"),
        json!([
            {"from": own_namespace, "to": [{"operation": {"ports": ["3306"]}}]},
            {"to": [{"operation": {"ports": ["9104"]}}]},
        ])
    );
    assert_eq!(
        rules("lyon-backend"),
        json!([{"from": own_namespace, "to": [{"operation": {"ports": ["8080"]}}]}])
    );
    assert_eq!(
        rules("lyon-frontend"),
        json!([{"from": own_namespace, "to": [{"operation": {"ports": ["80"]}}]}])
    );
    // The edge is plain (outside the mesh): only its port, which the NetworkPolicy holds to the
    // ingress controller's namespace.
    assert_eq!(
        rules("lyon-gateway"),
        json!([{"to": [{"operation": {"ports": ["8080"]}}]}, {"to": [{"operation": {"ports": ["9113"]}}]}])
    );

    // Meshed edge and Prometheus: their identities, and nobody else's.
    let all_in = meshed(
        "mesh: {edgeInMesh: true, prometheusInMesh: true}\n",
        "  ingress: {host: emr.lyon.example.fr, tls: {secretName: lyon-cert}}\n",
    );
    let built = objects(&all_in);
    assert_eq!(
        find(&built, "AuthorizationPolicy", "lyon-gateway").data["spec"]["rules"],
        json!([
            {"from": [{"source": {"namespaces": ["ingress-nginx"]}}], "to": [{"operation": {"ports": ["8080"]}}]},
            {"from": [{"source": {"namespaces": ["monitoring"]}}], "to": [{"operation": {"ports": ["9113"]}}]},
        ])
    );
    // No edge and no monitoring: the gateway admits nothing through the mesh (an ALLOW policy
    // with no rule), as its NetworkPolicy admits no one.
    let closed = meshed(MESH, "  monitoring: {enabled: false}\n");
    let closed = objects(&closed);
    let spec = &find(&closed, "AuthorizationPolicy", "lyon-gateway").data["spec"];
    assert_eq!(spec["action"], "ALLOW");
    assert!(spec.get("rules").is_none(), "{spec}");
    // Clustering adds the JGroups ports between backends.
    let clustered = meshed(
        MESH,
        "  openmrs:\n    backend:\n      replicas: 2\n      clustering: {elasticsearchUris: 'http://es:9200', attachmentsClaimName: attachments}\n",
    );
    assert_eq!(
        find(&objects(&clustered), "AuthorizationPolicy", "lyon-backend").data["spec"]["rules"][0]["to"],
        json!([{"operation": {"ports": ["8080", "7800", "7801"]}}])
    );
}

#[test]
fn the_tunnel_port_opens_along_the_same_edges_only() {
    let spec = "  ingress: {host: emr.lyon.example.fr, tls: {secretName: lyon-cert}}\n";
    let plain = network_policies(&objects(&policy(MESH).admit(clinic(spec)).unwrap()));
    let meshed_policies = network_policies(&objects(&meshed(MESH, spec)));
    let hbone = json!({"port": 15008, "protocol": "TCP"});
    // The same policies, plus the probes' one; every rule between the clinic's pods gets the
    // tunnel port next to its own, and nothing else changes.
    let names = |p: &[(String, Value)]| p.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let mut expected = names(&plain);
    expected.push("lyon-mesh-probes".into());
    assert_eq!(names(&meshed_policies), expected);
    for ((name, before), (_, after)) in plain.iter().zip(&meshed_policies) {
        for direction in ["ingress", "egress"] {
            let before = before[direction].as_array().cloned().unwrap_or_default();
            let after = after[direction].as_array().cloned().unwrap_or_default();
            assert_eq!(before.len(), after.len(), "{name} {direction}");
            for (rule_before, rule_after) in before.iter().zip(&after) {
                let peers = if direction == "ingress" { &rule_before["from"] } else { &rule_before["to"] };
                let between_pods = peers.as_array().is_some_and(|p| {
                    p.iter()
                        .all(|peer| peer["namespaceSelector"].is_null() && peer["podSelector"].is_object())
                });
                let mut ports = rule_before["ports"].as_array().cloned().unwrap_or_default();
                if between_pods
                    && peers.as_array().is_some_and(|p| !p.is_empty())
                    && !ports.is_empty()
                    && !is_dns(&ports)
                {
                    ports.push(hbone.clone());
                }
                let mut expected_rule = rule_before.clone();
                if !ports.is_empty() {
                    expected_rule["ports"] = json!(ports);
                }
                assert_eq!(&expected_rule, rule_after, "{name} {direction}");
            }
        }
    }
    let (_, probes) = meshed_policies.last().unwrap();
    assert_eq!(probes["ingress"], json!([{"from": [{"ipBlock": {"cidr": "169.254.7.127/32"}}]}]));
    assert_eq!(probes["policyTypes"], json!(["Ingress"]));
    assert_eq!(probes["podSelector"]["matchLabels"], json!({"app.kubernetes.io/instance": "lyon"}));

    // A meshed edge tunnels too: the controller's namespace reaches the gateway on 15008.
    let all_in = network_policies(&objects(&meshed("mesh: {edgeInMesh: true}\n", spec)));
    let gateway = &all_in.iter().find(|(n, _)| n == "lyon-gateway").unwrap().1;
    assert_eq!(gateway["ingress"][0]["ports"], json!([{"port": 8080, "protocol": "TCP"}, hbone]));
    // Prometheus outside the mesh: its exporter port only.
    assert_eq!(gateway["ingress"][1]["ports"], json!([{"port": 9113, "protocol": "TCP"}]));
}

fn is_dns(ports: &[Value]) -> bool {
    ports.iter().all(|p| p["port"] == 53)
}

#[test]
fn the_mesh_policies_are_optional_children_by_their_names() {
    let c = meshed(MESH, "");
    let listed: Vec<(String, String)> = desired::optional_children(&c)
        .into_iter()
        .filter(|(api, _, _)| *api == OptionalApi::Istio)
        .map(|(_, resource, name)| (resource.kind, name))
        .collect();
    let built: Vec<(String, String)> = objects(&c)
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.api_version == "security.istio.io/v1"))
        .map(|o| (o.types.as_ref().unwrap().kind.clone(), o.metadata.name.clone().unwrap()))
        .collect();
    assert_eq!(listed.len(), 8);
    assert_eq!(listed.iter().collect::<BTreeSet<_>>(), built.iter().collect::<BTreeSet<_>>());
    // Listed whether or not the clinic wants them, so that turning mTLS off removes them.
    let off = policy(MESH).admit(clinic("  {}\n")).unwrap();
    assert_eq!(
        desired::optional_children(&off).iter().filter(|(api, _, _)| *api == OptionalApi::Istio).count(),
        8
    );
}
