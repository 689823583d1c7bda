//! HorizontalPodAutoscalers for the stateless components and PodDisruptionBudgets where the
//! replica count allows one pod to go: the frontend and gateway, and the clustered backend
//! (`spec.openmrs.backend.replicas` of 2 or more). MariaDB is single-replica: a budget there
//! would only block node drains. With `spec.autoscaling.verticalRecommendations`, a
//! VerticalPodAutoscaler per workload in recommendation mode (an optional API).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::*;
use crate::api::ScalingBounds;

pub fn vertical_pod_autoscaler_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling.k8s.io", "v1", "VerticalPodAutoscaler"),
        "verticalpodautoscalers",
    )
}

/// One VerticalPodAutoscaler per workload, in recommendation mode: `updateMode: "Off"` never
/// evicts nor resizes a pod (so it never fights the HorizontalPodAutoscalers, which scale on
/// CPU), it only publishes requests computed from real use. None unless asked.
pub fn vertical_pod_autoscalers(clinic: &Clinic) -> Vec<DynamicObject> {
    if !clinic.spec.autoscaling.vertical_recommendations {
        return Vec::new();
    }
    let resource = vertical_pod_autoscaler_resource();
    // Each VerticalPodAutoscaler is named after its workload.
    workloads(clinic)
        .into_iter()
        .map(|(component, kind, name)| {
            let mut vpa = DynamicObject::new(&name, &resource).within(&clinic.namespace);
            vpa.metadata = metadata(clinic, name.clone(), component);
            vpa.data = json!({
                "spec": {
                    "targetRef": { "apiVersion": "apps/v1", "kind": kind, "name": name },
                    "updatePolicy": { "updateMode": "Off" },
                    "resourcePolicy": {
                        "containerPolicies": [{
                            "containerName": "*",
                            "controlledResources": ["cpu", "memory"],
                        }],
                    },
                },
            });
            vpa
        })
        .collect()
}

fn scalable(clinic: &Clinic) -> [(Component, String, &ScalingBounds, i32); 2] {
    let spec = &clinic.spec;
    [
        (
            Component::Frontend,
            super::frontend::name(clinic),
            &spec.autoscaling.frontend,
            spec.openmrs.frontend.replicas,
        ),
        (
            Component::Gateway,
            super::gateway::name(clinic),
            &spec.autoscaling.gateway,
            spec.openmrs.gateway.replicas,
        ),
    ]
}

pub fn horizontal_pod_autoscalers(clinic: &Clinic) -> Vec<HorizontalPodAutoscaler> {
    if !clinic.spec.autoscaling.enabled {
        return vec![];
    }
    scalable(clinic)
        .into_iter()
        .map(|(component, name, bounds, _)| HorizontalPodAutoscaler {
            metadata: metadata(clinic, name.clone(), component),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name,
                },
                min_replicas: Some(bounds.min_replicas),
                max_replicas: bounds.max_replicas,
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(bounds.target_cpu_utilization_percentage),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

pub fn pod_disruption_budgets(clinic: &Clinic) -> Vec<PodDisruptionBudget> {
    let web = scalable(clinic)
        .into_iter()
        .filter(|(_, _, bounds, replicas)| {
            let fewest = if clinic.spec.autoscaling.enabled { bounds.min_replicas } else { *replicas };
            fewest >= 2
        })
        .map(|(component, name, _, _)| (component, name));
    let backend = (clinic.spec.openmrs.backend.replicas >= 2)
        .then(|| (Component::Backend, super::backend::name(clinic)));
    web.chain(backend)
        .map(|(component, name)| PodDisruptionBudget {
            metadata: metadata(clinic, name, component),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(selector(clinic, component)),
                unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}
