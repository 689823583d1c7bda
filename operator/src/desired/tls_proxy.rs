//! The backend's TLS listener (`spec.openmrs.backend.tls`), for a platform without a mesh: an
//! nginx beside OpenMRS in its pod serves TLS 1.3 on [`PORT`] with the backend's certificate
//! ([`super::internal_tls::Leaf::Backend`]) and passes each request to OpenMRS over loopback.
//! The gateway verifies the certificate against the clinic's CA and the backend Service's name,
//! and the NetworkPolicies admit [`PORT`] alone between them.
//!
//! A proxy rather than Tomcat's own connector: the upstream image's `server.xml` has no TLS
//! connector and no way to add one from the environment, and the gateway's image (nginx) is
//! already in every clinic. The proxy and the gateway reload nginx when their mounted Secret
//! changes (the kubelet updates it in place), so a renewed certificate never restarts the
//! backend, whose start can take many minutes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Volume};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::internal_tls::{self, KEY_CA_CERT, KEY_TLS_CERT, KEY_TLS_KEY, Leaf};
use super::*;

/// The backend's TLS port (the Service's `https`).
pub const PORT: i32 = 8443;
/// The proxy's health endpoint; not exposed by the Service.
pub const HEALTH_PORT: i32 = 8444;
/// Where the proxy finds `tls.crt` and `tls.key`.
pub const CERT_DIR: &str = "/etc/nginx/tls";
/// Where the proxy finds its configuration.
pub const CONFIG_DIR: &str = "/etc/nginx/clinic";
/// Where the gateway finds the clinic's CA (`ca.crt`) to verify the backend.
pub const GATEWAY_CA_DIR: &str = "/etc/nginx/backend-tls";
/// How often a reloading nginx looks at its mounted Secret.
pub const RELOAD_CHECK_SECONDS: u32 = 30;

pub fn config_map_name(clinic: &Clinic) -> String {
    clinic.child_name("backend-tls-proxy")
}

/// The command of an nginx that reloads itself when one of `watched` changes: kubelet swaps a
/// Secret volume's files in place, and nginx reads certificates only when it (re)loads. Without
/// `watched`, plain nginx. Only POSIX `sh`, `cat`, `cksum` and `sleep`, which both the upstream
/// nginx-alpine images and Debian's carry. A failed reload (a bad certificate) keeps the
/// running configuration and is tried again at the next check.
pub(crate) fn nginx_command(config: &str, watched: &[String]) -> Vec<String> {
    if watched.is_empty() {
        return vec!["nginx".into(), "-c".into(), config.into(), "-g".into(), "daemon off;".into()];
    }
    let script = format!(
        r#"conf=$1; shift
fingerprint() {{ cat "$@" | cksum; }}
seen=$(fingerprint "$@")
(while sleep {RELOAD_CHECK_SECONDS}; do
  now=$(fingerprint "$@")
  if [ "$now" != "$seen" ] && nginx -c "$conf" -s reload; then seen=$now; fi
done) &
exec nginx -c "$conf" -g 'daemon off;'"#
    );
    let mut command = vec!["/bin/sh".into(), "-c".into(), script, "nginx-reloader".into(), config.into()];
    command.extend(watched.iter().cloned());
    command
}

/// The proxy's nginx configuration.
pub fn nginx_conf() -> String {
    format!(
        r#"# Managed by clinic-operator; edits are reverted.
worker_processes 1;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;

events {{
  worker_connections 1024;
}}

http {{
  # The gateway logs every request; this hop adds nothing to say.
  access_log off;
  server_tokens off;
  client_max_body_size 50m;

{temp_paths}
  upstream openmrs {{
    server 127.0.0.1:{backend_port};
    keepalive 16;
  }}

  server {{
    listen {port} ssl;
    # The only client is the clinic's own gateway.
    ssl_protocols TLSv1.3;
    ssl_certificate {cert_dir}/{cert};
    ssl_certificate_key {cert_dir}/{key};
    ssl_session_cache shared:backend_tls:1m;
    ssl_session_timeout 1h;

    location / {{
      # The gateway's headers (X-Forwarded-*, traceparent) pass unchanged.
      proxy_set_header Host $host;
      proxy_set_header Connection "";
      proxy_http_version 1.1;
      proxy_read_timeout 300s;
      proxy_pass http://openmrs;
    }}
  }}

  server {{
    listen {health_port};
    access_log off;

    location = /healthz {{
      return 200 "ok\n";
    }}
  }}
}}
"#,
        temp_paths = super::gateway::TEMP_PATHS,
        backend_port = super::backend::PORT,
        port = PORT,
        health_port = HEALTH_PORT,
        cert_dir = CERT_DIR,
        cert = KEY_TLS_CERT,
        key = KEY_TLS_KEY,
    )
}

pub fn config_map(clinic: &Clinic) -> Option<ConfigMap> {
    clinic.backend_tls().then(|| ConfigMap {
        metadata: metadata(clinic, config_map_name(clinic), Component::Backend),
        data: Some(BTreeMap::from([("nginx.conf".to_string(), nginx_conf())])),
        ..Default::default()
    })
}

/// The proxy container (the gateway's image, its user) and the volumes it mounts.
pub fn container(clinic: &Clinic, config: &ConfigMap) -> (Container, Vec<Volume>) {
    let conf = format!("{CONFIG_DIR}/nginx.conf");
    let watched = [KEY_TLS_CERT, KEY_TLS_KEY].map(|key| format!("{CERT_DIR}/{key}"));
    let container = Container {
        name: "tls-proxy".into(),
        image: Some(clinic.gateway_image()),
        image_pull_policy: Some(pull_policy(clinic)),
        command: Some(nginx_command(&conf, &watched)),
        ports: Some(vec![container_port("https", PORT), container_port("tls-health", HEALTH_PORT)]),
        resources: Some(resources(None, ("50m", "32Mi"), ("500m", "128Mi"))),
        security_context: Some(container_security_context(super::gateway::UID)),
        readiness_probe: Some(web_probe(IntOrString::String("tls-health".into()), "/healthz", 10)),
        liveness_probe: Some(tcp_probe("tls-health", 20)),
        volume_mounts: Some(vec![
            read_only_mount("tls-proxy-config", CONFIG_DIR),
            read_only_mount("backend-tls", CERT_DIR),
            mount("tls-proxy-cache", "/var/cache/nginx"),
            mount("tls-proxy-tmp", "/tmp"),
        ]),
        ..Default::default()
    };
    let volumes = vec![
        config_volume("tls-proxy-config", config),
        internal_tls::volume(clinic, Leaf::Backend, "backend-tls", false),
        empty_dir("tls-proxy-cache", "16Mi"),
        empty_dir("tls-proxy-tmp", "64Mi"),
    ];
    (container, volumes)
}

/// What the gateway adds to reach the backend over TLS: the CA's mount and volume.
pub fn gateway_ca(clinic: &Clinic) -> Option<(k8s_openapi::api::core::v1::VolumeMount, Volume)> {
    clinic.backend_tls().then(|| {
        (
            read_only_mount("backend-ca", GATEWAY_CA_DIR),
            internal_tls::volume(clinic, Leaf::Backend, "backend-ca", true),
        )
    })
}

/// The file the gateway verifies the backend's certificate against.
pub fn gateway_ca_file() -> String {
    format!("{GATEWAY_CA_DIR}/{KEY_CA_CERT}")
}
