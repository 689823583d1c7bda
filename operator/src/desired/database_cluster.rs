//! A replicated MariaDB (`spec.database.highAvailability`): a `k8s.mariadb.com/v1alpha1`
//! `MariaDB` that the mariadb-operator turns into a primary, replicas, their Services
//! (`<name>-mariadb-primary` for writes) and a PodDisruptionBudget, and whose primary it moves
//! when the primary's pod goes down. It takes the place of [`super::database`]'s StatefulSet,
//! with the same settings where the API lets them through: the image, the generated
//! credentials, the server configuration and encryption at rest, the volumes of the backup
//! hook, the pods' hardening and placement, and TLS from the clinic's own CA.
//!
//! The fields are the mariadb-operator's documented API (its `api/v1alpha1` of the v26 line);
//! its CRD cannot be fetched here, so the unit tests check each field against that API and
//! the kind workflow applies the object to the real CRD and its webhook.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext, Volume, VolumeMount};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Map, Value, json};

use super::secrets::{DB_USERNAME, KEY_PASSWORD, KEY_ROOT_PASSWORD};
use super::*;

pub const GROUP: &str = "k8s.mariadb.com";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "MariaDB";

/// The mariadb-operator's agent API, which its controller calls on each MariaDB pod.
pub const AGENT_PORT: i32 = 5555;

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), "mariadbs")
}

/// The `MariaDB`'s name, which its StatefulSet, pods and Services take too.
pub fn name(clinic: &Clinic) -> String {
    super::database::name(clinic)
}

/// The Service that always points at the primary: where the backend writes.
pub fn primary_service(clinic: &Clinic) -> String {
    format!("{}-primary", name(clinic))
}

/// The labels the mariadb-operator gives the MariaDB pods and selects them by: ours on its
/// pods would be overwritten, so the clinic's NetworkPolicies and backup hook select these.
pub fn pod_labels(clinic: &Clinic) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "mariadb".to_string()),
        ("app.kubernetes.io/instance".to_string(), name(clinic)),
    ])
}

/// The labels of the pods of its metrics exporter (a Deployment `<name>-mariadb-metrics`).
pub fn exporter_pod_labels(clinic: &Clinic) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "exporter".to_string()),
        ("app.kubernetes.io/instance".to_string(), format!("{}-metrics", name(clinic))),
    ])
}

