use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration, TopologySpreadConstraint};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::ClinicPlatformStatus;

/// A complete OpenMRS 3 platform for one clinic: MariaDB, the OpenMRS backend, frontend and
/// gateway, their Services, Ingress, Secrets, NetworkPolicies, autoscalers and disruption budgets.
/// A minimal spec (an empty `spec: {}`) gives a working, secure platform.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "clinic.audioprothese.fr",
    version = "v1alpha1",
    kind = "ClinicPlatform",
    plural = "clinicplatforms",
    shortname = "clinic",
    category = "clinic",
    doc = "A ClinicPlatform declares one clinic's OpenMRS 3 platform; the operator builds and keeps it.",
    namespaced,
    cel,
    status = "ClinicPlatformStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.versions.openmrs"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Last backup","type":"date","jsonPath":".status.lastBackupTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Compliant","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Compliant\")].status"}"#,
    printcolumn = r#"{"name":"Backup","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"BackupReady\")].reason"}"#,
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name: at most 40 characters, so that child names (name + suffix) stay valid DNS labels")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.ingress) || !has(self.route)").message("spec.route: set either ingress (an Ingress) or route (an HTTPRoute on a platform Gateway), not both"))]
pub struct ClinicPlatformSpec {
    /// OpenMRS application settings: version, locale, and the backend, frontend and gateway
    /// components.
    #[serde(default)]
    pub openmrs: OpenmrsSpec,

    /// The MariaDB database that holds the clinic's records.
    #[serde(default)]
    pub database: DatabaseSpec,

    /// Public exposure through an Ingress with TLS. Without it (or `route`) the platform is
    /// reachable only inside the cluster (Service `<name>-gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// Public exposure through a Gateway the platform team runs (Gateway API): the operator
    /// declares an `HTTPRoute` for `host` on a Gateway the platform's policy lists, and never
    /// creates or changes a Gateway. TLS terminates at the Gateway's listener. Exclusive with
    /// `ingress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,

    /// Horizontal autoscaling of the stateless components (frontend and gateway).
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,

    /// Velero backups of the clinic: the schedule, retention, recovery point objective, and the
    /// backup taken before every OpenMRS upgrade.
    #[serde(default)]
    pub backup: BackupSpec,

    /// Security settings beyond the secure defaults.
    #[serde(default)]
    pub security: SecuritySpec,

    /// Monitoring of the clinic: exporter sidecars, and when the Prometheus Operator is
    /// installed a ServiceMonitor and alerting rules; a Grafana dashboard.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// Traces of the backend (OpenTelemetry), exported to the collector the platform's policy
    /// names (`policy.tracing`): a tenant switches them on, the platform decides where they go.
    #[serde(default)]
    pub tracing: TracingSpec,

    /// Data residency: every pod of the platform is required to run on nodes of these regions or
    /// zones, so patient data stays where the hosting certification (HDS) allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<ResidencySpec>,

    /// Where images come from: a private registry mirror, pull secrets and pull policy.
    #[serde(default)]
    pub images: ImageSettings,

    /// What happens to the data when the ClinicPlatform is deleted. `Retain` (default) keeps the
    /// PersistentVolumeClaims of MariaDB and the backend and the generated credentials that open
    /// them (a ClinicPlatform of the same name adopts them again); `Delete` removes them all, but
    /// only once confirmed: the annotation `clinic.audioprothese.fr/confirm-deletion` must hold
    /// this object's `metadata.uid`. Until then the clinic is kept as under `Retain`
    /// (`status.onDeletion` says which applies now). Velero backups are never deleted with the
    /// clinic unless `spec.backup.deleteWithClinic` asks for it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// When true the operator stops changing the platform's children (reads and status only),
    /// e.g. during manual maintenance.
    #[serde(default)]
    pub paused: bool,
}

