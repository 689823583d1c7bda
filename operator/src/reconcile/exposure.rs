//! What the Gateway's controller says of the clinic's HTTPRoutes (`spec.route`): each route's
//! `status.parents` entry for the platform's Gateway, read back from the last apply or read,
//! turned into the `RouteAccepted` condition. Pure: the status function and its tests use it.

use serde_json::Value;

use super::error::Problem;
use super::uncached::optional::{InPlace, OptionalState};
use crate::api::Condition;
use crate::desired::route;
use crate::model::Clinic;
use crate::policy::AllowedGateway;

pub const ROUTE_ACCEPTED: &str = "RouteAccepted";

/// Where the clinic's routes stand with their Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    /// `spec.route` is set but the cluster serves no Gateway API.
    ApiMissing,
    /// A route could not be read or applied.
    Failed(Problem),
    /// A route is not in place yet (being applied, or not looked at this pass).
    Applying { route: String },
    /// The Gateway's controller has not answered for the route's current generation.
    AwaitingController { route: String },
    /// The Gateway does not accept a route: the controller's reason and message.
    NotAccepted { route: String, why: String },
    /// The Gateway accepts a route but cannot resolve what it points at.
    RefsNotResolved { route: String, why: String },
    /// Every route is accepted with its references resolved.
    Accepted { controller: String },
    /// The routes were not looked at this pass: the clinic is paused, or its other children
    /// did not converge.
    Unchecked,
}

impl RouteState {
    /// Users can reach the clinic through the Gateway.
    pub fn is_accepted(&self) -> bool {
        matches!(self, RouteState::Accepted { .. })
    }

    /// Still waiting on something that changes by itself (the apply, the controller): worth
    /// looking again soon, since the operator does not watch routes.
    pub fn is_pending(&self) -> bool {
        matches!(self, RouteState::Applying { .. } | RouteState::AwaitingController { .. })
    }
}

/// The state of the clinic's routes (`routes`: what this pass found of them, `None` when it did
/// not look); `None` without `spec.route`.
pub fn state(clinic: &Clinic, routes: Option<&OptionalState>) -> Option<RouteState> {
    let gateway = clinic.gateway.as_ref()?;
    let Some(routes) = routes else {
        return Some(RouteState::Unchecked);
    };
    if let Some(e) = &routes.error {
        return Some(RouteState::Failed(e.clone()));
    }
    if !routes.installed {
        return Some(RouteState::ApiMissing);
    }
    let mut listeners = vec![(route::name(clinic), gateway.listener.as_str())];
    if let Some(listener) = &gateway.redirect_listener {
        listeners.push((route::redirect_name(clinic), listener.as_str()));
    }
    let mut controller = String::new();
    for (name, listener) in listeners {
        let Some(live) = routes.in_place.get(&(route::resource().kind, name.clone())) else {
            return Some(RouteState::Applying { route: name });
        };
        match judge(live, gateway, listener) {
            Verdict::Accepted { controller: c } => controller = c,
            Verdict::Awaiting => return Some(RouteState::AwaitingController { route: name }),
            Verdict::NotAccepted(why) => return Some(RouteState::NotAccepted { route: name, why }),
            Verdict::RefsNotResolved(why) => return Some(RouteState::RefsNotResolved { route: name, why }),
        }
    }
    Some(RouteState::Accepted { controller })
}

enum Verdict {
    Accepted { controller: String },
    Awaiting,
    NotAccepted(String),
    RefsNotResolved(String),
}

