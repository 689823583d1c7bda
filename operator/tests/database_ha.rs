//! A replicated database (`spec.database.highAvailability`): the `MariaDB` the operator
//! declares for the mariadb-operator, checked field by field against that operator's
//! documented API (its `api/v1alpha1`, v26 line: the CRD itself cannot be fetched here), and
//! what changes around it: the backend writes to the primary, the NetworkPolicies and the
//! backup hook select the mariadb-operator's pods, the platform's policy decides.

mod common;

use std::collections::BTreeSet;

use clinic_operator::desired::{self, OptionalApi, SecretValues, backend, database_cluster};
use clinic_operator::model::{self, Clinic};
use clinic_operator::policy::Policy;
use common::{clinic, typed};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::DynamicObject;
use serde_json::{Value, json};

const HA: &str = "  database:\n    highAvailability:\n      replicas: 3\n";

fn policy() -> Policy {
    Policy { database_operator_namespace: Some("mariadb-operator".into()), ..Policy::default() }
}

fn admitted(spec: &str) -> Clinic {
    policy().admit(clinic(spec)).expect("admitted")
}

fn objects(clinic: &Clinic) -> Vec<DynamicObject> {
    desired::objects(clinic, &SecretValues::Placeholder)
}

fn mariadb(objects: &[DynamicObject]) -> Value {
    let found = objects
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "MariaDB"))
        .expect("a MariaDB is declared");
    assert_eq!(found.types.as_ref().unwrap().api_version, "k8s.mariadb.com/v1alpha1");
    assert_eq!(found.metadata.name.as_deref(), Some("lyon-mariadb"));
    assert_eq!(found.metadata.namespace.as_deref(), Some("clinic-lyon"));
    assert!(found.metadata.owner_references.as_ref().is_some_and(|o| o[0].kind == "ClinicPlatform"));
    found.data["spec"].clone()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// Every key of `value` is one of the documented type's fields (`documented`: its own and
/// those of the types it inlines).
fn within(path: &str, value: &Value, documented: &[&[&str]]) {
    for key in keys(value) {
        assert!(
            documented.iter().any(|fields| fields.contains(&key.as_str())),
            "{path}.{key} is not a field of the mariadb-operator's API"
        );
    }
}

