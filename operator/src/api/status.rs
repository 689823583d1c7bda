use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a ClinicPlatform, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClinicPlatformStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Conditions: Ready, Progressing, Degraded, DatabaseReady, OpenMRSReady, SecurityEnforced,
    /// BackupReady, Compliant, MonitoringReady; RouteAccepted on a clinic published on a Gateway
    /// (`spec.route`); and on a deleted clinic whose clean-up fails, CleanupBlocked; each with a bounded reason and a message that says what is wrong and what
    /// to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Where users reach the platform: the Ingress URL, or the in-cluster gateway URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Versions running now: each once every pod of its workload runs it (during a rollout or
    /// while an upgrade waits, the previous one). The database's is the floor below which
    /// `spec.database.version` is refused (MariaDB cannot be downgraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<ComponentVersions>,

    /// The Secret whose passwords the database was initialised with, recorded while the MariaDB
    /// StatefulSet exists: a `spec.database.credentialsSecretRef` that points elsewhere is
    /// refused (`CredentialsSwitch`) until annotation
    /// `clinic.audioprothese.fr/database-credentials-moved-to` names the new Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_credentials_secret: Option<String>,

    /// The Secret holding the keys the data is encrypted with (`spec.database.encryptAtRest`),
    /// recorded once a MariaDB pod of the encrypting configuration has run: from then on, a
    /// missing Secret is never generated again (`EncryptionKeyLost`), since new keys would not
    /// open the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_encryption_secret: Option<String>,

    /// MariaDB's TLS certificate (`spec.database.tls`), as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_certificate: Option<CertificateStatus>,

    /// The backend's TLS certificate (`spec.openmrs.backend.tls`), as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_certificate: Option<CertificateStatus>,

    /// Completion time of the newest successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,

    /// Compliance evidence: whether each security control holds now (see docs/compliance.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,

    /// What deleting the ClinicPlatform would do now, from its spec and the confirmation
    /// annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_deletion: Option<DeletionOutcome>,

    /// Objects the operator wrote outside the clinic's namespace (Velero's Schedule, a dashboard
    /// in Grafana's namespace). No owner reference can reach them, so this record is how one no
    /// longer wanted (backups disabled, a namespace changed) is found and removed, and how the
    /// finalizer removes them all. Absent until the first pass of an operator that keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_objects: Option<Vec<OutsideObject>>,
}

/// What a deletion of the ClinicPlatform does, as things stand.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionOutcome {
    /// `Retain` or `Delete`: whether the volume claims and generated credentials go with the
    /// clinic. `Delete` only when `spec.deletionPolicy` is `Delete` and the annotation
    /// `clinic.audioprothese.fr/confirm-deletion` holds this object's `metadata.uid`.
    pub data: super::DeletionPolicy,
    /// Whether the clinic's Velero backups are set to expire (after the platform's delay) when it
    /// is deleted; otherwise they live out their own retention.
    pub backups_expire: bool,
}

/// An object outside the clinic's namespace, by kind, namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutsideObject {
    /// `Schedule` (velero.io/v1) or `ConfigMap`.
    pub kind: String,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

/// Whether each control holds. `Compliant` is True when all do.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Compliance {
    /// The namespace enforces Pod Security `restricted`.
    pub pod_security_restricted: bool,
    /// Default-deny NetworkPolicies and the platform's allow rules are in place.
    pub default_deny_network: bool,
    /// Users reach the platform over TLS: at the Ingress, or at the HTTPS listener of a Gateway
    /// that accepts the clinic's route.
    pub tls_at_edge: bool,
    /// The newest successful backup is within the RPO.
    pub backups_within_rpo: bool,
    /// Pods are pinned (`spec.residency`) to regions or zones the platform's policy approves.
    pub data_residency: bool,
    /// Data volumes are on StorageClasses that encrypt at rest: attested by the platform's policy
    /// or recognised from their parameters (never on the clinic's own word).
    pub encryption_at_rest: bool,
    /// MariaDB itself encrypts the tables, logs, temporary files and the backup dump
    /// (`spec.database.encryptAtRest`), and its pod runs with that configuration.
    #[serde(default)]
    pub database_encrypted: bool,
    /// MariaDB accepts TLS connections only (`spec.database.tls`), with a certificate its
    /// clients verify, and its pod runs with that configuration.
    #[serde(default)]
    pub database_tls: bool,
    /// Traffic between the clinic's pods is mutually authenticated and encrypted by the
    /// platform's mesh (`spec.security.mtls`, which the platform's policy attests runs): Istio's
    /// API is served, a STRICT PeerAuthentication and an AuthorizationPolicy per component are
    /// in place, and every workload is ready with pods that carry the mesh label.
    #[serde(default)]
    pub mutual_tls: bool,
    /// The gateway reaches the backend over TLS, verifying its certificate: by the backend's
    /// TLS listener (`spec.openmrs.backend.tls`), its pods running with it, or inside the mesh
    /// (`mutualTls`).
    #[serde(default)]
    pub backend_tls: bool,
}

/// A certificate of a server inside the clinic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// End of its validity (RFC 3339). The operator's CA renews it 30 days before; cert-manager
    /// as its `renewBefore` says.
    pub not_after: String,
    /// Who signs it: the clinic's CA or a cert-manager issuer.
    pub issuer: String,
    /// `resourceVersion` of the Secret it was read from.
    pub secret_version: String,
}

/// The controls behind `Compliant` are the fields of the status' `Compliance`.
impl Compliance {
    /// (name in status, holds, what to do when it does not).
    pub fn list(&self) -> [(&'static str, bool, &'static str); 10] {
        [
            (
                "podSecurityRestricted",
                self.pod_security_restricted,
                "the namespace does not enforce Pod Security restricted",
            ),
            ("defaultDenyNetwork", self.default_deny_network, "the NetworkPolicies are not all in place"),
            (
                "tlsAtEdge",
                self.tls_at_edge,
                "no Ingress with TLS (spec.ingress) nor a route accepted on a Gateway's HTTPS listener (spec.route)",
            ),
            (
                "backupsWithinRpo",
                self.backups_within_rpo,
                "no successful backup within the RPO (see BackupReady)",
            ),
            (
                "dataResidency",
                self.data_residency,
                "no spec.residency pins the pods to regions or zones the platform's policy approves",
            ),
            (
                "encryptionAtRest",
                self.encryption_at_rest,
                "the data StorageClasses are not known to encrypt (the platform's policy lists encrypting StorageClasses)",
            ),
            (
                "databaseEncrypted",
                self.database_encrypted,
                "MariaDB does not run with its own encryption at rest (spec.database.encryptAtRest)",
            ),
            (
                "databaseTls",
                self.database_tls,
                "MariaDB does not run with TLS required and a certificate (spec.database.tls)",
            ),
            (
                "backendTls",
                self.backend_tls,
                "the gateway reaches the backend in plaintext (spec.openmrs.backend.tls, or spec.security.mtls)",
            ),
            (
                "mutualTls",
                self.mutual_tls,
                "traffic between the pods is not mutually authenticated by the platform's mesh (spec.security.mtls; see SecurityEnforced)",
            ),
        ]
    }

    pub fn all_hold(&self) -> bool {
        self.list().iter().all(|(_, holds, _)| *holds)
    }
}

/// Versions of the platform's components.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentVersions {
    /// OpenMRS reference application version (or the backend image when overridden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openmrs: Option<String>,
    /// MariaDB version (or image when overridden).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// A metav1-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word saying why.
    pub reason: String,
    /// A sentence for humans.
    #[serde(default)]
    pub message: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
