//! The Ingress, when the spec gives a host: TLS from an existing Secret or a cert-manager issuer
//! (cert-manager's ingress-shim then creates the Certificate), HTTP redirected to HTTPS.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::*;
use crate::api::IssuerKind;

pub fn build(clinic: &Clinic) -> Option<Ingress> {
    let spec = clinic.spec.ingress.as_ref()?;
    let mut annotations = BTreeMap::from([
        ("nginx.ingress.kubernetes.io/ssl-redirect".to_string(), "true".to_string()),
        ("nginx.ingress.kubernetes.io/force-ssl-redirect".to_string(), "true".to_string()),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout".to_string(), "300".to_string()),
        ("nginx.ingress.kubernetes.io/proxy-body-size".to_string(), "50m".to_string()),
    ]);
    let secret_name = match (&spec.tls.secret_name, &spec.tls.issuer_ref) {
        (Some(secret), _) => secret.clone(),
        (None, Some(issuer)) => {
            let key = match issuer.kind {
                IssuerKind::ClusterIssuer => "cert-manager.io/cluster-issuer",
                IssuerKind::Issuer => "cert-manager.io/issuer",
            };
            annotations.insert(key.to_string(), issuer.name.clone());
            clinic.child_name("tls")
        }
        // The schema requires exactly one; fall back to the cert-manager name.
        (None, None) => clinic.child_name("tls"),
    };
    let mut meta = metadata(clinic, clinic.name.clone(), Component::Gateway);
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
                                port: Some(ServiceBackendPort { number: Some(80), name: None }),
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