/// OpenMRS application settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenmrsSpec {
    /// Version of the OpenMRS 3 reference application: the tag of the backend, frontend and
    /// gateway images (the backend's with `-no-demo` unless `demoData`). The default `3.7.x` is
    /// the tag upstream's build workflows push for the 3.7 line; it floats, so production pins
    /// a digest with each component's `image`. A component's `image` overrides it.
    #[serde(default = "default_openmrs_version")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$')").message("spec.openmrs.version: must be an image tag (letters, digits, '_', '.', '-'; at most 128 characters), e.g. 3.7.x"))]
    #[schemars(length(max = 128))]
    pub version: String,

    /// Default locale of the user interface (`SPA_DEFAULT_LOCALE`), e.g. `fr`, `en_GB`.
    #[serde(default = "default_locale")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*$')").message("spec.openmrs.locale: must be a locale such as fr, fr_FR or en_GB"))]
    #[schemars(length(max = 35))]
    pub locale: String,

    /// URLs of extra frontend configuration files (`SPA_CONFIG_URLS`): `https://` URLs, or
    /// paths on the clinic's own site (starting with `/`). They are written into the page's
    /// inline script, so quotes, angle brackets, spaces, backslashes, parentheses, braces and
    /// `$` are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(u, u.matches('^(https://[A-Za-z0-9.-]+(:[0-9]{1,5})?)?/[A-Za-z0-9._~/%+=&?#@!*,;:-]*$'))").message("spec.openmrs.spaConfigUrls: each must be an https:// URL or a path starting with /, without quotes, angle brackets, spaces, backslashes, parentheses, braces or '$' (the URLs land in the page's script)"))]
    #[schemars(length(max = 16), inner(length(max = 2048)))]
    pub spa_config_urls: Vec<String>,

    /// Load the reference application's demo patients. Never for a real clinic: the default
    /// uses the `-no-demo` backend image and `OMRS_ADD_DEMO_DATA=false`.
    #[serde(default)]
    pub demo_data: bool,

    /// The OpenMRS backend (Tomcat + the OpenMRS web application).
    #[serde(default)]
    pub backend: BackendSpec,

    /// The frontend (the OpenMRS 3 single-page application served by nginx).
    #[serde(default)]
    pub frontend: WebComponentSpec,

    /// The gateway (nginx routing `/openmrs/spa` to the frontend and `/openmrs` to the backend).
    #[serde(default)]
    pub gateway: WebComponentSpec,
}

impl Default for OpenmrsSpec {
    fn default() -> Self {
        Self {
            version: default_openmrs_version(),
            locale: default_locale(),
            spa_config_urls: Vec::new(),
            demo_data: false,
            backend: BackendSpec::default(),
            frontend: WebComponentSpec::default(),
            gateway: WebComponentSpec::default(),
        }
    }
}

/// The OpenMRS backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.replicas == 1 || has(self.clustering)").message("spec.openmrs.backend.replicas: more than 1 needs spec.openmrs.backend.clustering (Elasticsearch search and shared attachment storage); without it the backend runs exactly 1 replica"))]
pub struct BackendSpec {
    /// Number of backend pods. The backend keeps a per-pod search index and data directory, so
    /// more than 1 needs `clustering`.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 5").message("spec.openmrs.backend.replicas: must be between 1 and 5"))]
    pub replicas: i32,

    /// Full image reference (`registry/repo:tag` or `registry/repo@sha256:...`), overriding the
    /// default `openmrs/openmrs-reference-application-3-backend:<version>-no-demo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// CPU and memory. Default: requests 1 CPU / 2Gi, limits 4 CPU / 4Gi (upstream defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// JVM memory options (`OMRS_JAVA_MEMORY_OPTS`), separated by spaces. Only memory flags:
    /// `-Xms`, `-Xmx`, `-Xmn`, `-Xss`, `-XX:{Max,Initial,Min}RAMPercentage=`,
    /// `-XX:{MaxMetaspaceSize,MetaspaceSize,ReservedCodeCacheSize,MaxDirectMemorySize}=` and
    /// `-XX:±{ExitOnOutOfMemoryError,CrashOnOutOfMemoryError,UseContainerSupport}`; any other
    /// JVM flag (some run commands, e.g. `-XX:OnOutOfMemoryError`) is refused. Default
    /// `-XX:MaxRAMPercentage=75.0 -XX:+ExitOnOutOfMemoryError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^(-Xm[snx][0-9]+[kKmMgG]?|-Xss[0-9]+[kKmM]?|-XX:(Max|Initial|Min)RAMPercentage=[0-9]{1,3}(\\\\.[0-9]+)?|-XX:(MaxMetaspaceSize|MetaspaceSize|ReservedCodeCacheSize|MaxDirectMemorySize)=[0-9]+[kKmMgG]?|-XX:[+-](ExitOnOutOfMemoryError|CrashOnOutOfMemoryError|UseContainerSupport))( +(-Xm[snx][0-9]+[kKmMgG]?|-Xss[0-9]+[kKmM]?|-XX:(Max|Initial|Min)RAMPercentage=[0-9]{1,3}(\\\\.[0-9]+)?|-XX:(MaxMetaspaceSize|MetaspaceSize|ReservedCodeCacheSize|MaxDirectMemorySize)=[0-9]+[kKmMgG]?|-XX:[+-](ExitOnOutOfMemoryError|CrashOnOutOfMemoryError|UseContainerSupport)))*$')").message("spec.openmrs.backend.javaMemoryOpts: only memory flags separated by spaces (-Xms, -Xmx, -Xmn, -Xss, -XX:MaxRAMPercentage=, -XX:InitialRAMPercentage=, -XX:MinRAMPercentage=, -XX:MaxMetaspaceSize=, -XX:MetaspaceSize=, -XX:ReservedCodeCacheSize=, -XX:MaxDirectMemorySize=, -XX:+ExitOnOutOfMemoryError, -XX:+CrashOnOutOfMemoryError, -XX:+UseContainerSupport), e.g. -Xms1g -Xmx3g"))]
    #[schemars(length(max = 512))]
    pub java_memory_opts: Option<String>,

