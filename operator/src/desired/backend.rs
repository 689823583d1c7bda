//! The OpenMRS backend: a StatefulSet (the data directory is per pod) and its Service.
//!
//! The image writes into `/openmrs` and Tomcat's directories at start. To run with a read-only
//! root filesystem, an init container copies both into emptyDirs that the main container mounts
//! in their place; `/openmrs/data` is the persistent volume.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodTemplateSpec, Probe, Service, ServicePort, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::database::{self, claim_template, retention};
use super::secrets::{KEY_PASSWORD, KEY_USERNAME};
use super::*;
use crate::policy::TracingPolicy;

pub const PORT: i32 = 8080;
/// Ports of the clustered cache (JGroups) when several replicas run.
pub const JGROUPS_PORTS: [i32; 2] = [7800, 7801];
/// The image's `openmrs` user.
pub const UID: i64 = 1001;
/// The image's files are group 0's (OpenShift style): `/usr/bin/tini` is mode 0654 root:root,
/// so only group 0 may execute it. Pod Security "restricted" constrains the user, not the group.
pub const GID: i64 = 0;

pub fn name(clinic: &Clinic) -> String {
    clinic.child_name("backend")
}

/// The port the gateway reaches the backend on: the TLS listener's with
/// `spec.openmrs.backend.tls`, OpenMRS's own otherwise.
pub fn serving_port(clinic: &Clinic) -> i32 {
    if clinic.backend_tls() { super::tls_proxy::PORT } else { PORT }
}

/// The backend Service (its `https` port alone with TLS on, so nothing reaches OpenMRS in
/// plaintext through it), and the headless Service that governs the StatefulSet: it gives each
/// pod its DNS name and, with clustering, is where the replicas find each other.
pub fn services(clinic: &Clinic) -> Vec<Service> {
    let (port_name, port) =
        if clinic.backend_tls() { ("https", super::tls_proxy::PORT) } else { ("http", PORT) };
    let mut main = port_service(clinic, name(clinic), Component::Backend, port_name, port);
    if let Some(spec) = main.spec.as_mut() {
        // Sessions live in one backend's memory.
        spec.session_affinity = Some("ClientIP".into());
    }
    let mut pods = port_service(clinic, pods_service_name(clinic), Component::Backend, port_name, port);
    if let Some(spec) = pods.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
        // Replicas starting together must find each other before any is ready.
        spec.publish_not_ready_addresses = Some(true);
        if clinic.spec.openmrs.backend.clustering.is_some() {
            spec.ports.get_or_insert_default().extend(JGROUPS_PORTS.iter().enumerate().map(|(i, port)| {
                ServicePort {
                    name: Some(format!("jgroups-{i}")),
                    port: *port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }
            }));
        }
    }
    vec![main, pods]
}

/// The headless Service that governs the backend StatefulSet.
pub fn pods_service_name(clinic: &Clinic) -> String {
    clinic.child_name("backend-pods")
}

