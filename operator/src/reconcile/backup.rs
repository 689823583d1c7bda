//! Backups with Velero: the Schedule, backup health (`BackupReady`, last backup time), the backup
//! gate before upgrades, and clean-up when a clinic is deleted.
//!
//! Velero is optional. Its presence is looked up through discovery (cached for a short while), so
//! CRDs installed after the operator started are picked up without a restart.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::error::{Error, Problem, Result};
use super::{Context, Notice};
use crate::api::{ClinicPlatform, FIELD_MANAGER, FINALIZER, UpgradeGate};
use crate::build::backup::{self, backup_resource};
use crate::model::{Clinic, HeldImages, mariadb_release, parse_duration};

/// How long a discovery answer about an optional API (Velero, cert-manager) is trusted.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(30);

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

/// The upgrade gate's verdict for this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Nothing to wait for.
    Open,
    /// The pre-upgrade backup runs; the old images stay.
    Waiting { backup: String },
    /// The upgrade is refused; the old images stay.
    Blocked { reason: &'static str, message: String },
}

impl Context {
    /// Whether Velero's CRDs are served (discovery, cached for [`DISCOVERY_TTL`]).
    pub async fn velero_installed(&self) -> bool {
        self.served("velero.io/v1", &["schedules", "backups"]).await
    }

    /// Whether cert-manager's Certificates are served.
    pub async fn cert_manager_installed(&self) -> bool {
        self.served("cert-manager.io/v1", &["certificates"]).await
    }

    /// Whether `group_version` serves all of `resources`, asked through discovery at most once
    /// per [`DISCOVERY_TTL`]: optional CRDs installed later are picked up without a restart.
    pub async fn served(&self, group_version: &'static str, resources: &[&str]) -> bool {
        match self.served_or_error(group_version, resources).await {
            Ok(served) => served,
            Err(e) => {
                debug!(error = %e, group_version, "discovery failed; treating the API as absent for now");
                false
            }
        }
    }

    /// Whether Velero's API is served, or why discovery could not tell: at deletion "could
    /// not tell" must not read as "absent", or the finalizer would go and leave a Schedule
    /// backing up the clinic's data.
    pub async fn velero_installed_or_error(&self) -> Result<bool> {
        self.served_or_error("velero.io/v1", &["schedules", "backups"]).await
    }

    /// Discovery of a group version (cached for [`DISCOVERY_TTL`]): an error is not cached.
    async fn served_or_error(&self, group_version: &'static str, resources: &[&str]) -> Result<bool> {
        let mut cache = self.discovery.lock().await;
        if let Some((served, at)) = cache.get(group_version)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(*served);
        }
        let served = match self.client.list_api_group_resources(group_version).await {
            Ok(list) => resources.iter().all(|r| list.resources.iter().any(|x| x.name == *r)),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(source) => {
                return Err(Error::Read { what: format!("the {group_version} API (discovery)"), source });
            }
        };
        if cache.get(group_version).map(|(was, _)| *was) != Some(served) {
            info!(group_version, served, "discovery");
        }
        cache.insert(group_version, (served, std::time::Instant::now()));
        Ok(served)
    }
}