    /// The data volume mounted at `/openmrs/data` (attachments, search index, modules).
    #[serde(default = "default_backend_storage")]
    pub storage: StorageSpec,

    /// What more than one backend replica needs. Experimental upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clustering: Option<ClusteringSpec>,

    /// Node placement of the backend pods.
    #[serde(default)]
    pub placement: Placement,

    /// TLS between the gateway and the backend, for a platform without a mesh: a proxy beside
    /// OpenMRS in its pod serves TLS 1.3 on port 8443 with a certificate the gateway verifies,
    /// and the NetworkPolicies admit that port alone. Turning it on or off restarts the backend
    /// once.
    #[serde(default)]
    pub tls: BackendTlsSpec,
}

/// Where the backend's certificate comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendTlsSpec {
    /// Serve the gateway over TLS only (default false). A renewed certificate is picked up
    /// without a restart: the proxy and the gateway reload nginx within 30 seconds of the
    /// kubelet updating the mounted Secret.
    #[serde(default)]
    pub enabled: bool,

    /// A cert-manager issuer for the backend's certificate (`Certificate` `<name>-backend-tls`);
    /// it must be a CA issuer, one that fills `ca.crt`. Without it the clinic's CA (Secret
    /// `<name>-db-ca`, the one that signs MariaDB's) signs it and the operator renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

impl Default for BackendSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            image: None,
            resources: None,
            java_memory_opts: None,
            storage: default_backend_storage(),
            clustering: None,
            placement: Placement::default(),
            tls: BackendTlsSpec::default(),
        }
    }
}

/// Settings that make several backend replicas safe.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusteringSpec {
    /// Elasticsearch endpoints for the shared search index (`OMRS_SEARCH_ES_URIS`), separated
    /// by commas, e.g. `http://elasticsearch.search:9200`. A Service of the cluster (`name`,
    /// `name.namespace`, `name.namespace.svc[.cluster.local]`) in the clinic's namespace or in
    /// one the platform's policy lists (`searchNamespaces`) is let through the backend's
    /// NetworkPolicy on the URI's port; any other host needs `spec.security.extraEgress`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("spec.openmrs.backend.clustering.elasticsearchUris: must be http:// or https:// URLs"))]
    #[schemars(length(min = 1, max = 1024))]
    pub elasticsearch_uris: String,

    /// Name of an existing ReadWriteMany PersistentVolumeClaim in the clinic namespace that holds
    /// attachments (complex observations) shared by all replicas.
    #[schemars(length(min = 1, max = 253))]
    pub attachments_claim_name: String,
}

/// A stateless web component (frontend or gateway).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebComponentSpec {
    /// Number of pods when autoscaling is off (with autoscaling, the HorizontalPodAutoscaler
    /// decides and this field is ignored).
    #[serde(default = "two")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 20").message("replicas: must be between 1 and 20"))]
    pub replicas: i32,

    /// Full image reference overriding the reference application's image for this component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// CPU and memory. Default: requests 50m / 64Mi, limits 500m / 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node placement of this component's pods.
    #[serde(default)]
    pub placement: Placement,
}

impl Default for WebComponentSpec {
    fn default() -> Self {
        Self { replicas: 2, image: None, resources: None, placement: Placement::default() }
    }
}

/// The MariaDB database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.highAvailability) == has(oldSelf.highAvailability)").message("spec.database.highAvailability: set at creation only; to move a clinic between one MariaDB and a replicated one, restore a backup into a new clinic"))]
pub struct DatabaseSpec {
    /// MariaDB version (tag of the `mariadb` image). OpenMRS supports the 10.11 LTS line. A
    /// change passes the upgrade gate (`spec.backup.upgradeGate`); a release older than the one
    /// the data last ran with (`status.versions.database`) is refused (`DatabaseDowngrade`).
    #[serde(default = "default_mariadb_version")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$')").message("spec.database.version: must be an image tag, e.g. 10.11"))]
    #[schemars(length(max = 128))]
    pub version: String,

    /// Full image reference overriding `docker.io/library/mariadb:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// The data volume mounted at `/var/lib/mysql`.
    #[serde(default = "default_database_storage")]
    pub storage: StorageSpec,

    /// CPU and memory. Default: requests 500m / 512Mi, limits 1 CPU / 1Gi (upstream defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Name of an existing Secret (keys `root-password`, `username`, `password`) holding the
    /// database credentials, e.g. synced by External Secrets. Without it the operator generates
    /// `<name>-db-credentials` once and never regenerates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret_ref: Option<String>,

    /// Node placement of the database pod.
    #[serde(default)]
    pub placement: Placement,

