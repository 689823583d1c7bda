//! Velero backups of a clinic: the Backup list, and backup health (`BackupReady`, the last
//! backup time) judged against the clinic's recovery point objective. Velero is optional:
//! whether its API is served comes from [`super::discovery`].

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use super::context::Context;
use super::error::{Error, Problem};
use crate::desired::backup::{self, backup_resource};
use crate::model::{Clinic, parse_duration};

/// One Velero Backup of the clinic, as far as health and the gate care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    pub name: String,
    pub phase: String,
    pub created: Option<Timestamp>,
    pub completed: Option<Timestamp>,
    pub failure_reason: Option<String>,
}

impl BackupRecord {
    pub fn from_object(o: &DynamicObject) -> Self {
        let status = o.data.get("status").cloned().unwrap_or(Value::Null);
        let time = |v: &Value| v.as_str().and_then(|s| s.parse::<Timestamp>().ok());
        Self {
            name: o.name_any(),
            phase: status["phase"].as_str().unwrap_or("New").to_string(),
            // Velero's start time orders backups; the object's creation time (one-second
            // resolution) is the fallback for backups not started yet.
            created: time(&status["startTimestamp"])
                .or_else(|| o.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            completed: time(&status["completionTimestamp"]),
            failure_reason: status["failureReason"].as_str().map(String::from),
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.phase.as_str(), "Failed" | "PartiallyFailed" | "FailedValidation")
    }

    pub fn succeeded(&self) -> bool {
        self.phase == "Completed"
    }
}

/// What backups look like for a clinic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHealth {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub last_success: Option<Timestamp>,
}

/// Backups of the clinic (scheduled and pre-upgrade), newest first.
pub async fn list_backups(ctx: &Context, clinic: &Clinic) -> Result<Vec<BackupRecord>, Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &clinic.spec.backup.velero_namespace, &backup_resource());
    let list = api
        .list(&ListParams::default().labels(&backup::backups_selector(clinic)))
        .await
        .map_err(|source| Error::Read { what: "the clinic's Velero backups".into(), source })?;
    let mut records: Vec<BackupRecord> = list.items.iter().map(BackupRecord::from_object).collect();
    newest_first(&mut records);
    Ok(records)
}

/// Newest first; the name (Velero's scheduled names end in a timestamp) breaks ties.
pub fn newest_first(records: &mut [BackupRecord]) {
    records.sort_by(|a, b| (b.created, &b.name).cmp(&(a.created, &a.name)));
}

/// Backup health when the clinic's Schedule could not be written (`error` says why).
pub fn schedule_failed(clinic: &Clinic, problem: &Problem, last_success: Option<Timestamp>) -> BackupHealth {
    let message = match problem.reason {
        // The Schedule's name is held by something else: Velero itself is fine.
        "NameClash" => format!("no backups are scheduled: {problem}"),
        _ => format!(
            "no backups are scheduled: {problem} Backups need Velero in namespace {} (spec.backup.veleroNamespace), one of the platform policy's veleroNamespaces, where the chart gives the operator its Role.",
            clinic.spec.backup.velero_namespace
        ),
    };
    BackupHealth {
        status: "False",
        reason: if problem.reason == "NameClash" { "NameClash" } else { "ScheduleFailed" },
        message,
        last_success,
    }
}

/// `BackupReady` from the clinic's backups and its recovery point objective.
pub fn health(
    clinic: &Clinic,
    clinic_created: Option<Timestamp>,
    installed: bool,
    backups: &Result<Vec<BackupRecord>, Problem>,
    now: Timestamp,
) -> BackupHealth {
    if !clinic.spec.backup.enabled {
        return BackupHealth {
            status: "False",
            reason: "BackupDisabled",
            message: "spec.backup.enabled is false: the clinic is not backed up".into(),
            last_success: None,
        };
    }
    if !installed {
        return BackupHealth {
            status: "False",
            reason: "VeleroNotInstalled",
            message: "the Velero CRDs (velero.io/v1) are not installed, so no backup is taken: install Velero (the operator picks it up without a restart) or set spec.backup.enabled to false".into(),
            last_success: None,
        };
    }
    let backups = match backups {
        Ok(b) => b,
        Err(e) => {
            return BackupHealth {
                status: "Unknown",
                reason: "BackupStatusUnknown",
                message: format!("backup health is unknown: {e}"),
                last_success: None,
            };
        }
    };
    let last_success =
        backups.iter().filter(|b| b.succeeded()).filter_map(|b| b.completed.or(b.created)).max();
    // Messages carry absolute times only: a relative age would change the status on every pass
    // and turn each resync into a write.
    match backups.iter().find(|b| b.succeeded() || b.failed()) {
        Some(latest) if latest.failed() => latest_failed(latest, last_success),
        _ => against_rpo(clinic, clinic_created, last_success, now),
    }
}

/// The newest finished backup failed: that is the news, whatever came before.
fn latest_failed(latest: &BackupRecord, last_success: Option<Timestamp>) -> BackupHealth {
    let since =
        latest.completed.or(latest.created).map(|t| t.to_string()).unwrap_or_else(|| "unknown time".into());
    let last = match last_success {
        Some(t) => format!("last success {t}"),
        None => "no successful backup yet".into(),
    };
    let why = latest.failure_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    BackupHealth {
        status: "False",
        reason: if latest.phase == "PartiallyFailed" { "BackupPartiallyFailed" } else { "BackupFailed" },
        message: format!(
            "backup {} ended {} at {since}{why}; {last}. See `velero backup describe {}` and its logs.",
            latest.name, latest.phase, latest.name
        ),
        last_success,
    }
}

/// The newest success (or, before any, the clinic's age) against the recovery point objective.
fn against_rpo(
    clinic: &Clinic,
    clinic_created: Option<Timestamp>,
    last_success: Option<Timestamp>,
    now: Timestamp,
) -> BackupHealth {
    let rpo =
        parse_duration("spec.backup.rpo", &clinic.spec.backup.rpo).unwrap_or(Duration::from_secs(26 * 3600));
    let age = |t: Timestamp| now.duration_since(t).unsigned_abs();
    match last_success {
        Some(t) if age(t) <= rpo => BackupHealth {
            status: "True",
            reason: "WithinRPO",
            message: format!(
                "newest successful backup completed {t}, within the RPO of {}",
                clinic.spec.backup.rpo
            ),
            last_success,
        },
        Some(t) => BackupHealth {
            status: "False",
            reason: "RPOExceeded",
            message: format!(
                "newest successful backup completed {t}: older than the RPO of {}. Check that the Schedule runs (`velero schedule get`) and the storage location is available.",
                clinic.spec.backup.rpo
            ),
            last_success,
        },
        None => match clinic_created {
            Some(created) if age(created) > rpo => BackupHealth {
                status: "False",
                reason: "NoSuccessfulBackup",
                message: format!(
                    "no successful backup since the clinic was created {created}, longer ago than the RPO of {}. Check that the Schedule runs (`velero schedule get`) and the storage location is available.",
                    clinic.spec.backup.rpo
                ),
                last_success: None,
            },
            _ => BackupHealth {
                status: "Unknown",
                reason: "AwaitingFirstBackup",
                message: format!(
                    "no backup yet; the first is due by the schedule '{}'",
                    clinic.spec.backup.schedule
                ),
                last_success: None,
            },
        },
    }
}
