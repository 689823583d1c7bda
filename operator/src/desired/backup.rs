//! Velero objects of a clinic: the `Schedule` (in Velero's namespace, so it carries no owner
//! reference: the finalizer removes it) and the `Backup` taken before an upgrade.
//!
//! Consistency: a pre-backup hook runs `mariadb-dump --single-transaction` inside the MariaDB
//! container and writes the compressed dump into the pod's dump volume (outside the data
//! directory), so every backup holds a transactionally consistent dump beside the raw InnoDB
//! files (which, copied while the server runs, may need crash recovery). A read lock cannot be used: an exec hook's session ends before the volume is
//! copied, releasing the lock. The hook fails the backup (`onError: Fail`) when the dump fails,
//! so no backup claims a consistency it lacks.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use serde_json::{Value, json};

use crate::api::VolumeBackupMethod;
use crate::model::{Clinic, Component, MANAGED_BY};

/// Velero's API group and version.
pub const VELERO_API_VERSION: &str = "velero.io/v1";
/// Label with the clinic's namespace on Velero objects (they live in Velero's namespace).
pub const CLINIC_NAMESPACE_LABEL: &str = "clinic.audioprothese.fr/namespace";
/// Where the hook writes the dump: a volume of its own, outside MariaDB's data directory (a
/// folder there would show up as a database, and `mariadb-upgrade` would rename it).
pub const DUMP_DIR: &str = "/var/lib/mysql-dump";
/// The compressed dump the hook leaves in [`DUMP_DIR`] when the database is not encrypted.
pub const DUMP_FILE: &str = "openmrs.sql.gz";
/// The compressed dump encrypted with the clinic's dump passphrase (`spec.database.encryptAtRest`).
pub const ENCRYPTED_DUMP_FILE: &str = "openmrs.sql.gz.enc";
/// How the dump is encrypted: `openssl enc` with these arguments, and `-d` to decrypt.
pub const DUMP_CIPHER: &str = "-aes-256-cbc -pbkdf2 -iter 200000 -salt";

/// The file the hook leaves in [`DUMP_DIR`].
pub fn dump_file(clinic: &Clinic) -> &'static str {
    if clinic.spec.database.encrypt_at_rest { ENCRYPTED_DUMP_FILE } else { DUMP_FILE }
}

/// Name of the MariaDB pod's dump volume.
pub const DUMP_VOLUME: &str = "dump";
/// Velero: volumes of a pod that file-system backup skips...
pub const VOLUMES_EXCLUDES_ANNOTATION: &str = "backup.velero.io/backup-volumes-excludes";
/// ... or, when volumes are snapshotted, the ones it backs up nevertheless.
pub const VOLUMES_INCLUDES_ANNOTATION: &str = "backup.velero.io/backup-volumes";

pub fn schedule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("velero.io", "v1", "Schedule"), "schedules")
}

pub fn backup_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("velero.io", "v1", "Backup"), "backups")
}

/// Base name of the clinic's objects outside its namespace (Velero's Schedule and Backups, a
/// dashboard in Grafana's namespace): `<namespace>-<name>` cut to 35 characters, then 8 hex
/// digits of a hash of `<namespace>/<name>`. The hash keeps two clinics apart even when their
/// names read alike (`clinic-lyon`/`main` and `clinic`/`lyon-main`: `/` is in neither name);
/// the length (at most 44) leaves room for Velero's backup names (`<schedule>-<timestamp>`) in
/// a 63-character label value.
pub fn base_name(clinic: &Clinic) -> String {
    outside_name(&clinic.namespace, &clinic.name)
}

/// [`base_name`] from the clinic's namespace and name alone.
pub fn outside_name(namespace: &str, name: &str) -> String {
    let joined = format!("{namespace}-{name}");
    let prefix = joined.get(..35).unwrap_or(&joined).trim_end_matches('-');
    let hash = crate::desired::hash_of(&format!("{namespace}/{name}"));
    format!("{prefix}-{}", &hash[..8])
}

