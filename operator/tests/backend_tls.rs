//! TLS between the gateway and the backend without a mesh (issue 16, `spec.openmrs.backend.tls`):
//! the proxy beside OpenMRS, the Service and NetworkPolicies that leave only its port, the
//! gateway's verification, and the certificate the clinic's CA signs for the backend's names
//! (checked with OpenSSL as a TLS client would). The real node runs it: the gateway serves the
//! backend through the proxy, and a plaintext connection to OpenMRS's port is refused.

mod common;

use std::process::Command;

use clinic_operator::desired::internal_tls::{self, Leaf};
use clinic_operator::desired::{self, OptionalApi, SecretValues, tls_proxy};
use clinic_operator::policy::Policy;
use common::{clinic, mounted_secret, tempdir, typed};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;

const ON: &str = "  openmrs: {backend: {tls: {enabled: true}}}\n";

fn objects(spec: &str) -> Vec<DynamicObject> {
    desired::objects(&clinic(spec), &SecretValues::Placeholder)
}

fn backend_pod(objects: &[DynamicObject]) -> PodSpec {
    let sts: StatefulSet = typed(objects, "StatefulSet", "lyon-backend");
    sts.spec.unwrap().template.spec.unwrap()
}

fn gateway_pod(objects: &[DynamicObject]) -> PodSpec {
    let deployment: Deployment = typed(objects, "Deployment", "lyon-gateway");
    deployment.spec.unwrap().template.spec.unwrap()
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> Option<&'a Container> {
    pod.containers.iter().find(|c| c.name == name)
}

/// (port, protocol) of every rule of a NetworkPolicy's ingress and egress.
fn ports(policy: &NetworkPolicy) -> (Vec<i32>, Vec<i32>) {
    let spec = policy.spec.as_ref().unwrap();
    let of = |ports: Option<&Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>| -> Vec<i32> {
        ports
            .into_iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect()
    };
    (
        spec.ingress.iter().flatten().flat_map(|r| of(r.ports.as_ref())).collect(),
        spec.egress.iter().flatten().flat_map(|r| of(r.ports.as_ref())).collect(),
    )
}

#[test]
fn off_by_default_the_gateway_reaches_openmrs_directly() {
    let objects = objects("  {}\n");
    let pod = backend_pod(&objects);
    assert!(container(&pod, "tls-proxy").is_none());
    let service: Service = typed(&objects, "Service", "lyon-backend");
    let service_ports = service.spec.unwrap().ports.unwrap();
    assert_eq!(service_ports.len(), 1);
    assert_eq!((service_ports[0].name.as_deref(), service_ports[0].port), (Some("http"), 8080));
    let conf: ConfigMap = typed(&objects, "ConfigMap", "lyon-gateway-nginx");
    let conf = &conf.data.unwrap()["nginx.conf"];
    assert!(conf.contains("proxy_pass http://backend;"));
    // Exactly as before the option existed: its hash rolls every gateway when it changes.
    assert!(conf.contains("    server lyon-backend:8080;\n  }\n\n  server {\n"), "{conf}");
    assert!(!conf.contains("proxy_ssl"), "{conf}");
    let gateway = gateway_pod(&objects);
    assert_eq!(gateway.containers[0].command.as_ref().unwrap()[0], "nginx", "plain nginx, no reloader");
    let backend: NetworkPolicy = typed(&objects, "NetworkPolicy", "lyon-backend");
    assert_eq!(ports(&backend).0, [8080]);
    assert!(!objects.iter().any(|o| o.metadata.name.as_deref() == Some("lyon-backend-tls")));
}