fn environment(clinic: &Clinic) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let spec = &clinic.spec.openmrs;
    let db_secret = clinic.db_credentials_secret();
    let admin = clinic.admin_password();
    let mut vars = vec![
        // MariaDB Connector/J (in openmrs-core since 2.7) verifies a server certificate against
        // a PEM CA file; MySQL Connector/J needs a Java keystore.
        env("OMRS_DB", if clinic.database_tls() { "mariadb" } else { "mysql" }),
        env("OMRS_DB_HOSTNAME", database_host(clinic)),
        env("OMRS_DB_PORT", database::PORT.to_string()),
        env("OMRS_DB_NAME", database::DATABASE_NAME),
        database_user(clinic, &db_secret),
        env_from_secret("OMRS_DB_PASSWORD", &db_secret, KEY_PASSWORD),
        // Upstream defaults to a well-known admin password.
        env_from_secret("OMRS_ADMIN_USER_PASSWORD", &admin.secret, &admin.key),
        // Module upload from the web UI would let an admin run arbitrary code.
        env("OMRS_MODULE_WEB_ADMIN", "false"),
        env("OMRS_ADD_DEMO_DATA", if spec.demo_data { "true" } else { "false" }),
        env("OMRS_INSTALL_METHOD", "auto"),
        env("OMRS_CREATE_TABLES", "true"),
        env("OMRS_AUTO_UPDATE_DATABASE", "true"),
        env(
            "OMRS_JAVA_MEMORY_OPTS",
            spec.backend
                .java_memory_opts
                .clone()
                .unwrap_or_else(|| "-XX:MaxRAMPercentage=75.0 -XX:+ExitOnOutOfMemoryError".into()),
        ),
    ];
    // The start script writes the connection into the installation properties, which OpenMRS
    // reads only when it installs; afterwards it reads the runtime properties the install wrote,
    // into which the script merges every OMRS_EXTRA_ variable at each start. So the URL and the
    // driver are given both ways: a clinic created before TLS (or turning it off) gets them too.
    let (url, driver) = jdbc(clinic);
    vars.push(env("OMRS_DB_URL", url.clone()));
    vars.push(env("OMRS_EXTRA_CONNECTION_URL", url));
    vars.push(env("OMRS_EXTRA_CONNECTION_DRIVER__CLASS", driver));
    if let Some(clustering) = &spec.backend.clustering {
        vars.push(env("OMRS_SEARCH", "elasticsearch"));
        vars.push(env("OMRS_SEARCH_ES_URIS", clustering.elasticsearch_uris.clone()));
        // A cache shared by the replicas, as upstream's chart sets it: Infinispan over JGroups,
        // members found by DNS through the headless Service (which lists pods before they are
        // ready, so that the first ones find each other).
        vars.push(env("cache.type", "cluster"));
        vars.push(env("cache.stack", "kubernetes"));
        vars.push(env(
            "jgroups.dns.query",
            format!("{}.{}.svc.cluster.local", pods_service_name(clinic), clinic.namespace),
        ));
        vars.push(env("jgroups.bind.port", JGROUPS_PORTS[0].to_string()));
    }
    if let Some(tracing) = &clinic.tracing {
        vars.extend(tracing_environment(clinic, tracing));
    }
    vars
}

/// Where the backend reaches MariaDB: its Service, or a replicated database's primary.
pub fn database_host(clinic: &Clinic) -> String {
    match clinic.database_cluster {
        Some(_) => super::database_cluster::primary_service(clinic),
        None => database::name(clinic),
    }
}

/// The user the backend connects as: the credentials Secret's, or for a replicated database
/// the one the mariadb-operator creates (`openmrs`, whatever an existing Secret's `username`).
fn database_user(clinic: &Clinic, secret: &str) -> k8s_openapi::api::core::v1::EnvVar {
    match clinic.database_cluster {
        Some(_) => env("OMRS_DB_USERNAME", super::secrets::DB_USERNAME),
        None => env_from_secret("OMRS_DB_USERNAME", secret, KEY_USERNAME),
    }
}

/// The JDBC URL and driver of the backend: upstream's start script's defaults, and with TLS
/// MariaDB Connector/J checking the clinic's CA and the Service's name (`verify-full`).
pub fn jdbc(clinic: &Clinic) -> (String, String) {
    let base = format!(
        "//{}:{}/{}?autoReconnect=true&sessionVariables=default_storage_engine=InnoDB&useUnicode=true&characterEncoding=UTF-8",
        database_host(clinic),
        database::PORT,
        database::DATABASE_NAME
    );
    if clinic.database_tls() {
        (
            format!(
                "jdbc:mariadb:{base}&sslMode=verify-full&serverSslCert={}/{}",
                internal_tls::BACKEND_CA_DIR,
                internal_tls::KEY_CA_CERT
            ),
            "org.mariadb.jdbc.Driver".into(),
        )
    } else {
        (format!("jdbc:mysql:{base}"), "com.mysql.jdbc.Driver".into())
    }
}

