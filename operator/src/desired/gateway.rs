//! The gateway: nginx in front of frontend and backend, with our own configuration.
//!
//! The upstream gateway config resolves upstreams through Docker's embedded DNS (127.0.0.11),
//! which does not exist on Kubernetes, and writes into the image at start. We mount a config that
//! reproduces upstream's routing and security headers with the clinic's Service names, listens on
//! an unprivileged port and writes only to emptyDirs. With `spec.openmrs.backend.tls` it
//! reaches the backend over TLS 1.3, verifying its certificate against the clinic's CA and the
//! backend Service's name ([`super::tls_proxy`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

/// Port of the proxy (the Service maps 80 to it).
pub const PORT: i32 = 8080;
/// The port of the gateway's Service, which an Ingress or an HTTPRoute sends the clinic's traffic to.
pub const SERVICE_PORT: i32 = 80;
/// Port of the health endpoint; not exposed by the Service.
pub const HEALTH_PORT: i32 = 8081;
pub const UID: i64 = 101;
pub const CONFIG_DIR: &str = "/etc/nginx/clinic";

pub fn name(clinic: &Clinic) -> String {
    clinic.child_name("gateway")
}

/// Where nginx writes its temporary files: the `/tmp` emptyDir, the root filesystem being
/// read-only (the gateway's and the backend's TLS proxy's).
pub(crate) const TEMP_PATHS: &str = "  client_body_temp_path /tmp/client_temp;
  proxy_temp_path /tmp/proxy_temp;
  fastcgi_temp_path /tmp/fastcgi_temp;
  uwsgi_temp_path /tmp/uwsgi_temp;
  scgi_temp_path /tmp/scgi_temp;
";

/// The nginx configuration for `clinic`.
pub fn nginx_conf(clinic: &Clinic) -> String {
    let frontend = super::frontend::name(clinic);
    let backend = super::backend::name(clinic);
    // Always, whatever terminates TLS in front (the Ingress, a load balancer, a Gateway):
    // browsers ignore the header on a plain-HTTP response (RFC 6797, section 8.1), so sending it
    // costs nothing where there is no TLS and protects wherever there is.
    let hsts = "    add_header Strict-Transport-Security \"max-age=31536000; includeSubDomains\" always;\n";
    format!(
        r#"# Managed by clinic-operator; edits are reverted.
worker_processes auto;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;

events {{
  worker_connections 1024;
}}

http {{
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  # nginx's combined format, then the response time and the request's W3C trace id: the
  # backend's trace (spec.tracing) and this line share it, so a log line leads to its trace.
  log_format clinic '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                    '"$http_referer" "$http_user_agent" rt=$request_time trace_id=$trace_id';
  access_log /dev/stdout clinic;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  server_tokens off;
  client_max_body_size 50m;

{temp_paths}
  map $request_uri $csp_header {{
    default "default-src 'self' 'unsafe-inline' 'unsafe-eval'; base-uri 'self'; font-src 'self'; img-src 'self' data:; object-src 'self' blob:; frame-ancestors 'self';";
    "~^/openmrs/(?:admin|dictionary|module|patientDashboard.form)/" "default-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; base-uri 'self'; font-src 'self'; frame-ancestors 'self';";
    "~^/openmrs/owa" "default-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; base-uri 'self'; font-src 'self' data:; img-src 'self' data:; frame-ancestors 'self';";
  }}

  # Behind the Ingress the original scheme arrives in X-Forwarded-Proto.
  map $http_x_forwarded_proto $forwarded_proto {{
    default $http_x_forwarded_proto;
    "" $scheme;
  }}

  # W3C trace context: a request that brings a valid `traceparent` keeps it; any other gets
  # one here, its trace id the request's random id, marked sampled.
  map $request_id $gateway_span_id {{
    "~^(?<span>[0-9a-f]{{16}})" $span;
  }}

  map $http_traceparent $traceparent {{
    "~^00-(?!0{{32}}-)[0-9a-f]{{32}}-(?!0{{16}}-)[0-9a-f]{{16}}-[0-9a-f]{{2}}$" $http_traceparent;
    default "00-$request_id-$gateway_span_id-01";
  }}

  map $traceparent $trace_id {{
    "~^00-(?<id>[0-9a-f]{{32}})-" $id;
    default "-";
  }}

  upstream frontend {{
    server {frontend}:80;
  }}

  upstream backend {{
    server {backend}:{backend_port};
  }}{backend_tls}

  server {{
    listen {port};
    absolute_redirect off;

    add_header Content-Security-Policy $csp_header always;
    add_header X-Content-Type-Options nosniff always;
    add_header X-Frame-Options SAMEORIGIN always;
    add_header Referrer-Policy strict-origin-when-cross-origin always;
{hsts}
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-Proto $forwarded_proto;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header traceparent $traceparent;
    proxy_http_version 1.1;

    gzip on;
    gzip_vary on;
    gzip_min_length 1024;
    gzip_proxied any;
    gzip_types font/eot font/otf font/ttf image/svg+xml text/css text/html text/javascript text/plain text/xml application/javascript application/json application/importmap+json application/fhir+json application/fhir+xml application/manifest+json application/xml;

    location = / {{
      return 301 /openmrs/spa/home;
    }}

    location = /openmrs/spa {{
      return 301 /openmrs/spa/home;
    }}

    location = /openmrs/spa/ {{
      return 301 /openmrs/spa/home;
    }}

    location /openmrs/spa/ {{
      rewrite ^/openmrs/spa/(.*)$ /$1 break;
      proxy_pass http://frontend;
    }}

    location /openmrs {{
      proxy_read_timeout 300s;
      proxy_pass {backend_scheme}://backend;
    }}
  }}

  server {{
    listen {health_port};
    access_log off;

    location = /healthz {{
      return 200 "ok\n";
    }}

    # Read by the nginx exporter sidecar over loopback only.
    location = /stub_status {{
      stub_status;
      allow 127.0.0.1;
      deny all;
    }}
  }}
}}
"#,
        temp_paths = TEMP_PATHS,
        backend_port = super::backend::serving_port(clinic),
        backend_scheme = if clinic.backend_tls() { "https" } else { "http" },
        backend_tls = backend_tls_settings(clinic),
        port = PORT,
        health_port = HEALTH_PORT,
    )
}

