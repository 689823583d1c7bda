//! Velero objects and backup health, without a cluster.

mod common;

use clinic_operator::api::ClinicPlatform;
use clinic_operator::desired::backup;
use clinic_operator::model;
use clinic_operator::reconcile::backups::{BackupRecord, health};
use clinic_operator::reconcile::error::Problem;
use common::clinic;
use jiff::{Timestamp, ToSpan};

#[test]
fn schedule_selects_the_clinic_and_dumps_mariadb_first() {
    let c = clinic(
        "  backup:\n    schedule: \"30 1 * * *\"\n    retention: 2160h\n    storageLocation: ovh-gra\n",
    );
    let s = backup::schedule(&c).expect("backups are on by default");
    assert_eq!(s.metadata.namespace.as_deref(), Some("velero"));
    assert_eq!(s.metadata.name.as_deref(), Some("clinic-lyon-lyon-4d703153"));
    assert!(s.metadata.owner_references.is_none(), "no cross-namespace owner reference");
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], "lyon");
    assert_eq!(labels[backup::CLINIC_NAMESPACE_LABEL], "clinic-lyon");
    let spec = &s.data["spec"];
    assert_eq!(spec["schedule"], "30 1 * * *");
    assert_eq!(spec["useOwnerReferencesInBackup"], false);
    let t = &spec["template"];
    assert_eq!(t["includedNamespaces"][0], "clinic-lyon");
    assert_eq!(t["ttl"], "2160h");
    assert_eq!(t["storageLocation"], "ovh-gra");
    assert_eq!(t["defaultVolumesToFsBackup"], true);
    assert_eq!(t["snapshotVolumes"], false);
    assert_eq!(
        t["metadata"]["labels"]["app.kubernetes.io/instance"], "lyon",
        "backups inherit the clinic labels"
    );
    let hook = &t["hooks"]["resources"][0];
    assert_eq!(hook["labelSelector"]["matchLabels"]["app.kubernetes.io/component"], "database");
    let exec = &hook["pre"][0]["exec"];
    assert_eq!(exec["container"], "mariadb");
    assert_eq!(exec["onError"], "Fail");
    let command = exec["command"][2].as_str().unwrap();
    assert!(command.contains("mariadb-dump") && command.contains("--single-transaction"));
    assert_eq!(exec["command"][0], "/bin/bash", "pipefail needs bash");
    assert!(command.starts_with("set -euo pipefail;"));
    assert!(command.contains(&format!("dir={}", backup::DUMP_DIR)), "{command}");
    assert!(!command.contains("/var/lib/mysql/"), "the dump stays out of the data directory: {command}");
    // Compressed, then encrypted before it is written (encryptAtRest is the default).
    assert!(
        command.contains(&format!(
            "| gzip -c | openssl enc {} -pass file:/etc/mysql/encryption/dump-passphrase > \"$file.tmp\"",
            backup::DUMP_CIPHER
        )),
        "compressed and encrypted: {command}"
    );
    assert!(command.contains(&format!("file=$dir/{}", backup::ENCRYPTED_DUMP_FILE)), "{command}");
    // A plaintext dump left by an unencrypted past goes too.
    assert!(command.contains(&format!("\"$dir/{}\"", backup::DUMP_FILE)), "{command}");
    let removed = command.find("rm -f").unwrap();
    let dumped = command.find("mariadb-dump").unwrap();
    let checked = command.find("exit 1").unwrap();
    assert!(
        removed < checked && checked < dumped,
        "old dump removed, then space checked, then dumped: {command}"
    );
    assert!(command.contains("$MARIADB_ROOT_PASSWORD"), "the password stays in the pod's environment");
}