/// The base name that builds before 0.2 gave the same objects: `<namespace>-<name>`,
/// which two clinics can share. Objects of that name that carry this clinic's labels are
/// removed once the new ones are in place.
pub fn legacy_base_name(clinic: &Clinic) -> String {
    let full = format!("{}-{}", clinic.namespace, clinic.name);
    if full.len() <= 44 {
        return full;
    }
    let hash = crate::desired::hash_of(&full);
    format!("{}-{}", full[..35].trim_end_matches('-'), &hash[..8])
}

/// Labels that tie Velero objects (and the backups Velero makes from the Schedule) to the clinic.
pub fn labels(clinic: &Clinic) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_string(), clinic.name.clone()),
        ("app.kubernetes.io/component".to_string(), "backup".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "openmrs".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), MANAGED_BY.to_string()),
        (CLINIC_NAMESPACE_LABEL.to_string(), clinic.namespace.clone()),
    ])
}

/// Label selector of every Backup of the clinic (scheduled and pre-upgrade).
pub fn backups_selector(clinic: &Clinic) -> String {
    format!("app.kubernetes.io/instance={},{CLINIC_NAMESPACE_LABEL}={}", clinic.name, clinic.namespace)
}

/// The Velero annotations of a pod: which of its `volumes` go into a backup. Scratch and
/// generated-config emptyDirs stay out (the backend's holds the database and admin passwords in
/// clear, and all of it is rebuilt at start); the emptyDirs named in `keep` (the dump) go in,
/// by file-system backup even when the data volumes are snapshotted.
pub fn pod_volume_annotations(
    clinic: &Clinic,
    volumes: &[k8s_openapi::api::core::v1::Volume],
    keep: &[&str],
) -> BTreeMap<String, String> {
    match clinic.spec.backup.volumes {
        VolumeBackupMethod::FileSystem => {
            let excluded: Vec<&str> = volumes
                .iter()
                .filter(|v| v.empty_dir.is_some() && !keep.contains(&v.name.as_str()))
                .map(|v| v.name.as_str())
                .collect();
            if excluded.is_empty() {
                BTreeMap::new()
            } else {
                BTreeMap::from([(VOLUMES_EXCLUDES_ANNOTATION.to_string(), excluded.join(","))])
            }
        }
        VolumeBackupMethod::Snapshot if !keep.is_empty() => {
            BTreeMap::from([(VOLUMES_INCLUDES_ANNOTATION.to_string(), keep.join(","))])
        }
        VolumeBackupMethod::Snapshot => BTreeMap::new(),
    }
}

/// The pre-backup hook's script: a free-space check, the previous dump removed, then a
/// compressed, transactionally consistent dump, encrypted (AES-256) before it is written when the
/// database encrypts at rest, that only replaces the file once complete (with `pipefail`, a
/// failing `mariadb-dump` fails the hook, not just `gzip`).
pub fn dump_script(clinic: &Clinic) -> String {
    let limit = crate::model::quantity_value(&clinic.spec.database.storage.size).unwrap_or(0.0) as u64;
    let encrypt = if clinic.spec.database.encrypt_at_rest {
        format!(
            " | openssl enc {DUMP_CIPHER} -pass file:{}/{}",
            super::database::ENCRYPTION_DIR,
            super::secrets::KEY_DUMP_PASSPHRASE
        )
    } else {
        String::new()
    };
    let file = dump_file(clinic);
    format!(
        "set -euo pipefail; dir={DUMP_DIR}; file=$dir/{file}; \
export MYSQL_PWD=\"$MARIADB_ROOT_PASSWORD\"; \
rm -f \"$file\" \"$file.tmp\" \"$dir/{DUMP_FILE}\"; \
need=$(mariadb -uroot -N -B -e \"SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables WHERE table_schema = '{db}'\"); \
free=$(df -Pk \"$dir\" | awk 'NR == 2 {{ print $4 * 1024 }}'); limit={limit}; \
if [ \"$limit\" -gt 0 ] && [ \"$limit\" -lt \"$free\" ]; then free=$limit; fi; \
if [ \"$need\" -ge \"$free\" ]; then echo \"dump needs up to $need bytes, $dir has $free\" >&2; exit 1; fi; \
mariadb-dump -uroot --single-transaction --quick --routines --triggers --events --databases {db} | gzip -c{encrypt} > \"$file.tmp\"; \
mv \"$file.tmp\" \"$file\"",
        db = crate::desired::database::DATABASE_NAME,
    )
}

