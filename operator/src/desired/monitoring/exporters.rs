//! The exporter sidecars (OpenMRS, MariaDB and the gateway's nginx have no Prometheus endpoint
//! of their own) and the Services that expose them to Prometheus' namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::*;
use super::*;

const MYSQLD_EXPORTER_IMAGE: (&str, &str) = ("prom/mysqld-exporter", "v0.17.2");
const NGINX_EXPORTER_IMAGE: (&str, &str) = ("nginx/nginx-prometheus-exporter", "1.4.2");

/// Where the mysqld exporter reads its `my.cnf`.
pub const EXPORTER_CONFIG_DIR: &str = "/etc/mysqld-exporter";

pub fn exporter_secret_name(clinic: &Clinic) -> String {
    clinic.child_name("mariadb-exporter")
}

/// Run by MariaDB at every start (`init_file`), so the account exists on databases created
/// before monitoring was turned on and follows a rotated password. Statements are idempotent
/// and valid on every supported MariaDB version: a failing init file stops the server.
pub fn exporter_init_sql(password: &str) -> String {
    let account = format!("'{EXPORTER_DB_USER}'@'127.0.0.1'");
    format!(
        "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}' WITH MAX_USER_CONNECTIONS 3;\n\
         ALTER USER {account} IDENTIFIED BY '{password}' WITH MAX_USER_CONNECTIONS 3;\n\
         GRANT PROCESS, REPLICATION CLIENT ON *.* TO {account};\n"
    )
}

fn metrics_port(port: i32) -> ContainerPort {
    ContainerPort {
        name: Some("metrics".into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// mysqld-exporter, connecting over loopback with its own least-privilege account.
pub fn mysqld_exporter(clinic: &Clinic) -> Container {
    let (path, tag) = MYSQLD_EXPORTER_IMAGE;
    let mut args = vec![
        format!("--mysqld.address=127.0.0.1:{}", super::database::PORT),
        format!("--mysqld.username={EXPORTER_DB_USER}"),
        format!("--web.listen-address=:{MYSQLD_EXPORTER_PORT}"),
        // SHOW REPLICA STATUS needs more than REPLICATION CLIENT, and there is no replica.
        "--no-collect.slave_status".into(),
    ];
    if clinic.database_tls() {
        // `ssl-ca` from this file: the exporter verifies MariaDB's certificate for 127.0.0.1
        // (the flags and the password variable give the rest).
        args.push(format!("--config.my-cnf={EXPORTER_CONFIG_DIR}/my.cnf"));
    }
    Container {
        name: "mysqld-exporter".into(),
        image: Some(clinic.image(None, path, tag)),
        image_pull_policy: Some(pull_policy(clinic)),
        args: Some(args),
        env: Some(vec![env_from_secret(
            "MYSQLD_EXPORTER_PASSWORD",
            &exporter_secret_name(clinic),
            "password",
        )]),
        ports: Some(vec![metrics_port(MYSQLD_EXPORTER_PORT)]),
        resources: Some(resources(None, ("10m", "32Mi"), ("200m", "64Mi"))),
        security_context: Some(container_security_context(EXPORTER_UID)),
        readiness_probe: Some(web_probe(IntOrString::String("metrics".into()), "/", 30)),
        liveness_probe: Some(tcp_probe("metrics", 60)),
        ..Default::default()
    }
}

/// nginx-prometheus-exporter on the gateway's loopback-only `stub_status`.
pub fn nginx_exporter(clinic: &Clinic) -> Container {
    let (path, tag) = NGINX_EXPORTER_IMAGE;
    Container {
        name: "nginx-exporter".into(),
        image: Some(clinic.image(None, path, tag)),
        image_pull_policy: Some(pull_policy(clinic)),
        args: Some(vec![
            format!("--nginx.scrape-uri=http://127.0.0.1:{}/stub_status", super::gateway::HEALTH_PORT),
            format!("--web.listen-address=:{NGINX_EXPORTER_PORT}"),
        ]),
        ports: Some(vec![metrics_port(NGINX_EXPORTER_PORT)]),
        resources: Some(resources(None, ("10m", "16Mi"), ("100m", "32Mi"))),
        security_context: Some(container_security_context(EXPORTER_UID)),
        readiness_probe: Some(web_probe(IntOrString::String("metrics".into()), "/", 30)),
        liveness_probe: Some(tcp_probe("metrics", 60)),
        ..Default::default()
    }
}

/// The Services that expose the exporters; only Prometheus' namespace may reach them.
pub fn metrics_services(clinic: &Clinic) -> Vec<Service> {
    if !enabled(clinic) {
        return Vec::new();
    }
    // A replicated database's exporter and its Service (`<name>-mariadb-metrics` too) are the
    // mariadb-operator's.
    let database = clinic
        .database_cluster
        .is_none()
        .then(|| (super::database::name(clinic), Component::Database, MYSQLD_EXPORTER_PORT));
    database
        .into_iter()
        .chain([(super::gateway::name(clinic), Component::Gateway, NGINX_EXPORTER_PORT)])
        .map(|(base, component, port)| {
            let mut service = port_service(clinic, format!("{base}-metrics"), component, "metrics", port);
            service
                .metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(METRICS_LABEL.into(), "true".into());
            service
        })
        .collect()
}