#[test]
fn with_tls_a_proxy_serves_the_backend_and_only_its_port_is_reachable() {
    let objects = objects(ON);
    let pod = backend_pod(&objects);
    let proxy = container(&pod, "tls-proxy").expect("the TLS proxy");
    // The gateway's image and user, hardened like every container.
    assert_eq!(
        proxy.image.as_deref(),
        Some("docker.io/openmrs/openmrs-reference-application-3-gateway:3.7.x")
    );
    let security = proxy.security_context.as_ref().unwrap();
    assert_eq!((security.run_as_user, security.read_only_root_filesystem), (Some(101), Some(true)));
    assert_eq!(mounted_secret(&pod, proxy, tls_proxy::CERT_DIR), ("lyon-backend-tls".into(), None));
    let exposed: Vec<(String, i32)> =
        proxy.ports.iter().flatten().map(|p| (p.name.clone().unwrap(), p.container_port)).collect();
    assert_eq!(exposed, [("https".to_string(), 8443), ("tls-health".to_string(), 8444)]);
    // Readiness and liveness are different checks (a slow proxy is not restarted for it).
    assert!(proxy.readiness_probe.as_ref().unwrap().http_get.is_some());
    assert!(proxy.liveness_probe.as_ref().unwrap().tcp_socket.is_some());
    // The proxy reloads when its certificate changes.
    let command = proxy.command.as_ref().unwrap();
    assert_eq!(&command[..2], ["/bin/sh", "-c"]);
    assert_eq!(
        &command[4..],
        ["/etc/nginx/clinic/nginx.conf", "/etc/nginx/tls/tls.crt", "/etc/nginx/tls/tls.key"]
    );
    // OpenMRS stays first: `kubectl logs` and `exec` default to it.
    assert_eq!(pod.containers[0].name, "openmrs");

    let config: ConfigMap = typed(&objects, "ConfigMap", "lyon-backend-tls-proxy");
    let conf = &config.data.unwrap()["nginx.conf"];
    for line in [
        "listen 8443 ssl;",
        "ssl_protocols TLSv1.3;",
        "ssl_certificate /etc/nginx/tls/tls.crt;",
        "ssl_certificate_key /etc/nginx/tls/tls.key;",
        "server 127.0.0.1:8080;",
        "proxy_pass http://openmrs;",
    ] {
        assert!(conf.lines().any(|l| l.trim() == line), "{line} in {conf}");
    }

    // The Service offers the TLS port alone.
    let service: Service = typed(&objects, "Service", "lyon-backend");
    let service_ports = service.spec.unwrap().ports.unwrap();
    assert_eq!(service_ports.len(), 1, "{service_ports:?}");
    assert_eq!((service_ports[0].name.as_deref(), service_ports[0].port), (Some("https"), 8443));
    assert_eq!(service_ports[0].target_port, Some(IntOrString::String("https".into())));

    // The gateway verifies the certificate against the clinic's CA and the Service's name.
    let gateway_conf: ConfigMap = typed(&objects, "ConfigMap", "lyon-gateway-nginx");
    let gateway_conf = &gateway_conf.data.unwrap()["nginx.conf"];
    for line in [
        "server lyon-backend:8443;",
        "proxy_pass https://backend;",
        "proxy_ssl_verify on;",
        "proxy_ssl_trusted_certificate /etc/nginx/backend-tls/ca.crt;",
        "proxy_ssl_name lyon-backend.clinic-lyon.svc;",
        "proxy_ssl_server_name on;",
        "proxy_ssl_protocols TLSv1.3;",
    ] {
        assert!(gateway_conf.lines().any(|l| l.trim() == line), "{line} in {gateway_conf}");
    }
    let gateway = gateway_pod(&objects);
    let main = container(&gateway, "gateway").unwrap();
    assert_eq!(
        mounted_secret(&gateway, main, tls_proxy::GATEWAY_CA_DIR),
        ("lyon-backend-tls".into(), Some(vec!["ca.crt".into()])),
        "the gateway sees the CA, never the backend's key"
    );
    assert_eq!(
        main.command.as_ref().unwrap().last().map(String::as_str),
        Some("/etc/nginx/backend-tls/ca.crt")
    );

    // NetworkPolicies: gateway -> backend on 8443 only; OpenMRS's 8080 is loopback-only.
    let backend: NetworkPolicy = typed(&objects, "NetworkPolicy", "lyon-backend");
    assert_eq!(ports(&backend).0, [8443]);
    let gateway: NetworkPolicy = typed(&objects, "NetworkPolicy", "lyon-gateway");
    let egress = ports(&gateway).1;
    assert!(egress.contains(&8443) && !egress.contains(&8080), "{egress:?}");
}