/// Where the OpenTelemetry Java agent's jar lands in the backend when an init container copies
/// it (the folder the OpenTelemetry Operator uses for the same).
pub const OTEL_AGENT_DIR: &str = "/otel-auto-instrumentation-java";
/// The OpenTelemetry Operator's annotation that injects the Java agent.
pub const OTEL_INJECT_JAVA_ANNOTATION: &str = "instrumentation.opentelemetry.io/inject-java";
/// Which containers it injects (the backend's only, not the init containers).
pub const OTEL_CONTAINER_NAMES_ANNOTATION: &str = "instrumentation.opentelemetry.io/container-names";

/// The agent's settings: the same whichever way it gets in (the OpenTelemetry Operator keeps a
/// variable the container already sets), so the endpoint is always the one the NetworkPolicy
/// opens. Only traces leave: logs go to stdout for the log pipeline, metrics stay off.
fn tracing_environment(clinic: &Clinic, tracing: &TracingPolicy) -> Vec<EnvVar> {
    let mut vars = vec![
        EnvVar {
            name: "OTEL_POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        env("OTEL_SERVICE_NAME", "openmrs"),
        env(
            "OTEL_RESOURCE_ATTRIBUTES",
            format!(
                "clinic={},service.namespace={},k8s.namespace.name={},k8s.pod.name=$(OTEL_POD_NAME)",
                clinic.name, clinic.namespace, clinic.namespace
            ),
        ),
        env("OTEL_EXPORTER_OTLP_ENDPOINT", tracing.collector.endpoint()),
        env("OTEL_EXPORTER_OTLP_PROTOCOL", tracing.collector.protocol.as_str()),
        env("OTEL_TRACES_EXPORTER", "otlp"),
        env("OTEL_METRICS_EXPORTER", "none"),
        env("OTEL_LOGS_EXPORTER", "none"),
        // W3C trace context: the gateway sends a `traceparent` on every request.
        env("OTEL_PROPAGATORS", "tracecontext,baggage"),
    ];
    if tracing.java_agent.image.is_some() {
        vars.push(env("JAVA_TOOL_OPTIONS", format!("-javaagent:{OTEL_AGENT_DIR}/javaagent.jar")));
    }
    vars
}

/// The init container that copies the agent's jar from the image the policy names.
fn agent_copier(clinic: &Clinic, image: &str, jar: &str) -> Container {
    Container {
        name: "otel-agent".into(),
        image: Some(image.into()),
        image_pull_policy: Some(pull_policy(clinic)),
        command: Some(vec!["cp".into(), jar.into(), format!("{OTEL_AGENT_DIR}/javaagent.jar")]),
        resources: Some(resources(None, ("50m", "32Mi"), ("500m", "128Mi"))),
        security_context: Some(container_security_context_as(UID, GID)),
        volume_mounts: Some(vec![mount("otel-agent", OTEL_AGENT_DIR)]),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The backend's StatefulSet; `tls_proxy` is the TLS proxy's configuration, with
/// `spec.openmrs.backend.tls` ([`super::tls_proxy::config_map`]).
pub fn stateful_set(clinic: &Clinic, tls_proxy: Option<&ConfigMap>) -> StatefulSet {
    let spec = &clinic.spec.openmrs.backend;
    let image = clinic.backend_image();
    let security = container_security_context_as(UID, GID);
    let stage = Container {
        name: "stage-writable-dirs".into(),
        image: Some(image.clone()),
        image_pull_policy: Some(pull_policy(clinic)),
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            // Not `cp -a`: as a non-root user GNU cp cannot set the times of the emptyDir's
            // root, which root owns, and exits 1.
            "cp -R /openmrs/. /stage/openmrs/ && cp -R /usr/local/tomcat/. /stage/tomcat/".into(),
        ]),
        resources: Some(resources(None, ("100m", "128Mi"), ("1", "256Mi"))),
        security_context: Some(security.clone()),
        volume_mounts: Some(vec![mount("openmrs-home", "/stage/openmrs"), mount("tomcat", "/stage/tomcat")]),
        ..Default::default()
    };
    let mut mounts = vec![
        mount("openmrs-home", "/openmrs"),
        mount("data", "/openmrs/data"),
        mount("tomcat", "/usr/local/tomcat"),
        mount("tmp", "/tmp"),
    ];
    let mut ports = vec![ContainerPort {
        name: Some("http".into()),
        container_port: PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }];
    let mut volumes =
        vec![empty_dir("openmrs-home", "4Gi"), empty_dir("tomcat", "2Gi"), empty_dir("tmp", "1Gi")];
    if let Some(clustering) = &spec.clustering {
        mounts.push(mount("attachments", "/openmrs/data/complex_obs"));
        volumes.push(Volume {
            name: "attachments".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: clustering.attachments_claim_name.clone(),
                read_only: Some(false),
            }),
            ..Default::default()
        });
        for (i, port) in JGROUPS_PORTS.iter().enumerate() {
            ports.push(ContainerPort {
                name: Some(format!("jgroups-{i}")),
                container_port: *port,
                protocol: Some("TCP".into()),
                ..Default::default()
            });
        }
    }
    if clinic.database_tls() {
        mounts.push(read_only_mount("db-ca", internal_tls::BACKEND_CA_DIR));
        volumes.push(internal_tls::volume(clinic, internal_tls::Leaf::Database, "db-ca", true));
    }
    let mut containers = Vec::new();
    let mut annotations = BTreeMap::new();
    if let Some(config) = tls_proxy {
        let (proxy, proxy_volumes) = super::tls_proxy::container(clinic, config);
        containers.push(proxy);
        volumes.extend(proxy_volumes);
        annotations.extend(config_hash(config));
    }
    let mut init_containers = vec![stage];
    if let Some(tracing) = &clinic.tracing {
        match (&tracing.java_agent.image, &tracing.java_agent.instrumentation) {
            (Some(image), _) => {
                init_containers.push(agent_copier(clinic, image, tracing.java_agent.jar_path()));
                mounts.push(mount("otel-agent", OTEL_AGENT_DIR));
                volumes.push(empty_dir("otel-agent", "256Mi"));
            }
            (None, Some(instrumentation)) => {
                annotations.insert(OTEL_INJECT_JAVA_ANNOTATION.to_string(), instrumentation.clone());
                annotations.insert(OTEL_CONTAINER_NAMES_ANNOTATION.to_string(), "openmrs".to_string());
            }
            // The policy is checked when read: one of the two is set.
            (None, None) => {}
        }
    }
    let main = Container {
        name: "openmrs".into(),
        image: Some(image),
        image_pull_policy: Some(pull_policy(clinic)),
        ports: Some(ports),
        env: Some(environment(clinic)),
        resources: Some(resources(spec.resources.as_ref(), ("1", "2Gi"), ("4", "4Gi"))),
        security_context: Some(security),
        // First start loads modules and runs Liquibase: upstream allows about 20 minutes.
        startup_probe: Some(http_probe("/openmrs/health/started", 10, 120)),
        // The REST session endpoint needs the database, so readiness means "can serve users".
        readiness_probe: Some(http_probe("/openmrs/ws/rest/v1/session", 10, 3)),
        liveness_probe: Some(http_probe("/openmrs/health/alive", 15, 4)),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let pod = pod_spec(
        clinic,
        &spec.placement,
        PodParts {
            uid: UID,
            gid: Some(GID),
            init_containers,
            containers: std::iter::once(main).chain(containers).collect(),
            volumes,
            spread: Some(Component::Backend),
            drains: true,
            grace_seconds: Some(60),
            ..Default::default()
        },
    );
    StatefulSet {
        metadata: metadata(clinic, name(clinic), Component::Backend),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(pods_service_name(clinic)),
            selector: selector(clinic, Component::Backend),
            pod_management_policy: Some("OrderedReady".into()),
            persistent_volume_claim_retention_policy: Some(retention(clinic)),
            template: PodTemplateSpec {
                metadata: Some(pod_template_metadata(clinic, Component::Backend, &pod, annotations, &[])),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim_template(
                clinic,
                Component::Backend,
                &spec.storage.size,
                spec.storage.storage_class_name.as_ref(),
            )]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
