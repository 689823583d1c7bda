//! The frontend: the OpenMRS 3 single-page application served by the image's nginx.
//!
//! The image's start script rewrites `index.html` in place (SPA path, API URL, config URLs). With
//! a read-only root filesystem, an init container copies the site into an emptyDir that the main
//! container mounts over `/usr/share/nginx/html`, where the script may write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service};
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
        ports: Some(vec![container_port("http", PORT)]),
        env: Some(vec![
            env("SPA_PATH", SPA_PATH),
            env("API_URL", API_URL),
            env("SPA_DEFAULT_LOCALE", clinic.spec.openmrs.locale.clone()),
            env("SPA_CONFIG_URLS", config_urls),
        ]),
        resources: Some(resources(spec.resources.as_ref(), ("50m", "64Mi"), ("500m", "256Mi"))),
        security_context: Some(container_security_context(UID)),
        readiness_probe: Some(web_probe(IntOrString::String("http".into()), "/", 10)),
        liveness_probe: Some(tcp_probe("http", 20)),
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
            drains: true,
            ..Default::default()
        },
    );
    web_deployment(clinic, Component::Frontend, name(clinic), spec.replicas, pod, BTreeMap::new())
}