#[test]
fn the_clinics_ca_signs_the_backends_certificate_for_its_names_only() {
    let c = clinic(ON);
    assert!(c.runs_clinic_ca());
    let now = jiff::Timestamp::now();
    let (ca_cert, ca_key) = internal_tls::new_ca(&c, now).unwrap();
    let issued = internal_tls::issue(&c, Leaf::Backend, &ca_cert, &ca_key, now).unwrap();
    let dir = tempdir("backend-tls");
    let (ca, cert) = (dir.join("ca.crt"), dir.join("tls.crt"));
    std::fs::write(&ca, &ca_cert).unwrap();
    std::fs::write(&cert, &issued.certificate).unwrap();
    let (ca, cert) = (ca.to_str().unwrap(), cert.to_str().unwrap());
    let verify = |extra: &[&str]| {
        let out = Command::new("openssl")
            .args(["verify", "-CAfile", ca, "-purpose", "sslserver"])
            .args(extra)
            .arg(cert)
            .output()
            .expect("openssl runs");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    for name in ["lyon-backend", "lyon-backend.clinic-lyon.svc", "lyon-backend.clinic-lyon.svc.cluster.local"]
    {
        let (ok, out) = verify(&["-verify_hostname", name]);
        assert!(ok, "{name}: {out}");
    }
    // Not MariaDB's name, and no loopback address (only MariaDB's exporter needs one).
    assert!(!verify(&["-verify_hostname", "lyon-mariadb"]).0);
    assert!(!verify(&["-verify_ip", "127.0.0.1"]).0);

    let secret = internal_tls::tls_secret(&c, Leaf::Backend, &issued);
    assert_eq!(secret.metadata.name.as_deref(), Some("lyon-backend-tls"));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let labels = secret.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "backend");
}

#[test]
fn render_shows_the_ca_and_the_backends_certificate_even_without_database_tls() {
    let objects =
        objects("  database: {tls: {enabled: false}}\n  openmrs: {backend: {tls: {enabled: true}}}\n");
    let secrets: Vec<&str> = objects
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Secret"))
        .filter_map(|o| o.metadata.name.as_deref())
        .filter(|n| n.contains("-tls") || n.ends_with("-ca"))
        .collect();
    assert_eq!(secrets, ["lyon-db-ca", "lyon-backend-tls"]);
}

#[test]
fn with_an_issuer_cert_manager_issues_it_and_the_policy_decides_which() {
    let spec = "  openmrs: {backend: {tls: {enabled: true, issuerRef: {name: internal-ca}}}}\n";
    let c = clinic(spec);
    assert!(c.runs_clinic_ca(), "MariaDB's certificate (TLS on by default) still comes from the clinic's CA");
    let c = clinic(&format!("{spec}  database: {{tls: {{enabled: false}}}}\n"));
    assert!(!c.runs_clinic_ca());
    let objects = desired::objects(&c, &SecretValues::Placeholder);
    let certificate = objects
        .iter()
        .find(|o| {
            o.types.as_ref().is_some_and(|t| t.kind == "Certificate")
                && o.metadata.name.as_deref() == Some("lyon-backend-tls")
        })
        .expect("the backend's Certificate");
    let spec_json = &certificate.data["spec"];
    assert_eq!(spec_json["secretName"], "lyon-backend-tls");
    assert_eq!(spec_json["commonName"], "lyon-backend");
    assert_eq!(spec_json["issuerRef"]["name"], "internal-ca");
    assert!(spec_json.get("ipAddresses").is_none(), "{spec_json}");
    assert!(
        desired::optional_children(&c).iter().any(|(api, ar, name)| *api == OptionalApi::CertManager
            && ar.kind == "Certificate"
            && name == "lyon-backend-tls"),
        "known, so that one no longer wanted is removed"
    );

    let policy = Policy::from_yaml("clusterIssuers: [public-acme]\n", "test").unwrap();
    let refused = policy.admit(clinic(spec)).unwrap_err().to_string();
    assert!(refused.contains("spec.openmrs.backend.tls.issuerRef.name"), "{refused}");
    let policy = Policy::from_yaml("clusterIssuers: [internal-ca]\n", "test").unwrap();
    assert!(policy.admit(clinic(spec)).is_ok());
}