    /// Encrypt the data at rest inside MariaDB, whatever the disk does: tables, redo and undo
    /// logs, temporary tables and files (AES-256, MariaDB's file key management plugin), and the
    /// pre-backup dump before it lands on its volume. The keys are generated once into Secret
    /// `<name>-db-encryption` and guarded like the credentials: without them the data cannot
    /// be read, so back that Secret up apart from the data. Once on, it stays on.
    #[serde(default = "yes")]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("spec.database.encryptAtRest: cannot be turned off once on, the data is encrypted with its key"))]
    pub encrypt_at_rest: bool,

    /// TLS between MariaDB and its clients: MariaDB refuses plaintext connections
    /// (`require_secure_transport`), and the backend and the exporter verify its certificate.
    #[serde(default)]
    pub tls: DatabaseTlsSpec,

    /// A replicated MariaDB run by the mariadb-operator (`k8s.mariadb.com` `MariaDB`) instead
    /// of the operator's one-pod StatefulSet: a primary and replicas on distinct nodes, a
    /// PodDisruptionBudget, and a new primary chosen when the primary's pod goes down. The
    /// backend connects to `<name>-mariadb-primary`. Needs the mariadb-operator installed and
    /// its namespace named by the platform's policy (`databaseOperatorNamespace`); without
    /// them the clinic is refused and nothing is written. Set at creation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.database.highAvailability: set at creation only; a replica added later would need a physical backup to start from"))]
    pub high_availability: Option<DatabaseHighAvailability>,
}

/// How many MariaDB servers a replicated database runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseHighAvailability {
    /// MariaDB servers: one primary, the others replicas (3 to 7, an odd number: the
    /// mariadb-operator refuses even ones). Each needs a node of its own.
    #[serde(default = "three")]
    #[schemars(range(min = 3, max = 7))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("spec.database.highAvailability.replicas: must be odd (3, 5 or 7)"))]
    pub replicas: i32,
}

fn three() -> i32 {
    3
}

/// Where MariaDB's certificate comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseTlsSpec {
    /// Serve TLS only (default). Off, MariaDB accepts plaintext connections and the backend
    /// makes them: only for a database the clinic's NetworkPolicies alone protect.
    #[serde(default = "yes")]
    pub enabled: bool,

    /// A cert-manager issuer for MariaDB's certificate (`Certificate` `<name>-db-tls`); it
    /// must be a CA issuer, one that fills `ca.crt`. Without it the operator runs a CA of its
    /// own for the clinic (Secret `<name>-db-ca`) and renews the certificate itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

impl Default for DatabaseTlsSpec {
    fn default() -> Self {
        Self { enabled: true, issuer_ref: None }
    }
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        Self {
            version: default_mariadb_version(),
            image: None,
            storage: default_database_storage(),
            resources: None,
            credentials_secret_ref: None,
            placement: Placement::default(),
            encrypt_at_rest: true,
            tls: DatabaseTlsSpec::default(),
            high_availability: None,
        }
    }
}

/// A persistent volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, e.g. `10Gi`. Growing it needs a StorageClass that allows expansion.
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(\\\\.[0-9]+)?(Mi|Gi|Ti)$')").message("size: must be a quantity in Mi, Gi or Ti, e.g. 10Gi"))]
    #[schemars(length(max = 32))]
    pub size: String,

    /// StorageClass of the volume; the cluster default when empty. Fixed once the volume exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

/// Node placement of a component's pods, so a platform team can pin clinics to node pools.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of node taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// Topology spread constraints. When empty, replicas of a component prefer distinct nodes
    /// and distinct zones (`topology.kubernetes.io/zone`; a preference, so nodes without zones
    /// schedule as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods: which pods the scheduler evicts first when the cluster is
    /// full, and which wait. Must be one the platform's policy lists (`priorityClasses`); unset,
    /// the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("priorityClassName: must be a lower-case DNS name, e.g. clinic-critical"))]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
}

/// A public host name: lower-case DNS labels, at least two.
const HOST_RULE: &str =
    "self.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$')";

/// Public exposure of the platform.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Public host name, e.g. `dossiers.clinique-lyon.example.fr`.
    #[x_kube(validation = Rule::new(HOST_RULE).message("spec.ingress.host: must be a lower-case DNS name with at least one dot, e.g. emr.clinic.example.fr"))]
    #[schemars(length(max = 253))]
    pub host: String,

    /// IngressClass to use; the cluster default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub class_name: Option<String>,

    /// TLS at the Ingress. Exactly one of `secretName` or `issuerRef`.
    pub tls: TlsSpec,

    /// Namespace of the ingress controller: the only namespace whose pods may reach the gateway.
    #[serde(default = "default_controller_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub controller_namespace: String,
}

/// Attachment to a platform Gateway (Gateway API).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Public host name, e.g. `dossiers.clinique-lyon.example.fr`; the platform's policy says
    /// which names a clinic may serve (`ingressHosts`).
    #[x_kube(validation = Rule::new(HOST_RULE).message("spec.route.host: must be a lower-case DNS name with at least one dot, e.g. emr.clinic.example.fr"))]
    #[schemars(length(max = 253))]
    pub host: String,

    /// The Gateway to attach to, one of those the platform's policy lists (`gateways`); the
    /// policy's default Gateway when unset. The listener, the HTTP-to-HTTPS redirect and the
    /// namespace of the Gateway's proxies come from the policy, not from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
}

