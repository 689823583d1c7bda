//! Gather: what the gate needs to know, read before anything is written — whether Velero is
//! served, the clinic's Backups (reused for a minute while nothing waits on them) and the
//! images the workloads run now.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

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
    } else if let Some(recent) = ctx.memory.recent_backups(&key, cp.metadata.resource_version.as_ref()) {
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
    let first_image = |spec: Option<k8s_openapi::api::core::v1::PodSpec>, name: &str| {
        spec.and_then(|p| p.containers.into_iter().find(|c| c.name == name)).and_then(|c| c.image)
    };
    let stateful_set = |name: String, container: &str| {
        ctx.caches
            .get_typed::<StatefulSet>(ns, &name)
            .and_then(|s| first_image(s.spec.and_then(|s| s.template.spec), container))
    };
    let backend = stateful_set(crate::desired::backend::name(clinic), "openmrs")?;
    let deployment = |name: String, container: &str| {
        ctx.caches
            .get_typed::<Deployment>(ns, &name)
            .and_then(|d| first_image(d.spec.and_then(|s| s.template.spec), container))
    };
    Some(HeldImages {
        backend: Some(backend),
        frontend: deployment(crate::desired::frontend::name(clinic), "frontend"),
        gateway: deployment(crate::desired::gateway::name(clinic), "gateway"),
        database: stateful_set(crate::desired::database::name(clinic), "mariadb"),
    })
}
