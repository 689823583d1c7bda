//! MariaDB: a one-replica StatefulSet with its data volume, its configuration and a headless
//! Service that also governs the StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::secrets::{KEY_PASSWORD, KEY_ROOT_PASSWORD, KEY_USERNAME};
use super::*;
use crate::api::DeletionPolicy;

pub const PORT: i32 = 3306;
/// The `mysql` user of the official image.
pub const UID: i64 = 999;
pub const DATABASE_NAME: &str = "openmrs";
/// Where the encryption Secret's key file and dump passphrase are mounted.
pub const ENCRYPTION_DIR: &str = "/etc/mysql/encryption";

pub fn name(clinic: &Clinic) -> String {
    clinic.child_name("mariadb")
}

/// The volume claim of MariaDB's first server (its only one without
/// `spec.database.highAvailability`; the mariadb-operator names its claim template `storage`):
/// while it exists, the data initialised with the clinic's credentials and keys exists.
pub fn first_data_claim(clinic: &Clinic) -> String {
    let template = if clinic.database_cluster.is_some() { "storage" } else { "data" };
    format!("{template}-{}-0", name(clinic))
}

/// Key of the MariaDB ConfigMap with the exporter's client settings (`--config.my-cnf`).
pub const EXPORTER_CNF_KEY: &str = "exporter.my-cnf";

/// Server settings: utf8mb4 as OpenMRS requires, upstream's connection limit and row binlog.
pub fn config_map(clinic: &Clinic) -> ConfigMap {
    let mut cnf = "\
[mariadb]
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
max_connections = 200
default_storage_engine = InnoDB
binlog_format = ROW
skip-name-resolve
innodb_buffer_pool_size = 256M
"
    .to_string();
    if clinic.spec.database.encrypt_at_rest {
        // FORCE: no table may be created unencrypted; the background threads encrypt what an
        // older, unencrypted data directory holds. Aria covers the system tables. AES_CBC, not
        // AES_CTR: CTR needs a server built with OpenSSL, CBC runs with every MariaDB build.
        cnf.push_str(&format!(
            "\
plugin_load_add = file_key_management
file_key_management_filename = {ENCRYPTION_DIR}/{keyfile}
file_key_management_encryption_algorithm = AES_CBC
innodb_encrypt_tables = FORCE
innodb_encrypt_log = ON
innodb_encrypt_temporary_tables = ON
innodb_encryption_threads = 2
encrypt_tmp_disk_tables = ON
encrypt_tmp_files = ON
encrypt_binlog = ON
aria_encrypt_tables = ON
",
            keyfile = super::secrets::KEY_KEYFILE,
        ));
    }
    if clinic.database_tls() {
        // Plaintext is refused over TCP (the socket, which the probes and the backup hook use,
        // counts as secure); TLS 1.2 at least.
        cnf.push_str(&format!(
            "\
ssl_cert = {dir}/{cert}
ssl_key = {dir}/{key}
ssl_ca = {dir}/{ca}
require_secure_transport = ON
tls_version = TLSv1.2,TLSv1.3
",
            dir = internal_tls::TLS_DIR,
            cert = internal_tls::KEY_TLS_CERT,
            key = internal_tls::KEY_TLS_KEY,
            ca = internal_tls::KEY_CA_CERT,
        ));
    }
    if super::monitoring::enabled(clinic) {
        cnf.push_str(&format!(
            "init_file = {}/{}\n",
            super::monitoring::EXPORTER_INIT_DIR,
            super::monitoring::KEY_INIT_SQL
        ));
    }
    let mut data = BTreeMap::from([("clinic.cnf".to_string(), cnf)]);
    if clinic.database_tls() && super::monitoring::enabled(clinic) {
        // Not `.cnf`: MariaDB's `!includedir` must not read the exporter's client settings.
        data.insert(
            EXPORTER_CNF_KEY.to_string(),
            format!("[client]\nssl-ca = {}/{}\n", internal_tls::TLS_DIR, internal_tls::KEY_CA_CERT),
        );
    }
    ConfigMap {
        metadata: metadata(clinic, clinic.child_name("mariadb-config"), Component::Database),
        data: Some(data),
        ..Default::default()
    }
}