/// A Gateway by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Namespace of the Gateway.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// Where the Ingress certificate comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.issuerRef)").message("spec.ingress.tls: set exactly one of secretName (an existing TLS Secret) or issuerRef (a cert-manager issuer)"))]
pub struct TlsSpec {
    /// An existing `kubernetes.io/tls` Secret in the clinic namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// A cert-manager issuer; the certificate is stored in `<name>-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A cert-manager issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer or ClusterIssuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// `ClusterIssuer` (default) or `Issuer` (in the clinic namespace).
    #[serde(default)]
    pub kind: IssuerKind,
}

/// Kind of cert-manager issuer.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IssuerKind {
    /// A cluster-wide issuer.
    #[default]
    ClusterIssuer,
    /// An issuer in the clinic namespace.
    Issuer,
}

impl IssuerKind {
    /// The kind as cert-manager names it.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::ClusterIssuer => "ClusterIssuer",
            IssuerKind::Issuer => "Issuer",
        }
    }
}

/// Horizontal autoscaling of frontend and gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Create HorizontalPodAutoscalers for frontend and gateway (default true). While they exist
    /// the operator never sets `replicas` on those Deployments.
    #[serde(default = "yes")]
    pub enabled: bool,

    /// Autoscaling bounds of the frontend.
    #[serde(default)]
    pub frontend: ScalingBounds,

    /// Autoscaling bounds of the gateway.
    #[serde(default)]
    pub gateway: ScalingBounds,

    /// A VerticalPodAutoscaler per workload (MariaDB, backend, frontend, gateway) in
    /// recommendation mode (`updateMode: "Off"`; default false): the Vertical Pod Autoscaler's
    /// recommender computes CPU and memory requests from what the pods really use (`kubectl
    /// describe vpa`), and never evicts or resizes a pod, so it never fights the
    /// HorizontalPodAutoscalers. Without the `autoscaling.k8s.io/v1` CRDs the clinic runs on and
    /// `MonitoringReady`'s message says so.
    #[serde(default)]
    pub vertical_recommendations: bool,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            frontend: ScalingBounds::default(),
            gateway: ScalingBounds::default(),
            vertical_recommendations: false,
        }
    }
}

/// Bounds of one HorizontalPodAutoscaler.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas: must not exceed maxReplicas"))]
pub struct ScalingBounds {
    /// Fewest pods (1 to 20). With 2 or more, a PodDisruptionBudget keeps one pod up.
    #[serde(default = "two")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 20").message("minReplicas: must be between 1 and 20"))]
    pub min_replicas: i32,

    /// Most pods (1 to 50).
    #[serde(default = "five")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 50").message("maxReplicas: must be between 1 and 50"))]
    pub max_replicas: i32,

    /// Average CPU utilisation (percent of requests) to keep, 10 to 100.
    #[serde(default = "seventy_five")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 100").message("targetCPUUtilizationPercentage: must be between 10 and 100"))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: i32,
}

impl Default for ScalingBounds {
    fn default() -> Self {
        Self { min_replicas: 2, max_replicas: 5, target_cpu_utilization_percentage: 75 }
    }
}

/// Velero backups of one clinic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Back the clinic up with Velero (default true). When Velero is not installed the platform
    /// still runs, with `BackupReady=False` (reason `VeleroNotInstalled`).
    #[serde(default = "yes")]
    pub enabled: bool,

    /// When backups run: a cron expression in the Velero server's time zone (default daily at
    /// 02:00) or a Velero shorthand such as `@every 6h`.
    #[serde(default = "default_backup_schedule")]
    #[x_kube(validation = Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [0-9]+[smh]|[^ ]+ [^ ]+ [^ ]+ [^ ]+ [^ ]+)$')").message("spec.backup.schedule: must be a 5-field cron expression such as '0 2 * * *', or @daily, @every 6h"))]
    #[schemars(length(max = 128))]
    pub schedule: String,

    /// How long each backup is kept (Velero TTL), as a duration such as `720h` (30 days, default).
    #[serde(default = "default_backup_retention")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$')").message("spec.backup.retention: must be a duration such as 720h or 90m"))]
    #[schemars(length(max = 32))]
    pub retention: String,

    /// Recovery point objective: `BackupReady` turns False when the newest successful backup is
    /// older than this (default `26h`: a daily schedule with two hours of slack).
    #[serde(default = "default_rpo")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$')").message("spec.backup.rpo: must be a duration such as 26h or 90m"))]
    #[schemars(length(max = 32))]
    pub rpo: String,

    /// Velero BackupStorageLocation; Velero's default location when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub storage_location: Option<String>,

    /// Namespace where Velero runs; the Schedule and the upgrade backups are created there.
    #[serde(default = "default_velero_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub velero_namespace: String,

    /// How volume data is captured: `FileSystem` (Velero's node agent copies the files; works
    /// on any storage, default) or `Snapshot` (CSI or cloud-provider snapshots).
    #[serde(default)]
    pub volumes: VolumeBackupMethod,

    /// `Required` (default): before an upgrade of the OpenMRS backend or of MariaDB (a new
    /// version or image) the operator takes a Velero backup and rolls nothing until it completed.
    /// `Skip` upgrades without it (a MariaDB downgrade is refused either way).
    #[serde(default)]
    pub upgrade_gate: UpgradeGate,

    /// How long the pre-upgrade backup may take before the upgrade is refused (default `1h`).
    #[serde(default = "default_gate_timeout")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$')").message("spec.backup.upgradeGateTimeout: must be a duration such as 1h or 45m"))]
    #[schemars(length(max = 32))]
    pub upgrade_gate_timeout: String,

    /// When the clinic is deleted under a confirmed `deletionPolicy: Delete`, its Velero backups
    /// expire after the platform's delay (operator policy `backupDeletionDelay`, default 7 days)
    /// instead of at the end of their own retention, and Velero deletes them then. Default
    /// false: backups outlive the clinic until their retention ends. No effect under `Retain`.
    #[serde(default)]
    pub delete_with_clinic: bool,
}