/// Backups of the clinic (scheduled and pre-upgrade), newest first.
pub async fn list_backups(
    ctx: &Context,
    clinic: &Clinic,
) -> std::result::Result<Vec<BackupRecord>, kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &clinic.spec.backup.velero_namespace, &backup_resource());
    let list = api.list(&ListParams::default().labels(&backup::backups_selector(clinic))).await?;
    let mut records: Vec<BackupRecord> = list.items.iter().map(BackupRecord::from_object).collect();
    // Newest first; the name (Velero's scheduled names end in a timestamp) breaks ties.
    records.sort_by(|a, b| (b.created, &b.name).cmp(&(a.created, &a.name)));
    Ok(records)
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
    backups: &std::result::Result<Vec<BackupRecord>, String>,
    now: Timestamp,
) -> BackupHealth {
    let unknown =
        |reason, message: String| BackupHealth { status: "Unknown", reason, message, last_success: None };
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
        Err(e) => return unknown("BackupStatusUnknown", format!("backup health is unknown: {e}")),
    };
    let rpo =
        parse_duration("spec.backup.rpo", &clinic.spec.backup.rpo).unwrap_or(Duration::from_secs(26 * 3600));
    let last_success =
        backups.iter().filter(|b| b.succeeded()).filter_map(|b| b.completed.or(b.created)).max();
    let latest_finished = backups.iter().find(|b| b.succeeded() || b.failed());
    let age = |t: Timestamp| now.duration_since(t).unsigned_abs();
    // Messages carry absolute times only: a relative age would change the status on every pass
    // and turn each resync into a write.

    if let Some(latest) = latest_finished.filter(|b| b.failed()) {
        let since = latest
            .completed
            .or(latest.created)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "unknown time".into());
        let last = match last_success {
            Some(t) => format!("last success {t}"),
            None => "no successful backup yet".into(),
        };
        let why = latest.failure_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        return BackupHealth {
            status: "False",
            reason: if latest.phase == "PartiallyFailed" { "BackupPartiallyFailed" } else { "BackupFailed" },
            message: format!(
                "backup {} ended {} at {since}{why}; {last}. See `velero backup describe {}` and its logs.",
                latest.name, latest.phase, latest.name
            ),
            last_success,
        };
    }
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
            _ => unknown(
                "AwaitingFirstBackup",
                format!("no backup yet; the first is due by the schedule '{}'", clinic.spec.backup.schedule),
            ),
        },
    }
}

/// The images the workloads run now (their pod templates), if the backend exists.
pub fn running_images(ctx: &Context, clinic: &Clinic) -> Option<HeldImages> {
    let ns = &clinic.namespace;
    let first_image = |spec: Option<k8s_openapi::api::core::v1::PodSpec>, name: &str| {
        spec.and_then(|p| p.containers.into_iter().find(|c| c.name == name)).and_then(|c| c.image)
    };
    let stateful_set = |name: String, container: &str| {
        ctx.caches
            .get_typed::<StatefulSet>(ns, &name)
            .and_then(|s| first_image(s.spec.and_then(|s| s.template.spec), container))
    };
    let backend = stateful_set(crate::build::backend::name(clinic), "openmrs")?;
    let deployment = |name: String, container: &str| {
        ctx.caches
            .get_typed::<Deployment>(ns, &name)
            .and_then(|d| first_image(d.spec.and_then(|s| s.template.spec), container))
    };
    Some(HeldImages {
        backend: Some(backend),
        frontend: deployment(crate::build::frontend::name(clinic), "frontend"),
        gateway: deployment(crate::build::gateway::name(clinic), "gateway"),
        database: stateful_set(crate::build::database::name(clinic), "mariadb"),
    })
}

/// A MariaDB older than the one the data was last run with: `recorded` is `status.versions`'
/// database, the running image the other witness (for a status lost with a re-created object).
fn database_downgrade(clinic: &Clinic, running: &HeldImages, recorded: Option<&str>) -> Option<Gate> {
    let declared = clinic.declared_database_image();
    let declared_release = mariadb_release(&declared)?;
    let witnesses = [recorded.map(str::to_string), running.database.clone()];
    let (newest, release) = witnesses
        .into_iter()
        .flatten()
        .filter_map(|w| mariadb_release(&w).map(|r| (w, r)))
        .max_by_key(|(_, r)| *r)?;
    (declared_release < release).then(|| Gate::Blocked {
        reason: "DatabaseDowngrade",
        message: format!(
            "{declared} is older than {newest}, which the data was last run with: MariaDB upgrades its data files and an older server cannot read them back, so the database stays at what runs now. Set spec.database.version back to {}.{} or later; to go back to an older MariaDB, restore a backup taken before the upgrade into a new clinic",
            release.0, release.1
        ),
    })
}