/// The `MariaDB` of a clinic with `spec.database.highAvailability` (`None` without it).
pub fn build(clinic: &Clinic) -> Option<DynamicObject> {
    let cluster = clinic.database_cluster.as_ref()?;
    let spec = &clinic.spec.database;
    let config = super::database::config_map(clinic);
    let secret = clinic.db_credentials_secret();
    // The StatefulSet the operator would run alone: the container, volumes and pod settings are
    // taken from it, so that both carry the same hardening, limits and hook volumes.
    let stateful_set = super::database::stateful_set(clinic, &config);
    let template = stateful_set.spec.map(|s| s.template).unwrap_or_default();
    let pod = template.spec.unwrap_or_default();
    let container = pod.containers.iter().find(|c| c.name == "mariadb").cloned().unwrap_or_default();
    let volumes: Vec<Value> = pod.volumes.iter().flatten().filter_map(cluster_volume).collect();
    let mounts: Vec<Value> = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| volumes.iter().any(|v| v["name"] == m.name.as_str()))
        .map(cluster_mount)
        .collect();
    let container_security = container.security_context.as_ref().map(container_security);
    let mut pod_metadata = template.metadata.unwrap_or_default();
    let mut labels = pod_metadata.labels.take().unwrap_or_default();
    // The mariadb-operator's own selector labels win on its pods; ours would only mislead.
    labels.retain(|k, _| k != "app.kubernetes.io/instance" && k != "app.kubernetes.io/name");
    // The config hash rolls our StatefulSet; the mariadb-operator rolls on `myCnf` itself.
    let mut annotations = pod_metadata.annotations.take().unwrap_or_default();
    annotations.remove(CONFIG_HASH_ANNOTATION);
    annotations.remove(super::internal_tls::REVISION_ANNOTATION);

    let mut body = Map::new();
    body.insert("image".into(), json!(clinic.database_image()));
    body.insert("imagePullPolicy".into(), json!(pull_policy(clinic)));
    if let Some(secrets) = image_pull_secrets(clinic) {
        body.insert("imagePullSecrets".into(), json!(secrets));
    }
    body.insert("replicas".into(), json!(cluster.replicas));
    body.insert(
        "replication".into(),
        json!({
            "enabled": true,
            "primary": { "autoFailover": true },
            // Basic auth between the mariadb-operator and its agents: the MariaDB pods need no
            // cluster-wide rights (TokenReview) nor a way to the API server.
            "agent": { "basicAuth": { "enabled": true }, "securityContext": container_security },
            "initContainer": { "securityContext": container_security },
        }),
    );
    body.insert("rootPasswordSecretKeyRef".into(), secret_key(&secret, KEY_ROOT_PASSWORD));
    // The user the backend connects as: the generated Secret's, whose name is fixed.
    body.insert("username".into(), json!(DB_USERNAME));
    body.insert("passwordSecretKeyRef".into(), secret_key(&secret, KEY_PASSWORD));
    body.insert("database".into(), json!(super::database::DATABASE_NAME));
    body.insert("storage".into(), storage(clinic));
    body.insert("myCnf".into(), json!(my_cnf(&config)));
    if let Some(resources) = &container.resources {
        body.insert("resources".into(), json!(resources));
    }
    body.insert("securityContext".into(), json!(container_security));
    if let Some(pod_security) = &pod.security_context {
        body.insert("podSecurityContext".into(), pod_security_subset(pod_security));
    }
    body.insert("podMetadata".into(), json!({ "labels": labels, "annotations": annotations }));
    body.insert("volumes".into(), json!(volumes));
    body.insert("volumeMounts".into(), json!(mounts));
    // One MariaDB per node: a node's loss takes one server, never the primary and its replica.
    let mut affinity = json!({ "antiAffinityEnabled": true });
    if let Some(node_affinity) = pod.affinity.and_then(|a| a.node_affinity) {
        affinity["nodeAffinity"] = json!(node_affinity);
    }
    body.insert("affinity".into(), affinity);
    if let Some(spread) = topology_spread(clinic, Component::Database, &spec.placement) {
        let selector = json!({ "matchLabels": pod_labels(clinic) });
        let spread: Vec<Value> = spread
            .into_iter()
            .map(|c| {
                let mut c = json!(c);
                c["labelSelector"] = selector.clone();
                c
            })
            .collect();
        body.insert("topologySpreadConstraints".into(), json!(spread));
    }
    if let Some(nodes) = &pod.node_selector {
        body.insert("nodeSelector".into(), json!(nodes));
    }
    if let Some(tolerations) = &pod.tolerations {
        body.insert("tolerations".into(), json!(tolerations));
    }
    if let Some(class) = &pod.priority_class_name {
        body.insert("priorityClassName".into(), json!(class));
    }
    body.insert("terminationGracePeriodSeconds".into(), json!(pod.termination_grace_period_seconds));
    body.insert("podDisruptionBudget".into(), json!({ "maxUnavailable": 1 }));
    body.insert("tls".into(), tls(clinic));
    if super::monitoring::enabled(clinic) {
        body.insert(
            "metrics".into(),
            json!({
                "enabled": true,
                "exporter": {
                    "securityContext": container_security,
                    "podSecurityContext": pod.security_context.as_ref().map(pod_security_subset),
                },
            }),
        );
    }
    let mut object = DynamicObject::new(&name(clinic), &resource()).within(&clinic.namespace);
    object.metadata = metadata(clinic, name(clinic), Component::Database);
    let mut spec = Value::Object(body);
    strip_nulls(&mut spec);
    object.data = json!({ "spec": spec });
    Some(object)
}