/// The `http` settings by which the gateway verifies the backend: the clinic's CA, the Service's
/// name, TLS 1.3. Nothing at all without `spec.openmrs.backend.tls`, so that the configuration
/// of a clinic without it (and its hash, which rolls the gateway) stays what it was.
fn backend_tls_settings(clinic: &Clinic) -> String {
    if !clinic.backend_tls() {
        return String::new();
    }
    format!(
        r#"

  # The backend serves TLS (spec.openmrs.backend.tls): its certificate must chain to the
  # clinic's CA and name the backend's Service.
  proxy_ssl_verify on;
  proxy_ssl_verify_depth 2;
  proxy_ssl_trusted_certificate {ca};
  proxy_ssl_name {backend}.{namespace}.svc;
  proxy_ssl_server_name on;
  proxy_ssl_protocols TLSv1.3;
  proxy_ssl_session_reuse on;"#,
        ca = super::tls_proxy::gateway_ca_file(),
        backend = super::backend::name(clinic),
        namespace = clinic.namespace,
    )
}

pub fn config_map(clinic: &Clinic) -> ConfigMap {
    ConfigMap {
        metadata: metadata(clinic, clinic.child_name("gateway-nginx"), Component::Gateway),
        data: Some(BTreeMap::from([("nginx.conf".to_string(), nginx_conf(clinic))])),
        ..Default::default()
    }
}

pub fn service(clinic: &Clinic) -> Service {
    http_service(clinic, name(clinic), Component::Gateway, SERVICE_PORT)
}

pub fn deployment(clinic: &Clinic, config: &ConfigMap) -> Deployment {
    let spec = &clinic.spec.openmrs.gateway;
    let mut mounts =
        vec![read_only_mount("config", CONFIG_DIR), mount("cache", "/var/cache/nginx"), mount("tmp", "/tmp")];
    let mut volumes =
        vec![config_volume("config", config), empty_dir("cache", "64Mi"), empty_dir("tmp", "256Mi")];
    // With the backend's TLS, the clinic's CA, and nginx reloads when it changes.
    let mut watched = Vec::new();
    if let Some((mount, volume)) = super::tls_proxy::gateway_ca(clinic) {
        mounts.push(mount);
        volumes.push(volume);
        watched.push(super::tls_proxy::gateway_ca_file());
    }
    let main = Container {
        name: "gateway".into(),
        image: Some(clinic.gateway_image()),
        image_pull_policy: Some(pull_policy(clinic)),
        // Bypass the image's entrypoint, which templates config into the read-only image.
        command: Some(super::tls_proxy::nginx_command(&format!("{CONFIG_DIR}/nginx.conf"), &watched)),
        ports: Some(vec![container_port("http", PORT), container_port("health", HEALTH_PORT)]),
        resources: Some(resources(spec.resources.as_ref(), ("50m", "64Mi"), ("500m", "256Mi"))),
        security_context: Some(container_security_context(UID)),
        readiness_probe: Some(web_probe(IntOrString::String("health".into()), "/healthz", 10)),
        liveness_probe: Some(tcp_probe("health", 20)),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let pod = pod_spec(
        clinic,
        &spec.placement,
        PodParts {
            uid: UID,
            containers: if super::monitoring::enabled(clinic) {
                vec![main, super::monitoring::nginx_exporter(clinic)]
            } else {
                vec![main]
            },
            volumes,
            spread: Some(Component::Gateway),
            drains: true,
            ..Default::default()
        },
    );
    web_deployment(clinic, Component::Gateway, name(clinic), spec.replicas, pod, config_hash(config))
}