/// Headless: the backend resolves the pod directly, and it governs the StatefulSet's DNS.
pub fn service(clinic: &Clinic) -> Service {
    Service {
        metadata: metadata(clinic, name(clinic), Component::Database),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(clinic.selector_labels(Component::Database)),
            ports: Some(vec![ServicePort {
                name: Some("mysql".into()),
                port: PORT,
                target_port: Some(IntOrString::String("mysql".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn healthcheck(args: &[&str]) -> Option<ExecAction> {
    let mut command = vec!["healthcheck.sh".to_string()];
    command.extend(args.iter().map(|s| s.to_string()));
    Some(ExecAction { command: Some(command) })
}

pub fn stateful_set(clinic: &Clinic, config: &ConfigMap) -> StatefulSet {
    let spec = &clinic.spec.database;
    let secret = clinic.db_credentials_secret();
    let container = Container {
        name: "mariadb".into(),
        image: Some(clinic.database_image()),
        image_pull_policy: Some(pull_policy(clinic)),
        ports: Some(vec![ContainerPort {
            name: Some("mysql".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(vec![
            env_from_secret("MARIADB_ROOT_PASSWORD", &secret, KEY_ROOT_PASSWORD),
            env("MARIADB_DATABASE", DATABASE_NAME),
            env_from_secret("MARIADB_USER", &secret, KEY_USERNAME),
            env_from_secret("MARIADB_PASSWORD", &secret, KEY_PASSWORD),
            // Creates a localhost-only `healthcheck` user whose credentials stay in the data
            // directory, so probes need no password in the pod spec.
            env("MARIADB_MYSQL_LOCALHOST_USER", "1"),
            // Runs mariadb-upgrade when the server version changes.
            env("MARIADB_AUTO_UPGRADE", "1"),
        ]),
        resources: Some(resources(spec.resources.as_ref(), ("500m", "512Mi"), ("1", "1Gi"))),
        security_context: Some(container_security_context(UID)),
        // First start initialises the data directory: allow up to 10 minutes.
        startup_probe: Some(Probe {
            exec: healthcheck(&["--connect", "--innodb_initialized"]),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(60),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            exec: healthcheck(&["--connect", "--innodb_initialized"]),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            exec: healthcheck(&["--connect"]),
            period_seconds: Some(20),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("data", "/var/lib/mysql"),
            read_only_mount("config", "/etc/mysql/conf.d"),
            mount("run", "/run/mysqld"),
            mount("tmp", "/tmp"),
            mount(super::backup::DUMP_VOLUME, super::backup::DUMP_DIR),
        ]),
        ..Default::default()
    };
    let mut container = container;
    let mut containers = Vec::new();
    // The dump of the pre-backup hook is at most the size of the data.
    let mut volumes = vec![
        config_volume("config", config),
        empty_dir("run", "16Mi"),
        empty_dir("tmp", "1Gi"),
        empty_dir(super::backup::DUMP_VOLUME, &spec.storage.size),
    ];
    if super::monitoring::enabled(clinic) {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(read_only_mount("exporter-init", super::monitoring::EXPORTER_INIT_DIR));
        volumes.push(exporter_init_volume(clinic));
    }
    if clinic.spec.database.encrypt_at_rest {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(read_only_mount("encryption", ENCRYPTION_DIR));
        volumes.push(encryption_volume(clinic));
    }
    if clinic.database_tls() {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(read_only_mount("tls", internal_tls::TLS_DIR));
        volumes.push(internal_tls::volume(clinic, internal_tls::Leaf::Database, "tls", false));
    }
    containers.push(container);
    if super::monitoring::enabled(clinic) {
        let mut exporter = super::monitoring::mysqld_exporter(clinic);
        if clinic.database_tls() {
            exporter.volume_mounts = Some(vec![
                read_only_mount("tls-ca", internal_tls::TLS_DIR),
                read_only_mount("exporter-config", super::monitoring::EXPORTER_CONFIG_DIR),
            ]);
            volumes.push(internal_tls::volume(clinic, internal_tls::Leaf::Database, "tls-ca", true));
            volumes.push(exporter_config_volume(config));
        }
        containers.push(exporter);
    }
    // One replica: no topology spread; a minute to flush InnoDB on shutdown.
    let pod = pod_spec(
        clinic,
        &spec.placement,
        PodParts { uid: UID, containers, volumes, grace_seconds: Some(60), ..Default::default() },
    );
    let mut annotations = config_hash(config);
    if let Some(certificate) = clinic.database_certificate.as_ref().filter(|_| clinic.database_tls()) {
        annotations.insert(internal_tls::REVISION_ANNOTATION.to_string(), certificate.not_after.clone());
    }
    StatefulSet {
        metadata: metadata(clinic, name(clinic), Component::Database),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name(clinic)),
            selector: selector(clinic, Component::Database),
            pod_management_policy: Some("OrderedReady".into()),
            persistent_volume_claim_retention_policy: Some(retention(clinic)),
            template: PodTemplateSpec {
                metadata: Some(pod_template_metadata(
                    clinic,
                    Component::Database,
                    &pod,
                    annotations,
                    &[super::backup::DUMP_VOLUME],
                )),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim_template(
                clinic,
                Component::Database,
                &spec.storage.size,
                spec.storage.storage_class_name.as_ref(),
            )]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The exporter's client settings from MariaDB's ConfigMap, as `my.cnf`.
fn exporter_config_volume(config: &ConfigMap) -> k8s_openapi::api::core::v1::Volume {
    use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, KeyToPath, Volume};
    Volume {
        name: "exporter-config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config.metadata.name.clone().unwrap_or_default(),
            items: Some(vec![KeyToPath { key: EXPORTER_CNF_KEY.into(), path: "my.cnf".into(), mode: None }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Only the init SQL of the exporter Secret, readable by the `mysql` group (fsGroup).
fn exporter_init_volume(clinic: &Clinic) -> k8s_openapi::api::core::v1::Volume {
    use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume};
    Volume {
        name: "exporter-init".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(super::monitoring::exporter_secret_name(clinic)),
            items: Some(vec![KeyToPath {
                key: super::monitoring::KEY_INIT_SQL.into(),
                path: super::monitoring::KEY_INIT_SQL.into(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

/// The key file and the dump passphrase, readable by the `mysql` group (fsGroup) only.
fn encryption_volume(clinic: &Clinic) -> k8s_openapi::api::core::v1::Volume {
    use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume};
    Volume {
        name: "encryption".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(clinic.encryption_secret()),
            items: None,
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

/// What deleting the StatefulSet does to its claims: the clinic's deletion policy.
pub(crate) fn retention(clinic: &Clinic) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    let when_deleted = match clinic.deletion_policy() {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(when_deleted.into()),
        when_scaled: Some("Retain".into()),
    }
}

/// The `data` claim template (immutable once the StatefulSet exists).
pub(crate) fn claim_template(
    clinic: &Clinic,
    component: Component,
    size: &str,
    storage_class: Option<&String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(clinic.labels(component)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage_class.cloned(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(size.to_string()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