impl Default for BackupSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: default_backup_schedule(),
            retention: default_backup_retention(),
            rpo: default_rpo(),
            storage_location: None,
            velero_namespace: default_velero_namespace(),
            volumes: VolumeBackupMethod::default(),
            upgrade_gate: UpgradeGate::default(),
            upgrade_gate_timeout: default_gate_timeout(),
            delete_with_clinic: false,
        }
    }
}

/// How Velero captures volume data.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VolumeBackupMethod {
    /// File-system backup by Velero's node agent (kopia).
    #[default]
    FileSystem,
    /// Volume snapshots (CSI or the cloud provider's).
    Snapshot,
}

/// Whether an OpenMRS upgrade waits for a backup.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpgradeGate {
    /// Back up first; upgrade only after the backup completed.
    #[default]
    Required,
    /// Upgrade at once, without a backup (schema migrations cannot be undone).
    Skip,
}

/// Security settings beyond the secure defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// Label the clinic's namespace to enforce, audit and warn Pod Security `restricted`
    /// (default true). `false` only where the platform's policy allows it
    /// (`allowPodSecurityOptOut`, else the spec is refused): the operator then stops adding the
    /// labels but never removes them, and `SecurityEnforced` says whether they are there.
    #[serde(default = "yes")]
    pub enforce_pod_security: bool,

    /// No effect (kept so that manifests that set it still apply): whether the data volumes
    /// encrypt at rest is the platform team's word, not the clinic's — the policy's
    /// `encryptingStorageClasses`, or well-known StorageClass parameters.
    #[serde(default)]
    pub storage_encrypted: bool,

    /// An existing Secret key holding the OpenMRS `admin` password. Without it the operator
    /// generates `<name>-openmrs-admin` (key `password`) once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_secret_ref: Option<SecretKeyRef>,

    /// Extra egress the backend may open beyond the platform's own flows and DNS, e.g. a lab
    /// system. Everything else is denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub extra_egress: Vec<EgressRule>,

    /// Mutual TLS between the clinic's pods through the platform's service mesh (default
    /// false). Allowed only where the platform's policy names a mesh (`mesh`, Istio in ambient
    /// mode), else the spec is refused: the pods then join the mesh (label
    /// `istio.io/dataplane-mode: ambient`), and a STRICT PeerAuthentication and an
    /// AuthorizationPolicy per component admit only the flows the NetworkPolicies allow. The
    /// gateway's port and the exporters' stay PERMISSIVE unless the policy says the edge and
    /// Prometheus are meshed too. Without Istio's CRDs the clinic runs on and `SecurityEnforced`
    /// says `MeshNotInstalled`.
    #[serde(default)]
    pub mtls: bool,
}

impl Default for SecuritySpec {
    fn default() -> Self {
        Self {
            enforce_pod_security: true,
            storage_encrypted: false,
            admin_password_secret_ref: None,
            extra_egress: Vec::new(),
            mtls: false,
        }
    }
}