/// The backup specification shared by the Schedule and the pre-upgrade Backup.
pub fn backup_spec(clinic: &Clinic) -> Value {
    let backup = &clinic.spec.backup;
    // Every MariaDB server dumps (a replica's dump is consistent as of what it applied).
    let database = match clinic.database_cluster {
        Some(_) => super::database_cluster::pod_labels(clinic),
        None => clinic.selector_labels(Component::Database),
    };
    let dump = dump_script(clinic);
    let (fs_backup, snapshots) = match backup.volumes {
        VolumeBackupMethod::FileSystem => (true, false),
        VolumeBackupMethod::Snapshot => (false, true),
    };
    let mut spec = json!({
        // The whole clinic namespace: the ClinicPlatform itself, its Secrets and volume claims.
        "includedNamespaces": [clinic.namespace],
        "ttl": backup.retention,
        "defaultVolumesToFsBackup": fs_backup,
        "snapshotVolumes": snapshots,
        "metadata": { "labels": labels(clinic) },
        "hooks": {
            "resources": [{
                "name": "mariadb-consistent-dump",
                "includedNamespaces": [clinic.namespace],
                "labelSelector": { "matchLabels": database },
                "pre": [{
                    "exec": {
                        "container": "mariadb",
                        "command": ["/bin/bash", "-c", dump],
                        "onError": "Fail",
                        "timeout": "10m",
                    }
                }],
            }]
        },
    });
    if let Some(location) = &backup.storage_location {
        spec["storageLocation"] = json!(location);
    }
    spec
}

fn object(ar: &ApiResource, name: String, clinic: &Clinic, spec: Value) -> DynamicObject {
    let mut object = DynamicObject::new(&name, ar).within(&clinic.spec.backup.velero_namespace);
    object.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(clinic.spec.backup.velero_namespace.clone()),
        labels: Some(labels(clinic)),
        ..Default::default()
    };
    object.data = json!({ "spec": spec });
    object
}

/// The clinic's Velero Schedule, or `None` when backups are off.
pub fn schedule(clinic: &Clinic) -> Option<DynamicObject> {
    if !clinic.spec.backup.enabled {
        return None;
    }
    let spec = json!({
        "schedule": clinic.spec.backup.schedule,
        // Backups must not be garbage-collected with the Schedule when the clinic goes away.
        "useOwnerReferencesInBackup": false,
        "template": backup_spec(clinic),
    });
    Some(object(&schedule_resource(), base_name(clinic), clinic, spec))
}

/// Name of the backup taken before rolling out `target_image`.
pub fn pre_upgrade_backup_name(clinic: &Clinic, target_image: &str) -> String {
    format!("{}-upgrade-{}", base_name(clinic), &crate::desired::hash_of(&target_image)[..8])
}

/// The Backup taken before rolling out `target_image`.
pub fn pre_upgrade_backup(clinic: &Clinic, target_image: &str) -> DynamicObject {
    let mut backup = object(
        &backup_resource(),
        pre_upgrade_backup_name(clinic, target_image),
        clinic,
        backup_spec(clinic),
    );
    if let Some(annotations) = backup.metadata.annotations.as_mut() {
        annotations.insert("clinic.audioprothese.fr/upgrade-to".into(), target_image.into());
    } else {
        backup.metadata.annotations = Some(BTreeMap::from([(
            "clinic.audioprothese.fr/upgrade-to".to_string(),
            target_image.to_string(),
        )]));
    }
    backup
}
