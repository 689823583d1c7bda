//! Gather: what the gate needs to know, read before anything is written — whether Velero is
//! served, the clinic's Backups (reused for a minute while nothing waits on them) and the
//! images the workloads run now.

use super::backups::{self, BackupRecord};
use super::context::Context;
use super::error::Problem;
use super::memory::ClinicKey;
use crate::api::ClinicPlatform;
use crate::model::{Clinic, HeldImages};

/// What the gate decides from.
#[derive(Debug)]
pub struct Gathered {
    /// Velero's API is served.
    pub velero: bool,
    /// The clinic's Backups, newest first (none when backups are off or Velero is absent).
    pub backups: Result<Vec<BackupRecord>, Problem>,
    /// The images the workloads run now; `None` before the backend exists.
    pub running: Option<HeldImages>,
    /// The MariaDB version the data was last run with (`status.versions.database`).
    pub recorded_database: Option<String>,
}

pub async fn gather(ctx: &Context, cp: &ClinicPlatform, clinic: &Clinic) -> Gathered {
    let velero = ctx.discovery.velero().await;
    let key: ClinicKey = (clinic.namespace.clone(), clinic.name.clone());
    let backups = if !(clinic.spec.backup.enabled && velero) {
        Ok(Vec::new())
    } else if let Some(recent) =
        ctx.memory.recent_backups(&key, Some(&super::memory::user_version(&cp.metadata)))
    {
        Ok(recent)
    } else {
        backups::list_backups(ctx, clinic).await.map_err(Problem::from)
    };
    Gathered {
        velero,
        backups,
        running: running_images(ctx, clinic),
        recorded_database: cp.status.as_ref().and_then(|s| s.versions.as_ref()?.database.clone()),
    }
}

/// The images the workloads run now (their pod templates), if the backend exists.
pub fn running_images(ctx: &Context, clinic: &Clinic) -> Option<HeldImages> {
    let ns = &clinic.namespace;
    let image = |kind: &str, name: String, container: &str| {
        ctx.caches.workload(kind, ns, &name).and_then(|w| w.image(container).map(String::from))
    };
    let stateful_set = |name: String, container: &str| image("StatefulSet", name, container);
    let deployment = |name: String, container: &str| image("Deployment", name, container);
    let backend = stateful_set(crate::desired::backend::name(clinic), "openmrs")?;
    Some(HeldImages {
        backend: Some(backend),
        frontend: deployment(crate::desired::frontend::name(clinic), "frontend"),
        gateway: deployment(crate::desired::gateway::name(clinic), "gateway"),
        database: stateful_set(crate::desired::database::name(clinic), "mariadb"),
    })
}