/// Drops what is unset: the API has no null for these fields.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn secret_key(secret: &str, key: &str) -> Value {
    // The operator generates (or the platform provides) the Secret: the mariadb-operator must
    // never write a password of its own into it.
    json!({ "name": secret, "key": key, "generate": false })
}

/// The data volume of each server, kept or deleted with the clinic as its deletion policy says.
fn storage(clinic: &Clinic) -> Value {
    let storage = &clinic.spec.database.storage;
    let retention = super::database::retention(clinic);
    let mut value = json!({
        "size": storage.size,
        "pvcRetentionPolicy": { "whenDeleted": retention.when_deleted, "whenScaled": retention.when_scaled },
    });
    if let Some(class) = &storage.storage_class_name {
        value["storageClassName"] = json!(class);
    }
    value
}

/// Our server settings without what the mariadb-operator writes itself: its TLS settings
/// (`tls.required` sets `require_secure_transport`), and the init file of our own exporter
/// (it runs its own, with a user of its own).
pub fn my_cnf(config: &k8s_openapi::api::core::v1::ConfigMap) -> String {
    let cnf = config.data.as_ref().and_then(|d| d.get("clinic.cnf")).map(String::as_str).unwrap_or_default();
    const THEIRS: [&str; 6] =
        ["ssl_cert", "ssl_key", "ssl_ca", "require_secure_transport", "tls_version", "init_file"];
    cnf.lines()
        .filter(|line| !THEIRS.iter().any(|k| line.starts_with(&format!("{k} "))))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// TLS only, with certificates the mariadb-operator issues from the clinic's CA (Secret
/// `<name>-db-ca`, keys `ca.crt` and `ca.key`, the layout it documents for "bring your own
/// CA"): the backend keeps trusting the CA it trusts for the single MariaDB, and the names
/// the mariadb-operator's certificates carry include `<name>-mariadb-primary`.
fn tls(clinic: &Clinic) -> Value {
    if !clinic.database_tls() {
        return json!({ "enabled": false });
    }
    let ca = json!({ "name": clinic.clinic_ca_secret() });
    json!({ "enabled": true, "required": true, "serverCASecretRef": ca, "clientCASecretRef": ca })
}

/// The volumes its API can hold (emptyDir, Secret without items, ConfigMap): the backup dump,
/// the encryption keys, and the writable `/run/mysqld` and `/tmp` of a read-only root. The
/// configuration and TLS volumes are the mariadb-operator's own.
fn cluster_volume(volume: &Volume) -> Option<Value> {
    if let Some(empty) = &volume.empty_dir {
        return Some(json!({ "name": volume.name, "emptyDir": { "sizeLimit": empty.size_limit } }));
    }
    let secret = volume.secret.as_ref().filter(|s| s.items.is_none())?;
    Some(json!({
        "name": volume.name,
        "secret": { "secretName": secret.secret_name, "defaultMode": secret.default_mode },
    }))
}

fn cluster_mount(mount: &VolumeMount) -> Value {
    json!({ "name": mount.name, "mountPath": mount.mount_path, "readOnly": mount.read_only.unwrap_or(false) })
}

/// The fields of a container's security context its API has (no seccomp profile: the pod's
/// applies).
fn container_security(security: &SecurityContext) -> Value {
    json!({
        "allowPrivilegeEscalation": security.allow_privilege_escalation,
        "privileged": security.privileged,
        "readOnlyRootFilesystem": security.read_only_root_filesystem,
        "runAsNonRoot": security.run_as_non_root,
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        "capabilities": security.capabilities,
    })
}

/// The fields of a pod's security context its API has (no sysctls).
fn pod_security_subset(security: &PodSecurityContext) -> Value {
    json!({
        "runAsNonRoot": security.run_as_non_root,
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        "fsGroup": security.fs_group,
        "fsGroupChangePolicy": security.fs_group_change_policy,
        "seccompProfile": security.seccomp_profile,
    })
}