// The documented fields of the types the operator fills (api/v1alpha1 of the v26 line).
#[rustfmt::skip]
mod api {
    pub const MARIADB_SPEC: &[&str] = &[
        "image", "imagePullPolicy", "imagePullSecrets", "inheritMetadata", "rootPasswordSecretKeyRef",
        "rootEmptyPassword", "database", "username", "passwordSecretKeyRef", "passwordHashSecretKeyRef",
        "passwordPlugin", "cleanupPolicy", "myCnf", "myCnfConfigMapKeyRef", "timeZone", "bootstrapFrom",
        "storage", "metrics", "tls", "replication", "galera", "maxScaleRef", "replicas",
        "replicasAllowEvenNumber", "port", "servicePorts", "podDisruptionBudget", "updateStrategy",
        "service", "connection", "primaryService", "primaryConnection", "secondaryService",
        "secondaryConnection", "suspend",
    ];
    /// Inlined in MariaDBSpec and in the agent's and init container's templates.
    pub const CONTAINER_TEMPLATE: &[&str] = &[
        "command", "args", "env", "envFrom", "volumeMounts", "livenessProbe", "readinessProbe",
        "startupProbe", "resources", "securityContext", "lifecycle",
    ];
    /// Inlined in MariaDBSpec.
    pub const POD_TEMPLATE: &[&str] = &[
        "podMetadata", "imagePullSecrets", "initContainers", "sidecarContainers", "podSecurityContext",
        "serviceAccountName", "affinity", "nodeSelector", "tolerations", "volumes", "priorityClassName",
        "topologySpreadConstraints", "enableServiceLinks", "terminationGracePeriodSeconds",
    ];
    pub const SECURITY_CONTEXT: &[&str] = &[
        "capabilities", "privileged", "runAsUser", "runAsGroup", "runAsNonRoot",
        "readOnlyRootFilesystem", "allowPrivilegeEscalation",
    ];
    pub const POD_SECURITY_CONTEXT: &[&str] = &[
        "seLinuxOptions", "runAsUser", "runAsGroup", "runAsNonRoot", "supplementalGroups", "fsGroup",
        "fsGroupChangePolicy", "seccompProfile", "appArmorProfile",
    ];
    pub const REPLICATION: &[&str] = &[
        "enabled", "primary", "replica", "gtidStrictMode", "gtidDomainId", "serverIdStartIndex",
        "semiSyncEnabled", "semiSyncAckTimeout", "semiSyncWaitPoint", "syncBinlog", "initContainer",
        "agent", "standaloneProbes",
    ];
    pub const PRIMARY_REPLICATION: &[&str] = &["podIndex", "autoFailover", "autoFailoverDelay"];
    pub const AGENT: &[&str] = &[
        "image", "imagePullPolicy", "port", "probePort", "kubernetesAuth", "basicAuth",
        "gracefulShutdownTimeout",
    ];
    pub const INIT_CONTAINER: &[&str] = &["image", "imagePullPolicy"];
    pub const SECRET_KEY_REF: &[&str] = &["name", "key", "generate"];
    pub const STORAGE: &[&str] = &[
        "ephemeral", "size", "storageClassName", "resizeInUseVolumes", "waitForVolumeResize",
        "volumeClaimTemplate", "pvcRetentionPolicy",
    ];
    pub const TLS: &[&str] = &[
        "enabled", "required", "serverCASecretRef", "serverCertSecretRef", "serverCertIssuerRef",
        "clientCASecretRef", "clientCertSecretRef", "clientCertIssuerRef", "galeraSSTEnabled",
        "serverCertAdditionalNames",
    ];
    pub const VOLUME: &[&str] = &[
        "name", "emptyDir", "nfs", "csi", "hostPath", "persistentVolumeClaim", "secret", "configMap",
    ];
    pub const EMPTY_DIR: &[&str] = &["medium", "sizeLimit"];
    pub const SECRET_VOLUME: &[&str] = &["secretName", "defaultMode"];
    pub const VOLUME_MOUNT: &[&str] = &["name", "readOnly", "mountPath", "subPath"];
    pub const AFFINITY: &[&str] = &["antiAffinityEnabled", "podAntiAffinity", "nodeAffinity"];
    pub const PDB: &[&str] = &["minAvailable", "maxUnavailable"];
    pub const METRICS: &[&str] = &["enabled", "exporter", "serviceMonitor", "username", "passwordSecretKeyRef"];
    pub const EXPORTER: &[&str] = &[
        "image", "imagePullPolicy", "imagePullSecrets", "args", "port", "resources", "podMetadata",
        "securityContext", "podSecurityContext", "affinity", "nodeSelector", "tolerations",
        "priorityClassName",
    ];
    pub const METADATA: &[&str] = &["labels", "annotations"];
}