/// Metrics, alerts and dashboards of one clinic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Run the exporter sidecars (mysqld-exporter next to MariaDB, nginx-prometheus-exporter
    /// next to the gateway) and create the ServiceMonitor, PrometheusRule and dashboard
    /// (default true).
    #[serde(default = "yes")]
    pub enabled: bool,

    /// Extra labels on the ServiceMonitor, PrometheusRule and dashboard, e.g. the `release`
    /// label a kube-prometheus-stack Prometheus selects on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 253 && self[k].size() <= 63)").message("spec.monitoring.labels: keys are at most 253 characters, values at most 63"))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('app.kubernetes.io/') && !k.startsWith('clinic.audioprothese.fr/'))").message("spec.monitoring.labels: keys under app.kubernetes.io/ and clinic.audioprothese.fr/ are the operator's own (they say which clinic an object belongs to)"))]
    #[schemars(length(max = 16))]
    pub labels: BTreeMap<String, String>,

    /// Namespace of the Prometheus that scrapes the clinic: the only namespace the
    /// NetworkPolicies let reach the metrics ports.
    #[serde(default = "default_monitoring_namespace")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.monitoring.prometheusNamespace: must be a namespace name (lowercase letters, digits, '-')"))]
    #[schemars(length(min = 1, max = 63))]
    pub prometheus_namespace: String,

    /// Scrape interval of the ServiceMonitor, e.g. `30s`.
    #[serde(default = "default_scrape_interval")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(ms|s|m)$')").message("spec.monitoring.scrapeInterval: must be a duration such as 30s or 1m"))]
    #[schemars(length(max = 16))]
    pub scrape_interval: String,

    /// The Grafana dashboard ConfigMap.
    #[serde(default)]
    pub dashboard: DashboardSpec,

    /// What the clinic gets from a Loki log pipeline: log panels on its dashboard, and alert
    /// rules for the Loki ruler. Logs themselves are collected by the platform's agent from the
    /// containers' output (docs/monitoring.md#logs says which labels it must set).
    #[serde(default)]
    pub logs: LogsSpec,
}

/// The clinic's side of a Loki log pipeline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogsSpec {
    /// Log panels on the clinic's dashboard (errors by component, authentication failures, the
    /// backend's start), read from the Loki data source picked in the dashboard's `logs`
    /// variable (default true; without Loki in Grafana they stay empty).
    #[serde(default = "yes")]
    pub dashboard: bool,

    /// Ship the clinic's log alert rules (repeated authentication failures, database errors,
    /// the backend out of memory) as a ConfigMap `<name>-loki-rules` in its namespace, in the
    /// rule-group file format the Loki ruler reads, for the ruler's sidecar to load (default
    /// false: only where a Loki ruler picks them up; needs `spec.monitoring.enabled`).
    #[serde(default)]
    pub alert_rules: bool,

    /// Label key the Loki ruler's sidecar selects rule ConfigMaps by (Loki's chart:
    /// `sidecar.rules.label`).
    #[serde(default = "default_loki_rule_label")]
    #[x_kube(validation = Rule::new("!self.startsWith('app.kubernetes.io/') && !self.startsWith('clinic.audioprothese.fr/')").message("spec.monitoring.logs.ruleLabel: keys under app.kubernetes.io/ and clinic.audioprothese.fr/ are the operator's own (they say which clinic an object belongs to)"))]
    #[schemars(length(min = 1, max = 253))]
    pub rule_label: String,

    /// Value of that label (Loki's chart: `sidecar.rules.labelValue`, empty by default).
    #[serde(default)]
    #[schemars(length(max = 63))]
    pub rule_label_value: String,
}

impl Default for LogsSpec {
    fn default() -> Self {
        Self {
            dashboard: true,
            alert_rules: false,
            rule_label: default_loki_rule_label(),
            rule_label_value: String::new(),
        }
    }
}

/// Traces of the OpenMRS backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// Run the backend with the OpenTelemetry Java agent, exporting every request's trace
    /// (the gateway starts one for each request that has none, and logs its trace id) to the
    /// collector `policy.tracing` names, with the clinic as a resource attribute. Refused when
    /// the platform names no collector. Default false.
    #[serde(default)]
    pub enabled: bool,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            labels: BTreeMap::new(),
            prometheus_namespace: default_monitoring_namespace(),
            scrape_interval: default_scrape_interval(),
            dashboard: DashboardSpec::default(),
            logs: LogsSpec::default(),
        }
    }
}

/// A ConfigMap that the Grafana dashboard sidecar (kube-prometheus-stack, grafana chart) loads.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DashboardSpec {
    /// Create the dashboard ConfigMap (default true; needs `spec.monitoring.enabled`).
    #[serde(default = "yes")]
    pub enabled: bool,

    /// Namespace of the ConfigMap; by default the clinic's. In another namespace (e.g. the one
    /// Grafana's sidecar watches) it is removed by the operator's finalizer on deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.monitoring.dashboard.namespace: must be a namespace name (lowercase letters, digits, '-')"))]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,

    /// Label key the Grafana sidecar selects dashboards by (not under `app.kubernetes.io/` or
    /// `clinic.audioprothese.fr/`, which say which clinic an object belongs to).
    #[serde(default = "default_dashboard_label")]
    #[x_kube(validation = Rule::new("!self.startsWith('app.kubernetes.io/') && !self.startsWith('clinic.audioprothese.fr/')").message("spec.monitoring.dashboard.label: keys under app.kubernetes.io/ and clinic.audioprothese.fr/ are the operator's own (they say which clinic an object belongs to)"))]
    #[schemars(length(min = 1, max = 253))]
    pub label: String,

    /// Value of that label.
    #[serde(default = "default_dashboard_label_value")]
    #[schemars(length(max = 63))]
    pub label_value: String,
}

