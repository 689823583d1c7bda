//! The upgrade gate: a new OpenMRS backend (its first start migrates the schema) or a new
//! MariaDB (`mariadb-upgrade` rewrites the system tables) waits for a completed pre-upgrade
//! backup, and a MariaDB downgrade is refused. It runs before building, because it decides
//! which images the workloads get: while they may not move, `clinic.held_images` keeps them at
//! what runs now.

use jiff::Timestamp;
use kube::api::{Api, DynamicObject, PostParams};

use super::backups::BackupRecord;
use super::context::Context;
use super::error::{Error, Result};
use super::events::Notice;
use super::gather::Gathered;
use crate::api::{ClinicPlatform, FIELD_MANAGER, UpgradeGate};
use crate::desired::backup::{self, backup_resource};
use crate::model::{Clinic, HeldImages, mariadb_release, parse_duration};

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

/// The gate's verdict for this pass (always open for a paused clinic, which changes nothing).
/// Backups change slowly: passes triggered by children's events reuse the list for up to a
/// minute, unless an upgrade waits on one.
pub async fn decide(
    ctx: &Context,
    cp: &ClinicPlatform,
    clinic: &mut Clinic,
    gathered: &Gathered,
    notices: &mut Vec<Notice>,
) -> Result<Gate> {
    let gate =
        if clinic.spec.paused { Ok(Gate::Open) } else { upgrade_gate(ctx, clinic, gathered, notices).await };
    let key = (clinic.namespace.clone(), clinic.name.clone());
    match (&gathered.backups, &gate) {
        (Ok(list), Ok(Gate::Open)) => {
            ctx.memory.remember_backups(&key, Some(&super::memory::user_version(&cp.metadata)), list)
        }
        _ => ctx.memory.forget_backups(&key),
    }
    gate
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

/// The images that move in this pass, from what runs to what the spec asks for.
struct Upgrade {
    from: String,
    target: String,
}

/// Decides whether the images may move to what the spec asks for (see the module's doc).
async fn upgrade_gate(
    ctx: &Context,
    clinic: &mut Clinic,
    gathered: &Gathered,
    notices: &mut Vec<Notice>,
) -> Result<Gate> {
    let Some(running) = gathered.running.clone() else { return Ok(Gate::Open) };
    // Skipping the backup never allows a downgrade: no backup makes newer data files readable.
    if let Some(refused) = database_downgrade(clinic, &running, gathered.recorded_database.as_deref()) {
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
    let upgrade = Upgrade {
        from: changes.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(", "),
        target: changes.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(", "),
    };
    let Upgrade { from, target } = &upgrade;
    clinic.held_images = Some(running);
    if !clinic.spec.backup.enabled || !gathered.velero {
        return Ok(Gate::Blocked {
            reason: "UpgradeNeedsBackup",
            message: format!(
                "upgrade from {from} to {target} waits for a backup, but {}; set spec.backup.upgradeGate: Skip to upgrade without one",
                if gathered.velero { "backups are disabled" } else { "Velero is not installed" }
            ),
        });
    }
    let backups = match &gathered.backups {
        Ok(b) => b,
        Err(e) => {
            return Ok(Gate::Blocked {
                reason: "UpgradeBackupUnknown",
                message: format!("the upgrade waits: the pre-upgrade backup cannot be checked: {e}"),
            });
        }
    };
    let name = backup::pre_upgrade_backup_name(clinic, target);
    match backups.iter().find(|b| b.name == name) {
        None => start_backup(ctx, clinic, &upgrade, name, notices).await,
        Some(b) if b.succeeded() => {
            clinic.held_images = None;
            Ok(Gate::Open)
        }
        Some(b) => waiting_on(clinic, &upgrade, b),
    }
}

/// Creates the pre-upgrade Backup (once: a 409 means it exists already).
async fn start_backup(
    ctx: &Context,
    clinic: &Clinic,
    Upgrade { from, target }: &Upgrade,
    name: String,
    notices: &mut Vec<Notice>,
) -> Result<Gate> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &clinic.spec.backup.velero_namespace, &backup_resource());
    ctx.metrics.record_write("create");
    let body = backup::pre_upgrade_backup(clinic, target);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match api.create(&params, &body).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(source) => return Err(Error::Create { kind: "Backup".into(), name, source }),
    }
    notices.push(Notice::normal(
        "UpgradeBackupStarted",
        format!("upgrade from {from} to {target}: backup {name} started; nothing rolls until it completed"),
    ));
    Ok(Gate::Waiting { backup: name })
}

/// The verdict while the pre-upgrade backup has not completed: failed, too slow, or running.
fn waiting_on(clinic: &Clinic, Upgrade { from, target }: &Upgrade, b: &BackupRecord) -> Result<Gate> {
    if b.failed() {
        return Ok(Gate::Blocked {
            reason: "UpgradeBackupFailed",
            message: format!(
                "pre-upgrade backup {} ended {}{}: {from} was not upgraded to {target}; delete the Backup to retry, or set spec.backup.upgradeGate: Skip",
                b.name,
                b.phase,
                b.failure_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        });
    }
    let timeout = parse_duration("spec.backup.upgradeGateTimeout", &clinic.spec.backup.upgrade_gate_timeout)?;
    let waited = b.created.map(|c| Timestamp::now().duration_since(c).unsigned_abs()).unwrap_or_default();
    if waited > timeout {
        return Ok(Gate::Blocked {
            reason: "UpgradeBackupTimedOut",
            message: format!(
                "pre-upgrade backup {} still {} after {}: {from} was not upgraded to {target}; delete the Backup to retry, or set spec.backup.upgradeGate: Skip",
                b.name, b.phase, clinic.spec.backup.upgrade_gate_timeout
            ),
        });
    }
    Ok(Gate::Waiting { backup: b.name.clone() })
}