#[test]
fn the_mariadb_uses_only_documented_fields() {
    use api::*;
    let clinic =
        admitted(&format!("{HA}  monitoring:\n    enabled: true\n  residency:\n    regions: [fr-par]\n"));
    let spec = mariadb(&objects(&clinic));
    let replication = &spec["replication"];
    let exporter = &spec["metrics"]["exporter"];
    for (path, value, documented) in [
        ("spec", &spec, &[MARIADB_SPEC, CONTAINER_TEMPLATE, POD_TEMPLATE][..]),
        ("spec.securityContext", &spec["securityContext"], &[SECURITY_CONTEXT]),
        ("spec.podSecurityContext", &spec["podSecurityContext"], &[POD_SECURITY_CONTEXT]),
        ("spec.replication", replication, &[REPLICATION]),
        ("spec.replication.primary", &replication["primary"], &[PRIMARY_REPLICATION]),
        ("spec.replication.agent", &replication["agent"], &[AGENT, CONTAINER_TEMPLATE]),
        (
            "spec.replication.agent.securityContext",
            &replication["agent"]["securityContext"],
            &[SECURITY_CONTEXT],
        ),
        (
            "spec.replication.initContainer",
            &replication["initContainer"],
            &[INIT_CONTAINER, CONTAINER_TEMPLATE],
        ),
        (
            "spec.replication.initContainer.securityContext",
            &replication["initContainer"]["securityContext"],
            &[SECURITY_CONTEXT],
        ),
        ("spec.rootPasswordSecretKeyRef", &spec["rootPasswordSecretKeyRef"], &[SECRET_KEY_REF]),
        ("spec.passwordSecretKeyRef", &spec["passwordSecretKeyRef"], &[SECRET_KEY_REF]),
        ("spec.storage", &spec["storage"], &[STORAGE]),
        ("spec.tls", &spec["tls"], &[TLS]),
        ("spec.affinity", &spec["affinity"], &[AFFINITY]),
        ("spec.podDisruptionBudget", &spec["podDisruptionBudget"], &[PDB]),
        ("spec.podMetadata", &spec["podMetadata"], &[METADATA]),
        ("spec.metrics", &spec["metrics"], &[METRICS]),
        ("spec.metrics.exporter", exporter, &[EXPORTER]),
        ("spec.metrics.exporter.securityContext", &exporter["securityContext"], &[SECURITY_CONTEXT]),
        (
            "spec.metrics.exporter.podSecurityContext",
            &exporter["podSecurityContext"],
            &[POD_SECURITY_CONTEXT],
        ),
    ] {
        assert!(value.is_object(), "{path} is not declared: {spec}");
        within(path, value, documented);
    }
    for volume in spec["volumes"].as_array().unwrap() {
        within("spec.volumes[]", volume, &[VOLUME]);
        within("spec.volumes[].emptyDir", &volume["emptyDir"], &[EMPTY_DIR]);
        within("spec.volumes[].secret", &volume["secret"], &[SECRET_VOLUME]);
    }
    for mount in spec["volumeMounts"].as_array().unwrap() {
        within("spec.volumeMounts[]", mount, &[VOLUME_MOUNT]);
    }
    // No null anywhere: the API has none for these fields.
    assert!(!spec.to_string().contains("null"), "{spec}");
}