#[test]
fn velero_backs_up_the_dump_volume_and_no_scratch_or_generated_config() {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    let c = clinic("  backup:\n    storageLocation: ovh-gra\n");
    let annotations = |template: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default()
    };
    let db: StatefulSet = clinic_operator::desired::database::stateful_set(
        &c,
        &clinic_operator::desired::database::config_map(&c),
    );
    let db_annotations = annotations(&db.spec.as_ref().unwrap().template);
    assert_eq!(db_annotations[backup::VOLUMES_EXCLUDES_ANNOTATION], "run,tmp");
    let backend: StatefulSet = clinic_operator::desired::backend::stateful_set(&c, None);
    assert_eq!(
        annotations(&backend.spec.as_ref().unwrap().template)[backup::VOLUMES_EXCLUDES_ANNOTATION],
        "openmrs-home,tomcat,tmp",
        "the backend's server properties hold passwords in clear"
    );
    let frontend: Deployment = clinic_operator::desired::frontend::deployment(&c);
    assert_eq!(
        annotations(&frontend.spec.as_ref().unwrap().template)[backup::VOLUMES_EXCLUDES_ANNOTATION],
        "site,cache,run,tmp"
    );
    // Snapshotted data volumes: the dump is still copied by file-system backup.
    let snap = clinic("  backup:\n    volumes: Snapshot\n");
    let db: StatefulSet = clinic_operator::desired::database::stateful_set(
        &snap,
        &clinic_operator::desired::database::config_map(&snap),
    );
    let a = annotations(&db.spec.as_ref().unwrap().template);
    assert_eq!(a[backup::VOLUMES_INCLUDES_ANNOTATION], backup::DUMP_VOLUME);
    assert!(!a.contains_key(backup::VOLUMES_EXCLUDES_ANNOTATION));
}

#[test]
fn snapshot_mode_and_disabled_backups() {
    let c = clinic("  backup:\n    volumes: Snapshot\n");
    let t = backup::schedule(&c).unwrap().data["spec"]["template"].clone();
    assert_eq!(t["snapshotVolumes"], true);
    assert_eq!(t["defaultVolumesToFsBackup"], false);
    assert!(backup::schedule(&clinic("  backup:\n    enabled: false\n")).is_none());
}

#[test]
fn names_stay_within_label_limits() {
    let yaml = format!(
        "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: {}\n  namespace: {}\nspec: {{}}\n",
        "c".repeat(40),
        "n".repeat(63)
    );
    let cp: ClinicPlatform = serde_yaml::from_str(&yaml).unwrap();
    let c = model::validate(&cp).unwrap();
    let name = backup::base_name(&c);
    // Velero names scheduled backups <schedule>-<14-digit timestamp> and labels them with it.
    assert!(name.len() + 15 <= 63, "{name}");
    let gate = backup::pre_upgrade_backup_name(&c, "img:3.8.0");
    assert!(gate.len() <= 63, "{gate}");
}

#[test]
fn pre_upgrade_backup_is_named_after_its_target() {
    let c = clinic("  {}\n");
    let a = backup::pre_upgrade_backup(&c, "openmrs:3.8.0");
    assert_eq!(
        a.metadata.name.as_deref(),
        Some(backup::pre_upgrade_backup_name(&c, "openmrs:3.8.0").as_str())
    );
    assert_ne!(
        backup::pre_upgrade_backup_name(&c, "openmrs:3.8.0"),
        backup::pre_upgrade_backup_name(&c, "openmrs:3.9.0")
    );
    assert_eq!(a.data["spec"]["includedNamespaces"][0], "clinic-lyon");
    assert_eq!(a.metadata.annotations.unwrap()["clinic.audioprothese.fr/upgrade-to"], "openmrs:3.8.0");
}

fn record(name: &str, phase: &str, completed: Option<Timestamp>) -> BackupRecord {
    BackupRecord {
        name: name.into(),
        phase: phase.into(),
        created: completed,
        completed,
        failure_reason: None,
    }
}

#[test]
fn backup_ready_follows_the_newest_backups_and_the_rpo() {
    let c = clinic("  backup:\n    rpo: 26h\n");
    let now: Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
    let ago = |h: i64| Some(now - h.hours());
    let created = ago(24 * 30);
    let judge = |records: Vec<BackupRecord>| {
        let mut sorted = records;
        sorted.sort_by_key(|r| std::cmp::Reverse(r.created));
        health(&c, created, true, &Ok(sorted), now)
    };

    let ok = judge(vec![record("b1", "Completed", ago(3))]);
    assert_eq!((ok.status, ok.reason), ("True", "WithinRPO"));
    assert_eq!(ok.last_success, ago(3));

    let old = judge(vec![record("b1", "Completed", ago(30))]);
    assert_eq!((old.status, old.reason), ("False", "RPOExceeded"));
    assert!(old.message.contains("26h"));

    let failed = judge(vec![record("b1", "Completed", ago(25)), record("b2", "Failed", ago(1))]);
    assert_eq!((failed.status, failed.reason), ("False", "BackupFailed"));
    assert!(failed.message.contains("b2") && failed.message.contains("last success"), "{}", failed.message);
    assert_eq!(failed.last_success, ago(25));

    let partial = judge(vec![record("b2", "PartiallyFailed", ago(1))]);
    assert_eq!(partial.reason, "BackupPartiallyFailed");
    assert!(partial.message.contains("no successful backup yet"));

    // A newer success after a failure clears it.
    let recovered = judge(vec![record("b2", "Failed", ago(5)), record("b3", "Completed", ago(1))]);
    assert_eq!(recovered.status, "True");

    // An in-progress backup does not hide the last finished one.
    let running = judge(vec![record("b1", "Completed", ago(2)), record("b2", "InProgress", ago(0))]);
    assert_eq!(running.status, "True");

    let none_old = judge(vec![]);
    assert_eq!((none_old.status, none_old.reason), ("False", "NoSuccessfulBackup"));
    let young = health(&c, ago(1), true, &Ok(vec![]), now);
    assert_eq!((young.status, young.reason), ("Unknown", "AwaitingFirstBackup"));

    let absent = health(&c, created, false, &Ok(vec![]), now);
    assert_eq!((absent.status, absent.reason), ("False", "VeleroNotInstalled"));
    let off = health(&clinic("  backup:\n    enabled: false\n"), created, true, &Ok(vec![]), now);
    assert_eq!((off.status, off.reason), ("False", "BackupDisabled"));
    let unreadable =
        health(&c, created, true, &Err(Problem { reason: "ReadFailed", message: "forbidden".into() }), now);
    assert_eq!(unreadable.status, "Unknown");
}

