//! The Ingress, when the spec gives a host: TLS from an existing Secret or a cert-manager issuer
//! (cert-manager's ingress-shim then creates the Certificate), HTTP redirected to HTTPS.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::*;
use crate::api::IssuerRef;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

/// The Ingress is named after the clinic.
pub fn name(clinic: &Clinic) -> String {
    clinic.name.clone()
}

pub fn build(clinic: &Clinic) -> Option<Ingress> {
    let spec = clinic.spec.ingress.as_ref()?;
    // For the two controllers documented (docs/security.md#tls); each ignores the other's.
    // ingress-nginx: HTTP redirected to HTTPS, OpenMRS' long requests and uploads. Traefik: the
    // router serves TLS only, so the clinic is never answered over plain HTTP (the redirect is
    // the entry point's setting).
    // TLS suites: ingress-nginx takes the platform's per server, in its order; Traefik the
    // platform's TLSOption when it names one (protocol versions are each controller's setting).
    let tls = &clinic.ingress_tls;
    let mut annotations = BTreeMap::from([
        ("nginx.ingress.kubernetes.io/ssl-redirect".to_string(), "true".to_string()),
        ("nginx.ingress.kubernetes.io/force-ssl-redirect".to_string(), "true".to_string()),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout".to_string(), "300".to_string()),
        ("nginx.ingress.kubernetes.io/proxy-body-size".to_string(), "50m".to_string()),
        ("nginx.ingress.kubernetes.io/ssl-ciphers".to_string(), tls.nginx_ciphers.clone()),
        ("nginx.ingress.kubernetes.io/ssl-prefer-server-ciphers".to_string(), "true".to_string()),
        ("traefik.ingress.kubernetes.io/router.tls".to_string(), "true".to_string()),
    ]);
    if let Some(options) = &tls.traefik_tls_options {
        annotations.insert("traefik.ingress.kubernetes.io/router.tls.options".to_string(), options.clone());
    }
    let secret_name = match (&spec.tls.secret_name, &spec.tls.issuer_ref) {
        (Some(secret), _) => secret.clone(),
        // The operator creates the Certificate itself (see `certificate`): no ingress-shim
        // annotation, so cert-manager does not make a second one.
        (None, Some(_)) => clinic.child_name("tls"),
        // The schema requires exactly one; fall back to the cert-manager name.
        (None, None) => clinic.child_name("tls"),
    };
    let mut meta = metadata(clinic, name(clinic), Component::Gateway);
    meta.annotations = Some(annotations);
    Some(Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![spec.host.clone()]),
                secret_name: Some(secret_name),
            }]),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: super::gateway::name(clinic),
                                port: Some(ServiceBackendPort {
                                    number: Some(super::gateway::SERVICE_PORT),
                                    name: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// The cert-manager `Certificate` for the Ingress host, when TLS comes from an issuer.
pub fn certificate(clinic: &Clinic) -> Option<DynamicObject> {
    let ingress = clinic.spec.ingress.as_ref()?;
    let issuer = ingress.tls.issuer_ref.as_ref()?;
    Some(cert_manager_certificate(
        clinic,
        clinic.child_name("tls"),
        Component::Gateway,
        issuer,
        json!({ "dnsNames": [ingress.host] }),
    ))
}

/// A cert-manager `Certificate` `name` of the clinic, for a server, issued by `issuer` into the
/// Secret of the same name, its ECDSA P-256 key rotated at each renewal; `names` (an object)
/// adds what it certifies and any other field of its spec.
pub(crate) fn cert_manager_certificate(
    clinic: &Clinic,
    name: String,
    component: Component,
    issuer: &IssuerRef,
    names: serde_json::Value,
) -> DynamicObject {
    let mut certificate = DynamicObject::new(&name, &certificate_resource()).within(&clinic.namespace);
    certificate.metadata = metadata(clinic, name.clone(), component);
    let mut spec = json!({
        "secretName": name,
        "issuerRef": { "name": issuer.name, "kind": issuer.kind.as_str(), "group": "cert-manager.io" },
        "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
        "usages": ["digital signature", "key encipherment", "server auth"],
    });
    if let (Some(spec), serde_json::Value::Object(names)) = (spec.as_object_mut(), names) {
        spec.extend(names);
    }
    certificate.data = json!({ "spec": spec });
    certificate
}