#[test]
fn the_mariadb_is_replicated_with_the_clinics_credentials_config_and_hardening() {
    let clinic = admitted(HA);
    let objects = objects(&clinic);
    let spec = mariadb(&objects);
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["replication"]["enabled"], true);
    assert_eq!(spec["replication"]["primary"]["autoFailover"], true);
    assert_eq!(spec["replication"]["agent"]["basicAuth"]["enabled"], true);
    assert_eq!(spec["image"], "docker.io/library/mariadb:10.11");
    // The operator's generated Secret, never one the mariadb-operator would generate.
    assert_eq!(
        spec["rootPasswordSecretKeyRef"],
        json!({"name": "lyon-db-credentials", "key": "root-password", "generate": false})
    );
    assert_eq!(
        spec["passwordSecretKeyRef"],
        json!({"name": "lyon-db-credentials", "key": "password", "generate": false})
    );
    assert_eq!(spec["username"], "openmrs");
    assert_eq!(spec["database"], "openmrs");
    assert_eq!(spec["storage"]["size"], "10Gi");
    assert_eq!(spec["storage"]["pvcRetentionPolicy"]["whenDeleted"], "Retain");
    // Our server settings, encryption at rest included; TLS and the exporter's init are theirs.
    let cnf = spec["myCnf"].as_str().unwrap();
    for line in [
        "character-set-server = utf8mb4",
        "innodb_encrypt_tables = FORCE",
        "plugin_load_add = file_key_management",
    ] {
        assert!(cnf.contains(line), "{line} in {cnf}");
    }
    for theirs in ["ssl_cert", "require_secure_transport", "init_file"] {
        assert!(!cnf.contains(theirs), "{theirs} in {cnf}");
    }
    assert_eq!(
        spec["tls"],
        json!({"enabled": true, "required": true, "serverCASecretRef": {"name": "lyon-db-ca"}, "clientCASecretRef": {"name": "lyon-db-ca"}})
    );
    // Read-only root: /run/mysqld and /tmp writable; the keys and the dump volume mounted.
    let mounts: Vec<(&str, &str)> = spec["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["mountPath"].as_str().unwrap()))
        .collect();
    for wanted in [("run", "/run/mysqld"), ("tmp", "/tmp"), ("encryption", "/etc/mysql/encryption")] {
        assert!(mounts.contains(&wanted), "{wanted:?} in {mounts:?}");
    }
    assert!(mounts.iter().any(|(n, _)| *n == desired::backup::DUMP_VOLUME));
    assert_eq!(spec["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(spec["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(spec["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(spec["podSecurityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(spec["replication"]["agent"]["securityContext"], spec["securityContext"]);
    assert_eq!(spec["affinity"]["antiAffinityEnabled"], true);
    assert_eq!(spec["podDisruptionBudget"], json!({"maxUnavailable": 1}));
    // Our labels, not the selector labels the mariadb-operator sets on its pods.
    let labels = &spec["podMetadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/component"], "database");
    assert!(labels.get("app.kubernetes.io/instance").is_none());
    let spread = spec["topologySpreadConstraints"].as_array().unwrap();
    assert!(
        spread
            .iter()
            .all(|c| c["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "lyon-mariadb")
    );

    // The operator's own MariaDB is not built.
    for (kind, name) in
        [("StatefulSet", "lyon-mariadb"), ("Service", "lyon-mariadb"), ("ConfigMap", "lyon-mariadb-config")]
    {
        assert!(
            !objects
                .iter()
                .any(|o| o.types.as_ref().unwrap().kind == kind && o.metadata.name.as_deref() == Some(name)),
            "{kind}/{name} built beside the MariaDB"
        );
    }
    assert!(
        desired::optional_children(&clinic).iter().any(|(api, r, n)| *api == OptionalApi::DatabaseOperator
            && r.plural == "mariadbs"
            && n == "lyon-mariadb")
    );
}

#[test]
fn the_backend_writes_to_the_primary_as_the_user_the_mariadb_operator_creates() {
    let clinic = admitted(HA);
    let objects = objects(&clinic);
    let sts: StatefulSet = typed(&objects, "StatefulSet", "lyon-backend");
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let openmrs = pod.containers.iter().find(|c| c.name == "openmrs").unwrap();
    let env = |name: &str| openmrs.env.iter().flatten().find(|e| e.name == name).cloned().unwrap();
    assert_eq!(env("OMRS_DB_HOSTNAME").value.as_deref(), Some("lyon-mariadb-primary"));
    assert_eq!(env("OMRS_DB_USERNAME").value.as_deref(), Some("openmrs"));
    let (url, _) = backend::jdbc(&clinic);
    assert!(url.starts_with("jdbc:mariadb://lyon-mariadb-primary:3306/openmrs?"), "{url}");
    assert!(url.contains("sslMode=verify-full"), "{url}");
    // The claim whose existence guards the credentials and keys against being generated again.
    assert_eq!(desired::database::first_data_claim(&clinic), "storage-lyon-mariadb-0");
    // Without it, the operator's MariaDB as before.
    let single = admitted("  {}\n");
    assert!(backend::jdbc(&single).0.starts_with("jdbc:mariadb://lyon-mariadb:3306/"));
    assert_eq!(desired::database::first_data_claim(&single), "data-lyon-mariadb-0");
}

fn policy_named(objects: &[DynamicObject], name: &str) -> NetworkPolicy {
    typed(objects, "NetworkPolicy", name)
}

#[test]
fn the_network_policies_select_the_mariadb_operators_pods_and_admit_its_controller() {
    let clinic = admitted(&format!("{HA}  monitoring:\n    enabled: true\n"));
    let objects = objects(&clinic);
    let servers = json!({"app.kubernetes.io/name": "mariadb", "app.kubernetes.io/instance": "lyon-mariadb"});
    let mariadb = serde_json::to_value(policy_named(&objects, "lyon-mariadb")).unwrap();
    assert_eq!(mariadb["spec"]["podSelector"]["matchLabels"], servers);
    let ingress = mariadb["spec"]["ingress"].as_array().unwrap();
    let controller = ingress
        .iter()
        .find(|r| {
            r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                == "mariadb-operator"
        })
        .expect("the mariadb-operator's namespace is admitted");
    let ports: Vec<&Value> = controller["ports"].as_array().unwrap().iter().map(|p| &p["port"]).collect();
    assert_eq!(ports, [&json!(3306), &json!(database_cluster::AGENT_PORT)]);
    assert!(
        ingress.iter().any(|r| r["from"][0]["podSelector"]["matchLabels"] == servers),
        "server to server"
    );
    assert_eq!(mariadb["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"], servers);
    // Nothing else from that namespace, and nothing from anywhere else.
    assert_eq!(ingress.len(), 4, "{ingress:?}");

    let backend = serde_json::to_value(policy_named(&objects, "lyon-backend")).unwrap();
    assert_eq!(backend["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"], servers);

    let exporter = serde_json::to_value(policy_named(&objects, "lyon-mariadb-exporter")).unwrap();
    assert_eq!(
        exporter["spec"]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "exporter", "app.kubernetes.io/instance": "lyon-mariadb-metrics"})
    );
    assert_eq!(exporter["spec"]["ingress"][0]["ports"][0]["port"], 9104);
    assert_eq!(exporter["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"], servers);
    // The exporter's Service is the mariadb-operator's: ours would take its name.
    assert!(!objects.iter().any(|o| o.metadata.name.as_deref() == Some("lyon-mariadb-metrics")));
}

#[test]
fn every_server_runs_the_backup_hook() {
    let clinic = admitted(HA);
    let spec = desired::backup::backup_spec(&clinic);
    assert_eq!(
        spec["hooks"]["resources"][0]["labelSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "mariadb", "app.kubernetes.io/instance": "lyon-mariadb"})
    );
    assert_eq!(spec["hooks"]["resources"][0]["pre"][0]["exec"]["container"], "mariadb");
}

#[test]
fn the_platform_decides_and_the_schema_refuses_what_cannot_work() {
    let refused = Policy::default().admit(clinic(HA)).unwrap_err();
    assert_eq!(refused.field, "spec.database.highAvailability");
    assert!(refused.message.contains("databaseOperatorNamespace"), "{}", refused.message);

    let invalid = |spec: &str| {
        let yaml = format!(
            "apiVersion: clinic.audioprothese.fr/v1alpha1\nkind: ClinicPlatform\nmetadata:\n  name: lyon\n  namespace: clinic-lyon\nspec:\n{spec}"
        );
        let cp = serde_yaml::from_str(&yaml).unwrap();
        model::validate(&cp).unwrap_err()
    };
    let even = invalid("  database:\n    highAvailability:\n      replicas: 4\n");
    assert_eq!(even.field, "spec.database.highAvailability.replicas", "{even:?}");
    let meshed = invalid(&format!("{HA}  security:\n    mtls: true\n"));
    assert_eq!(meshed.field, "spec.security.mtls", "{meshed:?}");
    let issuer =
        invalid(&format!("{HA}    tls:\n      issuerRef:\n        name: ca\n        kind: ClusterIssuer\n"));
    assert_eq!(issuer.field, "spec.database.tls.issuerRef", "{issuer:?}");
}