impl Default for DashboardSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            namespace: None,
            label: default_dashboard_label(),
            label_value: default_dashboard_label_value(),
        }
    }
}

/// Where the clinic's pods, and so its data, may run (HDS hosting location).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.regions) && size(self.regions) > 0) || (has(self.zones) && size(self.zones) > 0)").message("spec.residency: name at least one region or zone"))]
pub struct ResidencySpec {
    /// Allowed values of the node label `topology.kubernetes.io/region`, e.g. `fr-par`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 63)))]
    pub regions: Vec<String>,

    /// Allowed values of the node label `topology.kubernetes.io/zone`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub zones: Vec<String>,
}

/// A key in a Secret of the clinic namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// An allowed outbound destination.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Destination network in CIDR notation, e.g. `10.20.0.0/16`: at most a /8 (IPv4) or a /32
    /// (IPv6), and never loopback, link-local (cloud metadata at `169.254.169.254`) or
    /// `0.0.0.0/8`. The platform team's policy may refuse more (the cluster's own ranges).
    #[x_kube(validation = Rule::new("isCIDR(self)").message("spec.security.extraEgress[].cidr: must be a CIDR such as 10.20.0.0/16"))]
    #[x_kube(validation = Rule::new("!isCIDR(self) || cidr(self).prefixLength() >= (cidr(self).ip().family() == 4 ? 8 : 32)").message("spec.security.extraEgress[].cidr: must be a network of at most /8 (IPv4) or /32 (IPv6): extra egress opens one system's network, never the whole Internet"))]
    #[x_kube(validation = Rule::new("!isCIDR(self) || ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '::1/128', 'fe80::/10'].all(r, !cidr(r).containsIP(cidr(self).masked().ip()) && !cidr(self).containsIP(cidr(r).ip()))").message("spec.security.extraEgress[].cidr: must not overlap loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16 with the cloud metadata service, fe80::/10) or 0.0.0.0/8"))]
    #[schemars(length(max = 64))]
    pub cidr: String,

    /// Destination TCP port (1 to 65535).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("spec.security.extraEgress[].port: must be between 1 and 65535"))]
    pub port: i32,
}

/// What deleting a ClinicPlatform does to its data.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the PersistentVolumeClaims (and so the patient data).
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaims with the platform.
    Delete,
}

/// Where images come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSettings {
    /// Registry (and optional path) that replaces `docker.io` in the default images, e.g.
    /// `registry.clinic.example.fr/mirror`. Component `image` overrides are used as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.endsWith('/') && !self.contains('://')").message("spec.images.registry: a registry host and optional path without scheme or trailing slash, e.g. registry.example.fr/mirror"))]
    #[schemars(length(min = 1, max = 253))]
    pub registry: Option<String>,

    /// Names of `kubernetes.io/dockerconfigjson` Secrets used to pull images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 253)))]
    pub pull_secrets: Vec<String>,

    /// Image pull policy of every container.
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self { registry: None, pull_secrets: Vec::new(), pull_policy: PullPolicy::IfNotPresent }
    }
}

/// Image pull policy.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull when the image is not on the node.
    #[default]
    IfNotPresent,
    /// Pull on every start (for floating tags).
    Always,
    /// Never pull.
    Never,
}

fn default_openmrs_version() -> String {
    "3.7.x".into()
}
fn default_locale() -> String {
    "fr".into()
}
fn default_mariadb_version() -> String {
    "10.11".into()
}
fn default_backend_storage() -> StorageSpec {
    StorageSpec { size: "8Gi".into(), storage_class_name: None }
}
fn default_database_storage() -> StorageSpec {
    StorageSpec { size: "10Gi".into(), storage_class_name: None }
}
fn default_backup_schedule() -> String {
    "0 2 * * *".into()
}
fn default_backup_retention() -> String {
    "720h".into()
}
fn default_rpo() -> String {
    "26h".into()
}
fn default_velero_namespace() -> String {
    "velero".into()
}
fn default_gate_timeout() -> String {
    "1h".into()
}
fn default_controller_namespace() -> String {
    "ingress-nginx".into()
}
fn default_monitoring_namespace() -> String {
    "monitoring".into()
}
fn default_scrape_interval() -> String {
    "30s".into()
}
fn default_dashboard_label() -> String {
    "grafana_dashboard".into()
}
fn default_loki_rule_label() -> String {
    "loki_rule".into()
}
fn default_dashboard_label_value() -> String {
    "1".into()
}
fn one() -> i32 {
    1
}
fn two() -> i32 {
    2
}
fn five() -> i32 {
    5
}
fn seventy_five() -> i32 {
    75
}
fn yes() -> bool {
    true
}
