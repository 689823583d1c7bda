//! The HTTPRoutes of a clinic published on a platform Gateway (`spec.route`, Gateway API): one
//! on the Gateway's HTTPS listener sending every path to the clinic's gateway Service (which
//! routes `/openmrs` and the SPA, as behind an Ingress), and, when the platform names a plain
//! HTTP listener, one that redirects the host to HTTPS there. The Gateway itself is the
//! platform's: never created or changed here.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::*;
use crate::policy::AllowedGateway;

pub const GROUP: &str = "gateway.networking.k8s.io";

/// The route on the HTTPS listener is named after the clinic.
pub fn name(clinic: &Clinic) -> String {
    clinic.name.clone()
}

/// The route that redirects plain HTTP to HTTPS.
pub fn redirect_name(clinic: &Clinic) -> String {
    clinic.child_name("redirect")
}

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "HTTPRoute"), "httproutes")
}

/// The parent reference of a route on `listener` of the Gateway, spelt with the CRD's
/// defaults so that what the API server stores reads as declared.
pub fn parent_ref(gateway: &AllowedGateway, listener: &str) -> Value {
    json!({
        "group": GROUP,
        "kind": "Gateway",
        "namespace": gateway.namespace,
        "name": gateway.name,
        "sectionName": listener,
    })
}

/// Every path of the host, as the CRD's default match spells it.
fn every_path() -> Value {
    json!([{ "path": { "type": "PathPrefix", "value": "/" } }])
}

/// The clinic's HTTPRoutes; none without `spec.route` (or before the policy admitted it).
pub fn build(clinic: &Clinic) -> Vec<DynamicObject> {
    let (Some(route), Some(gateway)) = (&clinic.spec.route, &clinic.gateway) else {
        return Vec::new();
    };
    let https = object(
        clinic,
        name(clinic),
        json!({
            "parentRefs": [parent_ref(gateway, &gateway.listener)],
            "hostnames": [route.host],
            "rules": [{
                "matches": every_path(),
                "backendRefs": [{
                    "group": "",
                    "kind": "Service",
                    "name": super::gateway::name(clinic),
                    "port": super::gateway::SERVICE_PORT,
                    "weight": 1,
                }],
            }],
        }),
    );
    let mut routes = vec![https];
    if let Some(listener) = &gateway.redirect_listener {
        routes.push(object(
            clinic,
            redirect_name(clinic),
            json!({
                "parentRefs": [parent_ref(gateway, listener)],
                "hostnames": [route.host],
                "rules": [{
                    "matches": every_path(),
                    "filters": [{
                        "type": "RequestRedirect",
                        "requestRedirect": { "scheme": "https", "statusCode": 301 },
                    }],
                }],
            }),
        ));
    }
    routes
}

fn object(clinic: &Clinic, name: String, spec: Value) -> DynamicObject {
    let mut route = DynamicObject::new(&name, &resource()).within(&clinic.namespace);
    route.metadata = metadata(clinic, name, Component::Gateway);
    route.data = json!({ "spec": spec });
    route
}