/// Decides whether the images may move to what the spec asks for: a new OpenMRS backend (its
/// first start migrates the schema) or a new MariaDB (`mariadb-upgrade` rewrites the system
/// tables) waits for a completed pre-upgrade backup; a MariaDB downgrade is refused. While they
/// may not move, `clinic.held_images` keeps them at what runs now.
pub async fn upgrade_gate(
    ctx: &Context,
    clinic: &mut Clinic,
    installed: bool,
    backups: &std::result::Result<Vec<BackupRecord>, String>,
    recorded_database: Option<&str>,
    notices: &mut Vec<Notice>,
) -> Result<Gate> {
    let Some(running) = running_images(ctx, clinic) else { return Ok(Gate::Open) };
    // Skipping the backup never allows a downgrade: no backup makes newer data files readable.
    if let Some(refused) = database_downgrade(clinic, &running, recorded_database) {
        clinic.held_images = Some(running);
        return Ok(refused);
    }
    let changes: Vec<(String, String)> = [
        (running.backend.clone(), clinic.declared_backend_image()),
        (running.database.clone(), clinic.declared_database_image()),
    ]
    .into_iter()
    .filter_map(|(from, to)| from.filter(|f| *f != to).map(|f| (f, to)))
    .collect();
    if changes.is_empty() || clinic.spec.backup.upgrade_gate == UpgradeGate::Skip {
        return Ok(Gate::Open);
    }
    // One backup covers every image that moves in this pass; a backend-only upgrade keeps the
    // backup name it always had.
    let from = changes.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(", ");
    let target = changes.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(", ");
    clinic.held_images = Some(running);
    if !clinic.spec.backup.enabled || !installed {
        return Ok(Gate::Blocked {
            reason: "UpgradeNeedsBackup",
            message: format!(
                "upgrade from {from} to {target} waits for a backup, but {}; set spec.backup.upgradeGate: Skip to upgrade without one",
                if installed { "backups are disabled" } else { "Velero is not installed" }
            ),
        });
    }
    let backups = match backups {
        Ok(b) => b,
        Err(e) => {
            return Ok(Gate::Blocked {
                reason: "UpgradeBackupUnknown",
                message: format!("the upgrade waits: the pre-upgrade backup cannot be checked, {e}"),
            });
        }
    };
    let name = backup::pre_upgrade_backup_name(clinic, &target);
    let timeout = parse_duration("spec.backup.upgradeGateTimeout", &clinic.spec.backup.upgrade_gate_timeout)?;
    match backups.iter().find(|b| b.name == name) {
        None => {
            let api: Api<DynamicObject> = Api::namespaced_with(
                ctx.client.clone(),
                &clinic.spec.backup.velero_namespace,
                &backup_resource(),
            );
            ctx.metrics.record_write("create");
            let body = backup::pre_upgrade_backup(clinic, &target);
            match api
                .create(
                    &PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
                    &body,
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => return Err(Error::Apply { kind: "Backup".into(), name, source }),
            }
            notices.push(Notice::normal(
                "UpgradeBackupStarted",
                format!(
                    "upgrade from {from} to {target}: backup {name} started; nothing rolls until it completed"
                ),
            ));
            Ok(Gate::Waiting { backup: name })
        }
        Some(b) if b.succeeded() => {
            clinic.held_images = None;
            Ok(Gate::Open)
        }
        Some(b) if b.failed() => Ok(Gate::Blocked {
            reason: "UpgradeBackupFailed",
            message: format!(
                "pre-upgrade backup {} ended {}{}: {from} was not upgraded to {target}; delete the Backup to retry, or set spec.backup.upgradeGate: Skip",
                b.name,
                b.phase,
                b.failure_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        }),
        Some(b) => {
            let waited =
                b.created.map(|c| Timestamp::now().duration_since(c).unsigned_abs()).unwrap_or_default();
            if waited > timeout {
                Ok(Gate::Blocked {
                    reason: "UpgradeBackupTimedOut",
                    message: format!(
                        "pre-upgrade backup {} still {} after {}: {from} was not upgraded to {target}; delete the Backup to retry, or set spec.backup.upgradeGate: Skip",
                        b.name, b.phase, clinic.spec.backup.upgrade_gate_timeout
                    ),
                })
            } else {
                Ok(Gate::Waiting { backup: b.name.clone() })
            }
        }
    }
}

/// Adds the clean-up finalizer before anything is created outside the clinic's namespace.
pub async fn ensure_finalizer_if(ctx: &Context, cp: &ClinicPlatform, needed: bool) -> Result<()> {
    if !needed || cp.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = cp.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    patch_finalizers(ctx, cp, finalizers).await
}

async fn patch_finalizers(ctx: &Context, cp: &ClinicPlatform, finalizers: Vec<String>) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &cp.namespace().unwrap_or_default(),
        &kube::api::ApiResource::erase::<ClinicPlatform>(&()),
    );
    // resourceVersion makes the merge patch conditional: no other finalizer is lost.
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": cp.resource_version() } });
    ctx.metrics.record_write("finalizer");
    api.patch(&cp.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Apply { kind: "ClinicPlatform".into(), name: cp.name_any(), source })?;
    Ok(())
}