#[test]
fn compliance_controls_and_storage_encryption() {
    use clinic_operator::api::Compliance as Controls;
    use clinic_operator::reconcile::storage::storage_class_encrypts;
    use std::collections::BTreeMap;
    let params = |pairs: &[(&str, &str)]| {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
    };
    assert!(storage_class_encrypts(&params(&[("type", "gp3"), ("encrypted", "true")])));
    assert!(storage_class_encrypts(&params(&[("kmsKeyId", "arn:aws:kms:eu-west-3:1:key/x")])));
    assert!(storage_class_encrypts(&params(&[("csi.storage.k8s.io/node-stage-secret-name", "luks")])));
    assert!(!storage_class_encrypts(&params(&[("type", "gp3"), ("encrypted", "false")])));
    assert!(!storage_class_encrypts(&params(&[])));

    let all = Controls {
        pod_security_restricted: true,
        default_deny_network: true,
        tls_at_edge: true,
        backups_within_rpo: true,
        data_residency: true,
        encryption_at_rest: true,
        database_encrypted: true,
        database_tls: true,
        mutual_tls: true,
        backend_tls: true,
    };
    assert!(all.all_hold());
    let plaintext_backend = Controls { backend_tls: false, ..all.clone() };
    assert!(!plaintext_backend.all_hold());
    let plaintext_database = Controls { database_tls: false, ..all.clone() };
    assert!(!plaintext_database.all_hold());
    let no_mesh = Controls { mutual_tls: false, ..all.clone() };
    assert!(!no_mesh.all_hold());
    let no_tls = Controls { tls_at_edge: false, ..all };
    assert!(!no_tls.all_hold());
    let failing: Vec<_> =
        no_tls.list().iter().filter(|(_, holds, _)| !holds).map(|(name, _, _)| *name).collect();
    assert_eq!(failing, ["tlsAtEdge"]);
}

#[test]
fn backup_health_does_not_change_with_the_clock_alone() {
    // A message that moved with time would rewrite the status on every resync.
    let c = clinic("  backup:\n    rpo: 26h\n");
    let done: Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
    let records = vec![record("b1", "Completed", Some(done))];
    let at = |t: &str| health(&c, Some(done - 48.hours()), true, &Ok(records.clone()), t.parse().unwrap());
    assert_eq!(at("2026-11-21T03:00:00Z"), at("2026-11-21T09:30:00Z"));
}

/// Names outside the clinic's namespace never collide: `clinic-lyon`/`main` and
/// `clinic`/`lyon-main` read alike, and once shared one Schedule (issue 15).
#[test]
fn outside_names_of_look_alike_clinics_differ() {
    let one = backup::outside_name("clinic-lyon", "main");
    let other = backup::outside_name("clinic", "lyon-main");
    assert_ne!(one, other);
    assert!(one.starts_with("clinic-lyon-main-") && other.starts_with("clinic-lyon-main-"), "{one} {other}");
    // Long names stay within the 44 characters Velero's backup names leave.
    let long = backup::outside_name(&"n".repeat(63), &"c".repeat(40));
    assert!(long.len() <= 44, "{long}");
    assert_ne!(long, backup::outside_name(&"n".repeat(62), &format!("n-{}", "c".repeat(38))));
}
