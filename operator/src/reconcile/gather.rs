//! Gather: what the gate needs to know, read before anything is written — whether Velero is
//! served, the clinic's Backups (reused for a minute while nothing waits on them) and the
//! images the workloads run now.

use kube::api::{Api, DynamicObject};

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
    /// A replicated database as the mariadb-operator reports it (`None` without
    /// `spec.database.highAvailability`).
    pub database_cluster: Option<ClusterState>,
}

/// What a `MariaDB` says of itself: the image it declares and its `Ready` condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub exists: bool,
    pub image: Option<String>,
    /// Servers declared.
    pub replicas: i32,
    /// Servers the mariadb-operator counts (`status.replicas`).
    pub reported: i32,
    /// Its `Ready` condition is True.
    pub ready: bool,
    /// The mariadb-operator has seen its newest spec (the condition's `observedGeneration`,
    /// where it says one).
    pub current: bool,
    /// Why it is not ready, in the mariadb-operator's words, or why it could not be read.
    pub message: Option<String>,
}

impl ClusterState {
    /// Reads what the mariadb-operator reports in `object` (`None`: it does not exist).
    pub fn of(object: Option<&DynamicObject>) -> Self {
        let Some(object) = object else { return Self::default() };
        let spec = &object.data["spec"];
        let ready = object.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or_default();
        let generation = object.metadata.generation;
        Self {
            exists: true,
            image: spec["image"].as_str().map(String::from),
            replicas: spec["replicas"].as_i64().and_then(|r| i32::try_from(r).ok()).unwrap_or(1),
            reported: object.data["status"]["replicas"]
                .as_i64()
                .and_then(|r| i32::try_from(r).ok())
                .unwrap_or(0),
            ready: ready["status"] == "True",
            // The mariadb-operator's conditions carry no `observedGeneration` (its code sets none):
            // then its `Ready` is taken as about the newest spec.
            current: match (ready["observedGeneration"].as_i64(), generation) {
                (Some(observed), Some(generation)) => observed >= generation,
                _ => true,
            },
            message: (ready["status"] != "True")
                .then(|| ready["message"].as_str().map(String::from))
                .flatten()
                .filter(|m| !m.is_empty()),
        }
    }
}

/// Reads the clinic's `MariaDB`, when it asks for a replicated database.
async fn database_cluster(ctx: &Context, clinic: &Clinic) -> Option<ClusterState> {
    clinic.database_cluster.as_ref()?;
    let resource = crate::desired::database_cluster::resource();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &clinic.namespace, &resource);
    let name = crate::desired::database_cluster::name(clinic);
    Some(match api.get_opt(&name).await {
        Ok(found) => ClusterState::of(found.as_ref()),
        Err(e) => ClusterState {
            message: Some(format!("MariaDB {name} could not be read: {}", super::error::Cause(&e))),
            ..Default::default()
        },
    })
}

pub async fn gather(ctx: &Context, cp: &ClinicPlatform, clinic: &Clinic) -> Gathered {
    let velero = ctx.discovery.velero().await;
    let key: ClinicKey = (clinic.namespace.clone(), clinic.name.clone());
    let backups = if !(clinic.spec.backup.enabled && velero) {
        Ok(Vec::new())
    } else if let Some(cached) =
        ctx.caches.backups_of(&clinic.spec.backup.velero_namespace, &clinic.namespace, &clinic.name)
    {
        Ok(cached)
    } else if let Some(recent) =
        ctx.memory.recent_backups(&key, Some(&super::memory::user_version(&cp.metadata)))
    {
        Ok(recent)
    } else {
        backups::list_backups(ctx, clinic).await.map_err(Problem::from)
    };
    let database_cluster = database_cluster(ctx, clinic).await;
    Gathered {
        velero,
        backups,
        running: running_images(ctx, clinic, database_cluster.as_ref()),
        recorded_database: cp.status.as_ref().and_then(|s| s.versions.as_ref()?.database.clone()),
        database_cluster,
    }
}

/// The images the workloads run now (their pod templates, a replicated database's `MariaDB`),
/// if the backend exists.
pub fn running_images(ctx: &Context, clinic: &Clinic, cluster: Option<&ClusterState>) -> Option<HeldImages> {
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
        database: match cluster {
            Some(cluster) => cluster.image.clone(),
            None => stateful_set(crate::desired::database::name(clinic), "mariadb"),
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mariadb(generation: i64, status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "k8s.mariadb.com/v1alpha1",
            "kind": "MariaDB",
            "metadata": { "name": "lyon-mariadb", "namespace": "clinic-lyon", "generation": generation },
            "spec": { "image": "docker.io/library/mariadb:10.11", "replicas": 3 },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_mariadb_is_ready_when_its_operator_says_so_for_its_newest_spec() {
        let ready = mariadb(
            2,
            json!({ "replicas": 3, "conditions": [{ "type": "Ready", "status": "True", "observedGeneration": 2, "message": "Running" }] }),
        );
        let state = ClusterState::of(Some(&ready));
        assert!(state.exists && state.ready && state.current);
        assert_eq!((state.replicas, state.reported), (3, 3));
        assert_eq!(state.image.as_deref(), Some("docker.io/library/mariadb:10.11"));
        assert_eq!(state.message, None);

        let switching = mariadb(
            3,
            json!({ "replicas": 3, "conditions": [{ "type": "Ready", "status": "False", "observedGeneration": 2, "message": "Switching primary" }] }),
        );
        let state = ClusterState::of(Some(&switching));
        assert!(!state.ready && !state.current);
        assert_eq!(state.message.as_deref(), Some("Switching primary"));

        // As the mariadb-operator writes it: no observedGeneration.
        let unversioned = mariadb(
            4,
            json!({ "replicas": 3, "conditions": [{ "type": "Ready", "status": "True", "message": "Running" }] }),
        );
        let state = ClusterState::of(Some(&unversioned));
        assert!(state.ready && state.current);

        let new = mariadb(1, json!(null));
        let state = ClusterState::of(Some(&new));
        assert!(state.exists && !state.ready);
        assert!(!ClusterState::of(None).exists);
    }
}
