//! The frontend: the OpenMRS 3 single-page application served by the image's nginx.
//!
//! The image's start script rewrites `index.html` in place (SPA path, API URL, config URLs). With
//! a read-only root filesystem, an init container copies the site into an emptyDir that the main
//! container mounts over `/usr/share/nginx/html`, where the script may write.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodTemplateSpec, Probe, Service, Sysctl,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

/// nginx in the image listens on 80; the pod lowers the unprivileged-port floor (a sysctl that
/// Pod Security "restricted" allows) so it can bind it without root.
pub const PORT: i32 = 80;
/// The `nginx` user of nginx-alpine images.
pub const UID: i64 = 101;
pub const SPA_PATH: &str = "/openmrs/spa";
pub const API_URL: &str = "/openmrs";

pub fn name(clinic: &Clinic) -> String {
    clinic.child_name("frontend")
}

pub fn service(clinic: &Clinic) -> Service {
    http_service(clinic, name(clinic), Component::Frontend, 80)
}

pub(crate) fn unprivileged_ports() -> Vec<Sysctl> {
    vec![Sysctl { name: "net.ipv4.ip_unprivileged_port_start".into(), value: "0".into() }]
}

pub(crate) fn web_probe(port: IntOrString, path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port,
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Rolling updates never take the last serving pod away.
pub(crate) fn rolling_update() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

pub fn deployment(clinic: &Clinic) -> Deployment {
    let spec = &clinic.spec.openmrs.frontend;
    let image = clinic.frontend_image();
    let config_urls = clinic.spec.openmrs.spa_config_urls.join(" ");
    let stage = Container {
        name: "stage-site".into(),
        image: Some(image.clone()),
        image_pull_policy: Some(pull_policy(clinic)),
        // Not `cp -a`: as a non-root user it cannot set the times of the emptyDir's root, which
        // root owns, and fails.
        command: Some(vec!["/bin/sh".into(), "-c".into(), "cp -R /usr/share/nginx/html/. /stage/".into()]),
        resources: Some(resources(None, ("50m", "32Mi"), ("500m", "128Mi"))),
        security_context: Some(container_security_context(UID)),
        volume_mounts: Some(vec![mount("site", "/stage")]),
        ..Default::default()
    };
    let main = Container {
        name: "frontend".into(),
        image: Some(image),
        image_pull_policy: Some(pull_policy(clinic)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(vec![
            env("SPA_PATH", SPA_PATH),
            env("API_URL", API_URL),
            env("SPA_DEFAULT_LOCALE", clinic.spec.openmrs.locale.clone()),
            env("SPA_CONFIG_URLS", config_urls),
        ]),
        resources: Some(resources(spec.resources.as_ref(), ("50m", "64Mi"), ("500m", "256Mi"))),
        security_context: Some(container_security_context(UID)),
        readiness_probe: Some(web_probe(IntOrString::String("http".into()), "/", 10)),
        liveness_probe: Some(web_probe(IntOrString::String("http".into()), "/", 20)),
        volume_mounts: Some(vec![
            mount("site", "/usr/share/nginx/html"),
            mount("cache", "/var/cache/nginx"),
            mount("run", "/var/run"),
            mount("tmp", "/tmp"),
        ]),
        ..Default::default()
    };
    let pod = pod_spec(
        clinic,
        &spec.placement,
        PodParts {
            uid: UID,
            sysctls: unprivileged_ports(),
            init_containers: vec![stage],
            containers: vec![main],
            volumes: vec![
                empty_dir("site", "256Mi"),
                empty_dir("cache", "64Mi"),
                empty_dir("run", "1Mi"),
                empty_dir("tmp", "64Mi"),
            ],
            spread: Some(Component::Frontend),
            ..Default::default()
        },
    );
    Deployment {
        metadata: metadata(clinic, name(clinic), Component::Frontend),
        spec: Some(DeploymentSpec {
            replicas: replicas_unless_autoscaled(clinic, spec.replicas),
            selector: selector(clinic, Component::Frontend),
            strategy: Some(rolling_update()),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(pod_template_metadata(
                    clinic,
                    Component::Frontend,
                    &pod,
                    BTreeMap::new(),
                    &[],
                )),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// With an HPA the operator must not own `spec.replicas`, or every apply would fight it.
pub(crate) fn replicas_unless_autoscaled(clinic: &Clinic, replicas: i32) -> Option<i32> {
    if clinic.spec.autoscaling.enabled { None } else { Some(replicas) }
}