/// One route's answer from the Gateway (its `status.parents` entry for that listener).
fn judge(live: &InPlace, gateway: &AllowedGateway, listener: &str) -> Verdict {
    let parents = live.status.as_ref().and_then(|s| s.get("parents")).and_then(Value::as_array);
    let Some(parent) = parents.into_iter().flatten().find(|p| is_for(&p["parentRef"], gateway, listener))
    else {
        return Verdict::Awaiting;
    };
    let condition =
        |type_: &str| parent["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == type_);
    let current = |c: &Value| match (c["observedGeneration"].as_i64(), live.generation) {
        (Some(seen), Some(generation)) => seen >= generation,
        _ => true,
    };
    let why = |c: &Value| {
        let reason = c["reason"].as_str().unwrap_or("no reason");
        match c["message"].as_str().filter(|m| !m.is_empty()) {
            Some(message) => format!("{reason}: {message}"),
            None => reason.to_string(),
        }
    };
    let Some(accepted) = condition("Accepted").filter(|c| current(c)) else {
        return Verdict::Awaiting;
    };
    if accepted["status"] != "True" {
        return Verdict::NotAccepted(why(accepted));
    }
    if let Some(resolved) = condition("ResolvedRefs").filter(|c| current(c) && c["status"] != "True") {
        return Verdict::RefsNotResolved(why(resolved));
    }
    Verdict::Accepted { controller: parent["controllerName"].as_str().unwrap_or_default().to_string() }
}

/// Whether a `parentRef` of the route's status names the Gateway's listener (controllers echo
/// the reference as declared, which always spells the namespace and the section).
fn is_for(parent_ref: &Value, gateway: &AllowedGateway, listener: &str) -> bool {
    parent_ref["name"] == gateway.name.as_str()
        && parent_ref["namespace"] == gateway.namespace.as_str()
        && parent_ref["sectionName"].as_str().is_none_or(|s| s == listener)
}

/// `RouteAccepted`, for a clinic with `spec.route`.
pub fn condition(clinic: &Clinic, state: &RouteState, generation: Option<i64>) -> Condition {
    let gateway = clinic
        .gateway
        .as_ref()
        .map(|g| format!("Gateway {}/{} (listener {})", g.namespace, g.name, g.listener))
        .unwrap_or_default();
    let host = clinic.public_host().unwrap_or_default();
    let (ok, reason, message) = match state {
        RouteState::ApiMissing => (
            false,
            "GatewayApiNotInstalled",
            "spec.route needs the Gateway API (the gateway.networking.k8s.io/v1 HTTPRoute CRD), which the cluster does not serve: install its standard channel, or publish through spec.ingress".to_string(),
        ),
        RouteState::Failed(e) => (false, e.reason, e.message.clone()),
        RouteState::Applying { route } => (false, "Applying", format!("HTTPRoute {route} is being applied")),
        RouteState::AwaitingController { route } => (
            false,
            "AwaitingGateway",
            format!("HTTPRoute {route} has no answer yet from the controller of {gateway}; is the Gateway's controller running?"),
        ),
        RouteState::NotAccepted { route, why } => (
            false,
            "NotAccepted",
            format!("{gateway} does not accept HTTPRoute {route} ({why}); the platform team decides which namespaces and hosts its listeners allow"),
        ),
        RouteState::RefsNotResolved { route, why } => (
            false,
            "RefsNotResolved",
            format!("{gateway} accepts HTTPRoute {route} but cannot resolve its backend ({why})"),
        ),
        RouteState::Unchecked => (
            false,
            "NotChecked",
            "the HTTPRoutes are looked at once the clinic's other children are in place and it is not paused (see Progressing and Degraded)".to_string(),
        ),
        RouteState::Accepted { controller } => (
            true,
            "Accepted",
            format!("{gateway} serves {host} through HTTPRoute {} ({controller})", route::name(clinic)),
        ),
    };
    Condition {
        type_: ROUTE_ACCEPTED.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: None,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::api::{ClinicPlatform, ClinicPlatformSpec, RouteSpec};

    fn clinic(redirect: bool) -> Clinic {
        let spec = ClinicPlatformSpec {
            route: Some(RouteSpec { host: "emr.lyon.example.fr".into(), gateway: None }),
            ..Default::default()
        };
        let mut cp = ClinicPlatform::new("lyon", spec);
        cp.metadata.namespace = Some("clinic-lyon".into());
        let mut clinic = crate::model::unchecked(&cp);
        clinic.gateway = Some(AllowedGateway {
            namespace: "gateway-system".into(),
            name: "public".into(),
            listener: "https".into(),
            redirect_listener: redirect.then(|| "http".into()),
            proxy_namespace: None,
            default: true,
            metrics: None,
        });
        clinic
    }

    /// A route's status as a Gateway controller writes it, for one parent.
    fn answered(
        gateway: &str,
        listener: &str,
        accepted: (&str, &str),
        resolved: (&str, &str),
        seen: i64,
    ) -> InPlace {
        let condition = |type_: &str, (status, reason): (&str, &str)| json!({"type": type_, "status": status, "reason": reason, "message": format!("{type_} is {status}"), "observedGeneration": seen});
        InPlace {
            generation: Some(2),
            status: Some(json!({"parents": [{
                "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateway-system", "name": gateway, "sectionName": listener},
                "controllerName": "traefik.io/gateway-controller",
                "conditions": [condition("Accepted", accepted), condition("ResolvedRefs", resolved)],
            }]})),
        }
    }

    fn routes(entries: &[(&str, InPlace)]) -> OptionalState {
        OptionalState {
            installed: true,
            in_place: entries
                .iter()
                .map(|(n, p)| (("HTTPRoute".to_string(), n.to_string()), p.clone()))
                .collect::<BTreeMap<_, _>>(),
            error: None,
        }
    }

    const OK: (&str, &str) = ("True", "Accepted");
    const RESOLVED: (&str, &str) = ("True", "ResolvedRefs");

    #[test]
    fn no_route_no_state() {
        let mut plain = clinic(false);
        plain.gateway = None;
        assert_eq!(state(&plain, Some(&routes(&[]))), None);
    }

    #[test]
    fn the_gateways_answer_becomes_the_state() {
        let c = clinic(false);
        let one = |p: InPlace| state(&c, Some(&routes(&[("lyon", p)])));
        assert_eq!(
            one(answered("public", "https", OK, RESOLVED, 2)),
            Some(RouteState::Accepted { controller: "traefik.io/gateway-controller".into() })
        );
        let refused = one(answered("public", "https", ("False", "NotAllowedByListeners"), RESOLVED, 2));
        assert_eq!(
            refused,
            Some(RouteState::NotAccepted {
                route: "lyon".into(),
                why: "NotAllowedByListeners: Accepted is False".into()
            })
        );
        assert!(matches!(
            one(answered("public", "https", OK, ("False", "BackendNotFound"), 2)),
            Some(RouteState::RefsNotResolved { why, .. }) if why.starts_with("BackendNotFound")
        ));
        // An answer for an older generation, another Gateway or another listener is no answer.
        for stale in [
            answered("public", "https", OK, RESOLVED, 1),
            answered("internal", "https", OK, RESOLVED, 2),
            answered("public", "http", OK, RESOLVED, 2),
            InPlace { generation: Some(1), status: None },
        ] {
            assert_eq!(one(stale), Some(RouteState::AwaitingController { route: "lyon".into() }));
        }
    }

    #[test]
    fn every_route_must_be_accepted() {
        let c = clinic(true);
        let https = ("lyon", answered("public", "https", OK, RESOLVED, 2));
        assert_eq!(
            state(&c, Some(&routes(std::slice::from_ref(&https)))),
            Some(RouteState::Applying { route: "lyon-redirect".into() })
        );
        let redirect = ("lyon-redirect", answered("public", "http", OK, RESOLVED, 2));
        assert!(state(&c, Some(&routes(&[https, redirect]))).is_some_and(|s| s.is_accepted()));
    }

    #[test]
    fn a_missing_api_or_a_failure_is_said() {
        let c = clinic(false);
        let absent = OptionalState { installed: false, ..Default::default() };
        assert_eq!(state(&c, Some(&absent)), Some(RouteState::ApiMissing));
        assert_eq!(state(&c, None), Some(RouteState::Unchecked), "not looked at is not absent");
        let failed = OptionalState {
            installed: true,
            error: Some(Problem { reason: "ReadFailed", message: "could not read".into() }),
            ..Default::default()
        };
        assert!(matches!(state(&c, Some(&failed)), Some(RouteState::Failed(_))));
    }
}