/// On deletion: remove what the clinic has outside its namespace (the Schedule, a dashboard
/// elsewhere); when a confirmed `Delete` asks for it (`spec.backup.deleteWithClinic`), set the
/// clinic's backups to expire after the platform's delay, so that Velero's own garbage
/// collection deletes them then (and a mistake can be undone until then); release the
/// finalizer. Same-namespace children go with the garbage collector. Returns what is worth an
/// event.
pub async fn cleanup(ctx: &Context, cp: &ClinicPlatform, clinic: &Clinic) -> Result<Vec<Notice>> {
    // An unanswered discovery keeps the finalizer: the reconcile fails and is retried.
    let velero = ctx.velero_installed_or_error().await?;
    let recorded = cp.status.as_ref().and_then(|s| s.outside_objects.as_deref());
    super::outside::remove_all(ctx, clinic, recorded, velero).await?;
    let mut notices = Vec::new();
    if velero && clinic.backups_expire_on_deletion() {
        let delay = ctx.policy.backup_deletion_delay();
        let due = Timestamp::from_second(Timestamp::now().as_second().saturating_add(delay.as_secs() as i64))
            .unwrap_or(Timestamp::MAX);
        let expiring = expire_backups(ctx, clinic, due).await?;
        if expiring > 0 {
            info!(count = expiring, %due, "the clinic's backups expire");
            notices.push(Notice::warning(
                "BackupsExpiring",
                format!(
                    "deleted under a confirmed deletionPolicy Delete with spec.backup.deleteWithClinic: {expiring} Velero backups of the clinic expire by {due} and Velero deletes them then; to keep one, set a later status.expiration on it before that time (docs/backup.md#deletion)"
                ),
            ));
        }
    } else if !velero {
        warn!("Velero not installed at deletion: no Schedule to remove");
    }
    release_finalizer(ctx, cp).await?;
    Ok(notices)
}

/// Lets the ClinicPlatform go: the clean-up finalizer is removed, any other kept.
pub async fn release_finalizer(ctx: &Context, cp: &ClinicPlatform) -> Result<()> {
    let remaining: Vec<String> = cp.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    patch_finalizers(ctx, cp, remaining).await
}

/// Brings the expiration of each of the clinic's backups forward to `due` (never later than it
/// was). Velero's Backups have no status subresource (since Velero 1.9), so a patch of the
/// object sets it; should a later Velero add one, the status subresource is patched instead.
async fn expire_backups(ctx: &Context, clinic: &Clinic, due: Timestamp) -> Result<usize> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &clinic.spec.backup.velero_namespace, &backup_resource());
    let list = api
        .list(&ListParams::default().labels(&backup::backups_selector(clinic)))
        .await
        .map_err(|source| Error::Read { what: "Velero backups".into(), source })?;
    let expiration =
        |o: &DynamicObject| o.data["status"]["expiration"].as_str().and_then(|t| t.parse::<Timestamp>().ok());
    let patch = json!({ "status": { "expiration": due.to_string() } });
    let mut expiring = 0;
    for b in &list.items {
        expiring += 1;
        if expiration(b).is_some_and(|t| t <= due) {
            continue;
        }
        let name = b.name_any();
        let failed = |source| Error::Apply { kind: "Backup".into(), name: name.clone(), source };
        ctx.metrics.record_write("merge");
        let patched =
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(failed)?;
        if expiration(&patched) != Some(due) {
            ctx.metrics.record_write("merge");
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(failed)?;
        }
    }
    Ok(expiring)
}
